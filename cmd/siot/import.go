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
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
	"github.com/siot-io/siot/transport"
)

const importUsage = `Usage: siot import [flags] [FILE|-]

Write point records, one JSON object per line, into a running server. FILE
defaults to standard input ("-").

  {"node":UUID, "parent":UUID (edge points only), "type":string,
   "key":string (default "0"), "value":number, "text":string,
   "tombstone":bool, "hlc":string, "origin":string}

A text must be valid UTF-8, without an escaped lone surrogate ("\ud800"):
such a line is refused, not stored with U+FFFD. A record without "hlc" is
stamped by the server on arrival, in input order, so a later line beats an
earlier one for the same point; one without "origin" gets the server's
instance ID. Records with "hlc" and "origin" keep them, so importing an
export reproduces it.

Every record must belong to the server's tree: a node point to a node in
the tree, an edge point to a parent in the tree. A node is in the tree when
the server has it there (its root, or a node with an edge above it, within
what the credentials may read) or when edge records of the same input,
live or deleted, attach it to such a node. Records outside the tree are a
backup of another instance restored into a server not started with its
root, or points of a node that does not exist. With --allow-orphans the
import writes them anyway and prints their count as a warning. A backup
restores into a new instance started on empty data with the backed-up
root: siot serve --id ROOT.

From standard input, records are written as they are read: a line is sent
at most 50 ms after it is read, with the lines read after it (up to
--batch records, under 512 KiB), one request at a time, so it is durable
within about 100 ms, not only at the end of the input. An edge
application can pipe its readings into siot import - for as long as it
runs. An invalid line stops the import with exit status 1, naming its line
and the reason: the lines before it are written, it and those after it
are not. A record outside the tree is held back until an edge record of
the input attaches its node (a backup lists a node's records before the
edge above its parent), in memory; records still held at the end of the
input are refused, with their count and a few of their nodes and lines
(exit status 1; everything else is written), unless --allow-orphans.
Restore a backup from a FILE.

From a FILE, every record is checked before anything is written: an
invalid record, or records outside the tree, make the import fail naming
them, and nothing is written (the server is asked about all the nodes at
once, 10,000 per request). The first pass keeps the checked records,
encoded, in a temporary file (much smaller than the input; in $TMPDIR),
and the second sends them, in batches of --batch records (fewer when
their texts are long: a batch stays under 512 KiB), one at a time, each
written by the server as a whole or not at all. On a terminal, standard
error shows the progress (--quiet: not). At the end it prints a summary
on standard error (--json: as a JSON object on standard output).

An import is not atomic: one interrupted (the server stops, a reply times
out, the server refuses a batch, an invalid line on standard input) has
written the batches the server acknowledged, and exits with status 1
saying exactly that: the last durable line (every record up to it is
written), the records after it written too, the batch in flight and
whether the server refused it (it answered no: not written) or did not
answer (unknown: it may or may not be written), the records held back
outside the tree (not written), and the command that resumes: the same
one with --from-line, the first line not known written. --from-line N
skips the input's lines before N; line numbers stay those of the whole
input. Importing a line twice is harmless when the record has "hlc" and
"origin" (a backup's records do): it is the same version of its point,
counted stale. A record without "hlc" is stamped again: the same value,
as a newer version (a later write, replicated again, that beats writes
made to that point since the first import).

Examples:
  siot import points.jsonl
  siot import --from-line 120001 backup.jsonl
  siot import --allow-orphans detached.jsonl
  siot export --server nats://old:4222 | siot import --server nats://new:4222
  my-sensor-reader | siot import -

Flags:
`

// defaultImportBatch is --batch's default: records per request.
const defaultImportBatch = 2000

// maxBatchBytes bounds the encoded records of one batch, far under a
// request's limit (crdt.MaxMessageSize, 1 MiB): 2000 records with long
// texts would not fit in one.
const maxBatchBytes = 512 << 10

// maxRecordLine bounds one input line: a point's text is at most 64 KiB,
// which JSON escaping can grow six-fold.
const maxRecordLine = 512 << 10

type importCmd struct {
	m        *Main
	cf       clientFlags
	batch    int
	quiet    bool
	json     bool // --json
	fromLine int
	orphans  bool
}

func (c *importCmd) usage() string { return importUsage }

func (c *importCmd) flags(fs *flag.FlagSet) {
	c.cf.register(fs, c.m.Getenv)
	fs.IntVar(&c.batch, "batch", defaultImportBatch, "records per request")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress bar (there is none either when standard error is not a terminal)")
	fs.BoolVar(&c.json, "json", false, `print the summary on standard output as {"records","file","fromLine","applied","stale","seconds"}`)
	fs.BoolVar(&c.orphans, "allow-orphans", false, "write records outside the server's tree too (with a warning) instead of refusing the import")
	fs.IntVar(&c.fromLine, "from-line", 1, "skip the input's lines before line `N` (to resume an interrupted import; line numbers stay those of the whole input)")
}

func (c *importCmd) run(ctx context.Context, args []string) error {
	m, cf, batch, quiet := c.m, c.cf, &c.batch, &c.quiet
	if len(args) > 1 {
		return &UsageError{Msg: "import takes at most one file"}
	}
	if *batch < 1 || *batch > 100_000 {
		return &UsageError{Msg: "--batch must be 1 to 100000"}
	}
	if c.fromLine < 1 {
		return &UsageError{Msg: "--from-line must be 1 or more"}
	}
	var in io.Reader = m.Stdin
	name := ""
	if len(args) > 0 {
		name = args[0]
	}
	var size int64 // of the input, when known
	if name == "" || name == "-" {
		return c.stream(ctx, in, "standard input", args)
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
	batches, batchSize := 0, 0
	spoolBatch := func() error {
		if len(pts) == 0 {
			return nil
		}
		frame = appendSpoolFrame(frame[:0], pts, lines)
		pts, lines, batchSize = pts[:0], lines[:0], 0
		batches++
		_, err := sw.Write(frame)
		return err
	}
	tree := newTreeIndex()
	n, err := eachRecord(countingReader{in, bar}, name, c.fromLine, func(line int, p crdt.Point) error {
		tree.add(line, &p)
		pts = append(pts, p)
		lines = append(lines, line)
		batchSize += 64 + len(p.Type) + len(p.Key) + len(p.Text) // bounds its encoding
		if len(pts) >= *batch || batchSize >= maxBatchBytes {
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
	defer cl.Close()
	// Before anything is written: every record in the server's tree?
	out, err := tree.check(ctx, cl)
	if err != nil {
		return err
	}
	if out.records > 0 {
		root, err := cl.ServerRoot(ctx)
		if err != nil {
			return err
		}
		if !c.orphans {
			return fmt.Errorf("%s; %s", out.describe(name, root), out.hint())
		}
		fmt.Fprintf(m.Stderr, "warning: %s; writing them (--allow-orphans)\n", out.describe(name, root))
	}
	start := time.Now()
	bar = newProgress(m.Stderr, !*quiet, "importing", int64(n))
	defer bar.done()
	sr := bufio.NewReaderSize(spool, 256<<10)
	var applied, stale int
	// The batches go one at a time: when one fails, those before it are
	// acknowledged and those after it were never sent.
	ack := importProgress{name: name, from: c.fromLine}
	for range batches {
		b, lines, err := readSpoolFrame(sr)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		var res transport.ImportResult
		if err := cl.Request(ctx, transport.NameImport, transport.Import{Points: b}, &res); err != nil {
			bar.done()
			return ack.interrupted(m.Stderr, err, lines, c.resumeArgs(args))
		}
		applied += res.Applied
		stale += res.Stale
		ack.records += len(lines)
		ack.through = lines[len(lines)-1]
		bar.add(int64(len(lines)))
	}
	bar.done()
	return c.summary(name, n, applied, stale, time.Since(start))
}

// stream imports standard input as it reads it (client.Import): a line is
// written within about 50 ms of being read.
func (c *importCmd) stream(ctx context.Context, in io.Reader, name string, args []string) error {
	m := c.m
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	start := time.Now()
	bar := newProgress(m.Stderr, !c.quiet, "importing", 0)
	defer bar.done()
	res, err := cl.Import(ctx, in, client.ImportOptions{Name: name, FromLine: c.fromLine, Batch: c.batch,
		AllowOrphans: c.orphans, OnAck: func(lines []int, _ client.Result) { bar.add(int64(len(lines))) }})
	bar.done()
	if err != nil {
		return c.streamStopped(err, args)
	}
	if res.Orphans > 0 {
		fmt.Fprintf(m.Stderr, "warning: %d record%s outside this server's tree written at the end of the input (--allow-orphans)\n", res.Orphans, plural(res.Orphans))
	}
	return c.summary(name, res.Records, res.Applied, res.Stale, time.Since(start))
}

// streamStopped reports, on standard error, exactly what a streaming
// import that stopped has written, and the command that resumes it; it
// returns the cause.
func (c *importCmd) streamStopped(err error, args []string) error {
	w := c.m.Stderr
	var ie *client.ImportError
	if !errors.As(err, &ie) {
		return err
	}
	if ie.Resume > c.fromLine {
		fmt.Fprintf(w, "import stopped: every record before line %d is written (acknowledged by the server); the last durable line is %d\n", ie.Resume, ie.Resume-1)
	} else {
		fmt.Fprintf(w, "import stopped: nothing from line %d on is known written\n", c.fromLine)
	}
	if ie.AckedAfter > 0 {
		fmt.Fprintf(w, "%d record%s after line %d are written too (in acknowledged batches)\n", ie.AckedAfter, plural(ie.AckedAfter), ie.Resume)
	}
	if n := len(ie.Batch); n > 0 {
		first, last := ie.Batch[0], ie.Batch[n-1]
		if ie.Refused {
			fmt.Fprintf(w, "lines %d-%d (%d records): refused by the server, not written; nothing after line %d was sent\n", first, last, n, last)
		} else {
			fmt.Fprintf(w, "lines %d-%d (%d records): no reply from the server, so they may or may not be written; nothing after line %d was sent\n", first, last, n, last)
		}
	}
	if n := len(ie.Held); n > 0 {
		fmt.Fprintf(w, "%d record%s outside this server's tree (lines %s) were held back, waiting for an edge record to attach them: not written\n", n, plural(n), lineList(ie.Held))
	}
	fmt.Fprintf(w, "resume with: %s\n", fmt.Sprintf(c.resumeArgs(args), ie.Resume))
	if len(ie.Batch) > 0 && ie.Refused {
		return importError(ie.Err, ie.Name, ie.Batch)
	}
	return err
}

// lineList shows a few line numbers.
func lineList(lines []int) string {
	var b strings.Builder
	for i, l := range lines {
		if i == 5 {
			b.WriteString(", …")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(l))
	}
	return b.String()
}

// summary prints an import's summary: on standard error, or as JSON on
// standard output.
func (c *importCmd) summary(name string, n, applied, stale int, el time.Duration) error {
	from := name
	if c.fromLine > 1 {
		from = fmt.Sprintf("%s (from line %d)", name, c.fromLine)
	}
	if c.json {
		return printJSON(c.m.Stdout, map[string]any{"records": n, "file": name, "fromLine": c.fromLine, "applied": applied, "stale": stale, "seconds": el.Seconds()})
	}
	fmt.Fprintf(c.m.Stderr, "imported %d records from %s: %d applied, %d stale, in %v (%s records/s)\n",
		n, from, applied, stale, el.Round(time.Millisecond), humanCount(float64(n)/max(el.Seconds(), 1e-9)))
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

// eachRecord calls fn with every record of r from line from on and its
// line number, skipping blank lines; the lines before from are not parsed.
// It stops at the first invalid record, naming the line.
func eachRecord(r io.Reader, name string, from int, fn func(line int, p crdt.Point) error) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxRecordLine)
	line, n := 0, 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if line < from || len(trimSpace(b)) == 0 {
			continue
		}
		p, err := record.Parse(b)
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

// importProgress is what an import's second pass knows the server has
// written: the records of every acknowledged batch.
type importProgress struct {
	name    string // the input, for messages
	from    int    // the first line read (--from-line)
	through int    // the last line of the last acknowledged batch; 0: none
	records int    // records in acknowledged batches
}

// interrupted reports a batch (of input lines) whose write failed with
// err: on w, what is written, what is not known and the command that
// resumes; as the error, the batch and why. A reply from the server that
// refuses the batch means it wrote none of it; no reply (a timeout, a
// closed connection) leaves the batch unknown: written or not.
func (a importProgress) interrupted(w io.Writer, err error, lines []int, resume string) error {
	first, last := lines[0], lines[len(lines)-1]
	span := fmt.Sprintf("lines %d-%d", a.from, a.through)
	if a.from > 1 {
		span = fmt.Sprintf("lines %d-%d (from --from-line %d)", a.from, a.through, a.from)
	}
	if a.through == 0 {
		fmt.Fprintf(w, "import interrupted: no batch was acknowledged, nothing from line %d on is known written\n", a.from)
	} else {
		fmt.Fprintf(w, "import interrupted: %d records on %s are written (acknowledged by the server); the last durable line is %d\n",
			a.records, span, a.through)
	}
	var out error
	if errors.Is(err, nats.ErrMaxPayload) {
		fmt.Fprintf(w, "lines %d-%d (%d records): not sent (too large for one request), not written\n", first, last, len(lines))
		out = fmt.Errorf("%s, lines %d-%d: batch not sent: %w", a.name, first, last, err)
	} else if client.IsRefused(err) {
		fmt.Fprintf(w, "lines %d-%d (%d records): refused by the server, not written; nothing after line %d was sent\n", first, last, len(lines), last)
		out = importError(err, a.name, lines)
	} else {
		fmt.Fprintf(w, "lines %d-%d (%d records): no reply from the server, so they may or may not be written; nothing after line %d was sent\n",
			first, last, len(lines), last)
		out = fmt.Errorf("%s, lines %d-%d: no reply from the server (the batch may or may not be written): %w", a.name, first, last, err)
	}
	fmt.Fprintf(w, "resume with: %s\n", fmt.Sprintf(resume, first))
	return out
}

// resumeArgs returns the command line that imports the same input from a
// line on (a %d in it), with this command's flags made explicit.
func (c *importCmd) resumeArgs(args []string) string {
	cmd := []string{"siot", "import", "--from-line", "%d", "--server", shellQuote(c.cf.server)}
	if c.cf.creds != "" {
		cmd = append(cmd, "--creds", shellQuote(c.cf.creds))
	}
	if c.cf.tlsCA != "" {
		cmd = append(cmd, "--tls-ca", shellQuote(c.cf.tlsCA))
	}
	if c.batch != defaultImportBatch {
		cmd = append(cmd, "--batch", strconv.Itoa(c.batch))
	}
	if c.cf.timeout != 30*time.Second { // --timeout's default

		cmd = append(cmd, "--timeout", c.cf.timeout.String())
	}
	if c.quiet {
		cmd = append(cmd, "--quiet")
	}
	if c.orphans {
		cmd = append(cmd, "--allow-orphans")
	}
	if len(args) == 0 || args[0] == "-" {
		cmd = append(cmd, "-  # the same input on standard input")
	} else {
		cmd = append(cmd, shellQuote(args[0]))
	}
	return strings.Join(cmd, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@,+=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// importError names the input line of a point the server refused.
// A batch that failed otherwise (no reply, the server gone) was not
// refused: the error says what happened to it.
func importError(err error, name string, lines []int) error {
	var re *client.Error
	if !errors.As(err, &re) || !re.Refused() {
		return fmt.Errorf("%s, lines %d-%d: %w", name, lines[0], lines[len(lines)-1], err)
	}
	if mm := pointIndex.FindStringSubmatch(re.Server); mm != nil {
		if i, convErr := strconv.Atoi(mm[1]); convErr == nil && i < len(lines) {
			return fmt.Errorf("%s, line %d: server refused the record (its batch, lines %d-%d, is not written): %w", name, lines[i], lines[0], lines[len(lines)-1], err)
		}
	}
	return fmt.Errorf("%s, lines %d-%d: server refused the batch (not written): %w", name, lines[0], lines[len(lines)-1], err)
}
