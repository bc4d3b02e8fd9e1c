package replica

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// sharedPair starts a and b with the same root and the same shared points
// (identical HLC and origin, as a peer seeded from a backup holds them),
// plus differ points of their own each, then links b to a as a peer, with
// tune applied to b. It returns the encoded size of the shared points.
func sharedPair(t testing.TB, shared, differ int, tune func(*Config)) (a, b *node, encoded int) {
	t.Helper()
	a = startNode(t, "a", nodeOpts{tune: benchTuning})
	b = startNode(t, "b", nodeOpts{root: a.root, tune: func(c *Config) { benchTuning(c); tune(c) }})
	origin := uuid.New()
	at := crdt.NewTimestamp(time.Now().UnixMilli(), 0)
	var pts []crdt.Point
	var sensor uuid.UUID
	for i := range shared {
		if i%100 == 0 {
			sensor = uuid.New()
			pts = append(pts, crdt.Point{Node: sensor, Parent: a.root, Type: crdt.TypeEdge, Key: "0", Time: at, Origin: origin})
		}
		pts = append(pts, crdt.Point{Node: sensor, Type: "reading", Key: strconv.Itoa(i), Value: float64(i), Time: at, Origin: origin})
	}
	for i := 0; i < len(pts); i += 4096 {
		part := pts[i:min(i+4096, len(pts))]
		encoded += len(crdt.AppendBatch(nil, part))
		a.write(part...)
		b.write(part...)
	}
	for i := range differ {
		a.write(valPt(sensor, "onlyA"+strconv.Itoa(i), 1))
		b.write(valPt(sensor, "onlyB"+strconv.Itoa(i), 2))
	}
	b.stop()
	b.cfg.Peers, b.cfg.PeerCreds = []string{a.url()}, a.admin
	b.start()
	return a, b, encoded
}

// TestFirstLinkComparesBeforeItSends: two replicas that hold the same
// 20,000 points but no positions in each other's feeds compare by digest
// before either pushes: the link carries the differences, not the data,
// and both sides then resume from the positions set by the comparison.
func TestFirstLinkComparesBeforeItSends(t *testing.T) {
	a, b, encoded := sharedPair(t, 20_000, 50, func(*Config) {})
	b.waitInSync(a.url())
	if !converged(a, b, uuid.Nil) {
		t.Fatal("not converged")
	}
	l := b.link(a.url())
	if wire := l.BytesSent + l.BytesRecv; wire > uint64(encoded)/5 {
		t.Fatalf("the first link carried %d bytes for %d bytes of shared points", wire, encoded)
	}
	// The positions moved: a new write is pushed, and only it.
	s := uuid.New()
	sent := b.link(a.url()).BytesSent
	b.write(edgePt(b.root, s), valPt(s, "after", 1))
	a.waitValue(s, "after", 1)
	b.waitInSync(a.url())
	if d := b.link(a.url()).BytesSent - sent; d > 4096 {
		t.Fatalf("a write after the first link cost %d bytes", d)
	}
	a.write(valPt(s, "back", 1))
	b.waitValue(s, "back", 1)
}

// BenchmarkFirstLink: two replicas share 100,000 points and differ by 200
// (100 on each side), with no positions in each other's feeds. Reported:
// the bytes on the link until both are in sync, with the comparison first
// and, in the same run, with it turned off (the plain stream of before).
func BenchmarkFirstLink(b *testing.B) {
	for _, mode := range []struct {
		name  string
		plain bool
	}{{"compare", false}, {"plain", true}} {
		b.Run(mode.name, func(b *testing.B) {
			for range b.N {
				na, nb, encoded := sharedPair(b, 100_000, 100, func(c *Config) { c.plainFirstLink = mode.plain })
				t0 := time.Now()
				nb.waitInSync(na.url())
				waitFor(b, "converged", time.Minute, func() bool { return converged(na, nb, uuid.Nil) })
				l := nb.link(na.url())
				b.ReportMetric(float64(l.BytesSent+l.BytesRecv)/1024, "link-KiB")
				b.ReportMetric(float64(encoded)/1024, "shared-KiB")
				b.ReportMetric(time.Since(t0).Seconds(), "in-sync-s")
			}
		})
	}
}
