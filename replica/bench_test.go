package replica

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// benchTuning keeps production timers: benchmarks measure what users get.
func benchTuning(c *Config) {
	d := Config{}
	d.setDefaults()
	c.RetryMin, c.RetryMax, c.PingInterval, c.SessionTimeout, c.AckTimeout, c.HelloTimeout =
		d.RetryMin, d.RetryMax, d.PingInterval, d.SessionTimeout, d.AckTimeout, d.HelloTimeout
	if benchOverride != nil {
		benchOverride(c)
	}
}

var benchOverride func(*Config)

// waitApplied blocks until n's store holds register (id, typ) with value
// v, waking on every change n applies.
func waitApplied(b *testing.B, n *node, kick chan struct{}, id uuid.UUID, typ string, v float64) {
	deadline := time.After(10 * time.Second)
	for {
		if p := n.get(id, uuid.Nil, typ, "0"); p.Time != 0 && p.Value == v {
			return
		}
		select {
		case <-kick:
		case <-deadline:
			b.Fatalf("%s: %v never arrived", n.name, v)
		}
	}
}

// BenchmarkPropagation measures the time from a durable local write on one
// side to the point being durable on the other, edge → cloud and cloud →
// edge, over loopback NATS, one write at a time. Reported: p50 and p99.
func BenchmarkPropagation(b *testing.B) {
	for _, dir := range []string{"edge-to-cloud", "cloud-to-edge"} {
		b.Run(dir, func(b *testing.B) {
			cloud := startNode(b, "cloud", nodeOpts{tune: benchTuning})
			edge := startNode(b, "edge", nodeOpts{upstreams: []string{cloud.url()}, tune: benchTuning})
			edge.waitInSync(cloud.url())
			s := uuid.New()
			edge.write(edgePt(edge.root, s))
			from, to := edge, cloud
			if dir == "cloud-to-edge" {
				from, to = cloud, edge
			}
			waitFor(b, "the sensor on both sides", 10*time.Second, func() bool {
				return cloud.get(s, edge.root, crdt.TypeEdge, "0").Time != 0
			})
			// Baseline in the same run: one durable local write on the
			// receiving side, the floor under any propagation.
			base := make([]time.Duration, 0, 500)
			for i := range cap(base) {
				t0 := time.Now()
				to.write(valPt(s, "base", float64(i)))
				base = append(base, time.Since(t0))
			}
			slices.Sort(base)
			kick := to.rep.hub.register()
			defer to.rep.hub.unregister(kick)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				from.write(valPt(s, "n", float64(i+1)))
				t0 := time.Now()
				waitApplied(b, to, kick, s, "n", float64(i+1))
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(base[len(base)/2].Microseconds())/1000, "local-write-p50-ms")
			b.ReportMetric(float64(base[(len(base)*99)/100].Microseconds())/1000, "local-write-p99-ms")
		})
	}
}

// BenchmarkResume100k cuts an edge off, writes 100,000 changes on it
// (batches of 1,000 sensor points), restores the link and measures the
// time until the cloud holds them all, and the bytes that crossed the
// proxy both ways divided by the batch-encoded size of the changes.
func BenchmarkResume100k(b *testing.B) {
	const n, batch = 100_000, 1000
	for range b.N {
		b.StopTimer()
		cloud := startNode(b, "cloud", nodeOpts{tune: benchTuning})
		px := proxyTo(b, cloud)
		edge := startNode(b, "edge", nodeOpts{upstreams: []string{px.URL()}, tune: benchTuning})
		edge.waitInSync(px.URL())
		sensors := make([]uuid.UUID, 100)
		var pts []crdt.Point
		for i := range sensors {
			sensors[i] = uuid.New()
			pts = append(pts, edgePt(edge.root, sensors[i]))
		}
		edge.write(pts...)
		waitFor(b, "sensors", 10*time.Second, func() bool { return cloud.get(sensors[99], edge.root, crdt.TypeEdge, "0").Time != 0 })
		edge.waitInSync(px.URL())
		px.Cut()
		waitFor(b, "link down", 10*time.Second, func() bool { return !edge.link(px.URL()).Connected })
		types := []string{"temp", "humidity", "pressure", "voltage", "current"}
		var encoded int
		first := edge.st.LastSeq()
		for i := 0; i < n; i += batch {
			pts = pts[:0]
			for j := range batch {
				k := i + j
				// Every change a register of its own: 100 sensors × 5
				// types × 200 keys.
				pts = append(pts, crdt.Point{Node: sensors[k%len(sensors)], Type: types[(k/len(sensors))%len(types)],
					Key: strconv.Itoa(k / (len(sensors) * len(types))), Value: float64(k%1000) / 4})
			}
			edge.write(pts...)
		}
		// The encoded size of the changes as the edge holds them.
		var all []crdt.Point
		if err := edge.st.Feed(first, func(c *store.Change) error {
			all = append(all, c.Point)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < len(all); i += 4096 {
			encoded += len(crdt.AppendBatch(nil, all[i:min(i+4096, len(all))]))
		}
		before := px.Stats()
		last := all[len(all)-1]
		b.StartTimer()
		t0 := time.Now()
		px.Restore()
		waitFor(b, "resume", 60*time.Second, func() bool {
			p := cloud.get(last.Node, uuid.Nil, last.Type, last.Key)
			return p.Time == last.Time
		})
		el := time.Since(t0)
		b.StopTimer()
		edge.waitInSync(px.URL())
		after := px.Stats()
		wire := (after.ClientToTarget - before.ClientToTarget) + (after.TargetToClient - before.TargetToClient)
		b.ReportMetric(el.Seconds(), "converge-s")
		b.ReportMetric(float64(wire)/float64(encoded), "wire/encoded")
		b.ReportMetric(float64(len(all)), "changes")
		b.ReportMetric(float64(encoded)/float64(len(all)), "encoded-B/change")
		edge.stop()
		cloud.stop()
	}
}
