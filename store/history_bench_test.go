package store

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

// sensorSet generates readings the way devices report them: each
// register (a node of its own, type "temp", key "0") is read once a
// second, register j j ms after the second and with up to ±3 ms of
// jitter; its value is a random walk (σ 0.02 a reading) rounded to
// hundredths, from 18 + j/10. All randomness comes from the seed.
type sensorSet struct {
	rng    *rand.Rand
	nodes  []uuid.UUID
	vals   []float64
	origin uuid.UUID
	next   int64 // physical ms of the next second's readings
}

func newSensorSet(seed uint64, n int, start int64) *sensorSet {
	g := &sensorSet{rng: rand.New(rand.NewPCG(seed, 16)), next: start}
	newID := func() uuid.UUID {
		var u uuid.UUID
		for i := range u {
			u[i] = byte(g.rng.Uint32())
		}
		u[6] = u[6]&0x0f | 0x40
		u[8] = u[8]&0x3f | 0x80
		return u
	}
	g.origin = newID()
	for j := range n {
		g.nodes = append(g.nodes, newID())
		g.vals = append(g.vals, 18+float64(j)/10)
	}
	return g
}

// value steps register j's random walk and returns its next reading.
func (g *sensorSet) value(j int) float64 {
	g.vals[j] = math.Round((g.vals[j]+g.rng.NormFloat64()*0.02)*100) / 100
	return g.vals[j]
}

// jitter returns a reading's jitter: -3 to 3 ms.
func (g *sensorSet) jitter() int64 { return g.rng.Int64N(7) - 3 }

// fill sets dst to the next len(dst)/len(nodes) seconds of readings of
// every register, second by second.
func (g *sensorSet) fill(dst []crdt.Point) {
	n := len(g.nodes)
	for i := range dst {
		sec, j := i/n, i%n
		ms := g.next + int64(sec)*1000 + int64(j) + g.jitter()
		dst[i] = crdt.Point{Node: g.nodes[j], Type: "temp", Key: "0", Value: g.value(j),
			Time: crdt.NewTimestamp(ms, 0), Origin: g.origin}
	}
	g.next += int64(len(dst)/n) * 1000
}

// tree returns the edges that put every register's node under root.
func (g *sensorSet) tree(root uuid.UUID) []crdt.Point {
	var out []crdt.Point
	for _, n := range g.nodes {
		out = append(out, crdt.Point{Node: n, Parent: root, Type: crdt.TypeEdge, Key: "0",
			Time: crdt.NewTimestamp(g.next-1000, 0), Origin: g.origin})
	}
	return out
}

// historyIngest writes points readings of regs registers, batches of
// per readings of each (regs·per points an Apply, in time order), into
// two fresh durable stores in dir: one that records history and one
// that does not (Config.noHistory), interleaved batch by batch in
// alternating order as ingest does. It returns the time each spent
// inside Apply.
func historyIngest(tb testing.TB, dir string, regs, per, points int) (hist, base time.Duration) {
	tb.Helper()
	open := func(name string, noHistory bool) *Store {
		cfg := DefaultConfig(filepath.Join(dir, name))
		cfg.MinFreeBytes, cfg.Root, cfg.NoBallast, cfg.noHistory = 0, benchRoot, true, noHistory
		s, err := Open(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	hs, bs := open("history", false), open("base", true)
	defer hs.Close()
	defer bs.Close()
	start := int64(1_780_000_000_000)/history.WindowMs*history.WindowMs + 1234
	g := newSensorSet(7, regs, start)
	for _, s := range []*Store{hs, bs} {
		if _, err := s.Apply(g.tree(benchRoot)); err != nil {
			tb.Fatal(err)
		}
	}
	batch := make([]crdt.Point, regs*per)
	var added uint64
	for r, i := 0, 0; r < points; r, i = r+len(batch), i+1 {
		g.fill(batch)
		for k := range 2 {
			t0 := time.Now()
			if (i+k)%2 == 0 {
				if _, err := bs.Apply(batch); err != nil {
					tb.Fatal(err)
				}
				base += time.Since(t0)
			} else {
				res, err := hs.Apply(batch)
				if err != nil {
					tb.Fatal(err)
				}
				hist += time.Since(t0)
				added += res.HistoryAdded
			}
		}
	}
	want := uint64((points + len(batch) - 1) / len(batch) * len(batch))
	if added != want {
		tb.Fatalf("history added %d samples, want %d", added, want)
	}
	return hist, base
}

// BenchmarkHistoryIngest writes 1,000,000 readings (SIOT_BENCH_POINTS)
// through Store.Apply in batches of 10,000 points, durably (SyncWrites),
// into a fresh on-disk cloud store that records every reading in its
// register's history: "10x1000" is 10 registers with 1,000 readings each
// a batch (an edge's ten sensors after a quarter of an hour, or a
// gateway's upload), "100x100" 100 registers with 100 each. The baseline,
// interleaved with it in the same op, is the same Apply of the same
// batches into a store that records no history: the ratio is what
// recording history leaves of Apply's rate.
func BenchmarkHistoryIngest(b *testing.B) {
	points := benchPoints(1_000_000)
	for _, regs := range []int{10, 100} {
		per := 10_000 / regs
		b.Run(fmt.Sprintf("%dx%d", regs, per), func(b *testing.B) {
			var hist, base time.Duration
			for b.Loop() {
				h, bs := historyIngest(b, b.TempDir(), regs, per, points)
				hist, base = hist+h, base+bs
			}
			n := float64(b.N) * float64(points)
			b.ReportMetric(n/hist.Seconds(), "readings/s")
			b.ReportMetric(n/base.Seconds(), "base-readings/s")
			b.ReportMetric(base.Seconds()/hist.Seconds(), "ratio")
		})
	}
}

// benchDays returns n, or SIOT_BENCH_DAYS when set (for profiling a
// shorter run).
func benchDays(n int) int {
	if v, err := strconv.Atoi(os.Getenv("SIOT_BENCH_DAYS")); err == nil && v > 0 {
		return v
	}
	return n
}

// yearOfHistory gives register 0 of g days of 1 Hz readings from g.next
// on, merged a day at a time (MergeHistory of whole windows, as a
// history round receives them), then compacts; it returns the time it
// took.
func yearOfHistory(tb testing.TB, s *Store, g *sensorSet, days int) time.Duration {
	tb.Helper()
	t0 := time.Now()
	reg := crdt.Register{Node: g.nodes[0], Type: "temp", Key: "0"}
	ss := make([]history.Sample, 86_400)
	for range days {
		for i := range ss {
			ss[i] = history.Sample{Time: crdt.NewTimestamp(g.next+int64(i)*1000+g.jitter(), 0), Origin: g.origin, Value: g.value(0)}
		}
		g.next += 86_400_000
		if _, err := s.MergeHistory([]RegisterHistory{{Reg: reg, Samples: ss}}); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := s.CompactHistory(context.Background(), math.MaxInt64); err != nil {
		tb.Fatal(err)
	}
	return time.Since(t0)
}

// BenchmarkHistoryQuery reads a year of one register's 1 Hz history
// (31,536,000 samples; SIOT_BENCH_DAYS shortens it), built once per run
// in a fresh on-disk cloud store. "summaries" is Store.HistorySummaries
// of the whole year in 1,000 steps of 31,536 s, which no 5-minute slice
// boundary aligns with, so nearly every step boundary cuts a slice;
// "stream-day" is Store.History of one day in the middle (86,400
// samples).
func BenchmarkHistoryQuery(b *testing.B) {
	days := benchDays(365)
	s := benchStore(b, b.TempDir(), ProfileCloud, benchRoot)
	defer s.Close()
	start := int64(1_780_000_000_000) / history.WindowMs * history.WindowMs
	g := newSensorSet(11, 1, start+500) // mid-second: jitter keeps each reading in its day
	took := yearOfHistory(b, s, g, days)
	st, err := s.HistoryStats(0)
	if err != nil {
		b.Fatal(err)
	}
	total := days * 86_400
	if st.Samples != uint64(total) || st.Segments != 0 {
		b.Fatalf("history holds %d samples in %d segments, want %d compacted", st.Samples, st.Segments, total)
	}
	b.Logf("a year of history: %d samples, %d windows, %d B encoded (%.2f B/sample), built in %v",
		st.Samples, st.Windows, st.Bytes, float64(st.Bytes)/float64(st.Samples), took.Round(time.Millisecond))
	reg := crdt.Register{Node: g.nodes[0], Type: "temp", Key: "0"}
	span := int64(days) * 86_400_000
	b.Run("summaries", func(b *testing.B) {
		step := span / 1000
		q := HistoryQuery{Reg: reg, From: start, To: start + span}
		for b.Loop() {
			steps, count := 0, 0
			if err := s.HistorySummaries(q, step, func(_ int64, m *Summary) error {
				steps++
				count += m.Count
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			if steps != 1000 || count != total {
				b.Fatalf("%d steps of %d samples, want 1000 of %d", steps, count, total)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/query")
	})
	b.Run("stream-day", func(b *testing.B) {
		from := start + int64(days/2)*86_400_000
		q := HistoryQuery{Reg: reg, From: from, To: from + 86_400_000}
		for b.Loop() {
			n := 0
			if err := s.History(q, nil, func(*history.Sample) error { n++; return nil }); err != nil {
				b.Fatal(err)
			}
			if n != 86_400 {
				b.Fatalf("a day holds %d samples, want 86,400", n)
			}
		}
		b.ReportMetric(86_400*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
}

// BenchmarkIngestHistoryCost is BenchmarkIngest's "new" and "update"
// workloads (gateway batches of 1,000, durable) through two stores, one
// recording history and one not (Config.noHistory), interleaved batch by
// batch in alternating order: the ratio is what recording history leaves
// of Apply's rate. "new" opens a window for every point; "update" appends
// five readings a register a batch.
func BenchmarkIngestHistoryCost(b *testing.B) {
	for _, tc := range []struct {
		name string
		w    *workload
	}{
		{"new", cloudWorkload(benchRoot)},
		{"update", newWorkload(benchRoot, 10, 10, 40, 5, 1)},
	} {
		b.Run(tc.name, func(b *testing.B) { ingestHistoryCost(b, tc.w) })
	}
}

func ingestHistoryCost(b *testing.B, w *workload) {
	points, size := benchPoints(200_000), 1000
	for range b.N {
		dir := b.TempDir()
		a := benchStore(b, filepath.Join(dir, "a"), ProfileCloud, w.root)
		c := benchStore(b, filepath.Join(dir, "c"), ProfileCloud, w.root)
		c.cfg.noHistory = true
		writeTree(b, a, w)
		writeTree(b, c, w)
		var ta, tc time.Duration
		batch := make([]crdt.Point, size)
		for r, i := 0, 0; r < points; r, i = r+size, i+1 {
			bt := batch[:min(size, points-r)]
			w.fill(bt, r%w.cycle(), r/w.cycle())
			for k := range 2 {
				s, t := a, &ta
				if (i+k)%2 == 0 {
					s, t = c, &tc
				}
				start := time.Now()
				if _, err := s.Apply(bt); err != nil {
					b.Fatal(err)
				}
				*t += time.Since(start)
			}
		}
		a.Close()
		c.Close()
		b.ReportMetric(float64(points)/ta.Seconds(), "hist-points/s")
		b.ReportMetric(float64(points)/tc.Seconds(), "nohist-points/s")
		b.ReportMetric(tc.Seconds()/ta.Seconds(), "ratio")
	}
}
