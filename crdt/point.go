package crdt

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits on the parts of a point. They are part of the data contract: every
// replica enforces them on every write it accepts, local or remote.
const (
	// MaxTypeLen is the longest point type, in bytes. A type is 1 to
	// MaxTypeLen characters from [A-Za-z0-9_.-].
	MaxTypeLen = 64
	// MaxKeyLen is the longest point key, in bytes. A key is 1 to MaxKeyLen
	// printable ASCII characters (0x21 to 0x7e: no space, no control
	// characters). A blank key means DefaultKey.
	MaxKeyLen = 128
	// MaxTextLen is the largest text of one point, in bytes of UTF-8 (64 KiB).
	// Larger payloads are refused: NATS messages are limited to 1 MB and a
	// reply carries many points.
	MaxTextLen = 64 << 10
)

// DefaultKey is the key of a point written without one.
const DefaultKey = "0"

// Point types with a meaning to the tree rules.
const (
	// TypeEdge is the edge point that says whether the edge parent→child
	// exists: the edge is live while its TypeEdge point is not tombstoned.
	TypeEdge = "edge"
	// TypeNodeType is the node point whose text names the node's type
	// ("device", "user", ...).
	TypeNodeType = "nodeType"
)

// Point types that configure the registers' histories (package history;
// docs/design.md, "History").
const (
	// TypeHistoryOff, on a node, keyed by a point type, value not 0: the
	// node's registers of that type record no history (settings need
	// none). Every replica that holds the node holds the setting.
	TypeHistoryOff = "historyOff"
	// TypeHistoryKeep, on an instance's root node, keyed by a point type
	// or "*" (every other type): how many days of history the instance
	// keeps. Without one it keeps everything. An instance with upstreams
	// keeps, besides, whatever its upstreams have not acknowledged.
	TypeHistoryKeep = "historyKeep"
	// TypeHistoryMaxBytes, on an instance's root node: the most bytes of
	// encoded history it keeps (its disk budget); past it the oldest
	// windows go, acknowledged ones first. An instance with upstreams
	// defaults to 1 GiB, others to no budget.
	TypeHistoryMaxBytes = "historyMaxBytes"
)

// Point types with a meaning to authentication and authorization. They are
// ordinary points, so they replicate and a tombstone revokes everywhere,
// but only an administrator of the scope they grant may write them, and
// the secret ones are read only by the system, local administrators and
// peers.
const (
	// TypeAuthKey is a credential: an nkey public key as the key, value 1,
	// text "device" or "peer". It grants the node's subtree (a key on the
	// root: everything, as a peer).
	TypeAuthKey = "authKey"
	// TypePassword is a user node's password: an argon2id hash in the PHC
	// string format as text.
	TypePassword = "password"
	// TypeEmail is a user node's sign-in address (text).
	TypeEmail = "email"
	// TypeRole is an edge point of a user: text "admin" lets the user change
	// structure below that parent.
	TypeRole = "role"
	// RoleAdmin is the TypeRole text of an administrator.
	RoleAdmin = "admin"
	// TypeSMTPPassword is the password an instance's notifications are
	// mailed with (on its root node; package rules).
	TypeSMTPPassword = "smtpPassword"
	// TypeWebhookSecret is the key that signs a user's notification
	// webhooks (on the user node; package rules).
	TypeWebhookSecret = "notifyWebhookSecret"
)

// IsSecret reports whether points of type typ are secrets (credentials,
// and the keys of notification channels): never shown to a client that is
// not an administrator of the whole tree.
func IsSecret(typ string) bool {
	return typ == TypeAuthKey || typ == TypePassword || typ == TypeSMTPPassword || typ == TypeWebhookSecret
}

// IsCredential reports whether points of type typ decide who may sign in
// as a node: writing one grants access, so it takes an administrator of
// everything the node reaches.
func IsCredential(typ string) bool { return IsSecret(typ) || typ == TypeEmail }

// Sentinel errors. Functions that return them wrap them with context, so test
// with errors.Is.
var (
	// ErrInvalidPoint reports a point that breaks a rule of the data model;
	// the wrapping *PointError says which field and why.
	ErrInvalidPoint = errors.New("invalid point")
	// ErrTooLarge reports a text, point or message over its size limit.
	ErrTooLarge = errors.New("too large")
)

// PointError describes what is wrong with a point. It matches
// ErrInvalidPoint (and ErrTooLarge for size limits) under errors.Is.
type PointError struct {
	Field  string // "node", "parent", "type", "key", "value", "text", "time" or "origin"
	Reason string
	large  bool
}

func (e *PointError) Error() string {
	return fmt.Sprintf("invalid point: %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidPoint) true, and errors.Is(err,
// ErrTooLarge) true for size violations.
func (e *PointError) Is(target error) bool {
	return target == ErrInvalidPoint || (e.large && target == ErrTooLarge)
}

// Point is one value of a node or of an edge, as held in one register.
//
// A node point is identified by (Node, Type, Key) and has a nil Parent. An
// edge point belongs to the edge Parent→Node and is identified by (Parent,
// Node, Type, Key). Value and Text carry the data; Tombstone marks a deletion,
// which is an ordinary write. Time and Origin order writes to the same
// register (see Compare).
type Point struct {
	Node      uuid.UUID // the node; for an edge point, the child
	Parent    uuid.UUID // uuid.Nil for a node point; the parent for an edge point
	Type      string
	Key       string
	Value     float64
	Text      string
	Tombstone bool
	Time      Timestamp // hybrid logical clock of the write
	Origin    uuid.UUID // the writer: an instance ID or a user's node ID
}

// IsEdge reports whether p is an edge point.
func (p *Point) IsEdge() bool { return p.Parent != uuid.Nil }

// Register is the identity of a register: the fields that say which value a
// point is, as opposed to what it holds.
type Register struct {
	Node   uuid.UUID
	Parent uuid.UUID
	Type   string
	Key    string
}

// Register returns the identity of the register p writes to.
func (p *Point) Register() Register {
	return Register{Node: p.Node, Parent: p.Parent, Type: p.Type, Key: p.Key}
}

// Normalize puts p in canonical form: a blank key becomes DefaultKey and a
// negative zero value becomes zero. Replicas normalize every point they
// accept, so equal writes encode and hash identically.
func (p *Point) Normalize() {
	if p.Key == "" {
		p.Key = DefaultKey
	}
	if p.Value == 0 {
		p.Value = 0 // turns -0 into +0
	}
}

// Validate checks every rule of the data model, including that the point is
// stamped (non-zero Time and Origin). It expects a normalized point (a blank
// key is refused). The error is a *PointError.
func (p *Point) Validate() error {
	if err := p.ValidateUnstamped(); err != nil {
		return err
	}
	if p.Time == 0 {
		return &PointError{Field: "time", Reason: "missing"}
	}
	if p.Origin == uuid.Nil {
		return &PointError{Field: "origin", Reason: "missing"}
	}
	return nil
}

// ValidateUnstamped is Validate without the checks of Time and Origin, for
// points that a server stamps on arrival.
func (p *Point) ValidateUnstamped() error {
	if p.Node == uuid.Nil {
		return &PointError{Field: "node", Reason: "missing (nil UUID)"}
	}
	if p.Parent == p.Node {
		return &PointError{Field: "parent", Reason: "a node cannot be its own parent"}
	}
	if err := checkType(p.Type); err != nil {
		return err
	}
	if p.Type == TypeEdge && p.Parent == uuid.Nil {
		return &PointError{Field: "type", Reason: `"edge" points need a parent`}
	}
	if err := checkKey(p.Key); err != nil {
		return err
	}
	if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
		return &PointError{Field: "value", Reason: "must be a finite number"}
	}
	if math.Signbit(p.Value) && p.Value == 0 {
		return &PointError{Field: "value", Reason: "negative zero (normalize first)"}
	}
	if len(p.Text) > MaxTextLen {
		return &PointError{Field: "text", Reason: fmt.Sprintf("%d bytes, limit %d", len(p.Text), MaxTextLen), large: true}
	}
	if !utf8.ValidString(p.Text) {
		return &PointError{Field: "text", Reason: "not valid UTF-8"}
	}
	return nil
}

// CheckType reports whether s is a valid point type (see MaxTypeLen).
func CheckType(s string) error { return checkType(s) }

// CheckKey reports whether s is a valid, normalized point key (see
// MaxKeyLen).
func CheckKey(s string) error { return checkKey(s) }

func checkType(s string) error {
	if s == "" {
		return &PointError{Field: "type", Reason: "missing"}
	}
	if len(s) > MaxTypeLen {
		return &PointError{Field: "type", Reason: fmt.Sprintf("%d bytes, limit %d", len(s), MaxTypeLen), large: true}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
		if !ok {
			return &PointError{Field: "type", Reason: fmt.Sprintf("character %q at byte %d not allowed (use A-Z a-z 0-9 _ . -)", c, i)}
		}
	}
	return nil
}

func checkKey(s string) error {
	if s == "" {
		return &PointError{Field: "key", Reason: "blank (normalize first)"}
	}
	if len(s) > MaxKeyLen {
		return &PointError{Field: "key", Reason: fmt.Sprintf("%d bytes, limit %d", len(s), MaxKeyLen), large: true}
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return &PointError{Field: "key", Reason: fmt.Sprintf("character %q at byte %d not allowed (printable ASCII without space)", c, i)}
		}
	}
	return nil
}

// ParseID parses a node or origin ID in the canonical 36-character UUID form
// (hex digits in either case). It refuses the nil UUID and the URN and brace
// forms, so that every ID has exactly one textual form.
func ParseID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, fmt.Errorf("invalid ID %q: want 36 characters like 6ba7b810-9dad-11d1-80b4-00c04fd430c8", truncate(s, 64))
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("invalid ID %q: %w", s, err)
	}
	if id == uuid.Nil {
		return uuid.Nil, fmt.Errorf("invalid ID %q: the nil UUID is not an ID", s)
	}
	return id, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
