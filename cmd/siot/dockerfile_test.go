package main

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
)

// dockerfile is a Dockerfile's instructions: continuation lines joined,
// comments dropped, each as its keyword (upper case) and the rest.
type dockerInstr struct{ op, args string }

func readDockerfile(t *testing.T, path string) []dockerInstr {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerInstr
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		cur += trimmed
		op, args, _ := strings.Cut(cur, " ")
		out = append(out, dockerInstr{strings.ToUpper(op), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// makeVar returns the value of a variable the Makefile sets with := or ?=.
func makeVar(t *testing.T, makefile, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*[:?]?=\s*(.*)$`).FindStringSubmatch(makefile)
	if m == nil {
		t.Fatalf("Makefile sets no %s", name)
	}
	return strings.TrimSpace(m[1])
}

// TestDockerfile checks the invariants of ../../Dockerfile that need no
// Docker engine: the final stage runs as a user other than root, keeps
// its data in the volume /data that serve's --data names, builds a static
// binary with the Makefile's flags, and its ENTRYPOINT and CMD run serve
// with flags serve has, TLS or --insecure for its listener that is not
// loopback.
func TestDockerfile(t *testing.T) {
	instrs := readDockerfile(t, "../../Dockerfile")
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}

	// The final stage: from the last FROM on.
	last := -1
	for i, in := range instrs {
		if in.op == "FROM" {
			last = i
		}
	}
	if last < 1 {
		t.Fatalf("want a multi-stage build, FROM at %d", last)
	}
	final := instrs[last:]

	var user, volume string
	var entry, cmd []string
	for _, in := range final {
		switch in.op {
		case "USER":
			user = in.args
		case "VOLUME":
			volume = in.args
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entry); err != nil {
				t.Fatalf("ENTRYPOINT is not an exec-form JSON array: %v", err)
			}
		case "CMD":
			if err := json.Unmarshal([]byte(in.args), &cmd); err != nil {
				t.Fatalf("CMD is not an exec-form JSON array: %v", err)
			}
		case "RUN":
			t.Errorf("the final stage runs %q: it has no shell", in.args)
		}
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" || strings.Trim(name, "0") == "" {
		t.Errorf("final stage USER %q: want a user other than root", user)
	}
	if volume != "/data" && volume != `["/data"]` {
		t.Errorf("VOLUME %q, want /data", volume)
	}

	// The build: the Makefile's flags, static.
	var build string
	for _, in := range instrs[:last] {
		if in.op == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	if build == "" {
		t.Fatal("no RUN go build in the build stage")
	}
	if !strings.Contains(build, "CGO_ENABLED=0 go build") {
		t.Errorf("the build is not static (CGO_ENABLED=0): %s", build)
	}
	for _, f := range strings.Fields(makeVar(t, string(mk), "BUILDFLAGS")) {
		if !strings.Contains(build, " "+f+" ") {
			t.Errorf("the build lacks the Makefile's %s: %s", f, build)
		}
	}
	ldflags := strings.ReplaceAll(makeVar(t, string(mk), "LDFLAGS"), "$(VERSION)", "${VERSION}")
	if !strings.Contains(build, `-ldflags "`+ldflags+`"`) {
		t.Errorf("the build's -ldflags are not the Makefile's %q: %s", ldflags, build)
	}

	// ENTRYPOINT + CMD: serve with flags it has.
	if len(entry) < 2 || entry[1] != "serve" {
		t.Fatalf("ENTRYPOINT %q does not run serve", entry)
	}
	help, _, err := run(t, "serve", "--help")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	(&serveCmd{m: &Main{}}).flags(fs)
	args := append(append([]string{}, entry[2:]...), cmd...)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("serve does not take %q: %v", args, err)
	}
	if fs.NArg() != 0 {
		t.Errorf("serve takes no arguments, the image gives %q", fs.Args())
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--") && !regexp.MustCompile(`(?m)^\s+-`+regexp.QuoteMeta(strings.TrimPrefix(a, "--"))+`\b`).MatchString(help) {
			t.Errorf("siot serve --help does not list %s", a)
		}
	}
	get := func(name string) string { return fs.Lookup(name).Value.String() }
	if get("data") != "/data" {
		t.Errorf("--data %q, want the volume /data", get("data"))
	}
	if !strings.HasPrefix(get("listen"), "0.0.0.0:") {
		t.Errorf("--listen %q: want every interface", get("listen"))
	}
	if get("insecure") != "true" && (get("tls-cert") == "" || get("tls-key") == "") {
		t.Errorf("a listener on %s needs --tls-cert and --tls-key or --insecure: %q", get("listen"), args)
	}
}
