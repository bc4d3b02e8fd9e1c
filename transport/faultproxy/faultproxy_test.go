package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// waitFor bounds every wait for something that should happen.
const waitFor = 10 * time.Second

// verifyNone fails t if goroutines started during the test are left when
// it ends. Call it first: its cleanup then runs last, after the proxy and
// echo server have closed, and goleak retries for a while before it
// reports.
func verifyNone(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// eventually polls cond until it holds, failing t after waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitFor)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// echoServer writes back whatever each connection sends and closes the
// connection at EOF.
type echoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, conns: make(map[net.Conn]struct{})}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns[c] = struct{}{}
			e.mu.Unlock()
			e.wg.Go(func() {
				io.Copy(c, c)
				c.Close()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		e.mu.Lock()
		for c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

func (e *echoServer) addr() string { return e.ln.Addr().String() }

func startProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(Config{Target: target, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and reads its echo.
func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(waitFor))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo differs from what was sent")
	}
}

// expectClosed asserts that c's peer has closed it (EOF or reset), not that
// a read merely timed out.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a cut connection: %v, want EOF or reset", err)
	}
}

// expectNothing asserts that nothing arrives on c for a while: the one
// place a test must watch a window pass, since it checks an absence.
func expectNothing(t *testing.T, c net.Conn, window time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(window))
	defer c.SetReadDeadline(time.Time{})
	n, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v while blackholed; want a timeout", n, err)
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func TestStartValidates(t *testing.T) {
	verifyNone(t)
	for _, listen := range []string{":0", "0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		_, err := Start(Config{Listen: listen, Target: "127.0.0.1:4222"})
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("Start(Listen %q) = %v, want ErrNotLoopback", listen, err)
		}
	}
	for _, cfg := range []Config{{}, {Target: "no-port"}, {Listen: "no-port", Target: "127.0.0.1:4222"}} {
		if _, err := Start(cfg); err == nil {
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
	p, err := Start(Config{Listen: "localhost:0", Target: "127.0.0.1:4222"})
	if err != nil {
		t.Fatalf("Start on localhost: %v", err)
	}
	if !strings.HasPrefix(p.URL(), "nats://") || !strings.HasSuffix(p.URL(), p.Addr()) {
		t.Errorf("URL %q does not name Addr %q", p.URL(), p.Addr())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestPassThrough(t *testing.T) {
	verifyNone(t)
	p := startProxy(t, startEcho(t).addr())
	c := dial(t, p.Addr())
	msg := pattern(200 << 10)
	roundTrip(t, c, msg)
	roundTrip(t, c, []byte("small"))
	want := int64(len(msg) + len("small"))
	eventually(t, "byte counts", func() bool {
		s := p.Stats()
		return s.ClientToTarget == want && s.TargetToClient == want
	})
	if s := p.Stats(); s.Accepted != 1 || s.Active != 1 || s.Refused != 0 || s.DialFailures != 0 {
		t.Fatalf("stats %+v, want one accepted, active connection", s)
	}
	c.Close()
	eventually(t, "no active connection after the client closes", func() bool { return p.Stats().Active == 0 })
}

func TestDialFailure(t *testing.T) {
	verifyNone(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := startProxy(t, dead)
	expectClosed(t, dial(t, p.Addr()))
	eventually(t, "a dial failure", func() bool { return p.Stats().DialFailures == 1 })
}

func TestCutAndRestore(t *testing.T) {
	verifyNone(t)
	p := startProxy(t, startEcho(t).addr())
	live := []net.Conn{dial(t, p.Addr()), dial(t, p.Addr())}
	for _, c := range live {
		roundTrip(t, c, []byte("before"))
	}
	p.Cut()
	if a := p.Stats().Active; a != 0 {
		t.Fatalf("%d connections active after Cut returned", a)
	}
	for _, c := range live {
		expectClosed(t, c)
	}
	expectClosed(t, dial(t, p.Addr()))
	eventually(t, "a refused connection", func() bool { return p.Stats().Refused == 1 })

	p.Restore()
	roundTrip(t, dial(t, p.Addr()), []byte("after"))
	if s := p.Stats(); s.Accepted != 4 || s.Active != 1 {
		t.Fatalf("stats %+v, want 4 accepted and 1 active", s)
	}
}

func TestBlackholeThenRestore(t *testing.T) {
	verifyNone(t)
	p := startProxy(t, startEcho(t).addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("ping"))
	eventually(t, "ping counted both ways", func() bool {
		s := p.Stats()
		return s.ClientToTarget == 4 && s.TargetToClient == 4
	})
	before := p.Stats()

	p.Blackhole()
	late := dial(t, p.Addr()) // accepted while blackholed: forwards nothing either
	late.Write([]byte("late"))

	// Write until the proxy's refusal to read fills the socket buffers and
	// a write blocks.
	var sent int
	block := pattern(251 << 10)
	for {
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Write(block)
		sent += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("write while blackholed: %v", err)
		}
		if sent > 1<<30 {
			t.Fatalf("wrote %d bytes into a blackhole without blocking", sent)
		}
	}
	c.SetWriteDeadline(time.Time{})
	expectNothing(t, c, 200*time.Millisecond)
	expectNothing(t, late, 50*time.Millisecond)
	if s := p.Stats(); s.ClientToTarget != before.ClientToTarget || s.TargetToClient != before.TargetToClient {
		t.Fatalf("bytes moved while blackholed: %+v, before %+v", s, before)
	}
	t.Logf("%d bytes buffered before writes blocked", sent)

	p.Restore()
	c.SetReadDeadline(time.Now().Add(waitFor))
	got := make([]byte, sent)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read after Restore: %v", err)
	}
	for i, b := range got {
		if b != block[i%len(block)] {
			t.Fatalf("byte %d out of order after Restore", i)
		}
	}
	late.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.ReadFull(late, got[:4]); err != nil || string(got[:4]) != "late" {
		t.Fatalf("late connection after Restore: %q, %v", got[:4], err)
	}
}

func TestLatency(t *testing.T) {
	verifyNone(t)
	const d = 50 * time.Millisecond
	p := startProxy(t, startEcho(t).addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm"))
	p.SetLatency(d)
	for range 3 {
		start := time.Now()
		roundTrip(t, c, []byte("ping"))
		if rtt := time.Since(start); rtt < 2*d {
			t.Fatalf("round trip took %v, want at least %v", rtt, 2*d)
		}
	}

	// Lowering the latency releases data already waiting.
	p.SetLatency(time.Hour)
	before := p.Stats()
	if _, err := c.Write([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a chunk queued under an hour of latency", func() bool {
		return p.Stats().ReadFromClient == before.ReadFromClient+5
	})
	if s := p.Stats(); s.ClientToTarget != before.ClientToTarget {
		t.Fatalf("forwarded under an hour of latency: %+v", s)
	}
	p.SetLatency(0)
	c.SetReadDeadline(time.Now().Add(waitFor))
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "stuck" {
		t.Fatalf("echo after lowering the latency: %q, %v", got, err)
	}
}

func TestLatencyDoesNotCapThroughput(t *testing.T) {
	verifyNone(t)
	const d = 200 * time.Millisecond
	p := startProxy(t, startEcho(t).addr())
	c := dial(t, p.Addr())
	p.SetLatency(d)
	// 8 MiB is at least 256 reads of 32 KiB; delaying them one after
	// another would take 2*256*d, about 100 s, far past the read deadline
	// (waitFor), which is this test's loose upper bound.
	msg := pattern(8 << 20)
	start := time.Now()
	wrote := make(chan error, 1)
	go func() { _, err := c.Write(msg); wrote <- err }() // ends by cleanup's c.Close at the latest
	c.SetReadDeadline(time.Now().Add(waitFor))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs from what was sent")
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}
	t.Logf("8 MiB round trip under %v latency took %v", d, time.Since(start))
}

func TestRate(t *testing.T) {
	verifyNone(t)
	const rate = 128 << 10
	p := startProxy(t, startEcho(t).addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm"))
	p.SetRate(rate)
	start := time.Now()
	roundTrip(t, c, pattern(64<<10))
	// 64 KiB at 128 KiB/s is 0.5 s one way, less one 10 ms burst.
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("64 KiB at %d B/s took %v, want at least 400ms", rate, took)
	}

	// Lifting the cap releases data already throttled.
	p.SetRate(1)
	before := p.Stats()
	msg := pattern(4 << 10)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "4 KiB read under a 1 B/s cap", func() bool {
		return p.Stats().ReadFromClient == before.ReadFromClient+int64(len(msg))
	})
	p.SetRate(0)
	c.SetReadDeadline(time.Now().Add(waitFor))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo after lifting the cap: %v", err)
	}
}

func TestCloseWithLiveConnections(t *testing.T) {
	verifyNone(t)
	p, err := Start(Config{Target: startEcho(t).addr()})
	if err != nil {
		t.Fatal(err)
	}
	idle := dial(t, p.Addr())
	roundTrip(t, idle, []byte("idle"))
	slow := dial(t, p.Addr())
	p.SetLatency(time.Hour)
	slow.Write(pattern(1 << 20)) // queued in the proxy
	eventually(t, "two active connections", func() bool { return p.Stats().Active == 2 })
	p.Blackhole()
	stalled := dial(t, p.Addr())
	stalled.Write([]byte("stalled"))
	eventually(t, "three active connections", func() bool { return p.Stats().Active == 3 })

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, c := range []net.Conn{idle, slow, stalled} {
		expectClosed(t, c)
	}
	if a := p.Stats().Active; a != 0 {
		t.Fatalf("%d connections active after Close", a)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), waitFor); err == nil {
		t.Fatal("dial succeeded after Close")
	}
}
