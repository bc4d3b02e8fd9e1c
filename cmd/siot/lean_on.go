//go:build lean

package main

// leanBuild reports a build with -tags lean (make lean), the edge build:
// `siot version` says so. The tag changes nothing else in this package:
// what it saves is in package transport, whose Server is then built over
// siot's own broker (transport/bus) instead of nats-server, most of the
// full binary (BENCHMARKS.md, "Binary size"). siot's own commands weigh
// too little to be worth leaving out.
const leanBuild = true
