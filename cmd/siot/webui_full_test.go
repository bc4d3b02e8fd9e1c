//go:build !lean

package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestServeWebUI: siot serve serves the embedded UI on --http, beside
// the health endpoints, and the bundle is the one web/dist holds.
func TestServeWebUI(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	for path, want := range map[string]string{"/": "<title>siot</title>", "/app.js": "siot.user.", "/sw.js": "caches", "/healthz": "ok"} {
		resp, err := http.Get("http://" + srv.http + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s, %d bytes, want %q in it", path, resp.Status, len(body), want)
		}
	}
}
