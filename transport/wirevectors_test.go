package transport

// Language-neutral vectors of the wire format, under testdata/wire/
// (schemas in testdata/wire/README.md): the frame header and message type
// enum, point batches (crdt.AppendBatch), and every message the browser
// replica speaks, each with the exact bytes Encode produces and the value
// as JSON, plus hostile frames Go refuses and the class of the error.
//
// The cases are the tables below. `go test ./transport -run WireVector
// -update` rewrites the files from the code; without -update every case is
// recomputed and compared with the file, and the test fails naming the
// case that differs.
//
// Every identifier here starts with wv so that this file cannot collide
// with other test files of the package.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

var wvUpdate = wvUpdateFlag()

func wvUpdateFlag() func() bool {
	if f := flag.Lookup("update"); f != nil {
		return func() bool { return f.Value.String() == "true" }
	}
	p := flag.Bool("update", false, "rewrite golden files under testdata/ from the code")
	return func() bool { return *p }
}

const wvDir = "../testdata/wire"

type wvFile struct {
	Description string            `json:"description"`
	Cases       []json.RawMessage `json:"cases"`
}

// wvCheck writes (with -update) or compares one vector file. cases are the
// generated cases, each a struct with a Name field.
func wvCheck(t *testing.T, file, description string, cases []any) {
	t.Helper()
	f := wvFile{Description: description}
	names := make(map[string]bool)
	for _, c := range cases {
		b, err := wvMarshal(c, "")
		if err != nil {
			t.Fatal(err)
		}
		name := reflect.ValueOf(c).FieldByName("Name").String()
		if name == "" || names[name] {
			t.Fatalf("%s: case name %q empty or repeated", file, name)
		}
		names[name] = true
		f.Cases = append(f.Cases, b)
	}
	gen, err := wvMarshal(f, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(wvDir, file)
	if wvUpdate() {
		if err := os.MkdirAll(wvDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, gen, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./transport -run WireVector -update creates it)", err)
	}
	var have wvFile
	if err := json.Unmarshal(data, &have); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	haveByName := make(map[string]json.RawMessage)
	for _, c := range have.Cases {
		var n struct{ Name string }
		if err := json.Unmarshal(c, &n); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		haveByName[n.Name] = c
	}
	for i, c := range f.Cases {
		name := reflect.ValueOf(cases[i]).FieldByName("Name").String()
		h, ok := haveByName[name]
		if !ok {
			t.Errorf("%s: case %q is missing from the file", file, name)
			continue
		}
		if !wvJSONEqual(h, c) {
			t.Errorf("%s: case %q: the code disagrees with the file:\n\tfile: %s\n\tcode: %s", file, name, wvCompact(h), wvCompact(c))
		}
		delete(haveByName, name)
	}
	for name := range haveByName {
		t.Errorf("%s: case %q is in the file but not in the tables", file, name)
	}
	if !t.Failed() && !bytes.Equal(gen, data) {
		t.Errorf("%s is not what transport/wirevectors_test.go generates; run go test ./transport -run WireVector -update", path)
	}
}

func wvMarshal(v any, indent string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent(indent, "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func wvJSONEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func wvCompact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

// wvClass names the class of a decoding error, as the vectors record it.
func wvClass(err error) string {
	switch {
	case err == nil:
		return ""
	case IsRemote(err):
		return "remote"
	case errors.Is(err, crdt.ErrInvalidPoint):
		return "invalid-point"
	case errors.Is(err, crdt.ErrTooLarge):
		return "too-large"
	case errors.Is(err, ErrVersion):
		return "version"
	case errors.Is(err, ErrUnknownType):
		return "unknown-type"
	case errors.Is(err, crdt.ErrMalformed):
		return "malformed"
	}
	return "other: " + err.Error()
}

// wvName is a Go field name in lower camel case: HLC → hlc, BytesRecv →
// bytesRecv, OneTime → oneTime.
func wvName(s string) string {
	r := []rune(s)
	i := 0
	for i < len(r) && unicode.IsUpper(r[i]) {
		i++
	}
	if i > 1 && i < len(r) {
		i-- // the last capital starts the next word
	}
	for j := 0; j < i; j++ {
		r[j] = unicode.ToLower(r[j])
	}
	return string(r)
}

var (
	wvUUIDType   = reflect.TypeOf(uuid.UUID{})
	wvDigestType = reflect.TypeOf(crdt.Digest{})
)

// wvJSON converts a message value to the JSON form of the vectors: fields
// in lower camel case, 64-bit integers (int, int64, uint64) as decimal
// strings, narrower integers and floats as numbers, byte slices and byte
// arrays as hex (a nil slice as null), UUIDs canonical, crdt.Digest as 32
// hex digits, nil slices as null. With flat set (the repair messages,
// whose records cannot tell a nil list from an empty one) a nil slice is
// an empty array or "".
func wvJSON(v reflect.Value, flat bool) any {
	switch v.Type() {
	case wvUUIDType:
		return v.Interface().(uuid.UUID).String()
	case wvDigestType:
		b := v.Interface().(crdt.Digest).Bytes()
		return hex.EncodeToString(b[:])
	}
	switch v.Kind() {
	case reflect.Pointer:
		return wvJSON(v.Elem(), flat)
	case reflect.Struct:
		m := make(map[string]any)
		for i := 0; i < v.NumField(); i++ {
			if f := v.Type().Field(i); f.IsExported() {
				m[wvName(f.Name)] = wvJSON(v.Field(i), flat)
			}
		}
		return m
	case reflect.Bool, reflect.String, reflect.Float64:
		return v.Interface()
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Uint8, reflect.Uint32:
		return v.Uint()
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() && !flat {
			return nil
		}
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, v.Len())
			reflect.Copy(reflect.ValueOf(b), v)
			return hex.EncodeToString(b)
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = wvJSON(v.Index(i), flat)
		}
		return out
	}
	panic(fmt.Sprintf("wvJSON: %s", v.Type()))
}

// wvEncode and wvDecode dispatch on the message: the repair messages have
// encoders of their own.
func wvEncode(v any) ([]byte, error) {
	switch m := v.(type) {
	case *RepairRequest:
		return EncodeRepairRequest(m)
	case *RepairReply:
		return EncodeRepairReply(m)
	}
	return Encode(v)
}

// wvDecode decodes frame as a message of the type of like (a pointer).
func wvDecode(frame []byte, limit int, like any) (any, error) {
	switch like.(type) {
	case *RepairRequest:
		return DecodeRepairRequest(frame, limit)
	case *RepairReply:
		return DecodeRepairReply(frame, limit)
	}
	v := reflect.New(reflect.TypeOf(like).Elem()).Interface()
	if err := Decode(frame, limit, v); err != nil {
		return nil, err
	}
	return v, nil
}

func wvTypeName(v any) string {
	switch v.(type) {
	case *RepairRequest:
		return MsgRepair.String()
	case *RepairReply:
		return MsgRepairReply.String()
	}
	t, err := typeOf(v)
	if err != nil {
		panic(err)
	}
	return t.String()
}

// IDs of the vectors: readable, and distinct in every byte that matters.
var (
	wvA    = uuid.MustParse("0a0a0a0a-0000-4000-8000-00000000000a")
	wvB    = uuid.MustParse("0b0b0b0b-0000-4000-8000-00000000000b")
	wvC    = uuid.MustParse("0c0c0c0c-0000-4000-8000-00000000000c")
	wvRoot = uuid.MustParse("00000000-0000-0000-0000-000000000001")
	wvO1   = uuid.MustParse("e1e1e1e1-0000-4000-8000-0000000000e1")
	wvO2   = uuid.MustParse("e2e2e2e2-0000-4000-8000-0000000000e2")
)

// wvT is an HLC: 2023-11-14 22:13:20 UTC, logical n.
func wvT(n uint16) crdt.Timestamp { return crdt.Timestamp(1_700_000_000_000<<16 | uint64(n)) }

func wvPt(node, parent uuid.UUID, typ, key string, value float64, text string, tomb bool, t crdt.Timestamp, origin uuid.UUID) crdt.Point {
	return crdt.Point{Node: node, Parent: parent, Type: typ, Key: key, Value: value, Text: text, Tombstone: tomb, Time: t, Origin: origin}
}

// wvBatches are the point lists of batches.json (and of the messages that
// carry one).
func wvBatches() []struct {
	name, note string
	pts        []crdt.Point
} {
	return []struct {
		name, note string
		pts        []crdt.Point
	}{
		{"empty", "an empty batch: an empty ids bin, no strings, no points", nil},
		{"one node point", "", []crdt.Point{wvPt(wvA, uuid.Nil, "temperature", "0", 21.5, "", false, wvT(0), wvO1)}},
		{"sensor readings", "one node, one origin, one type and key: each later point is its value and a small time delta", []crdt.Point{
			wvPt(wvA, uuid.Nil, "temperature", "0", 21.5, "", false, wvT(0), wvO1),
			wvPt(wvA, uuid.Nil, "temperature", "0", 21.75, "", false, wvT(1), wvO1),
			wvPt(wvA, uuid.Nil, "temperature", "0", 22, "", false, wvT(2), wvO1),
			wvPt(wvA, uuid.Nil, "temperature", "0", -40, "", false, wvT(3), wvO1),
		}},
		{"shared ids and strings", "edges, node points of several nodes and origins; ids and strings appear once, in order of first use (node, then origin, then parent; type, then key)", []crdt.Point{
			wvPt(wvB, wvA, "edge", "0", 1, "", false, wvT(10), wvO1),
			wvPt(wvB, uuid.Nil, "nodeType", "0", 0, "device", false, wvT(11), wvO1),
			wvPt(wvB, uuid.Nil, "description", "0", 0, "Pump 1 — cellar", false, wvT(12), wvO2),
			wvPt(wvC, wvB, "edge", "0", 1, "", false, wvT(13), wvO2),
			wvPt(wvC, uuid.Nil, "value", "edge", 0.1, "", false, wvT(14), wvO1),
			wvPt(wvC, uuid.Nil, "value", "0", 200, "", true, wvT(14), wvO2),
		}},
		{"time goes back", "times are deltas from the previous point: a later point may be older (negative delta)", []crdt.Point{
			wvPt(wvA, uuid.Nil, "value", "0", 1, "", false, wvT(100), wvO1),
			wvPt(wvA, uuid.Nil, "value", "1", 2, "", false, wvT(5), wvO1),
			wvPt(wvA, uuid.Nil, "value", "2", 1e300, "", false, 1, wvO2),
			wvPt(wvA, uuid.Nil, "value", "3", -1.5, "", false, 1<<63, wvO2),
		}},
	}
}

type wvBatchCase struct {
	Name      string   `json:"name"`
	Note      string   `json:"note,omitempty"`
	Points    []wvVecP `json:"points,omitempty"`
	Encoding  string   `json:"encoding"`
	Unstamped bool     `json:"unstamped,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// wvVecP is a point in the style of testdata/crdt.
type wvVecP struct {
	Node      string  `json:"node"`
	Parent    string  `json:"parent,omitempty"`
	Type      string  `json:"type"`
	Key       string  `json:"key"`
	Value     float64 `json:"value"`
	Text      string  `json:"text"`
	Tombstone bool    `json:"tombstone"`
	HLC       string  `json:"hlc"`
	Origin    string  `json:"origin"`
}

func wvVec(p crdt.Point) wvVecP {
	v := wvVecP{Node: p.Node.String(), Type: p.Type, Key: p.Key, Value: p.Value, Text: p.Text,
		Tombstone: p.Tombstone, HLC: strconv.FormatUint(uint64(p.Time), 10), Origin: p.Origin.String()}
	if p.Parent != uuid.Nil {
		v.Parent = p.Parent.String()
	}
	return v
}

// wvHostileBatches are batches DecodeBatch refuses (or, unstamped,
// accepts): hex, and whether to decode them as unstamped.
func wvHostileBatches() []wvBatchCase {
	one := crdt.AppendBatch(nil, []crdt.Point{wvPt(wvA, uuid.Nil, "t", "k", 1, "", false, 5, wvO1)})
	h := hex.EncodeToString(one)
	idsHex := hex.EncodeToString(append(wvA[:], wvO1[:]...))
	mk := func(name, note, enc string) wvBatchCase { return wvBatchCase{Name: name, Note: note, Encoding: enc} }
	return []wvBatchCase{
		mk("truncated", "the last byte (origin index) is missing", h[:len(h)-2]),
		mk("trailing byte", "a byte after the batch", h+"c0"),
		mk("not an array of 3", "", "92c400"+"90"),
		mk("ids not a multiple of 16", "", "93c40f"+strings.Repeat("00", 15)+"9090"),
		mk("ids bin32 declares 4 GiB", "bin32 with length 0xffffffff and 2 bytes present", "93c6ffffffff0000"),
		mk("strings array32 declares 2^32-1", "", "93c400ddffffffff9090"),
		mk("points array32 declares 2^32-1", "", "93c40090ddffffffff"+"c0"),
		mk("points declared beyond the bytes present", "array16 of 100 points, each needs 10 bytes: 100 values are present so CheckMsgpack passes, the batch decoder refuses", "93c40090dc0064"+strings.Repeat("c0", 100)),
		mk("node index out of range", "", "93c420"+idsHex+"92a174a16b91"+"99"+"02"+"00000001a0c205"+"01"),
		mk("parent index out of range", "parent 3 with 2 ids", "93c420"+idsHex+"92a174a16b91"+"99"+"00"+"03000001a0c205"+"01"),
		mk("type index out of range", "", "93c420"+idsHex+"92a174a16b91"+"99"+"0000"+"02"+"0001a0c205"+"01"),
		mk("time not an integer", "", "93c420"+idsHex+"92a174a16b91"+"99"+"00000001"+"01a0c2"+"ca3f800000"+"01"),
		mk("zero time", "a stamped batch needs a non-zero HLC", "93c420"+idsHex+"92a174a16b91"+"99"+"00000001"+"01a0c2"+"00"+"01"),
		{Name: "zero time unstamped", Note: "DecodeBatchUnstamped (an Import's batch) allows a zero time", Unstamped: true,
			Encoding: "93c420" + idsHex + "92a174a16b91" + "99" + "00000001" + "01a0c2" + "00" + "01"},
		mk("invalid type", "type \"t!\" breaks the type rule", "93c420"+idsHex+"92a27421a16b91"+"99"+"00000001"+"01a0c205"+"01"),
		mk("self edge", "an edge from a node to itself", "93c420"+idsHex+"92a174a16b91"+"99"+"00010001"+"01a0c205"+"01"),
		mk("nesting too deep", "17 nested arrays", "93c40090"+strings.Repeat("91", 17)+"c0"),
		mk("reserved code", "0xc1 is never valid", "93c40090c1"),
	}
}

func wvBatchCases(t *testing.T) []any {
	var out []any
	for _, b := range wvBatches() {
		enc := crdt.AppendBatch(nil, b.pts)
		got, err := crdt.DecodeBatch(enc, 0)
		if err != nil {
			t.Fatalf("batch %q: %v", b.name, err)
		}
		c := wvBatchCase{Name: b.name, Note: b.note, Encoding: hex.EncodeToString(enc), Points: []wvVecP{}}
		for i, p := range b.pts {
			if got[i] != p {
				t.Fatalf("batch %q: point %d decodes to %+v", b.name, i, got[i])
			}
			c.Points = append(c.Points, wvVec(p))
		}
		out = append(out, c)
	}
	for _, c := range wvHostileBatches() {
		enc, err := hex.DecodeString(c.Encoding)
		if err != nil {
			t.Fatalf("batch %q: %v", c.Name, err)
		}
		var pts []crdt.Point
		if c.Unstamped {
			pts, err = crdt.DecodeBatchUnstamped(enc, 0)
		} else {
			pts, err = crdt.DecodeBatch(enc, 0)
		}
		c.Error = wvClass(err)
		if err == nil {
			c.Points = []wvVecP{}
			for _, p := range pts {
				c.Points = append(c.Points, wvVec(p))
			}
		}
		out = append(out, c)
	}
	return out
}

type wvTypeCase struct {
	Name string `json:"name"`
	Code int    `json:"code"`
}

type wvFrameCase struct {
	Name  string `json:"name"`
	Note  string `json:"note,omitempty"`
	Frame string `json:"frame"`
	// Limit is the size limit given to ParseFrame (0: crdt.MaxMessageSize).
	Limit int     `json:"limit,omitempty"`
	Type  string  `json:"type,omitempty"`
	Body  *string `json:"body,omitempty"`
	Error string  `json:"error,omitempty"`
}

func wvFrameCases() []any {
	var out []any
	for _, c := range []wvFrameCase{
		{Name: "ping", Frame: "010880"},
		{Name: "points, empty batch", Frame: "010193c4009090"},
		{Name: "error", Frame: "0102a4646f6f6d"},
		{Name: "header only", Note: "an empty body passes ParseFrame; the message decoder refuses it", Frame: "0108"},
		{Name: "last known type", Frame: "011d80"},
		{Name: "empty", Frame: ""},
		{Name: "one byte", Frame: "01"},
		{Name: "version 0", Frame: "000880"},
		{Name: "version 2", Frame: "020880"},
		{Name: "type 0", Note: "MsgInvalid is never sent", Frame: "010080"},
		{Name: "type 100", Note: "a type past the known ones", Frame: "016480"},
		{Name: "type 255", Frame: "01ff80"},
		{Name: "over the limit", Note: "ParseFrame with limit 4: the size is checked first", Frame: "0108c4020000", Limit: 4},
		{Name: "at the limit", Frame: "0108c4020000", Limit: 6},
		{Name: "version checked before type", Frame: "02ff"},
	} {
		b, _ := hex.DecodeString(c.Frame)
		typ, body, err := ParseFrame(b, c.Limit)
		if err != nil {
			c.Error = wvClass(err)
		} else {
			h := hex.EncodeToString(body)
			c.Type, c.Body = typ.String(), &h
		}
		out = append(out, c)
	}
	return out
}

type wvMsgCase struct {
	Name  string `json:"name"`
	Note  string `json:"note,omitempty"`
	Type  string `json:"type"`
	Value any    `json:"value,omitempty"`
	Frame string `json:"frame"`
	// Canonical is false for a frame Go decodes but would not write (wide
	// integers, keys in another order, unknown keys): decode only.
	Canonical *bool  `json:"canonical,omitempty"`
	Limit     int    `json:"limit,omitempty"`
	Error     string `json:"error,omitempty"`
}

type wvMsg struct {
	name, note string
	v          any
}

func wvMessages() []wvMsg {
	batch := func(i int) []byte { return crdt.AppendBatch(nil, wvBatches()[i].pts) }
	link := LinkStatus{URL: "nats://cloud.example:4222", Role: RoleEdge, Remote: "cloud-1", Connected: true, InSync: true,
		Pending: 3, LastError: "", BytesSent: 123456, BytesRecv: 1 << 40, Rejected: 0, LastSeen: "2023-11-14T22:13:20.000Z"}
	down := LinkStatus{URL: "nats://peer:4222", Role: RolePeer, LastError: "connection refused", Pending: 1<<64 - 1}
	var bs BucketSet
	bs.Add(0)
	bs.Add(9)
	bs.Add(255)
	dig := func(s string) crdt.Digest {
		var b [16]byte
		copy(b[:], s)
		return crdt.DigestFromBytes(b)
	}
	short := func(s string) (d ShortDigest) { copy(d[:], s); return d }
	chg := binary.BigEndian.AppendUint64(nil, 41)
	chg = append(chg, wvO2[:]...)
	chg = binary.BigEndian.AppendUint64(chg, 42)
	chg = append(chg, make([]byte, 16)...)
	smp, err := history.Encode([]history.Sample{{Time: wvT(0), Origin: wvO1, Value: 21.5}, {Time: wvT(1) + 1000<<16, Origin: wvO1, Value: 21.75},
		{Time: wvT(2) + 2000<<16, Origin: wvO2, Tombstone: true}})
	if err != nil {
		panic(err)
	}
	steps := wvSteps()
	return []wvMsg{
		{"hello edge", "", &Hello{Proto: LinkProto, Instance: wvO1, Root: wvA, Role: RoleEdge, Time: 1_700_000_000_000}},
		{"hello identity only", "a nil root asks only for the acceptor's identity", &Hello{Proto: LinkProto, Instance: wvO2, Role: RolePeer, Time: 1_700_000_000_123}},
		{"hello clock in 1970", "a device without a real-time clock", &Hello{Proto: LinkProto, Instance: wvO1, Root: wvA, Role: RoleEdge, Time: 5}},
		{"welcome", "", &Welcome{Instance: wvO2, Root: wvRoot, Time: 1_700_000_000_456, Session: "s3f9a1c2e", Have: 0}},
		{"welcome holds", "holds and last set: compare by digest repair first", &Welcome{Instance: wvO2, Root: wvRoot, Time: 1_700_000_000_456, Session: "s3f9a1c2e", Have: 1000, Holds: true, Last: 1<<32 + 7}},
		{"welcome identity only", "", &Welcome{Instance: wvO2, Root: wvRoot, Time: -1}},
		{"start", "", &Start{Have: 0}},
		{"start far", "", &Start{Have: 1<<63 + 1}},
		{"push", "", &Push{From: 0, Through: 4, Points: batch(2)}},
		{"push idle", "", &Push{From: 4, Through: 10, Idle: true, Points: batch(3)}},
		{"push empty", "", &Push{From: 70000, Through: 70000, Idle: true, Points: batch(0)}},
		{"ack", "", &Ack{Have: 4}},
		{"ack gap", "", &Ack{Have: 200, Gap: true}},
		{"ack rejected", "", &Ack{Have: 1 << 20, Rejected: 2, Reason: "point 3: clock too far ahead"}},
		{"ping", "an empty map", &Ping{}},
		{"bye", "", &Bye{Reason: "server shutting down"}},
		{"bye no reason", "", &Bye{}},
		{"status request", "", &StatusRequest{}},
		{"status", "", &Status{ID: wvRoot.String(), Instance: wvO1.String(), Version: "v0.9.0", LastSeq: 99, HLC: "111411200000000000000",
			Disk: 1 << 33, Links: LinkStatuses{link, down}, Accepted: LinkStatuses{}, Refused: 2, You: "admin"}},
		{"status scoped", "links nil (msgpack nil), accepted empty (an empty array); scope set", &Status{ID: wvRoot.String(), Instance: wvO1.String(),
			Version: "devel", HLC: "0", You: "user:" + wvB.String(), Accepted: LinkStatuses{}, Scope: []string{wvB.String(), wvC.String()}}},
		{"node request", "", &NodeRequest{Node: wvA}},
		{"node request next page", "", &NodeRequest{Node: wvA, After: []byte("\x00nodeType\x000"), MaxBytes: 65536}},
		{"node page", "", &NodePage{Known: true, Points: batch(3), Next: []byte{}, More: false}},
		{"node page more", "", &NodePage{Known: true, Points: batch(1), Next: []byte{1, 2, 3}, More: true}},
		{"node page unknown", "", &NodePage{Points: batch(0)}},
		{"edges request", "", &EdgesRequest{Node: wvA}},
		{"edges request up", "", &EdgesRequest{Node: wvC, Up: true, After: wvB, Max: 500}},
		{"edges page", "", &EdgesPage{Points: batch(3), Active: []byte{1, 1}, Next: wvC, More: true}},
		{"edges page last", "", &EdgesPage{Points: batch(0), Active: []byte{}}},
		{"watch request", "", &WatchRequest{After: 0, Wait: MaxWatchWait}},
		{"watch request subtree", "", &WatchRequest{After: 1 << 40, Root: wvB, Wait: 0, MaxBytes: 1 << 20}},
		{"watch reply", "", &WatchReply{Points: batch(1), Changes: chg[:WatchChangeLen], Next: 41, Last: 42}},
		{"watch reply two", "", &WatchReply{Points: batch(2)[:0], Changes: chg, Next: 42, Last: 42}},
		{"watch reply empty", "", &WatchReply{Points: batch(0), Next: 7, Last: 7}},
		{"import", "", &Import{Points: batch(2)}},
		{"import one time", "", &Import{Points: batch(3), OneTime: true}},
		{"import result", "", &ImportResult{Applied: 5, Stale: 1}},
		{"import result zero", "", &ImportResult{}},
		{"token request", "", &TokenRequest{}},
		{"token request ttl", "", &TokenRequest{TTL: 86400}},
		{"token reply", "", &TokenReply{Token: "eyJhbGciOi.abc.def", User: wvB, Expires: 1_700_086_400_000}},
		{"export request", "", &ExportRequest{}},
		{"export request subtree", "", &ExportRequest{Root: wvA, After: []byte("reg"), MaxBytes: 300}},
		{"export page", "", &ExportPage{Points: batch(3), Next: []byte("cursor"), More: true}},
		{"export page last", "", &ExportPage{Points: batch(0)}},
		{"nodes request", "", &NodesRequest{Nodes: append(append([]byte(nil), wvA[:]...), wvB[:]...)}},
		{"nodes reply", "", &NodesReply{Known: []byte{1, 0}}},
		{"history request", "the samples themselves, from a time on", &HistoryRequest{Node: wvA, Type: "temperature", Key: "0", From: 1_700_000_000_000}},
		{"history request steps", "summaries per 6 minutes over a day, from a step cursor", &HistoryRequest{Node: wvA, Type: "temperature", Key: "inlet",
			From: 1_699_913_520_000, To: 1_700_000_000_000, Step: 360_000, After: AppendStepCursor(nil, 1_699_999_920_000), Max: 300}},
		{"history page samples", "a history block of three samples", &HistoryPage{Known: true, Samples: smp, Next: AppendSampleCursor(nil, wvT(2)+2000<<16, wvO2)}},
		{"history page steps", "two step records (HistoryStepLen bytes each), more to come", &HistoryPage{Known: true, Steps: steps, Next: AppendStepCursor(nil, 1_700_000_280_000), More: true}},
		{"history page unknown", "a node the server holds nothing of", &HistoryPage{}},
		{"repair request root", "the first round trip: the root's sub and own", &RepairRequest{Root: wvRoot,
			Compare: []NodeSub{{Node: wvRoot, Sub: dig("subsubsubsubsub1"), Own: dig("ownownownownown1")}}}},
		{"repair request every query", "", &RepairRequest{Root: wvRoot,
			Compare:     []NodeSub{{Node: wvA, Sub: dig("aaaaaaaaaaaaaaaa"), Own: dig("bbbbbbbbbbbbbbbb"), Density: 4}, {Node: wvB}},
			List:        []ListQuery{{Node: wvA}, {Node: wvB, After: []byte("\x00k")}},
			Buckets:     []BucketQuery{{Node: wvRoot, Bucket: 0x0a}, {Node: wvRoot, Bucket: 0xff}},
			Fetch:       []FetchQuery{{Node: wvA, Hashes: []uint64{1, 1<<64 - 1}}, {Node: wvC, Hashes: []uint64{}}},
			Edges:       []EdgeQuery{{Child: wvB, Parent: wvA}},
			ChildSketch: []ChildSketchQuery{{Node: wvRoot, Buckets: bs, Salt: 0xdeadbeef, Sketch: []byte{1, 2, 3, 4, 5}}},
			TagFetch:    []TagFetch{{Node: wvB, Tags: []uint32{7, 0xffffffff}}},
		}},
		{"repair reply equal", "nothing differed: only the answered counts", &RepairReply{Answered: [ansKinds]int{1}}},
		{"repair reply every part", "", &RepairReply{
			Summaries: []Summary{
				{Node: wvRoot, Own: dig("own-of-the-root!"), Children: []ChildSum{{ID: wvA, Active: true, Edge: short("edgeedge"), Own: short("ownownow"), Below: short("belowbel")}, {ID: wvB}}},
				{Node: wvA, Own: dig("own-of-a-node-a!"), Many: true, Buckets: []BucketSum{{Bucket: 0x0b, Digest: short("bucket0b")}}, Aggregated: true},
				{Node: wvB, Own: dig("own-of-a-node-b!"), BelowEqual: true},
			},
			Listings: []Listing{{Node: wvA, Entries: []ListEntry{{Hash: 1 << 63, Digest: short("listlist")}}, More: true, Next: []byte("nx"), After: []byte("af")}},
			Buckets:  []BucketChildren{{Node: wvRoot, Bucket: 0x0c, Children: []ChildSum{{ID: wvC, Active: true}}}},
			ChildDiffs: []ChildDiff{
				{Node: wvRoot, OK: true, Both: []ChildFlags{{Tag: 99, Edge: true, Below: true}, {Tag: 1 << 60, Own: true, Aggregated: true}},
					Children: []ChildSum{{ID: wvB, Own: short("12345678")}}, Missing: []uint64{5}},
				{Node: wvA},
			},
			Points:    batch(1),
			Answered:  [ansKinds]int{1, 2, 3, 4, 5, 6, 7},
			Aggregate: []byte{0, 1, 2},
		}},
	}
}

// wvBin returns the msgpack bin8 of the bytes in hex h.
func wvBin(h string) string {
	if len(h)/2 > 255 {
		panic("wvBin: too long")
	}
	return fmt.Sprintf("c4%02x", len(h)/2) + h
}

func wvUvarint(n uint64) string { return hex.EncodeToString(binary.AppendUvarint(nil, n)) }

// wvHostileMsgs are frames Decode refuses, or accepts though Go would not
// write them (canonical false): type to decode as, frame hex, optional limit.
func wvHostileMsgs() []wvMsgCase {
	f := func(name, note, typ, frame string) wvMsgCase {
		return wvMsgCase{Name: name, Note: note, Type: typ, Frame: frame}
	}
	return []wvMsgCase{
		f("ack wide integer", "have as uint64 (0xcf), keys as written: any width is read", "ack", "010781a468617665cf0000000000000004"),
		f("ack unknown key", "an unknown key is skipped, whatever its value", "ack", "010782a378797a93c0c291a0a468617665cc80"),
		f("start keys reordered and duplicated", "the last value of a repeated key wins", "start", "010582a468617665 01a468617665 02"),
		f("hello uuid as nil", "", "hello", "010381a4696e7374c0"),
		f("ping with a body map of keys", "", "ping", "010881a178c3"),
		f("error frame", "an error frame answers any request: decoded as a remote error, \"not allowed here\"", "ack", "0102b06e6f7420616c6c6f7765642068657265"),
		f("wrong version", "", "ack", "020781a468617665 04"),
		f("unknown type", "", "ack", "011e81a468617665 04"),
		f("other known type", "a start frame decoded as an ack", "ack", "010581a468617665 04"),
		f("empty body", "", "ack", "0107"),
		f("truncated", "", "ack", "010781a4686176"),
		f("trailing bytes", "", "ack", "010781a46861766504c0"),
		f("body not a map", "", "ack", "010793010203"),
		f("map declares 2^32-1 entries", "map32, few bytes present", "status", "010adfffffffffa16980"),
		f("str declares 4 GiB", "str32 with length 0xffffffff", "bye", "011b81a3776879dbffffffff6f6b"),
		f("bin declares 4 GiB", "bin32 with length 0xffffffff", "push", "010681a3707473c6ffffffff0000"),
		f("links array declares 2^32-1", "array32, few bytes present", "status", "010a81a56c696e6b73ddffffffff80"),
		f("links over MaxLinks", "array16 of 16385 empty maps: within the bytes present, above MaxLinks", "status", "010a81a56c696e6b73dc4001"+strings.Repeat("80", 16385)),
		f("nesting too deep", "17 nested arrays in an unknown key", "ack", "010781a178"+strings.Repeat("91", 17)+"c0"),
		f("reserved code", "", "ack", "010781a468617665c1"),
		f("uuid of 15 bytes", "", "hello", "010381a4696e7374c40f"+strings.Repeat("ab", 15)),
		f("uint into bool", "gap as an integer", "ack", "010781a3676170 01"),
		f("over the limit", "limit 8", "ack", "010781a46861766504"),
		f("repair compare truncated", "a compare record of 48 bytes, one short of 49", "repair", "010f81a3636d70"+wvBin(strings.Repeat("00", 48))),
		f("repair density too high", "65, above MaxDensity", "repair", "010f81a3636d70"+wvBin(strings.Repeat("00", 48)+"41")),
		f("repair fetch count beyond the bytes", "a count of 2^62 hashes", "repair", "010f81a56665746368"+wvBin(strings.Repeat("00", 16)+wvUvarint(1<<62)+"00")),
		f("repair list cursor too long", "a cursor above MaxTypeLen + MaxKeyLen + 64 bytes", "repair", "010f81a46c697374"+wvBin(strings.Repeat("00", 16)+wvUvarint(crdt.MaxTypeLen+crdt.MaxKeyLen+65)+strings.Repeat("00", 200))),
		f("repair reply answered counts", "done must hold 7 counts", "repair-reply", "011081a4646f6e6593010203"),
		f("repair reply negative count", "", "repair-reply", "011081a4646f6e6597ff000000000000"),
		f("repair reply summary kind", "kind 3 is unknown", "repair-reply", "011082a473756d73"+wvBin(strings.Repeat("00", 32)+"03")+"a4646f6e659700000000000000"),
		f("repair reply child flag", "an active byte of 2 in a child diff's child", "repair-reply", "011082a56364696666"+
			wvBin(strings.Repeat("00", 16)+"01"+"00"+"01"+strings.Repeat("00", 16)+"02"+strings.Repeat("00", 24)+"00")+"a4646f6e659700000000000000"),
		f("repair reply child diff flags", "flag bit 16 is unknown", "repair-reply", "011082a56364696666"+
			wvBin(strings.Repeat("00", 16)+"01"+"01"+"0000000000000001"+"10"+"00"+"00")+"a4646f6e659700000000000000"),
	}
}

var wvTypes = map[string]any{
	"hello": &Hello{}, "welcome": &Welcome{}, "start": &Start{}, "push": &Push{}, "ack": &Ack{}, "ping": &Ping{},
	"bye": &Bye{}, "status-request": &StatusRequest{}, "status": &Status{}, "import": &Import{},
	"import-result": &ImportResult{}, "export-request": &ExportRequest{}, "export-page": &ExportPage{},
	"node-request": &NodeRequest{}, "node-page": &NodePage{}, "edges-request": &EdgesRequest{}, "edges-page": &EdgesPage{},
	"watch-request": &WatchRequest{}, "watch-reply": &WatchReply{}, "token-request": &TokenRequest{},
	"token-reply": &TokenReply{}, "nodes-request": &NodesRequest{}, "nodes-reply": &NodesReply{},
	"history-request": &HistoryRequest{}, "history-page": &HistoryPage{},
	"repair": &RepairRequest{}, "repair-reply": &RepairReply{},
}

func wvMsgCases(t *testing.T) []any {
	var out []any
	for _, m := range wvMessages() {
		frame, err := wvEncode(m.v)
		if err != nil {
			t.Fatalf("message %q: %v", m.name, err)
		}
		typ := wvTypeName(m.v)
		if _, ok := wvTypes[typ]; !ok {
			t.Fatalf("message %q: type %s not in wvTypes", m.name, typ)
		}
		got, err := wvDecode(frame, 0, m.v)
		if err != nil {
			t.Fatalf("message %q: decode: %v", m.name, err)
		}
		flat := typ == MsgRepair.String() || typ == MsgRepairReply.String()
		want := wvJSON(reflect.ValueOf(m.v), flat)
		if g := wvJSON(reflect.ValueOf(got), flat); !reflect.DeepEqual(g, want) {
			t.Fatalf("message %q: decodes to %v, want %v", m.name, g, want)
		}
		out = append(out, wvMsgCase{Name: m.name, Note: m.note, Type: typ, Value: want, Frame: hex.EncodeToString(frame)})
	}
	for _, c := range wvHostileMsgs() {
		c.Frame = strings.ReplaceAll(strings.ReplaceAll(c.Frame, " ", ""), "\n", "")
		frame, err := hex.DecodeString(c.Frame)
		if err != nil {
			t.Fatalf("message %q: %v", c.Name, err)
		}
		like, ok := wvTypes[c.Type]
		if !ok {
			t.Fatalf("message %q: unknown type %q", c.Name, c.Type)
		}
		if c.Name == "over the limit" {
			c.Limit = 8
		}
		got, err := wvDecode(frame, c.Limit, like)
		if err != nil {
			c.Error = wvClass(err)
		} else {
			c.Value = wvJSON(reflect.ValueOf(got), c.Type == MsgRepair.String() || c.Type == MsgRepairReply.String())
			again, err := wvEncode(got)
			if err != nil {
				t.Fatalf("message %q: re-encode: %v", c.Name, err)
			}
			canon := bytes.Equal(again, frame)
			c.Canonical = &canon
		}
		out = append(out, c)
	}
	return out
}

// wvSteps are the step records of the "history page steps" message and the
// first case of historysteps.json.
func wvSteps() []byte {
	b := AppendHistoryStep(nil, &HistoryStep{Start: 1_700_000_000_000, Count: 3, Min: 20.5, Max: 22, Sum: 64.25, Last: 21.75, LastTime: wvT(7)})
	return AppendHistoryStep(b, &HistoryStep{Start: 1_700_000_240_000, Count: 1, Min: -40, Max: -40, Sum: -40, Last: -40, LastTime: wvT(9) + 240_000<<16})
}

type wvStepsCase struct {
	Name    string `json:"name"`
	Note    string `json:"note,omitempty"`
	Steps   string `json:"steps"`
	Records any    `json:"records,omitempty"`
	Error   string `json:"error,omitempty"`
}

// wvStepsCases are HistoryPage.Steps records, decoded by
// DecodeHistorySteps or refused.
func wvStepsCases(t *testing.T) []any {
	rec := func(start int64, count uint64, lo, hi, sum, last float64) string {
		return hex.EncodeToString(AppendHistoryStep(nil, &HistoryStep{Start: start, Count: count, Min: lo, Max: hi, Sum: sum, Last: last, LastTime: wvT(1)}))
	}
	ok := rec(1_700_000_000_000, 2, 1, 2, 3, 2)
	cases := []wvStepsCase{
		{Name: "two steps", Steps: hex.EncodeToString(wvSteps())},
		{Name: "none", Note: "an empty page: no step had a sample", Steps: ""},
		{Name: "sum overflows", Note: "a sum that is not finite is accepted: values near the limits of float64 add up to an infinity", Steps: rec(0, 2, 1e308, 1.7e308, math.Inf(1), 1e308)},
		{Name: "not a multiple of the record", Note: "55 bytes", Steps: ok[:110]},
		{Name: "a byte more", Steps: ok + "00"},
		{Name: "negative start", Steps: rec(-1, 1, 1, 1, 1, 1)},
		{Name: "starts not increasing", Steps: ok + ok},
		{Name: "no sample", Note: "a count of 0", Steps: rec(1_700_000_000_000, 0, 1, 1, 1, 1)},
		{Name: "min not a number", Note: "NaN", Steps: rec(1_700_000_000_000, 1, math.NaN(), 1, 1, 1)},
		{Name: "max infinite", Steps: rec(1_700_000_000_000, 1, 1, math.Inf(1), 1, 1)},
		{Name: "min above max", Steps: rec(1_700_000_000_000, 2, 3, 2, 5, 2)},
		{Name: "last below min", Steps: rec(1_700_000_000_000, 2, 1, 2, 3, 0.5)},
		{Name: "last above max", Steps: rec(1_700_000_000_000, 2, 1, 2, 3, 2.5)},
	}
	var out []any
	for _, c := range cases {
		b, err := hex.DecodeString(c.Steps)
		if err != nil {
			t.Fatalf("steps %q: %v", c.Name, err)
		}
		ss, err := DecodeHistorySteps(b)
		if c.Error = wvClass(err); err == nil {
			recs := []any{}
			for _, s := range ss {
				recs = append(recs, map[string]any{"start": strconv.FormatInt(s.Start, 10), "count": strconv.FormatUint(s.Count, 10),
					"min": s.Min, "max": s.Max, "sum": wvFloat(s.Sum), "last": s.Last, "lastTime": strconv.FormatUint(uint64(s.LastTime), 10)})
			}
			c.Records = recs
		}
		out = append(out, c)
	}
	return out
}

// wvFloat is f as JSON has it: a number, or for one JSON cannot hold the
// string "+Inf", "-Inf" or "NaN".
func wvFloat(f float64) any {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return f
}

func TestWireVectorHistorySteps(t *testing.T) {
	wvCheck(t, "historysteps.json", fmt.Sprintf("transport.DecodeHistorySteps: the step records of a history page (%d bytes each), decoded or refused. start, count and lastTime are decimal strings; a sum that is not finite is the string \"+Inf\", \"-Inf\" or \"NaN\".", HistoryStepLen), wvStepsCases(t))
}

func TestWireVectorTypes(t *testing.T) {
	var cases []any
	for i := MsgType(1); i < msgTypeEnd; i++ {
		if !i.known() {
			continue // reserved for a type this build does not have
		}
		cases = append(cases, wvTypeCase{Name: i.String(), Code: int(i)})
	}
	wvCheck(t, "types.json", fmt.Sprintf("The message type enum: the second byte of every frame. The first byte is the format version, %d. Append-only: a code is never reused.", Version), cases)
}

func TestWireVectorFrames(t *testing.T) {
	wvCheck(t, "frames.json", "transport.ParseFrame: the two-byte header (version, type) and the size limit, on frames whose body is left undecoded.", wvFrameCases())
}

func TestWireVectorBatches(t *testing.T) {
	wvCheck(t, "batches.json", "crdt.AppendBatch and crdt.DecodeBatch: point batches, and batches the decoder refuses.", wvBatchCases(t))
}

func TestWireVectorMessages(t *testing.T) {
	wvCheck(t, "messages.json", "transport.Encode and Decode (EncodeRepairRequest and friends for repair): every message the browser speaks, its value and its exact frame; then frames Go refuses, or accepts without writing them.", wvMsgCases(t))
}
