package crdt

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"
	"pgregory.net/rapid"
)

func nodeID(i int) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[8:], uint64(i)+1)
	u[0] = 0x10
	return u
}

func originID(i int) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[8:], uint64(i)+1)
	u[0] = 0x20
	return u
}

// treeReplica is one replica's edge registers in the simulation.
type treeReplica struct {
	id   int
	regs map[Edge]EdgeRegister
}

func (r *treeReplica) write(reg EdgeRegister) {
	if cur, ok := r.regs[reg.Edge()]; !ok || winsEdge(&reg, &cur) {
		r.regs[reg.Edge()] = reg
	}
}

func (r *treeReplica) list() []EdgeRegister {
	out := make([]EdgeRegister, 0, len(r.regs))
	for _, reg := range r.regs {
		out = append(out, reg)
	}
	return out
}

// parentsOf returns the live parents of every node in a resolved edge list.
func parentsOf(live []Edge) map[uuid.UUID][]uuid.UUID {
	ps := make(map[uuid.UUID][]uuid.UUID)
	for _, e := range live {
		ps[e.Child] = append(ps[e.Child], e.Parent)
	}
	return ps
}

// descendants returns the nodes reachable from root over live edges.
func descendants(live []Edge, root uuid.UUID) map[uuid.UUID]bool {
	kids := make(map[uuid.UUID][]uuid.UUID)
	for _, e := range live {
		kids[e.Parent] = append(kids[e.Parent], e.Child)
	}
	seen := map[uuid.UUID]bool{root: true}
	stack := []uuid.UUID{root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, k := range kids[n] {
			if !seen[k] {
				seen[k] = true
				stack = append(stack, k)
			}
		}
	}
	return seen
}

func hasCycle(live []Edge) bool {
	active := make(map[Edge]*EdgeRegister)
	for _, e := range live {
		active[e] = &EdgeRegister{Parent: e.Parent, Child: e.Child}
	}
	return len(cyclicComponents(active)) > 0
}

// TestTreeMovesConverge simulates replicas that build a tree, then move nodes
// concurrently, each on its own view, with random partial syncs between
// them. After a full exchange every replica must resolve the same tree, with
// no cycle and with every node still reachable from the root.
func TestTreeMovesConverge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nNodes := rapid.IntRange(2, 9).Draw(t, "nodes")
		nReplicas := rapid.IntRange(2, 4).Draw(t, "replicas")
		root := nodeID(0)
		reps := make([]*treeReplica, nReplicas)
		for i := range reps {
			reps[i] = &treeReplica{id: i, regs: make(map[Edge]EdgeRegister)}
		}
		clock := Timestamp(1)
		// The initial tree: node i under a random earlier node, known to all.
		for i := 1; i <= nNodes; i++ {
			p := rapid.IntRange(0, i-1).Draw(t, "initialParent")
			reg := EdgeRegister{Parent: nodeID(p), Child: nodeID(i), Time: clock, Origin: originID(0)}
			clock++
			for _, r := range reps {
				r.write(reg)
			}
		}
		steps := rapid.IntRange(1, 30).Draw(t, "steps")
		for range steps {
			r := reps[rapid.IntRange(0, nReplicas-1).Draw(t, "replica")]
			if rapid.IntRange(0, 3).Draw(t, "op") == 0 {
				// Sync: r learns everything another replica holds.
				other := reps[rapid.IntRange(0, nReplicas-1).Draw(t, "from")]
				for _, reg := range other.regs {
					r.write(reg)
				}
				t.Logf("replica %d learns replica %d", r.id, other.id)
				continue
			}
			// Move a node, on r's own view: from one of its live parents to
			// a node outside its subtree.
			live := ResolvePlacements(r.list())
			child := nodeID(rapid.IntRange(1, nNodes).Draw(t, "child"))
			parents := parentsOf(live)[child]
			if len(parents) == 0 {
				t.Fatalf("replica %d: node %v has no parent in its own view", r.id, child)
			}
			from := parents[rapid.IntRange(0, len(parents)-1).Draw(t, "fromParent")]
			sub := descendants(live, child)
			var targets []uuid.UUID
			for i := 0; i <= nNodes; i++ {
				if n := nodeID(i); !sub[n] && n != from && !slices.Contains(parents, n) {
					targets = append(targets, n)
				}
			}
			if len(targets) == 0 {
				continue
			}
			to := targets[rapid.IntRange(0, len(targets)-1).Draw(t, "to")]
			clock++
			origin := originID(r.id + 1)
			t.Logf("t%d: replica %d moves %x from %x to %x", clock, r.id, child[15], from[15], to[15])
			r.write(EdgeRegister{Parent: to, Child: child, Time: clock, Origin: origin})
			r.write(EdgeRegister{Parent: from, Child: child, Tombstone: true, Moved: true, Time: clock, Origin: origin})
			if got := ResolvePlacements(r.list()); hasCycle(got) {
				t.Fatalf("replica %d: a local move made a cycle", r.id)
			}
		}
		// Full exchange, in a different order on each replica.
		var all []EdgeRegister
		for _, r := range reps {
			all = append(all, r.list()...)
		}
		want := ResolvePlacements(all)
		if hasCycle(want) {
			t.Fatalf("resolved tree has a cycle: %v", want)
		}
		reach := descendants(want, root)
		for i := 0; i <= nNodes; i++ {
			if !reach[nodeID(i)] {
				t.Fatalf("node %d dropped out of the tree: %v\n%s", i, edgesString(want), regsString(mergeEdgeRegisters(all)))
			}
		}
		for i := range reps {
			perm := rapid.Permutation(all).Draw(t, fmt.Sprintf("perm%d", i))
			if got := ResolvePlacements(perm); !slices.Equal(got, want) {
				t.Fatalf("order changed the tree:\n%v\n%v", got, want)
			}
		}
	})
}

// TestTreeAnyRegistersNoCycle feeds arbitrary edge registers (adds,
// deletes, moves, duplicates) and checks that resolution never leaves a
// cycle and does not depend on order.
func TestTreeAnyRegistersNoCycle(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(2, 7).Draw(t, "nodes")
		k := rapid.IntRange(0, 30).Draw(t, "regs")
		regs := make([]EdgeRegister, k)
		for i := range regs {
			p := rapid.IntRange(0, n-1).Draw(t, "p")
			c := rapid.IntRange(0, n-1).Draw(t, "c")
			regs[i] = EdgeRegister{
				Parent:    nodeID(p),
				Child:     nodeID(c),
				Tombstone: rapid.Bool().Draw(t, "tomb"),
				Moved:     rapid.Bool().Draw(t, "moved"),
				Time:      Timestamp(rapid.Uint64Range(1, 6).Draw(t, "time")),
				Origin:    originID(rapid.IntRange(0, 2).Draw(t, "origin")),
			}
		}
		want := ResolvePlacements(regs)
		if hasCycle(want) {
			t.Fatalf("cycle left: %v", want)
		}
		for _, e := range want {
			if e.Parent == e.Child {
				t.Fatalf("self edge in result")
			}
		}
		perm := rapid.Permutation(regs).Draw(t, "perm")
		if got := ResolvePlacements(perm); !slices.Equal(got, want) {
			t.Fatalf("order changed the result")
		}
	})
}

func TestTreeTwoCycleUndoesGreaterMove(t *testing.T) {
	root, a, b := nodeID(0), nodeID(1), nodeID(2)
	r1, r2 := originID(1), originID(2)
	base := []EdgeRegister{
		{Parent: root, Child: a, Time: 1, Origin: r1},
		{Parent: root, Child: b, Time: 2, Origin: r1},
	}
	// r1 moves A under B at time 10; r2 moves B under A at time 11.
	regs := append(slices.Clone(base),
		EdgeRegister{Parent: b, Child: a, Time: 10, Origin: r1},
		EdgeRegister{Parent: root, Child: a, Tombstone: true, Moved: true, Time: 10, Origin: r1},
		EdgeRegister{Parent: a, Child: b, Time: 11, Origin: r2},
		EdgeRegister{Parent: root, Child: b, Tombstone: true, Moved: true, Time: 11, Origin: r2},
	)
	got := ResolvePlacements(regs)
	want := []Edge{{Parent: root, Child: b}, {Parent: b, Child: a}}
	slices.SortFunc(want, compareEdges)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v (the later move, B under A, undone)", got, want)
	}
}
