package replica

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
	"github.com/siot-io/siot/transport/faultproxy"
)

// node is one running instance in a test: a store in a temp dir, an
// embedded NATS server on a random loopback port, and a replica.
type node struct {
	t        testing.TB
	name     string
	dir      string
	root     uuid.UUID
	st       *store.Store
	srv      *transport.Server
	rep      *Replica
	clock    *crdt.Clock
	cfg      Config
	addr     string // listen address, kept across restarts
	physical func() time.Time
	admin    *transport.Creds // the local administrator's, kept across restarts
	bypass   bool             // nodeOpts.bypass
	srvPing  time.Duration    // nodeOpts.serverPing
	cluster  transport.ClusterConfig
	free     func(dir string) (uint64, error) // nodeOpts.freeSpace
}

// adminByAddr maps a test node's listen address to its administrator
// credentials, so a node linking to a URL signs in as the remote's
// administrator unless the test gives other credentials.
var adminByAddr sync.Map

// adminFor returns the administrator credentials of the test node
// listening at url (nats://host:port).
func adminFor(t testing.TB, url string) *transport.Creds {
	t.Helper()
	c, ok := adminByAddr.Load(url[len("nats://"):])
	if !ok {
		t.Fatalf("no test node listens at %s", url)
	}
	return c.(*transport.Creds)
}

// mustPub returns creds' public key.
func mustPub(t testing.TB, c *transport.Creds) string {
	t.Helper()
	pub, err := c.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

type nodeOpts struct {
	root      uuid.UUID
	upstreams []string
	peers     []string
	dir       string
	tune      func(*Config)
	physical  func() time.Time // the node's physical clock; time.Now when nil
	// upstreamCreds and peerCreds sign the node's links in; nil: as the
	// administrator of the first upstream's (peer's) node.
	upstreamCreds, peerCreds *transport.Creds
	// bypass turns authorization checks and subject permissions off, for
	// the benchmarks that measure what they cost.
	bypass bool
	// serverPing is the NATS server's keepalive (0: its default).
	serverPing time.Duration
	// freeSpace, when set, is the store's free-space probe (a disk that
	// fills and empties on the test's word).
	freeSpace func(dir string) (uint64, error)
	// cluster, when set, makes the node's server a cluster member with
	// these routes (nats://host:port of other members' route listeners;
	// none for the first). Its route port is kept across restarts.
	cluster []string
}

// clusterSecret is the route secret of the test clusters.
const clusterSecret = "test-cluster-secret-0123456789abcdef"

// testTuning shortens timers so failures are detected in test time.
func testTuning(c *Config) {
	c.RetryMin, c.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	c.PingInterval, c.SessionTimeout, c.AckTimeout = 200*time.Millisecond, 6*time.Second, 4*time.Second
	c.HelloTimeout = 3 * time.Second
	// Repair stretches on idle links up to 2 s, not an hour: tests that
	// plant a difference wait for the next round.
	c.RepairMaxInterval = 2 * time.Second
}

func startNode(t testing.TB, name string, o nodeOpts) *node {
	t.Helper()
	n := &node{t: t, name: name, dir: o.dir, root: o.root, addr: "127.0.0.1:0", physical: o.physical, free: o.freeSpace}
	if n.physical == nil {
		n.physical = time.Now
	}
	if n.dir == "" {
		n.dir = t.TempDir()
	}
	n.cfg = Config{Upstreams: o.upstreams, Peers: o.peers, UpstreamCreds: o.upstreamCreds, PeerCreds: o.peerCreds}
	if n.cfg.UpstreamCreds == nil && len(o.upstreams) > 0 {
		n.cfg.UpstreamCreds = adminFor(t, o.upstreams[0])
	}
	if n.cfg.PeerCreds == nil && len(o.peers) > 0 {
		n.cfg.PeerCreds = adminFor(t, o.peers[0])
	}
	admin, err := transport.NewKeyCreds(transport.KindAdmin, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	n.admin = admin
	n.cfg.AdminKey = mustPub(t, admin)
	n.cfg.noChecks, n.bypass, n.srvPing = o.bypass, o.bypass, o.serverPing
	if o.cluster != nil {
		n.cluster = transport.ClusterConfig{Listen: "127.0.0.1:0", Routes: o.cluster, Secret: clusterSecret}
	}
	testTuning(&n.cfg)
	if o.tune != nil {
		o.tune(&n.cfg)
	}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *node) start() {
	t := n.t
	t.Helper()
	scfg := store.DefaultConfig(n.dir)
	scfg.MinFreeBytes, scfg.Root, scfg.Profile = 0, n.root, store.ProfileCloud
	if n.free != nil {
		scfg.FreeSpace = n.free
	}
	if len(n.cfg.Upstreams) > 0 && len(n.cfg.Peers) == 0 {
		scfg.Profile = store.ProfileEdge // as siot serve chooses
	}
	st, err := store.Open(scfg)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	n.root = st.Root()
	srv, err := transport.StartServer(transport.ServerConfig{Listen: n.addr, NoPermissions: n.bypass, PingInterval: n.srvPing, Cluster: n.cluster})
	if err != nil {
		st.Close()
		t.Fatalf("%s: %v", n.name, err)
	}
	if n.cluster.Listen == "127.0.0.1:0" {
		n.cluster.Listen = srv.ClusterAddr()
	}
	if n.addr == "127.0.0.1:0" {
		n.addr = srv.ClientURL()[len("nats://"):]
	}
	adminByAddr.Store(n.addr, n.admin)
	clock, _ := crdt.NewClock(crdt.ClockConfig{Physical: n.physical})
	cfg := n.cfg
	cfg.Store, cfg.Clock, cfg.Server = st, clock, srv
	if os.Getenv("SIOT_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", n.name)
	}
	rep, err := Open(cfg)
	if err != nil {
		srv.Shutdown()
		st.Close()
		t.Fatalf("%s: %v", n.name, err)
	}
	n.st, n.srv, n.rep, n.clock = st, srv, rep, clock
}

func (n *node) stop() {
	if n.rep == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.rep.Close(ctx); err != nil {
		n.t.Errorf("%s: %v", n.name, err)
	}
	n.srv.Shutdown()
	if err := n.st.Verify(); err != nil {
		n.t.Errorf("%s: %v", n.name, err)
	}
	if err := n.st.Close(); err != nil {
		n.t.Errorf("%s: %v", n.name, err)
	}
	n.rep = nil
}

// kill stops n as a crash looks from outside: its server goes first, so
// every connection and route drops and nothing the replica does on its
// way out reaches anyone; then the replica and the store close.
func (n *node) kill() {
	if n.rep == nil {
		return
	}
	n.srv.Shutdown()
	n.stop()
}

func (n *node) restart() {
	n.stop()
	n.start()
}

func (n *node) url() string { return "nats://" + n.addr }

// routeURL is the node's route listener, for other cluster members.
func (n *node) routeURL() string { return "nats://" + n.cluster.Listen }

// dial connects to the node's listener over TCP with creds (nil: as its
// administrator).
func (n *node) dial(creds *transport.Creds) *nats.Conn {
	n.t.Helper()
	if creds == nil {
		creds = n.admin
	}
	nc, err := transport.Dial(n.url(), transport.DialConfig{Name: "test", Creds: creds, Timeout: 5 * time.Second})
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.t.Cleanup(nc.Close)
	return nc
}

// write sets points through the local write path (stamped now).
func (n *node) write(pts ...crdt.Point) {
	n.t.Helper()
	if _, err := n.rep.Write(pts); err != nil {
		n.t.Fatalf("%s: write: %v", n.name, err)
	}
}

// get returns the winner of a register (zero Point when none).
func (n *node) get(node uuid.UUID, parent uuid.UUID, typ, key string) crdt.Point {
	n.t.Helper()
	p, _, err := n.st.Get(crdt.Register{Node: node, Parent: parent, Type: typ, Key: key})
	if err != nil {
		n.t.Fatalf("%s: get: %v", n.name, err)
	}
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	waitExplained(t, d, cond, func() string { return fmt.Sprintf("timed out after %v waiting for %s", d, what) })
}

// waitExplained polls cond every few milliseconds until it holds; after d
// it fails with explain's message.
func waitExplained(t testing.TB, d time.Duration, cond func() bool, explain func() string) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-deadline:
			t.Fatal(explain())
		case <-tick.C:
		}
	}
}

// waitValue waits until n holds value v in the register.
func (n *node) waitValue(id uuid.UUID, typ string, v float64) {
	n.t.Helper()
	waitFor(n.t, fmt.Sprintf("%s: %v %s = %v", n.name, id, typ, v), 10*time.Second, func() bool {
		p := n.get(id, uuid.Nil, typ, "0")
		return p.Time != 0 && p.Value == v
	})
}

// dump returns every point n holds, in export order, as comparable text.
func (n *node) dump(root uuid.UUID) []string {
	n.t.Helper()
	var out []string
	req := transport.ExportRequest{Root: root}
	for {
		page, err := n.rep.ExportPage(req)
		if err != nil {
			n.t.Fatalf("%s: export: %v", n.name, err)
		}
		pts, err := crdt.DecodeBatch(page.Points, 0)
		if err != nil {
			n.t.Fatalf("%s: export page: %v", n.name, err)
		}
		for _, p := range pts {
			out = append(out, fmt.Sprintf("%v/%v/%s/%s=%v,%q,%v@%v/%v", p.Node, p.Parent, p.Type, p.Key, p.Value, p.Text, p.Tombstone, p.Time, p.Origin))
		}
		if !page.More {
			return out
		}
		req.After = page.Next
	}
}

// linkStatus returns n's dialed link to url.
func (n *node) link(url string) transport.LinkStatus {
	for _, l := range n.rep.Status().Links {
		if l.URL == url {
			return l
		}
	}
	n.t.Fatalf("%s: no link to %s", n.name, url)
	return transport.LinkStatus{}
}

func (n *node) waitInSync(url string) {
	n.t.Helper()
	waitFor(n.t, n.name+" in sync with "+url, 15*time.Second, func() bool {
		l := n.link(url)
		return l.Connected && l.InSync
	})
}

func edgePt(parent, child uuid.UUID) crdt.Point {
	return crdt.Point{Node: child, Parent: parent, Type: crdt.TypeEdge, Key: "0"}
}

func valPt(id uuid.UUID, typ string, v float64) crdt.Point {
	return crdt.Point{Node: id, Type: typ, Key: "0", Value: v}
}

func equalDumps(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// proxyTo starts a fault-injecting proxy in front of n's NATS server.
func proxyTo(t testing.TB, n *node) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(faultproxy.Config{Target: n.addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	adminByAddr.Store(p.Addr(), n.admin)
	return p
}

// deviceCreds provisions a device key for node dev on n (the node need not
// exist yet: the upstream adopts it at its first hello) and returns its
// credentials.
func (n *node) deviceCreds(dev uuid.UUID) *transport.Creds {
	n.t.Helper()
	c, err := transport.NewKeyCreds(transport.KindKey, dev)
	if err != nil {
		n.t.Fatal(err)
	}
	n.write(crdt.Point{Node: dev, Type: crdt.TypeAuthKey, Key: mustPub(n.t, c), Value: 1, Text: "device"})
	return c
}

// latest returns the winner of the points a and b by the LWW rule.
func latest(a, b crdt.Point) crdt.Point {
	if crdt.Compare(&a, &b) >= 0 {
		return a
	}
	return b
}

// adminID is the local administrator's identity.
var adminID = transport.Identity{Kind: transport.KindAdmin}

// adminSubject is the subject of request name sent by the administrator.
func adminSubject(name string) string { return transport.Subject(adminID, name) }
