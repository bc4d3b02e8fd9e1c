package replica

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

func TestEdgeCloudTwoWay(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}})
	edge.waitInSync(cloud.url())

	// The cloud adopted the edge's root under its own.
	waitFor(t, "adoption", 5e9, func() bool {
		p := cloud.get(edge.root, cloud.root, crdt.TypeEdge, "0")
		return p.Time != 0 && !p.Tombstone
	})

	// Edge → cloud.
	sensor := uuid.New()
	edge.write(edgePt(edge.root, sensor), valPt(sensor, "temp", 21.5))
	cloud.waitValue(sensor, "temp", 21.5)

	// Cloud → edge, inside the edge's subtree.
	cloud.write(valPt(sensor, "setpoint", 19))
	edge.waitValue(sensor, "setpoint", 19)

	// Outside the edge's subtree: never sent to it.
	other := uuid.New()
	cloud.write(edgePt(cloud.root, other), valPt(other, "temp", 1))
	cloud.write(valPt(sensor, "marker", 1))
	edge.waitValue(sensor, "marker", 1)
	if p := edge.get(other, uuid.Nil, "temp", "0"); p.Time != 0 {
		t.Fatalf("edge received a point outside its scope: %+v", p)
	}
	edge.waitInSync(cloud.url())
	if a, b := edge.dump(edge.root), cloud.dump(edge.root); !equalDumps(a, b) {
		t.Fatalf("subtree differs:\nedge  %v\ncloud %v", a, b)
	}
}

func TestOfflineEditsConvergeBothWays(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	px := proxyTo(t, cloud)
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{px.URL()}})
	a, b, c, d, e := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	edge.write(edgePt(edge.root, a), edgePt(edge.root, d), edgePt(a, e),
		valPt(a, "temp", 0), valPt(b, "x", 0), edgePt(edge.root, b))
	edge.waitInSync(px.URL())
	cloud.waitValue(b, "x", 0)

	px.Cut()
	waitFor(t, "link down", 10e9, func() bool { return !edge.link(px.URL()).Connected })

	// Conflicting writes on both sides while cut off.
	edge.write(valPt(a, "temp", 1))
	cloud.write(valPt(a, "temp", 2))
	cloud.write(valPt(b, "x", 6))
	edge.write(valPt(b, "x", 5))
	// Structure: the edge creates c and moves e under it; the cloud
	// deletes d.
	edge.write(edgePt(edge.root, c), valPt(c, "name", 3))
	mv := []crdt.Point{edgePt(c, e), edgePt(a, e)}
	mv[1].Tombstone, mv[1].Value = true, crdt.EdgeMoved
	edge.write(mv...)
	del := edgePt(edge.root, d)
	del.Tombstone = true
	cloud.write(del)
	// Many offline changes on the edge, so resume has work to do.
	var many []crdt.Point
	for i := range 3000 {
		many = append(many, crdt.Point{Node: a, Type: "series", Key: uuid.NewString()[:8] + string(rune('a'+i%26)), Value: float64(i)})
	}
	edge.write(many...)

	wantA := latest(edge.get(a, uuid.Nil, "temp", "0"), cloud.get(a, uuid.Nil, "temp", "0"))
	wantB := latest(edge.get(b, uuid.Nil, "x", "0"), cloud.get(b, uuid.Nil, "x", "0"))

	px.Restore()
	edge.waitInSync(px.URL())
	waitFor(t, "convergence", 15e9, func() bool {
		return equalDumps(edge.dump(edge.root), cloud.dump(edge.root))
	})
	for _, n := range []*node{edge, cloud} {
		if got := n.get(a, uuid.Nil, "temp", "0"); got != wantA {
			t.Errorf("%s: a.temp = %v, want the later write %v", n.name, got, wantA)
		}
		if got := n.get(b, uuid.Nil, "x", "0"); got != wantB {
			t.Errorf("%s: b.x = %v, want the later write %v", n.name, got, wantB)
		}
		if p := n.get(d, edge.root, crdt.TypeEdge, "0"); !p.Tombstone {
			t.Errorf("%s: d not deleted", n.name)
		}
		if p := n.get(e, c, crdt.TypeEdge, "0"); p.Time == 0 || p.Tombstone {
			t.Errorf("%s: e not under c", n.name)
		}
	}
}

func TestDetachAndUndelete(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}})
	edge.waitInSync(cloud.url())
	adopt := cloud.get(edge.root, cloud.root, crdt.TypeEdge, "0")
	if adopt.Time == 0 {
		t.Fatal("edge not adopted")
	}
	del := edgePt(cloud.root, edge.root)
	del.Tombstone = true
	cloud.write(del)
	waitFor(t, "detached", 10e9, func() bool {
		l := edge.link(cloud.url())
		return !l.Connected && strings.Contains(l.LastError, "detached")
	})
	// The device keeps running, and retries do not re-add it.
	s := uuid.New()
	edge.write(edgePt(edge.root, s), valPt(s, "temp", 7))
	refused := cloud.rep.Status().Refused
	waitFor(t, "three more refused retries", 10e9, func() bool {
		return cloud.rep.Status().Refused >= refused+3
	})
	if p := cloud.get(edge.root, cloud.root, crdt.TypeEdge, "0"); !p.Tombstone {
		t.Fatalf("detached edge re-added itself: %+v", p)
	}
	if p := cloud.get(s, uuid.Nil, "temp", "0"); p.Time != 0 {
		t.Fatalf("a detached edge's write reached the cloud: %+v", p)
	}
	// Undelete re-attaches: the offline write arrives.
	cloud.write(edgePt(cloud.root, edge.root))
	cloud.waitValue(s, "temp", 7)
	edge.waitInSync(cloud.url())
}

func TestThreeLevelChain(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	gw := startNode(t, "gateway", nodeOpts{upstreams: []string{cloud.url()}})
	dev := startNode(t, "device", nodeOpts{upstreams: []string{gw.url()}})
	dev.waitInSync(gw.url())
	gw.waitInSync(cloud.url())
	s := uuid.New()
	dev.write(edgePt(dev.root, s), valPt(s, "temp", 3))
	cloud.waitValue(s, "temp", 3)
	// The device's root sits under the gateway's, which sits under the
	// cloud's: the cloud's writes reach the device through the gateway.
	cloud.write(valPt(s, "setpoint", 4))
	dev.waitValue(s, "setpoint", 4)
	gw.waitValue(s, "setpoint", 4)
	waitFor(t, "chain converged", 10e9, func() bool {
		return equalDumps(dev.dump(dev.root), cloud.dump(dev.root)) && equalDumps(gw.dump(gw.root), cloud.dump(gw.root))
	})
}

func TestPeersConvergeAndRefuseOtherRoot(t *testing.T) {
	c1 := startNode(t, "cloud1", nodeOpts{})
	c2 := startNode(t, "cloud2", nodeOpts{root: c1.root, peers: []string{c1.url()}})
	// The device's key is a point in the tree: both clouds accept it.
	dev := uuid.New()
	devCreds := c1.deviceCreds(dev)
	c2.waitInSync(c1.url())
	edge := startNode(t, "edge", nodeOpts{root: dev, upstreams: []string{c1.url(), c2.url()}, upstreamCreds: devCreds})
	s := uuid.New()
	edge.write(edgePt(edge.root, s), valPt(s, "temp", 1))
	c1.waitValue(s, "temp", 1)
	c2.waitValue(s, "temp", 1)
	c1.write(valPt(s, "sp", 2))
	c2.waitValue(s, "sp", 2)
	edge.waitValue(s, "sp", 2)

	// One cloud goes away; writes continue through the other; it comes
	// back and catches up.
	c1.stop()
	edge.write(valPt(s, "temp", 5))
	c2.waitValue(s, "temp", 5)
	c2.write(valPt(s, "sp", 6))
	edge.waitValue(s, "sp", 6)
	c1.start()
	c1.waitValue(s, "temp", 5)
	c1.waitValue(s, "sp", 6)
	c2.waitInSync(c1.url())
	waitFor(t, "clouds converged", 10e9, func() bool {
		return equalDumps(c1.dump(uuid.Nil), c2.dump(uuid.Nil))
	})

	other := startNode(t, "other", nodeOpts{peers: []string{c1.url()}})
	waitFor(t, "root mismatch refused", 10e9, func() bool {
		return strings.Contains(other.link(c1.url()).LastError, "different roots")
	})
}

// TestSlowLinkAdaptsWithoutTimeouts pushes a few hundred kilobytes through
// a throttled, delayed link: pushes must shrink to the link so that acks
// keep coming within the ack timeout and the session never restarts.
func TestSlowLinkAdaptsWithoutTimeouts(t *testing.T) {
	// The timeouts are the production ones: the test tuning's (an ack or
	// a ping answer within 4 s, a session silent for 6 s) are shorter than
	// what a loaded machine stalls a 60 kB/s link for, and the claim is
	// that the production settings never time out on such a link.
	prod := func(c *Config) { c.AckTimeout, c.SessionTimeout = 30*time.Second, time.Hour }
	cloud := startNode(t, "cloud", nodeOpts{tune: prod})
	px := proxyTo(t, cloud)
	px.SetRate(60_000)
	px.SetLatency(100 * time.Millisecond)
	// The handshake crosses the slow link too (TLS-less here, but an
	// nkey signature and a few round trips of 100 ms): under a loaded
	// machine the test tuning's 3 s would time out the first attempt.
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{px.URL()}, tune: func(c *Config) { prod(c); c.HelloTimeout = 15 * time.Second }})
	edge.waitInSync(px.URL())
	s := uuid.New()
	edge.write(edgePt(edge.root, s))
	var pts []crdt.Point
	for i := range 12_000 {
		pts = append(pts, crdt.Point{Node: s, Type: "reading", Key: strconv.Itoa(i), Value: float64(i)})
	}
	edge.write(pts...)
	waitFor(t, "slow resume", 60*time.Second, func() bool {
		return cloud.get(s, uuid.Nil, "reading", "11999").Time != 0
	})
	edge.waitInSync(px.URL())
	if l := edge.link(px.URL()); l.LastError != "" {
		t.Fatalf("the session restarted on a slow link: %q", l.LastError)
	}
	if st := px.Stats(); st.Accepted != 1 {
		t.Fatalf("%d connections, want 1", st.Accepted)
	}
}

// TestDeadLinkBlocksNothing blackholes one of an edge's two upstreams:
// local writes and the other link go on, the dead link reports pending
// changes, and once restored it catches up from where it was.
func TestDeadLinkBlocksNothing(t *testing.T) {
	c1 := startNode(t, "cloud1", nodeOpts{})
	c2 := startNode(t, "cloud2", nodeOpts{})
	px := proxyTo(t, c1)
	// Two unrelated clouds: each holds the device's key.
	dev := uuid.New()
	creds := c1.deviceCreds(dev)
	// The same key point on both: a device passes on no live key.
	c2.write(c1.get(dev, uuid.Nil, crdt.TypeAuthKey, mustPub(t, creds)))
	edge := startNode(t, "edge", nodeOpts{root: dev, upstreams: []string{px.URL(), c2.url()}, upstreamCreds: creds})
	edge.waitInSync(px.URL())
	edge.waitInSync(c2.url())
	px.Blackhole()
	s := uuid.New()
	edge.write(edgePt(edge.root, s))
	for i := range 200 {
		edge.write(crdt.Point{Node: s, Type: "reading", Key: strconv.Itoa(i), Value: float64(i)})
	}
	c2.waitValue(s, "reading", 0)
	waitFor(t, "all on the live link", 10*time.Second, func() bool {
		return c2.get(s, uuid.Nil, "reading", "199").Time != 0
	})
	if l := edge.link(px.URL()); l.InSync || l.Pending == 0 {
		t.Fatalf("dead link reports %+v", l)
	}
	if p := c1.get(s, uuid.Nil, "reading", "199"); p.Time != 0 {
		t.Fatal("a blackholed link delivered")
	}
	px.Restore()
	waitFor(t, "dead link caught up", 20*time.Second, func() bool {
		return c1.get(s, uuid.Nil, "reading", "199").Time != 0
	})
}

// TestPreprovisionedDeviceFindsItsConfiguration: the cloud creates a
// device node (under a group, with configuration and a child) before the
// device ever connects; the device started with that root gets it all,
// and is not adopted a second time under the cloud's root.
func TestPreprovisionedDeviceFindsItsConfiguration(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	group, dev, sensor := uuid.New(), uuid.New(), uuid.New()
	cloud.write(edgePt(cloud.root, group), edgePt(group, dev), valPt(dev, "interval", 30),
		crdt.Point{Node: dev, Type: crdt.TypeNodeType, Key: "0", Text: "device"},
		edgePt(dev, sensor), valPt(sensor, "scale", 2))
	// Much unrelated data, so the device's share is found, not streamed.
	var other []crdt.Point
	for i := range 3000 {
		other = append(other, crdt.Point{Node: group, Type: "log", Key: strconv.Itoa(i), Value: float64(i)})
	}
	cloud.write(other...)
	edge := startNode(t, "device", nodeOpts{root: dev, upstreams: []string{cloud.url()}})
	edge.waitValue(dev, "interval", 30)
	edge.waitValue(sensor, "scale", 2)
	edge.waitInSync(cloud.url())
	if p := cloud.get(dev, cloud.root, crdt.TypeEdge, "0"); p.Time != 0 {
		t.Fatal("a pre-provisioned device was adopted again under the root")
	}
	if p := edge.get(group, uuid.Nil, "log", "0"); p.Time != 0 {
		t.Fatal("the device received its group's points")
	}
	if a, b := edge.dump(dev), cloud.dump(dev); !equalDumps(a, b) {
		t.Fatalf("device subtree differs:%s", dumpDiff(a, b))
	}
}

// TestLargeRepairReplyOnSlowLink: a repair reply that takes longer to
// cross a throttled link than the ack timeout does not end the session
// (its timeout allows for its size), and the keepalive does not either.
func TestLargeRepairReplyOnSlowLink(t *testing.T) {
	tune := func(c *Config) {
		testTuning(c)
		c.NoPush = true
		c.AckTimeout = time.Second
		c.RepairInterval = time.Hour
	}
	a := startNode(t, "a", nodeOpts{tune: tune})
	s := uuid.New()
	pts := []crdt.Point{edgePt(a.root, s)}
	for i := range 2000 {
		pts = append(pts, crdt.Point{Node: s, Type: "reading", Key: strconv.Itoa(i), Value: float64(i),
			Text: "a reading with some text to make it longer on the wire"})
	}
	a.write(pts...)
	px := proxyTo(t, a)
	px.SetRate(30_000) // the points alone take about 5 s
	b := startNode(t, "b", nodeOpts{root: a.root, peers: []string{px.URL()}, tune: tune})
	waitFor(t, "repair over the slow link", 60*time.Second, func() bool {
		return b.get(s, uuid.Nil, "reading", "1999").Time != 0
	})
	b.waitInSync(px.URL())
	if l := b.link(px.URL()); l.LastError != "" {
		t.Fatalf("the session restarted: %q", l.LastError)
	}
	if st := px.Stats(); st.Accepted != 1 {
		t.Fatalf("%d connections, want 1", st.Accepted)
	}
}
