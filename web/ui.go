//go:build !lean

// Package web holds the browser replica's web UI, built from web/src by
// esbuild into web/dist (make web-build) and embedded in the binary:
// `siot serve` serves it on --http. The lean build (-tags lean) leaves it
// out. web/dist is committed so that `go build` needs no Node.js; `make
// test` fails when it does not match its sources (make web-check).
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// UI returns the built UI: index.html, app.js, app.css, sw.js and the
// chunks app.js imports (nats-<hash>.js) at its top.
func UI() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is a valid path: cannot happen
	}
	return sub
}
