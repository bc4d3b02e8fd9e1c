package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/record"
)

// TestImportStdinWritesAsItReads: siot import - writes a line while its
// input is still open, not only at the end of it.
func TestImportStdinWritesAsItReads(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	pr, pw := io.Pipe()
	var out, errOut bytes.Buffer
	args := []string{"import", "--server", srv.nats, "-"}
	m := &Main{Stdin: pr, Stdout: &out, Stderr: &errOut, Getenv: testGetenv(args)}
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background(), args) }()
	for i := range 3 {
		fmt.Fprintf(pw, "{\"node\":%q,\"type\":\"reading\",\"value\":%d}\n", srv.id, i)
		deadline := time.Now().Add(10 * time.Second)
		for !hasValue(t, srv, srv.id, "reading", float64(i)) {
			if time.Now().After(deadline) {
				t.Fatalf("line %d not written while the input is open", i+1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	pw.Close()
	if err := <-done; err != nil || !strings.Contains(errOut.String(), "imported 3 records from standard input: 3 applied") {
		t.Fatalf("import: %v\n%s", err, errOut.String())
	}
}

// TestImportStdinStopsAtBadLine: the lines before a bad one are written,
// and the import says so exactly, with the command that resumes.
func TestImportStdinStopsAtBadLine(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	in := fmt.Sprintf("{\"node\":%q,\"type\":\"a\",\"value\":1}\n{\"node\":%q,\"type\":\"b\",\"value\":2}\n{\"node\":%q,\"type\":\"bad type\"}\n{\"node\":%q,\"type\":\"c\",\"value\":3}\n",
		srv.id, srv.id, srv.id, srv.id)
	_, errOut, err := cli(t, in, "import", "--server", srv.nats)
	if err == nil || !strings.Contains(err.Error(), "standard input, line 3") {
		t.Fatalf("bad line 3: %v", err)
	}
	for _, want := range []string{"every record before line 3 is written", "the last durable line is 2", "resume with: siot import --from-line 3 --server"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("report does not say %q:\n%s", want, errOut)
		}
	}
	if !hasValue(t, srv, srv.id, "a", 1) || !hasValue(t, srv, srv.id, "b", 2) || hasValue(t, srv, srv.id, "c", 3) {
		t.Fatalf("written: %v; want lines 1 and 2 only", getRecords(t, srv.nats, srv.id))
	}
}

// TestImportStdinHoldsRecordsOutsideTheTree: a record outside the tree
// waits for an edge record to attach its node; one never attached is
// refused at the end, and the report names its line.
func TestImportStdinHoldsRecordsOutsideTheTree(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	site, stray := uuid.NewString(), uuid.NewString()
	in := strings.Join([]string{
		fmt.Sprintf(`{"node":%q,"type":"temp","value":1}`, site),
		fmt.Sprintf(`{"node":%q,"type":"temp","value":2}`, stray),
		fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}`, site, srv.id),
		fmt.Sprintf(`{"node":%q,"type":"temp","value":3}`, srv.id),
	}, "\n") + "\n"
	_, errOut, err := cli(t, in, "import", "--server", srv.nats)
	if err == nil || !strings.Contains(err.Error(), "1 record hangs on 1 node outside this server's tree") || !strings.Contains(err.Error(), "node "+stray+" (line 2)") {
		t.Fatalf("a stray record: %v", err)
	}
	for _, want := range []string{"every record before line 2 is written", "2 records after line 2 are written too",
		"1 record outside this server's tree (lines 2) were held back", "resume with: siot import --from-line 2"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("report does not say %q:\n%s", want, errOut)
		}
	}
	if !hasValue(t, srv, site, "temp", 1) {
		t.Fatalf("the site's point, held until its edge came: %v", getRecords(t, srv.nats, site))
	}
	if _, _, err := cli(t, "", "get", stray, "--server", srv.nats); err == nil {
		t.Fatal("the stray record was written")
	}
}

// hasValue reports whether node has the node point typ (key "0") with
// value v on srv.
func hasValue(t *testing.T, srv *instance, node, typ string, v float64) bool {
	t.Helper()
	out, _, err := cli(t, "", "get", node, "--json", "--server", srv.nats)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r record.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("get --json line %q: %v", line, err)
		}
		if r.Parent == "" && r.Type == typ && r.Key == "0" && r.Value != nil && *r.Value == v {
			return true
		}
	}
	return false
}
