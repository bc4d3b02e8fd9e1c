package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/siot-io/siot/crdt"
)

// DefaultLinger is how long a Writer holds a point before it sends it:
// a point written is durable within about this plus one request.
const DefaultLinger = 50 * time.Millisecond

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Batch is the most points per request (0: DefaultBatch); a request
	// also stays under MaxBatchBytes.
	Batch int
	// Linger is the longest a point waits before it is sent (0:
	// DefaultLinger). A full batch is sent at once.
	Linger time.Duration
	// OnAck, when set, is called (from the Writer's goroutine) after each
	// acknowledged request with the tags of its points, in order, and
	// its result.
	OnAck func(tags []int, res Result)
	// gate, when set, holds back points outside the server's tree (Import).
	gate *treeGate
}

// Writer writes points as they come, in order: a point is sent within
// Linger of Write, with the points written after it up to a full batch,
// one request at a time, so the server stamps points without a time in
// the order written. Write does not wait for the server; Flush and Close
// do. Write, Flush and Close must not be called concurrently with each
// other (one goroutine feeds a Writer).
// The Writer's goroutine ends with Close.
type Writer struct {
	c    *Client
	ctx  context.Context
	opt  WriterOptions
	in   chan writeItem
	done chan struct{}

	mu     sync.Mutex
	res    Result
	err    error // the first failure: nothing is sent after it
	acked  int   // points acknowledged
	closed bool
}

type writeItem struct {
	p     Point
	tag   int
	flush chan struct{} // a Flush marker: closed when all before it is acknowledged
}

// NewWriter starts a Writer. Its requests use ctx.
func (c *Client) NewWriter(ctx context.Context, opt WriterOptions) *Writer {
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.Linger <= 0 {
		opt.Linger = DefaultLinger
	}
	w := &Writer{c: c, ctx: ctx, opt: opt, in: make(chan writeItem, 2*opt.Batch), done: make(chan struct{})}
	go w.run()
	return w
}

// Write queues p, checked first (ErrInvalid, nothing queued). tag is the
// caller's name for the point (an input line) that OnAck and errors give
// back. After a failure Write returns it: nothing more is sent.
func (w *Writer) Write(p Point, tag int) error {
	p.Normalize()
	if err := p.ValidateUnstamped(); err != nil {
		return &Error{Kind: ErrInvalid, Msg: err.Error(), Err: err}
	}
	if err := w.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return errClosed
	}
	select {
	case w.in <- writeItem{p: p, tag: tag}:
		return nil
	case <-w.done:
		return w.Err()
	case <-w.ctx.Done():
		return &Error{Kind: ErrUnavailable, Msg: "interrupted", Err: w.ctx.Err()}
	}
}

// Flush sends what is queued and waits until it is acknowledged; it
// returns the Writer's error if one happened.
func (w *Writer) Flush() error {
	ch := make(chan struct{})
	select {
	case w.in <- writeItem{flush: ch}:
	case <-w.done:
		return w.Err()
	}
	select {
	case <-ch:
	case <-w.done:
	}
	return w.Err()
}

// Close sends what is queued, waits for it, ends the Writer's goroutine
// and returns the totals and the first error.
func (w *Writer) Close() (Result, error) {
	w.mu.Lock()
	already := w.closed
	w.closed = true
	w.mu.Unlock()
	if !already {
		close(w.in)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.res, w.err
}

// Err returns the Writer's first error, or nil.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Acked returns how many points are acknowledged so far.
func (w *Writer) Acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

// run collects points until a batch is full, the oldest has waited
// Linger, a Flush asks, or the input ends, and sends them.
func (w *Writer) run() {
	defer close(w.done)
	var pending []writeItem
	var timer *time.Timer
	var deadline <-chan time.Time
	send := func() {
		if len(pending) > 0 && w.Err() == nil {
			w.send(pending)
		}
		pending = pending[:0]
		if timer != nil {
			timer.Stop()
			timer, deadline = nil, nil
		}
	}
	for {
		select {
		case it, ok := <-w.in:
			if !ok {
				send()
				w.finish()
				return
			}
			if it.flush != nil {
				send()
				close(it.flush)
				continue
			}
			pending = append(pending, it)
			if len(pending) == 1 {
				timer = time.NewTimer(w.opt.Linger)
				deadline = timer.C
			}
			if len(pending) >= w.opt.Batch {
				send()
			}
		case <-deadline:
			timer, deadline = nil, nil
			send()
		}
	}
}

// finish sends the points the gate still holds, or fails with them, at
// the end of the input.
func (w *Writer) finish() {
	if w.opt.gate == nil || w.Err() != nil {
		return
	}
	held := w.opt.gate.end()
	if len(held) > 0 {
		if err := w.opt.gate.orphanErr(w.ctx, held); err != nil {
			w.fail(err)
			return
		}
		w.sendAll(held)
	}
}

// send writes items, after the gate: in requests of at most Batch points
// and MaxBatchBytes, one at a time.
func (w *Writer) send(items []writeItem) {
	if g := w.opt.gate; g != nil {
		var err error
		if items, err = g.pass(w.ctx, items); err != nil {
			w.fail(err)
			return
		}
	}
	w.sendAll(items)
}

func (w *Writer) sendAll(items []writeItem) {
	pts := make([]Point, 0, len(items))
	for start := 0; start < len(items); {
		end, size := start, 0
		pts = pts[:0]
		for end < len(items) && end-start < w.opt.Batch && size < MaxBatchBytes {
			size += pointBound(&items[end].p)
			pts = append(pts, items[end].p)
			end++
		}
		r, err := w.c.write(w.ctx, crdt.AppendBatch(nil, pts))
		tags := make([]int, end-start)
		for i := range tags {
			tags[i] = items[start+i].tag
		}
		if err != nil {
			w.fail(&WriteError{Tags: tags, Err: err})
			return
		}
		w.mu.Lock()
		w.res.add(r)
		w.acked += len(tags)
		w.mu.Unlock()
		if w.opt.OnAck != nil {
			w.opt.OnAck(tags, Result(r))
		}
		start = end
	}
}

// WriteError is a Writer's request that failed: Tags are its points'.
// IsRefused(Err): the server refused it, none is written; else no reply
// came, and they may or may not be written. Nothing after it was sent.
type WriteError struct {
	Tags []int
	Err  error
}

func (e *WriteError) Error() string {
	what := "no reply: they may or may not be written"
	if IsRefused(e.Err) {
		what = "refused: not written"
	}
	return fmt.Sprintf("a request of %d points (tags %d-%d): %s: %v", len(e.Tags), e.Tags[0], e.Tags[len(e.Tags)-1], what, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// errClosed is returned by a Writer used after Close.
var errClosed = errors.New("client: writer closed")
