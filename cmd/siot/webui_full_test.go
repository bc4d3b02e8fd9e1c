//go:build !lean

package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestServeWebUI: siot serve serves the embedded UI on --http, beside
// the health endpoints, and the bundle is the one web/dist holds.
func TestServeWebUI(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	for path, want := range map[string]string{"/": "<title>siot</title>", "/app.js": "siot.user.", "/sw.js": "/nats-", "/healthz": "ok"} {
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
	// Every file the service worker keeps is served: the chunks too.
	resp, err := http.Get("http://" + srv.http + "/sw.js")
	if err != nil {
		t.Fatal(err)
	}
	sw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	files := regexp.MustCompile(`"(/[a-zA-Z0-9._-]*)"`).FindAllStringSubmatch(string(sw), -1)
	if len(files) < 4 {
		t.Fatalf("sw.js keeps %d files: %s", len(files), sw)
	}
	for _, f := range files {
		resp, err := http.Get("http://" + srv.http + f[1])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s (kept by sw.js): %s", f[1], resp.Status)
		}
	}
}
