package replica

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport/faultproxy"
)

// repairFixture is a pair of stores (two instances, one root) holding the
// same n points (nodes of 100 points under the root), written once and
// copied for every case.
type repairFixture struct {
	dirA, dirB string
	root       uuid.UUID
	nodes      []uuid.UUID
}

func buildRepairFixture(b *testing.B, n int) repairFixture {
	b.Helper()
	f := repairFixture{dirA: b.TempDir(), dirB: b.TempDir(), root: uuid.New()}
	origin, base := uuid.New(), crdt.NewTimestamp(time.Now().Add(-time.Hour).UnixMilli(), 0)
	var all []crdt.Point
	for i := 0; i < n/100; i++ {
		id := uuid.New()
		f.nodes = append(f.nodes, id)
		e := edgePt(f.root, id)
		e.Time, e.Origin = base, origin
		all = append(all, e)
		for k := range 100 {
			all = append(all, crdt.Point{Node: id, Type: "reading", Key: strconv.Itoa(k), Value: float64(k),
				Time: base + crdt.Timestamp(k), Origin: origin})
		}
	}
	for _, dir := range []string{f.dirA, f.dirB} {
		nd := startNode(b, "fixture", nodeOpts{dir: dir, root: f.root})
		for i := 0; i < len(all); i += 10_000 {
			if _, err := nd.st.Apply(all[i:min(i+10_000, len(all))]); err != nil {
				b.Fatal(err)
			}
		}
		nd.stop()
	}
	return f
}

// copyDir copies a closed store's directory.
func copyDir(b *testing.B, from string) string {
	b.Helper()
	to := b.TempDir()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		b.Fatal(err)
	}
	return to
}

// BenchmarkRepair measures one repair round between two replicas that hold
// the same n points except for d (d random points written again on one
// side), with push off: bytes on the wire (both ways, through a proxy, NATS
// framing included) beyond the encoded differing points, round trips, the
// time each side spent in repair code, and wall time on loopback.
func BenchmarkRepair(b *testing.B) {
	sizes := []int{10_000, 100_000, 1_000_000}
	if s := os.Getenv("SIOT_REPAIR_SIZES"); s != "" {
		sizes = nil
		for _, f := range splitComma(s) {
			n, _ := strconv.Atoi(f)
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		fix := buildRepairFixture(b, n)
		for _, d := range []int{1, 10, 1000, 10_000} {
			if d > n/10 {
				continue
			}
			b.Run(fmt.Sprintf("N=%d/d=%d", n, d), func(b *testing.B) {
				for range b.N {
					runRepairCase(b, fix, d, nil)
				}
			})
		}
	}
	// The cellular profile: 100 kbit/s, 300 ms round trip.
	fix := buildRepairFixture(b, 100_000)
	b.Run("cellular/N=100000/d=100", func(b *testing.B) {
		for range b.N {
			runRepairCase(b, fix, 100, func(px *proxyT) {
				px.SetRate(100_000 / 8)
				px.SetLatency(150 * time.Millisecond)
			})
		}
	})
}

type proxyT = faultproxy.Proxy

func runRepairCase(b *testing.B, fix repairFixture, d int, shape func(*proxyT)) {
	b.StopTimer()
	tune := func(c *Config) {
		benchTuning(c)
		c.NoPush = true
		c.RepairInterval = time.Hour
		c.AckTimeout = time.Minute
	}
	a := startNode(b, "a", nodeOpts{dir: copyDir(b, fix.dirA), root: fix.root, tune: tune})
	bdir := copyDir(b, fix.dirB)
	// d differences: points written again on b's side before it links.
	rng := rand.New(rand.NewPCG(uint64(d), 1))
	var diff []crdt.Point
	{
		b0 := startNode(b, "b0", nodeOpts{dir: bdir, root: fix.root})
		for i := range d {
			nd := fix.nodes[rng.IntN(len(fix.nodes))]
			diff = append(diff, crdt.Point{Node: nd, Type: "reading", Key: strconv.Itoa(rng.IntN(100)), Value: float64(-1 - i)})
		}
		for i := 0; i < len(diff); i += 5000 {
			res, err := b0.rep.Write(diff[i:min(i+5000, len(diff))])
			if err != nil {
				b.Fatal(err)
			}
			copy(diff[i:], res.Changes)
		}
		b0.stop()
	}
	px := proxyTo(b, a)
	if shape != nil {
		shape(px)
	}
	a.rep.acceptor.repairTime.Store(0)
	b.StartTimer()
	bn := startNode(b, "b", nodeOpts{dir: bdir, root: fix.root, peers: []string{px.URL()}, tune: tune})
	var st RepairStats
	waitFor(b, "repair", 10*time.Minute, func() bool {
		var equal bool
		st, equal = bn.lastRepair(px.URL())
		return equal && st.RoundTrips > 0
	})
	b.StopTimer()
	stats := px.Stats()
	wire := stats.ClientToTarget + stats.TargetToClient
	// Subtract the handshake and the final equal round: measure them on
	// an equal pair of the same size is costly; they are a few hundred
	// bytes, reported in BENCHMARKS.md separately.
	encoded := len(crdt.AppendBatch(nil, diff))
	b.ReportMetric(float64(wire-int64(encoded))/float64(d), "B/diff-beyond-points")
	b.ReportMetric(float64(st.RoundTrips), "round-trips")
	b.ReportMetric(float64(st.Took.Milliseconds()), "round-ms")
	b.ReportMetric(float64(st.Work.Microseconds())/1000, "dialer-ms")
	b.ReportMetric(float64(a.rep.acceptor.repairTime.Load())/1e6, "responder-ms")
	b.ReportMetric(float64(wire), "wire-B")
	bn.stop()
	a.stop()
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
