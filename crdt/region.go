package crdt

import (
	"bytes"
	"slices"

	"github.com/google/uuid"
)

// TreeRegion is what ResolveRegion reads of a replica's tree: the edge
// registers into a node, and the active parents of a node as they were
// decided before (for the nodes it does not load).
type TreeRegion interface {
	// Into returns the register of every edge into child, one per edge.
	Into(child uuid.UUID) ([]EdgeRegister, error)
	// ActiveParents returns the parents of child's active edges, as last
	// decided.
	ActiveParents(child uuid.UUID) ([]uuid.UUID, error)
}

// ResolveRegion decides the active edges after a change without reading
// the whole tree, and gives exactly what ResolvePlacements over every
// register would give, provided that:
//   - the active edges the region reports for the nodes outside seeds are
//     what ResolvePlacements gave before the change (an acyclic tree);
//   - seeds holds every node with an edge whose register changed, and
//     every node with an edge the last decision called irregular
//     (Decision.Irregular).
//
// It loads the seeds' registers and resets their placements to their
// current operations; a cycle can then only pass through a seed, and it
// is found by walking up from it. Each cycle's nodes are loaded too and
// rule 3 runs on exactly the components the global run would find. It
// returns the decision on every edge into every node it loaded; the
// edges into other nodes keep theirs. The cost is the seeds' registers
// and their ancestors, not the tree.
func ResolveRegion(view TreeRegion, seeds []uuid.UUID) (map[Edge]Decision, error) {
	rs := newResolver(view)
	seeds = slices.Clone(seeds)
	slices.SortFunc(seeds, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	for _, c := range slices.Compact(seeds) {
		if err := rs.load(c); err != nil {
			return nil, err
		}
	}
	for {
		comps, err := rs.regionComponents()
		if err != nil {
			return nil, err
		}
		if len(comps) == 0 {
			break
		}
		grew := false
		for _, comp := range comps {
			for n := range comp {
				if !rs.loaded[n] {
					if err := rs.load(n); err != nil {
						return nil, err
					}
					grew = true
				}
			}
		}
		if grew {
			continue // the components again, over loaded nodes only
		}
		var victims []Edge
		for _, comp := range comps {
			victims = append(victims, rs.victim(comp))
		}
		if rs.err != nil {
			return nil, rs.err
		}
		slices.SortFunc(victims, compareEdges)
		for _, e := range victims {
			rs.withdraw(e)
		}
	}
	if err := rs.rescue(); err != nil {
		return nil, err
	}
	return rs.decisions(), nil
}

// Decision is the outcome for one edge into a loaded node.
type Decision struct {
	// Active: the edge is part of the tree.
	Active bool
	// Irregular: the state is not what the edge's register says by
	// itself — active while tombstoned or not the current operation of
	// its placement (fallen back, rescued), inactive while live — or the
	// edge is into a node left with no place. A later change must look at
	// the edge's node again (ResolveRegion's seeds).
	Irregular bool
}

// decisions returns the Decision of every edge into a loaded node.
func (rs *resolver) decisions() map[Edge]Decision {
	natural := make(map[Edge]bool)
	live := make(map[Edge]bool)
	for n := range rs.loaded {
		for _, pl := range rs.byChild[n] {
			if c := pl.current(); c != nil {
				natural[c.Edge()] = true
			}
			for _, r := range pl.regs {
				if !r.Tombstone {
					live[r.Edge()] = true
				}
			}
		}
	}
	lost := make(map[uuid.UUID]bool)
	for _, n := range rs.lostNodes() {
		lost[n] = true
	}
	out := make(map[Edge]Decision)
	for e := range rs.known {
		a := rs.active[e] != nil
		out[e] = Decision{Active: a, Irregular: a != live[e] || a != natural[e] || lost[e.Child]}
	}
	for e := range rs.active {
		if _, ok := out[e]; !ok {
			out[e] = Decision{Active: true, Irregular: true}
		}
	}
	return out
}

// load reads child's registers from the view and loads them.
func (rs *resolver) load(child uuid.UUID) error {
	regs, err := rs.view.Into(child)
	if err != nil {
		return err
	}
	ptrs := make([]*EdgeRegister, 0, len(regs))
	for i := range regs {
		if regs[i].Child == child {
			ptrs = append(ptrs, &regs[i])
		}
	}
	slices.SortFunc(ptrs, func(a, b *EdgeRegister) int { return compareEdges(a.Edge(), b.Edge()) })
	rs.addChild(child, ptrs)
	return nil
}

// activeParents returns n's active parents: the resolver's for a loaded
// node, the view's for another.
func (rs *resolver) activeParents(n uuid.UUID) ([]uuid.UUID, error) {
	if !rs.loaded[n] {
		if rs.view == nil {
			return nil, nil // a global run loads every node with a register
		}
		return rs.view.ActiveParents(n)
	}
	out := make([]uuid.UUID, 0, len(rs.up[n]))
	for p := range rs.up[n] {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return out, nil
}

// regionComponents returns the cycle components of the active edges that
// pass through a loaded node: every one there is, when the nodes not
// loaded hold an acyclic tree. A component through node c lies among c's
// ancestors, so each is found by a walk up from c and a Tarjan over what
// the walk saw.
func (rs *resolver) regionComponents() ([]map[uuid.UUID]bool, error) {
	var starts []uuid.UUID
	for n := range rs.loaded {
		starts = append(starts, n)
	}
	slices.SortFunc(starts, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	seen := make(map[uuid.UUID]bool)
	var comps []map[uuid.UUID]bool
	for _, c := range starts {
		if seen[c] || rs.parents[c] == 0 {
			continue
		}
		// The walk up from c: every ancestor, and the active edges among
		// them.
		sub := make(map[Edge]*EdgeRegister)
		anc := map[uuid.UUID]bool{c: true}
		stack := []uuid.UUID{c}
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			ps, err := rs.activeParents(n)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				sub[Edge{Parent: p, Child: n}] = nil
				if !anc[p] {
					anc[p] = true
					stack = append(stack, p)
				}
			}
		}
		for _, comp := range cyclicComponents(sub) {
			if !comp[c] {
				continue // found again from one of its own nodes
			}
			for n := range comp {
				seen[n] = true
			}
			comps = append(comps, comp)
		}
	}
	return comps, nil
}

// rescue is the last step of rule 3: a loaded node left with no active
// edge, though not every placement of it is deleted, is placed by its
// greatest register (a deletion aside) that closes no cycle. Its
// placements' histories were overwritten past what the fallback order
// reaches (moves written before placements name none). Nodes go in byte
// order; each check walks up from the candidate parent. A node that no
// register can place stays where nothing reaches it, and is reported by
// lost so that the next change looks at it again.
func (rs *resolver) rescue() error {
	for _, n := range rs.lostNodes() {
		var regs []*EdgeRegister
		seen := make(map[*EdgeRegister]bool)
		for _, pl := range rs.byChild[n] {
			for _, r := range pl.regs {
				if !seen[r] && !r.deletion() {
					seen[r] = true
					regs = append(regs, r)
				}
			}
		}
		for _, r := range rs.oldTombs[n] {
			if !seen[r] {
				seen[r] = true
				regs = append(regs, r)
			}
		}
		slices.SortFunc(regs, func(a, b *EdgeRegister) int {
			if c := rankCompare(b, a); c != 0 {
				return c
			}
			return compareEdges(a.Edge(), b.Edge())
		})
		for _, r := range regs {
			below, err := rs.isAncestor(n, r.Parent)
			if err != nil {
				return err
			}
			if !below {
				if len(rs.byChild[n]) == 0 {
					rs.byChild[n] = []*place{{key: placeKey{n, ""}, withdrawn: make(map[Edge]bool)}}
				}
				rs.hold(rs.byChild[n][0], r)
				break
			}
		}
	}
	return nil
}

// lostNodes returns the loaded nodes that have no active edge though they
// should have one (placeable), in byte order.
func (rs *resolver) lostNodes() []uuid.UUID {
	var lost []uuid.UUID
	for n := range rs.loaded {
		if rs.parents[n] == 0 && rs.placeable(n) {
			lost = append(lost, n)
		}
	}
	slices.SortFunc(lost, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return lost
}

// placeable reports whether n should have a place: a placement of it is
// not deleted, or an older move's tombstone names a place it held.
func (rs *resolver) placeable(n uuid.UUID) bool {
	if len(rs.oldTombs[n]) > 0 {
		return true
	}
	for _, pl := range rs.byChild[n] {
		if len(pl.regs) > 0 && !pl.deleted() {
			return true
		}
	}
	return false
}

// isAncestor reports whether a is p or one of p's ancestors over active
// edges.
func (rs *resolver) isAncestor(a, p uuid.UUID) (bool, error) {
	seen := map[uuid.UUID]bool{p: true}
	stack := []uuid.UUID{p}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if x == a {
			return true, nil
		}
		ps, err := rs.activeParents(x)
		if err != nil {
			return false, err
		}
		for _, q := range ps {
			if !seen[q] {
				seen[q] = true
				stack = append(stack, q)
			}
		}
	}
	return false, nil
}
