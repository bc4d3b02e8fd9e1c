// Package crdt holds siot's pure replication core: node identifiers, the
// point (the unit of data), the hybrid logical clock that orders writes, the
// last-writer-wins register merge, the digest arithmetic used to compare
// replicas, the deterministic tree rules that turn edge registers into a
// live tree, and the canonical binary encodings of points and batches.
//
// Nothing here does I/O, starts goroutines or reads the wall clock: time is
// passed in (see ClockConfig.Physical). Every function is deterministic, so
// two replicas that hold the same registers compute the same state, the same
// digests and the same tree, whatever order the writes arrived in. The test
// vectors under testdata/crdt pin these rules down for other languages.
package crdt
