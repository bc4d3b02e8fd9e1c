package replica

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"siot/crdt"
	"siot/transport"
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
	if got := srv.st.LastSeq(); got != before {
		t.Fatalf("refused writes changed the store: %d changes", got-before)
	}
	if p := srv.get(n, uuid.Nil, "name", "0"); p.Time != 0 {
		t.Fatalf("stored %q", p.Text)
	}
	if p := srv.get(n, srv.root, crdt.TypeEdge, "0"); p.Time != 0 {
		t.Fatal("stored the edge written with the refused text")
	}
}
