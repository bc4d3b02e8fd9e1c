package main

import (
	"context"
	"flag"
	"fmt"
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

// flagMention finds "--flag" in text.
var flagMention = regexp.MustCompile(`(?:^|[\s\[(|"'=` + "`" + `])--([a-z][a-z0-9-]*)`)

// siotMention finds where a line names a command: "siot CMD", "siot node
// SUB" or "siot rule SUB".
var siotMention = regexp.MustCompile(`\bsiot ((?:node|rule) [a-z]+|[a-z]+)\b`)

// flagSets returns every command's flag set, built without running it.
func flagSets() map[string]*flag.FlagSet {
	m := &Main{Getenv: func(string) string { return "" }}
	out := map[string]*flag.FlagSet{}
	for _, name := range commandNames {
		out[name] = newFlagSet(name, m.command(name))
	}
	return out
}

// docFlagErrors checks text: on each line (continuation lines joined), the
// flags after "siot CMD" up to the next "siot" belong to CMD, and those
// before the first "siot" to self ("" for none). It returns one message
// per flag that CMD does not have.
func docFlagErrors(where, text, self string, sets map[string]*flag.FlagSet) []string {
	var errs []string
	text = strings.ReplaceAll(text, "\\\n", " ")
	for i, line := range strings.Split(text, "\n") {
		type segment struct{ cmd, text string }
		segs := []segment{}
		locs := siotMention.FindAllStringSubmatchIndex(line, -1)
		first := len(line)
		if len(locs) > 0 {
			first = locs[0][0]
		}
		segs = append(segs, segment{self, line[:first]})
		for j, loc := range locs {
			end := len(line)
			if j+1 < len(locs) {
				end = locs[j+1][0]
			}
			segs = append(segs, segment{line[loc[2]:loc[3]], line[loc[3]:end]})
		}
		for _, sg := range segs {
			fs, known := sets[sg.cmd]
			if !known {
				continue // prose ("siot serving"), or no command
			}
			for _, m := range flagMention.FindAllStringSubmatch(sg.text, -1) {
				if m[1] != "help" && fs.Lookup(m[1]) == nil {
					errs = append(errs, fmt.Sprintf("%s:%d: siot %s has no flag --%s: %q", where, i+1, sg.cmd, m[1], strings.TrimSpace(line)))
				}
			}
		}
	}
	return errs
}

// TestDocumentedFlagsExist: every --flag that a command's help, the node
// and rule overviews, the top-level usage, README.md or docs/*.md gives a
// command exists in that command's flag set.
func TestDocumentedFlagsExist(t *testing.T) {
	sets := flagSets()
	m := &Main{Getenv: func(string) string { return "" }}
	var errs []string
	for _, name := range commandNames {
		errs = append(errs, docFlagErrors(name+" --help", m.command(name).usage(), name, sets)...)
	}
	node := regexp.MustCompile(`(?m)^(\s+)node `).ReplaceAllString(nodeUsage, "${1}siot node ")
	errs = append(errs, docFlagErrors("node --help", node, "", sets)...)
	rule := regexp.MustCompile(`(?m)^(\s+)rule `).ReplaceAllString(ruleUsage, "${1}siot rule ")
	errs = append(errs, docFlagErrors("rule --help", rule, "", sets)...)
	// The top-level usage names flags shared by commands: each exists in
	// some command.
	for _, f := range flagMention.FindAllStringSubmatch(mainUsage, -1) {
		found := f[1] == "help" || f[1] == "version" // siot --version
		for _, fs := range sets {
			found = found || fs.Lookup(f[1]) != nil
		}
		if !found {
			errs = append(errs, "siot --help: no command has --"+f[1])
		}
	}
	docs, _ := filepath.Glob("../../docs/*.md")
	for _, path := range append([]string{"../../README.md"}, docs...) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		errs = append(errs, docFlagErrors(filepath.Base(path), string(b), "", sets)...)
	}
	for _, e := range errs {
		t.Error(e)
	}
	// The check itself finds a flag that does not exist.
	if e := docFlagErrors("self-test", "run `siot get NODE --nope` or siot node rm X --parent P | siot set --frob", "", sets); len(e) != 2 {
		t.Errorf("self-test found %d errors, want 2: %q", len(e), e)
	}
	// Every command's --help runs and prints its usage.
	for _, name := range commandNames {
		out, _, err := run(t, append(strings.Fields(name), "--help")...)
		if err != nil || !strings.Contains(out, "Usage: siot "+name) || !strings.Contains(out, "Examples:") || !strings.Contains(out, "Flags:") {
			t.Errorf("siot %s --help: %v\n%s", name, err, out)
		}
	}
}

// tourScript returns the shell block of README.md's five-minute tour.
func tourScript(t *testing.T) string { return readmeScript(t, "## A five-minute tour") }

// runScript runs a README script with bash -e, the test's binary for
// bin/siot and a free port for each of ports on 127.0.0.1, and returns
// its output. The script's servers run in its process group: when the
// script ends, or a timeout kills it, so do they.
func runScript(t *testing.T, bash, bin, script string, ports ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runScriptIn(t, bash, bin, "", t.TempDir(), script, ports...)
}

// runScriptIn is runScript with the directory path first on the script's
// PATH (none when empty) and tmp as its TMPDIR, where its mktemp files go.
func runScriptIn(t *testing.T, bash, bin, path, tmp, script string, ports ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd, cancel := scriptCmd(t, bash, bin, path, tmp, script, ports)
	defer cancel()
	// Files, not pipes: the script's end is not held up by a server it
	// left running (it failed midway), which would hold a pipe open.
	outs := t.TempDir()
	outF, errF := createFile(t, filepath.Join(outs, "stdout")), createFile(t, filepath.Join(outs, "stderr"))
	cmd.Stdout, cmd.Stderr = outF, errF
	err = cmd.Run()
	if cmd.Process != nil {
		killGroup(t, cmd.Process.Pid)
	}
	outF.Close()
	errF.Close()
	return readFile(t, outF.Name()), readFile(t, errF.Name()), err
}

// scriptCmd prepares a README script to run in bash -e: bin/siot is
// bin, each of ports (127.0.0.1:PORT) a free port, the directory path
// first on PATH (none when empty), tmp its TMPDIR, its own process group
// killed whole when the 90 s it may run are over. cancel ends that time.
func scriptCmd(t *testing.T, bash, bin, path, tmp, script string, ports []string) (cmd *exec.Cmd, cancel context.CancelFunc) {
	t.Helper()
	script = strings.ReplaceAll(script, "bin/siot ", bin+" ")
	for _, port := range ports {
		script = strings.ReplaceAll(script, "127.0.0.1:"+port, "127.0.0.1:"+strconv.Itoa(freePort(t)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	cmd = exec.CommandContext(ctx, bash, "-e", "-c", script)
	cmd.Dir = t.TempDir()
	if path != "" {
		path += string(os.PathListSeparator)
	}
	cmd.Env = []string{"PATH=" + path + os.Getenv("PATH"), "HOME=" + cmd.Dir, "TMPDIR=" + tmp}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd, cancel
}

// killGroup kills what is left of process group pgid, the processes a
// script started, and waits up to 10 s for them to be gone (a process
// whose parent is gone may stay a zombie for longer: it runs no more).
func killGroup(t *testing.T, pgid int) {
	t.Helper()
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil {
		return // none left (ESRCH)
	}
	if !poll(10*time.Second, 20*time.Millisecond, func() bool { return syscall.Kill(-pgid, 0) != nil }) {
		t.Logf("process group %d: still there 10 s after SIGKILL (zombies?)", pgid)
	}
}

func createFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readmeScript returns the first sh block under heading in README.md.
func readmeScript(t *testing.T, heading string) string {
	t.Helper()
	return docScript(t, "../../README.md", heading)
}

// TestE2EReadmeTour runs the README's tour as written, with bash -e, on
// free ports and with the binary built for the test, and checks that it
// shows what it claims: the watch sees the edge's point arrive from the
// edge and the cloud's as local, and both sides hold both points.
func TestE2EReadmeTour(t *testing.T) {
	bin := e2eBinary(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script := tourScript(t)
	if !strings.HasPrefix(script, "make build\n") {
		t.Fatalf("the tour does not start with make build:\n%s", script)
	}
	stdout, stderr, err := runScript(t, bash, bin, strings.TrimPrefix(script, "make build\n"), "4222", "4223", "8118", "8119")
	if testing.Verbose() {
		t.Logf("tour output:\n%s", stdout)
	}
	if err != nil {
		t.Fatalf("tour: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	edge := regexp.MustCompile(`(?m)^instance\s+(\S+)$`).FindStringSubmatch(stdout)
	if edge == nil {
		t.Fatalf("the tour's status prints no instance:\n%s", stdout)
	}
	for _, re := range []string{
		`temp\.0=21\.5  origin ` + edge[1] + `  via ` + edge[1],
		`setpoint\.0=19  origin \S+  via local`,
		`sensor  "boiler temperature"`,
	} {
		if !regexpMatch(re, stdout) {
			t.Errorf("tour output does not match %s:\n%s", re, stdout)
		}
	}
	for _, re := range []string{`(?m)^temp\s+0\s+21\.5\s`, `(?m)^setpoint\s+0\s+19\s`} {
		if n := len(regexp.MustCompile(re).FindAllString(stdout, -1)); n != 2 {
			t.Errorf("%s: %d get tables show it, want 2 (edge and cloud):\n%s", re, n, stdout)
		}
	}
}

// TestE2EReadmeSecureTour runs the README's TLS, device and user recipe as
// written, and checks what it claims: the user reads the device's reading
// over TLS and is refused the other site.
func TestE2EReadmeSecureTour(t *testing.T) {
	bin := e2eBinary(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("the recipe needs openssl (.ci/run installs it)")
	}
	script := readmeScript(t, "## Secure it")
	if !strings.HasPrefix(script, "make build\n") {
		t.Fatalf("the recipe does not start with make build:\n%s", script)
	}
	stdout, stderr, err := runScript(t, bash, bin, strings.TrimPrefix(script, "make build\n"), "4222", "4223")
	if err != nil {
		t.Fatalf("recipe: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	for _, re := range []string{`(?m)^you\s+user:\S+$`, `(?m)^scope\s+\S+$`, `pump 7`, `(?m)^flow\s+0\s+12\.5\s`, `(?m)^south plant: refused$`} {
		if !regexpMatch(re, stdout) {
			t.Errorf("recipe output does not match %s:\n%s", re, stdout)
		}
	}
	if strings.Contains(stdout, "south plant\"") || !strings.Contains(stderr, "permission denied") {
		t.Errorf("the user saw the other site:\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
}
