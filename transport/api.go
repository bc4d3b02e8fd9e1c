package transport

import (
	"github.com/google/uuid"
)

// Messages of the local API beyond status, import and export: one node's
// points, the edges around a node, and the change feed for watchers.
//
// No request carries an identity: the server reads it from the request's
// subject, under the prefix the connection was granted (Identity.Prefix).

// NodeRequest asks for one page of one node's points (NameNode): its node
// points, then the points of the edges above it, sorted by parent, type and
// key, starting after the register After (an opaque cursor from a previous
// NodePage; empty: from the start). MaxBytes bounds the page's encoded
// points (0: the server's default; never above its limit).
type NodeRequest struct {
	Node     uuid.UUID `msgpack:"node"`
	After    []byte    `msgpack:"after"`
	MaxBytes int       `msgpack:"max,omitempty"`
}

// NodePage answers a NodeRequest. Known says the node is the server's root
// or holds a point or an edge there. More says another page follows: ask
// again with After = Next.
type NodePage struct {
	Known  bool   `msgpack:"known"`
	Points []byte `msgpack:"pts"`
	Next   []byte `msgpack:"next"`
	More   bool   `msgpack:"more"`
}

// EdgesRequest asks for the edges below Node (NameEdges), or above it
// when Up is set, one page at a time in order of the other end's ID,
// starting after the node After (uuid.Nil: from the first). Max bounds the
// edges per page (0: the server's default; never above its limit).
type EdgesRequest struct {
	Node  uuid.UUID `msgpack:"node"`
	Up    bool      `msgpack:"up,omitempty"`
	After uuid.UUID `msgpack:"after"`
	Max   int       `msgpack:"max,omitempty"`
}

// EdgesPage answers an EdgesRequest. Points is a point batch holding, for
// each edge in order, its "edge" point, followed by the "nodeType" and
// "description" points of the node at its other end when they exist; the
// first page also holds those of Node itself. An edge that has edge state
// but no edge point yet is left out. Active holds one byte per edge point,
// in order: 1 when the edge is part of the live tree (not tombstoned, not
// undone by the cycle rule). More says another page follows: ask again
// with After = Next, the last edge's other end.
type EdgesPage struct {
	Points []byte    `msgpack:"pts"`
	Active []byte    `msgpack:"act"`
	Next   uuid.UUID `msgpack:"next"`
	More   bool      `msgpack:"more"`
}

// WatchRequest asks for the changes after change number After
// (NameWatch), limited to the subtree of Root when it is not nil (as it
// is when each change is read). When there are none the server holds the
// request up to Wait milliseconds (bounded by the server, at most
// MaxWatchWait) and answers as soon as one arrives, or empty. MaxBytes
// bounds the reply's encoded points (0: the server's default).
type WatchRequest struct {
	After    uint64    `msgpack:"after"`
	Root     uuid.UUID `msgpack:"root"`
	Wait     int64     `msgpack:"wait"`
	MaxBytes int       `msgpack:"max,omitempty"`
}

// MaxWatchWait is the longest a server holds a WatchRequest, in
// milliseconds.
const MaxWatchWait = 30_000

// WatchChangeLen is the size of one record of WatchReply.Changes.
const WatchChangeLen = 8 + 16

// WatchReply answers a WatchRequest. Points is a point batch of the
// registers that changed, each at its current winner, in change order.
// Changes holds one WatchChangeLen-byte record per point, in order: the
// change number (8 bytes, big-endian) and the instance the change was
// received from (16 bytes; zero for a write made on this server). Next is
// the change number to ask after next time; it can move without points
// when the changes read were all outside Root. Last is the server's last
// change number when it answered.
type WatchReply struct {
	Points  []byte `msgpack:"pts"`
	Changes []byte `msgpack:"chg"`
	Next    uint64 `msgpack:"next"`
	Last    uint64 `msgpack:"last"`
}

// MaxNodesAsked bounds the nodes of one NodesRequest (16 bytes each).
const MaxNodesAsked = 10_000

// NodesRequest asks which of Nodes the server has (NameNodes): Nodes is
// node IDs, 16 bytes each, at most MaxNodesAsked of them.
type NodesRequest struct {
	Nodes []byte `msgpack:"nodes"`
}

// NodesReply answers a NodesRequest: Known holds one byte per node asked,
// in order, 1 when the node is the server's root or has an edge there
// (live or deleted, as NodePage.Known) and the requester may read it, else
// 0. A node outside the requester's scope is 0, whether the server has it
// or not.
type NodesReply struct {
	Known []byte `msgpack:"known"`
}

// VerifyRequest asks a running server to check its store (NameVerify):
// every table's checksums, then every index and digest recomputed from the
// points of one snapshot. Only the local administrator may ask, and one
// check runs at a time.
type VerifyRequest struct{}

// VerifyReply answers a VerifyRequest. Error is empty when everything
// matched; else it names the damaged file or lists the first mismatches.
// The counts are as far as the check went.
type VerifyReply struct {
	Registers int     `msgpack:"registers"`
	Nodes     int     `msgpack:"nodes"`
	Edges     int     `msgpack:"edges"`
	Problems  int     `msgpack:"problems"`
	Seconds   float64 `msgpack:"seconds"`
	Error     string  `msgpack:"error"`
}
