package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: testGetenv(args)}
	err := m.Run(context.Background(), args)
	return out.String(), errOut.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "siot ") {
		t.Fatalf("version: %q %v", out, err)
	}
	out, _, err = run(t, "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Version, Go string }
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Version == "" || v.Go == "" {
		t.Fatalf("version --json: %q %v", out, err)
	}
}

func TestUsageErrors(t *testing.T) {
	var ue *UsageError
	if _, _, err := run(t); !errors.As(err, &ue) {
		t.Fatalf("no command: %v", err)
	}
	if _, errOut, err := run(t, "frobnicate"); !errors.As(err, &ue) || !strings.Contains(errOut, "Commands:") {
		t.Fatalf("unknown command: %v", err)
	}
	if _, _, err := run(t, "version", "--nope"); !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "version: flag provided but not defined") {
		t.Fatalf("unknown flag: %v", err)
	}
	if _, _, err := run(t, "node", "ls", "--depth", "x"); !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "node ls: invalid value") {
		t.Fatalf("bad flag value: %v", err)
	}
	if _, _, err := run(t, "version", "extra"); !errors.As(err, &ue) {
		t.Fatalf("extra argument: %v", err)
	}
}

// TestHelpListsRealFlags keeps the help text honest: every flag the help
// mentions exists, and every command it lists runs.
func TestHelpListsRealFlags(t *testing.T) {
	out, _, err := run(t, "--help")
	if err != nil || !strings.Contains(out, "version") {
		t.Fatalf("--help: %q %v", out, err)
	}
	help, _, err := run(t, "version", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"--json"} {
		if !strings.Contains(help, strings.TrimPrefix(f, "-")) {
			t.Errorf("version --help does not mention %s", f)
		}
		if _, _, err := run(t, "version", f); err != nil {
			t.Errorf("documented flag %s fails: %v", f, err)
		}
	}
}

// "siot --version" is "siot version"; "siot help CMD [SUB]" is "siot CMD
// [SUB] --help".
func TestVersionFlagAndHelpCommand(t *testing.T) {
	want, _, err := run(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := run(t, "--version"); err != nil || got != want {
		t.Fatalf("--version: %q %v, want %q", got, err, want)
	}
	for _, name := range commandNames {
		want, _, err := run(t, append(strings.Fields(name), "--help")...)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := run(t, append([]string{"help"}, strings.Fields(name)...)...)
		if err != nil || got != want {
			t.Errorf("siot help %s: %v\n%s\nwant\n%s", name, err, got, want)
		}
	}
	want, _, _ = run(t, "node", "--help")
	if got, _, err := run(t, "help", "node"); err != nil || got != want {
		t.Errorf("siot help node: %v\n%s", err, got)
	}
	var ue *UsageError
	if _, _, err := run(t, "help", "frobnicate"); !errors.As(err, &ue) {
		t.Errorf("siot help frobnicate: %v", err)
	}
}

// Client flags and --json may come before the command; an unknown flag
// there, or one the command does not have, is a usage error.
func TestGlobalFlagsBeforeTheCommand(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	creds := credsFor(srv.nats)
	out, _, err := run(t, "--server", srv.nats, "--creds", creds, "--json", "--timeout", "10s", "status")
	var st map[string]any
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st["id"] != srv.id {
		t.Fatalf("siot --server X --creds F --json status: %v %q", err, out)
	}
	out, _, err = run(t, "--server="+srv.nats, "--creds="+creds, "--json", "node", "ls")
	if err != nil || !strings.HasPrefix(out, "{") {
		t.Fatalf("siot --server=X --json node ls: %v %q", err, out)
	}
	// The command's own flag, after, wins.
	if _, _, err := run(t, "--server", "nats://127.0.0.1:1", "--creds", creds, "status", "--server", srv.nats); err != nil {
		t.Fatalf("the command's own --server: %v", err)
	}
	out, _, err = run(t, "--json=true", "version")
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("siot --json version: %v %q", err, out)
	}
	var ue *UsageError
	for _, args := range [][]string{
		{"--nope", "status"},
		{"--server"},
		{"--json", "serve"},
		{"--creds", creds, "serve"}, // serve's --creds is its links'
		{"--creds", creds, "login", "--email", "a@example.com"},
		{"--server", srv.nats, "version"},
		{"-x"},
	} {
		if _, _, err := run(t, args...); !errors.As(err, &ue) {
			t.Errorf("siot %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
}
