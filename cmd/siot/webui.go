package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
)

// uiFile is one file of the web UI, ready to serve: its bytes, gzipped
// bytes when that is smaller, and an ETag of its content.
type uiFile struct {
	body, gz []byte
	ctype    string
	etag     string
}

// uiHandler serves the web UI (package web) on GET / (index.html),
// /app.js, /app.css, /sw.js (its service worker) and the other .js files
// at the top of files (the chunks app.js imports): gzipped to clients that accept it, revalidated by
// ETag (Cache-Control: no-cache, so a new binary's UI is never stale),
// with a Content-Security-Policy that lets the page load only its own
// files and connect only to its own origin (the NATS WebSocket on /nats).
// Any other path is 404, any other method 405. files nil (the lean build) answers 404 saying the
// UI is not in this build.
func uiHandler(files fs.FS) (http.Handler, error) {
	if files == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "not found: the web UI is not in the lean build", http.StatusNotFound)
		}), nil
	}
	served := map[string]*uiFile{}
	names := []string{"index.html", "app.js", "app.css", "sw.js"}
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, fmt.Errorf("web UI: %w", err)
	}
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && strings.HasSuffix(n, ".js") && !slices.Contains(names, n) {
			names = append(names, n) // a chunk app.js imports
		}
	}
	for _, name := range names {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, fmt.Errorf("web UI: %w", err)
		}
		sum := sha256.Sum256(b)
		f := &uiFile{body: b, ctype: mime.TypeByExtension(path.Ext(name)), etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		if z.Len() < len(b) {
			f.gz = z.Bytes()
		}
		served["/"+name] = f
	}
	served["/"] = served["/index.html"]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		f := served[r.URL.Path]
		if f == nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("Vary", "Accept-Encoding")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, f.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		body := f.body
		if f.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			body = f.gz
		}
		h.Set("Content-Length", fmt.Sprint(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		io.Copy(w, bytes.NewReader(body))
	}), nil
}

// acceptsGzip reports whether an Accept-Encoding header accepts gzip
// (and does not refuse it with q=0).
func acceptsGzip(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
