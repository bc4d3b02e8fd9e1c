package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
)

// warnings returns inst's log records at warn or error level, and any
// that says "malformed".
func warnings(inst *instance) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(inst.log.String()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct{ Level string }
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Level == "WARN" || rec.Level == "ERROR" ||
			strings.Contains(sc.Text(), "malformed") {
			out = append(out, sc.Text())
		}
	}
	return out
}

// A clean shutdown (what SIGTERM does) of either side of a link logs no
// warning or error on the other side, and no "malformed message": an edge
// that stops, its cloud that stops, a peer that stops.
func TestCleanShutdownLogsNoWarningOnTheOtherSide(t *testing.T) {
	inSync := func(inst *instance) func() bool {
		return func() bool {
			st := status(t, inst.nats)
			return len(st.Links) == 1 && st.Links[0].Connected && st.Links[0].InSync
		}
	}
	cloud := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--log-level", "debug")
	edgeData := t.TempDir()
	edge := serve(t, "--data", edgeData, "--listen", "127.0.0.1:0", "--http", "", "--upstream", cloud.nats)
	peer := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--log-level", "debug", "--peer", cloud.nats)
	waitUntil(t, "edge in sync", inSync(edge))
	waitUntil(t, "peer in sync", inSync(peer))
	mustCLI(t, sensorRecords("6ba7b810-9dad-11d1-80b4-00c04fd430c8", edge.id, 50), "import", "--server", edge.nats)

	// The edge stops: the cloud says nothing above info.
	if err := edge.stop(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the cloud sees the edge go", func() bool {
		l, ok := acceptedFrom(fullStatus(t, cloud.nats), fullStatus(t, peer.nats).Instance)
		return ok && l.Connected && len(logRecords(cloud, "link session ended")) == 1
	})
	// The peer stops: the cloud still says nothing above info.
	if err := peer.stop(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the cloud sees the peer go", func() bool { return len(logRecords(cloud, "link session ended")) == 2 })
	if bad := warnings(cloud); len(bad) > 0 {
		t.Fatalf("the cloud logged when its edge and its peer stopped:\n%s", strings.Join(bad, "\n"))
	}

	// The edge again, then the cloud stops: the edge says nothing above
	// info, also while it retries.
	edge = serve(t, "--data", edgeData, "--listen", "127.0.0.1:0", "--http", "", "--log-level", "debug", "--upstream", cloud.nats)
	waitUntil(t, "edge in sync", inSync(edge))
	if err := cloud.stop(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the edge retries", func() bool { return len(logRecords(edge, "link attempt failed")) > 0 })
	if got := logRecords(edge, "link closed by remote"); len(got) != 1 {
		t.Fatalf("link closed by remote: %v", got)
	}
	if bad := warnings(edge); len(bad) > 0 {
		t.Fatalf("the edge logged when its cloud stopped:\n%s", strings.Join(bad, "\n"))
	}
}
