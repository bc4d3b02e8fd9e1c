package replica

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// memStore opens an in-memory store with root root.
func memStore(t *testing.T, root uuid.UUID) *store.Store {
	t.Helper()
	cfg := store.DefaultConfig("")
	cfg.InMemory, cfg.Root, cfg.MinFreeBytes = true, root, 0
	st, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// applyBoth applies pts to full, and those not secret to readable.
func applyBoth(t *testing.T, full, readable *store.Store, pts []crdt.Point) {
	t.Helper()
	if _, err := full.Apply(pts); err != nil {
		t.Fatal(err)
	}
	var open []crdt.Point
	for _, p := range pts {
		if !crdt.IsSecret(p.Type) {
			open = append(open, p)
		}
	}
	if _, err := readable.Apply(open); err != nil {
		t.Fatal(err)
	}
}

// checkReadable compares the readable view of full, derived by x, with
// the digests of readable (the same points less the secrets) for every
// node of nodes: own, sub, child records and buckets.
func checkReadable(t *testing.T, x *secretIndex, full, readable *store.Store, nodes []uuid.UUID) {
	t.Helper()
	sums, err := x.current(full)
	if err != nil {
		t.Fatal(err)
	}
	v := readableView{st: full, s: sums}
	for _, n := range nodes {
		got, err := v.nodeDigest(n)
		if err != nil {
			t.Fatal(err)
		}
		want, err := readable.NodeDigest(n)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("node %v: readable view own %v sub %v, the store without secrets %v %v", n, got.Own, got.Sub, want.Own, want.Sub)
		}
		var gotKids, wantKids []store.ChildDigest
		if err := v.childDigests(n, -1, func(c store.ChildDigest) error { gotKids = append(gotKids, c); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := readable.ChildDigests(n, -1, uuid.Nil, func(c store.ChildDigest) error {
			if !c.Active {
				c.Own, c.Sub = crdt.Digest{}, crdt.Digest{}
			}
			wantKids = append(wantKids, c)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(gotKids) != fmt.Sprint(wantKids) {
			t.Errorf("children of %v: readable view %v, the store without secrets %v", n, gotKids, wantKids)
		}
		gotB, wantB := map[byte]crdt.Digest{}, map[byte]crdt.Digest{}
		if err := v.buckets(n, func(b byte, d crdt.Digest) error { gotB[b] = d; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := readable.Buckets(n, func(b byte, d crdt.Digest) error { wantB[b] = d; return nil }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(gotB) != fmt.Sprint(wantB) {
			t.Errorf("buckets of %v: readable view %v, the store without secrets %v", n, gotB, wantB)
		}
	}
}

// TestReadableDigests checks the readable view's digests (the store's
// less the secrets, through the secret index) against a naive one: a
// second store that holds the same points but the secrets. Random trees
// with several parents per node, deleted edges, moves, cycles, secret
// node points and secret edge points; then more writes, which the index
// reads from the feed.
func TestReadableDigests(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 11))
	root := randUUID(rng)
	full, readable := memStore(t, root), memStore(t, root)
	origin := randUUID(rng)
	clock := int64(1_700_000_000_000)
	stamp := func(p crdt.Point) crdt.Point {
		clock++
		p.Time, p.Origin = crdt.NewTimestamp(clock, 0), origin
		if p.Key == "" {
			p.Key = crdt.DefaultKey
		}
		return p
	}
	nodes := []uuid.UUID{root}
	var pts []crdt.Point
	for i := range 80 {
		n := randUUID(rng)
		if i%20 == 0 {
			n[0] = nodes[len(nodes)-1][0] // some share a bucket
		}
		pts = append(pts, stamp(edgePt(nodes[rng.IntN(len(nodes))], n)), stamp(valPt(n, "temp", float64(i))))
		nodes = append(nodes, n)
	}
	x := &secretIndex{}
	ops := func(k int) []crdt.Point {
		var out []crdt.Point
		for range k {
			n := nodes[1+rng.IntN(len(nodes)-1)]
			p := nodes[rng.IntN(len(nodes))]
			if p == n {
				p = root
			}
			switch c := rng.IntN(10); {
			case c < 2:
				out = append(out, stamp(crdt.Point{Node: n, Type: crdt.TypePassword, Text: fmt.Sprintf("h%d", rng.IntN(1000)), Tombstone: rng.IntN(5) == 0}))
			case c < 4:
				out = append(out, stamp(crdt.Point{Node: n, Type: crdt.TypeAuthKey, Key: fmt.Sprintf("K%d", rng.IntN(3)), Value: 1, Tombstone: rng.IntN(4) == 0}))
			case c < 5: // a secret type on an edge: odd, but it must not leak either
				out = append(out, stamp(crdt.Point{Node: n, Parent: p, Type: crdt.TypePassword, Text: "e"}))
			case c < 7: // another parent (cycles included)
				out = append(out, stamp(edgePt(p, n)))
			case c < 8: // delete an edge
				del := edgePt(p, n)
				del.Tombstone = true
				out = append(out, stamp(del))
			case c < 9: // a move
				_ = full.Parents(n, func(c store.Child) error {
					if c.Active && c.ID != p {
						old := edgePt(c.ID, n)
						old.Tombstone, old.Value = true, crdt.EdgeMoved
						out = append(out, stamp(old))
					}
					return nil
				})
				out = append(out, stamp(edgePt(p, n)))
			default:
				out = append(out, stamp(valPt(n, "temp", float64(rng.IntN(100)))))
			}
		}
		return out
	}
	applyBoth(t, full, readable, append(pts, ops(60)...))
	checkReadable(t, x, full, readable, nodes)
	for range 5 {
		for _, p := range ops(20) {
			applyBoth(t, full, readable, []crdt.Point{p}) // one by one: the index follows the feed
		}
		checkReadable(t, x, full, readable, nodes)
		if t.Failed() {
			return
		}
	}
}

// userRepairFix is a cloud where user ann reads site: ann, another user
// bob (a password) and a device dev (an authKey) under it, a fleet of 300
// children (some devices with keys: the fleet's buckets hold secrets) and
// a deleted child; and another site, outside ann's scope. A userClient
// linked as ann, and br, a replica holding exactly what the link
// delivered: the browser's equivalent, whose repairer dials ann's session.
type userRepairFix struct {
	cloud, br                         *node
	site, other, ann, bob, dev, fleet uuid.UUID
	gone                              uuid.UUID
	kids                              []uuid.UUID
	c                                 *userClient
}

func newUserRepairFix(t *testing.T) *userRepairFix {
	f := &userRepairFix{cloud: startNode(t, "cloud", nodeOpts{})}
	cloud := f.cloud
	f.site, f.other, f.dev, f.fleet, f.gone = uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	cloud.write(edgePt(cloud.root, f.site), edgePt(cloud.root, f.other), edgePt(f.site, f.dev), edgePt(f.site, f.fleet),
		edgePt(f.site, f.gone), valPt(f.site, "temp", 1), valPt(f.site, "hum", 40), valPt(f.other, "temp", 2),
		valPt(f.dev, "x", 1), valPt(f.gone, "x", 1))
	cloud.deviceCreds(f.dev)
	f.ann = addUser(t, cloud, f.site, "ann@example.com", "correct horse", false)
	f.bob = addUser(t, cloud, f.site, "bob@example.com", "battery staple", false)
	var pts []crdt.Point
	for i := range 300 {
		k := uuid.New()
		f.kids = append(f.kids, k)
		pts = append(pts, edgePt(f.fleet, k), valPt(k, "temp", float64(i)))
	}
	cloud.write(pts...)
	for _, k := range f.kids[:20] {
		cloud.deviceCreds(k)
	}
	del := edgePt(f.site, f.gone)
	del.Tombstone = true
	cloud.write(del)
	f.c = dialUser(t, cloud, userToken(t, cloud, f.ann, time.Now().Add(time.Hour)), uuid.New(), 0)
	cloud.write(valPt(f.site, "barrier", 1))
	f.c.waitValue(f.site, "barrier", 1)
	f.c.check(f.other)
	f.br = startNode(t, "browser", nodeOpts{})
	return f
}

// fill applies to the browser's equivalent what the link delivered, but
// the points skip drops.
func (f *userRepairFix) fill(t *testing.T, skip func(p *crdt.Point) bool) {
	t.Helper()
	var pts []crdt.Point
	for _, p := range f.c.received() {
		if !skip(&p) {
			pts = append(pts, p)
		}
	}
	if _, err := f.br.st.Apply(pts); err != nil {
		t.Fatal(err)
	}
}

// repairer returns a repairer of the browser's equivalent over ann's
// session, comparing the scope root root.
func (f *userRepairFix) repairer(root uuid.UUID) *repairer {
	s := newSession(f.br.rep, f.c.w.Instance, transport.RoleUser, newScope(f.br.st, uuid.Nil), f.c.nc, f.c.subj.Up, 0, func(error) {})
	return &repairer{s: s, root: root, subject: f.c.subj.Repair, pushTo: f.c.subj.Up, readable: true}
}

// ask sends req on ann's session and returns the reply.
func (f *userRepairFix) ask(t *testing.T, req *transport.RepairRequest) (*transport.RepairReply, error) {
	t.Helper()
	b, err := transport.EncodeRepairRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.c.nc.Request(f.c.subj.Repair, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return transport.DecodeRepairReply(m.Data, 0)
}

// TestUserRepairEqual: a replica that holds what the link delivered finds
// its scope equal in one round trip, although secrets (a user's password,
// devices' keys) lie below the scope root and in its child buckets.
func TestUserRepairEqual(t *testing.T) {
	f := newUserRepairFix(t)
	f.fill(t, func(*crdt.Point) bool { return false })
	st, err := f.repairer(f.site).round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Equal || st.RoundTrips != 1 || st.Fetched != 0 || st.Sent != 0 {
		t.Fatalf("equal scope: %+v, want equal in one round trip", st)
	}
	t.Logf("equal scope: %d round trip, %d bytes out, %d bytes in", st.RoundTrips, st.BytesOut, st.BytesIn)
	full, _ := f.cloud.st.NodeDigest(f.site)
	mine, _ := f.br.st.NodeDigest(f.site)
	if full.Sub == mine.Sub {
		t.Fatal("the site's full digest equals the readable one: no secret below it?")
	}
}

// TestUserRepairConverges: the browser's equivalent lacks points the
// cloud has (a point of the site, every point of bob, a point of a fleet
// device past the bucket level) and has points the cloud lacks (its own
// writes that never went up); push and resume cannot see either. Repair
// fixes both directions, and the next round finds the scope equal.
func TestUserRepairConverges(t *testing.T) {
	f := newUserRepairFix(t)
	kid := f.kids[7] // a device: its key is in its bucket's digest
	f.fill(t, func(p *crdt.Point) bool {
		return p.Node == f.site && p.Type == "hum" || p.Node == f.bob && !p.IsEdge() || p.Node == kid && p.Type == "temp"
	})
	mine := func(n uuid.UUID, typ string, v float64) crdt.Point {
		return crdt.Point{Node: n, Type: typ, Key: "0", Value: v, Time: f.cloud.clock.Now(), Origin: f.c.inst}
	}
	ours := []crdt.Point{mine(f.site, "setpoint", 5), mine(f.kids[200], "setpoint", 6), mine(f.dev, "x", 9)}
	if _, err := f.br.st.Apply(ours); err != nil {
		t.Fatal(err)
	}
	rp := f.repairer(f.site)
	st, err := rp.round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("difference: %+v", st)
	if st.Equal || st.Fetched == 0 || st.Sent == 0 {
		t.Fatalf("first round: %+v, want differences fixed both ways", st)
	}
	st, err = rp.round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Equal || st.RoundTrips != 1 {
		got, _ := f.br.st.NodeDigest(f.site)
		t.Fatalf("second round: %+v, want equal (our sub %v)", st, got.Sub)
	}
	for _, p := range ours {
		if got := f.cloud.get(p.Node, uuid.Nil, p.Type, "0"); got.Value != p.Value {
			t.Errorf("the cloud holds %v %s=%v, want %v", p.Node, p.Type, got.Value, p.Value)
		}
	}
	for _, want := range []crdt.Register{{Node: f.site, Type: "hum", Key: "0"}, {Node: f.bob, Type: crdt.TypeEmail, Key: "0"},
		{Node: kid, Type: "temp", Key: "0"}} {
		if _, ok, _ := f.br.st.Get(want); !ok {
			t.Errorf("repair did not fetch %v", want)
		}
	}
	var secrets []string
	_ = f.br.st.ScanAll(func(p *crdt.Point) error {
		if crdt.IsSecret(p.Type) {
			secrets = append(secrets, fmt.Sprintf("%v %s", p.Node, p.Type))
		}
		return nil
	})
	if len(secrets) > 0 {
		t.Errorf("secrets reached the user's replica: %v", secrets)
	}
}

// TestUserRepairHostile: whatever a user asks, the answers stay within its
// readable view: other roots are refused, nodes outside its scope are
// unknown, and no digest, listing, sketch or point carries a secret.
func TestUserRepairHostile(t *testing.T) {
	f := newUserRepairFix(t)
	f.fill(t, func(*crdt.Point) bool { return false })
	for _, root := range []uuid.UUID{f.cloud.root, f.other, f.bob, uuid.New()} {
		_, err := f.ask(t, &transport.RepairRequest{Root: root, Compare: []transport.NodeSub{{Node: root}}})
		if err == nil || !strings.Contains(err.Error(), "not a parent of user") {
			t.Errorf("root %v: %v, want refused", root, err)
		}
	}
	digests := func(st *store.Store, n uuid.UUID) store.Digests {
		d, err := st.NodeDigest(n)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// The full digests are not the answer's: asked with them, the site
	// differs; asked with the readable ones, it is equal.
	fullSite, readSite := digests(f.cloud.st, f.site), digests(f.br.st, f.site)
	r, err := f.ask(t, &transport.RepairRequest{Root: f.site, Compare: []transport.NodeSub{{Node: f.site, Sub: fullSite.Sub, Own: fullSite.Own}}})
	if err != nil || len(r.Summaries) != 1 {
		t.Fatalf("compare with the full digests: %+v %v, want a summary", r, err)
	}
	for _, c := range r.Summaries[0].Children {
		if c.ID == f.bob || c.ID == f.dev || c.ID == f.ann {
			if c.Own == transport.Short(digests(f.cloud.st, c.ID).Own) {
				t.Errorf("child %v: own digest is the full store's, secrets included", c.ID)
			}
			if c.Own != transport.Short(digests(f.br.st, c.ID).Own) {
				t.Errorf("child %v: own digest is not the readable view's", c.ID)
			}
		}
		if c.ID == f.fleet && c.Below == transport.Short(digests(f.cloud.st, f.fleet).Sub.Sub(digests(f.cloud.st, f.fleet).Own)) {
			t.Errorf("fleet: below digest is the full store's, keys included")
		}
		if c.ID == f.gone && (c.Own != transport.ShortDigest{} || c.Below != transport.ShortDigest{}) {
			t.Errorf("a deleted child's record carries digests: %+v", c)
		}
	}
	if r, err = f.ask(t, &transport.RepairRequest{Root: f.site, Compare: []transport.NodeSub{{Node: f.site, Sub: readSite.Sub, Own: readSite.Own}}}); err != nil || len(r.Summaries) != 0 {
		t.Fatalf("compare with the readable digests: %+v %v, want equal", r, err)
	}
	// The fleet's buckets, asked outright: the readable view's.
	r, err = f.ask(t, &transport.RepairRequest{Root: f.site, Compare: []transport.NodeSub{{Node: f.fleet}}})
	if err != nil || len(r.Summaries) != 1 || !r.Summaries[0].Many {
		t.Fatalf("fleet compare: %+v %v, want its buckets", r, err)
	}
	local := map[byte]transport.ShortDigest{}
	_ = f.br.st.Buckets(f.fleet, func(b byte, d crdt.Digest) error { local[b] = transport.Short(d); return nil })
	for _, b := range r.Summaries[0].Buckets {
		if local[b.Bucket] != b.Digest {
			t.Errorf("fleet bucket %d: %x, the readable view's %x", b.Bucket, b.Digest, local[b.Bucket])
		}
	}
	// Every point path, on a user with a password and a device with a
	// key: no secret comes back, whatever is asked.
	pwHash := crdt.RegisterHash(crdt.TypePassword, crdt.DefaultKey)
	var keyHashes []uint64
	var keyTags []uint32
	_ = f.cloud.st.ScanNode(f.dev, func(p *crdt.Point) error {
		if p.Type == crdt.TypeAuthKey {
			keyHashes = append(keyHashes, crdt.RegisterHash(p.Type, p.Key))
			keyTags = append(keyTags, uint32(crdt.RegisterHash(p.Type, p.Key)>>32))
		}
		return nil
	})
	junk := crdt.Digest{Hi: 1}
	r, err = f.ask(t, &transport.RepairRequest{Root: f.site,
		Compare: []transport.NodeSub{{Node: f.bob}, {Node: f.dev, Sub: junk, Own: junk, Density: 64}, {Node: f.other, Sub: junk}},
		List:    []transport.ListQuery{{Node: f.bob}, {Node: f.dev}, {Node: f.other}},
		Fetch: []transport.FetchQuery{{Node: f.bob, Hashes: []uint64{pwHash}}, {Node: f.dev, Hashes: keyHashes},
			{Node: f.other, Hashes: []uint64{crdt.RegisterHash("temp", "0")}}},
		TagFetch: []transport.TagFetch{{Node: f.bob, Tags: []uint32{uint32(pwHash >> 32)}}, {Node: f.dev, Tags: keyTags}},
		Edges:    []transport.EdgeQuery{{Child: f.bob, Parent: f.site}, {Child: f.site, Parent: f.cloud.root}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pts, err := crdt.DecodeBatch(r.Points, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pts {
		if crdt.IsSecret(p.Type) || p.Node == f.other || p.Node == f.site && p.Parent == f.cloud.root {
			t.Errorf("the answer carries %v/%v %s", p.Node, p.Parent, p.Type)
		}
	}
	if len(pts) == 0 {
		t.Error("bob's readable points were not sent (the asker said it holds none)")
	}
	for _, l := range r.Listings {
		if l.Node == f.other && len(l.Entries) > 0 {
			t.Errorf("a listing of a node outside the scope: %+v", l)
		}
		for _, e := range l.Entries {
			if e.Hash == pwHash || slices.Contains(keyHashes, e.Hash) {
				t.Errorf("a listing of %v names a secret register", l.Node)
			}
		}
	}
	for _, s := range r.Summaries {
		if s.Node == f.other && (!s.Own.IsZero() || len(s.Children) > 0 || len(s.Buckets) > 0) {
			t.Errorf("a summary of a node outside the scope: %+v", s)
		}
		if s.Node == f.dev && s.Own != digests(f.br.st, f.dev).Own {
			t.Errorf("dev's own digest %v, the readable view's %v", s.Own, digests(f.br.st, f.dev).Own)
		}
	}
	// dev's aggregate holds its readable points only: less ours, empty.
	theirs, err := crdt.DecodeSketch(r.Aggregate, crdt.PointKeyLen)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := sketchPoints(f.br.st, []uuid.UUID{f.dev}, theirs.Cells(), false, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := ours.sk.Subtract(theirs); err != nil {
		t.Fatal(err)
	}
	if plus, minus, ok := ours.sk.Decode(); !ok || len(plus)+len(minus) > 0 {
		t.Errorf("dev's aggregate differs from its readable points: %d ours only, %d theirs only (ok %v)", len(plus), len(minus), ok)
	}
}

// TestChildKeyVectors pins childKey and childTag to the values
// web/test/repair.test.ts checks the browser's port against.
func TestChildKeyVectors(t *testing.T) {
	d := func(s string) crdt.Digest {
		x, err := crdt.ParseDigest(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	for _, tc := range []struct {
		c    store.ChildDigest
		keys map[uint32]string
	}{
		{store.ChildDigest{ID: uuid.MustParse("0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0"), Active: true, Edge: d("00112233445566778899aabbccddeeff"),
			Own: d("0123456789abcdef0123456789abcdef"), Sub: d("fedcba9876543210fedcba9876543210")},
			map[uint32]string{0: "b15cef18e80fd0c631bc612d896c3144", 0xdeadbeef: "b15cef18e80fd0c6dab1f4b6ef4d2279"}},
		{store.ChildDigest{ID: uuid.MustParse("ffeeddcc-bbaa-4988-b766-554433221100"), Edge: d("80000000000000000000000000000001")},
			map[uint32]string{0: "73848b65f95719f63489f88db30a02d5", 0xdeadbeef: "73848b65f95719f6bdb874da24af1768"}},
	} {
		for salt, want := range tc.keys {
			k := childKey(&tc.c, salt)
			if got := fmt.Sprintf("%x", k[:childKeyLen]); got != want {
				t.Errorf("childKey(%v, %#x) = %s, want %s", tc.c.ID, salt, got, want)
			}
		}
		if got := fmt.Sprintf("%016x", childTag(tc.c.ID)); got != tc.keys[0][:16] {
			t.Errorf("childTag(%v) = %s", tc.c.ID, got)
		}
	}
}
