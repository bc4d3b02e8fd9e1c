package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// The node, edges and watch subjects of the local API (docs/protocol.md).
// Like the rest of the API they are open to any client of the server for
// now; each request has room for an identity field when authorization
// comes.

const (
	// maxEdgesPage bounds the edges of one EdgesPage.
	maxEdgesPage = 1000
	// maxWatchScan bounds the changes one watch reply reads when they are
	// all outside the watched subtree: the reply then moves Next along
	// without points and the client asks again.
	maxWatchScan = 50_000
)

// replyCost bounds the encoded size of a point in a reply's batch: three
// new IDs, its strings, value, flags and time.
func replyCost(p *crdt.Point) int { return 64 + len(p.Type) + len(p.Key) + len(p.Text) }

func pageLimit(req int) int {
	if req <= 0 || req > DefaultPageBytes {
		return DefaultPageBytes
	}
	return req
}

// NodePage reads one page of node req.Node's points: its node points, then
// the points of the edges above it, after the cursor req.After.
func (r *Replica) NodePage(req transport.NodeRequest) (transport.NodePage, error) {
	return r.nodePage(transport.Identity{Kind: transport.KindSystem}, req)
}

// access returns what id may reach, or everything when checks are off.
func (r *Replica) access(id transport.Identity) (*access, error) {
	if r.cfg.noChecks {
		return r.fullAccess(), nil
	}
	return r.accessOf(id)
}

// nodePage is NodePage for identity id: the node must be in its scope, and
// it sees neither credentials (unless it administers everything) nor the
// edges above it from nodes outside its scope.
func (r *Replica) nodePage(id transport.Identity, req transport.NodeRequest) (transport.NodePage, error) {
	if req.Node == uuid.Nil {
		return transport.NodePage{}, errors.New("node: no node given")
	}
	acc, err := r.access(id)
	if err != nil {
		return transport.NodePage{}, err
	}
	if ok, err := acc.canReadNode(req.Node); err != nil || !ok {
		if err == nil {
			err = forbidden(id, req.Node)
		}
		return transport.NodePage{}, err
	}
	limit := pageLimit(req.MaxBytes)
	var after *crdt.Register
	if len(req.After) > 0 {
		reg, err := store.ParseRegisterKey(req.After)
		if err != nil {
			return transport.NodePage{}, fmt.Errorf("node: cursor: %w", err)
		}
		if reg.Node != req.Node {
			return transport.NodePage{}, fmt.Errorf("node: cursor of another node")
		}
		after = &reg
	}
	var pts []crdt.Point
	var last *crdt.Register
	size, more, known := 0, false, false
	err = r.st.ScanNodeFrom(req.Node, after, func(p *crdt.Point) error {
		if size >= limit {
			more = true
			return store.ErrStop
		}
		known = true
		reg := p.Register()
		last = &reg
		if ok, err := acc.canRead(p); err != nil || !ok {
			return err
		}
		pts = append(pts, *p)
		size += replyCost(p)
		return nil
	})
	if err != nil {
		return transport.NodePage{}, err
	}
	page := transport.NodePage{Known: known || after != nil, Points: crdt.AppendBatch(nil, pts), More: more}
	if more {
		page.Next = store.RegisterKey(*last)
	}
	if !page.Known {
		page.Known, err = r.knownNode(req.Node)
	}
	return page, err
}

// knownNode reports whether n is the root or has an edge in the store.
func (r *Replica) knownNode(n uuid.UUID) (bool, error) {
	if n == r.st.Root() {
		return true, nil
	}
	found := false
	stop := func(store.Child) error { found = true; return store.ErrStop }
	if err := r.st.Children(n, stop); err != nil || found {
		return found, err
	}
	err := r.st.Parents(n, stop)
	return found, err
}

// EdgesPage reads one page of the edges below req.Node (above it with
// req.Up), each with the type and description of the node at its other
// end.
func (r *Replica) EdgesPage(req transport.EdgesRequest) (transport.EdgesPage, error) {
	return r.edgesPage(transport.Identity{Kind: transport.KindSystem}, req)
}

// edgesPage is EdgesPage for identity id: the node must be in its scope,
// and edges from parents outside it are left out.
func (r *Replica) edgesPage(id transport.Identity, req transport.EdgesRequest) (transport.EdgesPage, error) {
	if req.Node == uuid.Nil {
		return transport.EdgesPage{}, errors.New("edges: no node given")
	}
	acc, err := r.access(id)
	if err != nil {
		return transport.EdgesPage{}, err
	}
	if ok, err := acc.canReadNode(req.Node); err != nil || !ok {
		if err == nil {
			err = forbidden(id, req.Node)
		}
		return transport.EdgesPage{}, err
	}
	n := req.Max
	if n <= 0 || n > maxEdgesPage {
		n = maxEdgesPage
	}
	// Collect the other ends first: the store's reads must not nest.
	var ends []store.Child
	more := false
	scan := r.st.Children
	if req.Up {
		scan = r.st.Parents
	}
	// The parents a scoped identity may not read are left out before
	// paging, so no cursor ever names one: collect them all (a node has
	// few parents), keep the readable ones, then page.
	filterUp := req.Up && !acc.all
	err = scan(req.Node, func(c store.Child) error {
		if req.After != uuid.Nil && compareIDs(c.ID, req.After) <= 0 {
			return nil
		}
		if len(ends) == n && !filterUp || len(ends) == maxParentsListed {
			more = true
			return store.ErrStop
		}
		ends = append(ends, c)
		return nil
	})
	if err != nil {
		return transport.EdgesPage{}, err
	}
	if filterUp {
		kept := ends[:0]
		for _, c := range ends {
			ok, err := acc.canRead(&crdt.Point{Node: req.Node, Parent: c.ID, Type: crdt.TypeEdge})
			if err != nil {
				return transport.EdgesPage{}, err
			}
			if ok {
				kept = append(kept, c)
			}
		}
		ends = kept
		if len(ends) > n {
			ends, more = ends[:n], true
		}
	}
	var page transport.EdgesPage
	var pts []crdt.Point
	size := 0
	if req.After == uuid.Nil {
		if pts, err = r.nodeLabels(pts, req.Node); err != nil {
			return page, err
		}
	}
	for _, c := range ends {
		if size >= DefaultPageBytes {
			more = true
			break
		}
		reg := crdt.Register{Node: c.ID, Parent: req.Node, Type: crdt.TypeEdge, Key: crdt.DefaultKey}
		if req.Up {
			reg.Node, reg.Parent = req.Node, c.ID
		}
		p, ok, err := r.st.Get(reg)
		if err != nil {
			return page, err
		}
		page.Next = c.ID
		if !ok {
			continue
		}

		start := len(pts)
		pts = append(pts, p)
		if pts, err = r.nodeLabels(pts, c.ID); err != nil {
			return page, err
		}
		for j := start; j < len(pts); j++ {
			size += replyCost(&pts[j])
		}
		page.Active = append(page.Active, boolByte(c.Active))
	}
	page.Points = crdt.AppendBatch(nil, pts)
	page.More = more
	return page, nil
}

// nodeLabels appends node n's nodeType and description points, when held.
func (r *Replica) nodeLabels(pts []crdt.Point, n uuid.UUID) ([]crdt.Point, error) {
	for _, typ := range []string{crdt.TypeNodeType, TypeDescription} {
		p, ok, err := r.st.Get(crdt.Register{Node: n, Type: typ, Key: crdt.DefaultKey})
		if err != nil {
			return pts, err
		}
		if ok {
			pts = append(pts, p)
		}
	}
	return pts, nil
}

// maxParentsListed bounds the parents one edges request of a scoped
// identity reads, before it filters them.
const maxParentsListed = 100_000

// TypeDescription is the node point whose text describes a node for people.
const TypeDescription = "description"

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func compareIDs(a, b uuid.UUID) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// handleWatch holds a watch request in a goroutine of its own until there
// is something to answer, so other requests are served meanwhile. At most
// Config.MaxWatchers are held at once; more are refused.
func (r *Replica) handleWatch(m *nats.Msg) {
	id, ok := r.requester(m)
	if !ok {
		return
	}
	var req transport.WatchRequest
	if err := transport.Decode(m.Data, 0, &req); err != nil {
		replyErr(m, err)
		return
	}
	r.holdWatch(m, id, req, replyErr, func(rep transport.WatchReply) { reply(m, rep) })
}

// holdWatch answers watch request req of identity id (api.watch,
// json.watch): it checks req.Root against id's scope, takes a watcher of
// id's limit and of Config.MaxWatchers, and runs Replica.watch in a
// goroutine the replica waits for. The goroutine calls answer with the
// reply, or fail with the error; a refusal is answered with fail before
// holdWatch returns.
func (r *Replica) holdWatch(m *nats.Msg, id transport.Identity, req transport.WatchRequest,
	fail func(*nats.Msg, error), answer func(transport.WatchReply)) {
	acc, err := r.access(id)
	if err != nil {
		fail(m, err)
		return
	}
	if req.Root != uuid.Nil {
		if ok, err := acc.canReadNode(req.Root); err != nil || !ok {
			if err == nil {
				err = forbidden(id, req.Root)
				r.metrics.refuse(ReasonForbidden)
			}
			fail(m, err)
			return
		}
	}
	if err := r.limits.take(id, true); err != nil {
		r.metrics.refuse(ReasonLimited)
		fail(m, err)
		return
	}
	r.apiMu.Lock()
	switch {
	case r.apiClosed:
		r.apiMu.Unlock()
		r.limits.release(id, true)
		fail(m, errors.New("watch: server shutting down"))
		return
	case r.watchers >= r.cfg.MaxWatchers:
		r.apiMu.Unlock()
		r.limits.release(id, true)
		fail(m, fmt.Errorf("watch: %d watchers already waiting, try again later", r.watchers))
		return
	}
	r.watchers++
	r.wg.Add(1)
	r.apiMu.Unlock()
	go func() {
		defer r.wg.Done()
		defer func() {
			r.apiMu.Lock()
			r.watchers--
			r.apiMu.Unlock()
			r.limits.release(id, true)
		}()
		rep, err := r.watch(r.ctx, acc, req)
		if err != nil {
			fail(m, err)
			return
		}
		answer(rep)
	}()
}

// Watch returns the changes after req.After in req.Root's subtree. When
// there are none it waits for the next commit, up to req.Wait milliseconds
// (at most transport.MaxWatchWait) or until ctx is done, and then answers
// with what it has, possibly nothing. While it waits it costs one channel
// registered with the hub.
func (r *Replica) Watch(ctx context.Context, req transport.WatchRequest) (transport.WatchReply, error) {
	return r.watch(ctx, r.fullAccess(), req)
}

// watch is Watch for acc: only the changes it may read (without req.Root:
// in its whole scope).
func (r *Replica) watch(ctx context.Context, acc *access, req transport.WatchRequest) (transport.WatchReply, error) {
	wait := time.Duration(min(max(req.Wait, 0), transport.MaxWatchWait)) * time.Millisecond
	kick := r.hub.register()
	defer r.hub.unregister(kick)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	after := req.After
	for {
		rep, err := r.changes(acc, after, req.Root, pageLimit(req.MaxBytes))
		if err != nil || len(rep.Changes) > 0 || wait == 0 {
			return rep, err
		}
		after = rep.Next
		select {
		case <-kick:
		case <-timer.C:
			return rep, nil
		case <-ctx.Done():
			return rep, nil
		}
	}
}

// changes reads the change feed after change number after, keeping the
// points in root's subtree, up to about limit bytes.
func (r *Replica) changes(acc *access, after uint64, root uuid.UUID, limit int) (transport.WatchReply, error) {
	rep := transport.WatchReply{Next: after, Last: r.st.LastSeq()}
	sc := newScope(r.st, root)
	var pts []crdt.Point
	size, scanned := 0, 0
	err := r.st.Feed(after, func(c *store.Change) error {
		if size >= limit || scanned >= maxWatchScan {
			return store.ErrStop
		}
		scanned++
		rep.Next = c.Seq
		if c.Point.Type == crdt.TypeEdge {
			// Membership may have changed: a held watch outlives
			// moves.
			sc.invalidate()
			acc.invalidate()
		}
		in, err := sc.contains(&c.Point)
		if err != nil || !in {
			return err
		}
		if in, err = acc.canRead(&c.Point); err != nil || !in {
			return err
		}
		pts = append(pts, c.Point)
		rep.Changes = binary.BigEndian.AppendUint64(rep.Changes, c.Seq)
		rep.Changes = append(rep.Changes, c.Source[:]...)
		size += replyCost(&c.Point) + transport.WatchChangeLen
		return nil
	})
	if err != nil {
		return transport.WatchReply{}, err
	}
	rep.Points = crdt.AppendBatch(nil, pts)
	return rep, nil
}
