package store

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// Big nodes: a node with a million points and a node with a hundred
// thousand children are written, read a page at a time and digested
// without ever being held whole in memory.
//
// The full sizes take several seconds and far longer under the race
// detector, so a binary built with -race runs them at a tenth of the size;
// `make test` runs them again at full size in its pass without -race.

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// bigSize returns full, or a tenth of it under the race detector.
func bigSize(t *testing.T, full int) int {
	if raceEnabled() {
		t.Logf("race detector on: %d instead of %d", full/10, full)
		return full / 10
	}
	return full
}

// bigStore opens an edge-profile store (the smallest memory settings)
// without fsync per batch: these tests are about memory and paging, not
// durability.
func bigStore(t *testing.T) *Store {
	t.Helper()
	cfg := DefaultConfig(t.TempDir())
	cfg.MinFreeBytes, cfg.Profile, cfg.SyncWrites = 0, ProfileEdge, false
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// heapWatch measures the heap around a walk: the bytes allocated by the
// largest single step, and the live heap retained at the end.
type heapWatch struct {
	start, last runtime.MemStats
	maxStep     uint64
}

// begin waits until Badger's background work (memtable flushes and
// compactions after the writes) has stopped allocating, since the
// allocation counters are process-wide, then takes the starting point.
func (h *heapWatch) begin(t *testing.T) {
	t.Helper()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	prev, quiet := ms.TotalAlloc, 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(60 * time.Second)
	for quiet < 3 {
		select {
		case <-deadline:
			t.Fatal("background work still allocating after 60 s")
		case <-tick.C:
		}
		runtime.ReadMemStats(&ms)
		if ms.TotalAlloc-prev < 256<<10 {
			quiet++
		} else {
			quiet = 0
		}
		prev = ms.TotalAlloc
	}
	runtime.GC()
	runtime.ReadMemStats(&h.start)
	h.last = h.start
}

// step records one step (a page, a batch of children).
func (h *heapWatch) step() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.maxStep = max(h.maxStep, ms.TotalAlloc-h.last.TotalAlloc)
	h.last = ms
}

// end returns the live heap growth over the walk, after a collection.
func (h *heapWatch) end() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc) - int64(h.start.HeapAlloc)
}

func TestBigNodePoints(t *testing.T) {
	n := bigSize(t, 1_000_000)
	s := bigStore(t)
	node := uuid.MustParse("0b1e55ed-0000-4000-8000-000000000001")
	types := []string{"temp", "humidity", "voltage", "current", "rssi", "power", "pressure", "flow", "level", "speed"}
	point := func(i int) crdt.Point {
		return crdt.Point{Node: node, Type: types[i%len(types)], Key: fmt.Sprintf("%07d", i/len(types)),
			Value: float64(i), Time: crdt.Timestamp(1000 + i), Origin: origin}
	}
	batch := make([]crdt.Point, 1000)
	var want crdt.Digest
	for i := 0; i < n; i += len(batch) {
		for j := range batch {
			batch[j] = point(i + j)
			want = want.Add(crdt.PointDigest(&batch[j]))
		}
		mustApply(t, s, batch...)
	}

	// The node's digest is O(1) and sums every point.
	d, err := s.NodeDigest(node)
	if err != nil {
		t.Fatal(err)
	}
	if d.Own != want || d.Sub != want {
		t.Fatalf("NodeDigest = %+v, want own = sub = %v", d, want)
	}
	if err := s.Buckets(node, func(byte, crdt.Digest) error { return fmt.Errorf("a leaf has no buckets") }); err != nil {
		t.Fatal(err)
	}

	// Page through it: every point once, in (type, key) order, and no
	// page costs more than a page's worth of memory.
	const page = 1000
	var (
		h                 heapWatch
		got               crdt.Digest
		count, pages      int
		afterType, afterK string
	)
	h.begin(t)
	for {
		pts, more, err := s.PageNode(node, afterType, afterK, page)
		if err != nil {
			t.Fatal(err)
		}
		h.step()
		pages++
		for i := range pts {
			p := &pts[i]
			if count > 0 && (p.Type < afterType || p.Type == afterType && p.Key <= afterK) {
				t.Fatalf("page %d: %s/%s after %s/%s", pages, p.Type, p.Key, afterType, afterK)
			}
			afterType, afterK = p.Type, p.Key
			got = got.Add(crdt.PointDigest(p))
			count++
		}
		if !more {
			break
		}
	}
	retained := h.end()
	if count != n || got != want {
		t.Fatalf("paged %d points in %d pages, digest %v; want %d, %v", count, pages, got, n, want)
	}
	// A page of 1,000 points is about 150 KB as crdt.Points; the whole
	// node would be over 150 MB.
	t.Logf("%d points in %d pages: largest page allocated %d KiB, %d KiB retained after the walk",
		count, pages, h.maxStep>>10, retained>>10)
	if h.maxStep > 8<<20 {
		t.Errorf("one page allocated %d MiB: the node is being loaded whole", h.maxStep>>20)
	}
	if retained > 8<<20 {
		t.Errorf("the walk retained %d MiB", retained>>20)
	}
	mustVerify(t, s)
}

func TestBigNodeChildren(t *testing.T) {
	n := bigSize(t, 100_000)
	s := bigStore(t)
	parent := uuid.MustParse("0b1e55ed-0000-4000-8000-000000000002")
	child := func(i int) uuid.UUID {
		var u uuid.UUID
		u[0] = byte(i * 131) // spread over the 256 buckets
		u[1] = byte(i >> 16)
		u[2], u[3] = byte(i>>8), byte(i)
		u[6], u[8] = 0x40, 0x80
		return u
	}
	batch := make([]crdt.Point, 0, 1000)
	for i := 0; i < n; i++ {
		c := child(i)
		batch = append(batch,
			crdt.Point{Node: c, Parent: parent, Type: crdt.TypeEdge, Key: "0", Time: crdt.Timestamp(10 + i), Origin: origin},
			crdt.Point{Node: c, Type: crdt.TypeNodeType, Key: "0", Text: "sensor", Time: crdt.Timestamp(10 + i), Origin: origin})
		if len(batch) == cap(batch) || i == n-1 {
			mustApply(t, s, batch...)
			batch = batch[:0]
		}
	}
	// A few tombstoned edges: inactive children still count in the edge
	// digests, not with their subtrees.
	var tomb []crdt.Point
	for i := 0; i < n; i += n / 10 {
		tomb = append(tomb, crdt.Point{Node: child(i), Parent: parent, Type: crdt.TypeEdge, Key: "0",
			Tombstone: true, Time: crdt.Timestamp(10 + n + i), Origin: origin})
	}
	mustApply(t, s, tomb...)

	// Walk the children, streaming, and recompute each bucket from the
	// children's own digests as the walk goes.
	var (
		h       heapWatch
		count   int
		active  int
		last    uuid.UUID
		buckets [256]crdt.Digest
	)
	h.begin(t)
	err := s.Children(parent, func(c Child) error {
		if count > 0 && string(c.ID[:]) <= string(last[:]) {
			return fmt.Errorf("child %v after %v", c.ID, last)
		}
		last = c.ID
		count++
		edge, ok, err := s.Get(crdt.Register{Node: c.ID, Parent: parent, Type: crdt.TypeEdge})
		if err != nil || !ok {
			return fmt.Errorf("edge of %v: %v %v", c.ID, ok, err)
		}
		if c.Active != !edge.Tombstone {
			return fmt.Errorf("child %v: active %v, edge tombstone %v", c.ID, c.Active, edge.Tombstone)
		}
		b := &buckets[c.ID[0]]
		*b = b.Add(crdt.PointDigest(&edge))
		if c.Active {
			active++
			d, err := s.NodeDigest(c.ID)
			if err != nil {
				return err
			}
			*b = b.Add(d.Sub)
		}
		if count%1000 == 0 {
			h.step()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	retained := h.end()
	if count != n || active != n-len(tomb) {
		t.Fatalf("walked %d children, %d active; want %d, %d", count, active, n, n-len(tomb))
	}
	t.Logf("%d children: largest 1,000 allocated %d KiB, %d KiB retained after the walk",
		count, h.maxStep>>10, retained>>10)
	if h.maxStep > 8<<20 {
		t.Errorf("1,000 children allocated %d MiB: the children are being loaded whole", h.maxStep>>20)
	}
	if retained > 8<<20 {
		t.Errorf("the walk retained %d MiB", retained>>20)
	}

	// The parent's digests: sub = own + Σ buckets, each bucket as
	// recomputed.
	d, err := s.NodeDigest(parent)
	if err != nil {
		t.Fatal(err)
	}
	sum := d.Own
	seen := 0
	if err := s.Buckets(parent, func(k byte, bd crdt.Digest) error {
		if bd != buckets[k] {
			return fmt.Errorf("bucket %02x = %v, recomputed %v", k, bd, buckets[k])
		}
		seen++
		sum = sum.Add(bd)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen != 256 || sum != d.Sub {
		t.Fatalf("%d buckets summing with own to %v, sub is %v", seen, sum, d.Sub)
	}
	mustVerify(t, s)
}

// TestProfileBatchLimits checks the largest batches the profiles document:
// Badger caps a transaction at 15% of a memtable, so ProfileCloud takes
// 8,192 points (replication's largest push) and ProfileEdge 1,000, both
// as new registers and as overwrites (which also delete the old change
// feed entries and append to each register's history), and refuses more
// with ErrBatchTooLarge, writing nothing.
func TestProfileBatchLimits(t *testing.T) {
	for _, tc := range []struct {
		profile Profile
		fits    int
	}{{ProfileCloud, 8_192}, {ProfileEdge, 1_000}} {
		cfg := DefaultConfig(t.TempDir())
		cfg.MinFreeBytes, cfg.Profile, cfg.SyncWrites = 0, tc.profile, false
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		batch := func(n int, ts crdt.Timestamp) []crdt.Point {
			pts := make([]crdt.Point, n)
			for i := range pts {
				pts[i] = crdt.Point{Node: id(i % 100), Type: "temp", Key: fmt.Sprintf("k%05d", i),
					Value: float64(i), Time: ts, Origin: origin}
			}
			return pts
		}
		mustApply(t, s, batch(tc.fits, 10)...) // new registers
		mustApply(t, s, batch(tc.fits, 11)...) // overwrites
		before := s.LastSeq()
		if _, err := s.Apply(batch(tc.fits*4, 12)); !errors.Is(err, ErrBatchTooLarge) {
			t.Fatalf("profile %d: a batch of %d points: %v, want ErrBatchTooLarge", tc.profile, tc.fits*4, err)
		}
		if s.LastSeq() != before {
			t.Fatalf("profile %d: a refused batch wrote changes", tc.profile)
		}
		mustVerify(t, s)
		s.Close()
	}
}
