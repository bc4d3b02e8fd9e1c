package replica

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// TestServerRefusesNonUTF8Text: a text that is not UTF-8 is refused
// whichever way it arrives, by the API's write (what siot set and import
// send) or in a link's push, and nothing of the write or push is stored.
func TestServerRefusesNonUTF8Text(t *testing.T) {
	srv := startNode(t, "server", nodeOpts{})
	nc := srv.dial(nil)
	n := uuid.New()
	bad := crdt.Point{Node: n, Type: "name", Key: "0", Text: "caf\xe9"}
	for _, oneTime := range []bool{true, false} {
		b, err := transport.Encode(transport.Import{OneTime: oneTime, Points: crdt.AppendBatch(nil, []crdt.Point{edgePt(srv.root, n), bad})})
		if err != nil {
			t.Fatal(err)
		}
		m, err := nc.Request(adminSubject(transport.NameImport), b, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := transport.Decode(m.Data, 0, &transport.ImportResult{}); !transport.IsRemote(err) || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("write (one-time %v) of a non-UTF-8 text: %v, want refused naming UTF-8", oneTime, err)
		}
	}

	// A link session: its push carries a stamped point with such a text.
	inst, root := uuid.New(), uuid.New()
	hello, _ := transport.Encode(transport.Hello{Proto: 1, Instance: inst, Root: root, Role: "edge"})
	m, err := nc.Request(adminSubject(transport.NameHello), hello, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var w transport.Welcome
	if err := transport.Decode(m.Data, 0, &w); err != nil {
		t.Fatal(err)
	}
	before := srv.st.LastSeq() // after the adoption edge
	subj, err := transport.Subjects(adminID, w.Session)
	if err != nil {
		t.Fatal(err)
	}
	ts := crdt.Timestamp(uint64(time.Now().UnixMilli()) << 16)
	pts := []crdt.Point{
		{Node: root, Type: "ok", Key: "0", Text: "fine", Time: ts, Origin: inst},
		{Node: root, Type: "name", Key: "0", Text: "\xff\xfe", Time: ts + 1, Origin: inst},
	}
	push, _ := transport.Encode(transport.Push{From: 0, Through: 2, Points: crdt.AppendBatch(nil, pts)})
	m, err = nc.Request(subj.Up, push, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.Decode(m.Data, 0, &transport.Ack{}); !transport.IsRemote(err) || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("push of a non-UTF-8 text: %v, want refused naming UTF-8", err)
	}
	// The session's device state (online, lastSeen, linkedVia), which the
	// server writes for the link on its own time, is not the push's.
	if got := changesBesidesDeviceState(srv, before); got != 0 {
		t.Fatalf("refused writes changed the store: %d changes", got)
	}
	if p := srv.get(n, uuid.Nil, "name", "0"); p.Time != 0 {
		t.Fatalf("stored %q", p.Text)
	}
	if p := srv.get(n, srv.root, crdt.TypeEdge, "0"); p.Time != 0 {
		t.Fatal("stored the edge written with the refused text")
	}
}

// TestTreeNodesAnswersWithinScope: the nodes request says which nodes the
// tree has (the root, a node with an edge above it, live or deleted), not
// a node that only has points or only edges below it; a scoped identity
// learns nothing of nodes outside its scope, which exist or not.
func TestTreeNodesAnswersWithinScope(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x6e6f646573))
	f := newMxFixture(t, rng)
	n := f.n
	pointsOnly, parentOnly, deleted, child := mxUUID(rng), mxUUID(rng), mxUUID(rng), mxUUID(rng)
	tomb := edgePt(f.siteA, deleted)
	tomb.Tombstone = true
	n.write(valPt(pointsOnly, "temp", 1), edgePt(parentOnly, child), tomb)
	ask := []uuid.UUID{n.root, f.siteA, f.devA, f.sA1, f.siteB, f.sB, pointsOnly, parentOnly, child, deleted, mxUUID(rng), uuid.Nil}
	var req transport.NodesRequest
	for _, u := range ask {
		req.Nodes = append(req.Nodes, u[:]...)
	}
	for _, c := range []struct {
		who  *mxWho
		want []byte
	}{
		{f.connect(t, "admin", nil), []byte{1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0}},
		// A deleted node is outside every scope: scopes follow live edges.
		{f.connect(t, "userA", f.userCreds(t, f.userA)), []byte{0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}},
		{f.connect(t, "deviceA", n.deviceCreds(f.devA)), []byte{0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}},
	} {
		var rep transport.NodesReply
		if err := mxCall(c.who, transport.NameNodes, req, &rep); err != nil {
			t.Fatalf("%s: %v", c.who.name, err)
		}
		if !bytes.Equal(rep.Known, c.want) {
			t.Errorf("%s: known %v, want %v (root siteA devA sA1 siteB sB pointsOnly parentOnly child deleted stranger nil)", c.who.name, rep.Known, c.want)
		}
	}
	// A request of more than the limit, or not whole IDs, is refused.
	admin := f.connect(t, "admin", nil)
	for _, nodes := range [][]byte{make([]byte, 17), make([]byte, 16*(transport.MaxNodesAsked+1))} {
		if err := mxCall(admin, transport.NameNodes, transport.NodesRequest{Nodes: nodes}, &transport.NodesReply{}); !transport.IsRemote(err) {
			t.Errorf("nodes request of %d bytes: %v, want refused", len(nodes), err)
		}
	}
}
