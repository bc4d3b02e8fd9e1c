package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
)

const exportUsage = `Usage: siot export [--root UUID] [--quiet] [--server URL]

Print every point record of a running server, one JSON object per line, in
the format siot import reads: node points and edge points, tombstoned ones
too, sorted by node, parent, type and key. With --root, print only that
node's subtree: its own points, its descendants' points and the edges below
them. Two replicas holding the same state print byte-identical output. The
export streams page by page, so it works for millions of points. On a
terminal, standard error shows its progress (--quiet: not).

When it completes, the export prints "exported N records" on standard
error, N being exactly the lines it wrote (with --quiet too): a backup
script compares it with wc -l. An export that fails (the server stops, a
reply times out, --root names a node the server does not have) exits with
status 1, and its output ends on a whole record: it writes page by page,
each page whole, never part of a line. Such an output is not a backup:
docs/operations.md has a recipe that keeps only complete ones.

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
	defer cl.Close()
	var buf []byte
	written := 0
	bar := newProgress(m.Stderr, !*quiet, "exporting", 0)
	defer bar.done()
	for pts, err := range cl.Export(ctx, root) {
		if err != nil {
			if errors.Is(err, client.ErrNotFound) && written == 0 {
				return fmt.Errorf("export --root: %w", err)
			}
			return fmt.Errorf("export: after %d records: %w", written, err)
		}
		// The page goes out whole, in one write, so an export cut off
		// between pages ends on a whole record.
		buf = buf[:0]
		for i := range pts {
			buf = record.Append(buf, &pts[i])
		}
		if _, err := m.Stdout.Write(buf); err != nil {
			return fmt.Errorf("export: write after %d records: %w", written, err)
		}
		written += len(pts)
		bar.add(int64(len(pts)))
	}
	bar.done()
	fmt.Fprintf(m.Stderr, "exported %d records\n", written)
	return nil
}
