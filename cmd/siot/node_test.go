package main

import (
	"github.com/siot-io/siot/record"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// getRecords returns `siot get NODE --json` as records.
func getRecords(t *testing.T, server, node string) []record.Record {
	t.Helper()
	var out []record.Record
	for _, line := range strings.Split(strings.TrimSpace(mustCLI(t, "", "get", node, "--json", "--server", server)), "\n") {
		var r record.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("get --json line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func findRecord(recs []record.Record, parent, typ, key string) (record.Record, bool) {
	for _, r := range recs {
		if r.Parent == parent && r.Type == typ && r.Key == key {
			return r, true
		}
	}
	return record.Record{}, false
}

func lsLines(t *testing.T, args ...string) []lsLine {
	t.Helper()
	var out []lsLine
	for _, line := range strings.Split(strings.TrimSpace(mustCLI(t, "", append([]string{"node", "ls", "--json"}, args...)...)), "\n") {
		var l lsLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("node ls --json line %q: %v", line, err)
		}
		out = append(out, l)
	}
	return out
}

func TestNodeAddLsRmMv(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	add := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(mustCLI(t, "", append(append([]string{"node", "add"}, args...), s...)...))
	}
	site := add("--type", "site", "--desc", "main site")
	dev := add("--parent", site, "--type", "device", "--desc", "pump house")
	sensor := add("--parent", dev, "--type", "sensor")
	other := add("--type", "site")
	// --id of an existing node puts it under a second parent.
	if got := add("--id", sensor, "--parent", site); got != sensor {
		t.Fatalf("add --id printed %q, want %q", got, sensor)
	}
	tree := mustCLI(t, "", append([]string{"node", "ls"}, s...)...)
	for _, re := range []string{"^" + srv.id + "\n", `(?m)^[├└]── ` + site + `  site  "main site"$`, `(?m)^[│ ]   [├└]── ` + dev + `  device  "pump house"$`,
		`(?m)^[├└]── ` + other + `  site$`} {
		if !regexpMatch(re, tree) {
			t.Errorf("node ls does not match %s:\n%s", re, tree)
		}
	}
	// The sensor sits under the site and under the device: listed in
	// full where the walk meets it first (child IDs are random, so either
	// one), and marked at the other.
	if strings.Count(tree, sensor+"  sensor\n") != 1 || strings.Count(tree, sensor+"  sensor  (listed above)\n") != 1 {
		t.Errorf("node ls does not list the sensor once in full and once as listed above:\n%s", tree)
	}
	if ls := lsLines(t, append([]string{site, "--depth", "1"}, s...)...); len(ls) != 3 || ls[0].Node != site || ls[1].Depth != 1 || ls[1].Parent != site {
		t.Errorf("node ls SITE --depth 1 --json: %+v", ls)
	}

	// rm: a node under two parents needs --parent.
	_, _, err := cli(t, "", append([]string{"node", "rm", sensor}, s...)...)
	var ue *UsageError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "2 parents") || !strings.Contains(err.Error(), "--parent") {
		t.Fatalf("rm of a node with two parents: %v", err)
	}
	placed, _ := findRecord(getRecords(t, srv.nats, sensor), site, "edge", "0")
	mustCLI(t, "", append([]string{"node", "rm", sensor, "--parent", site}, s...)...)
	placedAt, err := crdt.ParseTimestamp(placed.HLC)
	if err != nil {
		t.Fatal(err)
	}
	if del, _ := findRecord(getRecords(t, srv.nats, sensor), site, "edge", "0"); !del.Tombstone || *del.Value != 0 || del.Text != crdt.PlaceID(uuid.MustParse(site), placedAt) {
		t.Fatalf("the deletion does not name the placement it ends: %+v", del)
	}
	if tree := mustCLI(t, "", append([]string{"node", "ls"}, s...)...); strings.Count(tree, sensor) != 1 {
		t.Errorf("after rm the node is listed %d times:\n%s", strings.Count(tree, sensor), tree)
	}
	if tree := mustCLI(t, "", append([]string{"node", "ls", "--all"}, s...)...); !strings.Contains(tree, sensor+"  sensor  [deleted]") {
		t.Errorf("node ls --all does not show the deleted edge:\n%s", tree)
	}

	// mv writes the new edge and the old edge's tombstone with one HLC,
	// both naming the placement it moves: the one the edge site→dev began
	// (its parent and HLC).
	created, _ := findRecord(getRecords(t, srv.nats, dev), site, "edge", "0")
	mustCLI(t, "", append([]string{"node", "mv", dev, other}, s...)...)
	recs := getRecords(t, srv.nats, dev)
	nw, ok1 := findRecord(recs, other, "edge", "0")
	old, ok2 := findRecord(recs, site, "edge", "0")
	if !ok1 || !ok2 || nw.Tombstone || !old.Tombstone || *old.Value != 1 || nw.HLC != old.HLC || nw.Origin != old.Origin {
		t.Fatalf("move records: new %+v, old %+v", nw, old)
	}
	createdAt, err := crdt.ParseTimestamp(created.HLC)
	if err != nil {
		t.Fatal(err)
	}
	if place := crdt.PlaceID(uuid.MustParse(site), createdAt); *nw.Value != 1 || nw.Text != place || old.Text != place {
		t.Fatalf("move records do not name the placement %s: new %+v, old %+v", place, nw, old)
	}
	ls := lsLines(t, s...)
	parentOf := map[string]string{}
	for _, l := range ls {
		parentOf[l.Node] = l.Parent
	}
	if parentOf[dev] != other || parentOf[sensor] != dev {
		t.Fatalf("after mv: %+v", ls)
	}
	// A move under the node's own subtree is refused and writes nothing.
	before := mustCLI(t, "", append([]string{"export"}, s...)...)
	if _, _, err := cli(t, "", append([]string{"node", "mv", other, sensor}, s...)...); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("move under its own subtree: %v", err)
	}
	if _, _, err := cli(t, "", append([]string{"node", "mv", dev, other}, s...)...); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("move to where it is: %v", err)
	}
	if _, _, err := cli(t, "", append([]string{"node", "mv", dev, site, "--from", site}, s...)...); err == nil || !strings.Contains(err.Error(), "no live edge") {
		t.Fatalf("move --from a parent it is not under: %v", err)
	}
	if after := mustCLI(t, "", append([]string{"export"}, s...)...); after != before {
		t.Fatal("refused moves wrote")
	}
}

func TestSetGet(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	n := strings.TrimSpace(mustCLI(t, "", append([]string{"node", "add", "--type", "sensor"}, s...)...))
	_, errOut, err := cli(t, "", "set", n, "temp=21.5", "mode=auto", "ip.eth0=10.0.0.7", "neg=-3", "exp=1e3", "empty=", "--server", srv.nats)
	if err != nil || !strings.Contains(errOut, "set 6 points") {
		t.Fatalf("set: %v %q", err, errOut)
	}
	mustCLI(t, "", append([]string{"set", n, "serial=0042", "--text"}, s...)...)
	recs := getRecords(t, srv.nats, n)
	want := map[string]string{ // type.key: value|text
		"temp.0": "21.5|", "mode.0": "-|auto", "ip.eth0": "-|10.0.0.7", "neg.0": "-3|", "exp.0": "1000|", "empty.0": "0|",
		"serial.0": "-|0042", "nodeType.0": "-|sensor",
	}
	hlcs := map[string]bool{}
	for _, r := range recs {
		if r.Parent != "" {
			continue
		}
		k := r.Type + "." + r.Key
		value := "-" // a text point's record has no value
		if r.Value != nil {
			value = fmt.Sprint(*r.Value)
		}
		if got := value + "|" + r.Text; got != want[k] {
			t.Errorf("%s = %s, want %s", k, got, want[k])
		}
		delete(want, k)
		if k != "serial.0" && k != "nodeType.0" {
			hlcs[r.HLC] = true
		}
	}
	if len(want) != 0 {
		t.Errorf("missing points: %v", want)
	}
	if len(hlcs) != 1 {
		t.Errorf("one set wrote %d HLCs", len(hlcs))
	}
	// A tombstoned point is shown and marked.
	mustCLI(t, fmt.Sprintf(`{"node":%q,"type":"old","tombstone":true}`+"\n", n), append([]string{"import"}, s...)...)
	out := mustCLI(t, "", append([]string{"get", n}, s...)...)
	for _, re := range []string{`(?m)^temp\s+0\s+21\.5\s`, `(?m)^mode\s+0\s+"auto"`, `(?m)^old\s+0\s+0\s+deleted`, `(?m)^PARENT\s+EDGE`, `(?m)^` + srv.id + `\s+live`} {
		if !regexpMatch(re, out) {
			t.Errorf("get output does not match %s:\n%s", re, out)
		}
	}
}

// TestBadInputWritesNothing: each bad command line fails with a usage
// error (exit 2) or an error (exit 1), says why, and writes nothing.
func TestBadInputWritesNothing(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	n := strings.TrimSpace(mustCLI(t, "", "node", "add", "--server", srv.nats))
	stranger := uuid.NewString()
	big := strings.Repeat("x", 64<<10+1)
	cases := []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"set", "not-a-uuid", "temp=1"}, true, "invalid ID"},
		{[]string{"set", n}, true, "TYPE[.KEY]=VALUE"},
		{[]string{"set", n, "temp"}, true, "want TYPE[.KEY]=VALUE"},
		{[]string{"set", n, "=1"}, true, "want TYPE[.KEY]=VALUE"},
		{[]string{"set", n, "bad type=1"}, true, "type"},
		{[]string{"set", n, "temp.=1"}, true, "empty KEY"},
		{[]string{"set", n, "temp=1e999"}, true, "out of range"},
		{[]string{"set", n, "note=" + big}, true, "text"},
		{[]string{"set", n, "temp=1", "temp.0=2"}, true, "twice"},
		{[]string{"set", stranger, "temp=1"}, false, "unknown node"},
		{[]string{"get", "nope"}, true, "invalid ID"},
		{[]string{"get", stranger}, false, "unknown node"},
		{[]string{"get", n, n}, true, "one NODE"},
		{[]string{"node", "add", "--parent", stranger}, false, "unknown node"},
		{[]string{"node", "add", "--parent", "x"}, true, "--parent"},
		{[]string{"node", "add", "--desc", big}, true, "text"},
		{[]string{"node", "add", "--type", "a\xffb"}, true, "UTF-8"},
		{[]string{"node", "add", "extra"}, true, "no arguments"},
		{[]string{"node", "rm", stranger}, false, "unknown node"},
		{[]string{"node", "rm", srv.id}, false, "no live edge"},
		{[]string{"node", "rm"}, true, "one NODE"},
		{[]string{"node", "mv", n, n}, true, "own parent"},
		{[]string{"node", "mv", n, stranger}, false, "unknown node"},
		{[]string{"node", "mv", n}, true, "NEWPARENT"},
		{[]string{"node", "ls", "x"}, true, "ROOT"},
		{[]string{"node", "ls", stranger}, false, "unknown node"},
		{[]string{"node", "ls", "--depth", "-1"}, true, "--depth"},
		{[]string{"node", "frob"}, true, "unknown command"},
		{[]string{"node"}, true, "node"},
		{[]string{"watch", "x"}, true, "NODE"},
		{[]string{"watch", stranger}, false, "unknown node"},
		{[]string{"watch", "--after", "-5"}, true, "--after"},
		{[]string{"status", "--watch", "--interval", "1ms"}, true, "--interval"},
	}
	before := mustCLI(t, "", "export", "--server", srv.nats)
	for _, c := range cases {
		_, _, err := cli(t, "", append(c.args, "--server", srv.nats)...)
		var ue *UsageError
		if err == nil || errors.As(err, &ue) != c.usage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("siot %.80s: err = %v, want usage error %v mentioning %q", strings.Join(c.args, " "), err, c.usage, c.want)
		}
	}
	if after := mustCLI(t, "", "export", "--server", srv.nats); after != before {
		t.Fatalf("bad input wrote:\n%s", after)
	}
}

// lockedRun runs a command until ctx is done, its output in a buffer safe
// to read meanwhile; the returned function waits for it and returns its
// error.
func lockedRun(ctx context.Context, args ...string) (*syncBuffer, func() error) {
	out, errOut := &syncBuffer{}, &syncBuffer{}
	m := &Main{Stdin: strings.NewReader(""), Stdout: out, Stderr: errOut, Getenv: testGetenv(args)}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, args) }()
	return out, func() error {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("%w: %s", err, errOut.String())
			}
			return nil
		case <-time.After(20 * time.Second):
			return errors.New("did not stop")
		}
	}
}

func TestWatchShowsChangesWithOrigins(t *testing.T) {
	cloud := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	edge := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--upstream", cloud.nats)
	waitUntil(t, "edge in sync", func() bool {
		st := status(t, edge.nats)
		return len(st.Links) == 1 && st.Links[0].InSync
	})
	other := strings.TrimSpace(mustCLI(t, "", "node", "add", "--server", cloud.nats))
	var edgeSt, cloudSt struct {
		Instance string
		LastSeq  uint64
	}
	if err := json.Unmarshal([]byte(mustCLI(t, "", "status", "--json", "--server", edge.nats)), &edgeSt); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(mustCLI(t, "", "status", "--json", "--server", cloud.nats)), &cloudSt); err != nil {
		t.Fatal(err)
	}
	// Watch from the current change on (the default is the same, read
	// when the watcher starts, which may be after the writes below).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	after := fmt.Sprint(cloudSt.LastSeq)
	all, waitAll := lockedRun(ctx, "watch", "--json", "--after", after, "--server", cloud.nats)
	sub, waitSub := lockedRun(ctx, "watch", edge.id, "--after", after, "--server", cloud.nats)
	mustCLI(t, "", "set", edge.id, "temp=21.5", "--server", edge.nats)
	mustCLI(t, "", "set", other, "setpoint=19", "--server", cloud.nats)
	waitUntil(t, "watch --json shows both points", func() bool {
		return strings.Contains(all.String(), `"type":"temp"`) && strings.Contains(all.String(), `"type":"setpoint"`)
	})
	waitUntil(t, "subtree watch shows the edge's point", func() bool { return strings.Contains(sub.String(), "temp.0=21.5") })
	cancel()
	if err := waitAll(); err != nil {
		t.Fatalf("watch: %v", err)
	}
	if err := waitSub(); err != nil {
		t.Fatalf("watch NODE: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(all.String()), "\n") {
		var l struct {
			Type, Origin, Source string
			Seq                  uint64
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("watch --json line %q: %v", line, err)
		}
		switch {
		case l.Seq == 0:
			t.Errorf("no seq: %s", line)
		case l.Type == "temp" && (l.Source != edgeSt.Instance || l.Origin != edgeSt.Instance):
			t.Errorf("the edge's write: source %q origin %q, want the edge %s", l.Source, l.Origin, edgeSt.Instance)
		case l.Type == "setpoint" && l.Source != "":
			t.Errorf("a local write has source %q", l.Source)
		}
	}
	if strings.Contains(sub.String(), "setpoint") || !strings.Contains(sub.String(), "via "+edgeSt.Instance) {
		t.Errorf("watch NODE:\n%s", sub.String())
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

func TestStatusWatchRefreshesUntilInterrupted(t *testing.T) {
	cloud := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	edge := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--upstream", cloud.nats)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, wait := lockedRun(ctx, "status", "--watch", "--interval", "20ms", "--server", edge.nats)
	waitUntil(t, "three refreshes with rates", func() bool {
		s := out.String()
		return strings.Count(s, "instance  ") >= 3 && strings.Contains(s, "RATE") && regexpMatch(`/s\s+(0s|-)\s+[0-9.]+[KM]?B/s`, s)
	})
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("status --watch: %v", err)
	}
	if s := out.String(); !strings.Contains(s, cloud.nats) || !regexpMatch(`changes\s+\d+ \(\d+/s\)`, s) {
		t.Fatalf("status --watch output:\n%s", s)
	}
}

// set prints each point it wrote with its kind; a value with a decimal
// comma is refused unless --text; get shows a text point as text, in
// both outputs.
func TestSetPrintsKindsAndGetShowsText(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	n := strings.TrimSpace(mustCLI(t, "", append([]string{"node", "add"}, s...)...))

	var ue *UsageError
	for _, v := range []string{"21,5", "-0,25", "1,000", ",5"} {
		if _, _, err := cli(t, "", append([]string{"set", n, "temp=" + v}, s...)...); !errors.As(err, &ue) || !strings.Contains(err.Error(), "decimal comma") {
			t.Errorf("set temp=%s: %v, want a usage error", v, err)
		}
	}
	if recs := getRecords(t, srv.nats, n); len(recs) != 1 { // the edge only
		t.Fatalf("a refused set wrote: %v", recs)
	}
	out := mustCLI(t, "", append([]string{"set", n, "temp=21.5", "mode=auto", "ip.eth0=10.0.0.7"}, s...)...)
	if want := "temp = 21.5 (value)\nmode = \"auto\" (text)\nip.eth0 = \"10.0.0.7\" (text)\n"; out != want {
		t.Errorf("set printed %q, want %q", out, want)
	}
	out = mustCLI(t, "", append([]string{"set", n, "label=21,5", "--text"}, s...)...)
	if want := "label = \"21,5\" (text)\n"; out != want {
		t.Errorf("set --text printed %q, want %q", out, want)
	}
	out = mustCLI(t, "", append([]string{"set", n, "label=21,5", "code=3", "--text", "--json"}, s...)...)
	var js struct {
		Applied int             `json:"applied"`
		Points  []record.Record `json:"points"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || js.Applied != 2 || len(js.Points) != 2 ||
		js.Points[0].Value != nil || js.Points[0].Text != "21,5" || js.Points[1].Text != "3" {
		t.Errorf("set --json: %v %s", err, out)
	}

	// get: the text point has no value, in the table and in JSON.
	out = mustCLI(t, "", append([]string{"get", n}, s...)...)
	for _, re := range []string{`(?m)^temp\s+0\s+21\.5\s`, `(?m)^mode\s+0\s+"auto"\s`, `(?m)^label\s+0\s+"21,5"\s`} {
		if !regexpMatch(re, out) {
			t.Errorf("get output does not match %s:\n%s", re, out)
		}
	}
	out = mustCLI(t, "", append([]string{"get", n, "--json"}, s...)...)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("get --json: %v: %q", err, line)
		}
		switch r["type"] {
		case "mode", "label":
			if _, has := r["value"]; has || r["text"] == nil {
				t.Errorf("text point shown with a value: %s", line)
			}
		case "temp":
			if r["value"] != 21.5 {
				t.Errorf("value point: %s", line)
			}
		}
	}
	// What get --json prints, import takes back as the same points.
	mustCLI(t, out, append([]string{"import"}, s...)...)
	if again := mustCLI(t, "", append([]string{"get", n, "--json"}, s...)...); again != out {
		t.Errorf("get --json after importing it:\n%s\nwant\n%s", again, out)
	}
}
