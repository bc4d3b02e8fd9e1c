package store

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// workload is realistic sensor data: a root, sites, gateways under each
// site and devices under each gateway, linked by edges; every node has a
// nodeType point, and each device holds types×keys registers (a few kinds
// of reading, each an array of channels).
//
// Readings arrive the way a cloud receives them: each batch comes from one
// gateway and carries readings of all its devices (1,000 readings from 40
// devices: 25 each), gateway after gateway. With spread set, consecutive
// readings go to different devices instead, so a batch of 1,000 touches
// 1,000 devices: the digest-heaviest order, where every point walks its
// own path to the root.
type workload struct {
	root     uuid.UUID
	origin   uuid.UUID
	tree     []crdt.Point // edges and nodeType points, parents first
	devices  []uuid.UUID  // gateway by gateway
	perGw    int          // devices per gateway
	types    []string
	keys     []string
	t0       int64 // physical ms of the first reading
	spread   bool
	perBatch int // readings per gateway batch: the batch size to write with
}

var sensorTypes = []string{"temp", "humidity", "voltage", "current", "rssi", "power", "pressure", "flow"}

// newWorkload builds the tree sites × gateways × devices under root, with
// nTypes reading types of nKeys channels each per device.
func newWorkload(root uuid.UUID, sites, gateways, devices, nTypes, nKeys int) *workload {
	rng := rand.New(rand.NewPCG(1, 2))
	newID := func() uuid.UUID {
		var u uuid.UUID
		for i := range u {
			u[i] = byte(rng.Uint32())
		}
		u[6] = u[6]&0x0f | 0x40
		u[8] = u[8]&0x3f | 0x80
		return u
	}
	w := &workload{root: root, origin: newID(), types: sensorTypes[:nTypes], perGw: devices,
		t0: 1_800_000_000_000, perBatch: 1000}
	for k := range nKeys {
		w.keys = append(w.keys, strconv.Itoa(k))
	}
	ts := crdt.NewTimestamp(w.t0-1000, 0)
	add := func(parent uuid.UUID, typ string) uuid.UUID {
		n := newID()
		w.tree = append(w.tree,
			crdt.Point{Node: n, Parent: parent, Type: crdt.TypeEdge, Key: "0", Time: ts, Origin: w.origin},
			crdt.Point{Node: n, Type: crdt.TypeNodeType, Key: "0", Text: typ, Time: ts, Origin: w.origin})
		return n
	}
	for range sites {
		site := add(root, "site")
		for range gateways {
			gw := add(site, "gateway")
			for range devices {
				w.devices = append(w.devices, add(gw, "device"))
			}
		}
	}
	return w
}

// cloudWorkload: 4,000 devices (10 sites × 10 gateways × 40 devices) of
// 5 types × 50 channels: 1,000,000 registers in 4,111 nodes.
func cloudWorkload(root uuid.UUID) *workload { return newWorkload(root, 10, 10, 40, 5, 50) }

// edgeWorkload: an edge device's own subtree, 20 devices of 5 types × 100
// channels: 10,000 registers in 26 nodes.
// An edge writes smaller batches: 100 readings, 20 from each device of a
// gateway.
func edgeWorkload(root uuid.UUID) *workload {
	w := newWorkload(root, 1, 4, 5, 5, 100)
	w.perBatch = 100
	return w
}

// registers is the number of distinct reading registers.
func (w *workload) registers() int { return len(w.devices) * w.perDevice() }

// cycle is the number of readings after which every register has been
// written and the order starts again (a pass).
func (w *workload) cycle() int {
	if w.spread {
		return w.registers()
	}
	per := w.perBatch / w.perGw // readings per device in a batch
	rounds := (w.perDevice() + per - 1) / per
	return len(w.devices) / w.perGw * rounds * w.perBatch
}

func (w *workload) perDevice() int { return len(w.types) * len(w.keys) }

// reading returns reading r (below cycle()) of the given pass: pass 0
// writes every register, later passes overwrite them with newer readings.
func (w *workload) reading(r, pass int) crdt.Point {
	var dev, reg int
	if w.spread {
		i := r % w.registers()
		dev, reg = i%len(w.devices), i/len(w.devices)
	} else {
		// Batch c comes from gateway c%gateways, its round-th batch; reading
		// j of it goes to device j%perGw, register round*per + j/perGw.
		gateways := len(w.devices) / w.perGw
		c, j := r/w.perBatch, r%w.perBatch
		per := w.perBatch / w.perGw
		dev = (c%gateways)*w.perGw + j%w.perGw
		reg = ((c/gateways)*per + j/w.perGw) % w.perDevice()
	}
	ms := w.t0 + int64(pass)*int64(w.cycle()) + int64(r)
	return crdt.Point{
		Node:   w.devices[dev],
		Type:   w.types[reg%len(w.types)],
		Key:    w.keys[reg/len(w.types)],
		Value:  20 + float64((r*7+pass)%400)/8,
		Time:   crdt.NewTimestamp(ms, 0),
		Origin: w.origin,
	}
}

// fill sets dst to readings [from, from+len(dst)) of pass.
func (w *workload) fill(dst []crdt.Point, from, pass int) {
	for i := range dst {
		dst[i] = w.reading(from+i, pass)
	}
}

// benchStore opens a durable store with profile in a fresh directory.
func benchStore(tb testing.TB, dir string, profile Profile, root uuid.UUID) *Store {
	tb.Helper()
	cfg := DefaultConfig(dir)
	cfg.MinFreeBytes, cfg.Profile, cfg.Root, cfg.NoBallast = 0, profile, root, true
	s, err := Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

var benchRoot = uuid.MustParse("5f2b8c1e-0d3a-4b6f-9c7e-1a2b3c4d5e6f")

// writeTree applies the workload's tree.
func writeTree(tb testing.TB, s *Store, w *workload) {
	tb.Helper()
	for i := 0; i < len(w.tree); i += 1000 {
		if _, err := s.Apply(w.tree[i:min(i+1000, len(w.tree))]); err != nil {
			tb.Fatal(err)
		}
	}
}

// writeAll applies the workload's tree, then points readings in batches
// of size.
func writeAll(tb testing.TB, s *Store, w *workload, points, size int) {
	tb.Helper()
	writeTree(tb, s, w)
	batch := make([]crdt.Point, size)
	for r := 0; r < points; r += size {
		b := batch[:min(size, points-r)]
		w.fill(b, r%w.cycle(), r/w.cycle())
		if _, err := s.Apply(b); err != nil {
			tb.Fatal(err)
		}
	}
}

// rawWriter writes what Apply writes for each reading at the bottom — its
// point key and register value — with one raw Badger WriteBatch per batch.
type rawWriter struct {
	db  *badger.DB
	seq uint64
}

func (r *rawWriter) write(pts []crdt.Point) error {
	wb := r.db.NewWriteBatch()
	defer wb.Cancel()
	for i := range pts {
		r.seq++
		if err := wb.Set(pointKey(&pts[i]), encodeRegister(&pts[i], r.seq)); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// ingest writes points readings of w in batches of size both through a
// store and through a raw WriteBatch on a Badger database of its own,
// both opened in dir with profile's options, and returns the time each
// spent. The two are interleaved batch by batch, in alternating order, so
// that a noisy machine slows both alike; each one's background work
// (memtable flushes, compactions) runs while both write, as it would in a
// process that writes alone.
func ingest(tb testing.TB, dir string, profile Profile, w *workload, points, size int) (store, raw time.Duration) {
	tb.Helper()
	s := benchStore(tb, filepath.Join(dir, "store"), profile, w.root)
	defer s.Close()
	writeTree(tb, s, w)
	cfg := DefaultConfig(filepath.Join(dir, "raw"))
	cfg.Profile = profile
	db, err := badger.Open(cfg.badgerOptions())
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	rw := &rawWriter{db: db}
	batch := make([]crdt.Point, size)
	for r, i := 0, 0; r < points; r, i = r+size, i+1 {
		b := batch[:min(size, points-r)]
		w.fill(b, r%w.cycle(), r/w.cycle())
		for k := range 2 {
			start := time.Now()
			if (i+k)%2 == 0 {
				if err := rw.write(b); err != nil {
					tb.Fatal(err)
				}
				raw += time.Since(start)
			} else {
				if _, err := s.Apply(b); err != nil {
					tb.Fatal(err)
				}
				store += time.Since(start)
			}
		}
	}
	if os.Getenv("SIOT_BENCH_VERIFY") != "" {
		if err := s.Verify(); err != nil {
			tb.Fatal(err)
		}
	}
	return store, raw
}

// BenchmarkIngest writes 1,000,000 readings in batches of 1,000 through
// Store.Apply (durable, digests maintained) and, interleaved with it, the
// same point keys and register values through a raw Badger WriteBatch
// with the same options (see ingest). It reports both rates and their
// ratio. "new" creates 1,000,000 registers in gateway batches (the
// initial load of a cloud). "update" is the steady state of the same tree
// with one channel per type: 20,000 registers (4,000 devices × 5 types),
// each batch carrying 5 readings of each sensor of one gateway, so each
// register is written 50 times in 10 batches (each change also replaces
// the register's change-feed entry). "spread" is "new" with 1,000 devices per batch, where every
// point walks its own path to the root.
func BenchmarkIngest(b *testing.B) {
	points, size := benchPoints(1_000_000), 1000
	for _, tc := range []struct {
		name string
		w    *workload
	}{
		{"new", cloudWorkload(benchRoot)},
		{"update", newWorkload(benchRoot, 10, 10, 40, 5, 1)},
		{"spread", spread(cloudWorkload(benchRoot))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var raw, st time.Duration
			for b.Loop() {
				s, r := ingest(b, b.TempDir(), ProfileCloud, tc.w, points, size)
				st, raw = st+s, raw+r
			}
			n := float64(b.N) * float64(points)
			b.ReportMetric(n/st.Seconds(), "points/s")
			b.ReportMetric(n/raw.Seconds(), "raw-points/s")
			b.ReportMetric(raw.Seconds()/st.Seconds(), "ratio")
		})
	}
}

func spread(w *workload) *workload { w.spread = true; return w }

// benchPoints returns n, or SIOT_BENCH_POINTS when set (for profiling a
// shorter run).
func benchPoints(n int) int {
	if v, err := strconv.Atoi(os.Getenv("SIOT_BENCH_POINTS")); err == nil && v > 0 {
		return v
	}
	return n
}

// BenchmarkApplyOne is the latency of one durable single-point write (one
// fsync) into a store holding the cloud tree, with its p50 and p99.
func BenchmarkApplyOne(b *testing.B) {
	w := cloudWorkload(benchRoot)
	s := benchStore(b, b.TempDir(), ProfileCloud, benchRoot)
	defer s.Close()
	writeAll(b, s, w, 20_000, 1000)
	lat := make([]time.Duration, 0, 1<<16)
	one := make([]crdt.Point, 1)
	i := 0
	for b.Loop() {
		one[0] = w.reading(i, 1)
		i++
		start := time.Now()
		if _, err := s.Apply(one); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkChangesSince scans a change feed of 100,000 changes (the
// resume of a link after an outage) from the start.
func BenchmarkChangesSince(b *testing.B) {
	const changes = 100_000
	w := cloudWorkload(benchRoot)
	s := benchStore(b, b.TempDir(), ProfileCloud, benchRoot)
	defer s.Close()
	writeAll(b, s, w, changes, 1000)
	after := s.LastSeq() - changes
	var n int
	for b.Loop() {
		n = 0
		if err := s.ChangesSince(after, func(uint64, *crdt.Point) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	if n != changes {
		b.Fatalf("scanned %d changes, want %d", n, changes)
	}
	b.ReportMetric(float64(b.N)*changes/b.Elapsed().Seconds(), "points/s")
}

// TestWorkloadCycle checks that one cycle of each benchmark workload
// writes every register, in time order.
func TestWorkloadCycle(t *testing.T) {
	for name, w := range map[string]*workload{
		"gateway batches":    newWorkload(benchRoot, 2, 2, 40, 5, 50),
		"update":             newWorkload(benchRoot, 10, 10, 40, 5, 1),
		"edge":               edgeWorkload(benchRoot),
		"spread":             spread(newWorkload(benchRoot, 2, 2, 40, 5, 50)),
		"several per device": newWorkload(benchRoot, 1, 3, 40, 3, 1),
	} {
		seen := make(map[crdt.Register]bool)
		var last crdt.Timestamp
		for pass := range 2 {
			for r := range w.cycle() {
				p := w.reading(r, pass)
				if p.Time <= last {
					t.Fatalf("%s: reading %d of pass %d goes back in time", name, r, pass)
				}
				last = p.Time
				seen[p.Register()] = true
			}
		}
		if len(seen) != w.registers() {
			t.Errorf("%s: a cycle of %d readings wrote %d registers of %d", name, w.cycle(), len(seen), w.registers())
		}
	}
}
