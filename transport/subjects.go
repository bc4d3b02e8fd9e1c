package transport

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
)

// NATS subjects of the link protocol and the local API. All are under
// "siot.", so an operator's NATS permissions can grant them as a group.
const (
	// SubjectHello is where a dialer opens a link (request: Hello, reply:
	// Welcome).
	SubjectHello = "siot.link.hello"
	// SubjectStatus answers a StatusRequest with a Status.
	SubjectStatus = "siot.api.status"
	// SubjectImport answers an Import with an ImportResult.
	SubjectImport = "siot.api.import"
	// SubjectExport answers an ExportRequest with an ExportPage.
	SubjectExport = "siot.api.export"
	// SubjectNode answers a NodeRequest with a NodePage.
	SubjectNode = "siot.api.node"
	// SubjectEdges answers an EdgesRequest with an EdgesPage.
	SubjectEdges = "siot.api.edges"
	// SubjectWatch answers a WatchRequest with a WatchReply, holding it
	// until a change arrives or the wait ends.
	SubjectWatch = "siot.api.watch"
)

// SessionSubjects are the subjects of one link session, all under
// "siot.link.<session>.".
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

// Subjects returns the subjects of session id. It refuses an id that is not
// 32 lowercase hex digits, so a hostile Welcome cannot point a dialer at
// other subjects (wildcards, other namespaces).
func Subjects(id string) (SessionSubjects, error) {
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return SessionSubjects{}, fmt.Errorf("transport: bad session id %q", truncate(id, 40))
	}
	p := "siot.link." + id + "."
	return SessionSubjects{Start: p + "start", Up: p + "up", Down: p + "down", Ping: p + "ping", Repair: p + "repair"}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
