//go:build !race

// The footprint of a store is measured in a fresh child process (this test
// binary run again with only TestFootprintChild selected), so neither the
// parent's heap nor other tests pollute the figures. The race detector
// multiplies memory use, so these tests only exist without it; `make test`
// runs them in its non-race pass.

package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/siot-io/siot/crdt"
)

// footprintEnv selects the child's scenario: "edge" or "cloud", a colon,
// and the data directory.
const footprintEnv = "SIOT_FOOTPRINT_CHILD"

// footprintNoLimitEnv, when set in a child's environment, keeps it from
// setting the profile's memory limit.
const footprintNoLimitEnv = "SIOT_FOOTPRINT_NOLIMIT"

// footprintHeapEnv, when set in a child's environment, names a file where
// it writes a heap profile right after the writes.
const footprintHeapEnv = "SIOT_FOOTPRINT_HEAP"

// footprint is what a child reports.
type footprint struct {
	Scenario  string
	Points    int   // distinct registers held
	Written   int   // points applied
	HWMKiB    int64 // VmHWM: peak resident set
	WriteKiB  int64 // VmHWM after the writes, before the reads
	RSSKiB    int64 // VmRSS at the end
	AnonKiB   int64 // RssAnon at the end (heap, stacks, Badger's arenas)
	FileKiB   int64 // RssFile at the end (mapped files: tables, logs, the binary)
	HeapKiB   int64 // Go heap in use at the end
	DiskBytes int64 // bytes in the data directory after Close
	Seconds   float64
	LimitKiB  int64 // the soft memory limit set, 0: none
}

// TestFootprintChild is the child side: it returns at once unless the
// parent set footprintEnv.
func TestFootprintChild(t *testing.T) {
	spec := os.Getenv(footprintEnv)
	if spec == "" {
		return
	}
	scenario, dir, ok := strings.Cut(spec, ":")
	if !ok {
		t.Fatalf("bad %s=%q", footprintEnv, spec)
	}
	var (
		profile          Profile
		w                *workload
		points, batchLen int
		passes           int
	)
	switch scenario {
	case "edge":
		// An edge device: its own subtree of 10,000 registers, written
		// in batches of 100 (a few seconds of readings), then overwritten
		// once more, then read the way a link does (the change feed, a
		// node page by page, the digests).
		profile, w, batchLen, passes = ProfileEdge, edgeWorkload(benchRoot), 100, 2
	case "cloud":
		// A cloud: 1,000,000 registers in batches of 1,000.
		profile, w, batchLen, passes = ProfileCloud, cloudWorkload(benchRoot), 1000, 1
	default:
		t.Fatalf("unknown scenario %q", scenario)
	}
	points = w.registers()
	// As the program would: the profile's memory limit, unless the
	// operator set GOMEMLIMIT (or the parent asked for none).
	limit := int64(0)
	if os.Getenv("GOMEMLIMIT") == "" && os.Getenv(footprintNoLimitEnv) == "" {
		limit = profile.MemoryLimit()
		debug.SetMemoryLimit(limit)
	}
	start := time.Now()
	s := benchStore(t, dir, profile, w.root)
	writeAll(t, s, w, points*passes, batchLen)
	written := readStatus(t)
	if path := os.Getenv(footprintHeapEnv); path != "" {
		// For analysis: the heap right after the writes.
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	n := 0
	if err := s.ChangesSince(0, func(uint64, *crdt.Point) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, d := range w.devices[:min(len(w.devices), 20)] {
		afterType, afterKey := "", ""
		for {
			pts, more, err := s.PageNode(d, afterType, afterKey, 100)
			if err != nil {
				t.Fatal(err)
			}
			if !more {
				break
			}
			afterType, afterKey = pts[len(pts)-1].Type, pts[len(pts)-1].Key
		}
	}
	if _, err := s.NodeDigest(w.root); err != nil {
		t.Fatal(err)
	}
	st := readStatus(t)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fp := footprint{
		Scenario: scenario, Points: points, Written: points * passes,
		HWMKiB: st["VmHWM"], WriteKiB: written["VmHWM"], RSSKiB: st["VmRSS"], AnonKiB: st["RssAnon"], FileKiB: st["RssFile"],
		HeapKiB: int64(ms.HeapInuse >> 10), DiskBytes: dirSize(t, dir), Seconds: time.Since(start).Seconds(),
		LimitKiB: limit >> 10,
	}
	if n < points {
		t.Fatalf("change feed holds %d changes, want at least %d", n, points)
	}
	out, _ := json.Marshal(fp)
	fmt.Printf("FOOTPRINT %s\n", out)
}

// readStatus returns the kB fields of /proc/self/status.
func readStatus(t testing.TB) map[string]int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	m := make(map[string]int64)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				m[k] = n
			}
		}
	}
	return m
}

func dirSize(t testing.TB, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runFootprint runs scenario in a child process and returns its report.
func runFootprint(t testing.TB, scenario string, noLimit bool) footprint {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("footprint needs /proc/self/status")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFootprintChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), footprintEnv+"="+scenario+":"+filepath.Join(dir, "data"))
	if noLimit {
		cmd.Env = append(cmd.Env, footprintNoLimitEnv+"=1")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("footprint child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if j, ok := strings.CutPrefix(line, "FOOTPRINT "); ok {
			var fp footprint
			if err := json.Unmarshal([]byte(j), &fp); err != nil {
				t.Fatal(err)
			}
			return fp
		}
	}
	t.Fatalf("footprint child reported nothing:\n%s", out)
	return footprint{}
}

// edgeRSSLimit is the product requirement for an edge device: 40 MB.
const edgeRSSLimit = 40_000_000 / 1024 // KiB

// TestEdgeFootprint checks the hard requirement that an edge-profile
// process holding 10,000 points peaks at no more than 40 MB of RSS, with
// the memory limit the profile asks the program to set
// (ProfileEdge.MemoryLimit).
func TestEdgeFootprint(t *testing.T) {
	fp := runFootprint(t, "edge", false)
	t.Logf("edge, %d points (%d written), memory limit %d MiB: peak RSS %.1f MiB, RSS %.1f MiB (anon %.1f, file %.1f), heap %.1f MiB, disk %.1f MiB (%.0f B/point)",
		fp.Points, fp.Written, fp.LimitKiB>>10, mib(fp.HWMKiB), mib(fp.RSSKiB), mib(fp.AnonKiB), mib(fp.FileKiB), mib(fp.HeapKiB),
		float64(fp.DiskBytes)/(1<<20), float64(fp.DiskBytes)/float64(fp.Points))
	if fp.HWMKiB > edgeRSSLimit {
		t.Fatalf("edge process peaked at %.1f MB of RSS, limit 40 MB", float64(fp.HWMKiB)*1024/1e6)
	}
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// BenchmarkFootprint reports the whole-process RSS of a child process
// holding the cloud scenario (1,000,000 points, cloud profile) and the
// edge scenario (10,000 points, edge profile), with the profile's memory
// limit and without one (GOGC alone), and the bytes on disk per point
// after Close.
func BenchmarkFootprint(b *testing.B) {
	for _, scenario := range []string{"cloud", "edge"} {
		for _, noLimit := range []bool{false, true} {
			name := scenario
			if noLimit {
				name += "-nolimit"
			}
			b.Run(name, func(b *testing.B) {
				var fp footprint
				for b.Loop() {
					fp = runFootprint(b, scenario, noLimit)
				}
				b.ReportMetric(mib(fp.HWMKiB), "peak-RSS-MiB")
				b.ReportMetric(mib(fp.WriteKiB), "write-peak-MiB")
				b.ReportMetric(mib(fp.RSSKiB), "RSS-MiB")
				b.ReportMetric(mib(fp.HeapKiB), "heap-MiB")
				b.ReportMetric(float64(fp.DiskBytes)/float64(fp.Points), "disk-B/point")
			})
		}
	}
}
