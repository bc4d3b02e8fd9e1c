package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
	"github.com/siot-io/siot/transport"
)

const watchUsage = `Usage: siot watch [NODE] [--json] [--after SEQ]

Print changes as the server stores them, until interrupted (Ctrl-C: exit
status 0). With NODE, only changes in NODE's subtree (its points, its
descendants' points and the edges below them, as the tree is when each
change is read). Each change shows the server's change number, the point,
its origin (the instance or user that wrote it) and, after "via", the
instance it came from: "local" for a write made on this server, else the
ID of the linked instance that delivered it.

A register changed several times while the watcher was busy is shown once,
with its latest value. The watch starts at the server's latest change, or
after change number --after (see "changes" in siot status), so a watcher
can resume where it stopped.

When the server goes away (stopped, restarted, the network cut), watch
says so on standard error, reconnects (every 0.1 s at first, then up to
every 2 s) and resumes after the last change it printed: no change is
lost or printed twice. If the server it reaches cannot continue that feed
(another instance at that address, or one whose changes end before that
number: a restored or replaced data directory), watch says so and exits
with status 1 rather than skip changes; so does --after beyond the
server's last change, and credentials the server still refuses after 10 s
(a server refuses every sign-in while it starts).

With --json, print one point record per line (the format of siot export)
with "seq" (the change number) and "source" (the delivering instance;
absent for a local write).

Examples:
  siot watch
  siot watch 6ba7b811-9dad-11d1-80b4-00c04fd430c8 --server nats://127.0.0.1:4223
  siot watch --json --after 0 | head -100

Flags:
`

type watchCmd struct {
	clientCmd
	after int64
}

func (c *watchCmd) usage() string { return watchUsage }

func (c *watchCmd) flags(fs *flag.FlagSet) {
	c.register(fs, "print one JSON object per change")
	fs.Int64Var(&c.after, "after", -1, "start after this change number (default: the latest)")
}

// watchWait is how long the server may hold one watch request.
const watchWait = 20 * time.Second

func (c *watchCmd) run(ctx context.Context, args []string) error {
	if len(args) > 1 {
		return &UsageError{Msg: "watch takes at most one NODE"}
	}
	if c.after < -1 {
		return &UsageError{Msg: "--after must be a change number (0 or more)"}
	}
	root, err := optionalNode("NODE", args)
	if err != nil {
		return err
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer func() { cl.close() }()
	if root != uuid.Nil {
		if err := cl.mustKnow(ctx, root); err != nil {
			return err
		}
	}
	st, err := cl.status(ctx)
	if err != nil {
		return err
	}
	instance := st.Instance
	after := uint64(c.after)
	if c.after < 0 {
		after = st.LastSeq
	}
	if after > st.LastSeq {
		return c.cannotResume(cl.url, st.LastSeq, after)
	}
	for ctx.Err() == nil {
		var rep transport.WatchReply
		req := transport.WatchRequest{After: after, Root: root, Wait: watchWait.Milliseconds()}
		err := cl.callWait(ctx, transport.NameWatch, req, &rep, watchWait)
		if ctx.Err() != nil {
			break
		}
		if err == nil && rep.Last < after {
			return c.cannotResume(cl.url, rep.Last, after)
		}
		if err != nil {
			if !lostServer(err) {
				return err
			}
			fmt.Fprintf(c.m.Stderr, "watch: lost the server at %s: %v; reconnecting to resume after change #%d\n", cl.url, err, after)
			cl.close()
			again, err := c.reconnect(ctx, instance, after)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return err
			}
			cl = again
			fmt.Fprintf(c.m.Stderr, "watch: reconnected to %s; resuming after change #%d\n", cl.url, after)
			continue
		}
		if err := c.print(rep); err != nil {
			return err
		}
		after = rep.Next
	}
	return nil
}

// The wait between two reconnection attempts: the first, and the most it
// doubles to.
const (
	reconnectFirst = 100 * time.Millisecond
	reconnectMax   = 2 * time.Second
	// signInGrace is how long a reconnecting watch keeps trying while the
	// server refuses its credentials: a server that is starting refuses
	// every client until its store is open.
	signInGrace = 10 * time.Second
)

// lostServer reports whether err is a request that failed because the
// server went away (its connection closed, nobody answering, a server
// shutting down, no reply in time), which a watch survives by
// reconnecting, rather than a refusal.
func lostServer(err error) bool {
	var re *refusedError
	if errors.As(err, &re) {
		return strings.Contains(re.raw, "shutting down")
	}
	return errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrConnectionDraining) || errors.Is(err, nats.ErrDisconnected)
}

// reconnect dials the server again until it answers or ctx is done,
// waiting between attempts from reconnectFirst doubling up to
// reconnectMax, and checks that its feed continues the one watched: the
// same instance, with a last change at or beyond after. An error otherwise
// (another server or data directory, credentials refused for longer than
// signInGrace, a request refused): a watch never resumes across a gap.
func (c *watchCmd) reconnect(ctx context.Context, instance string, after uint64) (*client, error) {
	wait := reconnectFirst
	var refusedSince time.Time // the first of the sign-ins refused in a row
	for {
		cl, err := c.cf.dial()
		if err == nil {
			var st transport.Status
			if st, err = cl.status(ctx); err == nil {
				switch {
				case st.Instance != instance:
					cl.close()
					return nil, fmt.Errorf("cannot resume: the server at %s is now instance %s, not %s (another server or data directory): its change numbers are not the ones watched; run siot watch again without --after", cl.url, st.Instance, instance)
				case st.LastSeq < after:
					cl.close()
					return nil, c.cannotResume(cl.url, st.LastSeq, after)
				}
				return cl, nil
			}
			cl.close()
			if !lostServer(err) { // a refusal: trying again changes nothing
				return nil, fmt.Errorf("reconnecting: %w", err)
			}
		}
		if errors.Is(err, nats.ErrAuthorization) {
			// A server that is starting refuses every sign-in until its
			// store is open; credentials refused for longer are revoked.
			if refusedSince.IsZero() {
				refusedSince = time.Now()
			} else if time.Since(refusedSince) > signInGrace {
				return nil, fmt.Errorf("reconnecting: %w", err)
			}
		} else {
			refusedSince = time.Time{}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, reconnectMax)
	}
}

// cannotResume is the error of a server whose feed ends before the change
// the watch resumes after.
func (c *watchCmd) cannotResume(url string, last, after uint64) error {
	return fmt.Errorf("cannot resume: the server at %s has changes up to #%d only, and the watch resumes after #%d (its data was restored or replaced, or it is another server): run siot watch again without --after", url, last, after)
}

// watchLine is one change of watch --json.
type watchLine struct {
	record.Record
	Seq    uint64 `json:"seq"`
	Source string `json:"source,omitempty"`
}

func (c *watchCmd) print(rep transport.WatchReply) error {
	pts, err := crdt.DecodeBatch(rep.Points, 0)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	if len(rep.Changes) != len(pts)*transport.WatchChangeLen {
		return errors.New("watch: reply has changes of another length than its points")
	}
	var b strings.Builder
	for i := range pts {
		p := &pts[i]
		chg := rep.Changes[i*transport.WatchChangeLen:]
		seq := binary.BigEndian.Uint64(chg)
		src, _ := uuid.FromBytes(chg[8:transport.WatchChangeLen])
		source := "local"
		if src != uuid.Nil {
			source = src.String()
		}
		if c.asJSON {
			l := watchLine{Record: record.Shown(p), Seq: seq}
			if src != uuid.Nil {
				l.Source = source
			}
			if err := printJSON(&b, l); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(&b, "%s #%d %s %s  origin %s  via %s\n", hlcTime(p.Time), seq, p.Node, describe(p), p.Origin, source)
	}
	_, err = fmt.Fprint(c.m.Stdout, b.String())
	return err
}

// describe shows a point's register and content on one line.
func describe(p *crdt.Point) string {
	if p.IsEdge() && p.Type == crdt.TypeEdge {
		return "edge under " + p.Parent.String() + " " + edgeState(p)
	}
	var s strings.Builder
	if p.IsEdge() {
		s.WriteString("edge under " + p.Parent.String() + " ")
	}
	s.WriteString(p.Type + "." + p.Key + "=")
	if p.Text != "" {
		s.WriteString(strconv.Quote(oneLine(p.Text, 60)))
	} else {
		s.WriteString(strconv.FormatFloat(p.Value, 'g', -1, 64))
	}
	if p.Tombstone {
		s.WriteString(" deleted")
	}
	return s.String()
}
