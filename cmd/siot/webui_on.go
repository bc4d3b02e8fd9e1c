//go:build !lean

package main

import (
	"io/fs"

	"github.com/siot-io/siot/web"
)

// uiFiles is the web UI embedded in this build (package web).
func uiFiles() fs.FS { return web.UI() }
