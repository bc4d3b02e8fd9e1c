package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// readyz returns the status code and body of GET /readyz.
func readyz(t *testing.T, inst *instance) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + inst.http + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// While free disk is below the floor, /readyz says not ready and why, and
// the refused writes are logged once, with their count.
func TestReadyzNotReadyWhileWritesRefused(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--min-free", "1000000000000000000")
	code, body := readyz(t, srv)
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "writes refused: ") ||
		!strings.Contains(body, "floor 1000000000000000000") || strings.Count(body, "\n") != 1 {
		t.Fatalf("/readyz below the disk floor: %d %q", code, body)
	}
	const sensor = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	for range 2 {
		if _, _, err := cli(t, sensorRecords(sensor, srv.id, 4), "import", "--server", srv.nats); err == nil {
			t.Fatal("import below the disk floor succeeded")
		}
	}
	var lines []string
	for _, rec := range strings.Split(srv.log.String(), "\n") {
		if strings.Contains(rec, "refused ") && strings.Contains(rec, "free disk space below the configured floor") {
			lines = append(lines, rec)
		}
	}
	// The first refusal is logged at once; the second, within the
	// minute, waits for the next line.
	if len(lines) != 1 || !strings.Contains(lines[0], `"msg":"refused 1 writes (5 points): store: free disk space below the configured floor: `) ||
		!strings.Contains(lines[0], `"level":"WARN"`) {
		t.Fatalf("log lines of the refused writes: %q", lines)
	}
}

// A configured peer refused for another root makes /readyz say not ready,
// naming the peer.
func TestReadyzNotReadyWhilePeerRefusedForRoot(t *testing.T) {
	a := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	bData := t.TempDir()
	b := serve(t, "--data", bData, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	if code, body := readyz(t, b); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz of a standalone server: %d %q", code, body)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	b = serve(t, "--data", bData, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--peer", a.nats)
	var code int
	var body string
	waitUntil(t, "/readyz not ready", func() bool {
		code, body = readyz(t, b)
		return code == http.StatusServiceUnavailable
	})
	if !strings.HasPrefix(body, "peer "+a.nats+" refused: ") || !strings.Contains(body, "different roots") || strings.Count(body, "\n") != 1 {
		t.Fatalf("/readyz with a peer of another root: %d %q", code, body)
	}
}
