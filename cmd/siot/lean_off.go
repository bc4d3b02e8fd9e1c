//go:build !lean

package main

// leanBuild reports a build with -tags lean (make lean): see lean_on.go.
const leanBuild = false
