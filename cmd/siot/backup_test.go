package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
)

// TestExportUnknownRootFails: export --root of a node the server does not
// have fails naming it, as get does, and prints nothing.
func TestExportUnknownRootFails(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	n := uuid.NewString()
	out, _, err := cli(t, "", "export", "--server", srv.nats, "--root", n)
	if !errors.Is(err, client.ErrNotFound) || !strings.Contains(err.Error(), n) || out != "" {
		t.Fatalf("export --root unknown: err = %v, out %q; want unknown node %s", err, out, n)
	}
	// The root itself and a node that exists still export.
	mustCLI(t, "", "export", "--server", srv.nats, "--root", srv.id)
}

// stopAfterFirstWrite is an export's standard output that stops the server
// once the export has written something: the rest of the export meets a
// stopped server.
type stopAfterFirstWrite struct {
	strings.Builder
	stop   func() error
	writes int
}

func (w *stopAfterFirstWrite) Write(b []byte) (int, error) {
	n, err := w.Builder.Write(b)
	w.writes++
	if w.writes == 1 {
		if err := w.stop(); err != nil {
			return n, err
		}
	}
	return n, err
}

// TestExportCutOffEndsOnWholeRecord: an export whose server stops after
// the first page fails, and what it wrote ends on a whole record, every
// line one; a completed export reports the exact number of records.
func TestExportCutOffEndsOnWholeRecord(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	const n = 40_000 // about four pages
	in := recordsFile(t, srv.id, n)
	runCLI(t, io.Discard, "import", "--server", srv.nats, in)
	_, errOut, err := cli(t, "", "export", "--server", srv.nats)
	if err != nil || !strings.Contains(errOut, fmt.Sprintf("exported %d records\n", n)) {
		t.Fatalf("complete export: %v, stderr %q; want \"exported %d records\"", err, errOut, n)
	}

	out := &stopAfterFirstWrite{stop: srv.stop}
	var errb strings.Builder
	m := &Main{Stdin: strings.NewReader(""), Stdout: out, Stderr: &errb, Getenv: testGetenv([]string{"--server", srv.nats})}
	err = m.Run(context.Background(), []string{"export", "--server", srv.nats, "--timeout", "10s"})
	got := out.String()
	if err == nil {
		t.Fatalf("export of a server stopped midway succeeded (%d bytes)", len(got))
	}
	if strings.Contains(errb.String(), "exported ") {
		t.Errorf("a failed export reported a count: %q", errb.String())
	}
	if got == "" || !strings.HasSuffix(got, "\n") {
		t.Fatalf("cut-off export: %d bytes, ends %q: want whole records", len(got), tail(got, 80))
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	for i, l := range lines {
		if _, err := record.Parse([]byte(l)); err != nil {
			t.Fatalf("line %d of the cut-off export: %v", i+1, err)
		}
	}
	if len(lines) >= n {
		t.Fatalf("the export wrote %d records before its server stopped: not cut off", len(lines))
	}
	t.Logf("cut off after %d records: %v", len(lines), err)
}

// TestImportRefusesInvalidUTF8: a text with bytes that are not UTF-8, or
// with an escaped lone surrogate, is refused naming its line, not
// rewritten to U+FFFD; valid escapes, pairs and a literal U+FFFD pass.
func TestImportRefusesInvalidUTF8(t *testing.T) {
	n := uuid.NewString()
	rec := func(text string) string { return `{"node":"` + n + `","type":"t","text":"` + text + `"}` }
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	edge := fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}`, n, srv.id)
	for _, bad := range []string{rec("caf\xe9"), rec(`\udead`)} {
		_, _, err := cli(t, "", "import", "--server", srv.nats, inputFile(t, edge+"\n"+rec("ok")+"\n"+bad+"\n"))
		if err == nil || !strings.Contains(err.Error(), "line 3") {
			t.Errorf("import of %q: %v, want line 3 refused", bad, err)
		}
	}
	if out := mustCLI(t, "", "export", "--server", srv.nats); out != "" {
		t.Fatalf("refused imports wrote:\n%s", out)
	}
}

// TestImportRefusesRecordsOutsideTheTree: a restore without --id, whose
// records all hang under another root, is refused before anything is
// written, with counts, examples and what to do; so is one point of a
// node the tree does not have among good records. Edge records of the
// input attach nodes, through chains and deleted edges too. With
// --allow-orphans the records are written and the counts printed.
func TestImportRefusesRecordsOutsideTheTree(t *testing.T) {
	a := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	var in strings.Builder
	site, dev := uuid.NewString(), uuid.NewString()
	fmt.Fprintf(&in, "{\"node\":%q,\"type\":\"description\",\"text\":\"old root\"}\n", a.id)
	fmt.Fprintf(&in, "{\"node\":%q,\"parent\":%q,\"type\":\"edge\"}\n", site, a.id)
	fmt.Fprintf(&in, "{\"node\":%q,\"parent\":%q,\"type\":\"edge\"}\n", dev, site)
	fmt.Fprintf(&in, "{\"node\":%q,\"type\":\"temp\",\"value\":1}\n", dev)
	mustCLI(t, in.String(), "import", "--server", a.nats)
	backup := mustCLI(t, "", "export", "--server", a.nats)

	b := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	backupFile := inputFile(t, backup)
	_, _, err := cli(t, "", "import", "--server", b.nats, backupFile)
	if err == nil {
		t.Fatal("a backup of another root was imported without --id")
	}
	for _, want := range []string{"4 records hang on 3 nodes outside this server's tree (root " + b.id,
		"node " + a.id + " (line ", "they all hang under node " + a.id, "nothing was written", "siot serve --id " + a.id, "--allow-orphans"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not say %q:\n%v", want, err)
		}
	}
	if out := mustCLI(t, "", "export", "--server", b.nats); out != "" {
		t.Fatalf("a refused import wrote:\n%s", out)
	}

	// In the tree: the root, a node the server has, nodes the input
	// attaches (a chain, a deleted edge). Outside: a point of a stranger.
	known := strings.TrimSpace(mustCLI(t, "", "node", "add", "--server", b.nats, "--json"))
	var added struct {
		ID string `json:"node"`
	}
	if err := json.Unmarshal([]byte(known), &added); err != nil || added.ID == "" {
		t.Fatalf("node add --json: %q %v", known, err)
	}
	x, y, gone, stranger := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	good := strings.Join([]string{
		fmt.Sprintf(`{"node":%q,"type":"temp","value":2}`, b.id),
		fmt.Sprintf(`{"node":%q,"type":"temp","value":3}`, added.ID),
		fmt.Sprintf(`{"node":%q,"type":"temp","value":4}`, y),
		fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}`, y, x),
		fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}`, x, added.ID),
		fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge","tombstone":true}`, gone, b.id),
		fmt.Sprintf(`{"node":%q,"type":"temp","value":5}`, gone),
	}, "\n") + "\n"
	bad := good + fmt.Sprintf(`{"node":%q,"type":"temp","value":6}`, stranger) + "\n"
	_, _, err = cli(t, "", "import", "--server", b.nats, inputFile(t, bad))
	if err == nil || !strings.Contains(err.Error(), "1 record hangs on 1 node") || !strings.Contains(err.Error(), "node "+stranger+" (line 8)") {
		t.Fatalf("a point of a stranger among good records: %v", err)
	}
	if out := mustCLI(t, "", "export", "--server", b.nats); strings.Count(out, "\n") != 1 {
		t.Fatalf("a refused import wrote:\n%s", out)
	}
	_, errOut, err := cli(t, "", "import", "--server", b.nats, inputFile(t, good))
	if err != nil || strings.Contains(errOut, "warning") {
		t.Fatalf("records the tree or the input attaches: %v %s", err, errOut)
	}

	// --allow-orphans writes them and says how many.
	_, errOut, err = cli(t, "", "import", "--server", b.nats, "--allow-orphans", backupFile)
	if err != nil || !strings.Contains(errOut, "warning: "+backupFile+": 4 records hang on 3 nodes outside") || !strings.Contains(errOut, "imported 4 records") {
		t.Fatalf("--allow-orphans: %v\n%s", err, errOut)
	}
	if out := mustCLI(t, "", "export", "--server", b.nats, "--root", a.id); strings.Count(out, "\n") != 4 {
		t.Fatalf("--allow-orphans wrote:\n%s", out)
	}
}

// TestImportSplitsBatchesOfLongTexts: 2,000 records (one --batch) of 1 KB
// texts do not fit in one request; the import sends them in batches
// under the request limit.
func TestImportSplitsBatchesOfLongTexts(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	var in strings.Builder
	text := strings.Repeat("x", 1000)
	for i := range 2000 {
		fmt.Fprintf(&in, "{\"node\":%q,\"type\":\"blob\",\"key\":\"%d\",\"text\":%q}\n", srv.id, i, text)
	}
	if _, errOut, err := cli(t, in.String(), "import", "--server", srv.nats); err != nil {
		t.Fatalf("import: %v\n%s", err, errOut)
	}
	if out := mustCLI(t, "", "export", "--server", srv.nats); strings.Count(out, "\n") != 2000 {
		t.Fatalf("export has %d lines, want 2000", strings.Count(out, "\n"))
	}
}

// TestTreeIndexOutside: the pure core of the orphan check. Known nodes
// and what input edges attach to them, through chains and deleted edges,
// are in; a detached part is counted with its top, a cycle of its own
// has none.
func TestTreeIndexOutside(t *testing.T) {
	ids := make([]uuid.UUID, 10)
	for i := range ids {
		ids[i] = uuid.UUID{15: byte(i + 1)}
	}
	root, a, b, c, foreign, f1, f2, cy1, cy2, lone := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7], ids[8], ids[9]
	x := newTreeIndex()
	line := 0
	add := func(p crdt.Point) { line++; x.add(line, &p) }
	edge := func(child, parent uuid.UUID, tomb bool) crdt.Point {
		return crdt.Point{Node: child, Parent: parent, Type: crdt.TypeEdge, Tombstone: tomb}
	}
	val := func(n uuid.UUID) crdt.Point { return crdt.Point{Node: n, Type: "temp"} }
	add(val(root))                // 1: in (known)
	add(val(c))                   // 2: in, through b and a
	add(edge(c, b, false))        // 3
	add(edge(b, a, true))         // 4: a deleted edge attaches too
	add(edge(a, root, false))     // 5
	add(val(f2))                  // 6: out, under foreign
	add(edge(f2, f1, false))      // 7: out (hangs on f1)
	add(edge(f1, foreign, false)) // 8: out (hangs on foreign)
	add(val(foreign))             // 9: out
	add(edge(cy1, cy2, false))    // 10: out, a cycle of its own
	add(edge(cy2, cy1, false))    // 11: out
	add(val(lone))                // 12: out, a top of its own
	known := make([]bool, len(x.nodes))
	known[x.ids[root]] = true
	o := x.outside(known)
	if o.records != 7 || o.nodes != 6 {
		t.Fatalf("outside: %d records of %d nodes, want 7 of 6", o.records, o.nodes)
	}
	wantEx := []orphanNode{{f2, 6}, {f1, 7}, {foreign, 8}}
	if !slices.Equal(o.examples, wantEx) {
		t.Errorf("examples %v, want %v", o.examples, wantEx)
	}
	if o.ntops != 2 || !slices.Equal(o.tops, []uuid.UUID{foreign, lone}) {
		t.Errorf("tops %v (%d), want foreign and lone", o.tops, o.ntops)
	}
	// Everything known: nothing outside.
	for i := range known {
		known[i] = true
	}
	if o := x.outside(known); o.records != 0 || o.nodes != 0 || o.ntops != 0 {
		t.Errorf("all known: %+v", o)
	}
}

// inputFile writes text to a new file and returns its path: an import
// from a FILE checks every record before writing any.
func inputFile(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
