package replica

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// The local API: request/reply on this instance's server. Every reply is
// one frame under crdt.MaxMessageSize; large results are paged.

// maxStatusScope bounds the scope roots a status lists.
const maxStatusScope = 256

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

// ErrLimited is returned for a request over one of its identity's limits
// (rate, watchers, transfers): retry later.
var ErrLimited = errors.New("limit reached")

// serve returns a handler that reads the requester's identity from the
// subject, decodes a request of type Req and answers it with fn's reply or
// its error. Refusals are counted.
func serve[Req, Resp any](r *Replica, fn func(transport.Identity, Req) (Resp, error)) nats.MsgHandler {
	return func(m *nats.Msg) {
		id, ok := r.requester(m)
		if !ok {
			return
		}
		var req Req
		if err := transport.Decode(m.Data, 0, &req); err != nil {
			r.metrics.refuse(ReasonInvalid)
			replyErr(m, err)
			return
		}
		resp, err := fn(id, req)
		if err != nil {
			r.countRefusal(err)
			replyErr(m, err)
			return
		}
		reply(m, resp)
	}
}

// countRefusal counts err when it refuses a request for its identity's
// rights or limits.
func (r *Replica) countRefusal(err error) {
	if errors.Is(err, ErrForbidden) || errors.Is(err, ErrLimited) {
		r.metrics.refuse(rejectReason(err))
	}
}

// goRequest runs fn in a goroutine the replica waits for on Close, so a
// slow request (an import, an export page) holds up no other. It refuses
// when the replica is closing.
func (r *Replica) goRequest(fn func()) error {
	r.apiMu.Lock()
	defer r.apiMu.Unlock()
	if r.apiClosed {
		return errors.New("server shutting down")
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn()
	}()
	return nil
}

// forbidden returns ErrForbidden for reading node n.
func forbidden(id transport.Identity, n uuid.UUID) error {
	return fmt.Errorf("%w: node %v is outside what %s may read", ErrForbidden, n, id)
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
	slices.SortFunc(st.Accepted, func(a, b transport.LinkStatus) int { return strings.Compare(a.Remote, b.Remote) })
	r.links.withHistory(&st)
	return st
}

func (r *Replica) handleStatus(m *nats.Msg) {
	id, ok := r.requester(m)
	if !ok {
		return
	}
	if err := transport.Decode(m.Data, 0, &transport.StatusRequest{}); err != nil {
		replyErr(m, err)
		return
	}
	st, err := r.statusFor(id)
	if err != nil {
		replyErr(m, err)
		return
	}
	reply(m, st)
}

// statusFor is the status as identity id may see it: who it is, and for a
// scoped identity the roots of its scope, without the links.
func (r *Replica) statusFor(id transport.Identity) (transport.Status, error) {
	st := r.Status()
	st.You = id.String()
	acc, err := r.accessOf(id)
	if err != nil {
		return transport.Status{}, err
	}
	if !acc.all {
		// The links name other instances and their addresses: an
		// operator's, not a scoped identity's, business.
		st.Links, st.Accepted, st.Disk = []transport.LinkStatus{}, nil, 0
		st.Scope = []string{}
		for n := range acc.read.roots {
			st.Scope = append(st.Scope, n.String())
			if len(st.Scope) == maxStatusScope {
				break
			}
		}
		slices.Sort(st.Scope)
	}
	return st, nil
}

// transfer runs an import or export request in a goroutine of its own,
// within its identity's transfer limit.
func (r *Replica) transfer(m *nats.Msg, fn func(transport.Identity)) {
	r.transferAnswering(m, replyErr, fn)
}

// transferAnswering is transfer for an API that answers refusals with
// fail.
func (r *Replica) transferAnswering(m *nats.Msg, fail func(*nats.Msg, error), fn func(transport.Identity)) {
	id, ok := r.requesterAnswering(m, fail)
	if !ok {
		return
	}
	if err := r.limits.take(id, false); err != nil {
		r.metrics.refuse(ReasonLimited)
		fail(m, err)
		return
	}
	if err := r.goRequest(func() {
		defer r.limits.release(id, false)
		fn(id)
	}); err != nil {
		r.limits.release(id, false)
		fail(m, err)
	}
}

func (r *Replica) handleExport(m *nats.Msg) {
	r.transfer(m, func(id transport.Identity) {
		var req transport.ExportRequest
		if err := transport.Decode(m.Data, 0, &req); err != nil {
			replyErr(m, err)
			return
		}
		page, err := r.exportPage(id, req)
		if err != nil {
			if errors.Is(err, ErrForbidden) {
				r.metrics.refuse(ReasonForbidden)
			}
			replyErr(m, err)
			return
		}
		reply(m, page)
	})
}

func (r *Replica) handleImport(m *nats.Msg) {
	r.transfer(m, func(id transport.Identity) { r.importBatch(id, m) })
}

func (r *Replica) importBatch(id transport.Identity, m *nats.Msg) {
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
	out, err := r.importPoints(id, pts, req.OneTime)
	if err != nil {
		replyErr(m, err)
		return
	}
	reply(m, out)
}

// importPoints writes the decoded points of an import by identity id
// (api.import, json.set): it checks them against id's scope and the
// sign-in addresses, stamps a user's points with the user's node as
// origin and writes them with Write (WriteOne when one is set). The
// points are durable when it returns without an error; a refusal is
// counted. It may modify pts.
func (r *Replica) importPoints(id transport.Identity, pts []crdt.Point, one bool) (transport.ImportResult, error) {
	if !r.cfg.noChecks {
		acc, err := r.accessOf(id)
		if err == nil {
			err = acc.checkWrite(pts)
		}
		if err != nil {
			r.metrics.rejectWrite(rejectReason(err), len(pts))
			return transport.ImportResult{}, err
		}
	}
	if err := r.checkEmails(pts); err != nil {
		r.metrics.rejectWrite(rejectReason(err), len(pts))
		return transport.ImportResult{}, err
	}
	write := r.Write
	if one {
		write = r.WriteOne
	}
	if id.Kind == transport.KindUser {
		// A user's write is stamped with the user's node as origin:
		// who wrote it, as the server verified.
		for i := range pts {
			pts[i].Origin = id.Node
		}
	}
	res, err := write(pts)
	if err != nil {
		return transport.ImportResult{}, err
	}
	out := transport.ImportResult{}
	for _, o := range res.Outcomes {
		if o == store.Applied {
			out.Applied++
		} else {
			out.Stale++
		}
	}
	return out, nil
}

// ExportPage reads one page of points in export order (node, parent, type,
// key) after req.After, limited to req.Root's subtree when set.
func (r *Replica) ExportPage(req transport.ExportRequest) (transport.ExportPage, error) {
	return r.exportPage(transport.Identity{Kind: transport.KindSystem}, req)
}

// exportPage is ExportPage for identity id: only what it may read (without
// req.Root: its whole scope), credentials only for administrators of
// everything.
func (r *Replica) exportPage(id transport.Identity, req transport.ExportRequest) (transport.ExportPage, error) {
	acc := r.fullAccess()
	if !r.cfg.noChecks {
		var err error
		if acc, err = r.accessOf(id); err != nil {
			return transport.ExportPage{}, err
		}
		if req.Root != uuid.Nil {
			if ok, err := acc.canReadNode(req.Root); err != nil || !ok {
				if err == nil {
					err = forbidden(id, req.Root)
				}
				return transport.ExportPage{}, err
			}
		}
	}
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
		if in, err = acc.canRead(p); err != nil || !in {
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

// treeNodes answers which of req's nodes are in the server's tree and in
// what id may read: the root, or a node with an edge above it (live or
// deleted). A node that only has points, or only edges below it, is not:
// nothing attaches it to the root. A node outside id's scope is reported
// absent, whether the server has it or not, so the answer tells a scoped
// identity nothing beyond its scope.
func (r *Replica) treeNodes(id transport.Identity, req transport.NodesRequest) (transport.NodesReply, error) {
	if len(req.Nodes)%16 != 0 || len(req.Nodes) > 16*transport.MaxNodesAsked {
		return transport.NodesReply{}, fmt.Errorf("nodes: %d bytes: want up to %d node IDs of 16 bytes", len(req.Nodes), transport.MaxNodesAsked)
	}
	acc, err := r.access(id)
	if err != nil {
		return transport.NodesReply{}, err
	}
	out := transport.NodesReply{Known: make([]byte, len(req.Nodes)/16)}
	root := r.st.Root()
	found := false
	stop := func(store.Child) error { found = true; return store.ErrStop }
	for i := range out.Known {
		n := uuid.UUID(req.Nodes[16*i : 16*i+16])
		if n == uuid.Nil {
			continue
		}
		if ok, err := acc.canReadNode(n); err != nil || !ok {
			if err != nil {
				return transport.NodesReply{}, err
			}
			continue
		}
		found = n == root
		if !found {
			if err := r.st.Parents(n, stop); err != nil && !errors.Is(err, store.ErrStop) {
				return transport.NodesReply{}, fmt.Errorf("nodes: %w", err)
			}
		}
		if found {
			out.Known[i] = 1
		}
	}
	return out, nil
}

// emailTaken reports whether a user other than user signs in as email.
func (r *Replica) emailTaken(email string, user uuid.UUID) (bool, error) {
	users, err := r.auth.lookupEmail(email)
	if err != nil {
		return false, err
	}
	for _, u := range users {
		if u != user {
			return true, nil
		}
	}
	return false, nil
}

// checkEmails refuses a sign-in address that another user has already:
// sign-in needs one user per address. (Two replicas that each accept the
// same address offline both keep it; sign-in then refuses it until an
// administrator removes one.)
func (r *Replica) checkEmails(pts []crdt.Point) error {
	for i := range pts {
		p := &pts[i]
		if p.Type != crdt.TypeEmail || p.IsEdge() || p.Tombstone || p.Text == "" {
			continue
		}
		users, err := r.auth.lookupEmail(p.Text)
		if err != nil {
			return err
		}
		for _, u := range users {
			if u != p.Node {
				// Not naming the user: it may be outside the writer's
				// scope.
				return fmt.Errorf("%w: point %d: another user signs in as %q already", store.ErrInvalid, i, transport.NormalizeEmail(p.Text))
			}
		}
	}
	return nil
}
