//go:build lean

package main

// leanBuild reports a build with -tags lean (make lean), the edge build:
// `siot version` says so. The tag changes nothing else in this package;
// the size it saves comes from make lean's compiler flags (no inlining),
// as BENCHMARKS.md ("Binary size") measures: siot's own commands weigh
// too little to be worth leaving out, and the embedded NATS server, most
// of the binary, has no build tags that drop parts of it.
const leanBuild = true
