package notify

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Message is one notification: a rule's firing or clearing for one node.
//
// Send validates it before any I/O and refuses it with a permanent error
// when ID is empty, longer than maxIDLen or holds a character other than
// letters, digits and !#$%&'*+-/=?^_`{|}~. (RFC 5322 atext and the dot, so
// that it fits a header and a Message-ID unchanged), when Status is neither
// "firing" nor "resolved", or when Time is zero. Send does not modify the
// Message.
type Message struct {
	ID       string    // stable across retries and across the redundant clouds that may send it; the receiver's idempotency key
	Status   string    // "firing" or "resolved"
	Rule     uuid.UUID // the rule
	RuleName string    // the rule's description
	Node     uuid.UUID // the node the firing is about
	NodeName string    // its description ("" if none)
	Text     string    // the human message (already rendered)
	Time     time.Time // when the rule changed state
	Instance uuid.UUID // the instance sending it
	Values   []Value   // the points the conditions looked at, at that time
}

// Value is one point a rule's condition looked at.
type Value struct {
	Node      uuid.UUID
	Type, Key string
	Value     float64
	Text      string
}

// The values of Message.Status.
const (
	statusFiring   = "firing"
	statusResolved = "resolved"
)

// maxIDLen bounds Message.ID, so a Message-ID header stays well inside a
// mail line.
const maxIDLen = 200

// maxMessageSize bounds the encoded message: the webhook's JSON body, the
// email's header and body.
const maxMessageSize = 256 << 10

// GiveUpAfter is how long a notification is retried before it is marked
// failed: 24 h.
const GiveUpAfter = 24 * time.Hour

// validate checks what both channels need of m; the error is meant to
// follow the channel's name.
func (m *Message) validate() error {
	if m == nil {
		return errors.New("no message")
	}
	if m.ID == "" {
		return errors.New("message has no ID")
	}
	if len(m.ID) > maxIDLen {
		return fmt.Errorf("message ID is %d bytes, more than %d", len(m.ID), maxIDLen)
	}
	for i := 0; i < len(m.ID); i++ {
		if !isIDByte(m.ID[i]) {
			return fmt.Errorf("message ID %q holds %q, not allowed in an ID", oneLine(m.ID), m.ID[i])
		}
	}
	if m.Status != statusFiring && m.Status != statusResolved {
		return fmt.Errorf("message status %q is neither %q nor %q", oneLine(m.Status), statusFiring, statusResolved)
	}
	if m.Time.IsZero() {
		return errors.New("message has no time")
	}
	return nil
}

// isIDByte reports whether b may appear in a Message.ID: RFC 5322 atext or
// a dot.
func isIDByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", b) >= 0
}

// formatTime is the one way times are written: RFC 3339 with milliseconds,
// in UTC.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// sendError is every error a Send returns: its whole text, already free of
// secrets, whether a retry can help, and the cause for errors.Is and
// errors.As (which may be nil).
type sendError struct {
	text      string
	permanent bool
	cause     error
}

func (e *sendError) Error() string { return e.text }
func (e *sendError) Unwrap() error { return e.cause }

// permanentErr returns a permanent error reading "prefix: what".
func permanentErr(prefix, what string, cause error) error {
	return &sendError{text: prefix + ": " + what, permanent: true, cause: cause}
}

// transientErr returns a transient error reading "prefix: what".
func transientErr(prefix, what string, cause error) error {
	return &sendError{text: prefix + ": " + what, cause: cause}
}

// Permanent reports whether err will not go away on retry: a 4xx other
// than 408/429 or a redirect from a webhook, a permanent SMTP reply (5yz),
// an invalid URL, address, configuration or message, a message too large, a
// server lacking what the configuration requires (STARTTLS before AUTH,
// AUTH). Everything else a Send returns is transient: timeouts, connection
// and TLS errors, a cancelled context, 5xx HTTP, 408/429, 4yz SMTP.
//
// err may wrap the error a Send returned. Permanent(nil) and Permanent of
// an error that did not come from this package are false.
func Permanent(err error) bool {
	var se *sendError
	return errors.As(err, &se) && se.permanent
}

// The schedule of Backoff.
const (
	backoffFirst    = 5 * time.Second
	backoffCap      = 10 * time.Minute
	jitterPermyriad = 1000 // ±10 %
)

// Backoff returns the wait before attempt n+1 after n failed attempts
// (n >= 1; a smaller n counts as 1): 5 s doubling to at most 10 min, with
// deterministic jitter of ±10 % derived from key and n (no randomness: the
// same inputs give the same wait, so redundant senders agree). key is
// normally the Message.ID.
//
// The result lies within ±10 % of min(5 s × 2^(n-1), 10 min), and is
// non-decreasing in n while that base is below the cap (each doubling
// outgrows the jitter).
func Backoff(key string, n int) time.Duration {
	if n < 1 {
		n = 1
	}
	base := backoffFirst
	for i := 1; i < n && base < backoffCap; i++ {
		base *= 2
	}
	base = min(base, backoffCap)

	// Hash len(key), key, n: an unambiguous encoding of the inputs.
	buf := make([]byte, 0, 16+len(key))
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(key)))
	buf = append(buf, key...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	sum := sha256.Sum256(buf)
	// j is in [-jitterPermyriad, +jitterPermyriad], uniform but for a
	// modulo bias below 2^-50.
	j := int64(binary.BigEndian.Uint64(sum[:8])%(2*jitterPermyriad+1)) - jitterPermyriad
	return base + time.Duration(int64(base)*j/10000)
}

// oneLine returns s as one line of printable text: every run of
// whitespace, control characters and invalid UTF-8 becomes one space, and
// the ends are trimmed.
func oneLine(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = ' '
		}
		if r == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// clip returns s cut to at most n bytes on a rune boundary, with "…"
// appended when it was cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
