package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotLoopback is returned by Start, wrapped, when Config.Listen is not a
// loopback address.
var ErrNotLoopback = errors.New("faultproxy: listen address is not loopback")

// chunkSize is the most one read takes from a socket.
const chunkSize = 32 << 10

// Config says where the proxy listens and what it forwards to. Zero fields
// take the defaults documented on them.
type Config struct {
	// Listen is the address to listen on: a loopback IP or "localhost" with
	// a port. Default "127.0.0.1:0", a free port.
	Listen string
	// Target is the host:port every accepted connection is forwarded to.
	// Required.
	Target string
	// DialTimeout bounds dialing Target for one accepted connection.
	// Default 5s.
	DialTimeout time.Duration
	// BufferBytes bounds what one direction of one connection holds between
	// reading and writing (about 32 KiB more at most). Past it the proxy
	// stops reading, so the sender feels backpressure. Under latency L a
	// connection moves at most BufferBytes/L per second. Default 4 MiB.
	BufferBytes int
	// Logf, if set, receives what the proxy cannot return as an error:
	// failed dials to Target and failed accepts. It must be safe for
	// concurrent use; t.Logf is. Close stops all calls before it returns.
	Logf func(format string, args ...any)
}

// validate checks c and returns it with defaults filled in.
func (c Config) validate() (Config, error) {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return c, fmt.Errorf("faultproxy: listen address %q: %w", c.Listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return c, fmt.Errorf("%w: %q", ErrNotLoopback, c.Listen)
	}
	if c.Target == "" {
		return c, errors.New("faultproxy: Config.Target is required")
	}
	if _, _, err := net.SplitHostPort(c.Target); err != nil {
		return c, fmt.Errorf("faultproxy: target address %q: %w", c.Target, err)
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.BufferBytes <= 0 {
		c.BufferBytes = 4 << 20
	}
	return c, nil
}

// Stats counts what a proxy has done since Start.
type Stats struct {
	ClientToTarget int64 // bytes forwarded: written to Target
	TargetToClient int64 // bytes forwarded: written to clients
	// Bytes read from each side. What exceeds the forwarded count is held
	// in the proxy, or was dropped with a closed connection.
	ReadFromClient int64
	ReadFromTarget int64
	Accepted       int64 // connections accepted, refused ones included
	Refused        int64 // connections closed at once: the link was cut or the proxy closing
	DialFailures   int64 // connections closed because dialing Target failed
	Active         int   // connections being proxied now
}

// settings are the faults in force, guarded by Proxy.mu.
type settings struct {
	cut       bool
	blackhole bool
	latency   time.Duration
	rate      int // bytes per second and direction; 0 = unlimited
}

// Proxy forwards TCP connections from a loopback address to a target and
// injects faults into them. Every method is safe for concurrent use, also
// while data flows; a change applies to data already queued in the proxy.
// Delays are measured on the wall clock.
type Proxy struct {
	cfg    Config
	ln     net.Listener
	ctx    context.Context // canceled by Close; bounds dials to Target
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's serve

	mu       sync.Mutex
	set      settings
	changed  chan struct{} // closed and replaced on every change of set
	up, down bucket        // client->target and target->client rate limits
	pipes    map[*pipe]struct{}
	closed   bool

	fromClient, fromTarget, toTarget, toClient atomic.Int64
	accepted, refused, dialFailures            atomic.Int64
}

// Start listens on cfg.Listen and forwards every connection to cfg.Target
// until Close. It returns an error wrapping ErrNotLoopback if cfg.Listen is
// not a loopback address, and the listener's error if listening fails.
// Target is dialed once per accepted connection, not by Start.
func Start(cfg Config) (*Proxy, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("%w: listening on %s", ErrNotLoopback, ln.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg:     cfg,
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		changed: make(chan struct{}),
		pipes:   make(map[*pipe]struct{}),
	}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr returns the host:port clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns the NATS URL of Addr.
func (p *Proxy) URL() string { return "nats://" + p.Addr() }

// Cut closes every current connection on both sides and makes the proxy
// close new ones as soon as it accepts them, until Restore. It returns once
// the cut connections' goroutines have exited.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.set.cut = true
	p.changedLocked()
	pipes := p.pipesLocked()
	p.mu.Unlock()
	for _, pc := range pipes {
		pc.close()
	}
	for _, pc := range pipes {
		<-pc.exited
	}
}

// Blackhole keeps connections open but moves nothing in either direction
// until Restore: the proxy stops reading from both sides (a read already
// blocked may still take one chunk, which is held), so senders' TCP buffers
// fill and their writes block. New connections are accepted and
// dialed through but forward nothing either. Data already read stays queued
// and is delivered, in order, after Restore.
func (p *Proxy) Blackhole() { p.update(func(s *settings) { s.blackhole = true }) }

// Restore undoes Cut and Blackhole. Latency and rate stay as set.
func (p *Proxy) Restore() {
	p.update(func(s *settings) { s.cut, s.blackhole = false, false })
}

// SetLatency delays every chunk by d in each direction, counted from when
// the proxy read it; a round trip gains 2*d. Chunks queue with their
// timestamps, so throughput is not capped (up to Config.BufferBytes per d)
// and order is kept. d <= 0 removes the delay.
func (p *Proxy) SetLatency(d time.Duration) {
	p.update(func(s *settings) { s.latency = max(d, 0) })
}

// SetRate caps each direction, summed over all connections, at bytesPerSec
// with a token bucket that bursts at most 10 ms worth of bytes.
// bytesPerSec <= 0 removes the cap.
func (p *Proxy) SetRate(bytesPerSec int) {
	p.update(func(s *settings) { s.rate = max(bytesPerSec, 0) })
}

// Stats returns the counters. A byte is counted as forwarded once its write
// to the other side returns, so a client may read it a moment earlier.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := len(p.pipes)
	p.mu.Unlock()
	return Stats{
		ClientToTarget: p.toTarget.Load(),
		TargetToClient: p.toClient.Load(),
		ReadFromClient: p.fromClient.Load(),
		ReadFromTarget: p.fromTarget.Load(),
		Accepted:       p.accepted.Load(),
		Refused:        p.refused.Load(),
		DialFailures:   p.dialFailures.Load(),
		Active:         active,
	}
}

// Close stops listening, closes every connection and returns once every
// goroutine of the proxy has exited. Later calls return nil. The error is
// the listener's.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	pipes := p.pipesLocked()
	p.mu.Unlock()
	p.cancel()
	err := p.ln.Close()
	for _, pc := range pipes {
		pc.close()
	}
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("faultproxy: close listener: %w", err)
	}
	return nil
}

func (p *Proxy) update(f func(*settings)) {
	p.mu.Lock()
	f(&p.set)
	p.changedLocked()
	p.mu.Unlock()
}

// changedLocked wakes every goroutine waiting on the settings.
func (p *Proxy) changedLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) pipesLocked() []*pipe {
	pipes := make([]*pipe, 0, len(p.pipes))
	for pc := range p.pipes {
		pipes = append(pipes, pc)
	}
	return pipes
}

func (p *Proxy) logf(format string, args ...any) {
	if p.cfg.Logf != nil {
		p.cfg.Logf(format, args...)
	}
}

// accept runs until Close, handing each connection to its own serve.
func (p *Proxy) accept() {
	var backoff time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			// Transient, e.g. out of file descriptors: back off like net/http.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.logf("faultproxy: accept: %v; retrying in %v", err, backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		p.accepted.Add(1)
		p.wg.Go(func() { p.serve(c) })
	}
}

// serve dials Target for client and runs the two directions until both end
// or the connection is closed.
func (p *Proxy) serve(client net.Conn) {
	p.mu.Lock()
	cut := p.set.cut
	p.mu.Unlock()
	if cut {
		p.refused.Add(1)
		client.Close()
		return
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	target, err := d.DialContext(p.ctx, "tcp", p.cfg.Target)
	if err != nil {
		client.Close()
		if p.ctx.Err() == nil {
			p.dialFailures.Add(1)
			p.logf("faultproxy: dial target %s: %v", p.cfg.Target, err)
		}
		return
	}
	pc := &pipe{client: client, target: target, done: make(chan struct{}), exited: make(chan struct{})}
	defer close(pc.exited)
	p.mu.Lock()
	ok := !p.closed && !p.set.cut
	if ok {
		p.pipes[pc] = struct{}{}
	}
	p.mu.Unlock()
	if !ok { // cut or closed while dialing
		p.refused.Add(1)
		pc.close()
		return
	}
	defer func() {
		p.mu.Lock()
		delete(p.pipes, pc)
		p.mu.Unlock()
	}()

	up, down := newQueue(p.cfg.BufferBytes), newQueue(p.cfg.BufferBytes)
	var readers, writers sync.WaitGroup
	readers.Go(func() { p.read(pc, client, up, &p.fromClient) })
	readers.Go(func() { p.read(pc, target, down, &p.fromTarget) })
	writers.Go(func() { p.write(pc, up, target, &p.up, &p.toTarget) })
	writers.Go(func() { p.write(pc, down, client, &p.down, &p.toClient) })
	writers.Wait()
	pc.close()
	readers.Wait()
}
