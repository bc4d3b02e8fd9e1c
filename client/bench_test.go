package client_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// rawStore opens a store of its own in a temp dir: the baseline of the
// client's writes, the same points applied with no NATS and no API.
func rawStore(b *testing.B) *store.Store {
	b.Helper()
	cfg := store.DefaultConfig(filepath.Join(b.TempDir(), "raw"))
	cfg.Root, cfg.MinFreeBytes, cfg.NoBallast = uuid.New(), 0, true
	st, err := store.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return st
}

// readings returns n readings of an edge application's sensors: 100
// sensor nodes with 10 types each, read in turn (1,000 registers, each
// written again every 1,000 points), values differing from round to
// round.
func readings(nodes []uuid.UUID, n, round int) []client.Point {
	pts := make([]client.Point, n)
	for i := range pts {
		pts[i] = client.Point{Node: nodes[(i/10)%len(nodes)], Type: fmt.Sprintf("t%d", i%10), Value: float64(round*n + i)}
	}
	return pts
}

// BenchmarkSetBatch: a batch of 100,000 readings (readings) written with SetBatch
// into a local server (durable: each request is fsynced before its
// reply), against the same points applied to a store directly in the
// same batches of 2,000, interleaved op by op.
func BenchmarkSetBatch(b *testing.B) {
	const n = 100_000
	s := startServer(b)
	cl := s.dial()
	raw := rawStore(b)
	ctx := context.Background()
	nodes := make([]uuid.UUID, 100)
	for i := range nodes {
		nodes[i] = uuid.New()
	}
	var clientTime, rawTime time.Duration
	round := 0
	for b.Loop() {
		pts := readings(nodes, n, round)
		round++
		start := time.Now()
		if _, err := cl.SetBatch(ctx, pts); err != nil {
			b.Fatal(err)
		}
		clientTime += time.Since(start)
		start = time.Now()
		for i := 0; i < n; i += client.DefaultBatch {
			part := pts[i:min(i+client.DefaultBatch, n)]
			stamp(part, raw)
			if _, err := raw.Apply(part); err != nil {
				b.Fatal(err)
			}
		}
		rawTime += time.Since(start)
	}
	total := float64(round * n)
	b.ReportMetric(total/clientTime.Seconds(), "points/s")
	b.ReportMetric(total/rawTime.Seconds(), "raw-points/s")
	b.ReportMetric(rawTime.Seconds()/clientTime.Seconds(), "ratio")
}

// stamp gives pts the times and origin a server would: the store takes
// only stamped points.
func stamp(pts []client.Point, st *store.Store) {
	base := uint64(time.Now().UnixMilli()) << 16
	for i := range pts {
		pts[i].Time = crdt.Timestamp(base + uint64(i))
		pts[i].Origin = st.Instance()
	}
}

// BenchmarkSetRoundTrip: one point set through the client, durable, on
// loopback: the latency of each call, with its p50 and p99, against one
// point applied to a store directly (one fsync) in the same loop.
func BenchmarkSetRoundTrip(b *testing.B) {
	s := startServer(b)
	cl := s.dial()
	raw := rawStore(b)
	ctx := context.Background()
	node, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor"})
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, 1<<14)
	rawLat := make([]time.Duration, 0, 1<<14)
	one := make([]client.Point, 1)
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		if _, err := cl.Set(ctx, client.Point{Node: node, Type: "temp", Value: float64(i)}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		one[0] = client.Point{Node: node, Type: "temp", Value: float64(i)}
		stamp(one, raw)
		start = time.Now()
		if _, err := raw.Apply(one); err != nil {
			b.Fatal(err)
		}
		rawLat = append(rawLat, time.Since(start))
	}
	slices.Sort(lat)
	slices.Sort(rawLat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(rawLat[len(rawLat)/2].Microseconds()), "raw-p50-µs")
	b.ReportMetric(float64(rawLat[len(rawLat)*99/100].Microseconds()), "raw-p99-µs")
}

// BenchmarkImportLineDurable: a program writes one record line every
// 20 ms into an Import (siot import -): the time from writing a line to
// the server's acknowledgement of the request that holds it (it is
// durable then), with its p50 and p99. The target is 100 ms.
func BenchmarkImportLineDurable(b *testing.B) {
	s := startServer(b)
	cl := s.dial()
	ctx := context.Background()
	pr, pw := io.Pipe()
	var mu sync.Mutex
	sent := map[int]time.Time{}
	var lat []time.Duration
	done := make(chan error, 1)
	go func() {
		_, err := cl.Import(ctx, pr, client.ImportOptions{OnAck: func(lines []int, _ client.Result) {
			now := time.Now()
			mu.Lock()
			for _, l := range lines {
				lat = append(lat, now.Sub(sent[l]))
			}
			mu.Unlock()
		}})
		done <- err
	}()
	line := 0
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for b.Loop() {
		<-tick.C
		line++
		mu.Lock()
		sent[line] = time.Now()
		mu.Unlock()
		if _, err := fmt.Fprintf(pw, "{\"node\":%q,\"type\":\"reading\",\"value\":%d}\n", s.root, line); err != nil {
			b.Fatal(err)
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	if len(lat) != line {
		b.Fatalf("%d lines acknowledged, want %d", len(lat), line)
	}
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
