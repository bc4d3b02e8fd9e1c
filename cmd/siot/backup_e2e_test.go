package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2EImportKilledReportsDurableLineAndResumes: a restore whose server
// is killed (SIGKILL) midway fails naming the last line the server
// acknowledged and the batch in flight as unknown, not refused; every line
// up to the acknowledged one is on the restarted server, and the resume
// command it prints completes the restore: the server then exports the
// backup byte for byte.
func TestE2EImportKilledReportsDurableLineAndResumes(t *testing.T) {
	bin := e2eBinary(t)
	const n = 120_000
	a := newProc(t, "a")
	a.start()
	dir := t.TempDir()
	in := recordsFile(t, a.id, n)
	mustSiot(t, "", "import", "--server", a.url, in)
	backup := filepath.Join(dir, "backup.jsonl")
	if err := os.WriteFile(backup, []byte(a.export("")), 0o600); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(want), "\n")
	lines = lines[:len(lines)-1]
	if len(lines) != n {
		t.Fatalf("backup of %d lines, want %d", len(lines), n)
	}

	b := newProc(t, "b", "--id", a.id)
	b.start()
	imp := exec.Command(bin, "import", "--server", b.url, "--batch", "500", "--timeout", "20s", backup)
	imp.Env = append(os.Environ(), "SIOT_CREDS="+credsFor(b.url))
	var out, errb bytes.Buffer
	imp.Stdout, imp.Stderr = &out, &errb
	if err := imp.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- imp.Wait() }()
	// Kill the server once a few batches are in.
	waitFor(t, "b's store past 2,000 changes", 60*time.Second, func() (bool, string) {
		st, err := b.status()
		if err != nil {
			return false, err.Error()
		}
		return st.LastSeq > 2000, strconv.FormatUint(st.LastSeq, 10)
	})
	b.stop(syscall.SIGKILL, 10*time.Second)
	var impErr error
	select {
	case impErr = <-done:
	case <-time.After(60 * time.Second):
		_ = imp.Process.Kill()
		t.Fatalf("import still running a minute after its server was killed")
	}
	report := errb.String()
	t.Logf("import's report:\n%s", report)
	if impErr == nil || imp.ProcessState.ExitCode() != 1 {
		t.Fatalf("import of a killed server: %v, want exit status 1", impErr)
	}
	if strings.Contains(report, "refused") || !strings.Contains(report, "no reply from the server") || !strings.Contains(report, "may or may not be written") {
		t.Fatalf("the batch in flight is not reported as unknown:\n%s", report)
	}
	m := regexp.MustCompile(`the last durable line is (\d+)\n`).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("no durable line in the report:\n%s", report)
	}
	durable, _ := strconv.Atoi(m[1])
	if durable < 500 || durable >= n {
		t.Fatalf("durable line %d: the kill did not land midway", durable)
	}
	resume := regexp.MustCompile(`(?m)^resume with: (siot import .*)$`).FindStringSubmatch(report)
	if resume == nil || !strings.Contains(resume[1], "--from-line "+strconv.Itoa(durable+1)+" ") {
		t.Fatalf("no resume command from line %d in the report:\n%s", durable+1, report)
	}

	b.start()
	have := map[string]bool{}
	for _, l := range strings.SplitAfter(b.export(""), "\n") {
		have[l] = true
	}
	for i, l := range lines[:durable] {
		if !have[l] {
			t.Fatalf("line %d, acknowledged, is not on the restarted server: %s", i+1, l)
		}
	}
	args := strings.Fields(resume[1])[1:]
	if o, e, err := siot("", args...); err != nil {
		t.Fatalf("resume: %v\n%s%s", err, o, e)
	}
	if got := b.export(""); got != string(want) {
		t.Fatalf("after the resume the server does not hold the backup: %s", diffSummary(string(want), got))
	}
}
