package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/rules"
)

// Commands that write and show rules: nodes of type "rule" whose points
// define them (package rules lists them). The rule engine of a running
// server reads those points and writes the rule's state; these commands
// only write the definition and read both.

const ruleUsage = `Usage: siot rule <add|ls> [flags] [arguments]

Write and show rules: nodes of type "rule" whose points say when the rule
fires (its conditions) and what it then does (its actions). A running
server's rule engine judges them and writes their state.

  rule add --parent UUID --desc TEXT --if CONDITION... [--then ACTION...] [--clear ACTION...]
                        create a rule under a node: it watches that subtree
  rule ls [NODE]
                        print the rules at or below NODE, with their state

Run "siot rule <sub-command> --help" for its flags and examples.
`

const ruleAddUsage = `Usage: siot rule add --parent UUID --desc TEXT --if CONDITION [--if CONDITION]... [--any]
         [--then ACTION]... [--clear ACTION]... [--min-active D] [--pacing D] [--disabled] [--id UUID] [--json]

Create a rule under --parent: a node of type "rule" whose points are its
description (--desc), its conditions (--if, kept as "condition" points
keyed 1, 2, ... in the order given), the actions it runs when it becomes
active (--then, "action" points keyed 1, 2, ...) and when it becomes
inactive again (--clear, "actionClear" points keyed 1, 2, ...). The edge
and every point are written as one operation. Print the rule's UUID (with
--json, {"id"}).

A rule is active when all its conditions hold (--any: at least one) for
--min-active (default: at once); it changes state at most once per
--pacing (default 1m). --disabled writes it switched off. Durations take
a unit: 500ms, 30s, 15m, 2h, 1d.

A CONDITION is one of:
  TYPE[.KEY] OP NUMBER             OP: > >= < <= == !=   (temp > 30)
  TYPE[.KEY] == "TEXT"             (or !=)               (mode == "auto")
  TYPE[.KEY] changed [within D]
  TYPE[.KEY] unchanged D
  offline                          the node's online point is 0
  schedule DAYS HH:MM-HH:MM [ZONE] (schedule Mon-Fri 08:00-18:00 Europe/Paris)
each but schedule may start with "on NODE" or "on TYPE" (on sensor temp > 30).
Without "on NODE", a condition is judged on every node of the subtree that
has the point: the rule has an instance per node, and "rule ls" shows how
many are active.

An ACTION is one of:
  notify [MESSAGE]                 notify the rule's users; MESSAGE may use
                                   {rule} {node} {status} {value}
  set [NODE] TYPE[.KEY] VALUE      write a point on NODE, else on the node the
                                   rule is active for; VALUE: a number or "TEXT"

Every condition and action is checked before anything is written: a bad
one is a usage error that names its flag. At most 16 conditions and 16
actions (--then and --clear together). --id of a node that exists is
refused: a rule is created whole, never written over another node's
points (change one with siot set).

Examples:
  siot rule add --parent 6ba7b810-9dad-11d1-80b4-00c04fd430c8 --desc "Device offline" --if offline --then 'notify "{node} is offline"' --clear 'notify "{node} is back"'
  siot rule add --parent 6ba7b810-9dad-11d1-80b4-00c04fd430c8 --desc "Too hot" --if 'temp > 30' --min-active 1m --then 'notify "{node}: {value} °C"'
  siot rule add --parent 6ba7b810-9dad-11d1-80b4-00c04fd430c8 --desc "Pump idle" --if 'flow < 0.5' --if 'schedule Mon-Fri 06:00-22:00' --then 'set alarm 1' --clear 'set alarm 0' --pacing 5m

Flags:
`

// listFlag is a flag given any number of times, its values in order.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ", ") }

func (l *listFlag) Set(s string) error {
	*l = append(*l, s)
	return nil
}

type ruleAddCmd struct {
	clientCmd
	parent, desc, id   string
	ifs, thens, clears listFlag
	any, disabled      bool
	minActive, pacing  string
}

func (c *ruleAddCmd) usage() string { return ruleAddUsage }

func (c *ruleAddCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"id"}`)
	fs.StringVar(&c.parent, "parent", "", "the node to create the rule under (required): the subtree it watches")
	fs.StringVar(&c.desc, "desc", "", `the rule's "description" point (required): its name in notifications`)
	fs.StringVar(&c.id, "id", "", "the rule's UUID (default: a random one); it must not exist")
	fs.Var(&c.ifs, "if", "a `CONDITION` (required; repeat for more: --if A --if B)")
	fs.Var(&c.thens, "then", "an `ACTION` run when the rule becomes active (repeatable)")
	fs.Var(&c.clears, "clear", "an `ACTION` run when the rule becomes inactive again (repeatable)")
	fs.BoolVar(&c.any, "any", false, "active when any condition holds (default: all of them)")
	fs.BoolVar(&c.disabled, "disabled", false, "write the rule switched off")
	fs.StringVar(&c.minActive, "min-active", "", "how long the conditions must hold before the rule becomes active: a `DURATION` (30s, 15m, 1d)")
	fs.StringVar(&c.pacing, "pacing", "", "the least `DURATION` between two changes of a rule instance's state (default 1m)")
}

// points checks the flags and returns the rule's own points (without
// their node). Every error is a usage error: nothing has been sent.
func (c *ruleAddCmd) points() ([]crdt.Point, error) {
	switch {
	case c.parent == "":
		return nil, &UsageError{Msg: "rule add needs --parent NODE: the node whose subtree the rule watches"}
	case c.desc == "":
		return nil, &UsageError{Msg: "rule add needs --desc TEXT: the rule's name"}
	case len(c.ifs) == 0:
		return nil, &UsageError{Msg: "rule add needs at least one --if CONDITION"}
	case len(c.ifs) > rules.MaxConditions:
		return nil, &UsageError{Msg: fmt.Sprintf("%d --if: a rule has at most %d conditions", len(c.ifs), rules.MaxConditions)}
	case len(c.thens)+len(c.clears) > rules.MaxActions:
		return nil, &UsageError{Msg: fmt.Sprintf("%d --then and --clear: a rule has at most %d actions", len(c.thens)+len(c.clears), rules.MaxActions)}
	}
	pts := []crdt.Point{
		{Type: crdt.TypeNodeType, Text: rules.NodeTypeRule},
		{Type: typeDescription, Text: c.desc},
	}
	for i, s := range c.ifs {
		if _, err := rules.ParseCondition(s); err != nil {
			return nil, &UsageError{Msg: fmt.Sprintf("--if #%d: %v", i+1, err)}
		}
		pts = append(pts, crdt.Point{Type: rules.TypeCondition, Key: strconv.Itoa(i + 1), Text: s})
	}
	for _, f := range []struct {
		name, typ string
		texts     []string
	}{{"--then", rules.TypeAction, c.thens}, {"--clear", rules.TypeActionClear, c.clears}} {
		for i, s := range f.texts {
			if _, err := rules.ParseAction(s); err != nil {
				return nil, &UsageError{Msg: fmt.Sprintf("%s #%d: %v", f.name, i+1, err)}
			}
			pts = append(pts, crdt.Point{Type: f.typ, Key: strconv.Itoa(i + 1), Text: s})
		}
	}
	if c.any {
		pts = append(pts, crdt.Point{Type: rules.TypeMatch, Text: "any"})
	}
	for _, f := range []struct{ name, typ, val string }{
		{"--min-active", rules.TypeMinActive, c.minActive}, {"--pacing", rules.TypePacing, c.pacing},
	} {
		if f.val == "" {
			continue
		}
		d, err := rules.ParseDuration(f.val)
		if err != nil {
			return nil, &UsageError{Msg: fmt.Sprintf("%s: %v", f.name, err)}
		}
		pts = append(pts, crdt.Point{Type: f.typ, Value: d.Seconds()})
	}
	if c.disabled {
		pts = append(pts, crdt.Point{Type: rules.TypeDisabled, Value: 1})
	}
	return pts, nil
}

func (c *ruleAddCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: fmt.Sprintf("rule add takes no arguments (%q: quote a condition or action with spaces)", oneLine(args[0], 40))}
	}
	own, err := c.points()
	if err != nil {
		return err
	}
	id, parent, err := newNodeFlags(c.id, c.parent)
	if err != nil {
		return err
	}
	n, err := makeNewNode(id, parent, own)
	if err != nil {
		return err
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.id != "" {
		// A rule's points are its definition: written over an existing
		// node they would mix with the points it has (a condition 3 left
		// from before).
		switch err := cl.Known(ctx, id); {
		case err == nil:
			return fmt.Errorf("--id: node %s exists already: a rule is created whole (change one with siot set)", id)
		case !errors.Is(err, client.ErrNotFound):
			return err
		}
	}
	if _, err := n.write(ctx, cl); err != nil {
		return err
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"id": id.String()})
	}
	fmt.Fprintln(c.m.Stdout, id)
	return nil
}

const ruleLsUsage = `Usage: siot rule ls [NODE] [--json]

Print every rule at or below NODE (default: the server's root, or the
subtree the credentials reach) in the live tree, ordered by description
then UUID: a first line with its UUID, description, state and last
firing, then one line per condition ("if"), action ("then"), clearing
action ("clear") and error the engine reported ("error"), each with its
key. A line "with" shows what differs from the defaults: active when any
condition holds, a min active time, a pacing other than 1m.

The state is "disabled" (switched off), "error" (the engine ignores a
condition or an action: see its error lines), "active (N)" (N nodes hold
the conditions: a rule judged per node has an instance per node), or
"inactive". The last firing is the latest time an instance became active,
in UTC and how long ago, or "never".

The rules are found first (one request per node of the subtree), then
printed one by one. A read cut off midway (the server stopped) exits 1,
saying how many rules it printed.

With --json, print one JSON object per rule, in the same order:
  {"id", "parent", "description", "state", "active" (N), "lastFired"
   (RFC 3339 or null), "conditions", "actions", "clearActions" (each
   {"KEY": "TEXT"}), "match" ("all" or "any"), "minActive", "pacing"
   (seconds, the defaults when not set), "disabled", "errors"
   ({"KEY": "TEXT"}), "subjects" ([{"node", "active", "since"}]: each
   node the rule has a state for, "since" when that state began)}
"state" is the state without the count of active nodes: that is "active".

Examples:
  siot rule ls
  siot rule ls 6ba7b810-9dad-11d1-80b4-00c04fd430c8
  siot rule ls --json

Flags:
`

type ruleLsCmd struct {
	clientCmd
}

func (c *ruleLsCmd) usage() string { return ruleLsUsage }

func (c *ruleLsCmd) flags(fs *flag.FlagSet) {
	c.register(fs, "print one JSON object per rule")
}

// foundRule is a rule node the walk found: where, and what it is called
// (for the order).
type foundRule struct {
	id, parent  uuid.UUID // parent uuid.Nil: NODE itself, above which nothing was walked
	description string
}

func (c *ruleLsCmd) run(ctx context.Context, args []string) error {
	if len(args) > 1 {
		return &UsageError{Msg: "rule ls takes at most one NODE"}
	}
	root, err := optionalNode("NODE", args)
	if err != nil {
		return err
	}
	cl, root, err := dialAt(ctx, &c.cf, root)
	if err != nil {
		return err
	}
	defer cl.Close()
	found, err := findRules(ctx, cl, root)
	if err != nil {
		return fmt.Errorf("reading the tree (no rule printed): %w", err)
	}
	if len(found) == 0 {
		fmt.Fprintf(c.m.Stderr, "no rules at or below %s\n", root)
		return nil
	}
	now := time.Now()
	for i, f := range found {
		if err := c.show(ctx, cl, f, now); err != nil {
			return fmt.Errorf("after %d of %d rules: %w", i, len(found), err)
		}
	}
	return nil
}

// show reads rule f and prints it, in one write.
func (c *ruleLsCmd) show(ctx context.Context, cl *client.Client, f foundRule, now time.Time) error {
	pts, err := cl.Get(ctx, f.id)
	if err != nil {
		return err
	}
	v := readRule(f.id, f.parent, pts)
	if c.asJSON {
		return printJSON(c.m.Stdout, v.json())
	}
	_, err = fmt.Fprint(c.m.Stdout, v.text(now))
	return err
}

// maxWalk bounds the nodes rule ls visits.
const maxWalk = 1_000_000

// findRules walks the live tree from root (root included) and returns
// its rule nodes, each once, with the parent it was first reached from,
// ordered by description then ID. Each node it visits costs one request.
func findRules(ctx context.Context, cl *client.Client, root uuid.UUID) ([]foundRule, error) {
	self, err := cl.Node.Ls(ctx, root)
	if err != nil {
		return nil, err
	}
	var found []foundRule
	if self.Labels.Type == rules.NodeTypeRule {
		f := foundRule{id: root, description: self.Labels.Description}
		if ups, err := cl.Node.Parents(ctx, root); err == nil {
			for _, e := range ups.Edges {
				if e.Active {
					f.parent = e.Other
					break
				}
			}
		} else if !errors.Is(err, client.ErrPermission) { // a scope's root: its parent is not the caller's to read
			return nil, err
		}
		found = append(found, f)
	}
	seen := map[uuid.UUID]bool{root: true}
	type visit struct {
		node uuid.UUID
		kids []client.Edge
	}
	stack := []visit{{root, self.Edges}}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, e := range v.kids {
			if !e.Active || seen[e.Other] {
				continue
			}
			if len(seen) >= maxWalk {
				return nil, fmt.Errorf("more than %d nodes below %s: name a smaller subtree", maxWalk, root)
			}
			seen[e.Other] = true
			if e.Labels.Type == rules.NodeTypeRule {
				found = append(found, foundRule{id: e.Other, parent: v.node, description: e.Labels.Description})
			}
			l, err := cl.Node.Ls(ctx, e.Other)
			if err != nil {
				return nil, err
			}
			stack = append(stack, visit{e.Other, l.Edges})
		}
	}
	slices.SortFunc(found, func(a, b foundRule) int {
		return cmp.Or(cmp.Compare(a.description, b.description), cmp.Compare(a.id.String(), b.id.String()))
	})
	return found, nil
}

// ruleView is what rule ls shows of a rule: its definition as written
// (texts by key) and the state its engine wrote.
type ruleView struct {
	id, parent                 uuid.UUID
	description                string
	conditions, actions, clear map[string]string
	errors                     map[string]string
	rule                       rules.Rule // for match, timing and disabled, as the engine reads them
	subjects                   []subject  // by node
	lastFired                  int64      // Unix ms; 0: never
}

// subject is the state of a rule's instance on one node.
type subject struct {
	node   string // the state point's key
	active bool
	since  time.Time // the state point's time
}

// readRule reads a rule node's points (tombstones and edges aside).
func readRule(id, parent uuid.UUID, pts []crdt.Point) ruleView {
	v := ruleView{id: id, parent: parent, rule: rules.FromPoints(id, pts),
		conditions: map[string]string{}, actions: map[string]string{}, clear: map[string]string{}, errors: map[string]string{}}
	for i := range pts {
		p := &pts[i]
		if p.Tombstone || p.IsEdge() {
			continue
		}
		switch p.Type {
		case typeDescription:
			v.description = p.Text
		case rules.TypeCondition:
			v.conditions[p.Key] = p.Text
		case rules.TypeAction:
			v.actions[p.Key] = p.Text
		case rules.TypeActionClear:
			v.clear[p.Key] = p.Text
		case rules.TypeError:
			v.errors[p.Key] = p.Text
		case rules.TypeState:
			v.subjects = append(v.subjects, subject{node: p.Key, active: p.Value == 1, since: p.Time.Time()})
		case rules.TypeFired:
			if ms := int64(p.Value); p.Value > 0 && p.Value < math.MaxInt64 && ms > v.lastFired {
				v.lastFired = ms
			}
		}
	}
	slices.SortFunc(v.subjects, func(a, b subject) int { return cmp.Compare(a.node, b.node) })
	return v
}

// active counts the nodes on which the rule is active.
func (v *ruleView) active() int {
	n := 0
	for _, s := range v.subjects {
		if s.active {
			n++
		}
	}
	return n
}

// state is "disabled", "error", "active" or "inactive", in that order of
// precedence.
func (v *ruleView) state() string {
	switch {
	case v.rule.Disabled:
		return "disabled"
	case len(v.errors) > 0:
		return "error"
	case v.active() > 0:
		return "active"
	}
	return "inactive"
}

// ruleLine is one rule of rule ls --json.
type ruleLine struct {
	ID           string            `json:"id"`
	Parent       string            `json:"parent"`
	Description  string            `json:"description"`
	State        string            `json:"state"`
	Active       int               `json:"active"`
	LastFired    *string           `json:"lastFired"`
	Conditions   map[string]string `json:"conditions"`
	Actions      map[string]string `json:"actions"`
	ClearActions map[string]string `json:"clearActions"`
	Match        string            `json:"match"`
	MinActive    float64           `json:"minActive"`
	Pacing       float64           `json:"pacing"`
	Disabled     bool              `json:"disabled"`
	Errors       map[string]string `json:"errors"`
	Subjects     []subjectLine     `json:"subjects"`
}

type subjectLine struct {
	Node   string `json:"node"`
	Active bool   `json:"active"`
	Since  string `json:"since"`
}

func (v *ruleView) json() ruleLine {
	l := ruleLine{ID: v.id.String(), Description: v.description, State: v.state(), Active: v.active(),
		Conditions: v.conditions, Actions: v.actions, ClearActions: v.clear, Match: "all",
		MinActive: v.rule.MinActive.Seconds(), Pacing: v.rule.Pacing.Seconds(), Disabled: v.rule.Disabled,
		Errors: v.errors, Subjects: []subjectLine{}}
	if v.parent != uuid.Nil {
		l.Parent = v.parent.String()
	}
	if v.lastFired != 0 {
		s := time.UnixMilli(v.lastFired).UTC().Format(histTime)
		l.LastFired = &s
	}
	if v.rule.Any {
		l.Match = "any"
	}
	for _, s := range v.subjects {
		l.Subjects = append(l.Subjects, subjectLine{Node: s.node, Active: s.active, Since: s.since.Format(histTime)})
	}
	return l
}

// text is the rule as rule ls prints it, a block of lines.
func (v *ruleView) text(now time.Time) string {
	var b strings.Builder
	desc := flat(v.description)
	if desc == "" {
		desc = "(no description)"
	}
	state := v.state()
	if state == "active" {
		state = fmt.Sprintf("active (%d)", v.active())
	}
	fired := "never"
	if v.lastFired != 0 {
		t := time.UnixMilli(v.lastFired).UTC()
		fired = fmt.Sprintf("%s (%s)", t.Format(time.RFC3339), age(now.Sub(t)))
	}
	fmt.Fprintf(&b, "%s  %s  %s  last fired %s\n", v.id, desc, state, fired)
	var with []string
	if v.rule.Any {
		with = append(with, "any condition")
	}
	if v.rule.MinActive != 0 {
		with = append(with, "min active "+shortDuration(v.rule.MinActive))
	}
	if v.rule.Pacing != rules.DefaultPacing {
		with = append(with, "pacing "+shortDuration(v.rule.Pacing))
	}
	if len(with) > 0 {
		fmt.Fprintf(&b, "  with  %s\n", strings.Join(with, ", "))
	}
	for _, part := range []struct {
		label string
		texts map[string]string
	}{{"if", v.conditions}, {"then", v.actions}, {"clear", v.clear}, {"error", v.errors}} {
		for _, k := range keysInOrder(part.texts) {
			fmt.Fprintf(&b, "  %-5s %s  %s\n", part.label, k, flat(part.texts[k]))
		}
	}
	return b.String()
}

// keysInOrder returns m's keys, numbers in numeric order first ("2"
// before "10"), then the others in byte order.
func keysInOrder(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		na, errA := strconv.ParseUint(a, 10, 64)
		nb, errB := strconv.ParseUint(b, 10, 64)
		switch {
		case errA == nil && errB == nil:
			return cmp.Or(cmp.Compare(na, nb), cmp.Compare(a, b)) // "01" and "1"
		case errA == nil:
			return -1
		case errB == nil:
			return 1
		}
		return cmp.Compare(a, b)
	})
	return keys
}

// flat puts s on one line: line breaks and tabs become spaces (other
// spacing is kept: it may be inside a quoted text).
func flat(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}

// age says how long ago something was, d before now, in its largest
// whole unit: "40s ago", "3m ago", "5h ago", "2d ago" ("in 5m" for a time
// after now, as a skewed clock writes).
func age(d time.Duration) string {
	suffix, prefix := " ago", ""
	if d < 0 {
		d, suffix, prefix = -d, "", "in "
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int64(d/time.Second))
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int64(d/time.Minute))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%dh", int64(d/time.Hour))
	default:
		s = fmt.Sprintf("%dd", int64(d/(24*time.Hour)))
	}
	return prefix + s + suffix
}

// shortDuration is d without the zero units time.Duration.String ends
// with: 1m, 1h30m, 1m30s, 500ms.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
