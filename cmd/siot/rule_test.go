package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/rules"
)

// adminClient signs in to a test server as its administrator.
func adminClient(t *testing.T, server string) *client.Client {
	t.Helper()
	cl, err := client.Dial(context.Background(), server, client.WithCredsFile(credsFor(server)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// nodePoints reads node's live points through the client, as
// "type.key" → "value|text", and its edge points apart.
func nodePoints(t *testing.T, cl *client.Client, node string) (own map[string]string, edges []client.Point, hlcs map[crdt.Timestamp]bool) {
	t.Helper()
	pts, err := cl.Get(context.Background(), uuid.MustParse(node))
	if err != nil {
		t.Fatal(err)
	}
	own, hlcs = map[string]string{}, map[crdt.Timestamp]bool{}
	for _, p := range pts {
		hlcs[p.Time] = true
		if p.IsEdge() {
			edges = append(edges, p)
			continue
		}
		if !p.Tombstone {
			own[p.Type+"."+p.Key] = strconv.FormatFloat(p.Value, 'g', -1, 64) + "|" + p.Text
		}
	}
	return own, edges, hlcs
}

// TestRuleAddWritesItsPoints: rule add writes the rule node with exactly
// the points its flags say, the edge with them, as one operation.
func TestRuleAddWritesItsPoints(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	site := strings.TrimSpace(mustCLI(t, "", append([]string{"node", "add", "--type", "site"}, s...)...))
	cl := adminClient(t, srv.nats)

	out := mustCLI(t, "", append([]string{"rule", "add", "--parent", site, "--desc", "Pump trouble",
		"--if", "flow < 0.5", "--if", "offline", "--if", "on sensor temp > 30",
		"--then", `notify "{node}: {status}"`, "--then", "set alarm 1", "--clear", "set alarm 0",
		"--any", "--min-active", "1m30s", "--pacing", "1d", "--disabled", "--json"}, s...)...)
	lines := histLines[map[string]string](t, out)
	if len(lines) != 1 || len(lines[0]) != 1 {
		t.Fatalf("rule add --json printed %q, want {\"id\"}", out)
	}
	id := lines[0]["id"]
	own, edges, hlcs := nodePoints(t, cl, id)
	want := map[string]string{
		"nodeType.0":    "0|rule",
		"description.0": "0|Pump trouble",
		"condition.1":   "0|flow < 0.5",
		"condition.2":   "0|offline",
		"condition.3":   "0|on sensor temp > 30",
		"action.1":      `0|notify "{node}: {status}"`,
		"action.2":      "0|set alarm 1",
		"actionClear.1": "0|set alarm 0",
		"match.0":       "0|any",
		"minActive.0":   "90|",
		"pacing.0":      "86400|",
		"disabled.0":    "1|",
	}
	if fmt.Sprint(own) != fmt.Sprint(want) {
		t.Errorf("the rule's points:\n%v\nwant\n%v", own, want)
	}
	if len(edges) != 1 || edges[0].Parent.String() != site || edges[0].Tombstone {
		t.Errorf("the rule's edges: %+v, want one live edge under %s", edges, site)
	}
	if len(hlcs) != 1 {
		t.Errorf("rule add wrote %d HLCs, want one operation", len(hlcs))
	}

	// The least rule: no match, timing or disabled point; the ID printed.
	id2 := strings.TrimSpace(mustCLI(t, "", append([]string{"rule", "add", "--parent", site, "--desc", "Device offline",
		"--if", "offline", "--then", `notify "{node} is offline"`, "--clear", `notify "{node} is back"`}, s...)...))
	own, _, _ = nodePoints(t, cl, id2)
	want = map[string]string{
		"nodeType.0": "0|rule", "description.0": "0|Device offline", "condition.1": "0|offline",
		"action.1": `0|notify "{node} is offline"`, "actionClear.1": `0|notify "{node} is back"`,
	}
	if fmt.Sprint(own) != fmt.Sprint(want) {
		t.Errorf("the least rule's points:\n%v\nwant\n%v", own, want)
	}
	// --id names the rule; the points read back as a rule.
	id3 := uuid.NewString()
	if got := strings.TrimSpace(mustCLI(t, "", append([]string{"rule", "add", "--id", id3, "--parent", site, "--desc", "Hot",
		"--if", "temp > 30", "--min-active", "0s"}, s...)...)); got != id3 {
		t.Fatalf("rule add --id printed %q", got)
	}
	pts, err := cl.Get(context.Background(), uuid.MustParse(id3))
	if err != nil {
		t.Fatal(err)
	}
	if r := rules.FromPoints(uuid.MustParse(id3), pts); !r.Valid() || r.Description != "Hot" || len(r.Conditions) != 1 ||
		r.Conditions[0].Type != "temp" || r.MinActive != 0 || r.Pacing != rules.DefaultPacing {
		t.Errorf("rule --id read back: %+v", r)
	}
}

// TestRuleAddRefusesBadInput: a bad command line is a usage error (exit
// 2) naming the flag, or, for what only the server knows, an error (exit
// 1); either way nothing is written.
func TestRuleAddRefusesBadInput(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	site := strings.TrimSpace(mustCLI(t, "", append([]string{"node", "add", "--type", "site"}, s...)...))
	parseErr := func(cond bool, text string) string {
		var err error
		if cond {
			_, err = rules.ParseCondition(text)
		} else {
			_, err = rules.ParseAction(text)
		}
		if err == nil {
			t.Fatalf("%q parses", text)
		}
		return err.Error()
	}
	ok := []string{"--parent", site, "--desc", "d"}
	many := func(flag, text string, n int) []string {
		var a []string
		for range n {
			a = append(a, flag, text)
		}
		return a
	}
	cases := []struct {
		args  []string
		usage bool
		want  string
	}{
		{append(ok, "--if", "offline", "--if", "temp >"), true, "--if #2: " + parseErr(true, "temp >")},
		{append(ok, "--if", "temp ~ 3"), true, "--if #1: " + parseErr(true, "temp ~ 3")},
		{append(ok, "--if", ""), true, "--if #1: " + parseErr(true, "")},
		{append(ok, "--if", "offline", "--then", "frob"), true, "--then #1: " + parseErr(false, "frob")},
		{append(ok, "--if", "offline", "--then", "set a 1", "--then", `notify "unterminated`), true, "--then #2: " + parseErr(false, `notify "unterminated`)},
		{append(ok, "--if", "offline", "--clear", "set authKey.x 1"), true, "--clear #1: " + parseErr(false, "set authKey.x 1")},
		{[]string{"--desc", "d", "--if", "offline"}, true, "needs --parent"},
		{append(ok, "--then", "notify"), true, "at least one --if"},
		{[]string{"--parent", site, "--if", "offline"}, true, "needs --desc"},
		{append(ok, many("--if", "offline", rules.MaxConditions+1)...), true, "at most 16 conditions"},
		{append(append(append(ok, "--if", "offline"), many("--then", "notify", 9)...), many("--clear", "notify", 8)...), true, "at most 16 actions"},
		{append(ok, "--if", "offline", "--pacing", "5"), true, "--pacing: duration"},
		{append(ok, "--if", "offline", "--min-active", "-1m"), true, "--min-active: duration"},
		{append(ok, "--if", "offline", "--id", "x"), true, "--id"},
		{append(ok, "--if", "offline", "--id", site), true, "same node"},
		{append(ok, "--if", "offline", "extra"), true, "no arguments"},
		{[]string{"--parent", "x", "--desc", "d", "--if", "offline"}, true, "--parent"},
		{[]string{"--parent", uuid.NewString(), "--desc", "d", "--if", "offline"}, false, "--parent: unknown node"},
		{append(ok, "--if", "offline", "--id", srv.id), false, "exists already"},
	}
	before := mustCLI(t, "", append([]string{"export"}, s...)...)
	for _, c := range cases {
		_, _, err := cli(t, "", append(append([]string{"rule", "add"}, c.args...), s...)...)
		var ue *UsageError
		if err == nil || errors.As(err, &ue) != c.usage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("siot rule add %.100s: err = %v, want usage error %v containing %q", strings.Join(c.args, " "), err, c.usage, c.want)
		}
		if err != nil && !c.usage && !strings.HasPrefix(err.Error(), "rule add: ") {
			t.Errorf("the error does not name the command: %v", err)
		}
	}
	if after := mustCLI(t, "", append([]string{"export"}, s...)...); after != before {
		t.Fatalf("refused rule adds wrote:\n%s", after)
	}
	// The examples of the help are valid rules.
	for _, m := range regexp.MustCompile(`--(if|then|clear) '([^']*)'`).FindAllStringSubmatch(ruleAddUsage, -1) {
		var err error
		if m[1] == "if" {
			_, err = rules.ParseCondition(m[2])
		} else {
			_, err = rules.ParseAction(m[2])
		}
		if err != nil {
			t.Errorf("the help's example --%s %q: %v", m[1], m[2], err)
		}
	}
}

// stateAt writes, as the rule engine would, rule's state on subject (1
// active) at ms and, when fired is not 0, its last firing there.
func stateAt(t *testing.T, cl *client.Client, rule, subject string, active bool, ms, fired int64) {
	t.Helper()
	origin := uuid.MustParse("0badcafe-0000-4000-8000-000000000003")
	p := client.Point{Node: uuid.MustParse(rule), Type: rules.TypeState, Key: subject, Time: crdt.NewTimestamp(ms, 0), Origin: origin}
	if active {
		p.Value = 1
	}
	pts := []client.Point{p}
	if fired != 0 {
		pts = append(pts, client.Point{Node: p.Node, Type: rules.TypeFired, Key: subject, Value: float64(fired), Time: p.Time, Origin: origin})
	}
	if _, err := cl.Set(context.Background(), pts...); err != nil {
		t.Fatal(err)
	}
}

// TestRuleLs: rule ls shows each rule's state, last firing, definition
// and errors, as text and JSON, for a subtree, and only what the caller
// may read.
func TestRuleLs(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	cl := adminClient(t, srv.nats)
	add := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(mustCLI(t, "", append(args, s...)...))
	}
	north := add("node", "add", "--type", "site", "--desc", "north")
	south := add("node", "add", "--type", "site", "--desc", "south")
	// A provisioned device: the rules under it are its own to run (this
	// server keeps them as they are), so the state points written below
	// stand for the device's engine.
	var dev struct {
		Node string `json:"node"`
	}
	if err := json.Unmarshal([]byte(add("device", "add", "--parent", north, "--out", filepath.Join(t.TempDir(), "pump.creds"), "--json")), &dev); err != nil {
		t.Fatal(err)
	}
	pump := dev.Node
	if out, errOut, err := cli(t, "", append([]string{"rule", "ls"}, s...)...); err != nil || out != "" || !strings.Contains(errOut, "no rules at or below "+srv.id) {
		t.Fatalf("rule ls without rules: %v %q %q", err, out, errOut)
	}

	never := add("rule", "add", "--parent", north, "--desc", "Alpha", "--if", "offline", "--then", `notify "{node} is offline"`)
	active := add("rule", "add", "--parent", pump, "--desc", "Beta", "--if", "temp > 30", "--if", "flow < 1", "--if", "mode == \"x\"",
		"--if", "a > 1", "--if", "b > 1", "--if", "c > 1", "--if", "d > 1", "--if", "e > 1", "--if", "f > 1", "--if", "g > 1",
		"--then", "set alarm 1", "--clear", "set alarm 0", "--any", "--min-active", "1m", "--pacing", "90s")
	disabled := add("rule", "add", "--parent", south, "--desc", "Gamma", "--if", "offline", "--disabled")
	broken := add("rule", "add", "--parent", south, "--desc", "Delta", "--if", "offline", "--then", "set "+north+" alarm 1")
	// Beta: active on two nodes, inactive on a third; fired on each.
	now := time.Now()
	since := now.Add(-48 * time.Hour).Truncate(time.Second).UTC()
	last := now.Add(-3*time.Minute - 30*time.Second).UnixMilli()
	subjects := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	stateAt(t, cl, active, subjects[0], true, since.UnixMilli(), last-60_000)
	stateAt(t, cl, active, subjects[1], true, since.UnixMilli()+1000, last)
	stateAt(t, cl, active, subjects[2], false, since.UnixMilli()+2000, last-120_000)
	// Delta: its action writes outside its scope, which the rule engine
	// reports; Alpha: a tombstoned error, cleared.
	waitUntil(t, "the engine reports Delta's error", func() bool {
		return strings.Contains(mustCLI(t, "", append([]string{"rule", "ls", broken}, s...)...), "outside the rule's scope")
	})
	if _, err := cl.Set(context.Background(),
		client.Point{Node: uuid.MustParse(never), Type: rules.TypeError, Key: "1", Text: "gone", Tombstone: true}); err != nil {
		t.Fatal(err)
	}

	out := mustCLI(t, "", append([]string{"rule", "ls"}, s...)...)
	lastAt := time.UnixMilli(last).UTC().Format(time.RFC3339)
	want := never + "  Alpha  inactive  last fired never\n" +
		"  if    1  offline\n" +
		"  then  1  notify \"{node} is offline\"\n" +
		active + "  Beta  active (2)  last fired " + lastAt + " (3m ago)\n" +
		"  with  any condition, min active 1m, pacing 1m30s\n" +
		"  if    1  temp > 30\n  if    2  flow < 1\n  if    3  mode == \"x\"\n  if    4  a > 1\n  if    5  b > 1\n" +
		"  if    6  c > 1\n  if    7  d > 1\n  if    8  e > 1\n  if    9  f > 1\n  if    10  g > 1\n" +
		"  then  1  set alarm 1\n" +
		"  clear 1  set alarm 0\n" +
		broken + "  Delta  error  last fired never\n" +
		"  if    1  offline\n" +
		"  then  1  set " + north + " alarm 1\n" +
		"  error action.1  node " + north + " is outside the rule's scope\n" +
		disabled + "  Gamma  disabled  last fired never\n" +
		"  if    1  offline\n"
	if out != want {
		t.Errorf("rule ls:\n%s\nwant\n%s", out, want)
	}

	// --json: every field.
	ls := histLines[ruleLine](t, mustCLI(t, "", append([]string{"rule", "ls", "--json"}, s...)...))
	if len(ls) != 4 || ls[0].ID != never || ls[1].ID != active || ls[2].ID != broken || ls[3].ID != disabled {
		t.Fatalf("rule ls --json: %+v", ls)
	}
	a := ls[1]
	lastJSON := time.UnixMilli(last).UTC().Format(histTime)
	if a.Parent != pump || a.Description != "Beta" || a.State != "active" || a.Active != 2 || a.LastFired == nil || *a.LastFired != lastJSON ||
		len(a.Conditions) != 10 || a.Conditions["3"] != `mode == "x"` || a.Actions["1"] != "set alarm 1" || a.ClearActions["1"] != "set alarm 0" ||
		a.Match != "any" || a.MinActive != 60 || a.Pacing != 90 || a.Disabled || len(a.Errors) != 0 || len(a.Subjects) != 3 {
		t.Errorf("the active rule's JSON: %+v", a)
	}
	for _, sub := range a.Subjects {
		i := slicesIndex(subjects, sub.Node)
		if i < 0 || sub.Active != (i < 2) || sub.Since != since.Add(time.Duration(i)*time.Second).Format(histTime) {
			t.Errorf("subject %+v (index %d)", sub, i)
		}
	}
	n := ls[0]
	if n.Parent != north || n.State != "inactive" || n.Active != 0 || n.LastFired != nil || n.Match != "all" || n.MinActive != 0 ||
		n.Pacing != rules.DefaultPacing.Seconds() || len(n.Errors) != 0 || n.Subjects == nil || len(n.Subjects) != 0 || len(n.ClearActions) != 0 {
		t.Errorf("the rule never fired, JSON: %+v", n)
	}
	if b := ls[2]; b.State != "error" || b.Errors["action.1"] != "node "+north+" is outside the rule's scope" {
		t.Errorf("the broken rule's JSON: %+v", b)
	}
	if d := ls[3]; d.State != "disabled" || !d.Disabled || d.Parent != south {
		t.Errorf("the disabled rule's JSON: %+v", d)
	}
	// The raw output has null for a rule never fired.
	if raw := strings.SplitN(mustCLI(t, "", append([]string{"rule", "ls", "--json"}, s...)...), "\n", 2)[0]; !strings.Contains(raw, `"lastFired":null`) {
		t.Errorf("never fired: %s", raw)
	}

	// NODE limits the listing to its subtree (a rule itself included).
	if ls := histLines[ruleLine](t, mustCLI(t, "", append([]string{"rule", "ls", north, "--json"}, s...)...)); len(ls) != 2 || ls[0].ID != never || ls[1].ID != active {
		t.Errorf("rule ls NORTH: %+v", ls)
	}
	if ls := histLines[ruleLine](t, mustCLI(t, "", append([]string{"rule", "ls", active, "--json"}, s...)...)); len(ls) != 1 || ls[0].ID != active || ls[0].Parent != pump {
		t.Errorf("rule ls RULE: %+v", ls)
	}
	if _, _, err := cli(t, "", append([]string{"rule", "ls", uuid.NewString()}, s...)...); err == nil || !strings.HasPrefix(err.Error(), "rule ls: unknown node") {
		t.Errorf("rule ls of an unknown node: %v", err)
	}
	var ue *UsageError
	if _, _, err := cli(t, "", append([]string{"rule", "ls", "x"}, s...)...); !errors.As(err, &ue) {
		t.Errorf("rule ls x: %v, want a usage error", err)
	}

	// A user of the north site sees its rules only, and may not add one
	// (a plain user changes no structure).
	mustCLI(t, "s3cret-pass\n", append([]string{"user", "add", "--parent", north, "--email", "ann@example.com"}, s...)...)
	userCreds := filepath.Join(t.TempDir(), "ann.creds")
	mustCLI(t, "s3cret-pass\n", "login", "--server", srv.nats, "--email", "ann@example.com", "--out", userCreds)
	u := []string{"--server", srv.nats, "--creds", userCreds}
	if ls := histLines[ruleLine](t, mustCLI(t, "", append([]string{"rule", "ls", "--json"}, u...)...)); len(ls) != 2 || ls[0].ID != never || ls[1].ID != active {
		t.Errorf("the user's rule ls: %+v", ls)
	}
	if _, _, err := cli(t, "", append([]string{"rule", "ls", south}, u...)...); err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "rule ls: permission denied") {
		t.Errorf("the user lists another site's rules: %v", err)
	}
	before := mustCLI(t, "", append([]string{"export"}, s...)...)
	_, _, err := cli(t, "", append([]string{"rule", "add", "--parent", north, "--desc", "mine", "--if", "offline"}, u...)...)
	if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "rule add: permission denied") {
		t.Errorf("a plain user adds a rule: %v", err)
	}
	if after := mustCLI(t, "", append([]string{"export"}, s...)...); after != before {
		t.Error("a refused rule add wrote")
	}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestRuleLsServerStops: a server that stops while rule ls prints ends
// it with an error that says how many rules it printed, whole, and exit
// status 1; then rule add says it cannot connect.
func TestRuleLsServerStops(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	for i := range 3 {
		mustCLI(t, "", append([]string{"rule", "add", "--parent", srv.id, "--desc", fmt.Sprint("rule ", i), "--if", "offline"}, s...)...)
	}
	out := &stopOnWrite{stop: srv.stop}
	m := &Main{Stdin: strings.NewReader(""), Stdout: out, Stderr: io.Discard, Getenv: testGetenv(s)}
	err := m.Run(context.Background(), append([]string{"rule", "ls"}, s...))
	var ue *UsageError
	if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "rule ls: after 1 of 3 rules: ") ||
		!strings.Contains(err.Error(), "closed (the server stopped?)") {
		t.Fatalf("rule ls while the server stops: %v, want an error (exit status 1) after 1 rule", err)
	}
	if got := out.b.String(); !regexp.MustCompile(`^\S+  rule 0  inactive  last fired never\n  if    1  offline\n$`).MatchString(got) {
		t.Fatalf("printed before the stop: %q", got)
	}
	_, _, err = cli(t, "", append([]string{"rule", "add", "--parent", srv.id, "--desc", "d", "--if", "offline", "--timeout", "5s"}, s...)...)
	if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "rule add: cannot connect to "+srv.nats) {
		t.Fatalf("rule add with the server stopped: %v", err)
	}
}

// TestRuleViewParts: the pure parts of rule ls: state precedence, key
// order, ages and durations.
func TestRuleViewParts(t *testing.T) {
	id := uuid.MustParse("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
	at := crdt.NewTimestamp(1_700_000_000_000, 0)
	pt := func(typ, key string, v float64, text string, tomb bool) crdt.Point {
		return crdt.Point{Node: id, Type: typ, Key: key, Value: v, Text: text, Time: at, Tombstone: tomb}
	}
	base := []crdt.Point{pt("description", "0", 0, "r", false), pt(rules.TypeCondition, "1", 0, "offline", false)}
	for _, c := range []struct {
		more []crdt.Point
		want string
	}{
		{nil, "inactive"},
		{[]crdt.Point{pt(rules.TypeState, "a", 0, "", false)}, "inactive"},
		{[]crdt.Point{pt(rules.TypeState, "a", 1, "", true)}, "inactive"},
		{[]crdt.Point{pt(rules.TypeState, "a", 1, "", false)}, "active"},
		{[]crdt.Point{pt(rules.TypeState, "a", 1, "", false), pt(rules.TypeError, "1", 0, "bad", false)}, "error"},
		{[]crdt.Point{pt(rules.TypeError, "1", 0, "bad", true)}, "inactive"},
		{[]crdt.Point{pt(rules.TypeError, "1", 0, "bad", false), pt(rules.TypeDisabled, "0", 2, "", false)}, "disabled"},
		{[]crdt.Point{pt(rules.TypeDisabled, "0", 0, "", false), pt(rules.TypeState, "a", 1, "", false)}, "active"},
	} {
		v := readRule(id, uuid.Nil, append(append([]crdt.Point(nil), base...), c.more...))
		if got := v.state(); got != c.want {
			t.Errorf("%+v: state %q, want %q", c.more, got, c.want)
		}
	}
	v := readRule(id, uuid.Nil, append(base, pt(rules.TypeFired, "a", 5000, "", false), pt(rules.TypeFired, "b", 9000, "", true),
		pt(rules.TypeFired, "c", 7000, "", false)))
	if v.lastFired != 7000 {
		t.Errorf("last fired %d, want 7000 (the greatest live one)", v.lastFired)
	}
	keys := keysInOrder(map[string]string{"10": "", "2": "", "1": "", "b": "", "a": "", "02": ""})
	if got := strings.Join(keys, " "); got != "1 02 2 10 a b" {
		t.Errorf("keys in order: %s", got)
	}
	for d, want := range map[time.Duration]string{
		0: "0s ago", 59 * time.Second: "59s ago", 3*time.Minute + 59*time.Second: "3m ago", 47 * time.Hour: "47h ago",
		50 * time.Hour: "2d ago", -5 * time.Minute: "in 5m",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
	for d, want := range map[time.Duration]string{
		time.Minute: "1m", 90 * time.Second: "1m30s", 24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 500 * time.Millisecond: "500ms", time.Hour + time.Second: "1h0m1s",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
	// The docs check covers rule sub-commands.
	if e := docFlagErrors("self-test", "siot rule add --nope; siot rule ls --any", "", flagSets()); len(e) != 2 {
		t.Errorf("the docs check found %d errors in rule commands, want 2: %q", len(e), e)
	}
}
