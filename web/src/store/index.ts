// The browser replica's store: the user's scope in IndexedDB, so data
// survives a reload and offline edits are kept until a link has sent them.
// It is the Go store (store/doc.go) in the browser: registers with their
// winners, a change feed numbered in commit order, link marks, and the
// digests repair compares, maintained incrementally in the transaction of
// every write. Each IndexedDB request costs far more than the bytes it
// carries (about 50 µs in Chromium, BENCHMARKS.md "browser replica"), so
// the layout keeps the records a write touches few: one per node, one
// for the tree, none per received point in the feed.
//
// # Object stores and keys
//
//	meta       "format" | "instance" | "seq" | "maxTime" | "gen" | "snap"
//	           layout version, this replica's ID (the origin of local
//	           writes), the last change number, the greatest HLC held, a
//	           write counter (another tab's write is noticed by it), the
//	           gen the tree snapshot is as of (0: none)
//	registers  [node, part] → StoredPart
//	           every register of the node (its own points and the edge
//	           registers above it) with its winner, the change number it
//	           arrived with and whether that change was local, column by
//	           column in the order of [parent, type, key] (parent "" first:
//	           the node's own points); part is 0 but for a node of many
//	           registers (below)
//	feed       seq → {reg: [node, parent, type, key]}
//	           the local writes still current: a register appears under
//	           its latest change if that change was local (below)
//	tree       0 → TreeSnapshot; gen → TreeDelta
//	           the tree records (below): a snapshot of all of them as of
//	           meta "snap", and under each later write's gen what it changed
//	links      remote instance ID → {remote, acked, received}
//	           acked: the local change number the remote acknowledged;
//	           received: the remote's change number this store holds up to
//
// A batch groups its points by node: one get and one put of each node's
// record (one part of it) however many of its registers it writes, and
// no get at all for a node the tree records know nothing of (it holds no
// registers yet: a first sync's structure).
//
// # The tree records
//
// Edge states ([parent, child] → the TypeEdge register's summary, the
// active state the tree rules decided, whether it is irregular (crdt
// Decision) and the edge's digest, for every pair with an edge point),
// node digests (node → {own, sub}) and bucket digests ([parent, bucket]
// → digest, bucket the child ID's first byte); and, for each node whose
// registers fill more than one part, its part count. Each write puts one
// TreeDelta of the records it changed under its gen (whole records; a
// node whose digests are both zero, and a zero bucket, are gone). Once
// the deltas hold more records than a quarter of the tree (plus 2,048),
// or 1,024 deltas are stored, a write is followed by a snapshot: every
// record in a few columns (each ID once, numbers in typed arrays) under
// key 0, the deltas up to it deleted, meta "snap" set, all in one
// transaction. Opening reads key 0 and the deltas after it in one getAll;
// another tab's write is caught up from the deltas after the gen held.
// Digests are bigints in [0, 2^128), kept as they are in deltas (structured
// clone keeps bigints) and as high and low 64 bits in the snapshot.
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
// # The feed
//
// The feed is what a link pushes up, and a browser replica links to one
// server, from which every change it did not make itself came: only
// local writes (apply with source "") get entries. Every change still
// takes a change number (lastSeq, a push's through, the acked mark count
// them all), so numbering is commit order as before; a received change's
// number has no entry. A change that supersedes a local one deletes the
// local one's entry (it needs no pushing any more); a register records
// whether its change was local, so only those deletes are made. A
// replica linked to another server later (a new instance) does not push
// it what it received from the first: repair compares digests and sends
// what that server lacks.
//
// # A node with many registers
//
// A write reads and writes the whole record of each node it touches, so
// its cost grows with the node's registers: in Chromium here a one-point
// write took 2-4 ms to a node of 16 or 512 registers, 7.5 ms at 2,048 and
// 22.5 ms at 8,192 in one record (web/bench/store.bench.ts). A write that
// would leave more than partMax (512) registers in a part splits the
// node: every part is read and the registers spread over the least power
// of two of parts that leaves them half full, by an FNV-1a hash of
// (parent, type, key) (layout.ts partOf); the part count goes into the
// tree records. A write then reads and writes only the parts its points
// fall in: 2-3 ms at 2,048 and 8,192 registers. Reading the whole node
// (get, nodePoints) reads every part in one getAll and sorts them: 24 ms
// at 8,192 registers in 32 parts, 9 ms in one record.
//
// # Memory
//
// resolveRegion is synchronous and IndexedDB is not, so the tree records
// (about 200 bytes a node) are loaded on open and kept in memory, updated
// after each commit. Registers and the feed stay on disk. That suits a
// user's scope (thousands of nodes); a scope of millions would want them
// read per batch instead. Reads take whether an edge is active from
// memory (as of this store's last write or reload), the registers from
// their own IndexedDB transaction.
//
// # Writers
//
// One store object serializes its writes. Two tabs on one database are
// safe but not efficient: a write that finds meta "gen" moved reads the
// deltas written since (or the whole tree records, if a snapshot replaced
// them) and runs again. Coordinating tabs (one writer via Web Locks, the
// others following a BroadcastChannel and calling reload) is the UI's
// work.
//
// # Versions
//
// formatVersion (meta "format") names the layout; the IndexedDB version
// changes with it. This layout is 2. Layout 1 (a record per register, a
// feed entry per change, a record per tree record) shipped only inside
// one development cycle and was never released: opening a database of
// IndexedDB version 1 drops every object store and starts an empty one
// (a new instance ID; its points come again from the server, and its
// unsent local writes are lost). A database of a newer version is refused
// (StoreClosedError), and one whose meta "format" is not this layout's
// too: a store never reads records of another layout. A tab that still
// runs the old code holds the upgrade back until it closes; a store open
// when a newer layout upgrades its database closes itself.

export * from "./store.ts";
export { allPoints, derive, verify, type Derived } from "./verify.ts";
