package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"siot/transport"
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
