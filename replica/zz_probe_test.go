package replica

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"

	"siot/crdt"
	"siot/transport"
)

func TestZZProbe(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	f := newMxFixture(t, rng)
	devA := f.connect(t, "deviceA", f.n.deviceCreds(f.devA))
	admin := f.connect(t, "admin", nil)
	// (b) edges up
	var ep transport.EdgesPage
	err := mxCall(devA, transport.NameEdges, transport.EdgesRequest{Node: f.devA, Up: true}, &ep)
	t.Logf("edges up of devA: err=%v next=%s more=%v pts=%q", err, f.name(ep.Next), ep.More, f.fmtPts(mxDecode(t, ep.Points)))
	err = mxCall(devA, transport.NameEdges, transport.EdgesRequest{Node: f.sA1, Up: true}, &ep)
	t.Logf("edges up of sA1: err=%v next=%s more=%v pts=%q", err, f.name(ep.Next), ep.More, f.fmtPts(mxDecode(t, ep.Points)))
	// (a) push after the admin moved sA1 from devA to devB
	old := edgePt(f.devA, f.sA1)
	old.Tombstone, old.Value = true, crdt.EdgeMoved
	f.importOp(t, admin, []crdt.Point{edgePt(f.devB, f.sA1), old}, true)
	f.read(t, mxSpec{who: devA, roots: []uuid.UUID{f.devA}}, f.sA1, false)
	f.write(t, devA, f.sA1, false)
	inst := mxUUID(rng)
	var wl transport.Welcome
	if err := mxCall(devA, transport.NameHello, transport.Hello{Proto: 1, Instance: inst, Root: f.devA, Role: "edge", Time: time.Now().UnixMilli()}, &wl); err != nil {
		t.Fatal(err)
	}
	subj, _ := transport.Subjects(devA.id, wl.Session)
	now := crdt.NewTimestamp(time.Now().UnixMilli(), 0)
	p := valPt(f.sA1, "pushed", 7)
	p.Time, p.Origin = now, inst
	b, _ := transport.Encode(transport.Push{From: 0, Through: 1, Points: crdt.AppendBatch(nil, []crdt.Point{p})})
	m, err := devA.nc.Request(subj.Up, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ack transport.Ack
	err = transport.Decode(m.Data, 0, &ack)
	t.Logf("push on moved-away sA1: err=%v ack=%+v store=%q", err, ack, f.fmtPts([]crdt.Point{f.getReg(p)}))
	e := edgePt(f.devA, f.sA1)
	e.Time, e.Origin = now+5, inst
	b, _ = transport.Encode(transport.Push{From: 1, Through: 2, Points: crdt.AppendBatch(nil, []crdt.Point{e})})
	m, err = devA.nc.Request(subj.Up, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = transport.Decode(m.Data, 0, &ack)
	t.Logf("push edge devA->sA1: err=%v ack=%+v store=%q", err, ack, f.fmtPts([]crdt.Point{f.getReg(e)}))
	f.read(t, mxSpec{who: devA, roots: []uuid.UUID{f.devA}}, f.sA1, true)
	f.write(t, devA, f.sA1, true)
}
