package crdt

import (
	"bytes"
	"slices"

	"github.com/google/uuid"
)

// Edge is a parent→child link of the node tree.
type Edge struct {
	Parent, Child uuid.UUID
}

// EdgeMoved is the value of the tombstone that a move writes on the edge it
// takes a node away from. A tombstone with any other value (0 by
// convention) is a deletion. The tree rules tell the two apart: a deleted
// node stays deleted, a moved one never drops out of the tree.
const EdgeMoved = 1

// EdgeRegister is the winning write of one edge's TypeEdge point: what the
// tree rules need to know about the edge.
type EdgeRegister struct {
	Parent, Child uuid.UUID
	Tombstone     bool
	// Moved: the write has value EdgeMoved. On a tombstone, a move wrote
	// it on the edge it took the child away from; on a live edge (in the
	// placement format, with Place), a move placed the child there.
	Moved bool
	// Place is the write's text: the placement ids a move or a deletion
	// names (ResolvePlacements); empty on a plain edge.
	Place  string
	Time   Timestamp
	Origin uuid.UUID
}

// EdgeRegisterOf returns the EdgeRegister that the TypeEdge point p holds.
// The caller checks p.Type == TypeEdge.
func EdgeRegisterOf(p *Point) EdgeRegister {
	return EdgeRegister{Parent: p.Parent, Child: p.Node, Tombstone: p.Tombstone,
		Moved: p.Value == EdgeMoved, Place: p.Text, Time: p.Time, Origin: p.Origin}
}

// Edge returns the edge r describes.
func (r EdgeRegister) Edge() Edge { return Edge{Parent: r.Parent, Child: r.Child} }

// rankCompare orders edges by (Time, Origin), then by parent and child bytes
// so that even writes sharing a time and origin have a fixed order.
func rankCompare(a, b *EdgeRegister) int {
	switch {
	case a.Time > b.Time:
		return 1
	case a.Time < b.Time:
		return -1
	}
	if c := bytes.Compare(a.Origin[:], b.Origin[:]); c != 0 {
		return c
	}
	if c := bytes.Compare(a.Parent[:], b.Parent[:]); c != 0 {
		return c
	}
	return bytes.Compare(a.Child[:], b.Child[:])
}

// winsEdge reports whether a beats b as writes to the same edge register,
// by the LWW rule of Compare restricted to the fields an EdgeRegister holds.
func winsEdge(a, b *EdgeRegister) bool {
	if a.Time != b.Time {
		return a.Time > b.Time
	}
	if c := bytes.Compare(a.Origin[:], b.Origin[:]); c != 0 {
		return c > 0
	}
	if a.Tombstone != b.Tombstone {
		return a.Tombstone
	}
	if a.Moved != b.Moved {
		return a.Moved
	}
	return a.Place > b.Place
}

type moveKey struct {
	child  uuid.UUID
	time   Timestamp
	origin uuid.UUID
}

// ResolveEdges computes the live edges of the tree from edge registers. The
// result is sorted by (parent, child) and depends only on the set of
// registers, never on their order; several registers for one edge are first
// merged by the LWW rule.
//
// The rules:
//
//  1. An edge is a candidate while its register is not a tombstone. A node
//     with no register into it is a root.
//  2. A move is one operation: a live edge P2→C and the tombstones of C's
//     old edges P1→C that carry the same Time and Origin and the value
//     EdgeMoved, its paired tombstones.
//  3. Concurrent moves can form a cycle. While the candidates contain one,
//     in each strongly connected component the candidate with the greatest
//     (Time, Origin) (then parent and child bytes) becomes inactive: that
//     move is undone.
//  4. No node drops out of the tree. A node is placed when a root reaches
//     it over candidates and moved-away tombstones without passing through
//     a deleted node (one whose registers are all tombstones, the greatest
//     a deletion). Every placed node that step 3 left unreachable from the
//     roots is brought back, one edge P→C at a time, P reachable and C not:
//     first the paired tombstones of undone moves (the undone move goes
//     back where it came from), then the other candidates and moved-away
//     tombstones, each group by descending (Time, Origin). If adding P→C
//     would close a cycle, the edges by which the unreachable part enters
//     the reachable part on the way from C to P are made inactive first;
//     no reachable node loses its last way to a root by it.
//
// Registers keep only the last write of each edge, so after chains of
// concurrent moves the place a move came from may itself be gone; step 4
// then picks the most recent place that keeps the tree acyclic. The result
// never has a cycle, and every placed node is reachable from a root. Cycles
// are rare, and a store runs this on the part of the tree that changed, not
// on all of it; the cost is O(E) per undone or restored edge.
func ResolveEdges(regs []EdgeRegister) []Edge {
	// Merge duplicates by LWW so that the input is a set of registers.
	byEdge := make(map[Edge]EdgeRegister, len(regs))
	for _, r := range regs {
		if r.Parent == r.Child {
			continue // never valid; Validate refuses it
		}
		r.Moved = r.Moved && r.Tombstone
		if cur, ok := byEdge[r.Edge()]; !ok || winsEdge(&r, &cur) {
			byEdge[r.Edge()] = r
		}
	}
	all := make([]EdgeRegister, 0, len(byEdge))
	for _, r := range byEdge {
		all = append(all, r)
	}
	// A fixed order, so that nothing below depends on map iteration.
	slices.SortFunc(all, func(a, b EdgeRegister) int { return compareEdges(a.Edge(), b.Edge()) })
	active := make(map[Edge]*EdgeRegister)
	for i := range all {
		if !all[i].Tombstone {
			active[all[i].Edge()] = &all[i]
		}
	}
	var undone []*EdgeRegister
	for {
		comps := cyclicComponents(active)
		if len(comps) == 0 {
			break
		}
		for _, comp := range comps {
			var victim *EdgeRegister
			for e, r := range active {
				if comp[e.Parent] && comp[e.Child] && (victim == nil || rankCompare(r, victim) > 0) {
					victim = r
				}
			}
			delete(active, victim.Edge())
			undone = append(undone, victim)
		}
	}
	if len(undone) > 0 {
		bringBack(all, undone, active)
	}
	out := make([]Edge, 0, len(active))
	for e := range active {
		out = append(out, e)
	}
	slices.SortFunc(out, compareEdges)
	return out
}

// graph is an adjacency view of a set of edges.
type graph map[uuid.UUID][]uuid.UUID

func graphOf(active map[Edge]*EdgeRegister) graph {
	g := make(graph)
	for e := range active {
		g[e.Parent] = append(g[e.Parent], e.Child)
	}
	return g
}

// walk returns the nodes reachable from starts, never entering a node for
// which skip returns true.
func (g graph) walk(starts []uuid.UUID, skip func(uuid.UUID) bool) map[uuid.UUID]bool {
	seen := make(map[uuid.UUID]bool)
	stack := make([]uuid.UUID, 0, len(starts))
	for _, s := range starts {
		if !seen[s] {
			seen[s] = true
			stack = append(stack, s)
		}
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, k := range g[n] {
			if !seen[k] && (skip == nil || !skip(k)) {
				seen[k] = true
				stack = append(stack, k)
			}
		}
	}
	return seen
}

// bringBack is step 4 of ResolveEdges: it reconnects the placed nodes that
// breaking cycles cut off from every root.
func bringBack(all []EdgeRegister, undone []*EdgeRegister, active map[Edge]*EdgeRegister) {
	var roots []uuid.UUID
	hasReg := make(map[uuid.UUID]bool)
	latest := make(map[uuid.UUID]*EdgeRegister) // greatest-ranked register into each node
	for i := range all {
		r := &all[i]
		hasReg[r.Child] = true
		if cur := latest[r.Child]; cur == nil || rankCompare(r, cur) > 0 {
			latest[r.Child] = r
		}
	}
	for i := range all {
		if p := all[i].Parent; !hasReg[p] {
			roots = append(roots, p)
		}
	}
	deleted := func(n uuid.UUID) bool {
		l := latest[n]
		if l == nil || !l.Tombstone || l.Moved {
			return false
		}
		for i := range all {
			if all[i].Child == n && !all[i].Tombstone {
				return false
			}
		}
		return true
	}
	// The placement graph: candidates and moved-away tombstones.
	placement := make(graph)
	for i := range all {
		if r := &all[i]; !r.Tombstone || r.Moved {
			placement[r.Parent] = append(placement[r.Parent], r.Child)
		}
	}
	placed := placement.walk(roots, deleted)

	paired := make(map[Edge]bool)
	tombs := make(map[moveKey][]*EdgeRegister)
	for i := range all {
		if r := &all[i]; r.Moved {
			k := moveKey{child: r.Child, time: r.Time, origin: r.Origin}
			tombs[k] = append(tombs[k], r)
		}
	}
	for _, u := range undone {
		for _, t := range tombs[moveKey{child: u.Child, time: u.Time, origin: u.Origin}] {
			paired[t.Edge()] = true
		}
	}
	var cands []*EdgeRegister
	for i := range all {
		if r := &all[i]; placed[r.Child] && (!r.Tombstone || r.Moved) && active[r.Edge()] == nil {
			cands = append(cands, r)
		}
	}
	slices.SortFunc(cands, func(a, b *EdgeRegister) int {
		if pa, pb := paired[a.Edge()], paired[b.Edge()]; pa != pb {
			if pa {
				return -1
			}
			return 1
		}
		return rankCompare(b, a)
	})
	for {
		g := graphOf(active)
		now := g.walk(roots, nil)
		var pick *EdgeRegister
		for _, r := range cands {
			if !now[r.Child] && now[r.Parent] && active[r.Edge()] == nil {
				pick = r
				break
			}
		}
		if pick == nil {
			return
		}
		// Cut every edge x→y with x below pick.Child and unreachable, y
		// reachable, from which pick.Parent can be reached: after that
		// pick.Child no longer reaches pick.Parent.
		below := g.walk([]uuid.UUID{pick.Child}, nil)
		if below[pick.Parent] {
			for e := range active {
				if below[e.Parent] && !now[e.Parent] && now[e.Child] && reaches(active, e.Child, pick.Parent) {
					delete(active, e)
				}
			}
		}
		active[pick.Edge()] = pick
	}
}

// reaches reports whether to is reachable from from over active edges.
func reaches(active map[Edge]*EdgeRegister, from, to uuid.UUID) bool {
	kids := make(map[uuid.UUID][]uuid.UUID)
	for e := range active {
		kids[e.Parent] = append(kids[e.Parent], e.Child)
	}
	seen := map[uuid.UUID]bool{from: true}
	stack := []uuid.UUID{from}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == to {
			return true
		}
		for _, k := range kids[n] {
			if !seen[k] {
				seen[k] = true
				stack = append(stack, k)
			}
		}
	}
	return false
}

func compareEdges(a, b Edge) int {
	if c := bytes.Compare(a.Parent[:], b.Parent[:]); c != 0 {
		return c
	}
	return bytes.Compare(a.Child[:], b.Child[:])
}

// cyclicComponents returns the strongly connected components of the graph
// of active edges that contain a cycle (more than one node; self-loops are
// never active). It uses an iterative Tarjan so deep trees cannot overflow
// the stack.
func cyclicComponents(active map[Edge]*EdgeRegister) []map[uuid.UUID]bool {
	adj := make(map[uuid.UUID][]uuid.UUID)
	for e := range active {
		adj[e.Parent] = append(adj[e.Parent], e.Child)
	}
	nodes := make([]uuid.UUID, 0, len(adj))
	for n := range adj {
		nodes = append(nodes, n)
	}
	// Sorting is not needed for correctness (components are unique) but
	// keeps the traversal reproducible when debugging.
	slices.SortFunc(nodes, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })

	index := make(map[uuid.UUID]int)
	low := make(map[uuid.UUID]int)
	onStack := make(map[uuid.UUID]bool)
	var stack []uuid.UUID
	var comps []map[uuid.UUID]bool
	next := 0

	type frame struct {
		node uuid.UUID
		edge int
	}
	for _, start := range nodes {
		if _, seen := index[start]; seen {
			continue
		}
		call := []frame{{node: start}}
		index[start], low[start] = next, next
		next++
		stack = append(stack, start)
		onStack[start] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			if f.edge < len(adj[f.node]) {
				w := adj[f.node][f.edge]
				f.edge++
				if _, seen := index[w]; !seen {
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					call = append(call, frame{node: w})
				} else if onStack[w] && index[w] < low[f.node] {
					low[f.node] = index[w]
				}
				continue
			}
			v := f.node
			call = call[:len(call)-1]
			if len(call) > 0 {
				if p := call[len(call)-1].node; low[v] < low[p] {
					low[p] = low[v]
				}
			}
			if low[v] == index[v] {
				comp := make(map[uuid.UUID]bool)
				for {
					w := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					onStack[w] = false
					comp[w] = true
					if w == v {
						break
					}
				}
				if len(comp) > 1 {
					comps = append(comps, comp)
				}
			}
		}
	}
	return comps
}

// CyclicComponents returns the node sets of the strongly connected
// components of edges that contain a cycle, each sorted by ID, ordered by
// their first ID. A tree or DAG has none.
func CyclicComponents(edges []Edge) [][]uuid.UUID {
	active := make(map[Edge]*EdgeRegister, len(edges))
	for _, e := range edges {
		if e.Parent != e.Child {
			active[e] = nil
		}
	}
	var out [][]uuid.UUID
	for _, comp := range cyclicComponents(active) {
		ns := make([]uuid.UUID, 0, len(comp))
		for n := range comp {
			ns = append(ns, n)
		}
		slices.SortFunc(ns, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b []uuid.UUID) int { return bytes.Compare(a[0][:], b[0][:]) })
	return out
}
