package transport

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/siot-io/siot/crdt"
)

// The link protocol and the local API exchange these messages, each in a
// frame of its MsgType with a msgpack map body. docs/protocol.md is the
// reference. Unknown map keys are ignored, so fields can be added without a
// version change; removing or redefining one needs a new Version.

// LinkProto is the link protocol version a Hello carries.
const LinkProto = 1

// Roles a dialer asks for in a Hello.
const (
	RoleEdge = "edge" // the dialer's root goes under the acceptor's root; scope: the dialer's subtree
	RolePeer = "peer" // same root, full scope both ways
	// RoleUser is a user's replica (a browser's): it signs in with the
	// user's login token, has no root of its own (Hello.Root is nil) and
	// carries what the user may read through the API, secrets excepted.
	RoleUser = "user"
)

// Hello opens a link (request NameHello): the dialer introduces itself.
type Hello struct {
	Proto    int       `msgpack:"v"`
	Instance uuid.UUID `msgpack:"inst"`
	// Root is the dialer's root node. uuid.Nil asks only for the
	// acceptor's identity (a peer starting with empty data): the reply
	// then opens no session. A RoleUser hello must carry nil: its
	// session's scope is the user's, not a subtree of its own.
	Root uuid.UUID `msgpack:"root"`
	Role string    `msgpack:"role"`
	// Time is the dialer's physical clock (ms since the Unix epoch).
	Time int64 `msgpack:"t"`
}

// Welcome answers a Hello.
type Welcome struct {
	Instance uuid.UUID `msgpack:"inst"`
	Root     uuid.UUID `msgpack:"root"`
	// Time is the acceptor's corrected physical clock (ms since the Unix
	// epoch); a dialer without a real-time clock corrects its own by it.
	Time int64 `msgpack:"t"`
	// Session names the link's subjects (SessionSubjects); empty for an
	// identity-only reply.
	Session string `msgpack:"sess"`
	// Have is how far the acceptor holds the dialer's change feed: the
	// dialer starts pushing after it.
	Have uint64 `msgpack:"have"`
	// Holds says the acceptor holds data in the session's scope, and Last
	// is the end of its feed when it answered. A dialer that also holds
	// data, and whose position in either feed is 0, compares the scopes
	// by digest repair before either side pushes, then starts each side
	// at the feed's end it captured before the comparison.
	Holds bool   `msgpack:"holds,omitempty"`
	Last  uint64 `msgpack:"last,omitempty"`
}

// Start is the dialer's first session message, sent once it listens on
// the session's down subject: the acceptor starts pushing after Have.
type Start struct {
	Have uint64 `msgpack:"have"`
}

// Push carries changes of the sender's feed, From (exclusive) to Through
// (inclusive), filtered to the receiver's scope. The receiver applies it
// only when From is at most what it holds, so pushes apply in order even
// after a loss; otherwise it answers with its position and the sender goes
// back there.
type Push struct {
	From    uint64 `msgpack:"from"`
	Through uint64 `msgpack:"thru"`
	// Idle says the sender had nothing more to send when it sent this.
	Idle bool `msgpack:"idle,omitempty"`
	// Points is a crdt batch (crdt.AppendBatch).
	Points []byte `msgpack:"pts"`
}

// Ack answers a Push or a Ping.
type Ack struct {
	// Have is how far the receiver now holds the sender's feed.
	Have uint64 `msgpack:"have"`
	// Gap says the push was not applied because it did not start at or
	// before Have; the sender resumes from Have.
	Gap bool `msgpack:"gap,omitempty"`
	// Rejected counts points refused (invalid, clock too far ahead); the
	// rest of the push was applied. Reason describes the first.
	Rejected int    `msgpack:"rej,omitempty"`
	Reason   string `msgpack:"why,omitempty"`
}

// Ping keeps a session alive; it is answered with an Ack.
type Ping struct{}

// Bye ends a link session cleanly: the side that ends it (a server that
// shuts down, an edge stopped by SIGTERM, a link closed) sends it before
// it lets go of the session's subjects, so the other side shows the link
// disconnected at once instead of after a timeout. The dialer sends it on
// the session's ping subject, the acceptor on its down subject; neither
// is answered. Reason says why, for the receiver's log and status.
type Bye struct {
	Reason string `msgpack:"why,omitempty"`
}

// LinkStatus describes one link in a Status.
type LinkStatus struct {
	URL       string `msgpack:"url" json:"url"`
	Role      string `msgpack:"role" json:"role"`
	Remote    string `msgpack:"remote,omitempty" json:"remote,omitempty"`
	Connected bool   `msgpack:"connected" json:"connected"`
	InSync    bool   `msgpack:"inSync" json:"inSync"`
	Pending   uint64 `msgpack:"pending" json:"pending"`
	LastError string `msgpack:"lastError" json:"lastError"`
	BytesSent uint64 `msgpack:"bytesSent" json:"bytesSent"`
	BytesRecv uint64 `msgpack:"bytesReceived" json:"bytesReceived"`
	Rejected  uint64 `msgpack:"rejected" json:"rejected"`
	// LastSeen is when the remote last spoke on the link (RFC 3339, UTC,
	// milliseconds); empty when never. For a link that is down it is
	// when it went offline, kept across restarts.
	LastSeen string `msgpack:"lastSeen,omitempty" json:"lastSeen,omitempty"`
}

// Status answers a status request (NameStatus).
type Status struct {
	ID       string       `msgpack:"id" json:"id"`
	Instance string       `msgpack:"instance" json:"instance"`
	Version  string       `msgpack:"version" json:"version"`
	LastSeq  uint64       `msgpack:"lastSeq" json:"lastSeq"`
	HLC      string       `msgpack:"hlc" json:"hlc"`
	Disk     int64        `msgpack:"diskBytes" json:"diskBytes"`
	Links    LinkStatuses `msgpack:"links" json:"links"`
	Accepted LinkStatuses `msgpack:"accepted" json:"accepted"`
	// Refused counts link handshakes this server refused.
	Refused uint64 `msgpack:"refused" json:"refused"`
	// You is the identity the server knows the requester as ("admin",
	// "key:<node>", "user:<node>").
	You string `msgpack:"you,omitempty" json:"you,omitempty"`
	// Scope lists the roots of the subtrees the requester may reach;
	// empty when it reaches the whole tree.
	Scope []string `msgpack:"scope,omitempty" json:"scope,omitempty"`
}

// MaxLinks bounds each link list of a Status a decoder accepts. Encode
// writes a LinkStatus in at least 119 bytes, so a frame of
// crdt.MaxMessageSize holds fewer than 8,900 links: the cap refuses no
// Status this package can send.
const MaxLinks = 1 << 14

// LinkStatuses is a list of links in a Status. Its decoder refuses more than
// MaxLinks entries before allocating them: a LinkStatus is 104 bytes and a
// hostile encoding of one can be a single byte, and msgpack/v5 allocates a
// declared slice length up front (twice), so an unbounded list lets a 1 MiB
// frame cost some 200 MiB.
type LinkStatuses []LinkStatus

// DecodeMsgpack implements msgpack.CustomDecoder.
func (l *LinkStatuses) DecodeMsgpack(d *msgpack.Decoder) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < 0 {
		*l = nil
		return nil
	}
	if n > MaxLinks {
		return fmt.Errorf("%d links, limit %d", n, MaxLinks)
	}
	out := make(LinkStatuses, n)
	for i := range out {
		if err := d.Decode(&out[i]); err != nil {
			return err
		}
	}
	*l = out
	return nil
}

// StatusRequest asks for a Status.
type StatusRequest struct{}

// Import asks the server to write points (NameImport). Points is a batch
// that may hold unstamped points (crdt.DecodeBatchUnstamped): a zero time
// is stamped on arrival in batch order, a nil origin becomes the server's
// instance.
//
// With OneTime set, every unstamped point of the batch gets the same HLC
// and origin: the batch is one operation (a move writes its new edge and
// the tombstone of the old one this way). The batch must then not write
// one register twice.
type Import struct {
	Points  []byte `msgpack:"pts"`
	OneTime bool   `msgpack:"one,omitempty"`
}

// ImportResult answers an Import.
type ImportResult struct {
	Applied int `msgpack:"applied"`
	Stale   int `msgpack:"stale"`
}

// ExportRequest asks for one page of points (NameExport), sorted by
// node, parent, type and key, starting after the register After (empty:
// from the start). Root, when set, limits the export to that node's
// subtree. MaxBytes bounds the page's encoded points (0: the server's
// default; never above its limit).
type ExportRequest struct {
	Root     uuid.UUID `msgpack:"root"`
	After    []byte    `msgpack:"after"`
	MaxBytes int       `msgpack:"max,omitempty"`
}

// ExportPage answers an ExportRequest. More says another page follows:
// ask again with After = Next.
type ExportPage struct {
	Points []byte `msgpack:"pts"`
	Next   []byte `msgpack:"next"`
	More   bool   `msgpack:"more"`
}

// TokenRequest asks for a login token (NameToken), from a connection
// signed in with an email address and a password. TTL is the lifetime
// wanted in seconds (0: the server's default; never above its limit).
type TokenRequest struct {
	TTL int64 `msgpack:"ttl,omitempty"`
}

// TokenReply answers a TokenRequest: the token, the user node it signs in
// as, and when it expires (Unix ms).
type TokenReply struct {
	Token   string    `msgpack:"token"`
	User    uuid.UUID `msgpack:"user"`
	Expires int64     `msgpack:"exp"`
}

// Append-only message types beyond MsgPoints and MsgError.
const (
	MsgHello          MsgType = 3
	MsgWelcome        MsgType = 4
	MsgStart          MsgType = 5
	MsgPush           MsgType = 6
	MsgAck            MsgType = 7
	MsgPing           MsgType = 8
	MsgStatusRequest  MsgType = 9
	MsgStatus         MsgType = 10
	MsgImport         MsgType = 11
	MsgImportResult   MsgType = 12
	MsgExportRequest  MsgType = 13
	MsgExportPage     MsgType = 14
	MsgRepair         MsgType = 15
	MsgRepairReply    MsgType = 16
	MsgNodeRequest    MsgType = 17
	MsgNodePage       MsgType = 18
	MsgEdgesRequest   MsgType = 19
	MsgEdgesPage      MsgType = 20
	MsgWatchRequest   MsgType = 21
	MsgWatchReply     MsgType = 22
	MsgTokenRequest   MsgType = 23
	MsgTokenReply     MsgType = 24
	MsgNodesRequest   MsgType = 25
	MsgNodesReply     MsgType = 26
	MsgBye            MsgType = 27
	MsgVerifyRequest  MsgType = 28
	MsgVerifyReply    MsgType = 29
	MsgHistRequest    MsgType = 30
	MsgHistReply      MsgType = 31
	MsgHistoryRequest MsgType = 32
	MsgHistoryPage    MsgType = 33
	msgTypeEnd                = 34 // one past the last known type
)

var msgNames = [...]string{
	MsgPoints: "points", MsgError: "error", MsgHello: "hello", MsgWelcome: "welcome",
	MsgStart: "start", MsgPush: "push", MsgAck: "ack", MsgPing: "ping",
	MsgStatusRequest: "status-request", MsgStatus: "status", MsgImport: "import",
	MsgImportResult: "import-result", MsgExportRequest: "export-request", MsgExportPage: "export-page",
	MsgRepair: "repair", MsgRepairReply: "repair-reply",
	MsgNodeRequest: "node-request", MsgNodePage: "node-page", MsgEdgesRequest: "edges-request",
	MsgEdgesPage: "edges-page", MsgWatchRequest: "watch-request", MsgWatchReply: "watch-reply",
	MsgTokenRequest: "token-request", MsgTokenReply: "token-reply",
	MsgNodesRequest: "nodes-request", MsgNodesReply: "nodes-reply",
	MsgBye: "bye", MsgVerifyRequest: "verify-request", MsgVerifyReply: "verify-reply",
	MsgHistRequest: "history-round", MsgHistReply: "history-round-reply",
	MsgHistoryRequest: "history-request", MsgHistoryPage: "history-page",
}

// typeOf returns the MsgType of a message value.
func typeOf(v any) (MsgType, error) {
	switch v.(type) {
	case *Hello, Hello:
		return MsgHello, nil
	case *Welcome, Welcome:
		return MsgWelcome, nil
	case *Start, Start:
		return MsgStart, nil
	case *Push, Push:
		return MsgPush, nil
	case *Ack, Ack:
		return MsgAck, nil
	case *Ping, Ping:
		return MsgPing, nil
	case *StatusRequest, StatusRequest:
		return MsgStatusRequest, nil
	case *Status, Status:
		return MsgStatus, nil
	case *Import, Import:
		return MsgImport, nil
	case *ImportResult, ImportResult:
		return MsgImportResult, nil
	case *ExportRequest, ExportRequest:
		return MsgExportRequest, nil
	case *ExportPage, ExportPage:
		return MsgExportPage, nil
	case *NodeRequest, NodeRequest:
		return MsgNodeRequest, nil
	case *NodePage, NodePage:
		return MsgNodePage, nil
	case *EdgesRequest, EdgesRequest:
		return MsgEdgesRequest, nil
	case *EdgesPage, EdgesPage:
		return MsgEdgesPage, nil
	case *WatchRequest, WatchRequest:
		return MsgWatchRequest, nil
	case *WatchReply, WatchReply:
		return MsgWatchReply, nil
	case *TokenRequest, TokenRequest:
		return MsgTokenRequest, nil
	case *TokenReply, TokenReply:
		return MsgTokenReply, nil
	case *NodesRequest, NodesRequest:
		return MsgNodesRequest, nil
	case *NodesReply, NodesReply:
		return MsgNodesReply, nil
	case *Bye, Bye:
		return MsgBye, nil
	case *VerifyRequest, VerifyRequest:
		return MsgVerifyRequest, nil
	case *VerifyReply, VerifyReply:
		return MsgVerifyReply, nil
	case *HistRequest, HistRequest:
		return MsgHistRequest, nil
	case *HistReply, HistReply:
		return MsgHistReply, nil
	case *HistoryRequest, HistoryRequest:
		return MsgHistoryRequest, nil
	case *HistoryPage, HistoryPage:
		return MsgHistoryPage, nil
	}
	return MsgInvalid, fmt.Errorf("transport: %T is not a message", v)
}

// Encode returns the frame of a message (one of the message types of this
// package, by value or pointer).
func Encode(v any) ([]byte, error) {
	t, err := typeOf(v)
	if err != nil {
		return nil, err
	}
	return encodeWire(t, v)
}

// encodeWire encodes v after the frame header. Integers take the fewest
// bytes that hold them (a change number under 128 is one byte, not
// nine): every msgpack decoder reads any width, and a cellular link pays
// for each byte of every push and ack.
func encodeWire(t MsgType, v any) ([]byte, error) {
	buf := bytes.NewBuffer(AppendFrameHeader(make([]byte, 0, 64), t))
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("transport: encode %s: %w", t, err)
	}
	return buf.Bytes(), nil
}

// EncodeError returns a MsgError frame carrying err's text.
func EncodeError(err error) []byte {
	b, _ := msgpack.Marshal(err.Error())
	return append(AppendFrameHeader(nil, MsgError), b...)
}

// RemoteError is an error reported by the other side in a MsgError frame.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return "remote: " + e.Msg }

// Decode parses a frame of at most limit bytes (crdt.MaxMessageSize when
// limit <= 0) into v, a pointer to the message type the caller expects. A
// MsgError frame is returned as a *RemoteError. The body is checked by
// crdt.CheckMsgpack before it is decoded, so no declared length makes the
// decoder allocate beyond the bytes present. Errors wrap those of
// ParseFrame, crdt.ErrMalformed, or ErrUnknownType for an unexpected type.
func Decode(msg []byte, limit int, v any) error {
	want, err := typeOf(v)
	if err != nil {
		return err
	}
	return decodeWire(msg, limit, want, v)
}

func decodeWire(msg []byte, limit int, want MsgType, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("transport: decode into %T: want a non-nil pointer", v)
	}
	t, body, err := ParseFrame(msg, limit)
	if err != nil {
		return err
	}
	if err := crdt.CheckMsgpack(body, crdt.MaxDepth); err != nil {
		return fmt.Errorf("%s body: %w", t, err)
	}
	if t == MsgError {
		var s string
		if err := msgpack.Unmarshal(body, &s); err != nil {
			return fmt.Errorf("error body: %w: %v", crdt.ErrMalformed, err)
		}
		return &RemoteError{Msg: s}
	}
	if t != want {
		return fmt.Errorf("got %s, want %s: %w", t, want, ErrUnknownType)
	}
	// msgpack decodes into what v holds: fields the frame omits
	// (omitempty) would keep stale values and []byte fields would reuse,
	// and so overwrite, a slice the caller may still hold.
	rv.Elem().SetZero()
	if err := msgpack.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s body: %w: %v", t, crdt.ErrMalformed, err)
	}
	return nil
}

// MaxByeReason bounds the reason of a Bye as IsBye returns it: the
// remote's words end up in logs and status.
const MaxByeReason = 200

// IsBye reports whether msg is a Bye frame, and returns it, its reason cut
// to MaxByeReason bytes of printable UTF-8 (control characters and invalid
// bytes become '?').
func IsBye(msg []byte) (Bye, bool) {
	var b Bye
	t, _, err := ParseFrame(msg, 0)
	if err != nil || t != MsgBye || Decode(msg, 0, &b) != nil {
		return Bye{}, false
	}
	b.Reason = printable(b.Reason, MaxByeReason)
	return b, true
}

// printable returns s with control characters and invalid UTF-8 replaced
// by '?', cut to at most n bytes (and "…") on a rune boundary.
func printable(s string, n int) string {
	var out strings.Builder
	for i, r := range s {
		if i >= n {
			out.WriteString("…")
			break
		}
		if r == utf8.RuneError || unicode.IsControl(r) {
			r = '?'
		}
		out.WriteRune(r)
	}
	return out.String()
}

// IsRemote reports whether err came from the other side's MsgError.
func IsRemote(err error) bool {
	var re *RemoteError
	return errors.As(err, &re)
}
