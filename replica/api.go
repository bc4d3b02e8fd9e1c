package replica

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"siot/crdt"
	"siot/store"
	"siot/transport"
)

// The local API: request/reply on this instance's server. Every reply is
// one frame under crdt.MaxMessageSize; large results are paged.

// DefaultPageBytes is the encoded size an export page aims for.
const DefaultPageBytes = 512 << 10

func reply(m *nats.Msg, v any) {
	b, err := transport.Encode(v)
	if err != nil {
		b = transport.EncodeError(err)
	}
	_ = m.Respond(b)
}

func replyErr(m *nats.Msg, err error) { _ = m.Respond(transport.EncodeError(err)) }

// serve returns a handler that decodes a request of type Req, answers it
// with fn's reply or its error.
func serve[Req, Resp any](fn func(Req) (Resp, error)) nats.MsgHandler {
	return func(m *nats.Msg) {
		var req Req
		if err := transport.Decode(m.Data, 0, &req); err != nil {
			replyErr(m, err)
			return
		}
		resp, err := fn(req)
		if err != nil {
			replyErr(m, err)
			return
		}
		reply(m, resp)
	}
}

// Status returns the replica's status: identity, store position and links.
func (r *Replica) Status() transport.Status {
	st := transport.Status{
		ID:       r.st.Root().String(),
		Instance: r.st.Instance().String(),
		Version:  r.cfg.Version,
		LastSeq:  r.st.LastSeq(),
		HLC:      r.clock.Last().String(),
		Disk:     r.st.DiskUsage(),
		Links:    []transport.LinkStatus{},
		Accepted: r.acceptor.status(),
		Refused:  r.acceptor.refused.Load(),
	}
	for _, d := range r.dialers {
		st.Links = append(st.Links, d.status())
	}
	return st
}

func (r *Replica) handleStatus(m *nats.Msg) {
	if err := transport.Decode(m.Data, 0, &transport.StatusRequest{}); err != nil {
		replyErr(m, err)
		return
	}
	reply(m, r.Status())
}

func (r *Replica) handleImport(m *nats.Msg) {
	var req transport.Import
	if err := transport.Decode(m.Data, 0, &req); err != nil {
		r.metrics.rejectWrite(rejectReason(err), 0)
		replyErr(m, err)
		return
	}
	pts, err := crdt.DecodeBatchUnstamped(req.Points, 0)
	if err != nil {
		r.metrics.rejectWrite(rejectReason(err), 0)
		replyErr(m, err)
		return
	}
	write := r.Write
	if req.OneTime {
		write = r.WriteOne
	}
	res, err := write(pts)
	if err != nil {
		replyErr(m, err)
		return
	}
	out := transport.ImportResult{}
	for _, o := range res.Outcomes {
		if o == store.Applied {
			out.Applied++
		} else {
			out.Stale++
		}
	}
	reply(m, out)
}

// ExportPage reads one page of points in export order (node, parent, type,
// key) after req.After, limited to req.Root's subtree when set.
func (r *Replica) ExportPage(req transport.ExportRequest) (transport.ExportPage, error) {
	limit := req.MaxBytes
	if limit <= 0 || limit > DefaultPageBytes {
		limit = DefaultPageBytes
	}
	var after *crdt.Register
	if len(req.After) > 0 {
		reg, err := store.ParseRegisterKey(req.After)
		if err != nil {
			return transport.ExportPage{}, fmt.Errorf("export: cursor: %w", err)
		}
		after = &reg
	}
	sc := newScope(r.st, req.Root)
	var pts []crdt.Point
	size, more := 0, false
	err := r.st.ScanFrom(after, func(p *crdt.Point) error {
		if size >= limit {
			more = true
			return store.ErrStop
		}
		in, err := sc.contains(p)
		if err != nil || !in {
			return err
		}
		pts = append(pts, *p)
		size += 40 + len(p.Type) + len(p.Key) + len(p.Text)
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrStop) {
		return transport.ExportPage{}, err
	}
	page := transport.ExportPage{Points: crdt.AppendBatch(nil, pts), More: more}
	if more {
		page.Next = store.RegisterKey(pts[len(pts)-1].Register())
	}
	return page, nil
}
