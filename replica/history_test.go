package replica

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/store"
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
// lacks, end with the same history, both ways.
func TestHistoryPeers(t *testing.T) {
	a := startNode(t, "a", nodeOpts{})
	px := proxyTo(t, a)
	b := startNode(t, "b", nodeOpts{root: a.root, peers: []string{px.URL()}})
	sensors := []uuid.UUID{uuid.New(), uuid.New()}
	a.write(edgePt(a.root, sensors[0]), edgePt(a.root, sensors[1]))
	b.waitInSync(px.URL())
	px.Cut()
	waitFor(t, "link down", 10e9, func() bool { return !b.link(px.URL()).Connected })
	offlineReadings(t, a, sensors[:1], 3000)
	offlineReadings(t, b, sensors, 2000)
	px.Restore()
	waitExplained(t, 60*time.Second, func() bool {
		ok, _ := sameHistory(a, b, sensors)
		return ok
	}, func() string {
		_, why := sameHistory(a, b, sensors)
		return why
	})
	if n := len(a.registerHistory(sensors[0], "temp")); n != 5000 {
		t.Fatalf("%d samples of sensor 0, want 5000", n)
	}
	wa, _ := a.st.HistoryWindows(0, math.MaxInt64)
	wb, _ := b.st.HistoryWindows(0, math.MaxInt64)
	if !slices.Equal(wa, wb) {
		t.Fatalf("window digests differ:\n%v\n%v", wa, wb)
	}
}
