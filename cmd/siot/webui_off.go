//go:build lean

package main

import "io/fs"

// uiFiles is nil: the lean build leaves the web UI out.
func uiFiles() fs.FS { return nil }
