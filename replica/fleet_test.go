package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// A fleet of edges, simulated so that the machine measures the cloud: each
// fake edge speaks the dialer's side of the link protocol with no store of
// its own (hello as its device key, start, one push of its points, acks for
// the cloud's pushes) and holds only counters.

// fakeEdge is one simulated edge. Its feed is its points, numbered 1 to
// n, then one more change for each write; it remembers how far it holds
// the cloud's feed, so it resumes after a reconnect as a real edge does.
type fakeEdge struct {
	dev   uuid.UUID
	inst  uuid.UUID
	creds *transport.Creds
	batch []byte     // its points, encoded
	n     uint64     // how many
	last  crdt.Point // the last of them

	nc       *nats.Conn
	up       string        // the session's up subject
	sent     atomic.Uint64 // our feed's end
	have     atomic.Uint64 // how far we hold the cloud's feed
	acked    atomic.Bool   // the cloud acknowledged our points
	idle     atomic.Bool   // the cloud said it has nothing more for us
	received atomic.Uint64 // points the cloud pushed to us
	failed   atomic.Value  // error: the session ended
}

// newFleet provisions n devices below root with provision (a device
// node's edge and key points, a few hundred devices a call), each with a
// key and an edge of perEdge points (sensors of 100 readings), stamped
// now.
func newFleet(t testing.TB, root uuid.UUID, provision func([]crdt.Point), n, perEdge int) []*fakeEdge {
	t.Helper()
	now := crdt.NewTimestamp(time.Now().UnixMilli(), 0)
	fleet := make([]*fakeEdge, n)
	var keys []crdt.Point
	for i := range fleet {
		dev := uuid.New()
		c, err := transport.NewKeyCreds(transport.KindKey, dev)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, edgePt(root, dev), crdt.Point{Node: dev, Type: crdt.TypeAuthKey, Key: mustPub(t, c), Value: 1})
		if len(keys) >= 1000 || i == n-1 {
			provision(keys)
			keys = keys[:0]
		}
		inst := uuid.New()
		var pts []crdt.Point
		var sensor uuid.UUID
		for k := range perEdge {
			if k%100 == 0 {
				sensor = uuid.New()
				pts = append(pts, crdt.Point{Node: sensor, Parent: dev, Type: crdt.TypeEdge, Key: crdt.DefaultKey, Time: now, Origin: inst})
			}
			pts = append(pts, crdt.Point{Node: sensor, Type: "reading", Key: strconv.Itoa(k), Value: float64(k), Time: now, Origin: inst})
		}
		fleet[i] = &fakeEdge{dev: dev, inst: inst, creds: c, batch: crdt.AppendBatch(nil, pts), n: uint64(len(pts)), last: pts[len(pts)-1]}
		fleet[i].sent.Store(uint64(len(pts)))
	}
	return fleet
}

// link connects e to url and runs the handshake and the push of what the
// cloud lacks of its points (all of them, or none after a reconnect); the
// cloud's pushes are acknowledged by the subscription until e closes.
func (e *fakeEdge) link(url string) error {
	e.close()
	e.acked.Store(false)
	e.idle.Store(false)
	id, _ := e.creds.Identity()
	nc, err := transport.Dial(url, transport.DialConfig{Creds: e.creds, Timeout: 60 * time.Second})
	if err != nil {
		return err
	}
	e.nc = nc
	hello, _ := transport.Encode(transport.Hello{Proto: transport.LinkProto, Instance: e.inst, Root: e.dev,
		Role: transport.RoleEdge, Time: time.Now().UnixMilli()})
	m, err := nc.Request(transport.Subject(id, transport.NameHello), hello, 60*time.Second)
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	var w transport.Welcome
	if err := transport.Decode(m.Data, 0, &w); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	subj, err := transport.Subjects(id, w.Session)
	if err != nil {
		return err
	}
	e.up = subj.Up
	if _, err := nc.Subscribe(subj.Down, func(m *nats.Msg) {
		var p transport.Push
		if err := transport.Decode(m.Data, 0, &p); err != nil {
			e.failed.Store(err)
			return
		}
		pts, err := crdt.DecodeBatch(p.Points, 0)
		if err != nil {
			e.failed.Store(err)
			return
		}
		e.received.Add(uint64(len(pts)))
		if p.Through > e.have.Load() {
			e.have.Store(p.Through)
		}
		if p.Idle {
			e.idle.Store(true)
		}
		b, _ := transport.Encode(transport.Ack{Have: p.Through})
		_ = m.Respond(b)
	}); err != nil {
		return err
	}
	start, _ := transport.Encode(transport.Start{Have: e.have.Load()})
	if _, err := nc.Request(subj.Start, start, 60*time.Second); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	var push transport.Push
	switch sent := e.sent.Load(); {
	case w.Have == 0:
		push = transport.Push{Through: e.n, Idle: sent == e.n, Points: e.batch}
	case w.Have >= sent:
		push = transport.Push{From: w.Have, Through: w.Have, Idle: true, Points: crdt.AppendBatch(nil, nil)}
	default:
		return fmt.Errorf("the cloud holds %d of %d changes: the fake edge cannot resend single writes", w.Have, sent)
	}
	m, err = nc.Request(subj.Up, mustEncode(push), 60*time.Second)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	var a transport.Ack
	if err := transport.Decode(m.Data, 0, &a); err != nil || a.Rejected > 0 {
		return fmt.Errorf("push: %+v %v", a, err)
	}
	e.acked.Store(true)
	return nil
}

func mustEncode(v any) []byte {
	b, err := transport.Encode(v)
	if err != nil {
		panic(err)
	}
	return b
}

// write pushes one point as the next change of e's feed and waits for
// the cloud's ack: the point is in the cloud's store when it returns.
func (e *fakeEdge) write(p crdt.Point) error {
	from := e.sent.Load()
	push := transport.Push{From: from, Through: from + 1, Idle: true, Points: crdt.AppendBatch(nil, []crdt.Point{p})}
	m, err := e.nc.Request(e.up, mustEncode(push), 30*time.Second)
	if err != nil {
		return err
	}
	var a transport.Ack
	if err := transport.Decode(m.Data, 0, &a); err != nil || a.Rejected > 0 || a.Have != from+1 {
		return fmt.Errorf("write: %+v %v", a, err)
	}
	e.sent.Store(from + 1)
	return nil
}

// close ends e's connection (a dropped link, as the cloud sees it).
func (e *fakeEdge) close() {
	if e.nc != nil {
		e.nc.Close()
	}
}

// inSync: our points are the cloud's and the cloud has nothing more for us.
func (e *fakeEdge) inSync() bool { return e.acked.Load() && e.idle.Load() }

// resetPeakRSS starts the kernel's count of the process's peak resident
// memory over (clear_refs 5); peakRSS reads it, in MB.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runFleet links every edge of fleet to cloud at once and waits until all
// are in sync, or timeout. It returns how long that took and the process
// CPU time spent (the cloud's, and the fake edges' small share).
func runFleet(t testing.TB, url string, fleet []*fakeEdge, timeout time.Duration) fleetRun {
	t.Helper()
	cpu0, t0 := cpuTime(), time.Now()
	var shed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(fleet))
	for _, e := range fleet {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := e.link(url)
				if d := retryAfter(err); d > 0 {
					// Shed by a busy cloud: come back when it says,
					// as a real edge does.
					shed.Add(1)
					if e.nc != nil {
						e.nc.Close()
					}
					time.Sleep(d)
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("edge %v: %w", e.dev, err)
				}
				return
			}
		}()
	}
	t.Cleanup(func() {
		for _, e := range fleet {
			if e.nc != nil {
				e.nc.Close()
			}
		}
	})
	synced, heapWritten := 0, false
	waitExplained(t, timeout, func() bool {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		synced = 0
		for _, e := range fleet {
			if err, _ := e.failed.Load().(error); err != nil {
				t.Fatalf("edge %v: %v", e.dev, err)
			}
			if e.inSync() {
				synced++
			}
		}
		if path := os.Getenv("SIOT_FLEET_HEAP"); path != "" && synced >= len(fleet)/2 && !heapWritten {
			// Half way: the in-use heap while sessions sync.
			heapWritten = true
			if f, err := os.Create(path); err == nil {
				_ = pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		return synced == len(fleet)
	}, func() string { return fmt.Sprintf("%d of %d edges in sync after %v", synced, len(fleet), timeout) })
	wg.Wait()
	return fleetRun{took: time.Since(t0), cpu: cpuTime() - cpu0, shed: int(shed.Load())}
}

// provision writes pts on n: newFleet's provisioning.
func (n *node) provision(pts []crdt.Point) { n.write(pts...) }

// fleetRun is what runFleet measured: the time until all were in sync,
// the process CPU spent, and how many hellos the cloud shed.
type fleetRun struct {
	took, cpu time.Duration
	shed      int
}

func (f fleetRun) report(b *testing.B, n int) {
	b.ReportMetric(f.took.Seconds(), "in-sync-s")
	b.ReportMetric(f.cpu.Seconds()*1000/float64(n), "cpu-ms/edge")
	b.ReportMetric(float64(f.shed), "shed")
}

// TestFleetSmall links 20 edges of 1,200 points at once: every edge gets
// in sync, every point reaches the cloud, no link drops, and the cloud
// stops within 5 s.
func TestFleetSmall(t *testing.T) {
	// The production ack and session timeouts: twenty edges syncing at
	// once under the race detector on two cores can hold an ack past the
	// test tuning's 4 s, or leave a simulated edge (which does not ping)
	// silent past its 6 s, and this test is about syncing, not about
	// detecting dead links.
	cloud := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.AckTimeout, c.SessionTimeout = 30*time.Second, time.Minute }})
	fleet := newFleet(t, cloud.root, cloud.provision, 20, 1200)
	run := runFleet(t, cloud.url(), fleet, 60*time.Second)
	t.Logf("20 edges in sync in %v, %v CPU", run.took.Round(time.Millisecond), run.cpu.Round(time.Millisecond))
	for _, e := range fleet {
		if p := cloud.get(e.last.Node, uuid.Nil, e.last.Type, e.last.Key); p.Time != e.last.Time {
			t.Fatalf("edge %v: its last point did not reach the cloud", e.dev)
		}
	}
	st := cloud.rep.Status()
	if len(st.Accepted) != len(fleet) {
		t.Fatalf("%d sessions, want %d", len(st.Accepted), len(fleet))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := cloud.rep.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	} else if err != nil {
		t.Fatalf("the cloud did not stop within 5 s with %d sessions", len(fleet))
	}
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
}

// fleetSizes reads the sizes from env (a comma-separated list), or def.
func fleetSizes(b *testing.B, env string, def ...int) []int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	var sizes []int
	for _, f := range splitComma(v) {
		n, err := strconv.Atoi(f)
		if err != nil {
			b.Fatalf("%s: %v", env, err)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// BenchmarkFleet links N edges of 1,200 points each (SIOT_FLEET, default
// 200,1000) to one cloud at once. Reported: the time until all are in
// sync, the process CPU per edge, and the process's peak resident memory
// from the start of the linking (the fake edges' share included).
func BenchmarkFleet(b *testing.B) {
	for _, n := range fleetSizes(b, "SIOT_FLEET", 200, 1000) {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				cloud := startNode(b, "cloud", nodeOpts{tune: benchTuning})
				fleet := newFleet(b, cloud.root, cloud.provision, n, 1200)
				runtime.GC()
				resetPeakRSS()
				runFleet(b, cloud.url(), fleet, 15*time.Minute).report(b, n)
				b.ReportMetric(peakRSS(), "peak-rss-MB")
			}
		})
	}
}

// BenchmarkFleetRestart syncs N edges (SIOT_FLEET_RESTART, default
// 1,000), restarts the cloud on its data, and relinks every edge at once,
// each resuming from its marks. Reported: the time until all are back in
// sync, and the CPU per edge for it.
func BenchmarkFleetRestart(b *testing.B) {
	for _, n := range fleetSizes(b, "SIOT_FLEET_RESTART", 1000) {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				cloud := startNode(b, "cloud", nodeOpts{tune: benchTuning})
				fleet := newFleet(b, cloud.root, cloud.provision, n, 1200)
				runFleet(b, cloud.url(), fleet, 15*time.Minute)
				for _, e := range fleet {
					e.close()
				}
				cloud.restart()
				run := runFleet(b, cloud.url(), fleet, 15*time.Minute)
				for _, e := range fleet {
					if got := e.received.Load(); got > 100 {
						b.Fatalf("edge %v: the cloud pushed %d points to it; it lacked none", e.dev, got)
					}
				}
				run.report(b, n)
			}
		})
	}
}

// BenchmarkFleetFanIn links N edges (SIOT_FANIN, default 1,000), then
// each writes one point a second, at evenly spread phases, for
// SIOT_FANIN_SECONDS (default 30). Reported: the latency from a write's
// push to the cloud's ack (the point is in the cloud's store) at p50 and
// p99, and the process CPU as a share of one core.
func BenchmarkFleetFanIn(b *testing.B) {
	secs := 30
	if v := os.Getenv("SIOT_FANIN_SECONDS"); v != "" {
		var err error
		if secs, err = strconv.Atoi(v); err != nil {
			b.Fatalf("SIOT_FANIN_SECONDS: %v", err)
		}
	}
	for _, n := range fleetSizes(b, "SIOT_FANIN", 1000) {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				cloud := startNode(b, "cloud", nodeOpts{tune: benchTuning})
				fleet := newFleet(b, cloud.root, cloud.provision, n, 1200)
				runFleet(b, cloud.url(), fleet, 15*time.Minute)
				lat := make([][]time.Duration, n)
				errs := make(chan error, n)
				var wg sync.WaitGroup
				cpu0, t0 := cpuTime(), time.Now()
				for i, e := range fleet {
					wg.Add(1)
					go func() {
						defer wg.Done()
						phase := time.Duration(i) * time.Second / time.Duration(n)
						for k := range secs {
							at := t0.Add(phase + time.Duration(k)*time.Second)
							time.Sleep(time.Until(at))
							p := crdt.Point{Node: e.last.Node, Type: "live", Key: "0", Value: float64(k),
								Time: crdt.NewTimestamp(time.Now().UnixMilli(), 0), Origin: e.inst}
							sent := time.Now()
							if err := e.write(p); err != nil {
								errs <- fmt.Errorf("edge %v: %w", e.dev, err)
								return
							}
							lat[i] = append(lat[i], time.Since(sent))
						}
					}()
				}
				wg.Wait()
				wall, cpu := time.Since(t0), cpuTime()-cpu0
				select {
				case err := <-errs:
					b.Fatal(err)
				default:
				}
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				slices.Sort(all)
				b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu-%core")
			}
		})
	}
}
