package transport

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
)

// Names of the link protocol's and the local API's requests. A request's
// subject is the sender's identity prefix followed by the name
// (Subject); the server answers every identity's requests (AnyIdentity)
// and learns from the subject who asks. Names are never subjects on their
// own: a request outside an identity prefix reaches nobody.
const (
	// NameHello is where a dialer opens a link (request: Hello, reply:
	// Welcome).
	NameHello = "link.hello"
	// NameStatus answers a StatusRequest with a Status.
	NameStatus = "api.status"
	// NameImport answers an Import with an ImportResult.
	NameImport = "api.import"
	// NameExport answers an ExportRequest with an ExportPage.
	NameExport = "api.export"
	// NameNode answers a NodeRequest with a NodePage.
	NameNode = "api.node"
	// NameEdges answers an EdgesRequest with an EdgesPage.
	NameEdges = "api.edges"
	// NameWatch answers a WatchRequest with a WatchReply, holding it
	// until a change arrives or the wait ends.
	NameWatch = "api.watch"
	// NameToken answers a TokenRequest with a Token: a user signed in
	// with a password gets a short-lived credential (siot login).
	NameToken = "api.token"
)

// Subject returns the subject of request name sent by identity id.
func Subject(id Identity, name string) string { return id.Prefix() + "." + name }

// AnyIdentity returns the subject that matches request name sent by any
// identity: what the server subscribes to.
func AnyIdentity(name string) string { return "siot.*.*." + name }

// SessionSubjects are the subjects of one link session, all under the
// dialer's prefix: "<prefix>.link.<session>.". Only the dialer's identity
// may publish on them.
type SessionSubjects struct {
	// Start: the dialer's Start (request; reply Ack).
	Start string
	// Up: pushes from the dialer to the acceptor (reply: Ack).
	Up string
	// Down: pushes from the acceptor to the dialer (reply: Ack).
	Down string
	// Ping: the dialer's keepalive (request; reply: Ack).
	Ping string
	// Repair: the dialer's digest repair requests (reply: RepairReply).
	Repair string
}

// NewSessionID returns a random session name: 32 hex digits, unguessable,
// valid as one subject token.
func NewSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Subjects returns the subjects of session id opened by dialer. It refuses
// an id that is not 32 lowercase hex digits, so a hostile Welcome cannot
// point a dialer at other subjects (wildcards, other namespaces).
func Subjects(dialer Identity, id string) (SessionSubjects, error) {
	if !dialer.valid() {
		return SessionSubjects{}, fmt.Errorf("transport: bad dialer identity %q", dialer)
	}
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return SessionSubjects{}, fmt.Errorf("transport: bad session id %q", truncate(id, 40))
	}
	p := dialer.Prefix() + ".link." + id + "."
	return SessionSubjects{Start: p + "start", Up: p + "up", Down: p + "down", Ping: p + "ping", Repair: p + "repair"}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
