package transport

import (
	"github.com/google/uuid"
)

// History rounds. A link's dialer compares the registers' histories
// (package history) of its scope with the acceptor's, window by window,
// on the session's repair subject: it sends HistRequests and the acceptor
// answers each with a HistReply. One request does one of four things,
// by Kind:
//
//   - HistWindows: Sums holds the dialer's sum of each group of Per
//     windows (window w is in group w/Per; Per 0 is 1) from window From
//     through To, Window holding the group (Node nil); the reply holds
//     the acceptor's, for every group of the span in which it has
//     history.
//   - HistNodes: Sums holds the dialer's sum of each node in Window; the
//     reply holds the acceptor's.
//   - HistPush: Regs holds samples to merge; the reply says how many were
//     new (Added) and holds the acceptor's sums, after the merge, of each
//     node and window the push touched.
//   - HistFetch: Fetch names nodes and windows; the reply's Regs hold
//     their samples, as many as fit, and More says some were left out
//     (fetch again what did not come).
//
// An acceptor that predates history answers with an error frame
// (ErrUnknownType): the dialer stops its rounds.
type HistRequest struct {
	Kind   HistKind  `msgpack:"k"`
	From   int64     `msgpack:"from,omitempty"`
	To     int64     `msgpack:"to,omitempty"`
	Window int64     `msgpack:"w,omitempty"`
	Per    int64     `msgpack:"per,omitempty"`
	Sums   []HistSum `msgpack:"sums,omitempty"`
	Regs   []HistReg `msgpack:"regs,omitempty"`
	Fetch  []HistSum `msgpack:"fetch,omitempty"` // Node and Window
}

// HistKind says what a HistRequest asks.
type HistKind uint8

// The kinds of HistRequest.
const (
	HistWindows HistKind = iota + 1
	HistNodes
	HistPush
	HistFetch
)

// HistSum is the digest (its first 8 bytes) and sample count of a node's
// history in a window, or of a scope's (Node nil).
type HistSum struct {
	Node   uuid.UUID   `msgpack:"n,omitempty"`
	Window int64       `msgpack:"w"`
	Digest ShortDigest `msgpack:"d,omitempty"`
	Count  uint64      `msgpack:"c,omitempty"`
}

// HistReg is samples of one node point register in one window: a block
// of package history.
type HistReg struct {
	Node  uuid.UUID `msgpack:"n"`
	Type  string    `msgpack:"t"`
	Key   string    `msgpack:"key"`
	Block []byte    `msgpack:"b"`
}

// HistReply answers a HistRequest.
type HistReply struct {
	Sums  []HistSum `msgpack:"sums,omitempty"`
	Regs  []HistReg `msgpack:"regs,omitempty"`
	Added uint64    `msgpack:"added,omitempty"`
	More  bool      `msgpack:"more,omitempty"`
	// Since, in a reply to HistWindows: the acceptor dropped history
	// (its retention, its budget) before this window, so the dialer
	// compares none before it.
	Since int64 `msgpack:"since,omitempty"`
}
