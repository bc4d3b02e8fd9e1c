package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestBigRoundTrip is the backup and restore contract at 1,000,000 points:
// export, import into an empty instance started with --id of the same
// root, export again: byte-identical, HLC and origin kept. It runs in
// make test's pass without -race; under -race TestRoundTrip runs the same
// at 20,000 points.
func TestBigRoundTrip(t *testing.T) {
	if raceEnabled {
		t.Skip("1,000,000 points: run by make test's pass without -race")
	}
	roundTrip(t, 1_000_000)
}

func TestRoundTrip(t *testing.T) { roundTrip(t, 20_000) }

func roundTrip(t *testing.T, n int) {
	dir := t.TempDir()
	in, exp1, exp2 := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "exp1.jsonl"), filepath.Join(dir, "exp2.jsonl")
	a := serve(t, "--data", filepath.Join(dir, "a"), "--listen", "127.0.0.1:0", "--http", "")

	// n records: devices of 100 points, stamped by the server, plus a few
	// that carry their own hlc and origin (a user's write, a tombstone, a
	// text with escapes), which must come back as they went in.
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeRecords(f, a.id, n-3); err != nil {
		t.Fatal(err)
	}
	user, node := uuid.NewString(), uuid.NewString()
	hlc := uint64(time.Now().Add(-time.Hour).UnixMilli())<<16 | 7
	kept := []string{
		fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge","key":"0","value":0,"tombstone":false,"hlc":"%d","origin":%q}`, node, a.id, hlc, user),
		fmt.Sprintf(`{"node":%q,"type":"name","key":"0","value":0,"text":"a \"b\" \\ é\n","tombstone":false,"hlc":"%d","origin":%q}`, node, hlc+1, user),
		fmt.Sprintf(`{"node":%q,"type":"gone","key":"k","value":2.5,"tombstone":true,"hlc":"%d","origin":%q}`, node, hlc+2, user),
	}
	fmt.Fprintln(f, strings.Join(kept, "\n"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	step := func(what string, fn func()) {
		t0 := time.Now()
		fn()
		el := time.Since(t0)
		t.Logf("%s: %v (%.0f records/s)", what, el.Round(time.Millisecond), float64(n)/el.Seconds())
	}
	step("import", func() { runCLI(t, io.Discard, "import", "--server", a.nats, in) })
	step("export", func() { exportTo(t, a.nats, exp1) })
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	b := serve(t, "--data", filepath.Join(dir, "b"), "--listen", "127.0.0.1:0", "--http", "", "--id", a.id)
	step("restore (import of the export)", func() { runCLI(t, io.Discard, "import", "--server", b.nats, exp1) })
	step("export of the restored instance", func() { exportTo(t, b.nats, exp2) })

	lines, sum1 := digestFile(t, exp1, kept)
	_, sum2 := digestFile(t, exp2, nil)
	if sum1 != sum2 {
		t.Fatalf("the restored instance exports different bytes")
	}
	if lines != n {
		t.Fatalf("export has %d lines, want %d", lines, n)
	}
}

// exportTo runs `siot export` into file.
func exportTo(t *testing.T, server, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runCLI(t, f, "export", "--server", server)
}

// digestFile returns the lines and SHA-256 of a file, and fails the test
// unless every line of want is one of its lines.
func digestFile(t *testing.T, file string, want []string) (int, [32]byte) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	h := sha256.New()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxRecordLine)
	n := 0
	for sc.Scan() {
		n++
		h.Write(sc.Bytes())
		h.Write([]byte{'\n'})
		delete(missing, string(bytes.TrimSpace(sc.Bytes())))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for w := range missing {
		t.Errorf("export lacks %s", w)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum
}
