package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The nats CLI of tools/natscli (natscli v0.5.0, pinned by that module's
// go.mod and go.sum, outside the main module), built once per test
// binary; natsBinDir is removed by TestMain.
var (
	natsOnce   sync.Once
	natsBin    string
	natsBinDir string
	natsErr    error
)

// natsCLI builds the nats CLI the README's JSON API recipe runs and
// returns its path. It fails the test when it cannot: the recipe is part
// of what the tests check, never skipped.
func natsCLI(t *testing.T) string {
	t.Helper()
	natsOnce.Do(func() {
		mod, err := filepath.Abs("../../tools/natscli")
		if err != nil {
			natsErr = err
			return
		}
		if natsBinDir, err = os.MkdirTemp("", "siot-natscli-"); err != nil {
			natsErr = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			natsErr = err
			return
		}
		bin := filepath.Join(natsBinDir, "nats")
		start := time.Now()
		cmd := exec.Command(goTool, "build", "-C", mod, "-o", bin, "github.com/nats-io/natscli/nats")
		// Its own module, as a fresh clone has it: the go.sum there, the
		// module proxy for what the cache lacks, no workspace.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			natsErr = fmt.Errorf("building the nats CLI in tools/natscli: %v\n%s", err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "e2e: built %s in %v\n", bin, time.Since(start).Round(time.Millisecond))
		natsBin = bin
	})
	if natsErr != nil {
		t.Fatal(natsErr)
	}
	return natsBin
}

// objectLines returns the lines of out that are JSON objects, decoded; it
// skips the others.
func objectLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("output line is not JSON: %v: %s", err, l)
		}
		objs = append(objs, m)
	}
	return objs
}

// TestE2EJSONAPIReadme runs README.md's JSON API recipe as written, with
// the real nats CLI against a real siot serve, and checks what it claims:
// the sets are applied, the get shows the node's records, the bad record
// is refused with an error object, and the watch loop sees each change
// once, in order, up to where it says it caught up. Then it restarts the
// server on the recipe's data and checks with siot export that the
// points are there, written by the bot.
func TestE2EJSONAPIReadme(t *testing.T) {
	bin := e2eBinary(t)
	natsPath := natsCLI(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("the recipe needs bash")
	}
	for _, tool := range []string{"sed", "grep", "mktemp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the recipe needs %s", tool)
		}
	}
	script := readmeScript(t, "## From any language: the JSON API on NATS")
	if !strings.HasPrefix(script, "make build\n") {
		t.Fatalf("the recipe does not start with make build:\n%s", script)
	}
	tmp := t.TempDir()
	stdout, stderr, err := runScriptIn(t, bash, bin, filepath.Dir(natsPath), tmp, strings.TrimPrefix(script, "make build\n"), "4222")
	if testing.Verbose() {
		t.Logf("recipe output:\n%s", stdout)
	}
	if err != nil {
		t.Fatalf("recipe: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}

	var status, adminStatus map[string]any
	var sets []string
	var get, refusal map[string]any
	var watches []map[string]any
	for _, o := range objectLines(t, stdout) {
		switch {
		case o["you"] == "admin":
			adminStatus = o
		case o["you"] != nil:
			status = o
		case o["applied"] != nil:
			b, _ := json.Marshal(o)
			sets = append(sets, string(b))
		case o["known"] != nil:
			get = o
		case o["error"] != nil:
			refusal = o
		case o["last"] != nil:
			watches = append(watches, o)
		default:
			t.Errorf("unexpected reply %v", o)
		}
	}
	if status == nil || adminStatus == nil || get == nil || refusal == nil || len(watches) == 0 {
		t.Fatalf("the recipe does not print every reply:\n%s", stdout)
	}
	bot, ok := strings.CutPrefix(status["you"].(string), "user:")
	if !ok || status["id"] == "" || fmt.Sprint(status["scope"]) != fmt.Sprintf("[%s]", status["id"]) {
		t.Errorf("status %v: want the bot, a user whose scope is the root", status)
	}
	if want := []string{`{"applied":1,"stale":0}`, `{"applied":2,"stale":0}`}; strings.Join(sets, " ") != strings.Join(want, " ") {
		t.Errorf("sets answered %q, want %q", sets, want)
	}
	if msg := refusal["error"].(string); !strings.Contains(msg, "point 0") || !strings.Contains(msg, "value") {
		t.Errorf("the bad set: %q, want an error naming point 0 and its value", msg)
	}

	// The get: the sensor's records, temp at its last value, the unit a
	// text point shown without value.
	if get["known"] != true || get["more"] != false || get["next"] != "" {
		t.Errorf("get: %v", get)
	}
	shown := map[string]map[string]any{}
	sensor := ""
	for _, r := range get["records"].([]any) {
		rec := r.(map[string]any)
		shown[rec["type"].(string)] = rec
		if rec["type"] == "temp" {
			sensor = rec["node"].(string)
		}
	}
	if shown["temp"]["value"] != 22.0 || shown["temp"]["origin"] != bot || shown["unit"]["text"] != "°C" ||
		shown["unit"]["value"] != nil || shown["nodeType"]["text"] != "sensor" || shown["edge"]["parent"] != status["id"] {
		t.Errorf("get records: %v", get["records"])
	}

	// The watch loop: each change once, in order, temp at its winner.
	var last uint64
	seen := map[string]int{}
	next := ""
	for _, w := range watches {
		for _, r := range w["records"].([]any) {
			rec := r.(map[string]any)
			seq, err := strconv.ParseUint(rec["seq"].(string), 10, 64)
			if err != nil || seq <= last {
				t.Errorf("change %v after change %d", rec, last)
			}
			last = seq
			if rec["node"] == sensor {
				seen[rec["type"].(string)]++
				if rec["type"] == "temp" && rec["value"] != 22.0 {
					t.Errorf("watch: temp %v, want its winner 22", rec["value"])
				}
			}
		}
		next = w["next"].(string)
	}
	for _, typ := range []string{"edge", "nodeType", "description", "temp", "unit"} {
		if seen[typ] != 1 {
			t.Errorf("the watch reported the sensor's %s %d times, want once", typ, seen[typ])
		}
	}
	if m := regexp.MustCompile(`(?m)^caught up at change (\d+)$`).FindStringSubmatch(stdout); m == nil || m[1] != next {
		t.Errorf("the loop ends with %q, want it caught up at the last next %s", m, next)
	}

	// The server's own view, after a restart on the recipe's data.
	creds, err := filepath.Glob(filepath.Join(tmp, "*", "admin.creds"))
	if err != nil || len(creds) != 1 {
		t.Fatalf("the recipe's data directory: %v %v", creds, err)
	}
	inst := serve(t, "--data", filepath.Dir(creds[0]), "--listen", "127.0.0.1:0", "--http", "")
	export := mustCLI(t, "", "export", "--root", sensor, "--server", inst.nats)
	points := map[string]map[string]any{}
	for _, o := range objectLines(t, export) {
		points[o["type"].(string)] = o
	}
	if p := points["temp"]; p == nil || p["value"] != 22.0 || p["origin"] != bot || p["hlc"] != shown["temp"]["hlc"] {
		t.Errorf("the server's temp: %v, want 22 written by the bot as the get showed it (%v)", p, shown["temp"])
	}
	if p := points["unit"]; p == nil || p["text"] != "°C" || p["origin"] != bot {
		t.Errorf("the server's unit: %v", p)
	}
}
