package transport

import (
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Kind is the kind of principal a connection authenticated as.
type Kind string

// Kinds of identity. Each connection has exactly one, set by the server
// when it authenticates the connection, never by anything the client sends
// afterwards.
const (
	// KindSystem is this process's own in-process connection: it serves
	// the API and accepts links, and may publish anywhere.
	KindSystem Kind = "system"
	// KindAdmin is the local administrator (DATA/admin.creds): the whole
	// tree, secrets included.
	KindAdmin Kind = "admin"
	// KindKey is an nkey credential held as an "authKey" point on a node:
	// a device's (scope: the node's subtree) or, on the root, a peer's.
	KindKey Kind = "key"
	// KindUser is a user node, signed in with a password or a token from
	// siot login: the subtrees of its parents.
	KindUser Kind = "user"
	// KindLogin is a connection that signed in with an email address and
	// a password: it may only ask for a token (NameToken). Its node is
	// EmailID of the address, which the client can compute before it
	// knows its user's node.
	KindLogin Kind = "login"
)

// emailSpace is the UUID namespace of EmailID.
var emailSpace = uuid.MustParse("5b0e7f7e-6c1a-4b8e-9d57-0c6b1f0a2f43")

// EmailID names a login identity by the email address it signs in with:
// a name-based UUID of the address, trimmed and lowercased.
func EmailID(email string) uuid.UUID {
	return uuid.NewSHA1(emailSpace, []byte(NormalizeEmail(email)))
}

// NormalizeEmail is how an email address is compared: trimmed and
// lowercased.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// localID is the id token of the identities that name no node.
const localID = "local"

// Identity is who a connection is, as the server verified it. Node is the
// key's or user's node; uuid.Nil for KindSystem and KindAdmin.
type Identity struct {
	Kind Kind
	Node uuid.UUID
}

// String is the identity as logs and the server's monitoring show it,
// e.g. "key:6f1c…" or "admin". It holds no secret.
func (id Identity) String() string {
	if id.Node == uuid.Nil {
		return string(id.Kind)
	}
	return string(id.Kind) + ":" + id.Node.String()
}

// Prefix is the subject prefix a connection of this identity publishes
// under: "siot.<kind>.<node or local>". The server grants each connection
// publish and subscribe rights under its own prefix only, so a handler
// that reads the identity from a request's subject reads what the server
// verified.
func (id Identity) Prefix() string {
	tok := localID
	if id.Node != uuid.Nil {
		tok = id.Node.String()
	}
	return "siot." + string(id.Kind) + "." + tok
}

// Inbox is the prefix of the connection's reply subjects, under its
// Prefix so that no other identity may subscribe to them.
func (id Identity) Inbox() string { return id.Prefix() + ".inbox" }

// valid reports whether id is one Identity.Prefix can name.
func (id Identity) valid() bool {
	switch id.Kind {
	case KindSystem, KindAdmin:
		return id.Node == uuid.Nil
	case KindKey, KindUser, KindLogin:
		return id.Node != uuid.Nil
	}
	return false
}

// ParseSubject splits a subject "siot.<kind>.<id>.<rest>" into the
// identity its prefix names and rest. It refuses any other shape, and a
// prefix other than the identity's Prefix (an uppercase node, a nil node
// for "local").
func ParseSubject(subject string) (Identity, string, error) {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) != 4 || parts[0] != "siot" || parts[3] == "" {
		return Identity{}, "", fmt.Errorf("transport: subject %q: want siot.<kind>.<id>.<name>", truncate(subject, 80))
	}
	id := Identity{Kind: Kind(parts[1])}
	if parts[2] != localID {
		n, err := uuid.Parse(parts[2])
		if err != nil || len(parts[2]) != 36 {
			return Identity{}, "", fmt.Errorf("transport: subject %q: bad identity %q", truncate(subject, 80), truncate(parts[2], 40))
		}
		id.Node = n
	}
	// The prefix must be the one id.Prefix spells: a node in uppercase or
	// a nil node in place of "local" would name the identity in a second
	// way, on subjects the server's permissions do not cover.
	if !id.valid() || id.Prefix() != subject[:len(subject)-len(parts[3])-1] {
		return Identity{}, "", fmt.Errorf("transport: subject %q: bad identity", truncate(subject, 80))
	}
	return id, parts[3], nil
}
