package crdt

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"pgregory.net/rapid"
)

func TestPlaceIDRoundTrip(t *testing.T) {
	p := uuid.MustParse("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b")
	for _, ts := range []Timestamp{0, 1, 0xffff, NewTimestamp(1_780_000_000_000, 3), Timestamp(^uint64(0))} {
		id := PlaceID(p, ts)
		gp, gt, ok := parsePlaceID(id)
		if !ok || gp != p || gt != ts {
			t.Fatalf("PlaceID(%v, %v) = %q parses to %v %v %v", p, ts, id, gp, gt, ok)
		}
		ids, ok := ParsePlaces(id + "," + PlaceID(nodeID(1), ts) + "," + id)
		if !ok || len(ids) != 2 {
			t.Fatalf("ParsePlaces of two ids, one repeated: %v %v", ids, ok)
		}
	}
	good := PlaceID(p, 5)
	for _, bad := range []string{"", "x", good + ",", "," + good, strings.ToUpper(good), good[:36] + ":" + good[37:],
		good[:37] + "000000000000000g", good + "0", strings.Repeat(good+",", maxPlaces) + good} {
		if ids, ok := ParsePlaces(bad); ok {
			t.Errorf("ParsePlaces(%q) = %v, true", bad, ids)
		}
	}
}

// pl builds registers for the placement tests: plain, a move's pair, a
// deletion.
type plBuilder struct{ regs []EdgeRegister }

func (b *plBuilder) plain(parent, child uuid.UUID, t Timestamp, o int) string {
	b.regs = append(b.regs, EdgeRegister{Parent: parent, Child: child, Time: t, Origin: originID(o)})
	return PlaceID(parent, t)
}

func (b *plBuilder) move(child, from, to uuid.UUID, place string, t Timestamp, o int) {
	b.regs = append(b.regs,
		EdgeRegister{Parent: to, Child: child, Moved: true, Place: place, Time: t, Origin: originID(o)},
		EdgeRegister{Parent: from, Child: child, Tombstone: true, Moved: true, Place: place, Time: t, Origin: originID(o)})
}

func (b *plBuilder) del(child, from uuid.UUID, place string, t Timestamp, o int) {
	b.regs = append(b.regs, EdgeRegister{Parent: from, Child: child, Tombstone: true, Place: place, Time: t, Origin: originID(o)})
}

func edgesString(es []Edge) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, fmt.Sprintf("%x→%x", e.Parent[15]-1, e.Child[15]-1))
	}
	return strings.Join(parts, " ")
}

func TestPlacementRules(t *testing.T) {
	R, A, B, C, D, X := nodeID(0), nodeID(1), nodeID(2), nodeID(3), nodeID(4), nodeID(5)
	E, F := nodeID(6), nodeID(7)
	type tc struct {
		name  string
		build func(b *plBuilder)
		want  []Edge
	}
	for _, c := range []tc{
		{"concurrent moves out of one parent: the greater wins", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			b.plain(R, B, 2, 0)
			px := b.plain(R, X, 3, 0)
			b.move(X, R, A, px, 10, 1) // the edge, while its cloud is down
			b.move(X, R, B, px, 11, 2) // the cloud
		}, []Edge{{R, A}, {R, B}, {B, X}}},
		{"a chain of moves against a concurrent one: the latest wins", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			b.plain(R, B, 2, 0)
			b.plain(R, C, 3, 0)
			px := b.plain(R, X, 4, 0)
			b.move(X, R, A, px, 10, 1)
			b.move(X, A, C, px, 30, 1)
			b.move(X, R, B, px, 20, 2)
		}, []Edge{{R, A}, {R, B}, {R, C}, {C, X}}},
		{"a mirror is a placement of its own", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			b.plain(R, B, 2, 0)
			b.plain(R, C, 3, 0)
			px := b.plain(R, X, 4, 0)
			pm := b.plain(A, X, 5, 0) // mirror
			b.move(X, R, B, px, 10, 1)
			b.move(X, A, C, pm, 11, 2) // concurrent, of the other placement
		}, []Edge{{R, A}, {R, B}, {R, C}, {B, X}, {C, X}}},
		{"a re-added mirror under a former parent is a new placement", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			b.plain(R, B, 2, 0)
			px := b.plain(R, X, 3, 0)
			b.move(X, R, A, px, 10, 1)
			b.plain(R, X, 20, 1) // R→X again, as a mirror
			b.move(X, R, B, PlaceID(R, 20), 30, 2)
		}, []Edge{{R, A}, {R, B}, {A, X}, {B, X}}},
		{"a delete and a later concurrent move: the move wins", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			px := b.plain(R, X, 3, 0)
			b.del(X, R, px, 10, 1)
			b.move(X, R, A, px, 11, 2)
		}, []Edge{{R, A}, {A, X}}},
		{"a move and a later concurrent delete: the delete wins", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			px := b.plain(R, X, 3, 0)
			b.move(X, R, A, px, 10, 2)
			b.del(X, R, px, 11, 1)
		}, []Edge{{R, A}}},
		{"moved into a deleted node: hidden with it, whatever else holds a cycle", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			pb := b.plain(R, B, 2, 0)
			pc := b.plain(A, C, 3, 0)
			pe := b.plain(R, E, 4, 0)
			pf := b.plain(R, F, 5, 0)
			b.move(C, A, B, pc, 10, 1)
			b.del(B, R, pb, 11, 2)
			b.move(E, R, F, pe, 30, 1) // an unrelated cycle
			b.move(F, R, E, pf, 31, 2)
		}, []Edge{{R, A}, {R, F}, {B, C}, {F, E}}},
		{"2-cycle: the greater move is undone and goes back", func(b *plBuilder) {
			pa := b.plain(R, A, 1, 0)
			pb := b.plain(R, B, 2, 0)
			b.move(A, R, B, pa, 10, 1)
			b.move(B, R, A, pb, 11, 2)
		}, []Edge{{R, B}, {B, A}}},
		{"undoing a merging move restores every parent it took away", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			b.plain(R, B, 2, 0)
			pc := b.plain(R, C, 3, 0)
			pd1 := b.plain(A, D, 4, 0)
			pd2 := b.plain(B, D, 5, 0)
			both := strings.Join([]string{pd1, pd2}, ",")
			b.regs = append(b.regs,
				EdgeRegister{Parent: C, Child: D, Moved: true, Place: both, Time: 10, Origin: originID(1)},
				EdgeRegister{Parent: A, Child: D, Tombstone: true, Moved: true, Place: pd1, Time: 10, Origin: originID(1)},
				EdgeRegister{Parent: B, Child: D, Tombstone: true, Moved: true, Place: pd2, Time: 10, Origin: originID(1)})
			b.move(C, R, D, pc, 9, 2) // concurrently C under D: a cycle, and D's move is greater
		}, []Edge{{R, A}, {R, B}, {A, D}, {B, D}, {D, C}}},
		{"a plain add under a descendant goes inactive", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			b.plain(A, B, 2, 0)
			b.plain(B, A, 3, 1)
		}, []Edge{{R, A}, {A, B}}},
		{"an undone move of the older format goes back by its tombstone", func(b *plBuilder) {
			b.plain(R, A, 1, 0)
			b.plain(R, B, 2, 0)
			b.regs = append(b.regs,
				EdgeRegister{Parent: B, Child: A, Time: 10, Origin: originID(1)},
				EdgeRegister{Parent: R, Child: A, Tombstone: true, Moved: true, Time: 10, Origin: originID(1)},
				EdgeRegister{Parent: A, Child: B, Time: 11, Origin: originID(2)},
				EdgeRegister{Parent: R, Child: B, Tombstone: true, Moved: true, Time: 11, Origin: originID(2)})
		}, []Edge{{R, B}, {B, A}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b plBuilder
			c.build(&b)
			slices.SortFunc(c.want, compareEdges)
			got := ResolvePlacements(b.regs)
			if !slices.Equal(got, c.want) {
				t.Fatalf("got  %s\nwant %s", edgesString(got), edgesString(c.want))
			}
			for range 5 {
				perm := slices.Clone(b.regs)
				rapidShuffle(perm)
				if g := ResolvePlacements(perm); !slices.Equal(g, got) {
					t.Fatalf("the order of the registers changed the result: %s", edgesString(g))
				}
			}
		})
	}
}

// rapidShuffle reverses and rotates: a cheap reordering that needs no seed.
func rapidShuffle(s []EdgeRegister) {
	slices.Reverse(s)
	if len(s) > 2 {
		first := s[0]
		copy(s, s[1:])
		s[len(s)-1] = first
	}
}

// plReplica is one replica's edge registers in the placement simulation,
// and the active edges it decided by regional resolution, as a store
// does: changed notes the children whose registers changed since.
type plReplica struct {
	id        int
	regs      map[Edge]EdgeRegister
	active    map[Edge]bool
	irregular map[Edge]bool
	changed   map[uuid.UUID]bool
}

func (r *plReplica) write(reg EdgeRegister) {
	if cur, ok := r.regs[reg.Edge()]; !ok || winsEdge(&reg, &cur) {
		r.regs[reg.Edge()] = reg
		if r.changed == nil {
			r.changed = make(map[uuid.UUID]bool)
		}
		r.changed[reg.Child] = true
	}
}

// Into and ActiveParents make the replica a TreeRegion.
func (r *plReplica) Into(child uuid.UUID) ([]EdgeRegister, error) {
	var out []EdgeRegister
	for e, reg := range r.regs {
		if e.Child == child {
			out = append(out, reg)
		}
	}
	return out, nil
}

func (r *plReplica) ActiveParents(child uuid.UUID) ([]uuid.UUID, error) {
	var out []uuid.UUID
	for e, a := range r.active {
		if a && e.Child == child {
			out = append(out, e.Parent)
		}
	}
	return out, nil
}

// settle runs regional resolution over the changed children and the
// irregular ones, as the store will, and checks it against a global
// resolution of every register.
func (r *plReplica) settle(t *rapid.T) {
	if r.active == nil {
		r.active, r.irregular = make(map[Edge]bool), make(map[Edge]bool)
	}
	seeds := make([]uuid.UUID, 0, len(r.changed))
	for c := range r.changed {
		seeds = append(seeds, c)
	}
	for e := range r.irregular {
		seeds = append(seeds, e.Child)
	}
	got, err := ResolveRegion(r, seeds)
	if err != nil {
		t.Fatal(err)
	}
	for e, d := range got {
		r.active[e] = d.Active
		if d.Irregular {
			r.irregular[e] = true
		} else {
			delete(r.irregular, e)
		}
	}
	clear(r.changed)
	var mine []Edge
	for e, a := range r.active {
		if a {
			mine = append(mine, e)
		}
	}
	slices.SortFunc(mine, compareEdges)
	if want := ResolvePlacements(r.list()); !slices.Equal(mine, want) {
		t.Fatalf("replica %d: regional resolution differs from global:\n%s\n%s\n%s", r.id, edgesString(mine), edgesString(want), regsString(r.list()))
	}
}

func (r *plReplica) list() []EdgeRegister {
	out := make([]EdgeRegister, 0, len(r.regs))
	for _, reg := range r.regs {
		out = append(out, reg)
	}
	slices.SortFunc(out, func(a, b EdgeRegister) int { return compareEdges(a.Edge(), b.Edge()) })
	return out
}

// TestPlacementSimulation runs replicas that build a tree, then move,
// mirror, delete and undelete nodes concurrently, each on its own view,
// with random partial syncs. After a full exchange, in any order: the
// same tree everywhere, no cycle, no placement in two places, the result
// unchanged by an unrelated cycle added elsewhere, and, once every
// deletion is undone, every node reachable from the root. make fuzz runs
// it 50,000 times (-rapid.checks).
func TestPlacementSimulation(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nNodes := rapid.IntRange(2, 8).Draw(t, "nodes")
		nReplicas := rapid.IntRange(2, 5).Draw(t, "replicas")
		root := nodeID(0)
		reps := make([]*plReplica, nReplicas)
		for i := range reps {
			reps[i] = &plReplica{id: i, regs: make(map[Edge]EdgeRegister)}
		}
		clock := Timestamp(1)
		for i := 1; i <= nNodes; i++ {
			p := rapid.IntRange(0, i-1).Draw(t, "initialParent")
			reg := EdgeRegister{Parent: nodeID(p), Child: nodeID(i), Time: clock, Origin: originID(0)}
			clock++
			for _, r := range reps {
				r.write(reg)
			}
		}
		for _, r := range reps {
			r.settle(t)
		}
		steps := rapid.IntRange(1, 40).Draw(t, "steps")
		for range steps {
			r := reps[rapid.IntRange(0, nReplicas-1).Draw(t, "replica")]
			op := rapid.IntRange(0, 9).Draw(t, "op")
			if op < 3 {
				other := reps[rapid.IntRange(0, nReplicas-1).Draw(t, "from")]
				for _, reg := range other.regs {
					r.write(reg)
				}
				r.settle(t)
				continue
			}
			clock++
			origin := originID(r.id + 1)
			if op == 9 {
				// Undelete: a deletion this replica knows is written back
				// as a live edge of the same placements.
				var dels []EdgeRegister
				for _, reg := range r.list() {
					if _, ok := ParsePlaces(reg.Place); ok && reg.deletion() {
						dels = append(dels, reg)
					}
				}
				if len(dels) == 0 {
					continue
				}
				d := dels[rapid.IntRange(0, len(dels)-1).Draw(t, "undelete")]
				r.write(EdgeRegister{Parent: d.Parent, Child: d.Child, Moved: true, Place: d.Place, Time: clock, Origin: origin})
				r.settle(t)
				continue
			}
			active := ResolvePlacements(r.list())
			child := nodeID(rapid.IntRange(1, nNodes).Draw(t, "child"))
			// The parent edges of child whose register is live: those a
			// user sees and can move or delete.
			var from []EdgeRegister
			for _, e := range active {
				if reg := r.regs[e]; e.Child == child && !reg.Tombstone {
					from = append(from, reg)
				}
			}
			sub := descendants(active, child)
			var targets []uuid.UUID
			for i := 0; i <= nNodes; i++ {
				if n := nodeID(i); !sub[n] && !slices.ContainsFunc(from, func(x EdgeRegister) bool { return x.Parent == n }) {
					targets = append(targets, n)
				}
			}
			switch {
			case op <= 5 && len(from) > 0 && len(targets) > 0: // move
				f := from[rapid.IntRange(0, len(from)-1).Draw(t, "fromParent")]
				to := targets[rapid.IntRange(0, len(targets)-1).Draw(t, "to")]
				place := strings.Join(f.Places(), ",")
				r.write(EdgeRegister{Parent: to, Child: child, Moved: true, Place: place, Time: clock, Origin: origin})
				r.write(EdgeRegister{Parent: f.Parent, Child: child, Tombstone: true, Moved: true, Place: place, Time: clock, Origin: origin})
			case op <= 7 && len(targets) > 0: // mirror
				to := targets[rapid.IntRange(0, len(targets)-1).Draw(t, "mirror")]
				r.write(EdgeRegister{Parent: to, Child: child, Time: clock, Origin: origin})
			case op == 8 && len(from) > 0: // delete
				f := from[rapid.IntRange(0, len(from)-1).Draw(t, "deleteFrom")]
				r.write(EdgeRegister{Parent: f.Parent, Child: child, Tombstone: true, Place: strings.Join(f.Places(), ","), Time: clock, Origin: origin})
			}
			r.settle(t)
			if hasCycle(ResolvePlacements(r.list())) {
				t.Fatalf("replica %d: a local operation left a cycle", r.id)
			}
		}
		var all []EdgeRegister
		for _, r := range reps {
			all = append(all, r.list()...)
		}
		rs := resolvePlacements(all)
		want := ResolvePlacements(all)
		if hasCycle(want) {
			t.Fatalf("the resolved tree has a cycle: %s", edgesString(want))
		}
		held := map[placeKey]int{}
		for _, hs := range rs.holders {
			for _, h := range hs {
				held[h.pl.key]++
			}
		}
		for k, n := range held {
			if n > 1 {
				t.Fatalf("placement %v of %x is in %d places: %s", k.id, k.child[15]-1, n, edgesString(want))
			}
		}
		for i := range reps {
			perm := rapid.Permutation(all).Draw(t, fmt.Sprintf("perm%d", i))
			if got := ResolvePlacements(perm); !slices.Equal(got, want) {
				t.Fatalf("the order changed the tree:\n%s\n%s", edgesString(got), edgesString(want))
			}
		}
		// Locality: a cycle between two new nodes under the root changes
		// nothing else.
		e1, e2 := nodeID(nNodes+1), nodeID(nNodes+2)
		p1, p2 := PlaceID(root, clock+1), PlaceID(root, clock+2)
		extra := []EdgeRegister{
			{Parent: root, Child: e1, Time: clock + 1, Origin: originID(0)},
			{Parent: root, Child: e2, Time: clock + 2, Origin: originID(0)},
			{Parent: e2, Child: e1, Moved: true, Place: p1, Time: clock + 3, Origin: originID(1)},
			{Parent: root, Child: e1, Tombstone: true, Moved: true, Place: p1, Time: clock + 3, Origin: originID(1)},
			{Parent: e1, Child: e2, Moved: true, Place: p2, Time: clock + 4, Origin: originID(2)},
			{Parent: root, Child: e2, Tombstone: true, Moved: true, Place: p2, Time: clock + 4, Origin: originID(2)},
		}
		var rest []Edge
		for _, e := range ResolvePlacements(append(slices.Clone(all), extra...)) {
			if e.Child != e1 && e.Child != e2 {
				rest = append(rest, e)
			}
		}
		if !slices.Equal(rest, want) {
			t.Fatalf("an unrelated cycle changed the tree:\n%s\n%s", edgesString(rest), edgesString(want))
		}
		// Undo every deletion: then no node is lost.
		final := &plReplica{regs: make(map[Edge]EdgeRegister)}
		for _, reg := range all {
			final.write(reg)
		}
		for _, pl := range resolvePlacements(final.list()).places {
			if len(pl.regs) > 0 && pl.current() == nil && pl.regs[0].deletion() {
				d := pl.regs[0]
				clock++
				final.write(EdgeRegister{Parent: d.Parent, Child: d.Child, Moved: true, Place: pl.key.id, Time: clock, Origin: originID(9)})
			}
		}
		restored := ResolvePlacements(final.list())
		reach := descendants(restored, root)
		for i := 0; i <= nNodes; i++ {
			if !reach[nodeID(i)] {
				t.Fatalf("node %d is lost after every deletion was undone: %s\n%s", i, edgesString(restored), regsString(final.list()))
			}
		}
	})
}

func regsString(regs []EdgeRegister) string {
	var sb strings.Builder
	for _, r := range regs {
		kind := "live"
		switch {
		case r.Tombstone && r.Moved:
			kind = "moved-away"
		case r.Tombstone:
			kind = "deleted"
		case r.Moved:
			kind = "moved-in"
		}
		place := ""
		if ids, ok := ParsePlaces(r.Place); ok {
			for _, id := range ids {
				p, ts, _ := parsePlaceID(id)
				place += fmt.Sprintf(" [%x/%d]", p[15]-1, ts)
			}
		}
		fmt.Fprintf(&sb, "%x→%x %s t%d o%x%s\n", r.Parent[15]-1, r.Child[15]-1, kind, r.Time, r.Origin[15]-1, place)
	}
	return sb.String()
}
