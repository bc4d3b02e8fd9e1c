package replica

import (
	"fmt"
	"strings"
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
	wantTransitions(t, n, 1, 1)
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
	settleRules(t, cloud, edge)
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
	waitFor(t, "the cloud sees the link end", 15*time.Second, func() bool { return !cloud.rep.rules.linkedForTest(dev) })
	downAt := ft.now()
	ft.advanceAll(90*time.Second, cloud)
	settleRules(t, cloud)
	if cloud.get(dev, uuid.Nil, rules.TypeLinkedVia, "0").Tombstone {
		t.Fatal("the link's end written before its grace: a quick return would cost two writes")
	}
	ft.advanceAll(time.Minute, cloud)
	waitFor(t, "the link's end recorded after its grace", 5*time.Second, func() bool {
		return cloud.get(dev, uuid.Nil, rules.TypeLinkedVia, "0").Tombstone
	})
	ft.advanceAll(12*time.Minute, cloud) // 14.5 min after the end
	settleRules(t, cloud)
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
	wantTransitions(t, cloud, 1, 1)
}

// TestRuleScope: a rule reads and writes only its scope (its parent and
// below). A sensor in another site does not fire it; a condition or an
// action naming a node outside makes the rule report an error and judge
// nothing.
func TestRuleScope(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	siteA, siteB := addNode(n, n.root, "site"), addNode(n, n.root, "site")
	inA, inB := addNode(n, siteA, "sensor"), addNode(n, siteB, "sensor")
	rule := addRule(n, siteA, []string{"temp > 30"}, []string{"set alarm 1"}, nil, crdt.Point{Type: rules.TypePacing, Value: 0})
	n.write(valPt(inB, "temp", 50))
	n.write(valPt(inA, "temp", 50))
	waitFor(t, "the rule fires for its own sensor", 5*time.Second, func() bool { return ruleState(n, rule, inA) == 1 })
	if got := ruleState(n, rule, inB); got != -1 {
		t.Fatalf("the rule judged a sensor of another site: state %v", got)
	}
	if got := pointValue(n, inB, "alarm"); got != -1 {
		t.Fatalf("alarm written outside the scope: %v", got)
	}

	// A condition on a node outside, and an action writing outside.
	peek := addRule(n, siteA, []string{"on " + inB.String() + " temp > 30"}, []string{"set alarm 2"}, nil)
	poke := addRule(n, siteA, []string{"temp > 30"}, []string{"set " + inB.String() + " alarm 3"}, nil)
	waitFor(t, "the rules report their errors", 5*time.Second, func() bool {
		return n.get(peek, uuid.Nil, rules.TypeError, "condition.1").Text != "" && n.get(poke, uuid.Nil, rules.TypeError, "action.1").Text != ""
	})
	if txt := n.get(peek, uuid.Nil, rules.TypeError, "condition.1").Text; !strings.Contains(txt, "outside the rule's scope") {
		t.Fatalf("error %q", txt)
	}
	n.write(valPt(inA, "temp", 60), valPt(inB, "temp", 60))
	settleRules(t, n)
	if got := pointValue(n, inB, "alarm"); got != -1 {
		t.Fatalf("alarm written outside the scope: %v", got)
	}
	if ruleState(n, peek, peek) != -1 || ruleState(n, poke, inA) != -1 {
		t.Fatal("a rule with a scope error was judged")
	}
	// Moved into the scope, the node is fair game: the error clears.
	n.write(edgePt(siteA, inB))
	waitFor(t, "the error clears once the node is in scope", 5*time.Second, func() bool {
		return n.get(peek, uuid.Nil, rules.TypeError, "condition.1").Tombstone
	})
	// A node that leaves the scope leaves its instance inactive.
	gone := edgePt(siteA, inA)
	gone.Tombstone = true
	n.write(gone, edgePt(siteB, inA))
	waitFor(t, "the instance of a node moved away clears", 5*time.Second, func() bool { return ruleState(n, rule, inA) == 0 })
}

// TestRuleRunsOnEdgeOffline: a rule under an edge runs on the edge, while
// its upstream is down; the cloud, which holds the rule too, does not
// run it.
func TestRuleRunsOnEdgeOffline(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	dev := uuid.New()
	creds := cloud.deviceCreds(dev)
	cloud.write(edgePt(cloud.root, dev), textPt(dev, crdt.TypeNodeType, "", "device"))
	edge := startNode(t, "edge", nodeOpts{root: dev, upstreams: []string{cloud.url()}, upstreamCreds: creds})
	sensor := addNode(edge, dev, "sensor")
	rule := addRule(edge, dev, []string{"temp > 30"}, []string{"set fan 1"}, []string{"set fan 0"}, crdt.Point{Type: rules.TypePacing, Value: 0})
	waitFor(t, "the rule on the cloud", 10*time.Second, func() bool { return cloud.rep.rules.ruleKnown(rule) })

	cloud.kill()
	edge.write(valPt(sensor, "temp", 45))
	waitFor(t, "the edge's rule fires with its upstream down", 5*time.Second, func() bool { return ruleState(edge, rule, sensor) == 1 })
	edge.waitValue(sensor, "fan", 1)
	cloud.start()
	waitFor(t, "the firing reaches the cloud", 15*time.Second, func() bool { return ruleState(cloud, rule, sensor) == 1 })
	if a := cloud.rep.metrics.ruleActive.Load(); a != 0 {
		t.Fatalf("the cloud ran the edge's rule: %d transitions", a)
	}
	wantTransitions(t, edge, 1, 0)
}

// TestRuleConditionsOverTime: conditions whose truth changes with time
// alone fire when their time comes, with the engine's timers: a minimum
// active time, a value unchanged for 10 minutes, a schedule; and a rule
// with a broken condition says why and judges nothing.
func TestRuleConditionsOverTime(t *testing.T) {
	ft := newFakeTime()
	day := ft.now().UTC().Truncate(24 * time.Hour)
	ft.advance(day.Add(24*time.Hour + 7*time.Hour + 59*time.Minute).Sub(ft.now())) // tomorrow 07:59 UTC
	n := startNode(t, "cloud", nodeOpts{physical: ft.now})
	site := addNode(n, n.root, "site")
	sensor := addNode(n, site, "sensor")
	slow := addRule(n, site, []string{"temp > 30"}, []string{"set hot 1"}, nil, crdt.Point{Type: rules.TypeMinActive, Value: 60})
	stale := addRule(n, site, []string{"on sensor level unchanged 10m"}, []string{"set stuck 1"}, []string{"set stuck 0"}, crdt.Point{Type: rules.TypePacing, Value: 0})
	morning := addRule(n, site, []string{"schedule daily 08:00-09:00 UTC"}, []string{"set heating 1"}, []string{"set heating 0"})
	broken := addRule(n, site, []string{"temp >> 30"}, []string{"set broken 1"}, nil)

	n.write(valPt(sensor, "temp", 31), valPt(sensor, "level", 5))
	waitFor(t, "the engine reads the writes", 5*time.Second, func() bool { return n.rep.rules.seen() >= n.st.LastSeq() })
	ft.advanceAll(30*time.Second, n)
	settleRules(t, n)
	if ruleState(n, slow, sensor) != -1 {
		t.Fatal("fired before its minimum active time")
	}
	ft.advanceAll(31*time.Second, n) // 08:00:01
	waitFor(t, "fires after its minimum active time", 5*time.Second, func() bool { return ruleState(n, slow, sensor) == 1 })
	waitFor(t, "the schedule starts", 5*time.Second, func() bool { return ruleState(n, morning, morning) == 1 })
	n.waitValue(morning, "heating", 1)
	if ruleState(n, stale, sensor) != -1 {
		t.Fatal("stale after a minute")
	}
	ft.advanceAll(10*time.Minute, n)
	waitFor(t, "the level unchanged for 10 minutes", 5*time.Second, func() bool { return ruleState(n, stale, sensor) == 1 })
	n.write(valPt(sensor, "level", 5)) // the same value again: still unchanged
	settleRules(t, n)
	if ruleState(n, stale, sensor) != 1 {
		t.Fatal("the same value cleared unchanged")
	}
	n.write(valPt(sensor, "level", 6))
	waitFor(t, "a new value clears it", 5*time.Second, func() bool { return ruleState(n, stale, sensor) == 0 })
	ft.advanceAll(time.Hour, n) // 09:11
	waitFor(t, "the schedule ends", 5*time.Second, func() bool { return ruleState(n, morning, morning) == 0 })
	n.waitValue(morning, "heating", 0)

	waitFor(t, "the broken rule says why", 5*time.Second, func() bool {
		return strings.Contains(n.get(broken, uuid.Nil, rules.TypeError, "condition.1").Text, ">>")
	})
	if pointValue(n, sensor, "broken") != -1 {
		t.Fatal("a rule with a broken condition acted")
	}
}

// changesBesidesDeviceState counts the registers n changed after change
// after, leaving out the device state it keeps on its own (an edge
// session that came up or ended writes some).
func changesBesidesDeviceState(n *node, after uint64) int {
	count := 0
	_ = n.st.Feed(after, func(c *store.Change) error {
		if !isDeviceType(c.Point.Type) {
			count++
		}
		return nil
	})
	return count
}

// wantTransitions waits until n counted active and cleared transitions of
// its rules (the count follows the write that commits them), and checks
// that no more follow.
func wantTransitions(t *testing.T, n *node, active, cleared uint64) {
	t.Helper()
	counts := func() (uint64, uint64) { return n.rep.metrics.ruleActive.Load(), n.rep.metrics.ruleCleared.Load() }
	waitExplained(t, 5*time.Second, func() bool {
		a, c := counts()
		return a >= active && c >= cleared
	}, func() string {
		a, c := counts()
		return fmt.Sprintf("transitions: %d active, %d cleared; want %d and %d", a, c, active, cleared)
	})
	settleRules(t, n)
	if a, c := counts(); a != active || c != cleared {
		t.Fatalf("transitions: %d active, %d cleared; want %d and %d", a, c, active, cleared)
	}
}

// settleRules waits until each node's rule engine has read every change
// written so far, made a whole pass that began after this call (so it
// judged its timers at the clock's time now), and has no notification
// being sent: what it decides on what it holds now is done.
func settleRules(t *testing.T, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		e := n.rep.rules
		p := e.passes.Load()
		for step := uint64(1); step <= 2; step++ {
			e.wake()
			waitFor(t, n.name+"'s rule engine settles", 10*time.Second, func() bool {
				return e.passes.Load() >= p+step && e.seen() >= n.st.LastSeq() && e.inflight.Load() == 0
			})
		}
	}
}
