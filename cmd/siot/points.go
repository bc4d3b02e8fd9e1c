package main

import (
	"context"
	"flag"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
)

const setUsage = `Usage: siot set NODE TYPE[.KEY]=VALUE... [--text] [--json]

Write points of NODE, all as one operation (one HLC). TYPE is 1-64
characters of A-Z a-z 0-9 _ -; the KEY after the first "." is up to 128
printable ASCII characters without "=" (default "0"), so "temp=21" and
"temp.0=21" write the same point. A VALUE that is a decimal number
("21.5", "-3", "1e6") is written as the point's value; anything else
(including an empty VALUE) as its text. --text writes every VALUE as text,
numbers too. Text is at most 64 KiB. NODE must exist (siot node add).

A VALUE that looks like a number with a decimal comma ("21,5", "-0,25",
"1,000") is refused, as neither is sure: write "21.5" for the number, or
give --text to store the text as it is. set prints each point it wrote
with its kind, one a line: temp = 21.5 (value), mode = "auto" (text).

Examples:
  siot set 6ba7b811-9dad-11d1-80b4-00c04fd430c8 temp=21.5
  siot set 6ba7b811-9dad-11d1-80b4-00c04fd430c8 setpoint=19 mode=auto description="boiler room"
  siot set 6ba7b811-9dad-11d1-80b4-00c04fd430c8 ip.eth0=10.0.0.7 ip.wlan0=10.0.1.7
  siot set 6ba7b811-9dad-11d1-80b4-00c04fd430c8 serial=0042 --text

Flags:
`

type setCmd struct {
	clientCmd
	text bool
}

func (c *setCmd) usage() string { return setUsage }

func (c *setCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"node","applied","stale","points"}: points as written, a text one without "value"`)
	fs.BoolVar(&c.text, "text", false, "write every VALUE as text, numbers too")
}

// number is the syntax of a VALUE written as a number.
var number = regexp.MustCompile(`^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$`)

// commaDecimal is the syntax of a VALUE that looks like a number written
// with a decimal comma (or a thousands separator): refused without --text.
var commaDecimal = regexp.MustCompile(`^[-+]?[0-9]*(,[0-9]+)+([eE][-+]?[0-9]+)?$`)

// parseAssignment parses TYPE[.KEY]=VALUE into a point of node id.
func parseAssignment(id uuid.UUID, arg string, text bool) (crdt.Point, error) {
	lhs, val, ok := strings.Cut(arg, "=")
	if !ok || lhs == "" {
		return crdt.Point{}, &UsageError{Msg: fmt.Sprintf("%q: want TYPE[.KEY]=VALUE", oneLine(arg, 40))}
	}
	typ, key, dot := strings.Cut(lhs, ".")
	if dot && key == "" {
		return crdt.Point{}, &UsageError{Msg: fmt.Sprintf("%q: empty KEY after the \".\"", oneLine(arg, 40))}
	}
	p := crdt.Point{Node: id, Type: typ, Key: key}
	if !text && number.MatchString(val) {
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return p, &UsageError{Msg: fmt.Sprintf("%s: %q is out of range for a number (use --text to write it as text)", lhs, oneLine(val, 40))}
		}
		p.Value = v
	} else {
		if !text && commaDecimal.MatchString(val) {
			return p, &UsageError{Msg: fmt.Sprintf("%s: %q looks like a number with a decimal comma: write it with a \".\" for a number, or give --text to store it as text", lhs, oneLine(val, 40))}
		}
		p.Text = val
	}
	p.Normalize()
	if err := p.ValidateUnstamped(); err != nil {
		return p, &UsageError{Msg: fmt.Sprintf("%s: %v", oneLine(lhs, 40), err)}
	}
	return p, nil
}

func (c *setCmd) run(ctx context.Context, args []string) error {
	if len(args) < 2 {
		return &UsageError{Msg: "set takes NODE and at least one TYPE[.KEY]=VALUE"}
	}
	id, err := parseNode("NODE", args[0])
	if err != nil {
		return err
	}
	pts := make([]crdt.Point, 0, len(args)-1)
	seen := map[crdt.Register]bool{}
	texts := make([]bool, 0, len(args)-1) // whether pts[i] is written as text
	for _, a := range args[1:] {
		p, err := parseAssignment(id, a, c.text)
		if err != nil {
			return err
		}
		if seen[p.Register()] {
			return &UsageError{Msg: fmt.Sprintf("%s.%s is set twice", p.Type, p.Key)}
		}
		seen[p.Register()] = true
		pts = append(pts, p)
		_, val, _ := strings.Cut(a, "=")
		texts = append(texts, c.text || !number.MatchString(val))
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Known(ctx, id); err != nil {
		return err
	}
	res, err := cl.Set(ctx, pts...)
	if err != nil {
		return err
	}
	if c.asJSON {
		recs := make([]record.Record, len(pts))
		for i := range pts {
			recs[i] = record.From(&pts[i])
			recs[i].HLC, recs[i].Origin = "", "" // stamped by the server
			if texts[i] {
				recs[i].Value = nil
			}
		}
		return printJSON(c.m.Stdout, map[string]any{"node": id.String(), "applied": res.Applied, "stale": res.Stale, "points": recs})
	}
	for i := range pts {
		fmt.Fprintln(c.m.Stdout, assignment(&pts[i], texts[i]))
	}
	n := res.Applied + res.Stale
	fmt.Fprintf(c.m.Stderr, "set %d point%s of %s\n", n, map[bool]string{true: "s"}[n != 1], id)
	return nil
}

// assignment shows what a point holds and its kind (text or value), as
// set prints it: `temp = 21.5 (value)`, `mode = "auto" (text)`,
// `ip.eth0 = "10.0.0.7" (text)`.
func assignment(p *crdt.Point, text bool) string {
	name := p.Type
	if p.Key != crdt.DefaultKey {
		name += "." + p.Key
	}
	if text {
		return fmt.Sprintf("%s = %s (text)", name, strconv.Quote(oneLine(p.Text, 60)))
	}
	return fmt.Sprintf("%s = %s (value)", name, formatValue(p.Value))
}

const getUsage = `Usage: siot get NODE [--json]

Print the points of NODE: its own points (type, key, value or text, when
and by whom they were written), then the edges above it (one per parent).
Tombstoned points are shown and marked "deleted". A node with millions of
points is read page by page.

A text point shows its text, and no value (its value is 0).

With --json, print one point record per line, in the format of siot
export and siot import (tombstoned ones have "tombstone":true); a text
point's record has "text" and no "value".

Examples:
  siot get 6ba7b811-9dad-11d1-80b4-00c04fd430c8
  siot get 6ba7b811-9dad-11d1-80b4-00c04fd430c8 --json --server nats://127.0.0.1:4223

Flags:
`

type getCmd struct {
	clientCmd
}

func (c *getCmd) usage() string { return getUsage }

func (c *getCmd) flags(fs *flag.FlagSet) {
	c.register(fs, "print point records, one JSON object per line")
}

func (c *getCmd) run(ctx context.Context, args []string) error {
	id, err := oneNode("get", "NODE", args)
	if err != nil {
		return err
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	out := c.m.Stdout
	if c.asJSON {
		return cl.Points(ctx, id, func(p *crdt.Point) error {
			return printJSON(out, record.Shown(p))
		})
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tKEY\tVALUE\tTEXT\tSTATE\tWRITTEN\tHLC\tORIGIN")
	edges := false
	err = cl.Points(ctx, id, func(p *crdt.Point) error {
		if p.IsEdge() && !edges {
			edges = true
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(tw, "\nPARENT\tEDGE\tWRITTEN\tHLC\tORIGIN")
		}
		if p.IsEdge() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Parent, edgeState(p), hlcTime(p.Time), p.Time, p.Origin)
			return nil
		}
		state := ""
		if p.Tombstone {
			state = "deleted"
		}
		value := formatValue(p.Value)
		if record.IsText(p) {
			value = "" // a text point: its value 0 is no reading
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Type, p.Key, value,
			quoteText(p.Text), state, hlcTime(p.Time), p.Time, p.Origin)
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}

func edgeState(p *crdt.Point) string {
	switch {
	case !p.Tombstone:
		return "live"
	case p.Value == crdt.EdgeMoved:
		return "moved away"
	}
	return "deleted"
}

// quoteText shows a text on one table cell: quoted when not empty, cut at
// 60 characters.
func quoteText(s string) string {
	if s == "" {
		return ""
	}
	return strconv.Quote(oneLine(s, 60))
}

// hlcTime is the wall-clock time of an HLC, to the millisecond, UTC.
func hlcTime(t crdt.Timestamp) string { return t.Time().Format("2006-01-02T15:04:05.000Z07:00") }
