package replica

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport/faultproxy"
)

// linkTimers are the periodic exchanges of an idle link.
type linkTimers struct {
	name              string
	ping, session     time.Duration // the dialer's session ping, the acceptor's silence timeout
	repair, repairMax time.Duration // the repair interval, and its stretch on an idle link
	keepAlive, server time.Duration // NATS keepalive of the link's connection, of the server
	history           time.Duration // the full history round's interval (0: none)
}

// scaled divides every interval by k.
func (lt linkTimers) scaled(k int64) linkTimers {
	d := func(v time.Duration) time.Duration { return v / time.Duration(k) }
	return linkTimers{lt.name, d(lt.ping), d(lt.session), d(lt.repair), d(lt.repairMax), d(lt.keepAlive), d(lt.server), d(lt.history)}
}

// idleTimers: before, the defaults this benchmark was written against;
// after, today's (DefaultConfig).
func idleTimers() []linkTimers {
	var c Config
	c.setDefaults()
	return []linkTimers{
		{name: "before", ping: 15 * time.Second, session: 60 * time.Second, repair: 60 * time.Second, repairMax: 60 * time.Second,
			keepAlive: 30 * time.Second, server: 30 * time.Second},
		{name: "now", ping: c.PingInterval, session: c.SessionTimeout, repair: c.RepairInterval, repairMax: c.RepairMaxInterval,
			keepAlive: c.KeepAlive, server: 2 * time.Minute, history: c.HistoryFullInterval},
	}
}

// BenchmarkIdleLink measures what an idle, in-sync edge link costs on the
// wire (NATS framing included, TCP/IP headers not): a device-key edge
// linked through a counting proxy, both ways summed. It runs in
// compressed time: every periodic interval is divided by
// SIOT_IDLE_SCALE (default 120) and the link is watched for two hours
// divided by the same, so the bytes are two hours' at the real intervals:
// the first hour after a write, while repair stretches its interval, and
// the next, the steady state of an idle device, which a month (720 hours)
// is made of. The timers of before and now run in the same run.
func BenchmarkIdleLink(b *testing.B) {
	scale := int64(120)
	if v, err := strconv.ParseInt(os.Getenv("SIOT_IDLE_SCALE"), 10, 64); err == nil && v > 0 {
		scale = v
	}
	for _, lt := range idleTimers() {
		b.Run(lt.name, func(b *testing.B) {
			st := lt.scaled(scale)
			tune := func(c *Config) {
				c.PingInterval, c.SessionTimeout = st.ping, st.session
				c.RepairInterval, c.RepairMaxInterval, c.KeepAlive = st.repair, st.repairMax, st.keepAlive
				if st.history > 0 {
					c.HistoryFullInterval = st.history
				} else {
					c.HistoryFullInterval = 1000 * time.Hour // before history rounds
				}
			}
			for range b.N {
				cloud := startNode(b, "cloud", nodeOpts{tune: tune, serverPing: st.server})
				px := proxyTo(b, cloud)
				dev := uuid.New()
				edge := startNode(b, "edge", nodeOpts{root: dev, upstreams: []string{px.URL()}, upstreamCreds: cloud.deviceCreds(dev), tune: tune})
				edge.waitInSync(px.URL())
				s := uuid.New()
				edge.write(edgePt(dev, s), valPt(s, "temp", 1))
				cloud.waitValue(s, "temp", 1)
				// Settle: the first repair rounds after the write.
				time.Sleep(2 * st.repair)
				hour := time.Hour / time.Duration(scale)
				s0 := px.Stats()
				time.Sleep(hour)
				s1 := px.Stats()
				// Then the steady state of an idle device, repair at its
				// longest interval: as many hours as the full history
				// round's interval holds, so it counts its share.
				steady := max(lt.history/time.Hour, 1)
				time.Sleep(time.Duration(steady) * hour)
				s2 := px.Stats()
				if !edge.link(px.URL()).Connected || s2.Accepted != s0.Accepted {
					b.Fatalf("the idle link dropped: %+v", edge.link(px.URL()))
				}
				bytes := func(a, b faultproxy.Stats) float64 {
					return float64(b.ClientToTarget - a.ClientToTarget + b.TargetToClient - a.TargetToClient)
				}
				b.ReportMetric(bytes(s0, s1), "first-hour-B")
				perHour := bytes(s1, s2) / float64(steady)
				b.ReportMetric(perHour, "steady-hour-B")
				b.ReportMetric(perHour*720/1e6, "MB/month")
				b.ReportMetric(float64(s2.ClientToTarget-s1.ClientToTarget)/float64(steady)*720/1e6, "up-MB/month")
			}
		})
	}
}

// BenchmarkPointBytes measures the bytes a changed point costs on an edge
// link (both ways, NATS framing included, TCP/IP headers not): an edge
// with a device key writes one point at a time, each sent in a push of
// its own and acknowledged before the next (as one reading a second is),
// then ten at a time. Repair is kept out of the count (1 h interval).
func BenchmarkPointBytes(b *testing.B) {
	for _, per := range []int{1, 10} {
		b.Run(strconv.Itoa(per)+"-per-write", func(b *testing.B) {
			tune := func(c *Config) { c.RepairInterval, c.PingInterval = time.Hour, time.Hour }
			cloud := startNode(b, "cloud", nodeOpts{tune: tune})
			px := proxyTo(b, cloud)
			dev := uuid.New()
			edge := startNode(b, "edge", nodeOpts{root: dev, upstreams: []string{px.URL()}, upstreamCreds: cloud.deviceCreds(dev), tune: tune})
			edge.waitInSync(px.URL())
			s := uuid.New()
			edge.write(edgePt(dev, s))
			waitFor(b, "the sensor on the cloud", 10*time.Second, func() bool { return cloud.get(s, dev, crdt.TypeEdge, "0").Time != 0 })
			kick := cloud.rep.hub.register()
			defer cloud.rep.hub.unregister(kick)
			const writes = 200
			s0 := px.Stats()
			for i := range writes {
				pts := make([]crdt.Point, per)
				for k := range pts {
					pts[k] = crdt.Point{Node: s, Type: "temp", Key: strconv.Itoa(k), Value: float64(i + 1)}
				}
				edge.write(pts...)
				waitAppliedKey(b, cloud, kick, s, "temp", strconv.Itoa(per-1), float64(i+1))
			}
			s1 := px.Stats()
			up := float64(s1.ClientToTarget - s0.ClientToTarget)
			down := float64(s1.TargetToClient - s0.TargetToClient)
			b.ReportMetric(up/float64(writes*per), "up-B/point")
			b.ReportMetric(down/float64(writes*per), "down-B/point")
		})
	}
}

// waitAppliedKey waits until n holds value v at id/typ/key.
func waitAppliedKey(b *testing.B, n *node, kick chan struct{}, id uuid.UUID, typ, key string, v float64) {
	deadline := time.After(10 * time.Second)
	for {
		if p := n.get(id, uuid.Nil, typ, key); p.Time != 0 && p.Value == v {
			return
		}
		select {
		case <-kick:
		case <-deadline:
			b.Fatalf("%s: %v never arrived", n.name, v)
		}
	}
}
