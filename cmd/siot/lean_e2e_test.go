package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// leanBinary builds siot with -tags lean, as make lean does but for its
// compiler flags, which change no behaviour and would compile every
// package again: with e2eBinary's flags otherwise, only package main is
// compiled, the rest comes from the build cache. The version is stamped
// as make release stamps it.
func leanBinary(t *testing.T, version string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "siot-lean")
	start := time.Now()
	out, err := exec.Command("go", "build", "-tags", "lean", "-ldflags", "-X main.stampedVersion="+version, "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -tags lean: %v\n%s", err, out)
	}
	t.Logf("built the lean binary in %v", time.Since(start).Round(time.Millisecond))
	// The lean build's point: nats-server is not linked (its bus is
	// transport/bus).
	mods, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil || !strings.Contains(string(mods), "github.com/nats-io/nats.go") {
		t.Fatalf("go version -m: %v\n%s", err, mods)
	}
	if strings.Contains(string(mods), "nats-server") {
		t.Fatalf("the lean binary links nats-server:\n%s", mods)
	}
	return bin
}

// runBin runs a client command of bin signed in as the administrator of
// the server --server names.
func runBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(childEnv(), "SIOT_CREDS="+credsFor(argValue(args, "--server")))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// TestLeanEdgeSyncsWithCloud: the lean build links no nats-server, says
// so and reports its stamped version; started as the edge of a provisioned device under a
// cloud of the full build, it links and reaches inSync, and its client
// commands write a point on the edge that the cloud then holds.
func TestLeanEdgeSyncsWithCloud(t *testing.T) {
	e2eBinary(t)
	const version = "v0.0.0-leantest"
	lean := leanBinary(t, version)

	var v struct {
		Version string
		Lean    bool
	}
	if out := runBin(t, lean, "version", "--json"); json.Unmarshal([]byte(out), &v) != nil || v.Version != version || !v.Lean {
		t.Fatalf("lean version --json: %q", out)
	}

	cloud := newProc(t, "cloud")
	cloud.start()
	creds := filepath.Join(t.TempDir(), "edge.creds")
	mustSiot(t, "", "device", "add", "--server", cloud.url, "--out", creds)
	edge := newProc(t, "edge", "--upstream", cloud.url, "--creds", creds)
	edge.bin = lean
	edge.start()
	if !strings.Contains(edge.all.String(), version) {
		t.Errorf("the edge's serving line does not carry the stamped version %s", version)
	}
	waitLinks(t, edge, cloud.url)

	node := strings.TrimSpace(runBin(t, lean, "node", "add", "--server", edge.url, "--parent", edge.id, "--type", "sensor"))
	runBin(t, lean, "set", node, "temp=21.5", "--server", edge.url)
	waitFor(t, "the cloud holds the lean edge's point", 20*time.Second, func() (bool, string) {
		out, _, err := siot("", "get", node, "--json", "--server", cloud.url)
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(out, `"value":21.5`), out
	})
	if st := runBin(t, lean, "status", "--server", edge.url); !strings.Contains(st, cloud.url) {
		t.Errorf("lean status does not show the link to %s:\n%s", cloud.url, st)
	}
}
