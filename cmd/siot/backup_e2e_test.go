package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
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
	imp.Env = append(childEnv(), "SIOT_CREDS="+credsFor(b.url))
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

// docScript returns the first sh block after heading in the doc file
// path (relative to this package).
func docScript(t *testing.T, path, heading string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, heading)
	if i < 0 {
		t.Fatalf("%s has no %q", path, heading)
	}
	start := strings.Index(doc[i:], "```sh\n")
	if start < 0 {
		t.Fatalf("%s: no sh block after %q", path, heading)
	}
	block := doc[i+start+len("```sh\n"):]
	end := strings.Index(block, "```")
	if end < 0 {
		t.Fatalf("%s: the sh block after %q does not end", path, heading)
	}
	return block[:end]
}

// TestE2EBackupRecipeKeepsOnlyCompleteBackups runs the backup script of
// docs/operations.md as written (its server address and credential file
// those of a test instance, the test's binary as siot) and kills the
// server midway through its export: the script fails and leaves no backup
// file, or, when a complete backup of the same name was there, leaves it
// as it was; with the server up it writes a backup of exactly the
// exported records.
func TestE2EBackupRecipeKeepsOnlyCompleteBackups(t *testing.T) {
	bin := e2eBinary(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("the recipe needs bash")
	}
	for _, tool := range []string{"gzip", "gunzip", "mktemp", "sed", "wc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the recipe needs %s", tool)
		}
	}
	script := docScript(t, "../../docs/operations.md", "## Backup and restore")
	for _, want := range []string{"set -euo pipefail", "/var/lib/siot/admin.creds", "nats://127.0.0.1:4222", "mktemp", "wc -l", "mv \"$tmp\" \"$backup\""} {
		if !strings.Contains(script, want) {
			t.Fatalf("the backup recipe has no %q:\n%s", want, script)
		}
	}
	srv := newProc(t, "server")
	srv.start()
	// Records with long random texts: a big export, little gzip can
	// squeeze, so the compressed file grows from the first pages on.
	const n = 30_000
	var in strings.Builder
	rng := rand.New(rand.NewPCG(1, 2))
	dev := ""
	for i := range n {
		if i%100 == 0 {
			dev = uuidFrom(rng)
			fmt.Fprintf(&in, "{\"node\":%q,\"parent\":%q,\"type\":\"edge\"}\n", dev, srv.id)
			continue
		}
		text := make([]byte, 600)
		for j := range text {
			text[j] = "abcdefghijklmnopqrstuvwxyz0123456789"[rng.IntN(36)]
		}
		fmt.Fprintf(&in, "{\"node\":%q,\"type\":\"blob\",\"key\":\"%d\",\"text\":%q}\n", dev, i, text)
	}
	mustSiot(t, in.String(), "import", "--server", srv.url)

	bindir, dir := t.TempDir(), t.TempDir()
	if err := os.Symlink(bin, filepath.Join(bindir, "siot")); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup-"+time.Now().Format("2006-01-02")+".jsonl.gz")
	// run runs the recipe against the server as it is now; with kill, it
	// kills the server once the temporary file has data.
	run := func(kill bool) (string, error) {
		s := strings.ReplaceAll(script, "/var/lib/siot/admin.creds", credsFor(srv.url))
		s = strings.ReplaceAll(s, "nats://127.0.0.1:4222", srv.url)
		cmd := exec.Command(bash, "-c", s)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + bindir + ":" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + t.TempDir()}
		var outb syncBuffer
		cmd.Stdout, cmd.Stderr = &outb, &outb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if kill {
			var size int64
			midway := poll(60*time.Second, 2*time.Millisecond, func() bool {
				tmps, _ := filepath.Glob(backup + ".??????")
				for _, f := range tmps {
					if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
						size = fi.Size()
						return true
					}
				}
				select {
				case err := <-done:
					done <- err
					return true
				default:
					return false
				}
			})
			if !midway || size == 0 {
				t.Fatalf("the export did not start writing, or ended before the kill:\n%s", outb.String())
			}
			srv.stop(syscall.SIGKILL, 10*time.Second)
			t.Logf("server killed with %d bytes in the temporary file", size)
		}
		select {
		case err := <-done:
			return outb.String(), err
		case <-time.After(90 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("the recipe still runs after 90 s:\n%s", outb.String())
		}
		return "", nil
	}
	noTemp := func() {
		t.Helper()
		if left, _ := filepath.Glob(backup + ".*"); len(left) > 0 {
			t.Fatalf("the recipe left %v", left)
		}
	}

	// No backup yet: a cut-off export leaves none.
	out, err := run(true)
	if err == nil {
		t.Fatalf("the recipe succeeded with its server killed midway:\n%s", out)
	}
	t.Logf("recipe, server killed:\n%s", out)
	if _, err := os.Stat(backup); !os.IsNotExist(err) {
		t.Fatalf("a cut-off export left a backup: %v", err)
	}
	noTemp()

	// Server up: a complete backup of exactly the exported records.
	srv.start()
	out, err = run(false)
	if err != nil {
		t.Fatalf("recipe: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("%d records", n)) {
		t.Fatalf("recipe output: %q, want %d records", out, n)
	}
	good, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if got := gunzipLines(t, good); got != n {
		t.Fatalf("the backup holds %d lines, want %d", got, n)
	}
	if root, err := os.ReadFile(filepath.Join(dir, "root.txt")); err != nil || strings.TrimSpace(string(root)) != srv.id {
		t.Fatalf("root.txt: %q %v, want %s", root, err, srv.id)
	}
	noTemp()

	// A cut-off export leaves the complete backup of the same name alone.
	out, err = run(true)
	if err == nil {
		t.Fatalf("the recipe succeeded with its server killed midway:\n%s", out)
	}
	if after, err := os.ReadFile(backup); err != nil || !bytes.Equal(after, good) {
		t.Fatalf("a cut-off export changed the previous backup: %v", err)
	}
	noTemp()
}

// gunzipLines returns the lines of a gzip file's content.
func gunzipLines(t *testing.T, gz []byte) int {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte{'\n'})
}

// uuidFrom returns a random UUID drawn from rng.
func uuidFrom(rng *rand.Rand) string {
	var u uuid.UUID
	for i := range u {
		u[i] = byte(rng.Uint32())
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}
