package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// jsonLines checks that out is one or more lines, each a JSON object, and
// returns the first.
func jsonLines(t *testing.T, what, out string) map[string]any {
	t.Helper()
	var first map[string]any
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if out == "" || !strings.HasSuffix(out, "\n") {
		t.Errorf("%s: output %q is not JSON lines", what, out)
		return nil
	}
	for i, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Errorf("%s: line %d is not a JSON object: %v: %q", what, i+1, err, l)
			return nil
		}
		if i == 0 {
			first = v
		}
	}
	return first
}

// Every command that prints takes --json and prints JSON with it; the
// exceptions say why. The table covers every command.
func TestEveryCommandPrintsJSON(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	dir := t.TempDir()
	s := []string{"--server", srv.nats, "--json"}
	exempt := map[string]string{
		"serve":  "it logs; --log-format json makes the log JSON",
		"export": "its output is JSON Lines always",
	}
	covered := map[string]bool{}
	// runJSON runs a command with --json and returns its first line.
	runJSON := func(name, stdin string, args ...string) map[string]any {
		t.Helper()
		covered[name] = true
		out, errOut, err := cli(t, stdin, append(append(strings.Fields(name), args...), s...)...)
		if err != nil {
			t.Fatalf("siot %s --json: %v\n%s", name, err, errOut)
		}
		return jsonLines(t, "siot "+name+" --json", out)
	}
	str := func(m map[string]any, k string) string {
		v, _ := m[k].(string)
		if v == "" {
			t.Fatalf("no %q in %v", k, m)
		}
		return v
	}
	runJSON("status", "")
	a := str(runJSON("node add", "", "--type", "site"), "node")
	b := str(runJSON("node add", "", "--type", "sensor"), "node")
	runJSON("node ls", "")
	runJSON("node mv", "", b, a)
	runJSON("set", "", b, "temp=21.5", "mode=auto")
	runJSON("get", "", b)
	runJSON("history", "", b, "temp")
	str(runJSON("rule add", "", "--parent", a, "--desc", "hot", "--if", "temp > 30"), "id")
	runJSON("rule ls", "")
	runJSON("node rm", "", b)
	runJSON("import", `{"node":"`+a+`","type":"temp","value":1}`+"\n")
	dev := str(runJSON("device add", "", "--out", filepath.Join(dir, "dev.creds")), "node")
	runJSON("device rm", "", dev)
	user := str(runJSON("user add", "secret-pass\nsecret-pass\n", "--parent", a, "--email", "ann@example.com"), "node")
	if got := str(runJSON("login", "secret-pass\n", "--email", "ann@example.com", "--out", filepath.Join(dir, "ann.creds")), "user"); got != user {
		t.Errorf("login --json: user %s, want %s", got, user)
	}
	runJSON("user rm", "", user)
	key := str(runJSON("peer add", "", "--out", filepath.Join(dir, "peer.creds")), "key")
	runJSON("peer rm", "", key)
	covered["version"] = true
	if out := mustCLI(t, "", "version", "--json"); jsonLines(t, "siot version --json", out) == nil {
		t.Errorf("siot version --json: %q", out)
	}

	// watch runs until interrupted: its lines so far.
	ctx, cancel := context.WithCancel(context.Background())
	out, wait := lockedRun(ctx, "watch", "--after", "0", "--json", "--server", srv.nats)
	covered["watch"] = true
	waitUntil(t, "watch --json prints", func() bool { return strings.Count(out.String(), "\n") >= 3 })
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("watch: %v", err)
	}
	jsonLines(t, "siot watch --json", out.String())

	// export: JSON Lines without a flag.
	jsonLines(t, "siot export", mustCLI(t, "", "export", "--server", srv.nats))
	// verify: offline, on a stopped store's directory (no --server).
	covered["verify"] = true
	jsonLines(t, "siot verify --json", mustCLI(t, "", "verify", "--data", verifyFixture(t, 10), "--json"))
	for _, name := range commandNames {
		fs := newFlagSet(name, (&Main{Getenv: func(string) string { return "" }}).command(name))
		_, isExempt := exempt[name]
		switch {
		case isExempt && fs.Lookup("json") != nil:
			t.Errorf("siot %s has --json: take it off the exceptions", name)
		case !isExempt && fs.Lookup("json") == nil:
			t.Errorf("siot %s prints but has no --json", name)
		case !isExempt && !covered[name]:
			t.Errorf("siot %s --json is not tested here", name)
		}
	}
}
