package main

import (
	"bufio"
	"context"
	"encoding/binary"
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

The first pass keeps the checked records, encoded, in a temporary file
(much smaller than the input; in $TMPDIR), and the second sends them. On a
terminal, standard error shows the progress of both passes (--quiet: not).
At the end it prints a summary on standard error (--json: as a JSON
object on standard output).

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
	quiet bool
	json  bool // --json
}

func (c *importCmd) usage() string { return importUsage }

func (c *importCmd) flags(fs *flag.FlagSet) {
	c.cf.register(fs, c.m.Getenv)
	fs.IntVar(&c.batch, "batch", 2000, "records per request")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress bar (there is none either when standard error is not a terminal)")
	fs.BoolVar(&c.json, "json", false, `print the summary on standard output as {"records","file","applied","stale","seconds"}`)
}

func (c *importCmd) run(ctx context.Context, args []string) error {
	m, cf, batch, quiet := c.m, c.cf, &c.batch, &c.quiet
	if len(args) > 1 {
		return &UsageError{Msg: "import takes at most one file"}
	}
	if *batch < 1 || *batch > 100_000 {
		return &UsageError{Msg: "--batch must be 1 to 100000"}
	}
	var in io.Reader = m.Stdin
	name := ""
	if len(args) > 0 {
		name = args[0]
	}
	var size int64 // of the input, when known
	if name == "" || name == "-" {
		name = "standard input"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		in = f
	}
	// First pass: check every record and spool the batches, encoded, to
	// a temporary file; the second pass sends them. Nothing is written
	// unless every record is valid, each record is parsed once, and the
	// spool is about a fifth of the input's size.
	bar := newProgress(m.Stderr, !*quiet, "checking", size)
	spool, err := os.CreateTemp("", "siot-import-*.batches")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	sw := bufio.NewWriterSize(spool, 256<<10)
	var pts []crdt.Point
	var lines []int
	var frame []byte
	batches := 0
	spoolBatch := func() error {
		if len(pts) == 0 {
			return nil
		}
		frame = appendSpoolFrame(frame[:0], pts, lines)
		pts, lines = pts[:0], lines[:0]
		batches++
		_, err := sw.Write(frame)
		return err
	}
	n, err := eachRecord(countingReader{in, bar}, name, func(line int, p crdt.Point) error {
		pts = append(pts, p)
		lines = append(lines, line)
		if len(pts) >= *batch {
			return spoolBatch()
		}
		return nil
	})
	if err == nil {
		err = spoolBatch()
	}
	if err == nil {
		err = sw.Flush()
	}
	bar.done()
	if err != nil {
		return err
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return err
	}
	cl, err := cf.dial()
	if err != nil {
		return err
	}
	defer cl.close()
	start := time.Now()
	bar = newProgress(m.Stderr, !*quiet, "importing", int64(n))
	defer bar.done()
	sr := bufio.NewReaderSize(spool, 256<<10)
	var applied, stale int
	for range batches {
		b, lines, err := readSpoolFrame(sr)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		var res transport.ImportResult
		if err := cl.call(ctx, transport.NameImport, transport.Import{Points: b}, &res); err != nil {
			return importError(err, name, lines)
		}
		applied += res.Applied
		stale += res.Stale
		bar.add(int64(len(lines)))
	}
	bar.done()
	el := time.Since(start)
	if c.json {
		return printJSON(m.Stdout, map[string]any{"records": n, "file": name, "applied": applied, "stale": stale, "seconds": el.Seconds()})
	}
	fmt.Fprintf(m.Stderr, "imported %d records from %s: %d applied, %d stale, in %v (%s records/s)\n",
		n, name, applied, stale, el.Round(time.Millisecond), humanCount(float64(n)/max(el.Seconds(), 1e-9)))
	return nil
}

// appendSpoolFrame appends a batch as a spool frame: the encoded batch's
// length and bytes, then the number of records and their input lines as
// deltas, all uvarints.
func appendSpoolFrame(dst []byte, pts []crdt.Point, lines []int) []byte {
	b := crdt.AppendBatch(nil, pts)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	dst = append(dst, b...)
	dst = binary.AppendUvarint(dst, uint64(len(lines)))
	prev := 0
	for _, l := range lines {
		dst = binary.AppendUvarint(dst, uint64(l-prev))
		prev = l
	}
	return dst
}

// readSpoolFrame reads a frame appendSpoolFrame wrote.
func readSpoolFrame(r *bufio.Reader) (batch []byte, lines []int, err error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, nil, err
	}
	batch = make([]byte, n)
	if _, err := io.ReadFull(r, batch); err != nil {
		return nil, nil, err
	}
	count, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, nil, err
	}
	lines = make([]int, 0, count)
	prev := 0
	for range count {
		d, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, nil, err
		}
		prev += int(d)
		lines = append(lines, prev)
	}
	return batch, lines, nil
}

// countingReader reports the bytes read through it to a progress bar.
type countingReader struct {
	r   io.Reader
	bar *progress
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.bar.add(int64(n))
	return n, err
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
// A batch that failed otherwise (no reply, the server gone) was not
// refused: the error says what happened to it.
func importError(err error, name string, lines []int) error {
	var re *refusedError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s, lines %d-%d: %w", name, lines[0], lines[len(lines)-1], err)
	}
	if mm := pointIndex.FindStringSubmatch(re.raw); mm != nil {
		if i, convErr := strconv.Atoi(mm[1]); convErr == nil && i < len(lines) {
			return fmt.Errorf("%s, line %d: %w", name, lines[i], err)
		}
	}
	return fmt.Errorf("%s, lines %d-%d: %w", name, lines[0], lines[len(lines)-1], err)
}
