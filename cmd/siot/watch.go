package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
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
	creds, err := c.cf.loadCreds()
	if err != nil {
		return err
	}
	// This client reconnects by itself: the watch resumes.
	cl, err := c.cf.dialWith(client.WithCreds(creds))
	if err != nil {
		return err
	}
	defer cl.Close()
	opts := []client.WatchOption{
		client.OnLost(func(err error, after uint64) {
			fmt.Fprintf(c.m.Stderr, "watch: lost the server at %s: %v; reconnecting to resume after change #%d\n", cl.URL(), err, after)
		}),
		client.OnResumed(func(after uint64) {
			fmt.Fprintf(c.m.Stderr, "watch: reconnected to %s; resuming after change #%d\n", cl.URL(), after)
		}),
	}
	if c.after >= 0 {
		opts = append(opts, client.After(uint64(c.after)))
	}
	var b strings.Builder
	for ch, err := range cl.Watch(ctx, root, opts...) {
		if err != nil {
			return err
		}
		b.Reset()
		if err := c.print(&b, &ch); err != nil {
			return err
		}
		if _, err := io.WriteString(c.m.Stdout, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// watchLine is one change of watch --json.
type watchLine struct {
	record.Record
	Seq    uint64 `json:"seq"`
	Source string `json:"source,omitempty"`
}

func (c *watchCmd) print(b *strings.Builder, ch *client.Change) error {
	p := &ch.Point
	source := "local"
	if ch.Source != uuid.Nil {
		source = ch.Source.String()
	}
	if c.asJSON {
		l := watchLine{Record: record.Shown(p), Seq: ch.Seq}
		if ch.Source != uuid.Nil {
			l.Source = source
		}
		return printJSON(b, l)
	}
	fmt.Fprintf(b, "%s #%d %s %s  origin %s  via %s\n", hlcTime(p.Time), ch.Seq, p.Node, describe(p), p.Origin, source)
	return nil
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
		s.WriteString(formatValue(p.Value))
	}
	if p.Tombstone {
		s.WriteString(" deleted")
	}
	return s.String()
}
