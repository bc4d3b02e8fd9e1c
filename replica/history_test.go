package replica

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// registerHistory returns every sample of node's register typ.0 on n.
func (n *node) registerHistory(node uuid.UUID, typ string) []history.Sample {
	n.t.Helper()
	var out []history.Sample
	err := n.st.History(store.HistoryQuery{Reg: crdt.Register{Node: node, Type: typ, Key: "0"}}, nil, func(s *history.Sample) error {
		out = append(out, *s)
		return nil
	})
	if err != nil {
		n.t.Fatalf("%s: history: %v", n.name, err)
	}
	return out
}

// offlineReadings writes count readings of each sensor's "temp" into n's
// store, one a second per sensor ending about now, in batches, as an
// edge cut off from its upstream records them.
func offlineReadings(t *testing.T, n *node, sensors []uuid.UUID, count int) {
	t.Helper()
	start := time.Now().Add(-time.Duration(count+5) * time.Second).UnixMilli()
	var batch []crdt.Point
	for i := range count {
		for j, s := range sensors {
			v := math.Round((20+float64(j)+math.Sin(float64(i)/300))*100) / 100
			batch = append(batch, crdt.Point{Node: s, Type: "temp", Key: "0", Value: v,
				Time: crdt.NewTimestamp(start+int64(i)*1000+int64(j), 0), Origin: n.st.Instance()})
		}
		if len(batch) >= 5000 || i == count-1 {
			if _, err := n.st.Apply(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// sameHistory reports whether a and b hold the same samples of every
// sensor, and says how far apart they are.
func sameHistory(a, b *node, sensors []uuid.UUID) (bool, string) {
	for _, s := range sensors {
		ha, hb := a.registerHistory(s, "temp"), b.registerHistory(s, "temp")
		if !slices.Equal(ha, hb) {
			return false, fmt.Sprintf("sensor %v: %s has %d samples, %s %d", s, a.name, len(ha), b.name, len(hb))
		}
	}
	return true, ""
}

func historyTest(t *testing.T, kill bool) {
	cloud := startNode(t, "cloud", nodeOpts{})
	px := proxyTo(t, cloud)
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{px.URL()}})
	sensors := make([]uuid.UUID, 10)
	for i := range sensors {
		sensors[i] = uuid.New()
		edge.write(edgePt(edge.root, sensors[i]), valPt(sensors[i], "temp", 0))
	}
	edge.waitInSync(px.URL())
	cloud.waitValue(sensors[9], "temp", 0)

	px.Cut()
	waitFor(t, "link down", 10e9, func() bool { return !edge.link(px.URL()).Connected })
	offlineReadings(t, edge, sensors, 10_000) // 100,000 readings
	total := len(edge.registerHistory(sensors[0], "temp"))
	if total != 10_001 {
		t.Fatalf("edge holds %d samples of a sensor, want 10,001", total)
	}
	if kill {
		// A slow link, so the upload is under way when the edge dies.
		px.SetRate(64 << 10)
	}
	px.Restore()
	if kill {
		waitFor(t, "upload under way", 30e9, func() bool {
			n := len(cloud.registerHistory(sensors[0], "temp"))
			return n > 10 && n < total
		})
		edge.kill()
		px.SetRate(0)
		edge.start()
	}
	waitExplained(t, 60*time.Second, func() bool {
		ok, _ := sameHistory(edge, cloud, sensors)
		return ok
	}, func() string {
		_, why := sameHistory(edge, cloud, sensors)
		return why
	})
	for _, s := range sensors {
		es, err := edge.st.HistoryNodeSums(s, 0, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := cloud.st.HistoryNodeSums(s, 0, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(es, cs) {
			t.Fatalf("sensor %v: window digests differ:\nedge  %v\ncloud %v", s, es, cs)
		}
	}
	// The registers hold the latest reading on both sides.
	for _, s := range sensors {
		h := edge.registerHistory(s, "temp")
		if got := cloud.get(s, uuid.Nil, "temp", "0"); got.Time != h[len(h)-1].Time {
			t.Fatalf("cloud's register %v holds %v, want the last reading %v", s, got.Time, h[len(h)-1].Time)
		}
	}
}

// TestHistoryOfflineDay: an edge cut off writes 100,000 readings across
// 10 registers; once it reconnects the cloud holds every one of them.
func TestHistoryOfflineDay(t *testing.T) { historyTest(t, false) }

// TestHistoryOfflineDayKilled: the same, with the edge killed while it
// uploads.
func TestHistoryOfflineDayKilled(t *testing.T) { historyTest(t, true) }

// TestHistoryPeers: two peered clouds, each with readings the other
// lacks, end with the same history, both ways. Messages hold at most 4
// node sums here, so windows of 12 nodes are compared in node ranges.
func TestHistoryPeers(t *testing.T) {
	tune := func(c *Config) { c.histMaxNodes = 4 }
	a := startNode(t, "a", nodeOpts{tune: tune})
	px := proxyTo(t, a)
	b := startNode(t, "b", nodeOpts{root: a.root, peers: []string{px.URL()}, tune: tune})
	sensors := make([]uuid.UUID, 12)
	for i := range sensors {
		sensors[i] = uuid.New()
		a.write(edgePt(a.root, sensors[i]))
	}
	b.waitInSync(px.URL())
	px.Cut()
	waitFor(t, "link down", 10e9, func() bool { return !b.link(px.URL()).Connected })
	offlineReadings(t, a, sensors, 3000)
	offlineReadings(t, b, sensors[6:], 2000)
	px.Restore()
	waitExplained(t, 60*time.Second, func() bool {
		ok, _ := sameHistory(a, b, sensors)
		return ok
	}, func() string {
		_, why := sameHistory(a, b, sensors)
		return why
	})
	if n := len(a.registerHistory(sensors[11], "temp")); n != 5000 {
		t.Fatalf("%d samples of sensor 11, want 5000", n)
	}
	wa, _ := a.st.HistoryWindows(0, math.MaxInt64)
	wb, _ := b.st.HistoryWindows(0, math.MaxInt64)
	if !slices.Equal(wa, wb) {
		t.Fatalf("window digests differ:\n%v\n%v", wa, wb)
	}
}

// TestHistoryRetentionWaitsForTheUpstream: an edge keeps history past its
// retention until its upstream has acknowledged it, then drops it; the
// cloud keeps it, and the rounds after do not send it again. Over its
// budget, the edge drops its oldest windows, unacknowledged too, and
// counts them.
func TestHistoryRetentionWaitsForTheUpstream(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	px := proxyTo(t, cloud)
	// The test runs the upkeep itself, so its figures are the pass's.
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{px.URL()}, tune: func(c *Config) { c.noHistoryUpkeep = true }})
	s := uuid.New()
	edge.write(edgePt(edge.root, s), crdt.Point{Node: edge.root, Type: crdt.TypeHistoryKeep, Key: "*", Value: 1})
	edge.waitInSync(px.URL())
	px.Cut()
	waitFor(t, "link down", 10e9, func() bool { return !edge.link(px.URL()).Connected })
	// Two days ago, then now.
	old := time.Now().Add(-48 * time.Hour).UnixMilli()
	var pts []crdt.Point
	for i := range 1000 {
		pts = append(pts, crdt.Point{Node: s, Type: "temp", Key: "0", Value: float64(i), Time: crdt.NewTimestamp(old+int64(i)*1000, 0), Origin: edge.st.Instance()})
	}
	if _, err := edge.st.Apply(pts); err != nil {
		t.Fatal(err)
	}
	edge.write(valPt(s, "temp", -1))
	ctx := context.Background()
	u, err := edge.rep.upkeepHistory(ctx, time.Now())
	if err != nil || u.Trimmed.Samples != 0 {
		t.Fatalf("upkeep before the upstream acknowledged: %+v %v; want nothing dropped", u, err)
	}
	px.Restore()
	waitFor(t, "upload", 30e9, func() bool { return len(cloud.registerHistory(s, "temp")) == 1001 })
	waitFor(t, "acknowledged", 30e9, func() bool {
		return edge.rep.dialers[0].histAck.before(edge.st) > history.WindowOf(crdt.NewTimestamp(old+1_000_000, 0))
	})
	if u, err = edge.rep.upkeepHistory(ctx, time.Now()); err != nil || u.Trimmed.Samples != 1000 {
		t.Fatalf("upkeep after the upstream acknowledged: %+v %v; want the 1,000 old samples dropped", u, err)
	}
	if n := len(edge.registerHistory(s, "temp")); n != 1 {
		t.Fatalf("the edge holds %d samples, want the 1 of the last day", n)
	}
	if m := edge.rep.Metrics(); m.HistoryDropped[0].Value != 1000 || m.HistoryDropped[1].Value != 0 {
		t.Fatalf("dropped %v, want 1,000 kept (acknowledged) and none unacknowledged", m.HistoryDropped)
	}
	// The next full round compares nothing before the trim: the cloud
	// keeps its copy and the edge fetches nothing back.
	edge.restart()
	edge.waitInSync(px.URL())
	time.Sleep(500 * time.Millisecond)
	if n := len(edge.registerHistory(s, "temp")); n != 1 {
		t.Fatalf("after a new session's full round the edge holds %d samples, want 1", n)
	}
	if n := len(cloud.registerHistory(s, "temp")); n != 1001 {
		t.Fatalf("the cloud holds %d samples, want 1001", n)
	}

	// The budget: cut off again, a smaller budget than the history.
	px.Cut()
	waitFor(t, "link down", 10e9, func() bool { return !edge.link(px.URL()).Connected })
	pts = pts[:0]
	recent := time.Now().Add(-3 * time.Hour).UnixMilli()
	for i := range 3 * 3600 {
		pts = append(pts, crdt.Point{Node: s, Type: "temp", Key: "0", Value: float64(i%100) / 10, Time: crdt.NewTimestamp(recent+int64(i)*1000, 0), Origin: edge.st.Instance()})
	}
	if _, err := edge.st.Apply(pts); err != nil {
		t.Fatal(err)
	}
	edge.write(crdt.Point{Node: edge.root, Type: crdt.TypeHistoryMaxBytes, Key: "0", Value: 4000})
	before := edge.rep.Metrics()
	u, err = edge.rep.upkeepHistory(ctx, time.Now())
	if err != nil || u.Budget.Samples == 0 || u.Unacked == 0 {
		t.Fatalf("upkeep over the budget: %+v %v; want unacknowledged samples dropped", u, err)
	}
	st, _ := edge.st.HistoryStats(history.WindowOf(crdt.NewTimestamp(time.Now().UnixMilli(), 0)))
	if st.BytesBefore > 4000 {
		t.Fatalf("history %+v: its closed windows still over the budget", st)
	}
	after := edge.rep.Metrics()
	if after.HistoryDropped[1].Value-before.HistoryDropped[1].Value != u.Unacked {
		t.Fatalf("metrics count %d unacknowledged, the upkeep %d", after.HistoryDropped[1].Value-before.HistoryDropped[1].Value, u.Unacked)
	}
	if _, ok, _ := edge.st.Get(crdt.Register{Node: s, Type: "temp", Key: "0"}); !ok {
		t.Fatal("the register was dropped")
	}
}

// TestHistoryRepairFindsALostBatch: with edge and cloud in sync, a
// window of history is lost on one side, then on the other; the next
// full round finds it by its digests and brings it back, by a push
// (lost on the cloud) or a fetch (lost on the edge).
func TestHistoryRepairFindsALostBatch(t *testing.T) {
	tune := func(c *Config) { c.HistoryFullInterval, c.RepairInterval = 300*time.Millisecond, 200*time.Millisecond }
	cloud := startNode(t, "cloud", nodeOpts{tune: tune})
	px := proxyTo(t, cloud)
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{px.URL()}, tune: tune})
	sensors := []uuid.UUID{uuid.New(), uuid.New()}
	for _, s := range sensors {
		edge.write(edgePt(edge.root, s))
	}
	edge.waitInSync(px.URL())
	px.Cut()
	waitFor(t, "link down", 10e9, func() bool { return !edge.link(px.URL()).Connected })
	offlineReadings(t, edge, sensors, 3*3600) // three hours: four windows
	px.Restore()
	waitExplained(t, 30*time.Second, func() bool { ok, _ := sameHistory(edge, cloud, sensors); return ok },
		func() string { _, why := sameHistory(edge, cloud, sensors); return why })
	first := edge.registerHistory(sensors[0], "temp")[0].Time
	w := history.WindowOf(first)
	for _, lose := range []*node{cloud, edge} {
		dropped, err := lose.st.TrimHistory(context.Background(), func(typ string) int64 { return w + 1 }, w+1)
		if err != nil || dropped.Samples == 0 {
			t.Fatalf("%s: drop a window: %+v %v", lose.name, dropped, err)
		}
		if ok, _ := sameHistory(edge, cloud, sensors); ok {
			t.Fatalf("%s: nothing lost", lose.name)
		}
		waitExplained(t, 30*time.Second, func() bool { ok, _ := sameHistory(edge, cloud, sensors); return ok },
			func() string {
				_, why := sameHistory(edge, cloud, sensors)
				return lose.name + " lost a window: " + why
			})
	}
}

// TestHostileHistoryRounds: an edge's session sends crafted history
// requests. Samples of a node outside its subtree, samples from the far
// future and credential histories are refused; its own are merged; a
// fetch outside its subtree, a span too long and a block that does not
// decode get errors and change nothing.
func TestHostileHistoryRounds(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	y := uuid.New()
	cloud.write(edgePt(cloud.root, y), valPt(y, "temp", 1))
	nc, subj, inst, root := helloAsEdge(t, cloud)
	ask := func(req transport.HistRequest) (*transport.HistReply, error) {
		t.Helper()
		b, err := transport.Encode(req)
		if err != nil {
			t.Fatal(err)
		}
		m, err := nc.Request(subj.Repair, b, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r transport.HistReply
		return &r, transport.Decode(m.Data, 0, &r)
	}
	now := time.Now().UnixMilli()
	block := func(node uuid.UUID, typ string, ms int64) transport.HistReg {
		bl, err := history.Encode([]history.Sample{{Time: crdt.NewTimestamp(ms, 0), Origin: inst, Value: 7}})
		if err != nil {
			t.Fatal(err)
		}
		return transport.HistReg{Node: node, Type: typ, Key: "0", Block: bl}
	}
	r, err := ask(transport.HistRequest{Kind: transport.HistPush, Regs: []transport.HistReg{
		block(y, "temp", now-1000),                                 // outside: refused
		block(root, "temp", now-2000),                              // its own: merged
		block(root, "temp", now+int64(time.Hour/time.Millisecond)), // the far future: refused
		block(root, crdt.TypePassword, now-3000),                   // a credential: refused
	}})
	if err != nil || r.Added != 1 {
		t.Fatalf("push: %+v %v; want 1 sample added", r, err)
	}
	if n := len(cloud.registerHistory(y, "temp")); n != 1 {
		t.Fatalf("the node outside has %d samples, want its own 1", n)
	}
	if n := len(cloud.registerHistory(root, "temp")); n != 1 {
		t.Fatalf("the edge's root has %d samples, want 1", n)
	}
	if _, err := ask(transport.HistRequest{Kind: transport.HistFetch, Fetch: []transport.HistSum{{Node: y, Window: history.WindowOf(crdt.NewTimestamp(now, 0))}}}); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("fetch outside the subtree: %v, want refused", err)
	}
	if _, err := ask(transport.HistRequest{Kind: transport.HistWindows, From: 0, To: 1 << 40}); err == nil {
		t.Fatal("a span of 2^40 windows was answered")
	}
	bad := block(root, "temp", now-4000)
	bad.Block = bad.Block[:len(bad.Block)-1]
	if _, err := ask(transport.HistRequest{Kind: transport.HistPush, Regs: []transport.HistReg{block(root, "temp", now-5000), bad}}); err == nil {
		t.Fatal("a truncated block was accepted")
	}
	if n := len(cloud.registerHistory(root, "temp")); n != 1 {
		t.Fatalf("after the refused push the root has %d samples, want 1", n)
	}
	if _, err := ask(transport.HistRequest{Kind: 99}); err == nil {
		t.Fatal("an unknown kind was answered")
	}
	// The session still works after the refusals, and its sums are of
	// its subtree alone.
	if r, err := ask(transport.HistRequest{Kind: transport.HistNodes, Window: history.WindowOf(crdt.NewTimestamp(now, 0))}); err != nil || len(r.Sums) != 1 || r.Sums[0].Node != root {
		t.Fatalf("nodes: %+v %v; want the root's sum only", r, err)
	}
}

// TestHistoryEdgeFetchesOnlyWhatItKeeps: the cloud holds a sensor's
// history of weeks ago (an hour apart, in a hundred windows) and of the
// last hour; the edge (keeping 7 days by default) fetches the last hour
// and not the weeks it would drop, and its later full rounds do not
// visit those weeks window by window.
func TestHistoryEdgeFetchesOnlyWhatItKeeps(t *testing.T) {
	tune := func(c *Config) { c.HistoryFullInterval, c.RepairInterval = 200*time.Millisecond, 200*time.Millisecond }
	cloud := startNode(t, "cloud", nodeOpts{tune: tune})
	px := proxyTo(t, cloud)
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{px.URL()}, tune: tune})
	s := uuid.New()
	edge.write(edgePt(edge.root, s))
	edge.waitInSync(px.URL())
	px.Cut()
	waitFor(t, "link down", 10e9, func() bool { return !edge.link(px.URL()).Connected })
	var pts []crdt.Point
	weeks, hour := time.Now().Add(-20*24*time.Hour).UnixMilli(), time.Now().Add(-time.Hour).UnixMilli()
	for i := range 100 {
		pts = append(pts,
			crdt.Point{Node: s, Type: "temp", Key: "0", Value: float64(i), Time: crdt.NewTimestamp(weeks+int64(i)*3_600_000, 0), Origin: cloud.st.Instance()},
			crdt.Point{Node: s, Type: "temp", Key: "0", Value: float64(i), Time: crdt.NewTimestamp(hour+int64(i)*1000, 0), Origin: cloud.st.Instance()})
	}
	if _, err := cloud.st.Apply(pts); err != nil {
		t.Fatal(err)
	}
	px.Restore()
	waitFor(t, "the last hour on the edge", 30e9, func() bool { return len(edge.registerHistory(s, "temp")) >= 100 })
	edge.waitInSync(px.URL())
	l0 := edge.link(px.URL())
	time.Sleep(3 * time.Second) // full rounds every 200 ms, each after a repair pass
	l1 := edge.link(px.URL())
	sent := l1.BytesSent + l1.BytesRecv - l0.BytesSent - l0.BytesRecv
	h := edge.registerHistory(s, "temp")
	if len(h) != 100 || h[0].Time.Physical() < time.Now().Add(-2*time.Hour).UnixMilli() {
		t.Fatalf("the edge holds %d samples from %v; want the 100 of the last hour", len(h), h[0].Time.Time())
	}
	if n := len(cloud.registerHistory(s, "temp")); n != 200 {
		t.Fatalf("the cloud holds %d samples, want 200", n)
	}
	// Rounds that visit the hundred old windows exchange about 35 kB in
	// those 3 s; rounds that skip them, under 2 kB with the repair rounds.
	t.Logf("sent %d", sent)
	if sent > 10_000 {
		t.Fatalf("the link carried %d bytes in 3 s of idle full rounds: the edge visits the weeks it does not keep", sent)
	}
}

// TestHistoryUnpushedValuesSyncSoon: with the link up, one import writes
// fifty readings of a register over the last 20 hours and ten in the
// last minute (the current window): a push carries only the register's
// last value, and a history round the rest, within seconds, not when the
// hour closes.
func TestHistoryUnpushedValuesSyncSoon(t *testing.T) {
	tune := func(c *Config) { c.RepairInterval, c.RepairMaxInterval = time.Second, 2*time.Second }
	cloud := startNode(t, "cloud", nodeOpts{tune: tune})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}, tune: tune})
	s := uuid.New()
	edge.write(edgePt(edge.root, s), valPt(s, "temp", 1))
	edge.waitInSync(cloud.url())
	now := time.Now().UnixMilli()
	var pts []crdt.Point
	for i := range 50 {
		pts = append(pts, crdt.Point{Node: s, Type: "level", Key: "0", Value: float64(i), Time: crdt.NewTimestamp(now-20*3_600_000+int64(i)*24*60_000, 0)})
	}
	for i := range 10 {
		pts = append(pts, crdt.Point{Node: s, Type: "level", Key: "0", Value: float64(100 + i), Time: crdt.NewTimestamp(now-60_000+int64(i)*5_000, 0)})
	}
	if _, err := edge.rep.importPoints(transport.Identity{Kind: transport.KindAdmin}, pts, false); err != nil {
		t.Fatal(err)
	}
	waitExplained(t, 15*time.Second, func() bool { return len(cloud.registerHistory(s, "level")) == 60 },
		func() string { return fmt.Sprintf("the cloud holds %d of 60", len(cloud.registerHistory(s, "level"))) })
}
