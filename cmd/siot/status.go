package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/transport"
)

const statusUsage = `Usage: siot status [--json] [--watch [--interval D]] [--server URL]

Print a running server's status: its root node ID, its instance ID, and each
link with its URL, whether it is connected and in sync, how many changes are
pending, the last error, and the bytes sent and received. A link that is
down shows "offline since" the time its remote was last seen; the links
remotes opened here (edges, peers) stay listed after their session ends,
also after a restart, so a cloud shows which edges are offline and since
when.

With --json, print one JSON object:
  {"id": ROOT, "instance": ID, "links": [{"url", "connected", "inSync",
   "pending", "lastError", "bytesSent", "bytesReceived", "lastSeen", ...}],
   "accepted": [...], ...}
"inSync" is true when the last digest comparison of the link's scope
matched and nothing is pending either way. "lastSeen" (RFC 3339, UTC) is
when the remote last spoke: for a link that is down, when it went offline.

With --watch, print the status again every --interval (default 1s) until
interrupted (Ctrl-C: exit status 0), redrawing the screen on a terminal,
to follow an initial sync or a long resume. It adds the rate at which the
server stores changes and, per link, RATE: how fast its pending changes
fall, in changes/s (negative while they grow), ETA: when they would reach
zero at that rate, and TRAFFIC: bytes/s both ways. With --json as well,
print one JSON object per refresh.

Examples:
  siot status
  siot status --json --server nats://127.0.0.1:4223
  siot status --watch --interval 2s

Flags:
`

type statusCmd struct {
	clientCmd
	watch    bool
	interval time.Duration
}

func (c *statusCmd) usage() string { return statusUsage }

func (c *statusCmd) flags(fs *flag.FlagSet) {
	c.register(fs, "print one JSON object")
	fs.BoolVar(&c.watch, "watch", false, "refresh every --interval until interrupted")
	fs.DurationVar(&c.interval, "interval", time.Second, "time between refreshes with --watch")
}

func (c *statusCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "status takes no arguments"}
	}
	if c.interval < 10*time.Millisecond {
		return &UsageError{Msg: "--interval must be at least 10ms"}
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	if !c.watch {
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		return c.print(c.m.Stdout, st, nil)
	}
	return c.watchStatus(ctx, cl)
}

// watchStatus prints the status every interval until ctx is done.
func (c *statusCmd) watchStatus(ctx context.Context, cl *client.Client) error {
	out := c.m.Stdout
	clear := isTerminal(out) && !c.asJSON
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	var prev *statusSample
	for {
		st, err := cl.Status(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		cur := &statusSample{at: time.Now(), st: st}
		var buf bytes.Buffer
		if clear {
			buf.WriteString("\x1b[H\x1b[2J")
		} else if !c.asJSON && prev != nil {
			buf.WriteString("\n")
		}
		if !c.asJSON {
			fmt.Fprintf(&buf, "%s\n", cur.at.Format("15:04:05"))
		}
		if err := c.print(&buf, st, prev); err != nil {
			return err
		}
		if _, err := out.Write(buf.Bytes()); err != nil {
			return err
		}
		prev = cur
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// statusSample is one status and when it was read, to compute rates.
type statusSample struct {
	at time.Time
	st transport.Status
}

// link returns the sample's link named key (linkKey), if any.
func (s *statusSample) link(key string) (transport.LinkStatus, bool) {
	for _, l := range append(append([]transport.LinkStatus(nil), s.st.Links...), s.st.Accepted...) {
		if linkKey(l) == key {
			return l, true
		}
	}
	return transport.LinkStatus{}, false
}

// linkKey names a link across samples: its URL when dialed, else the
// remote instance.
func linkKey(l transport.LinkStatus) string {
	if l.URL != "" {
		return l.URL
	}
	return "from " + l.Remote
}

// print writes st; with prev, also the rates since prev.
func (c *statusCmd) print(w io.Writer, st transport.Status, prev *statusSample) error {
	if st.Links == nil {
		st.Links = []transport.LinkStatus{}
	}
	if st.Accepted == nil {
		st.Accepted = []transport.LinkStatus{}
	}
	if c.asJSON {
		return printJSON(w, st)
	}
	var dt float64
	if prev != nil {
		dt = max(time.Since(prev.at).Seconds(), 1e-3)
	}
	fmt.Fprintf(w, "id        %s\ninstance  %s\nversion   %s\nchanges   %d", st.ID, st.Instance, st.Version, st.LastSeq)
	if prev != nil {
		fmt.Fprintf(w, " (%.0f/s)", float64(st.LastSeq-min(prev.st.LastSeq, st.LastSeq))/dt)
	}
	fmt.Fprintln(w)
	if st.You != "" {
		fmt.Fprintf(w, "you       %s\n", st.You)
	}
	if len(st.Scope) > 0 {
		fmt.Fprintf(w, "scope     %s\n", strings.Join(st.Scope, ", "))
	}
	if len(st.Links)+len(st.Accepted) == 0 {
		fmt.Fprintln(w, "links     none")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rates := ""
	if c.watch {
		rates = "\tRATE\tETA\tTRAFFIC"
	}
	fmt.Fprintf(tw, "\nLINK\tROLE\tCONNECTED\tIN SYNC\tPENDING%s\tSENT\tRECEIVED\tLAST ERROR\n", rates)
	for _, l := range append(append([]transport.LinkStatus(nil), st.Links...), st.Accepted...) {
		rates = ""
		if c.watch {
			rates = "\t-\t-\t-"
			if prev != nil {
				if p, ok := prev.link(linkKey(l)); ok {
					rates = linkRates(p, l, dt)
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d%s\t%d\t%d\t%s\n", linkKey(l), l.Role, connectedText(l), l.InSync, l.Pending, rates,
			l.BytesSent, l.BytesRecv, l.LastError)
	}
	return tw.Flush()
}

// connectedText is a link's CONNECTED column: true, or when it is down,
// since when its remote was last seen ("offline since 2026-12-06 04:13:57
// UTC"), or false when it never was.
func connectedText(l transport.LinkStatus) string {
	if l.Connected {
		return "true"
	}
	seen, err := time.Parse(time.RFC3339, l.LastSeen)
	if err != nil {
		return "false"
	}
	return "offline since " + seen.UTC().Format("2006-01-02 15:04:05 MST")
}

// linkRates formats a link's RATE, ETA and TRAFFIC columns between two
// samples dt seconds apart.
func linkRates(prev, cur transport.LinkStatus, dt float64) string {
	rate := (float64(prev.Pending) - float64(cur.Pending)) / dt
	eta := "-"
	switch {
	case cur.Pending == 0:
		eta = "0s"
	case rate > 0:
		eta = time.Duration(float64(cur.Pending) / rate * float64(time.Second)).Round(time.Second).String()
	}
	traffic := float64(cur.BytesSent+cur.BytesRecv-min(prev.BytesSent+prev.BytesRecv, cur.BytesSent+cur.BytesRecv)) / dt
	return fmt.Sprintf("\t%.0f/s\t%s\t%s/s", rate, eta, bytesHuman(traffic))
}

func bytesHuman(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1fMB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1fKB", b/(1<<10))
	}
	return fmt.Sprintf("%.0fB", b)
}
