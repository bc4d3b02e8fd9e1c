package main

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

func uiFS() fstest.MapFS {
	return fstest.MapFS{
		"index.html": {Data: []byte("<!doctype html><title>siot</title>" + strings.Repeat(" ", 200))},
		"app.js":     {Data: []byte(strings.Repeat("console.log('siot');\n", 100))},
		"app.css":    {Data: []byte("body{}")},
		"sw.js":      {Data: []byte("self.addEventListener('fetch', () => {});")},
		"nats-X1.js": {Data: []byte(strings.Repeat("export const x = 1;\n", 50))},
		"notes.txt":  {Data: []byte("not served")},
	}
}

// TestUIHandler: the UI's files with their types, gzip when accepted and
// smaller, 304 on a matching ETag, 404 for anything else, 405 for other
// methods, and the security headers on every answer.
func TestUIHandler(t *testing.T) {
	h, err := uiHandler(uiFS())
	if err != nil {
		t.Fatal(err)
	}
	get := func(method, path string, hdr map[string]string) *http.Response {
		t.Helper()
		req := httptest.NewRequest(method, path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Result()
	}
	for path, ctype := range map[string]string{"/": "text/html", "/index.html": "text/html", "/app.js": "javascript", "/app.css": "text/css", "/sw.js": "javascript", "/nats-X1.js": "javascript"} {
		r := get(http.MethodGet, path, nil)
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode != 200 || !strings.Contains(r.Header.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Errorf("GET %s: %s %q, %d bytes", path, r.Status, r.Header.Get("Content-Type"), len(body))
		}
		for _, k := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "ETag"} {
			if r.Header.Get(k) == "" {
				t.Errorf("GET %s: no %s", path, k)
			}
		}
		if r.Header.Get("Content-Encoding") != "" {
			t.Errorf("GET %s without Accept-Encoding: %s", path, r.Header.Get("Content-Encoding"))
		}
	}
	r := get(http.MethodGet, "/app.js", map[string]string{"Accept-Encoding": "br, gzip"})
	zr, err := gzip.NewReader(r.Body)
	if r.Header.Get("Content-Encoding") != "gzip" || err != nil {
		t.Fatalf("gzip: %q %v", r.Header.Get("Content-Encoding"), err)
	}
	js, _ := io.ReadAll(zr)
	if !bytes.Equal(js, uiFS()["app.js"].Data) {
		t.Error("gzipped app.js differs from app.js")
	}
	if r := get(http.MethodGet, "/app.css", map[string]string{"Accept-Encoding": "gzip"}); r.Header.Get("Content-Encoding") != "" {
		t.Error("app.css gzipped though gzip makes it bigger")
	}
	if r := get(http.MethodGet, "/app.js", map[string]string{"Accept-Encoding": "gzip;q=0"}); r.Header.Get("Content-Encoding") != "" {
		t.Error("gzip sent to a client that refused it (q=0)")
	}
	etag := get(http.MethodGet, "/", nil).Header.Get("ETag")
	if r := get(http.MethodGet, "/", map[string]string{"If-None-Match": etag}); r.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match %s: %s, want 304", etag, r.Status)
	}
	if r := get(http.MethodGet, "/", map[string]string{"If-None-Match": `"other"`}); r.StatusCode != 200 {
		t.Errorf("another ETag: %s, want 200", r.Status)
	}
	for _, p := range []string{"/nope", "/app.js/", "/../go.mod", "/dist/app.js", "/index.htm", "/notes.txt"} {
		if r := get(http.MethodGet, p, nil); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", p, r.Status)
		}
	}
	if r := get(http.MethodPost, "/", nil); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %s, want 405", r.Status)
	}
	if r := get(http.MethodHead, "/app.js", nil); r.StatusCode != 200 {
		t.Errorf("HEAD /app.js: %s", r.Status)
	}

	// A build without the UI's files refuses to start, naming what is missing.
	broken := uiFS()
	delete(broken, "sw.js")
	if _, err := uiHandler(broken); err == nil || !strings.Contains(err.Error(), "sw.js") {
		t.Errorf("UI without sw.js: %v", err)
	}
	// The lean build has none: 404, saying why.
	lean, err := uiHandler(nil)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	lean.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "not in the lean build") {
		t.Errorf("lean GET /: %d %q", w.Code, w.Body.String())
	}
}

// TestServeHTTPTLS: --http-tls serves --http over TLS with the listener's
// certificate; without --tls-cert it is a usage error.
func TestServeHTTPTLS(t *testing.T) {
	ca, cert, key := testTLS(t)
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-tls", "--tls-cert", cert, "--tls-key", key)
	pool := x509.NewCertPool()
	b, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(b)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get("https://" + srv.http + "/healthz")
	if err != nil {
		t.Fatalf("https /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("https /healthz: %s", resp.Status)
	}
	if resp, err := http.Get("http://" + srv.http + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Error("plain HTTP answered on an --http-tls address")
	}
	if _, stderr, err := cli(t, "", "serve", "--data", t.TempDir(), "--http-tls"); err == nil || !strings.Contains(err.Error()+stderr, "--http-tls needs --tls-cert") {
		t.Errorf("--http-tls without a certificate: %v %q", err, stderr)
	}
}

// TestClearWebsocketRefused: /nats is refused in clear on an address other
// than loopback, unless --http-tls or --insecure.
func TestClearWebsocketRefused(t *testing.T) {
	for _, c := range []struct {
		addr          string
		tls, insecure bool
		want          bool
	}{
		{"127.0.0.1:8118", false, false, false},
		{"[::1]:8118", false, false, false},
		{"localhost:8118", false, false, false},
		{"0.0.0.0:8118", false, false, true},
		{"[::]:8118", false, false, true},
		{"192.0.2.7:8118", false, false, true},
		{"0.0.0.0:8118", true, false, false},
		{"0.0.0.0:8118", false, true, false},
	} {
		if got := clearWebsocketRefused(c.addr, c.tls, c.insecure); got != c.want {
			t.Errorf("clearWebsocketRefused(%q, tls %v, insecure %v) = %v, want %v", c.addr, c.tls, c.insecure, got, c.want)
		}
	}
}
