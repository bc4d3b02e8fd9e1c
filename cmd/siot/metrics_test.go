package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/siot-io/siot/replica"
)

// parseMetrics parses text-format metrics with Prometheus's own parser,
// failing the test on any error.
func parseMetrics(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// scrape GETs /metrics from addr and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != metricsContentType {
		t.Fatalf("GET /metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return parseMetrics(t, resp.Body)
}

// metricValue returns the value of the sample of family name whose labels
// include want (name, value pairs), and whether there is one.
func metricValue(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if have[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// sensorRecords returns import records of a sensor node under parent: its
// edge and n readings of "temp" with keys 0 to n-1.
func sensorRecords(sensor, parent string, n int) string {
	var in strings.Builder
	fmt.Fprintf(&in, "{\"node\":%q,\"parent\":%q,\"type\":\"edge\"}\n", sensor, parent)
	for i := range n {
		fmt.Fprintf(&in, "{\"node\":%q,\"type\":\"temp\",\"key\":\"%d\",\"value\":%d}\n", sensor, i, i)
	}
	return in.String()
}

func TestMetricsWriterEscapesAndParses(t *testing.T) {
	odd := "nats://h:1/\"quoted\"\\back\nline"
	m := replica.Metrics{
		Applied:        []replica.Count{{Label: "local", Value: 3}},
		RejectedPoints: []replica.Count{{Label: "clock_skew", Value: 1}},
		RepairRounds:   []replica.Count{{Label: "equal", Value: 2}},
		Links: []replica.LinkMetrics{
			{URL: odd, Role: "edge", Remote: "r1", Connected: true, Pending: 7, BytesSent: 1 << 40},
			{Role: "peer", Remote: "r2", InSync: true},
		},
		LastSeq: 42, DiskBytes: 1234,
	}
	var w promWriter
	writeMetrics(&w, m, processInfo{start: time.Unix(1700000000, 500e6), version: "v1 \"x\""})
	fams := parseMetrics(t, bytes.NewReader(w.b.Bytes()))
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"siot_points_applied_total", []string{"path", "local"}, 3},
		{"siot_points_rejected_total", []string{"reason", "clock_skew"}, 1},
		{"siot_repair_rounds_total", []string{"result", "equal"}, 2},
		{"siot_link_connected", []string{"url", odd, "role", "edge", "remote", "r1"}, 1},
		{"siot_link_pending_changes", []string{"url", odd}, 7},
		{"siot_link_sent_bytes_total", []string{"url", odd}, 1 << 40},
		{"siot_link_in_sync", []string{"url", "", "remote", "r2"}, 1},
		{"siot_store_last_change", nil, 42},
		{"siot_store_disk_bytes", nil, 1234},
		{"siot_build_info", []string{"version", "v1 \"x\""}, 1},
		{"process_start_time_seconds", nil, 1700000000.5},
	}
	for _, c := range checks {
		if v, ok := metricValue(fams, c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%q = %v, %v; want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	// Every family has its help and type; the output is stable.
	for name, f := range fams {
		if f.GetHelp() == "" || f.Type == nil {
			t.Errorf("%s: no HELP or TYPE", name)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no go_goroutines")
	}
}

func TestMetricsEndpointCountsWritesLinksAndRejections(t *testing.T) {
	cloud := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	edge := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--upstream", cloud.nats)

	get := func(inst *instance, name string, labels ...string) float64 {
		v, _ := metricValue(scrape(t, inst.http), name, labels...)
		return v
	}
	waitUntil(t, "the edge's link in sync", func() bool {
		return get(edge, "siot_link_in_sync", "url", cloud.nats, "role", "edge") == 1
	})
	fams := scrape(t, edge.http)
	if v, _ := metricValue(fams, "siot_link_connected", "url", cloud.nats); v != 1 {
		t.Fatalf("edge link connected = %v", v)
	}
	if v, _ := metricValue(fams, "siot_repair_rounds_total", "result", "equal"); v < 1 {
		t.Fatalf("edge repair rounds equal = %v", v)
	}
	if v, _ := metricValue(fams, "siot_link_sent_bytes_total", "url", cloud.nats); v <= 0 {
		t.Fatalf("edge link sent bytes = %v", v)
	}
	localBefore, _ := metricValue(fams, "siot_points_applied_total", "path", "local")
	lastBefore, _ := metricValue(fams, "siot_store_last_change")
	pushBefore := get(cloud, "siot_points_applied_total", "path", "push")
	if v := get(cloud, "siot_link_connected", "url", "", "role", "edge"); v != 1 {
		t.Fatalf("cloud's accepted link connected = %v", v)
	}

	// Ten writes on the edge: applied locally, pushed to the cloud.
	const sensor = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	mustCLI(t, sensorRecords(sensor, edge.id, 9), "import", "--server", edge.nats)
	fams = scrape(t, edge.http)
	if v, _ := metricValue(fams, "siot_points_applied_total", "path", "local"); v != localBefore+10 {
		t.Fatalf("edge applied local = %v, want %v", v, localBefore+10)
	}
	if v, _ := metricValue(fams, "siot_store_last_change"); v != lastBefore+10 {
		t.Fatalf("edge last change = %v, want %v", v, lastBefore+10)
	}
	waitUntil(t, "the cloud to apply the pushed points", func() bool {
		return get(cloud, "siot_points_applied_total", "path", "push") >= pushBefore+10
	})

	// A write stamped an hour ahead is refused for its clock, and counted.
	future := (uint64(time.Now().Add(time.Hour).UnixMilli()) << 16)
	bad := fmt.Sprintf("{\"node\":%q,\"type\":\"temp\",\"value\":1,\"hlc\":\"%d\"}\n", sensor, future)
	if _, _, err := cli(t, bad, "import", "--server", edge.nats); err == nil {
		t.Fatal("import of a far-future hlc succeeded")
	}
	fams = scrape(t, edge.http)
	if v, _ := metricValue(fams, "siot_writes_rejected_total", "reason", "clock_skew"); v != 1 {
		t.Fatalf("writes rejected for clock skew = %v", v)
	}
	if v, _ := metricValue(fams, "siot_points_rejected_total", "reason", "clock_skew"); v != 1 {
		t.Fatalf("points rejected for clock skew = %v", v)
	}
	if v, _ := metricValue(fams, "siot_points_applied_total", "path", "local"); v != localBefore+10 {
		t.Fatalf("edge applied local after the refusal = %v", v)
	}
}
