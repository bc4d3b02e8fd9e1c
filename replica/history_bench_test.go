package replica

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// dayOffline writes a day of readings of each sensor straight into n's
// store, as an edge cut off from its upstream records them: one a second
// per sensor, the day ending about now, sensor j j ms after the second
// with up to ±3 ms of jitter, its value a random walk (σ 0.02 a
// reading) rounded to hundredths from 18 + j/10, in batches of 5,000
// points (500 seconds). It returns the readings written.
func dayOffline(tb testing.TB, n *node, sensors []uuid.UUID, rng *rand.Rand) int {
	tb.Helper()
	const seconds = 86_400
	start := time.Now().Add(-(seconds + 5) * time.Second).UnixMilli()
	vals := make([]float64, len(sensors))
	for j := range vals {
		vals[j] = 18 + float64(j)/10
	}
	batch := make([]crdt.Point, 0, 5000)
	for i := range seconds {
		for j, s := range sensors {
			vals[j] = math.Round((vals[j]+rng.NormFloat64()*0.02)*100) / 100
			ms := start + int64(i)*1000 + int64(j) + rng.Int64N(7) - 3
			batch = append(batch, crdt.Point{Node: s, Type: "temp", Key: "0", Value: vals[j],
				Time: crdt.NewTimestamp(ms, 0), Origin: n.st.Instance()})
		}
		if len(batch)+len(sensors) > cap(batch) || i == seconds-1 {
			if _, err := n.st.Apply(batch); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return seconds * len(sensors)
}

// dirUsage returns the disk space of the regular files under dir, as
// allocated blocks and as their sizes, and the blocks allocated to each
// kind of file (by extension: Badger's tables .sst, value log .vlog).
func dirUsage(tb testing.TB, dir string) (alloc, size int64, byKind map[string]int64) {
	tb.Helper()
	byKind = map[string]int64{}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() || e.Name() == store.BallastName {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		size += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			alloc += st.Blocks * 512
			byKind[filepath.Ext(path)] += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return alloc, size, byKind
}

// historyCount returns how many samples n holds of the sensors' "temp"
// registers, from their window sums.
func historyCount(tb testing.TB, n *node, sensors []uuid.UUID) uint64 {
	tb.Helper()
	var c uint64
	for _, s := range sensors {
		ws, err := n.st.HistoryNodeSums(s, 0, math.MaxInt64)
		if err != nil {
			tb.Fatal(err)
		}
		for _, w := range ws {
			c += w.Count
		}
	}
	return c
}

// BenchmarkHistoryUpload is issue 16's day offline: an edge with a
// device key and ten sensors, cut off from the cloud, records 864,000
// readings (10 sensors × 1 Hz × 24 h, ending about now; dayOffline);
// then the link is restored. One op is the whole scenario; run it with
// -benchtime 1x. It reports
//
//   - upload-s: from Restore until the cloud holds every sample of the
//     sensors (the readings and the one each had before the cut), over
//     loopback through the counting proxy;
//   - wire-B/reading (and up-, down-): the bytes through the proxy both
//     ways (NATS framing included, TCP/IP headers not) from Restore until
//     the link is quiet again, per reading;
//   - hist-B/reading: the cloud's encoded history bytes
//     (store.HistoryStats.Bytes, after CompactHistory) the upload added,
//     per reading;
//   - disk-B/reading: what the upload added to the cloud's data
//     directory, per reading: blocks allocated to its files, the store
//     closed before and after (Badger flushes its memtables at Close),
//     and disk-size-B/reading the same by file sizes.
func BenchmarkHistoryUpload(b *testing.B) {
	for range b.N {
		historyUpload(b)
	}
}

func historyUpload(b *testing.B) {
	rng := rand.New(rand.NewPCG(16, 864))
	cloud := startNode(b, "cloud", nodeOpts{})
	px := proxyTo(b, cloud)
	dev := uuid.New()
	edge := startNode(b, "edge", nodeOpts{root: dev, upstreams: []string{px.URL()}, upstreamCreds: cloud.deviceCreds(dev)})
	edge.waitInSync(px.URL())
	sensors := make([]uuid.UUID, 10)
	for i := range sensors {
		sensors[i] = uuid.New()
		edge.write(edgePt(dev, sensors[i]), valPt(sensors[i], "temp", 20))
	}
	for _, s := range sensors {
		cloud.waitValue(s, "temp", 20)
	}

	px.Cut()
	waitFor(b, "link down", 10*time.Second, func() bool { return !edge.link(px.URL()).Connected })
	t0 := time.Now()
	readings := dayOffline(b, edge, sensors, rng)
	b.Logf("edge: %d readings written in %v", readings, time.Since(t0).Round(time.Millisecond))
	want := historyCount(b, edge, sensors)
	if want != uint64(readings+len(sensors)) {
		b.Fatalf("the edge holds %d samples, want %d", want, readings+len(sensors))
	}
	// The cloud's footprint before the upload, closed.
	hs0, err := cloud.st.HistoryStats(0)
	if err != nil {
		b.Fatal(err)
	}
	cloud.stop()
	alloc0, size0, kinds0 := dirUsage(b, cloud.dir)
	cloud.start()

	s0 := px.Stats()
	t0 = time.Now()
	px.Restore()
	var connected time.Duration // until the link is up again
	waitExplained(b, 5*time.Minute, func() bool {
		if connected == 0 && edge.link(px.URL()).Connected {
			connected = time.Since(t0)
		}
		return historyCount(b, cloud, sensors) == want
	}, func() string {
		return fmt.Sprintf("the upload did not finish in 5 minutes: the cloud holds %d samples of %d", historyCount(b, cloud, sensors), want)
	})
	took := time.Since(t0)
	// The bytes until the link is quiet: the last replies, the next
	// rounds' comparisons.
	s1 := px.Stats()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		s := px.Stats()
		if s.ClientToTarget+s.TargetToClient-s1.ClientToTarget-s1.TargetToClient < 1024 {
			break
		}
		s1 = s
	}
	for _, s := range sensors {
		es, _ := edge.st.HistoryNodeSums(s, 0, math.MaxInt64)
		cs, _ := cloud.st.HistoryNodeSums(s, 0, math.MaxInt64)
		if !slices.Equal(es, cs) {
			b.Fatalf("sensor %v: window digests differ:\nedge  %v\ncloud %v", s, es, cs)
		}
	}
	if _, err := cloud.st.CompactHistory(context.Background(), math.MaxInt64); err != nil {
		b.Fatal(err)
	}
	hs1, err := cloud.st.HistoryStats(0)
	if err != nil {
		b.Fatal(err)
	}
	edge.stop()
	cloud.stop()
	alloc1, size1, kinds1 := dirUsage(b, cloud.dir)
	b.Logf("upload: link up after %v, the cloud holds every sample after %v", connected.Round(time.Millisecond), took.Round(time.Millisecond))
	b.Logf("cloud: history %d → %d samples, %d → %d B (%d windows, %d segments); data directory %d → %d B allocated, %d → %d B by size",
		hs0.Samples, hs1.Samples, hs0.Bytes, hs1.Bytes, hs1.Windows, hs1.Segments, alloc0, alloc1, size0, size1)
	b.Logf("cloud: blocks allocated by kind of file, before %v, after %v", kinds0, kinds1)

	n := float64(readings)
	up, down := float64(s1.ClientToTarget-s0.ClientToTarget), float64(s1.TargetToClient-s0.TargetToClient)
	b.ReportMetric(took.Seconds(), "upload-s")
	b.ReportMetric((up+down)/n, "wire-B/reading")
	b.ReportMetric(up/n, "up-B/reading")
	b.ReportMetric(down/n, "down-B/reading")
	b.ReportMetric(float64(hs1.Bytes-hs0.Bytes)/n, "hist-B/reading")
	b.ReportMetric(float64(alloc1-alloc0)/n, "disk-B/reading")
	b.ReportMetric(float64(size1-size0)/n, "disk-size-B/reading")
}
