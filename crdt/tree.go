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

// EdgeRegister is the winning write of one edge's TypeEdge point: what the
// tree rules need to know about the edge.
type EdgeRegister struct {
	Parent, Child uuid.UUID
	Tombstone     bool
	Time          Timestamp
	Origin        uuid.UUID
}

// EdgeRegisterOf returns the EdgeRegister that the TypeEdge point p holds.
// The caller checks p.Type == TypeEdge.
func EdgeRegisterOf(p *Point) EdgeRegister {
	return EdgeRegister{Parent: p.Parent, Child: p.Node, Tombstone: p.Tombstone, Time: p.Time, Origin: p.Origin}
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
	return a.Tombstone && !b.Tombstone
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
//   - An edge is a candidate while its register is not a tombstone.
//   - A move is one operation: a live edge P2→C and the tombstones of C's
//     old edges P1→C that carry the same Time and Origin. Those tombstones
//     are the move's paired tombstones.
//   - Concurrent moves can form a cycle. While the candidate edges contain
//     one, in each strongly connected component the candidate edge with the
//     greatest (Time, Origin) is undone as a whole: the edge becomes
//     inactive and its paired tombstones are ignored, so their edges are
//     active again ("restored"). C stays where it was before the move.
//   - A restored edge is undone only on a cycle made of restored edges alone
//     (which no sequence of moves on consistent replicas produces), so that a
//     node whose move was undone never loses its place.
//
// Each round undoes at least one edge for good, so resolution ends after at
// most len(regs) rounds; the result has no cycle. Undoing costs O(E) per
// round; cycles are rare, and a store runs this on the component that
// changed, not on the whole tree.
func ResolveEdges(regs []EdgeRegister) []Edge {
	// Merge duplicates by LWW so that the input is a set of registers.
	byEdge := make(map[Edge]EdgeRegister, len(regs))
	for _, r := range regs {
		if r.Parent == r.Child {
			continue // never valid; Validate refuses it
		}
		if cur, ok := byEdge[r.Edge()]; !ok || winsEdge(&r, &cur) {
			byEdge[r.Edge()] = r
		}
	}
	active := make(map[Edge]*EdgeRegister)
	tombs := make(map[moveKey][]*EdgeRegister)
	all := make([]EdgeRegister, 0, len(byEdge))
	for _, r := range byEdge {
		all = append(all, r)
	}
	for i := range all {
		r := &all[i]
		if r.Tombstone {
			k := moveKey{child: r.Child, time: r.Time, origin: r.Origin}
			tombs[k] = append(tombs[k], r)
		} else {
			active[r.Edge()] = r
		}
	}
	restored := make(map[Edge]bool)
	undone := make(map[Edge]bool)
	for {
		comps := cyclicComponents(active)
		if len(comps) == 0 {
			break
		}
		for _, comp := range comps {
			victim := pickVictim(comp, active, restored)
			e := victim.Edge()
			delete(active, e)
			undone[e] = true
			if victim.Tombstone {
				continue // a restored edge: it has no pair of its own
			}
			for _, t := range tombs[moveKey{child: victim.Child, time: victim.Time, origin: victim.Origin}] {
				te := t.Edge()
				if undone[te] || active[te] != nil {
					continue
				}
				active[te] = t
				restored[te] = true
			}
		}
	}
	out := make([]Edge, 0, len(active))
	for e := range active {
		out = append(out, e)
	}
	slices.SortFunc(out, compareEdges)
	return out
}

func compareEdges(a, b Edge) int {
	if c := bytes.Compare(a.Parent[:], b.Parent[:]); c != 0 {
		return c
	}
	return bytes.Compare(a.Child[:], b.Child[:])
}

// pickVictim returns the edge to undo in one strongly connected component:
// the greatest-ranked edge inside it that is not restored, or, when all are
// restored, the greatest-ranked one.
func pickVictim(comp map[uuid.UUID]bool, active map[Edge]*EdgeRegister, restored map[Edge]bool) *EdgeRegister {
	var best, bestRestored *EdgeRegister
	for e, r := range active {
		if !comp[e.Parent] || !comp[e.Child] {
			continue
		}
		if restored[e] {
			if bestRestored == nil || rankCompare(r, bestRestored) > 0 {
				bestRestored = r
			}
			continue
		}
		if best == nil || rankCompare(r, best) > 0 {
			best = r
		}
	}
	if best != nil {
		return best
	}
	return bestRestored
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
