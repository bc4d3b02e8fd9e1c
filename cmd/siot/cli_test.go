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
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil || v["version"] == "" || v["go"] == "" {
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
	if _, _, err := run(t, "version", "--nope"); !errors.As(err, &ue) {
		t.Fatalf("unknown flag: %v", err)
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
