package replica

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// BenchmarkAuthCost measures what authentication and authorization cost,
// against the same work with them bypassed (no scope checks, no subject
// permissions), in the same run:
//
//   - ingest: a device imports batches of 1,000 readings (10 sensors of
//     its subtree) through the API; the checked and the bypassed server
//     take turns batch by batch, each going first every other time. Reported: points/s of each and their
//     ratio (checked / bypassed; 1 means free).
//   - propagation: an edge linked with a device key, one durable write at
//     a time edge → cloud; checked and bypassed links take turns, each
//     going first every other time.
//     Reported: p50 and p99 of each and the ratio of the p99s (bypassed /
//     checked; 1 means free).
func BenchmarkAuthCost(b *testing.B) {
	b.Run("ingest", func(b *testing.B) {
		type side struct {
			n       *node
			send    func([]byte) error
			elapsed time.Duration
			points  int
		}
		var sides [2]*side
		for i, bypass := range []bool{false, true} {
			n := startNode(b, fmt.Sprintf("cloud-%v", bypass), nodeOpts{bypass: bypass, tune: benchTuning})
			dev := uuid.New()
			n.write(edgePt(n.root, dev))
			creds := n.deviceCreds(dev)
			nc := n.dial(creds)
			id := keyID(creds)
			var sensors []uuid.UUID
			for range 10 {
				s := uuid.New()
				n.write(edgePt(dev, s))
				sensors = append(sensors, s)
			}
			sd := &side{n: n}
			sd.send = func(body []byte) error {
				m, err := nc.Request(transport.Subject(id, transport.NameImport), body, 10*time.Second)
				if err != nil {
					return err
				}
				return transport.Decode(m.Data, 0, &transport.ImportResult{})
			}
			sides[i] = sd
			// The batch: 10 sensors × 100 readings.
			pts := make([]crdt.Point, 0, 1000)
			for _, s := range sensors {
				for k := range 100 {
					pts = append(pts, crdt.Point{Node: s, Type: "reading", Key: fmt.Sprint(k), Value: float64(k)})
				}
			}
			batch, err := transport.Encode(transport.Import{Points: crdt.AppendBatch(nil, pts)})
			if err != nil {
				b.Fatal(err)
			}
			send := sd.send
			sd.send = func([]byte) error { return send(batch) }
		}
		b.ResetTimer()
		for i := range b.N {
			for _, sd := range []*side{sides[i%2], sides[1-i%2]} {
				t0 := time.Now()
				if err := sd.send(nil); err != nil {
					b.Fatal(err)
				}
				sd.elapsed += time.Since(t0)
				sd.points += 1000
			}
		}
		b.StopTimer()
		checked := float64(sides[0].points) / sides[0].elapsed.Seconds()
		bypassed := float64(sides[1].points) / sides[1].elapsed.Seconds()
		b.ReportMetric(checked, "checked-points/s")
		b.ReportMetric(bypassed, "bypassed-points/s")
		b.ReportMetric(checked/bypassed, "ratio")
	})
	b.Run("propagation", func(b *testing.B) {
		type side struct {
			cloud, edge *node
			s           uuid.UUID
			kick        chan struct{}
			lat         []time.Duration
		}
		var sides [2]*side
		for i, bypass := range []bool{false, true} {
			cloud := startNode(b, fmt.Sprintf("cloud-%v", bypass), nodeOpts{bypass: bypass, tune: benchTuning})
			dev := uuid.New()
			edge := startNode(b, "edge", nodeOpts{root: dev, upstreams: []string{cloud.url()}, upstreamCreds: cloud.deviceCreds(dev), tune: benchTuning})
			edge.waitInSync(cloud.url())
			s := uuid.New()
			edge.write(edgePt(dev, s))
			waitFor(b, "the sensor on the cloud", 10*time.Second, func() bool { return cloud.get(s, dev, crdt.TypeEdge, "0").Time != 0 })
			kick := cloud.rep.hub.register()
			b.Cleanup(func() { cloud.rep.hub.unregister(kick) })
			sides[i] = &side{cloud: cloud, edge: edge, s: s, kick: kick}
		}
		b.ResetTimer()
		for i := range b.N {
			// Alternate which goes first, so that neither always
			// follows the other's fsync.
			order := []*side{sides[i%2], sides[1-i%2]}
			for _, sd := range order {
				sd.edge.write(valPt(sd.s, "n", float64(i+1)))
				t0 := time.Now()
				waitApplied(b, sd.cloud, sd.kick, sd.s, "n", float64(i+1))
				sd.lat = append(sd.lat, time.Since(t0))
			}
		}
		b.StopTimer()
		p := func(lat []time.Duration, q int) float64 {
			slices.Sort(lat)
			return float64(lat[(len(lat)*q)/100].Microseconds()) / 1000
		}
		c99, u99 := p(sides[0].lat, 99), p(sides[1].lat, 99)
		b.ReportMetric(p(sides[0].lat, 50), "checked-p50-ms")
		b.ReportMetric(c99, "checked-p99-ms")
		b.ReportMetric(p(sides[1].lat, 50), "bypassed-p50-ms")
		b.ReportMetric(u99, "bypassed-p99-ms")
		b.ReportMetric(u99/c99, "p99-ratio")
	})
}
