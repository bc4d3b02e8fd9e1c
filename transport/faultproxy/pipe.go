package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// pipe is one proxied connection: the client's side and the target's.
type pipe struct {
	client, target net.Conn
	done           chan struct{} // closed by close; every wait selects on it
	exited         chan struct{} // closed when serve returns
	once           sync.Once
}

// close closes both sides and wakes the pipe's goroutines. Idempotent.
func (pc *pipe) close() {
	pc.once.Do(func() {
		close(pc.done)
		pc.client.Close()
		pc.target.Close()
	})
}

// read moves chunks from src into q, timestamped and counted in count,
// until src ends or the pipe closes. It does not read while the link is
// blackholed, except that a Read already blocked when Blackhole is called
// may return one chunk. At EOF it closes q; on any other error it closes
// the pipe.
func (p *Proxy) read(pc *pipe, src net.Conn, q *queue, count *atomic.Int64) {
	defer q.close()
	buf := make([]byte, chunkSize)
	for {
		for {
			p.mu.Lock()
			blackhole, changed := p.set.blackhole, p.changed
			p.mu.Unlock()
			if !blackhole {
				break
			}
			if !sleep(-1, changed, pc.done) {
				return
			}
		}
		n, err := src.Read(buf)
		count.Add(int64(n))
		if n > 0 && !q.push(chunk{data: bytes.Clone(buf[:n]), at: time.Now()}, pc.done) {
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				pc.close()
			}
			return
		}
	}
}

// write moves chunks from q to dst as admit allows, counting bytes in
// count. When q ends cleanly it half-closes dst to pass the EOF on.
func (p *Proxy) write(pc *pipe, q *queue, dst net.Conn, b *bucket, count *atomic.Int64) {
	for {
		c, ok := q.pop(pc.done)
		if !ok {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite() // fails harmlessly if the pipe is closed
			}
			return
		}
		for data := c.data; len(data) > 0; {
			n := p.admit(b, c.at, len(data), pc.done)
			if n == 0 {
				return
			}
			if _, err := dst.Write(data[:n]); err != nil {
				pc.close()
				return
			}
			count.Add(int64(n))
			data = data[n:]
		}
	}
}

// admit blocks until some of the n bytes of a chunk read at at may be
// written: the link is not blackholed, the latency has passed and the
// bucket grants them. It returns how many it may write, or 0 if done closes
// first. Any change of settings makes it look again.
func (p *Proxy) admit(b *bucket, at time.Time, n int, done <-chan struct{}) int {
	for {
		p.mu.Lock()
		s, changed, now := p.set, p.changed, time.Now()
		grant, wait := 0, time.Duration(-1)
		switch release := at.Add(s.latency); {
		case s.blackhole:
		case now.Before(release):
			wait = release.Sub(now)
		default:
			grant, wait = b.take(n, s.rate, now)
		}
		p.mu.Unlock()
		if grant > 0 {
			return grant
		}
		if !sleep(wait, changed, done) {
			return 0
		}
	}
}

// sleep waits for d (forever if d < 0) or until changed closes. It returns
// false if done closes first.
func sleep(d time.Duration, changed, done <-chan struct{}) bool {
	var timeout <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
		return true
	case <-changed:
		return true
	case <-done:
		return false
	}
}

// bucket is the token bucket of one direction, guarded by Proxy.mu.
type bucket struct {
	tokens float64
	last   time.Time
}

// take grants up to n bytes at rate bytes per second, or says how long to
// wait before asking again. The bucket holds at most 10 ms worth of bytes,
// so a throttled stream stays smooth.
func (b *bucket) take(n, rate int, now time.Time) (int, time.Duration) {
	if rate <= 0 {
		return n, 0
	}
	r := float64(rate)
	burst := math.Max(math.Floor(r/100), 1)
	b.tokens = math.Min(burst, b.tokens+now.Sub(b.last).Seconds()*r)
	b.last = now
	want := math.Min(float64(n), burst)
	if b.tokens >= want {
		b.tokens -= want
		return int(want), 0
	}
	return 0, time.Duration((want - b.tokens) / r * float64(time.Second))
}

// chunk is one read from a socket and when it happened.
type chunk struct {
	data []byte
	at   time.Time
}

// queue is the FIFO between one direction's reader and writer, bounded in
// bytes. It has one pusher and one popper.
type queue struct {
	mu       sync.Mutex
	items    []chunk
	size     int
	limit    int
	closed   bool
	readable chan struct{} // capacity 1: an item was pushed or the queue closed
	writable chan struct{} // capacity 1: an item was popped
}

func newQueue(limit int) *queue {
	return &queue{limit: limit, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

// push appends c, blocking while the queue holds limit bytes or more. It
// returns false if done closes first.
func (q *queue) push(c chunk, done <-chan struct{}) bool {
	for {
		q.mu.Lock()
		if q.size < q.limit {
			q.items = append(q.items, c)
			q.size += len(c.data)
			q.mu.Unlock()
			signal(q.readable)
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.writable:
		case <-done:
			return false
		}
	}
}

// pop removes the oldest chunk, blocking while the queue is empty and open.
// It returns false once the queue is closed and empty, or if done closes.
func (q *queue) pop(done <-chan struct{}) (chunk, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			c := q.items[0]
			q.items[0] = chunk{}
			q.items = q.items[1:]
			q.size -= len(c.data)
			q.mu.Unlock()
			signal(q.writable)
			return c, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return chunk{}, false
		}
		select {
		case <-q.readable:
		case <-done:
			return chunk{}, false
		}
	}
}

// close marks the end of the stream; pop drains what is left first.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	signal(q.readable)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
