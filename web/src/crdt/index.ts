// The crdt core of the browser replica: a synchronous port of the Go
// package crdt (points, IDs, the hybrid logical clock, last-writer-wins,
// the canonical point encoding and digests, the tree rules of placements
// and the repair sketch). testdata/crdt is the contract.

export * from "./bytes.ts";
export * from "./codec.ts";
export * from "./digest.ts";
export * from "./hlc.ts";
export * from "./ids.ts";
export * from "./lww.ts";
export * from "./point.ts";
export * from "./sha256.ts";
export * from "./placement.ts";
export * from "./region.ts";
export * from "./sketch.ts";
export * from "./tree.ts";
