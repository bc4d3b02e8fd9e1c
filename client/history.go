package client

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/transport"
)

// Sample is one value a register took (history.Sample): the write's HLC
// and origin, its value or text, and whether it was a deletion
// (Tombstone).
type Sample = history.Sample

// HistoryOptions selects what History and HistorySummaries read.
type HistoryOptions struct {
	// From and To bound the span: the samples written at From or later
	// and before To, by their HLC's physical time. The zero time is no
	// bound.
	From, To time.Time
	// Step is the length of HistorySummaries' steps, the first starting
	// at From (at the Unix epoch without From): whole milliseconds, 1 ms
	// or more. History takes none.
	Step time.Duration
}

// Summary summarizes one step of a register's history: its numeric
// samples, tombstones aside.
type Summary struct {
	// Start is the step's start; it covers [Start, Start+Step).
	Start time.Time
	// Count is the number of samples; Mean is Sum/Count.
	Count          int
	Min, Max, Mean float64
	Sum            float64
	// Last is the value of the step's latest sample, LastTime its HLC.
	Last     float64
	LastTime crdt.Timestamp
}

// History returns the samples of node's point typ.key (key "": "0") in
// the span of opts, in (time, origin) order: every value the register
// took, tombstones included, as the server's history holds them. Only a
// node's own points have a history, not those of its edges.
//
// It reads page by page (up to transport.MaxHistorySamples samples a
// request) as the loop asks, so a year of readings streams in constant
// memory; the loop may take its time between samples. Each page reads a
// consistent snapshot; a sample that reaches the server after the pages
// have passed its time (a late sync) is not seen.
//
// An error is yielded once, last: ErrInvalid for a malformed request
// (checked before anything is sent: a bad type or key, From after To, a
// Step), ErrNotFound for a node the server holds nothing of,
// ErrPermission for a node the credentials may not read or a credential's
// type (authKey, password) they may not, ErrUnavailable for a server that
// went away, possibly after some samples.
func (c *Client) History(ctx context.Context, node uuid.UUID, typ, key string, opts HistoryOptions) iter.Seq2[Sample, error] {
	return func(yield func(Sample, error) bool) {
		if opts.Step != 0 {
			yield(Sample{}, invalidf("history: a step (%v) is for HistorySummaries; History reads the samples themselves", opts.Step))
			return
		}
		req, err := historyRequest(node, typ, key, opts)
		if err != nil {
			yield(Sample{}, err)
			return
		}
		var prev *Sample
		for first := true; ; first = false {
			page, err := c.historyPage(ctx, req, first)
			if err != nil {
				yield(Sample{}, err)
				return
			}
			ss, err := transport.DecodeHistorySamples(page.Samples, 0)
			if err != nil {
				yield(Sample{}, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("history page from %s: %v", c.url, err), Err: err})
				return
			}
			if len(ss) > 0 && prev != nil && !sampleAfter(&ss[0], prev) {
				yield(Sample{}, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("history: the server at %s sent a page that does not follow the one before", c.url)})
				return
			}
			for i := range ss {
				if !yield(ss[i], nil) {
					return
				}
			}
			if len(ss) > 0 {
				prev = &ss[len(ss)-1]
			}
			if !page.More {
				return
			}
			if req.After, err = c.nextCursor(&page, req.After); err != nil {
				yield(Sample{}, err)
				return
			}
		}
	}
}

// HistorySummaries returns the summaries of the steps of opts.Step in the
// span of opts that hold a numeric sample of node's point typ.key (key
// "": "0"), in order: steps without one are left out. It pages and fails
// as History does (up to transport.MaxHistorySteps steps a request); a
// Step that is missing, under 1 ms or not whole milliseconds is
// ErrInvalid.
func (c *Client) HistorySummaries(ctx context.Context, node uuid.UUID, typ, key string, opts HistoryOptions) iter.Seq2[Summary, error] {
	return func(yield func(Summary, error) bool) {
		if opts.Step < time.Millisecond || opts.Step%time.Millisecond != 0 {
			yield(Summary{}, invalidf("history: step %v: want whole milliseconds, 1ms or more", opts.Step))
			return
		}
		req, err := historyRequest(node, typ, key, opts)
		if err != nil {
			yield(Summary{}, err)
			return
		}
		req.Step = opts.Step.Milliseconds()
		prev := int64(-1)
		for first := true; ; first = false {
			page, err := c.historyPage(ctx, req, first)
			if err != nil {
				yield(Summary{}, err)
				return
			}
			steps, err := transport.DecodeHistorySteps(page.Steps)
			if err == nil && len(steps) > 0 && (steps[0].Start <= prev || (steps[0].Start-req.From)%req.Step != 0) {
				err = fmt.Errorf("a page that does not follow the one before")
			}
			if err != nil {
				yield(Summary{}, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("history page from %s: %v", c.url, err), Err: err})
				return
			}
			for i := range steps {
				s := &steps[i]
				m := Summary{Start: time.UnixMilli(s.Start).UTC(), Count: int(s.Count), Min: s.Min, Max: s.Max,
					Sum: s.Sum, Mean: s.Sum / float64(s.Count), Last: s.Last, LastTime: s.LastTime}
				if !yield(m, nil) {
					return
				}
				prev = s.Start
			}
			if !page.More {
				return
			}
			if req.After, err = c.nextCursor(&page, req.After); err != nil {
				yield(Summary{}, err)
				return
			}
		}
	}
}

// historyRequest checks a history read and returns its first request.
func historyRequest(node uuid.UUID, typ, key string, opts HistoryOptions) (transport.HistoryRequest, error) {
	p := Point{Node: node, Type: typ, Key: key}
	p.Normalize()
	if err := p.ValidateUnstamped(); err != nil {
		return transport.HistoryRequest{}, &Error{Kind: ErrInvalid, Msg: "history: " + err.Error(), Err: err}
	}
	req := transport.HistoryRequest{Node: node, Type: p.Type, Key: p.Key}
	if !opts.From.IsZero() {
		req.From = max(ceilMilli(opts.From), 0) // before 1970 is from the start
	}
	if !opts.To.IsZero() {
		if req.To = ceilMilli(opts.To); req.To <= 0 {
			return req, invalidf("history: to %s: not after 1970-01-01", opts.To.Format(time.RFC3339Nano))
		}
		if req.From > req.To {
			return req, invalidf("history: from %s is after to %s", opts.From.Format(time.RFC3339Nano), opts.To.Format(time.RFC3339Nano))
		}
	}
	return req, nil
}

// ceilMilli returns t in Unix ms, rounded up: samples have whole
// milliseconds, so a sample is at or after t exactly when its ms are at
// or after ceilMilli(t).
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms
}

// historyPage sends req; on the first page, a node the server holds
// nothing of is ErrNotFound.
func (c *Client) historyPage(ctx context.Context, req transport.HistoryRequest, first bool) (transport.HistoryPage, error) {
	var page transport.HistoryPage
	if err := c.Request(ctx, transport.NameHistory, req, &page); err != nil {
		return page, err
	}
	if first && !page.Known {
		return page, notFoundf("unknown node %s: the server holds no point or edge of it", req.Node)
	}
	return page, nil
}

// nextCursor returns the cursor of the page after page, refusing one that
// would not move on from after.
func (c *Client) nextCursor(page *transport.HistoryPage, after []byte) ([]byte, error) {
	if len(page.Next) == 0 || bytes.Equal(page.Next, after) {
		return nil, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("history: the server at %s sent a page without a new cursor", c.url)}
	}
	return page.Next, nil
}

// sampleAfter reports whether a comes after b in (time, origin) order.
func sampleAfter(a, b *Sample) bool {
	if a.Time != b.Time {
		return a.Time > b.Time
	}
	return bytes.Compare(a.Origin[:], b.Origin[:]) > 0
}
