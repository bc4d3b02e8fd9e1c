package replica

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// The JSON API (docs/protocol.md, "JSON API"): json.set, json.get,
// json.watch and json.status, for clients that have JSON but no msgpack.
// Each handler decodes its JSON request into the request of its api.*
// twin and calls what that twin calls (importPoints, nodePage, holdWatch,
// statusFor), so both answer with the same rights, limits and durability;
// only the encoding differs. Every error reply is {"error": "..."} with
// the words of the msgpack API's error frame.

const (
	// MaxJSONSet bounds the body of a json.set request, in bytes.
	MaxJSONSet = crdt.MaxMessageSize
	// MaxJSONQuery bounds the body of a json.get, json.watch or
	// json.status request, in bytes.
	MaxJSONQuery = 4 << 10
	// jsonPageCost bounds the points of a json.get or json.watch reply
	// as the api.* pages count them (replyCost, plus WatchChangeLen for a
	// watch). A record's JSON is at most 6 times its cost (every text byte
	// escaped as \u00XX, about 400 bytes of names, IDs and numbers), so
	// a page of jsonPageCost plus the one point that may pass it stays
	// under crdt.MaxMessageSize.
	jsonPageCost = 96 << 10
)

// jsonFail answers m with {"error": err}.
func jsonFail(m *nats.Msg, err error) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{err.Error()}) // cannot fail: a string
	_ = m.Respond(b)
}

// jsonReply answers m with v as one JSON object, or with an error when
// it would not fit in a message.
func jsonReply(m *nats.Msg, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		jsonFail(m, err)
		return
	}
	if buf.Len() > crdt.MaxMessageSize {
		jsonFail(m, fmt.Errorf("%w: reply of %d bytes, limit %d", crdt.ErrTooLarge, buf.Len(), crdt.MaxMessageSize))
		return
	}
	_ = m.Respond(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// jsonSpace is JSON's whitespace.
const jsonSpace = " \t\r\n"

// decodeJSONRequest decodes body, one JSON object of at most MaxJSONQuery
// bytes with no field unknown to v, into v. An empty body is the empty
// object.
func decodeJSONRequest(body []byte, v any) error {
	if len(body) > MaxJSONQuery {
		return fmt.Errorf("%w: request of %d bytes, limit %d", crdt.ErrTooLarge, len(body), MaxJSONQuery)
	}
	body = bytes.Trim(body, jsonSpace)
	if len(body) == 0 {
		return nil
	}
	if body[0] != '{' {
		return errors.New("request: want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("request: more than one JSON value")
	}
	return nil
}

// parseSeq parses a change number: a decimal string, so that JavaScript
// reads it without rounding. Empty is 0.
func parseSeq(field, s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || s[0] == '+' {
		return 0, fmt.Errorf("%q: want a change number as a decimal string, e.g. \"0\"", field)
	}
	return n, nil
}

// jsonMax is the page bound of a request's "max": the server's when 0,
// never above jsonPageCost.
func jsonMax(max int) (int, error) {
	if max < 0 {
		return 0, errors.New(`"max": want a number of bytes, 0 or more`)
	}
	if max == 0 || max > jsonPageCost {
		return jsonPageCost, nil
	}
	return max, nil
}

// parseRecords parses the body of json.set: one point record or a JSON
// array of at least one, each read by record.Parse (unknown fields,
// invalid UTF-8 and invalid points refused). An error names the index of
// the first bad record and wraps store.ErrInvalid, or crdt.ErrTooLarge
// for a body over MaxJSONSet.
func parseRecords(body []byte) ([]crdt.Point, error) {
	if len(body) > MaxJSONSet {
		return nil, fmt.Errorf("%w: request of %d bytes, limit %d", crdt.ErrTooLarge, len(body), MaxJSONSet)
	}
	body = bytes.Trim(body, jsonSpace)
	switch {
	case len(body) > 0 && body[0] == '{':
		p, err := record.Parse(body)
		if err != nil {
			return nil, fmt.Errorf("%w: point 0: %v", store.ErrInvalid, err)
		}
		return []crdt.Point{p}, nil
	case len(body) > 0 && body[0] == '[':
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, fmt.Errorf("%w: not a JSON array of point records: %v", store.ErrInvalid, err)
		}
		if len(raws) == 0 {
			return nil, fmt.Errorf("%w: an empty array: no point to set", store.ErrInvalid)
		}
		pts := make([]crdt.Point, len(raws))
		for i, raw := range raws {
			var err error
			if pts[i], err = record.Parse(raw); err != nil {
				return nil, fmt.Errorf("%w: point %d: %v", store.ErrInvalid, i, err)
			}
		}
		return pts, nil
	}
	return nil, fmt.Errorf("%w: want a point record (a JSON object) or an array of them", store.ErrInvalid)
}

// jsonSetReply answers json.set.
type jsonSetReply struct {
	Applied int `json:"applied"`
	Stale   int `json:"stale"`
}

// handleJSONSet writes the records of a json.set request as api.import
// writes its batch: within the identity's transfer limit, checked against
// its scope, unstamped records stamped in order, durable before the
// reply. Nothing is written when any record is refused.
func (r *Replica) handleJSONSet(m *nats.Msg) {
	r.transferAnswering(m, jsonFail, func(id transport.Identity) {
		pts, err := parseRecords(m.Data)
		if err != nil {
			r.metrics.rejectWrite(rejectReason(err), 0)
			jsonFail(m, err)
			return
		}
		res, err := r.importPoints(id, pts, false)
		if err != nil {
			jsonFail(m, err)
			return
		}
		jsonReply(m, jsonSetReply{Applied: res.Applied, Stale: res.Stale})
	})
}

// jsonGetRequest is the body of json.get.
type jsonGetRequest struct {
	Node  string `json:"node"`
	After string `json:"after"`
	Max   int    `json:"max"`
}

// jsonGetReply answers json.get.
type jsonGetReply struct {
	Known   bool            `json:"known"`
	Records []record.Record `json:"records"`
	Next    string          `json:"next"`
	More    bool            `json:"more"`
}

// cursorEncoding writes json.get's cursors: the api.node cursor in
// unpadded base64url, one opaque string.
var cursorEncoding = base64.RawURLEncoding

func (q jsonGetRequest) nodeRequest() (transport.NodeRequest, error) {
	var req transport.NodeRequest
	if q.Node == "" {
		return req, errors.New(`"node" is missing`)
	}
	var err error
	if req.Node, err = crdt.ParseID(q.Node); err != nil {
		return req, fmt.Errorf(`"node": %v`, err)
	}
	if q.After != "" {
		if req.After, err = cursorEncoding.DecodeString(q.After); err != nil {
			return req, errors.New(`"after": not a cursor of json.get`)
		}
	}
	req.MaxBytes, err = jsonMax(q.Max)
	return req, err
}

// handleJSONGet answers a json.get request with one page of the node's
// records, read by nodePage as api.node reads it.
func (r *Replica) handleJSONGet(m *nats.Msg) {
	id, ok := r.requesterAnswering(m, jsonFail)
	if !ok {
		return
	}
	var q jsonGetRequest
	err := decodeJSONRequest(m.Data, &q)
	var req transport.NodeRequest
	if err == nil {
		req, err = q.nodeRequest()
	}
	if err != nil {
		r.metrics.refuse(ReasonInvalid)
		jsonFail(m, err)
		return
	}
	page, err := r.nodePage(id, req)
	if err != nil {
		r.countRefusal(err)
		jsonFail(m, err)
		return
	}
	pts, err := crdt.DecodeBatch(page.Points, 0)
	if err != nil {
		jsonFail(m, err)
		return
	}
	out := jsonGetReply{Known: page.Known, Records: make([]record.Record, len(pts)), More: page.More}
	for i := range pts {
		out.Records[i] = record.Shown(&pts[i])
	}
	if len(page.Next) > 0 {
		out.Next = cursorEncoding.EncodeToString(page.Next)
	}
	jsonReply(m, out)
}

// jsonWatchRequest is the body of json.watch.
type jsonWatchRequest struct {
	Root  string `json:"root"`
	After string `json:"after"`
	Wait  int64  `json:"wait"`
	Max   int    `json:"max"`
}

func (q jsonWatchRequest) watchRequest() (transport.WatchRequest, error) {
	var req transport.WatchRequest
	var err error
	if q.Root != "" {
		if req.Root, err = crdt.ParseID(q.Root); err != nil {
			return req, fmt.Errorf(`"root": %v`, err)
		}
	}
	if req.After, err = parseSeq("after", q.After); err != nil {
		return req, err
	}
	if q.Wait < 0 {
		return req, fmt.Errorf(`"wait": want milliseconds, 0 to %d`, transport.MaxWatchWait)
	}
	req.Wait = min(q.Wait, transport.MaxWatchWait)
	req.MaxBytes, err = jsonMax(q.Max)
	return req, err
}

// jsonChange is one record of a json.watch reply: the register's current
// winner, the change number that reported it, and the instance it was
// received from (none for a write made on this server).
type jsonChange struct {
	record.Record
	Seq string `json:"seq"`
	Via string `json:"via,omitempty"`
}

// jsonWatchReply answers json.watch.
type jsonWatchReply struct {
	Records []jsonChange `json:"records"`
	Next    string       `json:"next"`
	Last    string       `json:"last"`
}

// handleJSONWatch holds a json.watch request as api.watch holds its
// request (holdWatch), and answers with the changes as records.
func (r *Replica) handleJSONWatch(m *nats.Msg) {
	id, ok := r.requesterAnswering(m, jsonFail)
	if !ok {
		return
	}
	var q jsonWatchRequest
	err := decodeJSONRequest(m.Data, &q)
	var req transport.WatchRequest
	if err == nil {
		req, err = q.watchRequest()
	}
	if err != nil {
		jsonFail(m, err)
		return
	}
	r.holdWatch(m, id, req, jsonFail, func(rep transport.WatchReply) {
		out, err := watchRecords(rep)
		if err != nil {
			jsonFail(m, err)
			return
		}
		jsonReply(m, out)
	})
}

// watchRecords converts a watch reply to its JSON.
func watchRecords(rep transport.WatchReply) (jsonWatchReply, error) {
	pts, err := crdt.DecodeBatch(rep.Points, 0)
	if err != nil {
		return jsonWatchReply{}, err
	}
	if len(rep.Changes) != len(pts)*transport.WatchChangeLen {
		return jsonWatchReply{}, fmt.Errorf("watch: %d change bytes for %d points", len(rep.Changes), len(pts))
	}
	out := jsonWatchReply{Records: make([]jsonChange, len(pts)),
		Next: strconv.FormatUint(rep.Next, 10), Last: strconv.FormatUint(rep.Last, 10)}
	for i := range pts {
		c := rep.Changes[i*transport.WatchChangeLen:]
		out.Records[i] = jsonChange{Record: record.Shown(&pts[i]), Seq: strconv.FormatUint(binary.BigEndian.Uint64(c), 10)}
		if via := uuid.UUID(c[8:24]); via != uuid.Nil {
			out.Records[i].Via = via.String()
		}
	}
	return out, nil
}

// jsonStatusReply answers json.status: the root (id), this instance,
// who the requester is, the roots of its scope when it is scoped, and the
// latest change number.
type jsonStatusReply struct {
	ID       string   `json:"id"`
	Instance string   `json:"instance"`
	Version  string   `json:"version"`
	You      string   `json:"you"`
	Scope    []string `json:"scope,omitempty"`
	LastSeq  string   `json:"lastSeq"`
}

// handleJSONStatus answers a json.status request from statusFor, as
// api.status is answered.
func (r *Replica) handleJSONStatus(m *nats.Msg) {
	id, ok := r.requesterAnswering(m, jsonFail)
	if !ok {
		return
	}
	if err := decodeJSONRequest(m.Data, &struct{}{}); err != nil {
		jsonFail(m, err)
		return
	}
	st, err := r.statusFor(id)
	if err != nil {
		jsonFail(m, err)
		return
	}
	jsonReply(m, jsonStatusReply{ID: st.ID, Instance: st.Instance, Version: st.Version, You: st.You,
		Scope: st.Scope, LastSeq: strconv.FormatUint(st.LastSeq, 10)})
}
