package replica

import (
	"crypto/rand"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// request sends v as request name of identity id on nc and decodes the
// reply into out.
func request(t *testing.T, nc *nats.Conn, id transport.Identity, name string, v, out any) error {
	t.Helper()
	b, err := transport.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	m, err := nc.Request(transport.Subject(id, name), b, 5*time.Second)
	if err != nil {
		return err
	}
	return transport.Decode(m.Data, 0, out)
}

func keyID(c *transport.Creds) transport.Identity {
	id, _ := c.Identity()
	return id
}

// TestAnonymousAndUnknownClientsAreRefused: no credentials, an unknown key,
// a forged administrator key and a garbage token are all refused at
// connect, on the TCP listener.
func TestAnonymousAndUnknownClientsAreRefused(t *testing.T) {
	n := startNode(t, "server", nodeOpts{})
	if nc, err := nats.Connect(n.url(), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous: %v, want an authorization violation", err)
	}
	stranger, _ := transport.NewKeyCreds(transport.KindKey, uuid.New())
	forged, _ := transport.NewKeyCreds(transport.KindAdmin, uuid.Nil)
	tok := transport.NewToken([]byte("not the server's key, 32 bytes.."), uuid.New(), 1, time.Now().Add(time.Hour))
	user := &transport.Creds{Kind: transport.KindUser, Node: uuid.New(), Token: tok}
	for name, c := range map[string]*transport.Creds{"unknown key": stranger, "forged admin": forged, "foreign token": user} {
		_, err := transport.Dial(n.url(), transport.DialConfig{Creds: c, Timeout: 5 * time.Second})
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	if got := n.srv.Refused()["refused"]; got < 4 {
		t.Errorf("refusals counted: %d, want at least 4", got)
	}
	// URL user information is refused before anything is sent.
	_, err := transport.Dial("nats://u:secret@"+n.addr, transport.DialConfig{Creds: n.admin})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("URL with a password: %v", err)
	}
}

// TestDeviceCannotClaimAnotherRoot: a device's hello as any other node, as
// a peer, or a flood of hellos with random roots is refused and adopts
// nothing.
func TestDeviceCannotClaimAnotherRoot(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	dev, other := uuid.New(), uuid.New()
	cloud.write(edgePt(cloud.root, other), valPt(other, "secret", 1))
	creds := cloud.deviceCreds(dev)
	nc := cloud.dial(creds)
	id := keyID(creds)
	before, refused := cloud.st.LastSeq(), cloud.rep.Metrics().LinksRefused
	hello := func(root uuid.UUID, role string) error {
		var w transport.Welcome
		return request(t, nc, id, transport.NameHello, transport.Hello{Proto: transport.LinkProto, Instance: uuid.New(), Root: root, Role: role, Time: time.Now().UnixMilli()}, &w)
	}
	for i := range 200 {
		root := uuid.New()
		if i == 0 {
			root = other
		}
		if err := hello(root, transport.RoleEdge); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("hello as %v: %v, want permission denied", root, err)
		}
	}
	for _, root := range []uuid.UUID{cloud.root, uuid.Nil} {
		if err := hello(root, transport.RolePeer); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("peer hello with root %v: %v, want permission denied", root, err)
		}
	}
	if got := cloud.st.LastSeq(); got != before {
		t.Fatalf("refused hellos changed the store: %d changes", got-before)
	}
	if got := cloud.rep.Metrics().LinksRefused - refused; got != 202 {
		t.Fatalf("%d refusals counted, want 202", got)
	}
	// Its own root is accepted, and adopted once.
	if err := hello(dev, transport.RoleEdge); err != nil {
		t.Fatalf("hello as its own root: %v", err)
	}
	if p := cloud.get(dev, cloud.root, crdt.TypeEdge, "0"); p.Time == 0 {
		t.Fatal("the device was not adopted")
	}
}

// TestPoserCannotMoveAnEdgesResumeMark: another device claiming a linked
// edge's instance ID neither ends the real session nor moves its mark;
// the real edge's writes keep arriving by push.
func TestPoserCannotMoveAnEdgesResumeMark(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.RepairInterval = time.Hour }})
	dev := uuid.New()
	edge := startNode(t, "edge", nodeOpts{root: dev, upstreams: []string{cloud.url()}, upstreamCreds: cloud.deviceCreds(dev),
		tune: func(c *Config) { c.RepairInterval = time.Hour }})
	edge.waitInSync(cloud.url())
	mark := recvMark(edge.st.Instance()) + "@" + dev.String()
	real, _ := cloud.st.Mark(mark)

	poser := cloud.deviceCreds(uuid.New())
	nc := cloud.dial(poser)
	var w transport.Welcome
	err := request(t, nc, keyID(poser), transport.NameHello, transport.Hello{Proto: transport.LinkProto,
		Instance: edge.st.Instance(), Root: poser.Node, Role: transport.RoleEdge, Time: time.Now().UnixMilli()}, &w)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := transport.Subjects(keyID(poser), w.Session)
	push, _ := transport.Encode(transport.Push{From: 0, Through: 1e12})
	if _, err := nc.Request(subj.Up, push, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, _ := cloud.st.Mark(mark); got != real {
		t.Fatalf("the poser moved the real edge's mark from %d to %d", real, got)
	}
	if !edge.link(cloud.url()).Connected {
		t.Fatal("the poser ended the real edge's session")
	}
	s := uuid.New()
	edge.write(edgePt(dev, s), valPt(s, "temp", 3))
	waitFor(t, "push after the poser", 5*time.Second, func() bool { return cloud.get(s, uuid.Nil, "temp", "0").Value == 3 })
}

// TestResumeNeverPassesWhatWasSent: an acceptor whose mark claims more of
// the edge's feed than the edge ever wrote gets everything again.
func TestResumeNeverPassesWhatWasSent(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.RepairInterval = time.Hour }})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}, tune: func(c *Config) { c.RepairInterval = time.Hour }})
	edge.waitInSync(cloud.url())
	s := uuid.New()
	edge.write(edgePt(edge.root, s), valPt(s, "temp", 1))
	cloud.waitValue(s, "temp", 1)
	cloud.stop()
	edge.write(valPt(s, "temp", 2))
	cloud.start()
	if err := cloud.st.SetMarks(map[string]uint64{recvMark(edge.st.Instance()): 1e12}); err != nil {
		t.Fatal(err)
	}
	cloud.waitValue(s, "temp", 2)
	// The mark follows what the edge sent, and later writes go by push
	// (repair does not run again within the test).
	edge.write(valPt(s, "temp", 3))
	cloud.waitValue(s, "temp", 3)
	if m, _ := cloud.st.Mark(recvMark(edge.st.Instance())); m > edge.st.LastSeq() {
		t.Fatalf("the cloud's mark %d passes the edge's last change %d", m, edge.st.LastSeq())
	}
}

// TestPushRoutesByArrivalNotOrigin: a point written on the cloud with the
// edge's instance as its origin still reaches the edge.
func TestPushRoutesByArrivalNotOrigin(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.RepairInterval = time.Hour }})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}, tune: func(c *Config) { c.RepairInterval = time.Hour }})
	edge.waitInSync(cloud.url())
	s := uuid.New()
	edge.write(edgePt(edge.root, s))
	cloud.waitInSyncNode(s)
	p := valPt(s, "setpoint", 7)
	p.Origin = edge.st.Instance()
	cloud.write(p)
	edge.waitValue(s, "setpoint", 7)
}

// waitInSyncNode waits until the node holds an edge to id.
func (n *node) waitInSyncNode(id uuid.UUID) {
	n.t.Helper()
	waitFor(n.t, "node "+id.String(), 10*time.Second, func() bool {
		found := false
		_ = n.st.Parents(id, func(store.Child) error { found = true; return nil })
		return found
	})
}

// TestRevokedDeviceIsDisconnectedEverywhere: a device linked to cloud 1
// whose key is tombstoned on cloud 2 (a peer) is disconnected from cloud 1
// within seconds and cannot reconnect.
func TestRevokedDeviceIsDisconnectedEverywhere(t *testing.T) {
	tune := func(c *Config) { c.RevalidateInterval = 200 * time.Millisecond }
	c1 := startNode(t, "cloud1", nodeOpts{tune: tune})
	c2 := startNode(t, "cloud2", nodeOpts{root: c1.root, peers: []string{c1.url()}, tune: tune})
	dev := uuid.New()
	creds := c1.deviceCreds(dev)
	edge := startNode(t, "edge", nodeOpts{root: dev, upstreams: []string{c1.url()}, upstreamCreds: creds})
	edge.waitInSync(c1.url())
	pub := mustPub(t, creds)
	waitFor(t, "the key on cloud 2", 10*time.Second, func() bool { return c2.get(dev, uuid.Nil, crdt.TypeAuthKey, pub).Time != 0 })
	revoked := time.Now()
	c2.write(crdt.Point{Node: dev, Type: crdt.TypeAuthKey, Key: pub, Tombstone: true})
	waitFor(t, "the device disconnected from cloud 1", 10*time.Second, func() bool { return !edge.link(c1.url()).Connected })
	t.Logf("revoked on cloud 2, disconnected from cloud 1 after %v", time.Since(revoked).Round(time.Millisecond))
	// Reconnects are refused, with an error that says so.
	waitFor(t, "a refused reconnect", 10*time.Second, func() bool {
		return strings.Contains(edge.link(c1.url()).LastError, "Authorization Violation")
	})
	// Three more refused attempts, and never connected between them.
	refused := func() (n uint64) {
		for _, v := range c1.srv.Refused() {
			n += v
		}
		return n
	}
	from := refused()
	waitFor(t, "three more refused reconnects", 10*time.Second, func() bool {
		if edge.link(c1.url()).Connected {
			t.Fatal("a revoked device reconnected")
		}
		return refused() >= from+3
	})
	if _, err := transport.Dial(c1.url(), transport.DialConfig{Creds: creds, Timeout: 5 * time.Second}); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("a revoked key dialed: %v", err)
	}
}

// addUser writes a user under parent who signs in with email and
// password, an administrator there when admin is set.
func addUser(t *testing.T, n *node, parent uuid.UUID, email, password string, admin bool) uuid.UUID {
	t.Helper()
	hash, err := transport.HashPassword(password, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u := uuid.New()
	pts := []crdt.Point{edgePt(parent, u), {Node: u, Type: crdt.TypeNodeType, Text: "user"},
		{Node: u, Type: crdt.TypeEmail, Text: email}, {Node: u, Type: crdt.TypePassword, Text: hash}}
	if admin {
		pts = append(pts, crdt.Point{Node: u, Parent: parent, Type: crdt.TypeRole, Text: crdt.RoleAdmin})
	}
	n.write(pts...)
	return u
}

// login signs in over TCP and returns the user's token credentials.
func login(t *testing.T, n *node, email, password string) (*transport.Creds, error) {
	t.Helper()
	l := &transport.Login{Email: email, Password: password}
	nc, err := transport.Dial(n.url(), transport.DialConfig{Login: l, Timeout: 15 * time.Second})
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var tok transport.TokenReply
	if err := request(t, nc, l.Identity(), transport.NameToken, transport.TokenRequest{}, &tok); err != nil {
		return nil, err
	}
	return &transport.Creds{Kind: transport.KindUser, Node: tok.User, Token: tok.Token, Expires: time.UnixMilli(tok.Expires)}, nil
}

// TestLoginTokenAndRevocation: a user signs in with a password, uses the
// token, and loses its session when its password is tombstoned; a login
// connection may do nothing but ask for its token.
func TestLoginTokenAndRevocation(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.RevalidateInterval = 200 * time.Millisecond }})
	site, other := uuid.New(), uuid.New()
	n.write(edgePt(n.root, site), edgePt(n.root, other), valPt(site, "temp", 1), valPt(other, "temp", 2))
	u := addUser(t, n, site, "Ann@Example.com", "correct horse", false)
	creds, err := login(t, n, "ann@example.com ", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if creds.Node != u {
		t.Fatalf("token for %v, want %v", creds.Node, u)
	}
	nc := n.dial(creds)
	id := keyID(creds)
	var page transport.NodePage
	if err := request(t, nc, id, transport.NameNode, transport.NodeRequest{Node: site}, &page); err != nil || !page.Known {
		t.Fatalf("the user reads its site: %v", err)
	}
	if err := request(t, nc, id, transport.NameNode, transport.NodeRequest{Node: other}, &page); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("the user reads another site: %v", err)
	}
	// Its own node shows no password or key.
	if err := request(t, nc, id, transport.NameNode, transport.NodeRequest{Node: u}, &page); err != nil {
		t.Fatal(err)
	}
	pts, _ := crdt.DecodeBatch(page.Points, 0)
	for _, p := range pts {
		if crdt.IsSecret(p.Type) {
			t.Fatalf("the user read a secret: %s", p.Type)
		}
	}
	// A login connection asks for a token and nothing else.
	l := &transport.Login{Email: "ann@example.com", Password: "correct horse"}
	lc, err := transport.Dial(n.url(), transport.DialConfig{Login: l, Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, err := lc.Request(transport.Subject(l.Identity(), transport.NameNode), nil, time.Second); err == nil {
		t.Fatal("a login connection made an API request")
	}
	// A wrong password, an unknown address: refused alike.
	for _, c := range [][2]string{{"ann@example.com", "wrong"}, {"nobody@example.com", "correct horse"}} {
		if _, err := login(t, n, c[0], c[1]); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("login %s: %v, want refused", c[0], err)
		}
	}
	// Revocation: the password tombstoned, the session ends and the
	// token is refused.
	n.write(crdt.Point{Node: u, Type: crdt.TypePassword, Tombstone: true})
	waitFor(t, "the user's connection closed", 10*time.Second, func() bool { return nc.IsClosed() })
	if _, err := transport.Dial(n.url(), transport.DialConfig{Creds: creds, Timeout: 5 * time.Second}); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("a revoked user's token dialed: %v", err)
	}
}

// TestFailedLoginsSlowDown measures the slowdown: after two failures from
// one source each attempt waits 250 ms, then 500 ms, ... before it is
// checked, even with the right password; a success clears it.
func TestFailedLoginsSlowDown(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	addUser(t, n, n.root, "bob@example.com", "right", false)
	timed := func(pw string) (time.Duration, error) {
		start := time.Now()
		_, err := login(t, n, "bob@example.com", pw)
		return time.Since(start), err
	}
	base, err := timed("right")
	if err != nil {
		t.Fatal(err)
	}
	var took []time.Duration
	for range 4 {
		d, err := timed("wrong")
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("wrong password: %v", err)
		}
		took = append(took, d)
	}
	d, err := timed("right")
	if err != nil {
		t.Fatal(err)
	}
	took = append(took, d)
	t.Logf("a good login took %v; then four failures and a good one: %v", base, took)
	// The 3rd failure waited 250 ms, the 4th 500 ms, the next login 1 s.
	for i, want := range []time.Duration{0, 0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		if took[i] < want {
			t.Errorf("attempt %d took %v, want at least %v", i+1, took[i], want)
		}
	}
	// A success clears the source's failures: no slowdown is left.
	n.rep.auth.mu.Lock()
	left := len(n.rep.auth.fails)
	n.rep.auth.mu.Unlock()
	if left != 0 {
		t.Errorf("after a success, %d sources still slowed", left)
	}
	if got := n.rep.Metrics().LoginFailures; got != 4 {
		t.Errorf("login failures counted: %d, want 4", got)
	}
}

// TestPerIdentityLimits: one device cannot hold more than its share of
// watchers or connections.
func TestPerIdentityLimits(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.MaxWatchersPerIdentity = 2 }})
	dev := uuid.New()
	n.write(edgePt(n.root, dev))
	creds := n.deviceCreds(dev)
	nc := n.dial(creds)
	id := keyID(creds)
	req, _ := transport.Encode(transport.WatchRequest{Root: dev, After: n.st.LastSeq(), Wait: transport.MaxWatchWait})
	var held []*nats.Msg
	for range 2 {
		inbox := nc.NewRespInbox()
		sub, err := nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := nc.PublishRequest(transport.Subject(id, transport.NameWatch), inbox, req); err != nil {
			t.Fatal(err)
		}
		_ = held
	}
	waitFor(t, "two watchers held", 5*time.Second, func() bool {
		n.rep.apiMu.Lock()
		defer n.rep.apiMu.Unlock()
		return n.rep.watchers == 2
	})
	m, err := nc.Request(transport.Subject(id, transport.NameWatch), req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.Decode(m.Data, 0, &transport.WatchReply{}); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("third watcher: %v, want refused for the limit", err)
	}
	// Connections: 64 per identity; a closed one frees its place.
	var conns []*nats.Conn
	for len(conns) < 63 { // nc above is the first
		c, err := transport.Dial(n.url(), transport.DialConfig{Creds: creds, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+2, err)
		}
		conns = append(conns, c)
		defer c.Close()
	}
	if c, err := transport.Dial(n.url(), transport.DialConfig{Creds: creds, Timeout: 5 * time.Second}); !errors.Is(err, nats.ErrAuthorization) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("connection 65: %v, want refused", err)
	}
	conns[0].Close()
	waitFor(t, "a place freed", 5*time.Second, func() bool {
		c, err := transport.Dial(n.url(), transport.DialConfig{Creds: creds, Timeout: 5 * time.Second})
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	// The administrator is not bound by the device's limit.
	if err := request(t, n.dial(nil), adminID, transport.NameStatus, transport.StatusRequest{}, &transport.Status{}); err != nil {
		t.Fatal(err)
	}
}

// TestImportFloodIsBoundedPerIdentity: a device that sends many large
// imports at once has all but MaxTransfersPerIdentity refused at once, and
// another device's import goes through meanwhile.
func TestImportFloodIsBoundedPerIdentity(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	a, b := uuid.New(), uuid.New()
	n.write(edgePt(n.root, a), edgePt(n.root, b))
	ca, cb := n.deviceCreds(a), n.deviceCreds(b)
	nca, ncb := n.dial(ca), n.dial(cb)
	text := strings.Repeat("x", 240)
	var pts []crdt.Point
	for i := range 3500 {
		pts = append(pts, crdt.Point{Node: a, Type: "log", Key: strconv.Itoa(i), Text: text})
	}
	big, err := transport.Encode(transport.Import{Points: crdt.AppendBatch(nil, pts)})
	if err != nil {
		t.Fatal(err)
	}
	if len(big) < 800<<10 {
		t.Fatalf("flood import of %d bytes, want about 1 MiB", len(big))
	}
	inbox := nca.NewRespInbox()
	replies, err := nca.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	const flood = 12
	for range flood {
		if err := nca.PublishRequest(transport.Subject(keyID(ca), transport.NameImport), inbox, big); err != nil {
			t.Fatal(err)
		}
	}
	var res transport.ImportResult
	small := transport.Import{Points: crdt.AppendBatch(nil, []crdt.Point{valPt(b, "temp", 1)})}
	if err := request(t, ncb, keyID(cb), transport.NameImport, small, &res); err != nil || res.Applied != 1 {
		t.Fatalf("the other device's import: %+v %v", res, err)
	}
	ok, limited := 0, 0
	for range flood {
		m, err := replies.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("after %d replies: %v", ok+limited, err)
		}
		switch err := transport.Decode(m.Data, 0, &transport.ImportResult{}); {
		case err == nil:
			ok++
		case strings.Contains(err.Error(), "limit"):
			limited++
		default:
			t.Fatalf("flood reply: %v", err)
		}
	}
	if ok < 2 || limited == 0 || ok+limited != flood {
		t.Fatalf("flood: %d applied, %d refused for the limit", ok, limited)
	}
	t.Logf("flood of %d imports of %d KiB: %d applied, %d refused at once", flood, len(big)>>10, ok, limited)
}

// TestUnknownAddressCostsAHash: a login for an address nobody has verifies
// a real hash, so it costs what a wrong password costs.
func TestUnknownAddressCostsAHash(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	h, err := transport.ParsePasswordHash(n.rep.auth.dummy())
	if err != nil {
		t.Fatalf("the stand-in hash does not parse: %v", err)
	}
	if h.Memory < 19456 || h.Time < 2 {
		t.Fatalf("the stand-in hash is cheaper than a user's: %+v", h)
	}
}

// TestRequestRateAndSubscriptionLimits: a device over its request rate is
// told to slow down; a connection holding too many subscriptions is
// closed.
func TestRequestRateAndSubscriptionLimits(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{tune: func(c *Config) {
		c.RequestRate, c.RevalidateInterval = 5, 100*time.Millisecond
	}})
	dev := uuid.New()
	n.write(edgePt(n.root, dev))
	creds := n.deviceCreds(dev)
	nc := n.dial(creds)
	id := keyID(creds)
	limited := 0
	for range 30 {
		err := request(t, nc, id, transport.NameNode, transport.NodeRequest{Node: dev}, &transport.NodePage{})
		if err != nil {
			if !strings.Contains(err.Error(), "slow down") {
				t.Fatal(err)
			}
			limited++
		}
	}
	// A burst of 10, then 5 a second: most of 30 quick requests wait.
	if limited < 10 {
		t.Fatalf("%d of 30 requests limited at 5/s, want most", limited)
	}
	if refused := n.rep.Metrics().RequestsRefused; refused[reasonIndex(ReasonLimited)].Value != uint64(limited) {
		t.Fatalf("refusals counted: %+v, want %d limited", refused, limited)
	}
	heavy := n.dial(creds)
	for i := range 1001 {
		if _, err := heavy.SubscribeSync(id.Prefix() + ".x." + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := heavy.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the heavy connection closed", 10*time.Second, heavy.IsClosed)
	if nc.IsClosed() {
		t.Fatal("the device's other connection was closed too")
	}
}

// openEdgeSession signs in with creds and opens an edge session as root;
// it returns the connection, the session's subjects.
func openEdgeSession(t *testing.T, n *node, creds *transport.Creds, root uuid.UUID) (*nats.Conn, transport.SessionSubjects) {
	t.Helper()
	nc := n.dial(creds)
	var w transport.Welcome
	if err := request(t, nc, keyID(creds), transport.NameHello, transport.Hello{Proto: transport.LinkProto, Instance: uuid.New(),
		Root: root, Role: transport.RoleEdge, Time: time.Now().UnixMilli()}, &w); err != nil {
		t.Fatal(err)
	}
	subj, err := transport.Subjects(keyID(creds), w.Session)
	if err != nil {
		t.Fatal(err)
	}
	return nc, subj
}

// TestDeviceCannotTakeTheRootOrMintKeys: a device's push that hangs the
// root under itself and writes a key there, or writes a key anywhere in
// its own subtree, is refused: keys are the local administrator's.
func TestDeviceCannotTakeTheRootOrMintKeys(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	dev, child := uuid.New(), uuid.New()
	cloud.write(edgePt(cloud.root, dev), edgePt(dev, child))
	creds := cloud.deviceCreds(dev)
	nc, subj := openEdgeSession(t, cloud, creds, dev)
	now := crdt.NewTimestamp(time.Now().UnixMilli(), 0)
	mine, _ := transport.NewKeyCreds(transport.KindKey, cloud.root)
	pts := []crdt.Point{
		{Node: cloud.root, Parent: dev, Type: crdt.TypeEdge, Key: "0", Value: 1, Time: now, Origin: uuid.New()},
		{Node: cloud.root, Type: crdt.TypeAuthKey, Key: mustPub(t, mine), Value: 1, Time: now + 1, Origin: uuid.New()},
		{Node: child, Type: crdt.TypeAuthKey, Key: mustPub(t, mine), Value: 1, Time: now + 2, Origin: uuid.New()},
	}
	b, _ := transport.Encode(transport.Push{From: 0, Through: 3, Points: crdt.AppendBatch(nil, pts)})
	m, err := nc.Request(subj.Up, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ack transport.Ack
	if err := transport.Decode(m.Data, 0, &ack); err != nil {
		t.Fatal(err)
	}
	if ack.Rejected != 3 {
		t.Fatalf("ack %+v, want all 3 refused", ack)
	}
	if p := cloud.get(cloud.root, uuid.Nil, crdt.TypeAuthKey, mustPub(t, mine)); p.Time != 0 {
		t.Fatal("a device planted a key on the root")
	}
	if _, err := transport.Dial(cloud.url(), transport.DialConfig{Creds: mine, Timeout: 5 * time.Second}); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("the planted key signs in: %v", err)
	}
}

// TestRepairAnswersNothingMovedAway: a node moved from one device to
// another is no longer answered to the first device's repair requests.
func TestRepairAnswersNothingMovedAway(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	devA, devB, leaf := uuid.New(), uuid.New(), uuid.New()
	cloud.write(edgePt(cloud.root, devA), edgePt(cloud.root, devB), edgePt(devA, leaf), valPt(leaf, "temp", 1))
	creds := cloud.deviceCreds(devA)
	nc, subj := openEdgeSession(t, cloud, creds, devA)
	fetch := func() int {
		t.Helper()
		b, err := transport.EncodeRepairRequest(&transport.RepairRequest{Root: devA,
			Fetch: []transport.FetchQuery{{Node: leaf, Hashes: []uint64{transport.RegisterHash("temp", "0"), transport.RegisterHash(crdt.TypePassword, "0")}}}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := nc.Request(subj.Repair, b, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := transport.DecodeRepairReply(m.Data, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Points) == 0 {
			return 0
		}
		pts, err := crdt.DecodeBatch(rep.Points, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(pts)
	}
	if n := fetch(); n != 1 {
		t.Fatalf("its own leaf: %d points, want 1", n)
	}
	// The leaf moves to the other device, and gets a password there.
	move := edgePt(devA, leaf)
	move.Tombstone, move.Value = true, 1
	if _, err := cloud.rep.WriteOne([]crdt.Point{edgePt(devB, leaf), move}); err != nil {
		t.Fatal(err)
	}
	hash, _ := transport.HashPassword("pw", rand.Reader)
	cloud.write(crdt.Point{Node: leaf, Type: crdt.TypePassword, Text: hash})
	if n := fetch(); n != 0 {
		t.Fatalf("a moved-away node: %d points answered, want none", n)
	}
}

// TestTokenNotIssuedAfterPasswordChange: a sign-in with a password that
// is replaced before the token is asked for gets no token, and its login
// connection is closed.
func TestTokenNotIssuedAfterPasswordChange(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.RevalidateInterval = time.Hour }})
	u := addUser(t, n, n.root, "cy@example.com", "old password", false)
	l := &transport.Login{Email: "cy@example.com", Password: "old password"}
	lc, err := transport.Dial(n.url(), transport.DialConfig{Login: l, Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	hash, _ := transport.HashPassword("new password", rand.Reader)
	n.write(crdt.Point{Node: u, Type: crdt.TypePassword, Text: hash})
	var tok transport.TokenReply
	if err := request(t, lc, l.Identity(), transport.NameToken, transport.TokenRequest{}, &tok); err == nil || !strings.Contains(err.Error(), "password changed") {
		t.Fatalf("token after a password change: %+v %v", tok, err)
	}
	if err := n.rep.auth.revalidate(transport.Grant{Identity: l.Identity(), Credential: u.String() + "/1"}); err == nil {
		t.Fatal("a login matched against an old password revalidates")
	}
}

// TestParallelLoginsFromOneSourceAreBounded: guesses sent in parallel from
// one source are not checked more than two at a time; the others are
// refused at once and counted.
func TestParallelLoginsFromOneSourceAreBounded(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	addUser(t, n, n.root, "dee@example.com", "right", false)
	a := n.rep.auth
	release := make(chan struct{})
	a.mu.Lock()
	a.sleep = func(time.Duration) { <-release } // hold the checks in their wait
	a.mu.Unlock()
	for range 2 {
		_, _ = login(t, n, "dee@example.com", "wrong") // two failures: the next ones wait
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := login(t, n, "dee@example.com", "wrong")
			errs <- err
		}()
	}
	waitFor(t, "four refused at once", 10*time.Second, func() bool { return len(errs) >= 4 })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("a parallel guess: %v", err)
		}
	}
	if got := n.rep.Metrics().LoginFailures; got != 8 {
		t.Fatalf("%d failures counted, want 8", got)
	}
}

// TestRetryWaitGrowsWithTheOutage: the reconnect wait doubles to 2 s in an
// outage's first minute, then to a tenth of the outage, at most 5 min,
// always within [backoff/2, backoff]; a refusal's "retry after" wins.
func TestRetryWaitGrowsWithTheOutage(t *testing.T) {
	lo, hi, long := 250*time.Millisecond, 2*time.Second, 5*time.Minute
	cases := []struct {
		downFor, backoff, after time.Duration
		u                       float64
		wait, next              time.Duration
	}{
		{0, lo, 0, 0, lo / 2, 2 * lo},
		{10 * time.Second, hi, 0, 0.999999, 1999999 * time.Microsecond, hi},
		{30 * time.Second, hi, 0, 0, hi / 2, hi},
		{10 * time.Minute, hi, 0, 0, hi / 2, 4 * time.Second},
		{10 * time.Minute, time.Minute, 0, 0, 30 * time.Second, time.Minute},
		{2 * time.Hour, 4 * time.Minute, 0, 0, 2 * time.Minute, long},
		{2 * time.Hour, long, 0, 0.5, long/2 + long/4, long},
		{0, lo, 12 * time.Second, 1, 18 * time.Second, lo},
	}
	for i, c := range cases {
		wait, next := retryWait(lo, hi, long, c.downFor, c.backoff, c.after, c.u)
		if wait != c.wait || next != c.next {
			t.Errorf("case %d: wait %v next %v, want %v %v", i, wait, next, c.wait, c.next)
		}
	}
	for msg, want := range map[string]time.Duration{
		"remote: busy: 3 links in their initial sync; retry after 12s": 12 * time.Second,
		"remote: retry after 99999s":                                   0,
		"remote: retry after xs":                                       0,
		"hello: timeout":                                               0,
	} {
		if got := retryAfter(errors.New(msg)); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", msg, got, want)
		}
	}
}

// TestBusyAcceptorShedsHellos: with MaxStartingSessions sessions in their
// initial sync, another device's hello is refused with a time to retry,
// before anything is written; the administrator is not shed.
func TestBusyAcceptorShedsHellos(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.MaxStartingSessions = 1 }})
	d1, d2 := uuid.New(), uuid.New()
	c1, c2 := cloud.deviceCreds(d1), cloud.deviceCreds(d2)
	openEdgeSession(t, cloud, c1, d1) // holds one session that never starts
	before := cloud.st.LastSeq()
	var w transport.Welcome
	err := request(t, cloud.dial(c2), keyID(c2), transport.NameHello, transport.Hello{Proto: transport.LinkProto,
		Instance: uuid.New(), Root: d2, Role: transport.RoleEdge, Time: time.Now().UnixMilli()}, &w)
	if d := retryAfter(err); d < time.Second || d > 2*time.Second {
		t.Fatalf("hello to a busy acceptor: %v (retry after %v)", err, d)
	}
	if got := changesBesidesDeviceState(cloud, before); got != 0 {
		t.Fatalf("a shed hello wrote %d changes", got)
	}
	if err := request(t, cloud.dial(nil), adminID, transport.NameHello, transport.Hello{Proto: transport.LinkProto,
		Instance: uuid.New(), Root: uuid.New(), Role: transport.RoleEdge, Time: time.Now().UnixMilli()}, &w); err != nil {
		t.Fatalf("the administrator was shed: %v", err)
	}
}

// TestSignInFollowsAddressChanges: the sign-in index, built at the first
// login, follows later changes of addresses from the change feed.
func TestSignInFollowsAddressChanges(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	u := addUser(t, n, n.root, "eve@example.com", "pw one", false)
	if _, err := login(t, n, "eve@example.com", "pw one"); err != nil {
		t.Fatal(err)
	}
	for i := range 50 { // unrelated changes between the two logins
		n.write(valPt(n.root, "noise", float64(i)))
	}
	n.write(crdt.Point{Node: u, Type: crdt.TypeEmail, Text: "eve@example.org"})
	if _, err := login(t, n, "eve@example.com", "pw one"); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("the old address signs in: %v", err)
	}
	if c, err := login(t, n, "EVE@example.org", "pw one"); err != nil || c.Node != u {
		t.Fatalf("the new address: %v", err)
	}
}

// TestNkeyWithoutUserName: the nats CLI's --nkey sends no user name. The
// administrator's key signs in so; any other key (a device's, a forged
// one) is refused, and a device still signs in with its node as user.
func TestNkeyWithoutUserName(t *testing.T) {
	n := startNode(t, "server", nodeOpts{})
	dial := func(c *transport.Creds) error {
		kp, err := nkeys.FromSeed(c.Seed)
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		id, _ := c.Identity()
		nc, err := nats.Connect(n.url(), nats.NoReconnect(), nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(id.Inbox()))
		if err != nil {
			return err
		}
		defer nc.Close()
		_, err = nc.Request(transport.Subject(id, transport.NameStatus), mustEncode(transport.StatusRequest{}), 5*time.Second)
		return err
	}
	if err := dial(n.admin); err != nil {
		t.Fatalf("the administrator's nkey without a user name: %v", err)
	}
	forged, _ := transport.NewKeyCreds(transport.KindAdmin, uuid.Nil)
	stranger, _ := transport.NewKeyCreds(transport.KindKey, uuid.New())
	for name, c := range map[string]*transport.Creds{"forged admin": forged, "device key": stranger} {
		if err := dial(c); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s without a user name: %v, want refused", name, err)
		}
	}
}
