package replica

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// maxRouteQueue bounds the changes queued for one route: a link that
// falls this far behind (a cellular edge while its site writes fast) is
// dropped from routing and catches up from the store instead.
const maxRouteQueue = 1 << 16

// router is the one reader of the change feed for the links whose scope
// is a subtree (an edge's): it keeps the live tree's parent links in
// memory, and for each change walks up from the change's node to find
// the routes whose root is above it, and queues the change's number on
// them. The cost is O(changes × depth), whatever the number of links;
// a link's sender reads only the changes queued for it.
//
// The tree in memory follows the feed: an edge change refreshes the
// child's parents from the store, and so does any edge whose active state
// flipped without its register changing (store.IrregularEdges). It may be
// newer than the change being routed, never older than the changes routed
// before it; a subtree that enters a scope is sent whole by the link's
// sender when it reads the edge change (see backfill), so nothing depends
// on the routing of older changes to moved nodes.
type router struct {
	st   *store.Store
	kick chan struct{} // the hub's: the store changed

	mu        sync.Mutex
	parent    map[uuid.UUID]uuid.UUID   // the active parent of a node with one
	parents   map[uuid.UUID][]uuid.UUID // all active parents of a node with several
	irregular map[crdt.Edge]bool        // as the store last reported
	gen       uint64                    // the store's IrregularGen when it did
	routes    map[uuid.UUID][]*route    // by root
	pos       uint64                    // every change through pos is routed

	position atomic.Uint64 // pos, for readers without the lock
	// moved receives (coalesced) when position moved: the rule engine,
	// which reads the feed only up to position, waits on it. The hub's
	// kick reaches the engine as it reaches the router, so the engine
	// usually wakes before the change is routed; without this it then
	// waited for its 5 ms poll (BenchmarkRuleLatency).
	moved chan struct{}
}

// route is one link's share of the feed: the numbers of the changes in
// its root's subtree, in feed order, that did not come from its remote.
type route struct {
	root   uuid.UUID
	source uuid.UUID     // the remote: changes that arrived from it are not routed back
	kick   chan struct{} // receives (coalesced) when the queue grows

	mu       sync.Mutex
	seqs     []uint64
	overflow bool // the queue outgrew maxRouteQueue and was dropped
}

func newRouter(st *store.Store, kick chan struct{}) *router {
	return &router{st: st, kick: kick, parent: make(map[uuid.UUID]uuid.UUID),
		parents: make(map[uuid.UUID][]uuid.UUID), irregular: make(map[crdt.Edge]bool),
		routes: make(map[uuid.UUID][]*route), moved: make(chan struct{}, 1)}
}

// load reads the live tree from the store and sets the position to the
// feed's end as it was before the read.
func (rt *router) load() error {
	pos := rt.st.LastSeq()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.gen = rt.st.IrregularGen()
	err := rt.st.ActiveEdges(func(child, parent uuid.UUID) error {
		rt.addParent(child, parent)
		return nil
	})
	if err != nil {
		return fmt.Errorf("router: load tree: %w", err)
	}
	irr, err := rt.st.IrregularEdges()
	if err != nil {
		return fmt.Errorf("router: load tree: %w", err)
	}
	for _, e := range irr {
		rt.irregular[e] = true
	}
	rt.pos = pos
	rt.position.Store(pos)
	return nil
}

func (rt *router) addParent(child, parent uuid.UUID) {
	if ps, ok := rt.parents[child]; ok {
		if !slices.Contains(ps, parent) {
			rt.parents[child] = append(ps, parent)
		}
		return
	}
	if p, ok := rt.parent[child]; ok {
		if p != parent {
			delete(rt.parent, child)
			rt.parents[child] = []uuid.UUID{p, parent}
		}
		return
	}
	rt.parent[child] = parent
}

func (rt *router) removeParent(child, parent uuid.UUID) {
	if p, ok := rt.parent[child]; ok {
		if p == parent {
			delete(rt.parent, child)
		}
		return
	}
	ps := slices.DeleteFunc(rt.parents[child], func(p uuid.UUID) bool { return p == parent })
	switch len(ps) {
	case 0:
		delete(rt.parents, child)
	case 1:
		delete(rt.parents, child)
		rt.parent[child] = ps[0]
	default:
		rt.parents[child] = ps
	}
}

// setEdge records an edge's register as the feed reports it: active when
// live, unless a broken cycle made it irregular. Called with mu held.
func (rt *router) setEdge(p *crdt.Point) {
	e := crdt.Edge{Parent: p.Parent, Child: p.Node}
	if active := !p.Tombstone != rt.irregular[e]; active {
		rt.addParent(e.Child, e.Parent)
	} else {
		rt.removeParent(e.Child, e.Parent)
	}
}

// refresh reads child's active parents from the store.
func (rt *router) refresh(child uuid.UUID) error {
	delete(rt.parent, child)
	delete(rt.parents, child)
	return rt.st.Parents(child, func(c store.Child) error {
		if c.Active {
			rt.addParent(child, c.ID)
		}
		return nil
	})
}

// run routes the feed as it grows until ctx ends.
func (rt *router) run(ctx context.Context) error {
	for {
		before := rt.position.Load()
		if err := rt.step(ctx); err != nil {
			return err
		}
		if rt.position.Load() != before {
			select {
			case rt.moved <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-rt.kick:
		}
	}
}

// step routes every change after the position. An edge change is read
// whole (its tombstone says whether it is live); other changes are routed
// by their identity alone.
func (rt *router) step(ctx context.Context) error {
	n := 0
	keep := func(c *store.Change) (bool, error) {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return false, store.ErrStop
		}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if len(rt.routes) > 0 {
			rt.route(c)
		}
		if c.Point.Type == crdt.TypeEdge {
			return true, nil // the position moves once the tree has it
		}
		rt.advance(c.Seq)
		return false, nil
	}
	edge := func(c *store.Change) error {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if err := rt.checkIrregular(); err != nil {
			return err
		}
		rt.setEdge(&c.Point)
		rt.advance(c.Seq)
		return nil
	}
	rt.mu.Lock()
	pos := rt.pos
	err := rt.checkIrregular()
	rt.mu.Unlock()
	if err == nil {
		err = rt.st.FeedWhere(pos, keep, edge)
	}
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	return nil
}

func (rt *router) advance(seq uint64) {
	rt.pos = seq
	rt.position.Store(seq)
}

// checkIrregular refreshes the edges that became, or stopped being,
// irregular since the store's count last changed: their active state
// flipped with no change of their own in the feed. Called with mu held.
func (rt *router) checkIrregular() error {
	gen := rt.st.IrregularGen()
	if gen == rt.gen {
		return nil
	}
	rt.gen = gen
	irr, err := rt.st.IrregularEdges()
	if err != nil {
		return err
	}
	now := make(map[crdt.Edge]bool, len(irr))
	for _, e := range irr {
		now[e] = true
	}
	for e := range rt.irregular {
		if !now[e] {
			if err := rt.refresh(e.Child); err != nil {
				return err
			}
		}
	}
	for e := range now {
		if !rt.irregular[e] {
			if err := rt.refresh(e.Child); err != nil {
				return err
			}
		}
	}
	rt.irregular = now
	return nil
}

// route queues c on every route whose root is at or above its node (an
// edge point's parent), and on the routes of an edge's child when it is
// a root (the link watches its root's own edges). Called with mu held.
func (rt *router) route(c *store.Change) {
	p := &c.Point
	target := p.Node
	if p.IsEdge() {
		target = p.Parent
		if p.Type == crdt.TypeEdge {
			rt.deliver(rt.routes[p.Node], c)
		}
	}
	rt.walkUp(target, func(n uuid.UUID) bool {
		rt.deliver(rt.routes[n], c)
		return true
	})
}

func (rt *router) deliver(routes []*route, c *store.Change) {
	for _, r := range routes {
		if r.source != c.Source {
			r.push(c.Seq)
		}
	}
}

// walkUp calls fn for n and every node above it over active edges, each
// once, until fn returns false. Called with mu held.
func (rt *router) walkUp(n uuid.UUID, fn func(uuid.UUID) bool) {
	if !fn(n) {
		return
	}
	// The common case, one parent each and a shallow tree, needs no
	// memory. The tree in memory is refreshed one child at a time, so it
	// may hold a cycle for a moment: past a depth no real tree has, the
	// walk remembers what it visited.
	for depth := 0; depth < 64; depth++ {
		if _, multi := rt.parents[n]; multi {
			break
		}
		p, ok := rt.parent[n]
		if !ok {
			return
		}
		if !fn(p) {
			return
		}
		n = p
	}
	seen := map[uuid.UUID]bool{n: true}
	stack := append([]uuid.UUID(nil), rt.parents[n]...)
	if p, ok := rt.parent[n]; ok {
		stack = append(stack, p)
	}
	for len(stack) > 0 {
		m := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[m] {
			continue
		}
		seen[m] = true
		if !fn(m) {
			return
		}
		if p, ok := rt.parent[m]; ok {
			stack = append(stack, p)
		} else {
			stack = append(stack, rt.parents[m]...)
		}
	}
}

// holds reports whether n is root or below it in the live tree.
func (rt *router) holds(root, n uuid.UUID) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	found := false
	rt.walkUp(n, func(m uuid.UUID) bool {
		found = m == root
		return !found
	})
	return found
}

// add registers a route for the subtree of root, for a link whose remote
// is source, and returns it with the position from which it receives
// every change: the caller reads what came before from the store.
func (rt *router) add(root, source uuid.UUID) (*route, uint64) {
	r := &route{root: root, source: source, kick: make(chan struct{}, 1)}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.routes[root] = append(rt.routes[root], r)
	return r, rt.pos
}

// remove unregisters r.
func (rt *router) remove(r *route) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rs := rt.routes[r.root]
	for i, x := range rs {
		if x == r {
			rs = append(rs[:i:i], rs[i+1:]...)
			break
		}
	}
	if len(rs) == 0 {
		delete(rt.routes, r.root)
	} else {
		rt.routes[r.root] = rs
	}
}

// restart empties r's queue after an overflow and returns the position
// from which it receives every change again.
func (rt *router) restart(r *route) uint64 {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs, r.overflow = nil, false
	return rt.pos
}

func (r *route) push(seq uint64) {
	r.mu.Lock()
	if !r.overflow {
		if len(r.seqs) >= maxRouteQueue {
			r.seqs, r.overflow = nil, true
		} else {
			r.seqs = append(r.seqs, seq)
		}
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// peek returns up to n queued numbers (a copy) and whether the queue
// overflowed.
func (r *route) peek(n int) ([]uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs[:min(n, len(r.seqs))]...), r.overflow
}

// drop removes the first n queued numbers and reports how many remain.
func (r *route) drop(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.overflow {
		return 0
	}
	n = min(n, len(r.seqs))
	r.seqs = r.seqs[n:]
	if len(r.seqs) == 0 {
		r.seqs = nil // let a long queue's array go
	}
	return len(r.seqs)
}

// queued reports how many numbers wait.
func (r *route) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

// up calls fn for n and every node above it in the live tree, each once,
// until fn returns false. fn runs with the router's lock held: it must not
// call the router.
func (rt *router) up(n uuid.UUID, fn func(uuid.UUID) bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.walkUp(n, fn)
}

// parentsOf appends n's active parents to out.
func (rt *router) parentsOf(n uuid.UUID, out []uuid.UUID) []uuid.UUID {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if p, ok := rt.parent[n]; ok {
		return append(out, p)
	}
	return append(out, rt.parents[n]...)
}
