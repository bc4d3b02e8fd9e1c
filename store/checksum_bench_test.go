package store

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/siot-io/siot/crdt"
)

// checksumStore opens a durable store with profile in dir, with or
// without Badger's block checksums on read and the table check at Open.
func checksumStore(tb testing.TB, dir string, profile Profile, checks bool) *Store {
	tb.Helper()
	cfg := DefaultConfig(dir)
	cfg.MinFreeBytes, cfg.Profile, cfg.Root, cfg.NoBallast = 0, profile, benchRoot, true
	cfg.noBlockChecks, cfg.skipFileCheck = !checks, !checks
	s, err := Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkChecksums measures what checking the data directory costs:
// each sub-benchmark runs the same work on two stores in one run, one
// with Badger's block checksums verified on every block read and the
// tables checked at Open (the default), one with neither, interleaved
// op by op in alternating order so that a noisy machine slows both alike;
// "ratio" is the time without checks over the time with them (1 = free,
// 0.5 = checks double the time).
//
//   - ingest-cloud, ingest-edge: 200,000 new readings in batches of the
//     profile's size (each write reads its register first; compactions
//     read every table they merge).
//   - get-cloud, get-edge: random single-register reads of a store holding
//     200,000 registers, reopened so that everything is in tables (the
//     edge profile has no block cache: every read checks its block).
//   - scan-cloud: ScanAll of the same store.
//   - open-cloud: Open of the same store, closed again.
func BenchmarkChecksums(b *testing.B) {
	points := benchPoints(200_000)
	parent := b
	for _, tc := range []struct {
		name    string
		profile Profile
		size    int
	}{{"cloud", ProfileCloud, 1000}, {"edge", ProfileEdge, 100}} {
		b.Run("ingest-"+tc.name, func(b *testing.B) {
			var with, without time.Duration
			for b.Loop() {
				w := cloudWorkload(benchRoot)
				dir := b.TempDir()
				st := [2]*Store{
					checksumStore(b, filepath.Join(dir, "with"), tc.profile, true),
					checksumStore(b, filepath.Join(dir, "without"), tc.profile, false),
				}
				for _, s := range st {
					writeTree(b, s, w)
				}
				batch := make([]crdt.Point, tc.size)
				for r, i := 0, 0; r < points; r, i = r+tc.size, i+1 {
					bt := batch[:min(tc.size, points-r)]
					w.fill(bt, r%w.cycle(), r/w.cycle())
					for k := range 2 {
						j := (i + k) % 2
						start := time.Now()
						if _, err := st[j].Apply(bt); err != nil {
							b.Fatal(err)
						}
						if j == 0 {
							with += time.Since(start)
						} else {
							without += time.Since(start)
						}
					}
				}
				for _, s := range st {
					s.Close()
				}
			}
			n := float64(b.N) * float64(points)
			b.ReportMetric(n/with.Seconds(), "points/s")
			b.ReportMetric(n/without.Seconds(), "unchecked-points/s")
			b.ReportMetric(without.Seconds()/with.Seconds(), "ratio")
		})
	}

	// Read benchmarks: one store of each profile, written once.
	type pair struct {
		dir string
		w   *workload
	}
	fixtures := map[Profile]*pair{}
	fixture := func(b *testing.B, profile Profile) *pair {
		if p := fixtures[profile]; p != nil {
			return p
		}
		p := &pair{w: cloudWorkload(benchRoot)}
		// One directory, opened by each in turn: both read the same
		// tables. It outlives the sub-benchmark that makes it.
		base := parent.TempDir()
		s := checksumStore(b, base, profile, false)
		writeAll(b, s, p.w, points, 1000)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		p.dir = base
		fixtures[profile] = p
		return p
	}
	// reads times fn on each store, alternating; both stores are open
	// one at a time on the same directory.
	reads := func(b *testing.B, profile Profile, ops int, fn func(s *Store, rng *rand.Rand) error) {
		p := fixture(b, profile)
		var with, without time.Duration
		rng := rand.New(rand.NewPCG(1, 2))
		i := 0
		for b.Loop() {
			for k := range 2 {
				checks := (i+k)%2 == 0
				s := checksumStore(b, p.dir, profile, checks)
				start := time.Now()
				for range ops {
					if err := fn(s, rng); err != nil {
						b.Fatal(err)
					}
				}
				if checks {
					with += time.Since(start)
				} else {
					without += time.Since(start)
				}
				s.Close()
			}
			i++
		}
		n := float64(b.N) * float64(ops)
		b.ReportMetric(n/with.Seconds(), "ops/s")
		b.ReportMetric(n/without.Seconds(), "unchecked-ops/s")
		b.ReportMetric(without.Seconds()/with.Seconds(), "ratio")
	}
	get := func(w *workload) func(s *Store, rng *rand.Rand) error {
		return func(s *Store, rng *rand.Rand) error {
			p := w.reading(rng.IntN(min(points, w.cycle())), 0)
			_, ok, err := s.Get(p.Register())
			if err == nil && !ok {
				return fmt.Errorf("register %v not found", p.Register())
			}
			return err
		}
	}
	for _, tc := range []struct {
		name    string
		profile Profile
	}{{"cloud", ProfileCloud}, {"edge", ProfileEdge}} {
		b.Run("get-"+tc.name, func(b *testing.B) {
			reads(b, tc.profile, 20_000, get(fixture(b, tc.profile).w))
		})
	}
	b.Run("scan-cloud", func(b *testing.B) {
		reads(b, ProfileCloud, 1, func(s *Store, _ *rand.Rand) error {
			n := 0
			err := s.ScanAll(func(*crdt.Point) error { n++; return nil })
			if err == nil && n < points {
				return fmt.Errorf("scanned %d points, wrote %d", n, points)
			}
			return err
		})
	})
	b.Run("open-cloud", func(b *testing.B) {
		p := fixture(b, ProfileCloud)
		var with, without time.Duration
		for i := 0; b.Loop(); i++ {
			for k := range 2 {
				checks := (i+k)%2 == 0
				start := time.Now()
				s := checksumStore(b, p.dir, ProfileCloud, checks)
				d := time.Since(start)
				s.Close()
				if checks {
					with += d
				} else {
					without += d
				}
			}
		}
		b.ReportMetric(float64(with.Milliseconds())/float64(b.N), "ms/open")
		b.ReportMetric(float64(without.Milliseconds())/float64(b.N), "unchecked-ms/open")
		b.ReportMetric(without.Seconds()/with.Seconds(), "ratio")
	})
}
