package replica

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// TestClocklessDeviceTakesUpstreamTime starts an edge whose physical clock
// says 1970: after the handshake it stamps present-day times, so its
// writes are neither refused nor lost to every older write.
func TestClocklessDeviceTakesUpstreamTime(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	boot := time.Now()
	epoch := func() time.Time { return time.Unix(0, 0).Add(time.Since(boot)) }
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}, physical: epoch})
	edge.waitInSync(cloud.url())
	if c := edge.clock.Correction(); c < time.Since(time.Unix(0, 0))-time.Minute {
		t.Fatalf("correction %v, want about %v", c, time.Since(time.Unix(0, 0)))
	}
	s := uuid.New()
	cloud.write(edgePt(edge.root, s), valPt(s, "sp", 1))
	edge.waitValue(s, "sp", 1)
	edge.write(valPt(s, "sp", 2)) // later than the cloud's write, so it wins
	cloud.waitValue(s, "sp", 2)
	p := edge.get(s, uuid.Nil, "sp", "0")
	if d := time.Since(p.Time.Time()); d < -time.Minute || d > time.Minute {
		t.Fatalf("edge stamped %v, not the present", p.Time.Time())
	}
}

// TestFarFutureRemotePointsRejected: a device whose clock ran an hour
// ahead while it was offline cannot make those writes win forever; they
// are refused, counted and reported, and the rest of the push is applied.
func TestFarFutureRemotePointsRejected(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	px := proxyTo(t, cloud)
	px.Cut()
	ahead := func() time.Time { return time.Now().Add(time.Hour) }
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{px.URL()}, physical: ahead})
	s := uuid.New()
	edge.write(edgePt(edge.root, s), valPt(s, "temp", 9))
	px.Restore()
	waitFor(t, "rejection counted", 10*time.Second, func() bool {
		for _, a := range cloud.rep.Status().Accepted {
			if a.Rejected > 0 {
				return true
			}
		}
		return false
	})
	if p := cloud.get(s, uuid.Nil, "temp", "0"); p.Time != 0 {
		t.Fatalf("a point an hour ahead was accepted: %v", p.Time.Time())
	}
}

// TestHostileMessagesGetErrorsAndChangeNothing sends garbage, oversized
// and malformed frames to the link and API subjects of a server.
func TestHostileMessagesGetErrorsAndChangeNothing(t *testing.T) {
	srv := startNode(t, "server", nodeOpts{})
	nc := srv.dial(nil)
	before := srv.st.LastSeq()
	req := func(subj string, data []byte) error {
		m, err := nc.Request(subj, data, 5*time.Second)
		if err != nil {
			return err
		}
		var w transport.Welcome
		return transport.Decode(m.Data, 0, &w)
	}
	hello := func(h transport.Hello) []byte { b, _ := transport.Encode(h); return b }
	enc := func(v any) []byte { b, _ := transport.Encode(v); return b }
	cases := []struct {
		name, subj string
		data       []byte
		want       string
	}{
		{"garbage", adminSubject(transport.NameHello), []byte("\x01\x03\xc1\xc1"), "malformed"},
		{"empty", adminSubject(transport.NameHello), nil, "malformed"},
		{"wrong version", adminSubject(transport.NameHello), []byte{9, 3, 0x80}, "version"},
		{"unknown type", adminSubject(transport.NameHello), []byte{1, 200, 0x80}, "unknown message type"},
		{"bad proto", adminSubject(transport.NameHello), hello(transport.Hello{Proto: 99, Instance: uuid.New(), Root: uuid.New(), Role: "edge"}), "protocol"},
		{"nil instance", adminSubject(transport.NameHello), hello(transport.Hello{Proto: 1, Root: uuid.New(), Role: "edge"}), "instance"},
		{"own instance", adminSubject(transport.NameHello), hello(transport.Hello{Proto: 1, Instance: srv.st.Instance(), Root: uuid.New(), Role: "edge"}), "itself"},
		{"edge with the server's root", adminSubject(transport.NameHello), hello(transport.Hello{Proto: 1, Instance: uuid.New(), Root: srv.root, Role: "edge"}), "root"},
		{"peer with another root", adminSubject(transport.NameHello), hello(transport.Hello{Proto: 1, Instance: uuid.New(), Root: uuid.New(), Role: "peer"}), "different roots"},
		{"unknown role", adminSubject(transport.NameHello), hello(transport.Hello{Proto: 1, Instance: uuid.New(), Root: uuid.New(), Role: "admin"}), "role"},
		{"import garbage", adminSubject(transport.NameImport), []byte{1, 11, 0x81, 0xa3, 'p', 't', 's', 0xc4, 3, 1, 2, 3}, "malformed"},
		{"export bad cursor", adminSubject(transport.NameExport), func() []byte {
			b, _ := transport.Encode(transport.ExportRequest{After: []byte("short")})
			return b
		}(), "cursor"},
		{"node garbage", adminSubject(transport.NameNode), []byte("\x01\x11\xc1"), "malformed"},
		{"node without a node", adminSubject(transport.NameNode), enc(transport.NodeRequest{}), "no node"},
		{"node bad cursor", adminSubject(transport.NameNode), enc(transport.NodeRequest{Node: srv.root, After: []byte("short")}), "cursor"},
		{"edges without a node", adminSubject(transport.NameEdges), enc(transport.EdgesRequest{}), "no node"},
		{"edges as a watch", adminSubject(transport.NameEdges), enc(transport.WatchRequest{}), "unknown message type"},
		{"watch garbage", adminSubject(transport.NameWatch), []byte{1, 21, 0x81, 0xa4, 'w', 'a', 'i', 't', 0xa1, 'x'}, "malformed"},
		{"one-time import writing a register twice", adminSubject(transport.NameImport), enc(transport.Import{OneTime: true,
			Points: crdt.AppendBatch(nil, []crdt.Point{valPt(srv.root, "x", 1), valPt(srv.root, "x", 2)})}), "register"},
	}
	for _, c := range cases {
		err := req(c.subj, c.data)
		if err == nil || !transport.IsRemote(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a remote error about %q", c.name, err, c.want)
		}
	}
	// A payload over the limit never reaches the server.
	if err := nc.Publish(adminSubject(transport.NameHello), make([]byte, transport.MaxPayload+1)); err == nil {
		t.Error("oversized payload published")
	}
	// A session opened properly, then fed a corrupt push, ends with an
	// error and applies nothing.
	inst, root := uuid.New(), uuid.New()
	m, err := nc.Request(adminSubject(transport.NameHello), hello(transport.Hello{Proto: 1, Instance: inst, Root: root, Role: "edge"}), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var w transport.Welcome
	if err := transport.Decode(m.Data, 0, &w); err != nil {
		t.Fatal(err)
	}
	subj, err := transport.Subjects(adminID, w.Session)
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := transport.Encode(transport.Push{From: 0, Through: 5, Points: []byte{0x93, 0xc4, 0x10}})
	m, err = nc.Request(subj.Up, bad, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.Decode(m.Data, 0, &transport.Ack{}); !transport.IsRemote(err) {
		t.Fatalf("corrupt push: %v", err)
	}
	// The adoption edge is the only change the server made, besides the
	// session's device state (online, lastSeen, linkedVia), which the
	// server writes for the link on its own time.
	if got := changesBesidesDeviceState(srv, before); got != 1 {
		t.Fatalf("hostile messages changed the store: %d changes", got)
	}
	if p := srv.get(root, srv.root, crdt.TypeEdge, "0"); p.Time == 0 {
		t.Fatal("the well-formed hello did not adopt its edge")
	}
}

// TestHostileEdgeCannotWriteOutsideItsSubtree plays a device that sends
// crafted pushes: points on an upstream node outside its subtree, an edge
// pulling such a node under itself, and a tombstone of the edge above its
// own root are refused and counted; its own new node is kept.
// helloAsEdge opens a link session on cloud by hand, as its
// administrator in the edge role for a new instance and root, and returns
// the connection, the session's subjects, the instance and the root.
func helloAsEdge(t *testing.T, cloud *node) (*nats.Conn, transport.SessionSubjects, uuid.UUID, uuid.UUID) {
	t.Helper()
	nc := cloud.dial(nil)
	inst, root := uuid.New(), uuid.New()
	b, _ := transport.Encode(transport.Hello{Proto: 1, Instance: inst, Root: root, Role: transport.RoleEdge, Time: time.Now().UnixMilli()})
	m, err := nc.Request(adminSubject(transport.NameHello), b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var w transport.Welcome
	if err := transport.Decode(m.Data, 0, &w); err != nil {
		t.Fatal(err)
	}
	subj, err := transport.Subjects(adminID, w.Session)
	if err != nil {
		t.Fatal(err)
	}
	return nc, subj, inst, root
}

func TestHostileEdgeCannotWriteOutsideItsSubtree(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	y := uuid.New()
	cloud.write(edgePt(cloud.root, y), valPt(y, "secret", 1))
	nc, subj, inst, root := helloAsEdge(t, cloud)
	now := crdt.NewTimestamp(time.Now().UnixMilli(), 0)
	stamp := func(p crdt.Point, i int) crdt.Point {
		p.Time, p.Origin = now+crdt.Timestamp(i), inst
		return p
	}
	z := uuid.New()
	detach := edgePt(cloud.root, root)
	detach.Tombstone = true
	pts := []crdt.Point{
		stamp(valPt(y, "secret", 666), 1), // outside: refused
		stamp(edgePt(root, y), 2),         // pulls y under itself: refused
		stamp(detach, 3),                  // the edge above its root: refused
		stamp(edgePt(root, z), 4),         // its own new node: kept
		stamp(valPt(z, "temp", 5), 5),     // kept
	}
	b, _ := transport.Encode(transport.Push{From: 0, Through: 5, Points: crdt.AppendBatch(nil, pts)})
	m, err := nc.Request(subj.Up, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ack transport.Ack
	if err := transport.Decode(m.Data, 0, &ack); err != nil {
		t.Fatal(err)
	}
	if ack.Rejected != 3 || ack.Have != 5 || !strings.Contains(ack.Reason, "subtree") {
		t.Fatalf("ack %+v, want 3 refused, position 5", ack)
	}
	if p := cloud.get(y, uuid.Nil, "secret", "0"); p.Value != 1 {
		t.Fatalf("the device overwrote a node outside its subtree: %+v", p)
	}
	if p := cloud.get(y, root, crdt.TypeEdge, "0"); p.Time != 0 {
		t.Fatal("the device pulled an outside node under itself")
	}
	if p := cloud.get(root, cloud.root, crdt.TypeEdge, "0"); p.Tombstone || p.Time == 0 {
		t.Fatalf("the device changed the edge above its root: %+v", p)
	}
	if p := cloud.get(z, uuid.Nil, "temp", "0"); p.Value != 5 {
		t.Fatal("the device's own new node was refused")
	}
}
