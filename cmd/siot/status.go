package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"text/tabwriter"

	"siot/transport"
)

const statusUsage = `Usage: siot status [--json] [--server URL]

Print a running server's status: its root node ID, its instance ID, and each
link with its URL, whether it is connected and in sync, how many changes are
pending, the last error, and the bytes sent and received.

With --json, print one JSON object:
  {"id": ROOT, "instance": ID, "links": [{"url", "connected", "inSync",
   "pending", "lastError", "bytesSent", "bytesReceived", ...}], ...}
"inSync" is true when the last digest comparison of the link's scope
matched and nothing is pending either way.

Examples:
  siot status
  siot status --json --server nats://127.0.0.1:4223

Flags:
`

type statusCmd struct{ m *Main }

func (c *statusCmd) Run(_ context.Context, args []string) error {
	m := c.m
	var cf clientFlags
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	cf.register(fs, m.Getenv)
	asJSON := fs.Bool("json", false, "print one JSON object")
	fs.Usage = func() { fmt.Fprint(m.Stdout, statusUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args, m.Stdout); err != nil {
		if err == errHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: "status takes no arguments"}
	}
	cl, err := cf.dial()
	if err != nil {
		return err
	}
	defer cl.close()
	var st transport.Status
	if err := cl.call(transport.SubjectStatus, transport.StatusRequest{}, &st); err != nil {
		return err
	}
	if st.Links == nil {
		st.Links = []transport.LinkStatus{}
	}
	if st.Accepted == nil {
		st.Accepted = []transport.LinkStatus{}
	}
	if *asJSON {
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "%s\n", b)
		return nil
	}
	fmt.Fprintf(m.Stdout, "id        %s\ninstance  %s\nversion   %s\nchanges   %d\n", st.ID, st.Instance, st.Version, st.LastSeq)
	if len(st.Links)+len(st.Accepted) == 0 {
		fmt.Fprintln(m.Stdout, "links     none")
		return nil
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nLINK\tROLE\tCONNECTED\tIN SYNC\tPENDING\tSENT\tRECEIVED\tLAST ERROR")
	for _, l := range st.Links {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%d\t%d\t%d\t%s\n", l.URL, l.Role, l.Connected, l.InSync, l.Pending, l.BytesSent, l.BytesRecv, l.LastError)
	}
	for _, l := range st.Accepted {
		fmt.Fprintf(tw, "from %s\t%s\t%v\t%v\t%d\t%d\t%d\t%s\n", l.Remote, l.Role, l.Connected, l.InSync, l.Pending, l.BytesSent, l.BytesRecv, l.LastError)
	}
	return tw.Flush()
}
