package transport

import (
	"errors"
	"fmt"

	"github.com/siot-io/siot/crdt"
)

// Version is the frame format version this build writes and accepts.
const Version = 1

// headerLen is the size of the frame header: version, then type.
const headerLen = 2

// MsgType says what a frame's body holds. The values are a wire contract:
// new types are appended, existing ones are never renumbered or reused.
type MsgType uint8

const (
	// MsgInvalid is never sent; a frame carrying it is refused.
	MsgInvalid MsgType = 0
	// MsgPoints carries a batch of points (crdt.AppendBatch).
	MsgPoints MsgType = 1
	// MsgError carries an error reply: a msgpack string.
	MsgError MsgType = 2
)

func (t MsgType) String() string {
	if t.known() {
		return msgNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// known reports whether this build understands t: a type of the enum
// that has a name here (a number reserved for a type this build does not
// have yet is unknown).
func (t MsgType) known() bool { return t > MsgInvalid && t < msgTypeEnd && msgNames[t] != "" }

// Sentinel errors of ParseFrame, wrapped with context.
var (
	// ErrVersion reports a frame written in a format version this build
	// does not read.
	ErrVersion = errors.New("unsupported frame version")
	// ErrUnknownType reports a message type this build does not know.
	ErrUnknownType = errors.New("unknown message type")
)

// AppendFrameHeader appends the header of a frame of type t to dst; the body
// follows it.
func AppendFrameHeader(dst []byte, t MsgType) []byte {
	return append(dst, Version, byte(t))
}

// ParseFrame splits a frame into its type and body after checking the size
// limit (crdt.MaxMessageSize when limit <= 0), the version and the type. The
// body aliases msg. Errors wrap crdt.ErrTooLarge, crdt.ErrMalformed,
// ErrVersion or ErrUnknownType.
func ParseFrame(msg []byte, limit int) (MsgType, []byte, error) {
	if limit <= 0 {
		limit = crdt.MaxMessageSize
	}
	if len(msg) > limit {
		return MsgInvalid, nil, fmt.Errorf("frame of %d bytes: %w (limit %d)", len(msg), crdt.ErrTooLarge, limit)
	}
	if len(msg) < headerLen {
		return MsgInvalid, nil, fmt.Errorf("frame of %d bytes: %w: shorter than its header", len(msg), crdt.ErrMalformed)
	}
	if msg[0] != Version {
		return MsgInvalid, nil, fmt.Errorf("frame version %d: %w (this build reads %d)", msg[0], ErrVersion, Version)
	}
	t := MsgType(msg[1])
	if !t.known() {
		return MsgInvalid, nil, fmt.Errorf("frame: %w %d", ErrUnknownType, msg[1])
	}
	return t, msg[headerLen:], nil
}

// EncodePoints returns a MsgPoints frame holding pts.
func EncodePoints(pts []crdt.Point) []byte {
	return crdt.AppendBatch(AppendFrameHeader(nil, MsgPoints), pts)
}

// DecodePoints parses a MsgPoints frame of at most limit bytes and returns
// its validated points. Errors are those of ParseFrame and crdt.DecodeBatch,
// or a type mismatch wrapping ErrUnknownType.
func DecodePoints(msg []byte, limit int) ([]crdt.Point, error) {
	t, body, err := ParseFrame(msg, limit)
	if err != nil {
		return nil, err
	}
	if t != MsgPoints {
		return nil, fmt.Errorf("frame holds %s, want points: %w", t, ErrUnknownType)
	}
	return crdt.DecodeBatch(body, limit)
}
