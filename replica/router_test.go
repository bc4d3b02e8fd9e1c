package replica

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// queuedPoints reads what r's queue holds, as "node/type" strings.
func queuedPoints(t *testing.T, n *node, r *route) []string {
	t.Helper()
	seqs, _ := r.peek(1 << 20)
	var out []string
	if err := n.st.FeedAt(seqs, func(c *store.Change) error {
		name := c.Point.Type
		if c.Point.IsEdge() {
			name += "<" + c.Point.Parent.String()[:4]
		}
		out = append(out, c.Point.Node.String()[:4]+"/"+name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// routed waits until the router has read everything written.
func routed(t *testing.T, n *node) {
	t.Helper()
	waitFor(t, "router caught up", 5*time.Second, func() bool {
		return n.rep.router.position.Load() >= n.st.LastSeq()
	})
}

func short(id uuid.UUID) string { return id.String()[:4] }

// TestRouterQueuesBySubtree: a change is queued on the routes whose root
// is at or above its node in the live tree, once each, never back to the
// link it came from; a move changes where later changes go; a root's own
// edge reaches its route.
func TestRouterQueuesBySubtree(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	a, b, x, y := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	n.write(edgePt(n.root, a), edgePt(n.root, b), edgePt(a, x), edgePt(x, y))
	routed(t, n)
	src := uuid.New()
	ra, _ := n.rep.router.add(a, src)
	rb, _ := n.rep.router.add(b, uuid.New())
	defer n.rep.router.remove(ra)
	defer n.rep.router.remove(rb)

	n.write(valPt(y, "temp", 1))
	n.write(valPt(n.root, "site", 1)) // above both: neither
	if _, _, _, err := n.rep.applyRemote(src, []crdt.Point{{Node: x, Type: "fromA", Key: "0", Value: 1, Time: crdt.NewTimestamp(time.Now().UnixMilli(), 0), Origin: src}}, nil); err != nil {
		t.Fatal(err)
	}
	routed(t, n)
	if got, want := queuedPoints(t, n, ra), []string{short(y) + "/temp"}; !slices.Equal(got, want) {
		t.Fatalf("route a: %v, want %v", got, want)
	}
	if got := queuedPoints(t, n, rb); len(got) != 0 {
		t.Fatalf("route b: %v, want nothing", got)
	}
	ra.drop(1 << 20)

	// Move x (and y below it) from a to b.
	del := edgePt(a, x)
	del.Tombstone, del.Value = true, crdt.EdgeMoved
	n.write(del, edgePt(b, x))
	n.write(valPt(y, "temp", 2))
	routed(t, n)
	if got, want := queuedPoints(t, n, ra), []string{short(x) + "/edge<" + short(a)}; !slices.Equal(got, want) {
		t.Fatalf("route a after the move: %v, want %v", got, want)
	}
	if got, want := queuedPoints(t, n, rb), []string{short(x) + "/edge<" + short(b), short(y) + "/temp"}; !slices.Equal(got, want) {
		t.Fatalf("route b after the move: %v, want %v", got, want)
	}
	ra.drop(1 << 20)
	rb.drop(1 << 20)

	// y under both a and b: once on each.
	n.write(edgePt(a, y))
	n.write(valPt(y, "temp", 3))
	routed(t, n)
	if got := queuedPoints(t, n, ra); !slices.Contains(got, short(y)+"/temp") || len(got) != 2 {
		t.Fatalf("route a with y under both: %v", got)
	}
	if got := queuedPoints(t, n, rb); !slices.Equal(got, []string{short(y) + "/temp"}) {
		t.Fatalf("route b with y under both: %v", got)
	}
	ra.drop(1 << 20)

	// a's own edge: its route hears of it.
	gone := edgePt(n.root, a)
	gone.Tombstone = true
	n.write(gone)
	routed(t, n)
	if got, want := queuedPoints(t, n, ra), []string{short(a) + "/edge<" + short(n.root)}; !slices.Equal(got, want) {
		t.Fatalf("route a after its own edge changed: %v, want %v", got, want)
	}
}

// TestRouterFollowsBrokenCycles: an edge turned off to break a cycle
// changes no register of its own; the router still stops routing through
// it, and routes through it again when the cycle is gone.
func TestRouterFollowsBrokenCycles(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	a, b := uuid.New(), uuid.New()
	n.write(edgePt(n.root, a), edgePt(a, b))
	routed(t, n)
	rb, _ := n.rep.router.add(b, uuid.New())
	defer n.rep.router.remove(rb)
	if !n.rep.router.holds(b, b) || !n.rep.router.holds(a, b) {
		t.Fatal("tree not loaded")
	}
	// b → a closes a cycle a → b → a: the store turns one edge off.
	n.write(edgePt(b, a))
	routed(t, n)
	var active []string
	for _, e := range []struct{ child, parent uuid.UUID }{{b, a}, {a, b}} {
		_ = n.st.Parents(e.child, func(c store.Child) error {
			if c.ID == e.parent && c.Active {
				active = append(active, short(e.parent)+">"+short(e.child))
			}
			return nil
		})
	}
	if len(active) != 1 {
		t.Fatalf("active edges of the cycle: %v, want one", active)
	}
	inB := n.rep.router.holds(b, a)
	if want := active[0] == short(b)+">"+short(a); inB != want {
		t.Fatalf("router holds a under b: %v, store says %v", inB, active)
	}
	// Deleting b → a ends the cycle: a is below root again, not below b.
	del := edgePt(b, a)
	del.Tombstone = true
	n.write(del)
	routed(t, n)
	if n.rep.router.holds(b, a) || !n.rep.router.holds(a, b) || !n.rep.router.holds(n.root, b) {
		t.Fatal("router did not follow the cycle's end")
	}
}

// TestRouterOverflowCatchesUp: a route whose queue overflows loses no
// change: its sender catches up from the store.
func TestRouterOverflowCatchesUp(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}, tune: noPeriodicRepair})
	edge.waitInSync(cloud.url())
	cloud.rep.router.mu.Lock()
	for _, r := range cloud.rep.router.routes[edge.root] {
		r.mu.Lock()
		r.seqs, r.overflow = nil, true
		r.mu.Unlock()
	}
	cloud.rep.router.mu.Unlock()
	s := uuid.New()
	cloud.write(edgePt(edge.root, s), valPt(s, "setpoint", 5))
	edge.waitValue(s, "setpoint", 5)
}

// noPeriodicRepair leaves digest repair to the connect: what a link
// carries between is the push alone.
func noPeriodicRepair(c *Config) { c.RepairInterval, c.RepairMaxInterval = time.Hour, time.Hour }

// TestRoutedEdgeMoves: with repair only at connect, the cloud's pushes
// alone carry a subtree moved from one edge to another: the new owner
// gets it whole with its older points, the old one its removal, and later
// writes go only to the new owner.
func TestRoutedEdgeMoves(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{tune: noPeriodicRepair})
	e1 := startNode(t, "e1", nodeOpts{upstreams: []string{cloud.url()}, tune: noPeriodicRepair})
	e2 := startNode(t, "e2", nodeOpts{upstreams: []string{cloud.url()}, tune: noPeriodicRepair})
	e1.waitInSync(cloud.url())
	e2.waitInSync(cloud.url())
	x, y := uuid.New(), uuid.New()
	cloud.write(edgePt(e1.root, x), edgePt(x, y), valPt(x, "mode", 1), valPt(y, "temp", 20))
	e1.waitValue(y, "temp", 20)
	if p := e2.get(y, uuid.Nil, "temp", "0"); p.Time != 0 {
		t.Fatal("e2 got a point of e1's subtree")
	}
	del := edgePt(e1.root, x)
	del.Tombstone, del.Value = true, crdt.EdgeMoved
	cloud.write(del, edgePt(e2.root, x))
	e2.waitValue(y, "temp", 20) // the older point, by the backfill
	e2.waitValue(x, "mode", 1)
	waitFor(t, "e1 sees x gone", 10*time.Second, func() bool {
		return e1.get(x, e1.root, crdt.TypeEdge, "0").Tombstone
	})
	cloud.write(valPt(y, "temp", 21))
	e2.waitValue(y, "temp", 21)
	e1.waitInSync(cloud.url())
	if p := e1.get(y, uuid.Nil, "temp", "0"); p.Value != 20 {
		t.Fatalf("e1 got a write made after y left it: %+v", p)
	}
}

// TestRoutedResumeReadsTheSubtree: an edge that comes back after the
// cloud wrote more than a catch-up scans gets what changed in its
// subtree, read from the subtree, and nothing else: not its subtree
// again. After a short outage the scan does the same.
func TestRoutedResumeReadsTheSubtree(t *testing.T) {
	for _, outside := range []int{100, scanCatchUp + 500} {
		t.Run(strconv.Itoa(outside), func(t *testing.T) {
			cloud := startNode(t, "cloud", nodeOpts{tune: noPeriodicRepair})
			edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}, tune: noPeriodicRepair})
			s := uuid.New()
			pts := []crdt.Point{edgePt(edge.root, s)}
			for i := range 2000 {
				pts = append(pts, crdt.Point{Node: s, Type: "reading", Key: strconv.Itoa(i), Value: float64(i)})
			}
			edge.write(pts...)
			edge.waitInSync(cloud.url())
			cloud.waitValue(s, "reading", 0)
			edge.stop()

			other := uuid.New()
			far := []crdt.Point{edgePt(cloud.root, other)}
			for i := range outside {
				far = append(far, crdt.Point{Node: other, Type: "x", Key: strconv.Itoa(i), Value: 1})
			}
			cloud.write(far...)
			cloud.write(valPt(s, "setpoint", 7))
			edge.start()
			edge.waitValue(s, "setpoint", 7)
			edge.waitInSync(cloud.url())
			// 2,000 readings would be about 34 KB; a repair round that
			// finds the subtrees equal and one push cost well under 4 KB.
			if got := edge.link(cloud.url()).BytesRecv; got > 4096 {
				t.Fatalf("the resume received %d bytes", got)
			}
			if p := edge.get(other, uuid.Nil, "x", "0"); p.Time != 0 {
				t.Fatal("the edge got a point outside its subtree")
			}
		})
	}
}
