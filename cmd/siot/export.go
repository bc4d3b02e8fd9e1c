package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"

	"github.com/google/uuid"

	"siot/crdt"
	"siot/transport"
)

const exportUsage = `Usage: siot export [--root UUID] [--quiet] [--server URL]

Print every point record of a running server, one JSON object per line, in
the format siot import reads: node points and edge points, tombstoned ones
too, sorted by node, parent, type and key. With --root, print only that
node's subtree: its own points, its descendants' points and the edges below
them. Two replicas holding the same state print byte-identical output. The
export streams page by page, so it works for millions of points. On a
terminal, standard error shows its progress (--quiet: not).

Examples:
  siot export > backup.jsonl
  siot export --root 6ba7b810-9dad-11d1-80b4-00c04fd430c8

Flags:
`

type exportCmd struct {
	m     *Main
	cf    clientFlags
	root  string
	quiet bool
}

func (c *exportCmd) usage() string { return exportUsage }

func (c *exportCmd) flags(fs *flag.FlagSet) {
	c.cf.register(fs, c.m.Getenv)
	fs.StringVar(&c.root, "root", "", "export only this node's subtree")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress bar (there is none either when standard error is not a terminal)")
}

func (c *exportCmd) run(ctx context.Context, args []string) error {
	m, cf, rootFlag, quiet := c.m, c.cf, &c.root, &c.quiet
	if len(args) > 0 {
		return &UsageError{Msg: "export takes no arguments"}
	}
	var root uuid.UUID
	if *rootFlag != "" {
		id, err := crdt.ParseID(*rootFlag)
		if err != nil {
			return &UsageError{Msg: fmt.Sprintf("--root: %v", err)}
		}
		root = id
	}
	cl, err := cf.dial()
	if err != nil {
		return err
	}
	defer cl.close()
	w := bufio.NewWriterSize(m.Stdout, 256<<10)
	req := transport.ExportRequest{Root: root}
	var line []byte
	bar := newProgress(m.Stderr, !*quiet, "exporting", 0)
	defer bar.done()
	for {
		var page transport.ExportPage
		if err := cl.call(ctx, transport.NameExport, req, &page); err != nil {
			return err
		}
		pts, err := crdt.DecodeBatch(page.Points, 0)
		if err != nil {
			return fmt.Errorf("export page: %w", err)
		}
		for i := range pts {
			line = appendRecord(line[:0], &pts[i])
			if _, err := w.Write(line); err != nil {
				return err
			}
		}
		bar.add(int64(len(pts)))
		if !page.More {
			break
		}
		if len(page.Next) == 0 {
			return fmt.Errorf("export: server sent a page without a cursor")
		}
		req.After = page.Next
	}
	bar.done()
	return w.Flush()
}
