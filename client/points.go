package client

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// Result counts the points a write sent: Applied changed the server's
// state, Stale lost to an equal or newer write it already held.
type Result struct {
	Applied int `json:"applied"`
	Stale   int `json:"stale"`
}

func (r *Result) add(o transport.ImportResult) { r.Applied += o.Applied; r.Stale += o.Stale }

// MaxBatchBytes bounds the encoded points of one write request, far under
// a NATS message's limit (crdt.MaxMessageSize, 1 MiB).
const MaxBatchBytes = 512 << 10

// DefaultBatch is the most points SetBatch sends in one request.
const DefaultBatch = 5000

// Set writes pts as one operation: every point without a time gets the
// same HLC, so the points are seen together (a move's two edge points),
// and a batch that writes one register twice is refused. The points are
// checked before anything is sent (ErrInvalid, naming the point); the
// server writes all or none of them, durably, before it answers.
func (c *Client) Set(ctx context.Context, pts ...Point) (Result, error) {
	if len(pts) == 0 {
		return Result{}, nil
	}
	pts = append([]Point(nil), pts...)
	if err := Validate(pts); err != nil {
		return Result{}, err
	}
	var res transport.ImportResult
	err := c.Request(ctx, transport.NameImport, transport.Import{Points: crdt.AppendBatch(nil, pts), OneTime: true}, &res)
	return Result(res), err
}

// Validate normalizes pts (a blank key is DefaultKey) and checks them as
// the server will: an error (ErrInvalid) names the first invalid point by
// its index.
func Validate(pts []Point) error {
	for i := range pts {
		pts[i].Normalize()
		if err := pts[i].ValidateUnstamped(); err != nil {
			if len(pts) == 1 {
				return &Error{Kind: ErrInvalid, Msg: err.Error(), Err: err}
			}
			return &Error{Kind: ErrInvalid, Msg: fmt.Sprintf("point %d: %v", i, err), Err: err}
		}
	}
	return nil
}

// SetBatch writes pts, any number of them, in requests of at most
// DefaultBatch points and MaxBatchBytes, one request at a time, in order:
// points without a time are stamped on arrival in slice order, so a later
// point beats an earlier one of the same register. Every point is checked
// before anything is sent. Each request is written whole or not at all,
// durably, before the next is sent. On an error, Result counts the
// points of the acknowledged requests, and the error is a *BatchError
// saying which points are written.
func (c *Client) SetBatch(ctx context.Context, pts []Point) (Result, error) {
	pts = append([]Point(nil), pts...)
	if err := Validate(pts); err != nil {
		return Result{}, err
	}
	var res Result
	for start := 0; start < len(pts); {
		end, size := start, 0
		for end < len(pts) && end-start < DefaultBatch && size < MaxBatchBytes {
			size += pointBound(&pts[end])
			end++
		}
		r, err := c.write(ctx, crdt.AppendBatch(nil, pts[start:end]))
		if err != nil {
			return res, &BatchError{Written: start, First: start, Last: end - 1, Err: err}
		}
		res.add(r)
		start = end
	}
	return res, nil
}

// pointBound bounds the encoded size of p.
func pointBound(p *Point) int { return 64 + len(p.Type) + len(p.Key) + len(p.Text) }

// write sends one encoded batch of points, stamped on arrival in order.
func (c *Client) write(ctx context.Context, batch []byte) (transport.ImportResult, error) {
	var res transport.ImportResult
	err := c.Request(ctx, transport.NameImport, transport.Import{Points: batch}, &res)
	return res, err
}

// BatchError is a write of many points that stopped: the points before
// Written are written (acknowledged); the request that failed held the
// points First to Last (Refused: the server refused it, so it is not
// written; else no reply came and it may or may not be); nothing after
// Last was sent.
type BatchError struct {
	Written     int
	First, Last int
	Err         error
}

func (e *BatchError) Error() string {
	what := "no reply: they may or may not be written"
	if IsRefused(e.Err) {
		what = "refused: not written"
	}
	return fmt.Sprintf("points %d-%d: %s; points before %d are written: %v", e.First, e.Last, what, e.Written, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }

// Page is one page of a node's points (GetPage).
type Page struct {
	Points []Point
	// Next is the cursor of the following page; More says there is one.
	Next []byte
	More bool
}

// GetPage reads one page of node's points, after the cursor after (nil:
// from the start), of about maxBytes encoded (0: the server's default,
// 512 KiB at most): its node points sorted by type and key, then the
// points of the edges above it sorted by parent. A node the server holds
// nothing of is ErrNotFound.
func (c *Client) GetPage(ctx context.Context, node uuid.UUID, after []byte, maxBytes int) (Page, error) {
	var page transport.NodePage
	if err := c.Request(ctx, transport.NameNode, transport.NodeRequest{Node: node, After: after, MaxBytes: maxBytes}, &page); err != nil {
		return Page{}, err
	}
	if !page.Known {
		return Page{}, notFoundf("unknown node %s: the server holds no point or edge of it (create it with siot node add)", node)
	}
	pts, err := crdt.DecodeBatch(page.Points, 0)
	if err != nil {
		return Page{}, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("node page from %s: %v", c.url, err), Err: err}
	}
	if page.More && len(page.Next) == 0 {
		return Page{}, &Error{Kind: ErrUnavailable, Msg: "node: server sent a page without a cursor"}
	}
	return Page{Points: pts, Next: page.Next, More: page.More}, nil
}

// Get reads every point of node, page by page: what GetPage gives, all
// of it. A node with a million points is a few hundred requests; use
// GetPage or Points to read it as it comes.
func (c *Client) Get(ctx context.Context, node uuid.UUID) ([]Point, error) {
	var out []Point
	err := c.Points(ctx, node, func(p *Point) error {
		out = append(out, *p)
		return nil
	})
	return out, err
}

// Points calls fn with every point of node, page by page, and stops at
// fn's first error.
func (c *Client) Points(ctx context.Context, node uuid.UUID, fn func(*Point) error) error {
	var after []byte
	for {
		page, err := c.GetPage(ctx, node, after, 0)
		if err != nil {
			return err
		}
		for i := range page.Points {
			if err := fn(&page.Points[i]); err != nil {
				return err
			}
		}
		if !page.More {
			return nil
		}
		if bytes.Equal(page.Next, after) {
			return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("node %s: the server at %s sent the same page cursor twice", node, c.url)}
		}
		after = page.Next
	}
}

// Known returns nil when the server holds a point or an edge of node (or
// it is the root), else ErrNotFound naming it.
func (c *Client) Known(ctx context.Context, node uuid.UUID) error {
	_, err := c.GetPage(ctx, node, nil, 1)
	return err
}
