package replica

import (
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/rules"
	"github.com/siot-io/siot/store"
)

// fakeTime is a physical clock a test moves.
type fakeTime struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeTime() *fakeTime { return &fakeTime{t: time.Now()} }

func (f *fakeTime) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeTime) advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// advanceAll moves the clock and wakes every node's rule engine.
func (f *fakeTime) advanceAll(d time.Duration, nodes ...*node) {
	f.advance(d)
	for _, n := range nodes {
		n.rep.rules.wake()
	}
}

func textPt(id uuid.UUID, typ, key, text string) crdt.Point {
	return crdt.Point{Node: id, Type: typ, Key: key, Text: text}
}

// addRule writes a rule node under parent.
func addRule(n *node, parent uuid.UUID, conds, actions, clears []string, extra ...crdt.Point) uuid.UUID {
	id := uuid.New()
	pts := []crdt.Point{edgePt(parent, id), textPt(id, crdt.TypeNodeType, "", rules.NodeTypeRule), textPt(id, "description", "", "test rule")}
	for i, c := range conds {
		pts = append(pts, textPt(id, rules.TypeCondition, string(rune('1'+i)), c))
	}
	for i, a := range actions {
		pts = append(pts, textPt(id, rules.TypeAction, string(rune('1'+i)), a))
	}
	for i, a := range clears {
		pts = append(pts, textPt(id, rules.TypeActionClear, string(rune('1'+i)), a))
	}
	for _, p := range extra {
		p.Node = id
		pts = append(pts, p)
	}
	n.write(pts...)
	return id
}

func addNode(n *node, parent uuid.UUID, typ string) uuid.UUID {
	id := uuid.New()
	n.write(edgePt(parent, id), textPt(id, crdt.TypeNodeType, "", typ))
	return id
}

// ruleState returns rule id's state point for subject s (-1: none).
func ruleState(n *node, id, s uuid.UUID) float64 {
	p := n.get(id, uuid.Nil, rules.TypeState, s.String())
	if p.Time == 0 || p.Tombstone {
		return -1
	}
	return p.Value
}

func TestRuleThresholdFiresOnceAndClears(t *testing.T) {
	ft := newFakeTime()
	n := startNode(t, "cloud", nodeOpts{physical: ft.now})
	sensor := addNode(n, n.root, "sensor")
	rule := addRule(n, n.root, []string{"temp > 30"}, []string{"set alarm 1"}, []string{"set alarm 0"})

	n.write(valPt(sensor, "temp", 25))
	n.write(valPt(sensor, "temp", 31))
	waitFor(t, "the rule fires", 5*time.Second, func() bool { return ruleState(n, rule, sensor) == 1 })
	n.waitValue(sensor, "alarm", 1)
	n.write(valPt(sensor, "temp", 35))
	n.write(valPt(sensor, "temp", 40))
	// Still active: no second firing.
	ft.advanceAll(2*time.Minute, n)
	n.write(valPt(sensor, "temp", 20))
	waitFor(t, "the rule clears", 5*time.Second, func() bool { return ruleState(n, rule, sensor) == 0 })
	n.waitValue(sensor, "alarm", 0)
	if a, c := n.rep.metrics.ruleActive.Load(), n.rep.metrics.ruleCleared.Load(); a != 1 || c != 1 {
		t.Fatalf("transitions: %d active, %d cleared; want 1 and 1", a, c)
	}
	// Another node out of range never made an instance.
	if got := ruleState(n, rule, n.root); got != -1 {
		t.Fatalf("root has state %v", got)
	}
}

func TestRulePacingUnderFlapping(t *testing.T) {
	ft := newFakeTime()
	n := startNode(t, "cloud", nodeOpts{physical: ft.now})
	sensor := addNode(n, n.root, "sensor")
	rule := addRule(n, n.root, []string{"temp > 30"}, []string{"set alarm 1"}, []string{"set alarm 0"},
		crdt.Point{Type: rules.TypePacing, Value: 60})
	// The point flaps every second for five minutes: 300 crossings.
	for i := range 300 {
		v := 20.0
		if i%2 == 0 {
			v = 40
		}
		n.write(valPt(sensor, "temp", v))
		ft.advanceAll(time.Second, n)
		if i%50 == 0 {
			// Let the engine see the flapping as it happens.
			waitFor(t, "the engine keeps up", 5*time.Second, func() bool { return n.rep.rules.seen() >= n.st.LastSeq() })
		}
	}
	waitFor(t, "the engine keeps up", 5*time.Second, func() bool { return n.rep.rules.seen() >= n.st.LastSeq() })
	a, c := n.rep.metrics.ruleActive.Load(), n.rep.metrics.ruleCleared.Load()
	// 300 s at one change per 60 s at most: at most 5 changes (+1 at the start).
	if a+c > 6 || a == 0 {
		t.Fatalf("flapping moved the rule %d times (%d active, %d cleared); want at most 6", a+c, a, c)
	}
	t.Logf("flapping for 300 s moved the rule %d times (%d active, %d cleared); state now %v", a+c, a, c, ruleState(n, rule, sensor))
}

// pointValue returns node id's point typ (key 0): its value, or -1 when
// it has none or it is deleted.
func pointValue(n *node, id uuid.UUID, typ string) float64 {
	p := n.get(id, uuid.Nil, typ, crdt.DefaultKey)
	if p.Time == 0 || p.Tombstone {
		return -1
	}
	return p.Value
}

func TestRuleDeviceOfflineAfter15Minutes(t *testing.T) {
	ft := newFakeTime()
	cloud := startNode(t, "cloud", nodeOpts{physical: ft.now})
	dev := uuid.New()
	creds := cloud.deviceCreds(dev)
	cloud.write(edgePt(cloud.root, dev), textPt(dev, crdt.TypeNodeType, "", "device"))
	rule := addRule(cloud, cloud.root, []string{"offline"}, []string{"set alarm 1"}, []string{"set alarm 0"})
	edgeOpts := nodeOpts{root: dev, upstreams: []string{cloud.url()}, upstreamCreds: creds, physical: ft.now}
	edge := startNode(t, "edge", edgeOpts)
	waitFor(t, "the device online on the cloud", 10*time.Second, func() bool {
		return pointValue(cloud, dev, rules.TypeOnline) == 1 && cloud.get(dev, uuid.Nil, rules.TypeLinkedVia, "0").Text == cloud.st.Instance().String()
	})
	waitFor(t, "the device's state on the edge", 10*time.Second, func() bool { return pointValue(edge, dev, rules.TypeOnline) == 1 })

	// Linked for an hour: nothing is written, it stays online.
	seq := cloud.st.LastSeq()
	ft.advanceAll(time.Hour, cloud, edge)
	time.Sleep(100 * time.Millisecond)
	if got := pointValue(cloud, dev, rules.TypeOnline); got != 1 {
		t.Fatalf("linked device's online = %v after an hour", got)
	}
	if cloud.st.LastSeq() != seq {
		_ = cloud.st.Feed(seq, func(c *store.Change) error {
			t.Logf("change %d: %v %s.%s = %v %q from %v", c.Seq, c.Point.Node, c.Point.Type, c.Point.Key, c.Point.Value, c.Point.Text, c.Source)
			return nil
		})
		t.Fatalf("an idle linked device cost %d writes", cloud.st.LastSeq()-seq)
	}

	edge.kill()
	waitFor(t, "the link's end recorded", 15*time.Second, func() bool {
		return cloud.get(dev, uuid.Nil, rules.TypeLinkedVia, "0").Tombstone
	})
	downAt := ft.now()
	ft.advanceAll(14*time.Minute, cloud)
	time.Sleep(200 * time.Millisecond)
	if got := pointValue(cloud, dev, rules.TypeOnline); got != 1 {
		t.Fatalf("online = %v 14 minutes after the link dropped; want 1", got)
	}
	if got := ruleState(cloud, rule, dev); got == 1 {
		t.Fatal("the offline rule fired before 15 minutes")
	}
	ft.advanceAll(61*time.Second, cloud)
	waitFor(t, "offline after 15 minutes", 5*time.Second, func() bool { return pointValue(cloud, dev, rules.TypeOnline) == 0 })
	waitFor(t, "the offline rule fires", 5*time.Second, func() bool { return ruleState(cloud, rule, dev) == 1 })
	if seen := cloud.get(dev, uuid.Nil, rules.TypeLastSeen, "0"); time.UnixMilli(int64(seen.Value)).After(downAt) {
		t.Fatalf("lastSeen %v after the link dropped at %v", time.UnixMilli(int64(seen.Value)), downAt)
	}
	cloud.waitValue(dev, "alarm", 1)

	// It comes back: online, and the rule clears (after its pacing).
	ft.advanceAll(time.Minute, cloud)
	edge.start()
	waitFor(t, "online again", 10*time.Second, func() bool { return pointValue(cloud, dev, rules.TypeOnline) == 1 })
	waitFor(t, "the offline rule clears", 5*time.Second, func() bool { return ruleState(cloud, rule, dev) == 0 })
	cloud.waitValue(dev, "alarm", 0)
	if a, c := cloud.rep.metrics.ruleActive.Load(), cloud.rep.metrics.ruleCleared.Load(); a != 1 || c != 1 {
		t.Fatalf("transitions: %d active, %d cleared; want 1 and 1", a, c)
	}
}
