// Package store keeps a replica's registers durably in Badger and maintains,
// in the same transaction as every write, the indexes and digests that
// replication needs.
//
// # Keys
//
// Every key starts with a one-byte prefix:
//
//	m name                                  metadata: root ID, instance ID
//	p node parent type 0x00 key             a register: its winning point
//	s seq node parent type 0x00 key         the change feed: each winner under the
//	                                        local change number it arrived with
//	c parent child                          an edge: register summary, state, digest
//	u child parent                          the same edge seen from the child: state
//	n node                                  node digests: own points, subtree
//	b parent bucket                         digest of the children in one bucket
//	i parent child                          an edge whose active state differs from
//	                                        its register (a cycle was broken)
//	k name                                  a mark: a named counter replication keeps
//	                                        (not a point, not replicated)
//	l name                                  a link record: what replication remembers
//	                                        of a link (local, like marks)
//
// node and parent are 16 raw UUID bytes (parent is 16 zero bytes for node
// points); seq is a big-endian counter assigned in commit order. Points
// sort by node, parent, type and key, which is the order of `siot export`.
//
// # Digests
//
// own(n) is the sum of the digests of node n's points, tombstoned ones
// included. edge(P→C) is the sum of the digests of the edge's points.
// sub(n) = own(n) + Σ edge(n→c) over every edge below n, whatever its state,
// + Σ sub(c) over the active children c. A node reachable by two paths is
// counted on each: the sum never cancels it out. bucket(P, k) is the part of
// sub(P) that the children c with c[0] == k contribute, so a repair can
// descend into a node with many children 256 ways at a time. A write costs
// O(paths to the root) digest updates, never O(size of the tree).
//
// # Tree
//
// The active edges follow the tree rules of placements
// (crdt.ResolvePlacements; docs/design.md): a batch that changes edge
// registers decides, with crdt.ResolveRegion, the edges into the nodes it
// touched and into the nodes of the irregular edges (whose state the
// register alone does not explain: few or none), widened to the cycles
// through them. That costs those nodes' registers and ancestors, never the
// whole tree. Active edges never form a cycle, so every walk of the tree
// ends.
//
// # Data at rest
//
// Open reads every table the MANIFEST lists and verifies its checksums
// before Badger opens the directory (Badger would serve a flipped bit, drop
// a table whose checksum fails, or panic in its own goroutines on a
// truncated one); a damaged file is ErrCorrupt naming it. While open,
// Badger verifies each block it reads, and a panic of its decoders is
// recovered at the store's boundary (view, Apply) as ErrCorrupt naming
// the damaged table. Writes
// stop at a free-space floor (Config.FloorBytes at least) before Badger
// can die of SIGBUS on a full disk, and a ballast file (BallastName) gives
// an operator room to start again when the disk filled up anyway.
package store
