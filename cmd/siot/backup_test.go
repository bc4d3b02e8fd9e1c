package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestExportUnknownRootFails: export --root of a node the server does not
// have fails naming it, as get does, and prints nothing.
func TestExportUnknownRootFails(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	n := uuid.NewString()
	out, _, err := cli(t, "", "export", "--server", srv.nats, "--root", n)
	if !errors.Is(err, errUnknownNode) || !strings.Contains(err.Error(), n) || out != "" {
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
		if _, err := parseRecord([]byte(l)); err != nil {
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
	for _, c := range []struct{ text, want string }{
		{"a\xffb", "not valid UTF-8 at byte"},
		{"\xc3", "not valid UTF-8"},
		{`\ud800`, `lone UTF-16 surrogate \ud800`},
		{`x\uDBFFy`, `lone UTF-16 surrogate \uDBFF`},
		{`\udc00`, `lone UTF-16 surrogate \udc00`},
		{`\ud83d\u0041`, `lone UTF-16 surrogate \ud83d`},
		{`\\\ud800`, `lone UTF-16 surrogate`},
	} {
		if _, err := parseRecord([]byte(rec(c.text))); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("text %q: err = %v, want %q", c.text, err, c.want)
		}
	}
	for text, want := range map[string]string{
		`\ud83d\ude00`: "\U0001F600", `\\ud800`: `\ud800`, "\uFFFD": "\uFFFD", `\ufffd`: "\uFFFD",
		`é \u00e9 \"`: `é é "`,
	} {
		p, err := parseRecord([]byte(rec(text)))
		if err != nil || p.Text != want {
			t.Errorf("text %q: %q, %v; want %q", text, p.Text, err, want)
		}
	}

	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	edge := fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}`, n, srv.id)
	for _, bad := range []string{rec("caf\xe9"), rec(`\udead`)} {
		_, _, err := cli(t, edge+"\n"+rec("ok")+"\n"+bad+"\n", "import", "--server", srv.nats)
		if err == nil || !strings.Contains(err.Error(), "line 3") {
			t.Errorf("import of %q: %v, want line 3 refused", bad, err)
		}
	}
	if out := mustCLI(t, "", "export", "--server", srv.nats); out != "" {
		t.Fatalf("refused imports wrote:\n%s", out)
	}
}
