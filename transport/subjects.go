package transport

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
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
	// NameNodes answers a NodesRequest with a NodesReply: which of many
	// nodes the server has (siot import's check of its records).
	NameNodes = "api.nodes"
	// NameVerify answers a VerifyRequest with a VerifyReply: the
	// administrator's check of a running server's store.
	NameVerify = "api.verify"
	// NameHistory answers a HistoryRequest with a HistoryPage: one page
	// of a register's past values, raw or per step (siot history).
	NameHistory = "api.history"
)

// Names of the JSON API: the same operations as the api.* names for
// clients without msgpack (a shell's nats CLI, Python, Node). The request
// and the reply are one JSON object each (UTF-8), every error reply is
// {"error": "..."}, and point records are those of package record
// (docs/protocol.md, "JSON API"). They are served like the api.* names:
// under the requester's prefix, with or without a server name.
const (
	// NameJSONSet writes a point record or an array of them, as an
	// import does: {"applied": n, "stale": n}.
	NameJSONSet = "json.set"
	// NameJSONGet answers {"node", "after", "max"} with one page of the
	// node's records, as api.node: {"known", "records", "next", "more"}.
	NameJSONGet = "json.get"
	// NameJSONWatch answers {"root", "after", "wait", "max"} with the
	// changes after "after", held as api.watch holds:
	// {"records", "next", "last"}, change numbers as decimal strings.
	NameJSONWatch = "json.watch"
	// NameJSONStatus answers {} with {"id", "you", "scope", "lastSeq"}.
	NameJSONStatus = "json.status"
)

// Subject returns the subject of request name sent by identity id.
func Subject(id Identity, name string) string { return id.Prefix() + "." + name }

// AnyIdentity returns the subject that matches request name sent by any
// identity: what the server subscribes to.
func AnyIdentity(name string) string { return "siot.*.*." + name }

// A request may name the server it is for: Subject followed by the
// server's name (SubjectOn). In a cluster every member's replica answers
// requests on Subject as one queue group, so any one of them may answer;
// only the member whose server is named answers a request that names one
// (AtServer). Clients name the server they are connected to, so a link is
// served by the member it reached and ends with that member, and
// siot status describes the server it was pointed at.

// SubjectOn returns the subject of request name sent by identity id to
// the server nc is connected to. A server name that is not one plain
// subject token (a hostile server's) is left out.
func SubjectOn(nc *nats.Conn, id Identity, name string) string {
	subj := Subject(id, name)
	if srv := nc.ConnectedServerName(); plainToken(srv) {
		subj += "." + srv
	}
	return subj
}

// AtServer returns the subject that matches request name sent by any
// identity to the server named server.
func AtServer(name, server string) string { return AnyIdentity(name) + "." + server }

// plainToken reports whether s is 1 to 64 letters, digits, '-' or '_':
// a subject token with no wildcard, separator or space.
func plainToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

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
