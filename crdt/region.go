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
//     every node with an edge that was withdrawn from a cycle or fell
//     back (the irregular edges: active while tombstoned, or inactive
//     while live).
//
// It loads the seeds' registers and resets their placements to their
// current operations; a cycle can then only pass through a seed, and it
// is found by walking up from it. Each cycle's nodes are loaded too and
// rule 3 runs on exactly the components the global run would find. It
// returns the active state of every edge into every node it loaded; the
// edges into other nodes keep theirs. The cost is the seeds' registers
// and their ancestors, not the tree.
func ResolveRegion(view TreeRegion, seeds []uuid.UUID) (map[Edge]bool, error) {
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
		slices.SortFunc(victims, compareEdges)
		for _, e := range victims {
			rs.withdraw(e)
		}
	}
	out := make(map[Edge]bool)
	for e := range rs.known {
		out[e] = false
	}
	for e := range rs.active {
		out[e] = true
	}
	return out, nil
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
		return rs.view.ActiveParents(n)
	}
	var out []uuid.UUID
	for e := range rs.active {
		if e.Child == n {
			out = append(out, e.Parent)
		}
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
