package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"time"

	"siot/crdt"
	"siot/transport"
)

const importUsage = `Usage: siot import [flags] [FILE|-]

Write point records, one JSON object per line, into a running server. FILE
defaults to standard input ("-").

  {"node":UUID, "parent":UUID (edge points only), "type":string,
   "key":string (default "0"), "value":number, "text":string,
   "tombstone":bool, "hlc":string, "origin":string}

Every record is checked before anything is written: an invalid record stops
the import with exit status 1, naming its line and the reason, and nothing is
written. A record without "hlc" is stamped by the server on arrival, in input
order, so a later line beats an earlier one for the same point; one without
"origin" gets the server's instance ID. Records with "hlc" and "origin" keep
them, so importing an export reproduces it.

Examples:
  siot import points.jsonl
  siot export --server nats://old:4222 | siot import --server nats://new:4222

Flags:
`

// maxRecordLine bounds one input line: a point's text is at most 64 KiB,
// which JSON escaping can grow six-fold.
const maxRecordLine = 512 << 10

type importCmd struct {
	m     *Main
	cf    clientFlags
	batch int
}

func (c *importCmd) usage() string { return importUsage }

func (c *importCmd) flags(fs *flag.FlagSet) {
	c.cf.register(fs, c.m.Getenv)
	fs.IntVar(&c.batch, "batch", 2000, "records per request")
}

func (c *importCmd) run(ctx context.Context, args []string) error {
	m, cf, batch := c.m, c.cf, &c.batch
	if len(args) > 1 {
		return &UsageError{Msg: "import takes at most one file"}
	}
	if *batch < 1 || *batch > 100_000 {
		return &UsageError{Msg: "--batch must be 1 to 100000"}
	}
	// Read the input into a seekable file: a first pass checks every
	// record, a second writes them.
	var in *os.File
	name := ""
	if len(args) > 0 {
		name = args[0]
	}
	if name == "" || name == "-" {
		tmp, err := os.CreateTemp("", "siot-import-*.jsonl")
		if err != nil {
			return fmt.Errorf("spool standard input: %w", err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		if _, err := io.Copy(tmp, m.Stdin); err != nil {
			return fmt.Errorf("spool standard input: %w", err)
		}
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		in, name = tmp, "standard input"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	n, err := eachRecord(in, name, func(int, crdt.Point) error { return nil })
	if err != nil {
		return err
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	cl, err := cf.dial()
	if err != nil {
		return err
	}
	defer cl.close()
	start := time.Now()
	var pts []crdt.Point
	var lines []int
	var applied, stale int
	flush := func() error {
		if len(pts) == 0 {
			return nil
		}
		var res transport.ImportResult
		if err := cl.call(ctx, transport.SubjectImport, transport.Import{Points: crdt.AppendBatch(nil, pts)}, &res); err != nil {
			return importError(err, name, lines)
		}
		applied += res.Applied
		stale += res.Stale
		pts, lines = pts[:0], lines[:0]
		return nil
	}
	_, err = eachRecord(in, name, func(line int, p crdt.Point) error {
		pts = append(pts, p)
		lines = append(lines, line)
		if len(pts) >= *batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(m.Stderr, "imported %d records from %s: %d applied, %d stale, in %v (%.0f records/s)\n",
		n, name, applied, stale, el.Round(time.Millisecond), float64(n)/max(el.Seconds(), 1e-9))
	return nil
}

// eachRecord calls fn with every record of r and its line number, skipping
// blank lines. It stops at the first invalid record, naming the line.
func eachRecord(r io.Reader, name string, fn func(line int, p crdt.Point) error) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxRecordLine)
	line, n := 0, 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(trimSpace(b)) == 0 {
			continue
		}
		p, err := parseRecord(b)
		if err != nil {
			return n, fmt.Errorf("%s, line %d: %w", name, line, err)
		}
		n++
		if err := fn(line, p); err != nil {
			return n, err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return n, fmt.Errorf("%s, line %d: longer than %d bytes", name, line+1, maxRecordLine)
		}
		return n, fmt.Errorf("%s: %w", name, err)
	}
	return n, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

var pointIndex = regexp.MustCompile(`point (\d+)`)

// importError names the input line of a point the server refused.
func importError(err error, name string, lines []int) error {
	if mm := pointIndex.FindStringSubmatch(err.Error()); mm != nil {
		if i, convErr := strconv.Atoi(mm[1]); convErr == nil && i < len(lines) {
			return fmt.Errorf("%s, line %d: server refused the record: %w", name, lines[i], err)
		}
	}
	return fmt.Errorf("%s, lines %d-%d: server refused the batch: %w", name, lines[0], lines[len(lines)-1], err)
}
