package replica

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// The history subject of the local API (api.history, docs/protocol.md):
// one page of a register's past values, raw or summarized per step, read
// by whoever may read the node's points.

// ErrInvalidRequest is returned for a request whose fields break the
// API's rules (a span that ends before it starts, a negative step, a
// cursor of another kind): the same request fails again.
var ErrInvalidRequest = errors.New("invalid request")

// handleHistory answers a history request in a goroutine of its own,
// within its identity's transfer limit: a page of summaries over a long
// span may read many windows.
func (r *Replica) handleHistory(m *nats.Msg) {
	r.transfer(m, func(id transport.Identity) {
		var req transport.HistoryRequest
		if err := transport.Decode(m.Data, 0, &req); err != nil {
			r.metrics.refuse(ReasonInvalid)
			replyErr(m, err)
			return
		}
		page, err := r.historyPage(id, req)
		if err != nil {
			r.countRefusal(err)
			replyErr(m, err)
			return
		}
		reply(m, page)
	})
}

// HistoryPage reads one page of a register's history, as the system sees
// it.
func (r *Replica) HistoryPage(req transport.HistoryRequest) (transport.HistoryPage, error) {
	return r.historyPage(transport.Identity{Kind: transport.KindSystem}, req)
}

// historyPage is HistoryPage for identity id. It refuses a node id may not
// read with the very error a NodeRequest for it gets, and a secret's type
// (authKey, password) to any identity that may not read secrets. Other
// refusals wrap ErrInvalidRequest.
func (r *Replica) historyPage(id transport.Identity, req transport.HistoryRequest) (transport.HistoryPage, error) {
	reg, err := checkHistoryRequest(&req)
	if err != nil {
		return transport.HistoryPage{}, err
	}
	acc, err := r.access(id)
	if err != nil {
		return transport.HistoryPage{}, err
	}
	if ok, err := acc.canReadNode(reg.Node); err != nil || !ok {
		if err == nil {
			err = forbidden(id, reg.Node)
		}
		return transport.HistoryPage{}, err
	}
	p := crdt.Point{Node: reg.Node, Type: reg.Type, Key: reg.Key}
	if ok, err := acc.canRead(&p); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("%w: %s points are credentials, which %s may not read", ErrForbidden, reg.Type, id)
		}
		return transport.HistoryPage{}, err
	}
	if !store.HistoryRecorded(&p) {
		return transport.HistoryPage{}, fmt.Errorf("history: %w: no history is kept of %s points (credentials and roles have none)", ErrInvalidRequest, reg.Type)
	}
	page := transport.HistoryPage{Known: len(req.After) > 0}
	if !page.Known {
		if page.Known, err = r.nodeKnown(reg.Node); err != nil {
			return transport.HistoryPage{}, err
		}
	}
	q := store.HistoryQuery{Reg: reg, From: req.From, To: req.To}
	if req.Step == 0 {
		err = r.samplesPage(&page, q, &req)
	} else {
		err = r.stepsPage(&page, q, &req)
	}
	if err != nil {
		return transport.HistoryPage{}, err
	}
	return page, nil
}

// checkHistoryRequest checks req's fields and returns the register it
// names (a blank key is crdt.DefaultKey). Errors wrap ErrInvalidRequest.
func checkHistoryRequest(req *transport.HistoryRequest) (crdt.Register, error) {
	bad := func(format string, a ...any) (crdt.Register, error) {
		return crdt.Register{}, fmt.Errorf("history: %w: %s", ErrInvalidRequest, fmt.Sprintf(format, a...))
	}
	if req.Node == uuid.Nil {
		return bad("no node given")
	}
	p := crdt.Point{Node: req.Node, Type: req.Type, Key: req.Key}
	p.Normalize()
	if err := p.ValidateUnstamped(); err != nil {
		return bad("%v", err)
	}
	switch {
	case req.From < 0 || req.To < 0:
		return bad("a span before 1970 (from %d, to %d ms)", req.From, req.To)
	case req.To != 0 && req.From > req.To:
		return bad("the span ends before it starts (from %d, to %d ms)", req.From, req.To)
	case req.Step < 0:
		return bad("step %d ms: want 1 ms or more (0: the samples themselves)", req.Step)
	}
	return p.Register(), nil
}

// nodeKnown reports whether n is the root or holds a point or an edge.
func (r *Replica) nodeKnown(n uuid.UUID) (bool, error) {
	if n == r.st.Root() {
		return true, nil
	}
	return nodeHasState(r.st, n)
}

// samplesPage fills page with the samples of q after req.After: at most
// req.Max (transport.MaxHistorySamples), their block at most
// DefaultPageBytes.
func (r *Replica) samplesPage(page *transport.HistoryPage, q store.HistoryQuery, req *transport.HistoryRequest) error {
	var after *history.Sample
	if len(req.After) > 0 {
		t, origin, err := transport.ParseSampleCursor(req.After)
		if err != nil {
			return fmt.Errorf("history: %w: %v", ErrInvalidRequest, err)
		}
		after = &history.Sample{Time: t, Origin: origin}
		q.From = max(q.From, t.Physical())
	}
	limit := req.Max
	if limit <= 0 || limit > transport.MaxHistorySamples {
		limit = transport.MaxHistorySamples
	}
	var ss []history.Sample
	text := 0
	err := r.st.History(q, after, func(s *history.Sample) error {
		// Texts count in full: a sample of 64 KiB of text does not
		// compress.
		if len(ss) == limit || text >= DefaultPageBytes/2 {
			page.More = true
			return store.ErrStop
		}
		ss = append(ss, *s)
		text += len(s.Text)
		return nil
	})
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	// Readings take a byte or two a sample; samples that do not compress
	// (random values at random times, from many origins) up to about 40:
	// halve the page until its block fits.
	for len(ss) > 0 {
		b, err := history.Encode(ss)
		if err != nil {
			return fmt.Errorf("history: %w", err)
		}
		if len(b) <= DefaultPageBytes || len(ss) == 1 {
			page.Samples = b
			break
		}
		ss, page.More = ss[:len(ss)/2], true
	}
	if page.More {
		last := &ss[len(ss)-1]
		page.Next = transport.AppendSampleCursor(nil, last.Time, last.Origin)
	}
	return nil
}

// stepsPage fills page with the summaries of q's steps of req.Step ms,
// from the step req.After names: at most req.Max
// (transport.MaxHistorySteps).
func (r *Replica) stepsPage(page *transport.HistoryPage, q store.HistoryQuery, req *transport.HistoryRequest) error {
	if len(req.After) > 0 {
		start, err := transport.ParseStepCursor(req.After)
		if err != nil {
			return fmt.Errorf("history: %w: %v", ErrInvalidRequest, err)
		}
		if start < req.From || (start-req.From)%req.Step != 0 {
			return fmt.Errorf("history: %w: the cursor names no step of this span", ErrInvalidRequest)
		}
		// Steps stay aligned on the span's start: start is one.
		q.From = start
	}
	limit := req.Max
	if limit <= 0 || limit > transport.MaxHistorySteps {
		limit = transport.MaxHistorySteps
	}
	n := 0
	err := r.st.HistorySummaries(q, req.Step, func(start int64, m *store.Summary) error {
		if n == limit {
			page.More = true
			page.Next = transport.AppendStepCursor(nil, start)
			return store.ErrStop
		}
		page.Steps = transport.AppendHistoryStep(page.Steps, &transport.HistoryStep{
			Start: start, Count: uint64(m.Count), Min: m.Min, Max: m.Max, Sum: m.Sum, Last: m.Last, LastTime: m.LastTime,
		})
		n++
		return nil
	})
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}
