package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"siot/crdt"
	"siot/transport"
)

// A fleet of edges, simulated so that the machine measures the cloud: each
// fake edge speaks the dialer's side of the link protocol with no store of
// its own (hello as its device key, start, one push of its points, acks for
// the cloud's pushes) and holds only counters.

// fakeEdge is one simulated edge.
type fakeEdge struct {
	dev   uuid.UUID
	creds *transport.Creds
	pts   []crdt.Point

	nc       *nats.Conn
	acked    atomic.Bool   // the cloud acknowledged our points
	idle     atomic.Bool   // the cloud said it has nothing more for us
	received atomic.Uint64 // points the cloud pushed to us
	failed   atomic.Value  // error: the session ended
}

// newFleet provisions n devices on cloud, each with a key and an edge of
// perEdge points (sensors of 100 readings), stamped now.
func newFleet(t testing.TB, cloud *node, n, perEdge int) []*fakeEdge {
	t.Helper()
	now := crdt.NewTimestamp(time.Now().UnixMilli(), 0)
	fleet := make([]*fakeEdge, n)
	for i := range fleet {
		dev := uuid.New()
		c, err := transport.NewKeyCreds(transport.KindKey, dev)
		if err != nil {
			t.Fatal(err)
		}
		cloud.write(edgePt(cloud.root, dev), crdt.Point{Node: dev, Type: crdt.TypeAuthKey, Key: mustPub(t, c), Value: 1})
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
		fleet[i] = &fakeEdge{dev: dev, creds: c, pts: pts}
	}
	return fleet
}

// link connects e to url and runs the handshake and its one push; the
// cloud's pushes are acknowledged by the subscription until e closes.
func (e *fakeEdge) link(url string) error {
	id, _ := e.creds.Identity()
	nc, err := transport.Dial(url, transport.DialConfig{Creds: e.creds, Timeout: 60 * time.Second})
	if err != nil {
		return err
	}
	e.nc = nc
	hello, _ := transport.Encode(transport.Hello{Proto: transport.LinkProto, Instance: uuid.New(), Root: e.dev,
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
		if p.Idle {
			e.idle.Store(true)
		}
		b, _ := transport.Encode(transport.Ack{Have: p.Through})
		_ = m.Respond(b)
	}); err != nil {
		return err
	}
	start, _ := transport.Encode(transport.Start{})
	if _, err := nc.Request(subj.Start, start, 60*time.Second); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	push, _ := transport.Encode(transport.Push{From: w.Have, Through: uint64(len(e.pts)), Idle: true, Points: crdt.AppendBatch(nil, e.pts)})
	m, err = nc.Request(subj.Up, push, 60*time.Second)
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

// inSync: our points are the cloud's and the cloud has nothing more for us.
func (e *fakeEdge) inSync() bool { return e.acked.Load() && e.idle.Load() }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runFleet links every edge of fleet to cloud at once and waits until all
// are in sync, or timeout. It returns how long that took and the process
// CPU time spent (the cloud's, and the fake edges' small share).
func runFleet(t testing.TB, cloud *node, fleet []*fakeEdge, timeout time.Duration) (time.Duration, time.Duration) {
	t.Helper()
	cpu0, t0 := cpuTime(), time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(fleet))
	for _, e := range fleet {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := e.link(cloud.url())
				if d := retryAfter(err); d > 0 {
					// Shed by a busy cloud: come back when it says,
					// as a real edge does.
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
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		synced := 0
		for _, e := range fleet {
			if err, _ := e.failed.Load().(error); err != nil {
				t.Fatalf("edge %v: %v", e.dev, err)
			}
			if e.inSync() {
				synced++
			}
		}
		if synced == len(fleet) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d edges in sync after %v", synced, len(fleet), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	return time.Since(t0), cpuTime() - cpu0
}

// TestFleetSmall links 20 edges of 1,200 points at once: every edge gets
// in sync, every point reaches the cloud, no link drops, and the cloud
// stops within 5 s.
func TestFleetSmall(t *testing.T) {
	// The production ack timeout: twenty edges syncing at once under the
	// race detector on two cores can hold an ack past the test tuning's
	// 4 s, and this test is about syncing, not about detecting dead links.
	cloud := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.AckTimeout = 30 * time.Second }})
	fleet := newFleet(t, cloud, 20, 1200)
	took, cpu := runFleet(t, cloud, fleet, 60*time.Second)
	t.Logf("20 edges in sync in %v, %v CPU", took.Round(time.Millisecond), cpu.Round(time.Millisecond))
	for _, e := range fleet {
		last := e.pts[len(e.pts)-1]
		if p := cloud.get(last.Node, uuid.Nil, last.Type, last.Key); p.Time != last.Time {
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

// BenchmarkFleet links N edges of 1,200 points each (SIOT_FLEET, default
// 50,100,200) to one cloud at once. Reported: the time until all are in
// sync and the process CPU per edge.
func BenchmarkFleet(b *testing.B) {
	sizes := []int{50, 100, 200}
	if v := os.Getenv("SIOT_FLEET"); v != "" {
		sizes = nil
		for _, f := range splitComma(v) {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("SIOT_FLEET: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				cloud := startNode(b, "cloud", nodeOpts{tune: benchTuning})
				fleet := newFleet(b, cloud, n, 1200)
				took, cpu := runFleet(b, cloud, fleet, 15*time.Minute)
				b.ReportMetric(took.Seconds(), "in-sync-s")
				b.ReportMetric(cpu.Seconds()*1000/float64(n), "cpu-ms/edge")
			}
		})
	}
}
