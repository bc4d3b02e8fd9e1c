package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// Change is one change of the server's feed: a register that changed,
// at its current winner.
type Change struct {
	// Seq is the server's change number: a watch resumes after it.
	Seq uint64
	// Point is the register's winning point when the change was read.
	Point Point
	// Source is the linked instance that delivered the change; uuid.Nil
	// for a write made on this server.
	Source uuid.UUID
}

// ErrCannotResume is wrapped by a watch's error when the server cannot
// continue the feed watched: another instance answers at its address, or
// its changes end before the one to resume after (its data was restored
// or replaced). Watching again from its latest change is the remedy.
var ErrCannotResume = errors.New("cannot resume")

// A WatchOption configures Watch.
type WatchOption func(*watchConfig)

type watchConfig struct {
	after     uint64
	fromStart bool // after was given
	wait      time.Duration
	grace     time.Duration
	onLost    func(err error, after uint64)
	onResumed func(after uint64)
}

// After starts the watch after change number seq (0: every change the
// server has), instead of at the server's latest change.
func After(seq uint64) WatchOption {
	return func(w *watchConfig) { w.after, w.fromStart = seq, true }
}

// OnLost is called when the watch loses the server, with the cause and
// the change number it will resume after.
func OnLost(fn func(err error, after uint64)) WatchOption {
	return func(w *watchConfig) { w.onLost = fn }
}

// OnResumed is called when the watch is back, resuming after change
// number after.
func OnResumed(fn func(after uint64)) WatchOption {
	return func(w *watchConfig) { w.onResumed = fn }
}

// SignInGrace is how long a reconnecting watch keeps trying while the
// server refuses its credentials (default 10 s): a server that is
// starting refuses every sign-in until its store is open, and
// credentials refused for longer are revoked.
func SignInGrace(d time.Duration) WatchOption {
	return func(w *watchConfig) { w.grace = d }
}

// watchWait is how long the server may hold one watch request.
const watchWait = 20 * time.Second

// Watch returns the changes the server stores in the subtree of root
// (uuid.Nil: everything the credentials reach), as they are stored, from
// its latest change (or After a change number). A register changed
// several times between two reads is reported once, at its latest value.
//
// When the connection drops, Watch waits for the client to reconnect and
// resumes after the last change it yielded: no change is skipped or
// yielded twice. It checks first that the server is the same instance
// and still has that change; if not it yields an error that wraps
// ErrCannotResume and stops. It stops with an error on a refusal too.
// It ends without an error when ctx is done or the loop breaks.
func (c *Client) Watch(ctx context.Context, root uuid.UUID, opts ...WatchOption) iter.Seq2[Change, error] {
	cfg := watchConfig{wait: watchWait, grace: 10 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	return func(yield func(Change, error) bool) {
		if root != uuid.Nil {
			if err := c.Known(ctx, root); err != nil {
				yield(Change{}, err)
				return
			}
		}
		st, err := c.Status(ctx)
		if err != nil {
			yield(Change{}, err)
			return
		}
		instance, after := st.Instance, st.LastSeq
		if cfg.fromStart {
			after = cfg.after
		}
		if after > st.LastSeq {
			yield(Change{}, c.cannotResume(st.LastSeq, after))
			return
		}
		for ctx.Err() == nil {
			var rep transport.WatchReply
			req := transport.WatchRequest{After: after, Root: root, Wait: cfg.wait.Milliseconds()}
			err := c.RequestWait(ctx, transport.NameWatch, req, &rep, cfg.wait)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				if !lostServer(err) {
					yield(Change{}, err)
					return
				}
				if cfg.onLost != nil {
					cfg.onLost(err, after)
				}
				if err := c.awaitSame(ctx, instance, after, cfg.grace); err != nil {
					if ctx.Err() == nil {
						yield(Change{}, err)
					}
					return
				}
				if cfg.onResumed != nil {
					cfg.onResumed(after)
				}
				continue
			}
			if rep.Last < after {
				yield(Change{}, c.cannotResume(rep.Last, after))
				return
			}
			changes, err := decodeChanges(rep, after)
			if err != nil {
				yield(Change{}, &Error{Kind: ErrUnavailable, Msg: "watch: " + err.Error(), Err: err})
				return
			}
			for _, ch := range changes {
				if !yield(ch, nil) {
					return
				}
			}
			after = rep.Next
		}
	}
}

// decodeChanges decodes a watch reply to the request after after. Its
// change numbers must grow past after up to rep.Next, so a server that
// sends a change twice or goes back is an error, never a duplicate
// delivered.
func decodeChanges(rep transport.WatchReply, after uint64) ([]Change, error) {
	if rep.Next < after {
		return nil, fmt.Errorf("reply goes back: next #%d after #%d", rep.Next, after)
	}
	pts, err := crdt.DecodeBatch(rep.Points, 0)
	if err != nil {
		return nil, err
	}
	if len(rep.Changes) != len(pts)*transport.WatchChangeLen {
		return nil, errors.New("reply has changes of another length than its points")
	}
	out := make([]Change, len(pts))
	for i := range pts {
		chg := rep.Changes[i*transport.WatchChangeLen:]
		src, _ := uuid.FromBytes(chg[8:transport.WatchChangeLen])
		out[i] = Change{Seq: binary.BigEndian.Uint64(chg), Point: pts[i], Source: src}
		if out[i].Seq <= after || out[i].Seq > rep.Next {
			return nil, fmt.Errorf("reply has change #%d out of order (after #%d, next #%d)", out[i].Seq, after, rep.Next)
		}
		after = out[i].Seq
	}
	return out, nil
}

// lostServer reports whether err is a request that failed because the
// server went away (the connection lost, nobody answering, a server
// shutting down, no reply in time), which a watch survives, rather than
// a refusal.
func lostServer(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) {
		// Reconnecting to a server that refuses the credentials: one that
		// is starting does; awaitSame gives it a grace.
		return true
	}
	var e *Error
	if !errors.As(err, &e) || e.Kind != ErrUnavailable {
		return false
	}
	if e.Refused() {
		return strings.Contains(e.Server, "shutting down")
	}
	return !errors.Is(err, context.Canceled)
}

// The wait between two checks of a reconnecting connection: the first,
// and the most it doubles to.
const (
	resumeFirst = 100 * time.Millisecond
	resumeMax   = 2 * time.Second
)

// awaitSame waits until the connection is back and the server answers,
// then checks that its feed continues the one watched: the same instance,
// with a last change at or beyond after. It gives up on a closed
// connection, on credentials refused for longer than grace, on a refusal,
// and on another feed.
func (c *Client) awaitSame(ctx context.Context, instance string, after uint64, grace time.Duration) error {
	wait := resumeFirst
	var refusedSince time.Time // the first of the sign-ins refused in a row
	for {
		if c.nc.IsClosed() {
			return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("the connection to %s closed (the server stopped?)", c.url), Err: nats.ErrConnectionClosed}
		}
		var err error
		if c.nc.IsConnected() {
			var st Status
			if st, err = c.Status(ctx); err == nil {
				switch {
				case st.Instance != instance:
					return &Error{Kind: ErrInvalid, Err: ErrCannotResume, Msg: fmt.Sprintf("cannot resume: the server at %s is now instance %s, not %s (another server or data directory): its change numbers are not the ones watched; run siot watch again without --after", c.url, st.Instance, instance)}
				case st.LastSeq < after:
					return c.cannotResume(st.LastSeq, after)
				}
				return nil
			}
			if !lostServer(err) { // a refusal: trying again changes nothing
				return fmt.Errorf("reconnecting: %w", err)
			}
		} else if err = c.nc.LastError(); err != nil && errors.Is(err, nats.ErrAuthorization) {
			// A server that is starting refuses every sign-in until its
			// store is open; credentials refused for longer are revoked.
			if refusedSince.IsZero() {
				refusedSince = time.Now()
			} else if time.Since(refusedSince) > grace {
				return &Error{Kind: ErrPermission, Msg: fmt.Sprintf("reconnecting: cannot sign in at %s: %v", c.url, err), Err: err}
			}
		} else {
			refusedSince = time.Time{}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, resumeMax)
	}
}

// cannotResume is the error of a server whose feed ends before the change
// the watch resumes after.
func (c *Client) cannotResume(last, after uint64) error {
	return &Error{Kind: ErrInvalid, Err: ErrCannotResume, Msg: fmt.Sprintf("cannot resume: the server at %s has changes up to #%d only, and the watch resumes after #%d (its data was restored or replaced, or it is another server): run siot watch again without --after", c.url, last, after)}
}
