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

	"siot/crdt"
	"siot/transport"
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
	defer cl.close()
	if root != uuid.Nil {
		if err := cl.mustKnow(ctx, root); err != nil {
			return err
		}
	}
	after := uint64(c.after)
	if c.after < 0 {
		st, err := cl.status(ctx)
		if err != nil {
			return err
		}
		after = st.LastSeq
	}
	for ctx.Err() == nil {
		var rep transport.WatchReply
		req := transport.WatchRequest{After: after, Root: root, Wait: watchWait.Milliseconds()}
		if err := cl.callWait(ctx, transport.NameWatch, req, &rep, watchWait); err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		if err := c.print(rep); err != nil {
			return err
		}
		after = rep.Next
	}
	return nil
}

// watchLine is one change of watch --json.
type watchLine struct {
	record
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
			l := watchLine{record: toRecord(p), Seq: seq}
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
