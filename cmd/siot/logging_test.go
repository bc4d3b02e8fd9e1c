package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/transport"
)

// logRecords returns the JSON log records of inst with message msg.
func logRecords(inst *instance, msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(inst.log.String()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// A link that cannot connect warns once, not at every retry; when it
// comes up it says how long it was down, and the backlog it then sends is
// summed up in one line.
func TestLinkLogsOnceWithFigures(t *testing.T) {
	cloudAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// The cloud is not up yet: its administrator credentials are made
	// ahead, in its data directory, where serve takes them.
	cloudData := t.TempDir()
	admin, err := transport.NewKeyCreds(transport.KindAdmin, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteCreds(filepath.Join(cloudData, "admin.creds"), admin, false); err != nil {
		t.Fatal(err)
	}
	registerCreds("nats://"+cloudAddr, cloudData)
	edge := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--log-level", "debug",
		"--upstream", "nats://"+cloudAddr)
	waitUntil(t, "three failed attempts", func() bool { return len(logRecords(edge, "link attempt failed")) >= 2 })
	if n := len(logRecords(edge, "link cannot connect")); n != 1 {
		t.Fatalf("%d warnings for an unreachable upstream, want 1", n)
	}
	mustCLI(t, sensorRecords("6ba7b810-9dad-11d1-80b4-00c04fd430c8", edge.id, 99), "import", "--server", edge.nats)

	serve(t, "--data", cloudData, "--listen", cloudAddr, "--http", "")
	waitUntil(t, "the backlog sent", func() bool { return len(logRecords(edge, "link caught up")) > 0 })
	up := logRecords(edge, "link up")
	if len(up) != 1 || up[0]["down_for"] == nil || up[0]["attempts"].(float64) < 2 {
		t.Fatalf("link up: %v", up)
	}
	caught := logRecords(edge, "link caught up")[0]
	if caught["level"] != "INFO" || caught["points"].(float64) < 100 || caught["bytes"].(float64) <= 0 {
		t.Fatalf("link caught up: %v", caught)
	}
	for _, rec := range logRecords(edge, "points rejected") {
		t.Errorf("unexpected: %v", rec)
	}
}

// JSON logs write durations as seconds, a number with the key unchanged;
// text logs as slog writes them ("1.5s").
func TestJSONLogDurationsInSeconds(t *testing.T) {
	var buf syncBuffer
	log, err := newLogger(&buf, slog.LevelInfo, "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("link up", "down_for", 1500*time.Millisecond, "attempts", 3, slog.Group("g", "took", 250*time.Microsecond))
	var rec map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["down_for"] != 1.5 || rec["attempts"] != 3.0 || rec["g"].(map[string]any)["took"] != 0.00025 {
		t.Fatalf("JSON record %s", buf.String())
	}
	var text syncBuffer
	if log, err = newLogger(&text, slog.LevelInfo, "text"); err != nil {
		t.Fatal(err)
	}
	log.Info("link up", "down_for", 1500*time.Millisecond)
	if !strings.Contains(text.String(), "down_for=1.5s") {
		t.Fatalf("text record %s", text.String())
	}
}

// The "siot serving" line carries the version siot version prints.
func TestServingLineHasTheVersion(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	out, _, err := run(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	recs := logRecords(srv, "siot serving")
	if len(recs) != 1 || "siot "+fmt.Sprint(recs[0]["version"])+"\n" != out {
		t.Fatalf("serving line %v, siot version %q", recs, out)
	}
}
