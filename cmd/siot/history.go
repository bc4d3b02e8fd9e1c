package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
)

const historyUsage = `Usage: siot history NODE TYPE[.KEY] [--from T] [--to T] [--step D] [--json]

Print the values that NODE's point TYPE.KEY took (KEY default "0"),
oldest first, one a line: when it was written (UTC, to the millisecond),
the value (a text point's text, quoted; "deleted" for a tombstone) and
"origin" with the first 8 hex digits of the instance or user that wrote
it. Only a node's own points have a history, and credentials have none.

With --step D, print instead one line per step of D, the first starting
at --from (at 1970-01-01 without it): its start, and the count, min, max,
mean and last of its values, tombstones aside. Steps without a value are
left out.

--from and --to bound the span: values written at --from or later and
before --to (default: all of them). Each takes an RFC 3339 time
("2026-03-01T12:00:00Z", "2026-03-01T13:00:00.250+01:00"), a date
("2026-03-01": midnight UTC), Unix milliseconds ("1772366400000"), "now",
or a time relative to now ("-24h", "-90m", "-7d": d is 24 hours). --step
takes a duration ("1h", "15m", "1d", "500ms"), whole milliseconds.

The history streams page by page: a year of readings once a second (31.5
million lines) prints in constant memory. A read cut off midway (the
server stopped) exits 1, saying how many lines it printed and the time of
the last.

With --json, print one JSON object per line: {"time", "hlc", "origin",
"value", "text", "tombstone"}, "text" only when set and a text point's
without "value", as in the records of get; with --step, {"start",
"count", "min", "max", "mean", "sum", "last", "lastTime"}.

Examples:
  siot history 6ba7b811-9dad-11d1-80b4-00c04fd430c8 temp --from -24h
  siot history 6ba7b811-9dad-11d1-80b4-00c04fd430c8 temp --from 2026-03-01 --to 2026-04-01 --step 1d
  siot history 6ba7b811-9dad-11d1-80b4-00c04fd430c8 ip.eth0 --json

Flags:
`

type historyCmd struct {
	clientCmd
	from, to, step string
}

func (c *historyCmd) usage() string { return historyUsage }

func (c *historyCmd) flags(fs *flag.FlagSet) {
	c.register(fs, "print one JSON object per line")
	fs.StringVar(&c.from, "from", "", "the span's start: RFC 3339, a date, Unix ms, now, or relative (-24h, -7d)")
	fs.StringVar(&c.to, "to", "", "the span's end (excluded), in the forms of --from")
	fs.StringVar(&c.step, "step", "", "summarize per step of this duration (1h, 15m, 1d)")
}

func (c *historyCmd) run(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return &UsageError{Msg: "history takes NODE and TYPE[.KEY]"}
	}
	id, err := parseNode("NODE", args[0])
	if err != nil {
		return err
	}
	typ, key, dot := strings.Cut(args[1], ".")
	if dot && key == "" {
		return &UsageError{Msg: fmt.Sprintf("%q: empty KEY after the \".\"", oneLine(args[1], 40))}
	}
	p := crdt.Point{Node: id, Type: typ, Key: key}
	p.Normalize()
	if err := p.ValidateUnstamped(); err != nil {
		return &UsageError{Msg: fmt.Sprintf("%s: %v", oneLine(args[1], 40), err)}
	}
	var o client.HistoryOptions
	now := time.Now()
	if o.From, err = flagTime("--from", c.from, now); err != nil {
		return err
	}
	if o.To, err = flagTime("--to", c.to, now); err != nil {
		return err
	}
	if !o.From.IsZero() && !o.To.IsZero() && o.From.After(o.To) {
		return &UsageError{Msg: fmt.Sprintf("--from %s is after --to %s", o.From.Format(time.RFC3339Nano), o.To.Format(time.RFC3339Nano))}
	}
	if c.step != "" {
		if o.Step, err = parseDays(c.step); err != nil || o.Step < time.Millisecond || o.Step%time.Millisecond != 0 {
			return &UsageError{Msg: fmt.Sprintf("--step %q: want a duration of whole milliseconds, 1ms or more (1h, 15m, 1d)", c.step)}
		}
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	out := bufio.NewWriterSize(c.m.Stdout, 64<<10)
	var n int
	var last time.Time
	if o.Step != 0 {
		n, last, err = c.printSteps(ctx, cl, out, id, p.Type, p.Key, o)
	} else {
		n, last, err = c.printSamples(ctx, cl, out, id, p.Type, p.Key, o)
	}
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		if n > 0 {
			return fmt.Errorf("after %d line%s, the last at %s: %w", n, map[bool]string{true: "s"}[n != 1], last.Format(histTime), err)
		}
		return err
	}
	if n == 0 {
		fmt.Fprintf(c.m.Stderr, "no history of %s %s.%s in that span\n", id, p.Type, p.Key)
	}
	return nil
}

// histTime is how history shows a time: RFC 3339, UTC, milliseconds.
const histTime = "2006-01-02T15:04:05.000Z07:00"

// sampleLine is one sample of history --json.
type sampleLine struct {
	Time      string   `json:"time"`
	HLC       string   `json:"hlc"`
	Origin    string   `json:"origin"`
	Value     *float64 `json:"value,omitempty"`
	Text      string   `json:"text,omitempty"`
	Tombstone bool     `json:"tombstone"`
}

// stepLine is one step of history --step --json. Mean and Sum are null
// when the sum overflowed float64.
type stepLine struct {
	Start    string   `json:"start"`
	Count    int      `json:"count"`
	Min      float64  `json:"min"`
	Max      float64  `json:"max"`
	Mean     *float64 `json:"mean"`
	Sum      *float64 `json:"sum"`
	Last     float64  `json:"last"`
	LastTime string   `json:"lastTime"`
}

func (c *historyCmd) printSamples(ctx context.Context, cl *client.Client, out *bufio.Writer, node uuid.UUID, typ, key string, o client.HistoryOptions) (int, time.Time, error) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	n := 0
	var last time.Time
	for s, err := range cl.History(ctx, node, typ, key, o) {
		if err != nil {
			return n, last, err
		}
		at := s.Time.Time()
		p := crdt.Point{Node: node, Type: typ, Key: key, Value: s.Value, Text: s.Text}
		if c.asJSON {
			l := sampleLine{Time: at.Format(histTime), HLC: s.Time.String(), Origin: s.Origin.String(), Text: s.Text, Tombstone: s.Tombstone}
			if !record.IsText(&p) {
				v := s.Value
				l.Value = &v
			}
			err = enc.Encode(l)
		} else {
			_, err = fmt.Fprintf(out, "%s  %s  origin %s\n", at.Format(histTime), shownSample(&p, s.Tombstone), s.Origin.String()[:8])
		}
		if err != nil {
			return n, last, err
		}
		n, last = n+1, at
	}
	return n, last, nil
}

// shownSample is a sample's content as history prints it: "deleted", a
// text quoted, else the value (and a text beside it, quoted).
func shownSample(p *crdt.Point, tombstone bool) string {
	switch {
	case tombstone:
		return "deleted"
	case record.IsText(p):
		return quoteText(p.Text)
	case p.Text != "":
		return formatValue(p.Value) + " " + quoteText(p.Text)
	}
	return formatValue(p.Value)
}

func (c *historyCmd) printSteps(ctx context.Context, cl *client.Client, out *bufio.Writer, node uuid.UUID, typ, key string, o client.HistoryOptions) (int, time.Time, error) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	num := formatValue
	n := 0
	var last time.Time
	for m, err := range cl.HistorySummaries(ctx, node, typ, key, o) {
		if err != nil {
			return n, last, err
		}
		if c.asJSON {
			l := stepLine{Start: m.Start.Format(histTime), Count: m.Count, Min: m.Min, Max: m.Max, Last: m.Last,
				LastTime: m.LastTime.Time().Format(histTime)}
			if !math.IsNaN(m.Sum) && !math.IsInf(m.Sum, 0) {
				l.Mean, l.Sum = &m.Mean, &m.Sum
			}
			err = enc.Encode(l)
		} else {
			_, err = fmt.Fprintf(out, "%s  count %d  min %s  max %s  mean %s  last %s\n", m.Start.Format(histTime), m.Count,
				num(m.Min), num(m.Max), strconv.FormatFloat(m.Mean, 'g', 6, 64), num(m.Last))
		}
		if err != nil {
			return n, last, err
		}
		n, last = n+1, m.Start
	}
	return n, last, nil
}

// flagTime parses the time of flag name ("" is none) relative to now:
// RFC 3339, a date (midnight UTC), Unix milliseconds, "now", or a
// duration from now with its sign ("-24h", "+1h", "-7d").
func flagTime(name, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := parseTime(s, now)
	if err != nil {
		return time.Time{}, &UsageError{Msg: fmt.Sprintf("%s %q: %v", name, oneLine(s, 40), err)}
	}
	return t, nil
}

var unixMs = regexp.MustCompile(`^[0-9]{1,15}$`)

func parseTime(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+"):
		d, err := parseDays(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("not a duration from now (-24h, -90m, -7d): %v", err)
		}
		return now.Add(d), nil
	case unixMs.MatchString(s):
		ms, _ := strconv.ParseInt(s, 10, 64)
		return time.UnixMilli(ms).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("want an RFC 3339 time (2026-03-01T12:00:00Z), a date (2026-03-01), Unix milliseconds, now, or relative to now (-24h, -7d)")
}

var daysPart = regexp.MustCompile(`^([-+]?)([0-9]+)d(.*)$`)

// parseDays is time.ParseDuration with days ("7d", "-1d12h": d is 24
// hours) in front.
func parseDays(s string) (time.Duration, error) {
	m := daysPart.FindStringSubmatch(s)
	if m == nil {
		return time.ParseDuration(s)
	}
	days, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil || days > math.MaxInt64/int64(24*time.Hour) {
		return 0, fmt.Errorf("%q: too many days", s)
	}
	d := time.Duration(days) * 24 * time.Hour
	if m[3] != "" {
		rest, err := time.ParseDuration(m[3])
		if err != nil || rest < 0 || d > math.MaxInt64-rest {
			return 0, fmt.Errorf("%q: want days then a positive duration (1d12h)", s)
		}
		d += rest
	}
	if m[1] == "-" {
		d = -d
	}
	return d, nil
}
