package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

func decodePts(t *testing.T, b []byte) []crdt.Point {
	t.Helper()
	pts, err := crdt.DecodeBatch(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return pts
}

// TestNodePagePagesABigNode reads a node of 20,000 points in small pages:
// every point once, in order, then the edge above it; each page within its
// byte bound.
func TestNodePagePagesABigNode(t *testing.T) {
	n := startNode(t, "server", nodeOpts{})
	id := uuid.New()
	pts := []crdt.Point{edgePt(n.root, id)}
	for i := range 20_000 {
		pts = append(pts, crdt.Point{Node: id, Type: "reading", Key: fmt.Sprintf("k%05d", i), Value: float64(i)})
	}
	for i := 0; i < len(pts); i += 2000 {
		n.write(pts[i:min(i+2000, len(pts))]...)
	}
	req := transport.NodeRequest{Node: id, MaxBytes: 32 << 10}
	var got []crdt.Point
	pages := 0
	for {
		page, err := n.rep.NodePage(req)
		if err != nil {
			t.Fatal(err)
		}
		if !page.Known {
			t.Fatal("node with points not known")
		}
		if len(page.Points) > 64<<10 {
			t.Fatalf("page of %d bytes, asked for 32 KiB", len(page.Points))
		}
		got = append(got, decodePts(t, page.Points)...)
		pages++
		if !page.More {
			break
		}
		req.After = page.Next
	}
	if len(got) != 20_001 || pages < 10 {
		t.Fatalf("%d points in %d pages", len(got), pages)
	}
	if got[0].Key != "k00000" || got[19_999].Key != "k19999" || got[20_000].Type != crdt.TypeEdge {
		t.Fatalf("order: %v %v %v", got[0], got[19_999], got[20_000])
	}
	// The root is known without points; a stranger is not; a cursor of
	// another node is refused.
	if page, err := n.rep.NodePage(transport.NodeRequest{Node: n.root}); err != nil || !page.Known {
		t.Fatalf("root: %+v %v", page, err)
	}
	if page, err := n.rep.NodePage(transport.NodeRequest{Node: uuid.New()}); err != nil || page.Known {
		t.Fatalf("stranger: %+v %v", page, err)
	}
	if _, err := n.rep.NodePage(transport.NodeRequest{Node: n.root, After: req.After}); err == nil {
		t.Fatal("cursor of another node accepted")
	}
}

// TestEdgesPage lists the children of a node with their labels and state,
// in pages, and the parents of a node under two.
func TestEdgesPage(t *testing.T) {
	n := startNode(t, "server", nodeOpts{})
	var kids []uuid.UUID
	for i := range 5 {
		k := uuid.New()
		kids = append(kids, k)
		n.write(edgePt(n.root, k), crdt.Point{Node: k, Type: crdt.TypeNodeType, Text: "sensor"},
			crdt.Point{Node: k, Type: TypeDescription, Text: fmt.Sprintf("sensor %d", i)})
	}
	gone := edgePt(n.root, kids[0])
	gone.Tombstone = true
	n.write(gone, edgePt(kids[1], kids[2])) // kids[2] is under the root and kids[1]
	n.write(crdt.Point{Node: n.root, Type: TypeDescription, Text: "the root"})
	req := transport.EdgesRequest{Node: n.root, Max: 2}
	var edges, labels []crdt.Point
	var active []byte
	for {
		page, err := n.rep.EdgesPage(req)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range decodePts(t, page.Points) {
			if p.IsEdge() {
				edges = append(edges, p)
			} else {
				labels = append(labels, p)
			}
		}
		active = append(active, page.Active...)
		if !page.More {
			break
		}
		req.After = page.Next
	}
	if len(edges) != 5 || len(active) != 5 || len(labels) != 11 {
		t.Fatalf("%d edges, %d flags, %d labels", len(edges), len(active), len(labels))
	}
	if labels[0].Node != n.root || labels[0].Text != "the root" {
		t.Fatalf("first label %v, want the root's description", labels[0])
	}
	for i, e := range edges {
		if dead := e.Node == kids[0]; dead != e.Tombstone || dead == (active[i] == 1) {
			t.Fatalf("edge to %v: tombstone %v, active %d", e.Node, e.Tombstone, active[i])
		}
	}
	page, err := n.rep.EdgesPage(transport.EdgesRequest{Node: kids[2], Up: true})
	if err != nil {
		t.Fatal(err)
	}
	ups := 0
	for _, p := range decodePts(t, page.Points) {
		if p.IsEdge() {
			ups++
			if p.Node != kids[2] || (p.Parent != n.root && p.Parent != kids[1]) {
				t.Fatalf("parent edge %v", p)
			}
		}
	}
	if ups != 2 || len(page.Active) != 2 || page.More {
		t.Fatalf("%d parents, %d flags, more %v", ups, len(page.Active), page.More)
	}
}

// TestWriteOneStampsOneTime: an operation's points share one HLC and
// origin; writing a register twice in one is refused and writes nothing.
func TestWriteOneStampsOneTime(t *testing.T) {
	n := startNode(t, "server", nodeOpts{})
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	n.write(edgePt(n.root, a), edgePt(n.root, b), edgePt(a, c))
	old := edgePt(a, c)
	old.Tombstone, old.Value = true, crdt.EdgeMoved
	if _, err := n.rep.WriteOne([]crdt.Point{edgePt(b, c), old}); err != nil {
		t.Fatal(err)
	}
	nw, gone := n.get(c, b, crdt.TypeEdge, "0"), n.get(c, a, crdt.TypeEdge, "0")
	if nw.Time == 0 || nw.Time != gone.Time || nw.Origin != gone.Origin || !gone.Tombstone {
		t.Fatalf("move: new %v, old %v", nw, gone)
	}
	seq := n.st.LastSeq()
	_, err := n.rep.WriteOne([]crdt.Point{valPt(c, "x", 1), valPt(c, "x", 2)})
	if !errors.Is(err, store.ErrInvalid) || n.st.LastSeq() != seq {
		t.Fatalf("register twice: %v", err)
	}
}

// TestConcurrentMovesFormingACycleResolve: two peers cut apart move A
// under B and B under A, each as one operation; once they reconnect both
// hold the same tree, with A and B still reachable from the root.
func TestConcurrentMovesFormingACycleResolve(t *testing.T) {
	p1 := startNode(t, "p1", nodeOpts{})
	px := proxyTo(t, p1)
	p2 := startNode(t, "p2", nodeOpts{root: p1.root, peers: []string{px.URL()}})
	a, b := uuid.New(), uuid.New()
	p1.write(edgePt(p1.root, a), edgePt(p1.root, b))
	p2.waitInSync(px.URL())
	waitFor(t, "p2 has both", 10*time.Second, func() bool { return p2.get(b, p2.root, crdt.TypeEdge, "0").Time != 0 })
	px.Cut()
	move := func(n *node, child, to uuid.UUID) {
		old := edgePt(n.root, child)
		old.Tombstone, old.Value = true, crdt.EdgeMoved
		if _, err := n.rep.WriteOne([]crdt.Point{edgePt(to, child), old}); err != nil {
			t.Fatal(err)
		}
	}
	move(p1, a, b)
	move(p2, b, a)
	px.Restore()
	waitFor(t, "peers converge", 20*time.Second, func() bool {
		return equalDumps(p1.dump(uuid.Nil), p2.dump(uuid.Nil))
	})
	for _, n := range []*node{p1, p2} {
		reach := map[uuid.UUID]bool{}
		if err := n.st.Descendants(n.root, func(id uuid.UUID) error { reach[id] = true; return nil }); err != nil {
			t.Fatal(err)
		}
		if !reach[a] || !reach[b] {
			t.Fatalf("%s: a reachable %v, b reachable %v", n.name, reach[a], reach[b])
		}
	}
}

func watchSeqs(t *testing.T, rep transport.WatchReply) []uint64 {
	t.Helper()
	if len(rep.Changes)%transport.WatchChangeLen != 0 {
		t.Fatalf("changes of %d bytes", len(rep.Changes))
	}
	var seqs []uint64
	for b := rep.Changes; len(b) > 0; b = b[transport.WatchChangeLen:] {
		seqs = append(seqs, binary.BigEndian.Uint64(b))
	}
	return seqs
}

// TestWatchLongPolls: a watch answers at once when changes exist, holds
// the request until the next commit otherwise, filters by subtree, and
// answers empty when the wait ends.
func TestWatchLongPolls(t *testing.T) {
	n := startNode(t, "server", nodeOpts{})
	in, out := uuid.New(), uuid.New()
	n.write(edgePt(n.root, in), valPt(out, "temp", 1))
	ctx := context.Background()
	rep, err := n.rep.Watch(ctx, transport.WatchRequest{Wait: 5000})
	if err != nil || len(decodePts(t, rep.Points)) != 2 || len(watchSeqs(t, rep)) != 2 || rep.Next != n.st.LastSeq() {
		t.Fatalf("first watch: %+v %v", rep, err)
	}
	// Nothing new: the request waits for the next commit.
	type result struct {
		rep transport.WatchReply
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := n.rep.Watch(ctx, transport.WatchRequest{After: rep.Next, Root: in, Wait: 20_000})
		done <- result{r, err}
	}()
	// A change outside the subtree does not end it; one inside does.
	n.write(valPt(out, "temp", 2))
	select {
	case r := <-done:
		t.Fatalf("watch of the subtree answered a change outside it: %+v", r)
	default:
	}
	n.write(valPt(in, "temp", 3))
	select {
	case r := <-done:
		pts := decodePts(t, r.rep.Points)
		if r.err != nil || len(pts) != 1 || pts[0].Node != in || pts[0].Value != 3 {
			t.Fatalf("watch: %v %v", pts, r.err)
		}
		if src := r.rep.Changes[8:]; !equalBytes(src, make([]byte, 16)) {
			t.Fatalf("local write has source % x", src)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("watch not woken by a commit in its subtree")
	}
	// A short wait with nothing new answers empty, with the position.
	rep, err = n.rep.Watch(ctx, transport.WatchRequest{After: n.st.LastSeq(), Wait: 1})
	if err != nil || len(rep.Changes) != 0 || rep.Next != n.st.LastSeq() {
		t.Fatalf("idle watch: %+v %v", rep, err)
	}
}

func equalBytes(a, b []byte) bool { return string(a) == string(b) }

// TestWatchersAreBounded: with MaxWatchers held, another watch request is
// refused at once; a held one is answered when the replica closes.
func TestWatchersAreBounded(t *testing.T) {
	n := startNode(t, "server", nodeOpts{tune: func(c *Config) { c.MaxWatchers = 1 }})
	nc := n.dial(nil)
	req, _ := transport.Encode(transport.WatchRequest{After: n.st.LastSeq(), Wait: transport.MaxWatchWait})
	held := make(chan error, 1)
	go func() {
		m, err := nc.Request(adminSubject(transport.NameWatch), req, 20*time.Second)
		if err == nil {
			err = transport.Decode(m.Data, 0, &transport.WatchReply{})
		}
		held <- err
	}()
	waitFor(t, "one watcher held", 10*time.Second, func() bool {
		n.rep.apiMu.Lock()
		defer n.rep.apiMu.Unlock()
		return n.rep.watchers == 1
	})
	m, err := nc.Request(adminSubject(transport.NameWatch), req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.Decode(m.Data, 0, &transport.WatchReply{}); !transport.IsRemote(err) || !strings.Contains(err.Error(), "watchers") {
		t.Fatalf("second watcher: %v, want refused", err)
	}
	// Close the replica alone: the server stays up to deliver the answer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.rep.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-held:
		if err != nil {
			t.Fatalf("held watch on close: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("held watch not answered on close")
	}
}
