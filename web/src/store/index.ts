// The browser replica's store: the user's scope in IndexedDB, so data
// survives a reload and offline edits are kept until a link has sent them.
// It is the Go store (store/doc.go) in the browser: registers with their
// winners, a change feed numbered in commit order, link marks, and the
// digests repair compares, maintained incrementally in the transaction of
// every write.
//
// # Object stores and keys
//
//	meta       "format" | "instance" | "seq" | "maxTime" | "gen"
//	           layout version, this replica's ID (the origin of local
//	           writes), the last change number, the greatest HLC held, a
//	           write counter (another tab's write is noticed by it)
//	registers  [node, parent, type, key] → {point, seq}
//	           the register's winner and the change number it arrived
//	           with; parent is "" for a node point, so a node's own points
//	           sort before the edges above it
//	feed       seq → {reg: [node, parent, type, key], source}
//	           the change feed: a register appears once, under its latest
//	           change (the older entry is deleted when it changes again);
//	           source is the instance the change came from, "" for a
//	           local write
//	edges      [parent, child] → EdgeState
//	           every pair with an edge point: the TypeEdge register's
//	           summary, the active state the tree rules decided, whether
//	           it is irregular (crdt Decision) and the edge's digest
//	nodes      node → {own, sub}
//	buckets    [parent, bucket] → digest (bucket: the child ID's first byte)
//	links      remote instance ID → {remote, acked, received}
//	           acked: the local change number the remote acknowledged;
//	           received: the remote's change number this store holds up to
//
// Digests are bigints in [0, 2^128), stored as they are (structured
// clone keeps bigints). Zero node and bucket digests are deleted.
//
// # Digests
//
// As in store/doc.go: own(n) is the sum of the digests of n's points,
// tombstones included; edge(P→C) the sum of the edge's points; sub(n) =
// own(n) + Σ edge(n→c) over every edge below n + Σ sub(c) over the active
// children (a node reachable by two paths counts on each); bucket(P, k)
// the part of sub(P) the children c with c[0] == k contribute. These are
// what repair compares (the scope's root sub, a node's buckets, then a
// child's edge/own/sub). A write costs O(paths to the root) updates; the
// tree rules run regionally (crdt resolveRegion) on the nodes whose edge
// registers changed and those of irregular edges. verify.ts recomputes
// all of it from the registers.
//
// # Memory
//
// resolveRegion is synchronous and IndexedDB is not, so the tree records
// (edge states, node and bucket digests: about 200 bytes a node) are
// loaded on open and kept in memory, updated after each commit. Registers
// and the feed stay on disk. That suits a user's scope (thousands of
// nodes); a scope of millions would want them read per batch instead.
//
// # Writers
//
// One store object serializes its writes. Two tabs on one database are
// safe but not efficient: a write that finds meta "gen" moved reloads the
// tree records first. Coordinating tabs (one writer via Web Locks, the
// others following a BroadcastChannel) is the UI's work.

export * from "./store.ts";
export { allPoints, derive, verify, type Derived } from "./verify.ts";
