//go:build lean

package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestServeWebsocketLean: the lean build's /nats answers 501, saying why.
func TestServeWebsocketLean(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.http+"/nats", nil)
	req.Header = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented || !strings.Contains(string(body), "not in the lean build") {
		t.Errorf("/nats: %s %q, want 501 saying it is not in the lean build", resp.Status, body)
	}
}

// TestServeWebUILean: the lean build leaves the web UI out and says so.
func TestServeWebUILean(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	resp, err := http.Get("http://" + srv.http + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "not in the lean build") {
		t.Errorf("GET /: %s %q, want 404 saying the UI is not in the lean build", resp.Status, body)
	}
}
