package replica

import (
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// userClient is the dialer side of a user's link written by hand with
// the transport's messages, as a browser's replica speaks it: hello with
// no root, start, ack every push down, push its own writes up.
type userClient struct {
	t    *testing.T
	nc   *nats.Conn
	id   transport.Identity
	inst uuid.UUID
	w    transport.Welcome
	subj transport.SessionSubjects

	mu    sync.Mutex
	got   []crdt.Point // every point received, in order
	have  uint64       // how far it holds the acceptor's feed
	ended string       // the error that ended the session, if any
	sent  uint64       // its own feed's position, as pushed
}

// dialUser opens a user's link to n as creds' user, from instance inst,
// resuming the acceptor's feed after have.
func dialUser(t *testing.T, n *node, creds *transport.Creds, inst uuid.UUID, have uint64) *userClient {
	t.Helper()
	id, err := creds.Identity()
	if err != nil {
		t.Fatal(err)
	}
	c := &userClient{t: t, nc: n.dial(creds), id: id, inst: inst, have: have}
	c.w, err = c.hello(uuid.Nil)
	if err != nil {
		t.Fatalf("hello: %v", err)
	}
	if c.w.Holds {
		t.Errorf("welcome says holds: a user's link never compares first")
	}
	if c.subj, err = transport.Subjects(id, c.w.Session); err != nil {
		t.Fatal(err)
	}
	if _, err := c.nc.Subscribe(c.subj.Down, c.handleDown); err != nil {
		t.Fatal(err)
	}
	var ack transport.Ack
	if err := c.request(c.subj.Start, transport.Start{Have: have}, &ack); err != nil {
		t.Fatalf("start: %v", err)
	}
	// Idle: it has nothing to push yet.
	if _, err := c.push(nil); err != nil {
		t.Fatalf("idle push: %v", err)
	}
	return c
}

func (c *userClient) hello(root uuid.UUID) (transport.Welcome, error) {
	var w transport.Welcome
	err := c.request(transport.Subject(c.id, transport.NameHello), transport.Hello{Proto: transport.LinkProto,
		Instance: c.inst, Root: root, Role: transport.RoleUser, Time: time.Now().UnixMilli()}, &w)
	return w, err
}

func (c *userClient) request(subj string, req, out any) error {
	b, err := transport.Encode(req)
	if err != nil {
		return err
	}
	m, err := c.nc.Request(subj, b, 5*time.Second)
	if err != nil {
		return err
	}
	return transport.Decode(m.Data, 0, out)
}

func (c *userClient) handleDown(m *nats.Msg) {
	var p transport.Push
	if err := transport.Decode(m.Data, 0, &p); err != nil {
		c.mu.Lock()
		c.ended = err.Error()
		c.mu.Unlock()
		return
	}
	pts, err := crdt.DecodeBatch(p.Points, 0)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.t.Errorf("bad batch down: %v", err)
		return
	}
	ack := transport.Ack{Have: c.have}
	if p.From > c.have {
		ack.Gap = true
	} else {
		c.got = append(c.got, pts...)
		c.have = max(c.have, p.Through)
		ack.Have = c.have
	}
	b, _ := transport.Encode(ack)
	_ = m.Respond(b)
}

// push sends pts up as the next push of its feed and returns the ack.
func (c *userClient) push(pts []crdt.Point) (transport.Ack, error) {
	c.mu.Lock()
	from, through := c.sent, c.sent
	if len(pts) > 0 {
		through++
	}
	c.mu.Unlock()
	var ack transport.Ack
	err := c.request(c.subj.Up, transport.Push{From: from, Through: through, Idle: true, Points: crdt.AppendBatch(nil, pts)}, &ack)
	if err == nil {
		c.mu.Lock()
		c.sent = through
		c.mu.Unlock()
	}
	return ack, err
}

// received returns a copy of what came down so far.
func (c *userClient) received() []crdt.Point {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]crdt.Point(nil), c.got...)
}

// holds reports whether a point of node n, type typ with value v came down.
func (c *userClient) holds(n uuid.UUID, typ string, v float64) bool {
	for _, p := range c.received() {
		if p.Node == n && p.Type == typ && p.Value == v && !p.IsEdge() {
			return true
		}
	}
	return false
}

func (c *userClient) waitValue(n uuid.UUID, typ string, v float64) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("%v %s=%v down the user's link", n, typ, v), 10*time.Second, func() bool { return c.holds(n, typ, v) })
}

// check fails on any secret received, or any point of a node in outside.
func (c *userClient) check(outside ...uuid.UUID) {
	c.t.Helper()
	for _, p := range c.received() {
		if crdt.IsSecret(p.Type) {
			c.t.Errorf("a secret came down the user's link: %v %s", p.Node, p.Type)
		}
		for _, o := range outside {
			if p.Node == o || p.Parent == o {
				c.t.Errorf("a point outside the user's scope came down: %v/%v %s", p.Node, p.Parent, p.Type)
			}
		}
	}
}

// stamped returns p as the client writes it: its own time and origin.
func (c *userClient) stamped(n *node, p crdt.Point) crdt.Point {
	p.Time, p.Origin = n.clock.Now(), c.inst
	return p
}

// userToken returns a token of user u on n, expiring at exp.
func userToken(t *testing.T, n *node, u uuid.UUID, exp time.Time) *transport.Creds {
	t.Helper()
	pw, ok, err := n.st.Get(crdt.Register{Node: u, Type: crdt.TypePassword, Key: crdt.DefaultKey})
	if err != nil || !ok {
		t.Fatalf("password of %v: %v %v", u, ok, err)
	}
	tok := transport.NewToken(n.rep.cfg.TokenKey, u, uint64(pw.Time), exp)
	return &transport.Creds{Kind: transport.KindUser, Node: u, Token: tok, Expires: exp}
}

// userSessions counts the cloud's accepted user sessions.
func userSessions(n *node) int {
	k := 0
	for _, ls := range n.rep.acceptor.status() {
		if ls.Role == transport.RoleUser {
			k++
		}
	}
	return k
}

// TestUserLink: a user's replica linked as role "user" gets its scope and
// nothing else, never a secret; its writes in scope reach an edge, its
// writes outside are refused; it resumes; it stops receiving a subtree
// whose edge to it is deleted.
func TestUserLink(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	site, other, dev := uuid.New(), uuid.New(), uuid.New()
	cloud.write(edgePt(cloud.root, site), edgePt(cloud.root, other), edgePt(site, dev),
		valPt(site, "temp", 1), valPt(other, "temp", 2), valPt(dev, "x", 1))
	devCreds := cloud.deviceCreds(dev) // an authKey in the user's scope
	u := addUser(t, cloud, site, "ann@example.com", "correct horse", false)
	creds := userToken(t, cloud, u, time.Now().Add(time.Hour))
	edge := startNode(t, "edge", nodeOpts{root: dev, upstreams: []string{cloud.url()}, upstreamCreds: devCreds})
	edge.waitInSync(cloud.url())

	inst := uuid.New()
	c := dialUser(t, cloud, creds, inst, 0)
	c.waitValue(site, "temp", 1)
	c.waitValue(dev, "x", 1)

	// Writes to another site, concurrent with the site's, never arrive.
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 50 {
			cloud.write(valPt(other, "c", float64(i)))
		}
	})
	for i := range 50 {
		cloud.write(valPt(site, "c", float64(i)))
	}
	wg.Wait()
	c.waitValue(site, "c", 49)
	c.check(other)

	// A write in scope is applied and reaches the edge; it is not echoed.
	ack, err := c.push([]crdt.Point{c.stamped(cloud, valPt(dev, "setpoint", 7))})
	if err != nil || ack.Rejected != 0 {
		t.Fatalf("push in scope: %+v %v", ack, err)
	}
	edge.waitValue(dev, "setpoint", 7)
	if c.holds(dev, "setpoint", 7) {
		t.Error("the user's own write came back down its link")
	}

	// Refused: outside the scope, structure without the admin role,
	// another's origin, a key. Nothing changes; each is counted.
	before := cloud.get(other, uuid.Nil, "temp", "0")
	newNode := uuid.New()
	kc, err := transport.NewKeyCreds(transport.KindKey, site)
	if err != nil {
		t.Fatal(err)
	}
	foreign := valPt(site, "y", 3)
	foreign.Time, foreign.Origin = cloud.clock.Now(), uuid.New()
	for _, tc := range []struct {
		name string
		p    crdt.Point
		why  string
	}{
		{"outside", c.stamped(cloud, valPt(other, "temp", 9)), "outside your scope"},
		{"structure", c.stamped(cloud, edgePt(site, newNode)), "admin role"},
		{"origin", foreign, "neither the user nor its instance"},
		{"key", c.stamped(cloud, crdt.Point{Node: site, Type: crdt.TypeAuthKey, Key: mustPub(t, kc), Value: 1}), "local administrator"},
	} {
		ack, err := c.push([]crdt.Point{tc.p})
		if err != nil || ack.Rejected != 1 || !strings.Contains(ack.Reason, tc.why) {
			t.Errorf("%s: push %+v %v, want 1 refused: …%s", tc.name, ack, err, tc.why)
		}
	}
	if got := cloud.get(other, uuid.Nil, "temp", "0"); got != before {
		t.Errorf("refused push changed %v: %+v", other, got)
	}
	if got := cloud.get(newNode, site, crdt.TypeEdge, "0"); got.Time != 0 {
		t.Errorf("refused edge written: %+v", got)
	}
	if got := cloud.get(site, uuid.Nil, "y", "0"); got.Time != 0 {
		t.Errorf("foreign origin written: %+v", got)
	}

	// Repair compares only the subtrees of the user's parents
	// (userrepair_test.go tests the rest).
	rq, _ := transport.EncodeRepairRequest(&transport.RepairRequest{Root: other, Compare: []transport.NodeSub{{Node: other}}})
	if m, err := c.nc.Request(c.subj.Repair, rq, 5*time.Second); err != nil {
		t.Fatal(err)
	} else if _, err := transport.DecodeRepairReply(m.Data, 0); err == nil || !strings.Contains(err.Error(), "not a parent of user") {
		t.Errorf("repair of another site on a user's link: %v, want refused", err)
	}

	// Resume: a new session from where the last one stopped gets only
	// what was written since.
	c.nc.Close()
	c.mu.Lock()
	have := c.have
	c.mu.Unlock()
	t0 := cloud.clock.Now()
	cloud.write(valPt(site, "temp", 5))
	c2 := dialUser(t, cloud, creds, inst, have)
	c2.waitValue(site, "temp", 5)
	for _, p := range c2.received() {
		if p.Time <= t0 {
			t.Errorf("resume resent %v %s=%v, written before the reconnect", p.Node, p.Type, p.Value)
		}
	}
	waitFor(t, "the old session replaced", 10*time.Second, func() bool { return userSessions(cloud) == 1 })

	// The user's edge deleted: it learns it, and nothing of the site after.
	cloud.write(crdt.Point{Node: u, Parent: site, Type: crdt.TypeEdge, Key: "0", Tombstone: true})
	waitFor(t, "the user's edge tombstone down the link", 10*time.Second, func() bool {
		for _, p := range c2.received() {
			if p.Node == u && p.Parent == site && p.Type == crdt.TypeEdge && p.Tombstone {
				return true
			}
		}
		return false
	})
	cloud.write(valPt(site, "temp", 6), valPt(dev, "x", 6))
	// A barrier the user still sees: a point of its own edge register.
	cloud.write(crdt.Point{Node: u, Parent: site, Type: crdt.TypeRole, Key: "0", Text: "viewer"})
	waitFor(t, "the barrier down the link", 10*time.Second, func() bool {
		for _, p := range c2.received() {
			if p.Node == u && p.Type == crdt.TypeRole {
				return true
			}
		}
		return false
	})
	if c2.holds(site, "temp", 6) || c2.holds(dev, "x", 6) {
		t.Error("the site's points still came down after the user's edge was deleted")
	}
	c2.check(other)
}

// TestUserLinkRefusals: a user's hello must sign in as the user and carry
// no root; another identity may not link as a user.
func TestUserLinkRefusals(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	site := uuid.New()
	cloud.write(edgePt(cloud.root, site))
	u := addUser(t, cloud, site, "bob@example.com", "correct horse", false)
	creds := userToken(t, cloud, u, time.Now().Add(time.Hour))
	c := &userClient{t: t, nc: cloud.dial(creds), id: transport.Identity{Kind: transport.KindUser, Node: u}, inst: uuid.New()}
	if _, err := c.hello(site); err == nil || !strings.Contains(err.Error(), "no root of its own") {
		t.Errorf("user hello with a root: %v, want refused", err)
	}
	dev := uuid.New()
	cloud.write(edgePt(site, dev))
	dc := cloud.deviceCreds(dev)
	d := &userClient{t: t, nc: cloud.dial(dc), id: transport.Identity{Kind: transport.KindKey, Node: dev}, inst: uuid.New()}
	if _, err := d.hello(uuid.Nil); err == nil || !strings.Contains(err.Error(), "may not link as a user") {
		t.Errorf("device hello as a user: %v, want refused", err)
	}
	if _, err := c.hello(uuid.Nil); err != nil {
		t.Errorf("user hello: %v", err)
	}
}

// TestUserLinkRevocation: a user's session ends when its token expires,
// and when its password changes.
func TestUserLinkRevocation(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.RevalidateInterval = 100 * time.Millisecond }})
	site := uuid.New()
	cloud.write(edgePt(cloud.root, site), valPt(site, "temp", 1))
	u := addUser(t, cloud, site, "cy@example.com", "correct horse", false)

	c := dialUser(t, cloud, userToken(t, cloud, u, time.Now().Add(1500*time.Millisecond)), uuid.New(), 0)
	c.waitValue(site, "temp", 1)
	waitFor(t, "the expired token's session ended", 10*time.Second, func() bool {
		return c.nc.IsClosed() && userSessions(cloud) == 0
	})

	c2 := dialUser(t, cloud, userToken(t, cloud, u, time.Now().Add(time.Hour)), uuid.New(), 0)
	c2.waitValue(site, "temp", 1)
	hash, err := transport.HashPassword("another horse", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cloud.write(crdt.Point{Node: u, Type: crdt.TypePassword, Key: "0", Text: hash})
	waitFor(t, "the session ended on a password change", 10*time.Second, func() bool {
		return c2.nc.IsClosed() && userSessions(cloud) == 0
	})
}

// TestUserLinkRestoresWhatItAdministers: an admin user may delete a node
// it administers and restore it (the node has no live edge then, so it is
// outside the scope), but may not take in a node that another parent
// holds or held: that would pull a node of someone else's scope into its.
func TestUserLinkRestoresWhatItAdministers(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	site, other, x, y := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	cloud.write(edgePt(cloud.root, site), edgePt(cloud.root, other), edgePt(site, x), edgePt(other, y),
		valPt(x, "temp", 1), valPt(y, "temp", 2))
	u := addUser(t, cloud, site, "ann@example.com", "correct horse", true)
	c := dialUser(t, cloud, userToken(t, cloud, u, time.Now().Add(time.Hour)), uuid.New(), 0)
	c.waitValue(x, "temp", 1)

	push := func(what string, p crdt.Point, rejected int) {
		t.Helper()
		ack, err := c.push([]crdt.Point{c.stamped(cloud, p)})
		if err != nil || ack.Rejected != rejected {
			t.Fatalf("%s: ack %+v, err %v; want %d rejected", what, ack, err, rejected)
		}
	}
	active := func(parent, child uuid.UUID) bool {
		t.Helper()
		in := false
		if err := cloud.st.Children(parent, func(ch store.Child) error {
			if ch.ID == child {
				in = ch.Active
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return in
	}
	del := edgePt(site, x)
	del.Tombstone = true
	push("delete x", del, 0)
	if active(site, x) {
		t.Fatal("x still under the site after its deletion")
	}
	push("restore x", edgePt(site, x), 0)
	if !active(site, x) {
		t.Fatal("x not back under the site after its restore")
	}
	push("take y, live under the other site", edgePt(site, y), 1)
	gone := edgePt(other, y)
	gone.Tombstone = true
	cloud.write(gone)
	push("take y, deleted from the other site", edgePt(site, y), 1)
	if active(site, y) {
		t.Fatal("y under the site")
	}
}

// TestUserLinkFirstSyncSendsTheTreeFirst: a new user replica (position
// 0) gets its scope from the store, not the cloud's whole feed: every
// edge, type and description of the scope before any other point, then
// the rest, then the feed from where it ended, and the same registers as
// a replica fed from the feed.
func TestUserLinkFirstSyncSendsTheTreeFirst(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	site, other := uuid.New(), uuid.New()
	cloud.write(edgePt(cloud.root, site), edgePt(cloud.root, other), valPt(site, "temp", 1))
	var nodes []uuid.UUID
	for g := range 4 {
		grp := uuid.New()
		cloud.write(edgePt(site, grp), crdt.Point{Node: grp, Type: crdt.TypeNodeType, Key: "0", Text: "group"},
			crdt.Point{Node: grp, Type: TypeDescription, Key: "0", Text: fmt.Sprintf("group %d", g)})
		for i := range 5 {
			n := uuid.New()
			nodes = append(nodes, n)
			cloud.write(edgePt(grp, n), crdt.Point{Node: n, Type: crdt.TypeNodeType, Key: "0", Text: "sensor"})
			for k := range 3 {
				cloud.write(valPt(n, fmt.Sprintf("r%d", k), float64(i)), valPt(other, "noise", float64(g*100+i*10+k)))
			}
		}
	}
	gone := uuid.New()
	cloud.write(edgePt(site, gone), valPt(gone, "temp", 5))
	del := edgePt(site, gone)
	del.Tombstone = true
	cloud.write(del)
	u := addUser(t, cloud, site, "ann@example.com", "correct horse", false)
	creds := userToken(t, cloud, u, time.Now().Add(time.Hour))
	last := cloud.st.LastSeq()

	first := dialUser(t, cloud, creds, uuid.New(), 0)
	tree := func(p crdt.Point) bool {
		return p.IsEdge() || p.Type == crdt.TypeNodeType || p.Type == TypeDescription
	}
	waitFor(t, "the first sync", 10*time.Second, func() bool {
		first.mu.Lock()
		defer first.mu.Unlock()
		return first.have >= last
	})
	got := first.received()
	seenRest := -1
	for i, p := range got {
		if !tree(p) && seenRest < 0 {
			seenRest = i
		}
		if tree(p) && seenRest >= 0 && p.Node != u {
			t.Fatalf("point %d (%v %s) of the tree came after point %d, a %s", i, p.Node, p.Type, seenRest, got[seenRest].Type)
		}
	}
	if seenRest < 0 {
		t.Fatal("no points but the tree came down")
	}
	first.check(other)

	// The same registers as a replica fed from the feed.
	fed := dialUser(t, cloud, creds, uuid.New(), 1)
	waitFor(t, "the feed sync", 10*time.Second, func() bool {
		fed.mu.Lock()
		defer fed.mu.Unlock()
		return fed.have >= last
	})
	regs := func(pts []crdt.Point) map[crdt.Register]bool {
		m := map[crdt.Register]bool{}
		for _, p := range pts {
			m[p.Register()] = true
		}
		return m
	}
	a, b := regs(got), regs(fed.received())
	for r := range b {
		if !a[r] {
			t.Errorf("the feed sent %v/%v %s; the first sync did not", r.Node, r.Parent, r.Type)
		}
	}
	for r := range a {
		if !b[r] {
			t.Errorf("the first sync sent %v/%v %s; the feed did not", r.Node, r.Parent, r.Type)
		}
	}
	if len(a) < 4*(3+5*5) {
		t.Errorf("%d registers came down", len(a))
	}

	// Then the feed, from where the sync ended.
	cloud.write(valPt(nodes[0], "after", 9))
	first.waitValue(nodes[0], "after", 9)
}
