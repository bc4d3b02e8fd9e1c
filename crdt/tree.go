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
