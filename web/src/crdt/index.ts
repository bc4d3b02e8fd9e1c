// The crdt core of the browser replica: a synchronous port of the Go
// package crdt (points, IDs, the hybrid logical clock, last-writer-wins,
// the canonical point encoding and digests). testdata/crdt is the contract.

export * from "./bytes.ts";
export * from "./codec.ts";
export * from "./digest.ts";
export * from "./hlc.ts";
export * from "./ids.ts";
export * from "./lww.ts";
export * from "./point.ts";
export * from "./sha256.ts";
