package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/transport"
)

// The kinds of error. Every error a Client returns matches exactly one
// with errors.Is.
var (
	// ErrNotFound: the node asked for is not on the server (it holds no
	// point or edge of it).
	ErrNotFound = errors.New("not found")
	// ErrPermission: the credentials were refused, or do not allow the
	// request (a node outside their scope, a structure change without the
	// admin role).
	ErrPermission = errors.New("permission denied")
	// ErrInvalid: the request is malformed or breaks a rule of the data
	// model (an invalid point, a move that would make a cycle); the same
	// request will fail again.
	ErrInvalid = errors.New("invalid")
	// ErrUnavailable: no reply, no server, a lost connection, or a server
	// that refuses for now (a limit reached, disk below its floor, shutting
	// down): trying again later may succeed. Error.Refused tells a
	// request the server refused (not written) from one that got no reply
	// (which may or may not have been written).
	ErrUnavailable = errors.New("unavailable")
)

// Error is a failed request, said in the user's terms.
type Error struct {
	// Kind is ErrNotFound, ErrPermission, ErrInvalid or ErrUnavailable.
	Kind error
	// Msg is the whole message.
	Msg string
	// Server is the server's own text when it answered with a refusal:
	// nothing of the request was written. Empty when no answer came.
	Server string
	// Err is the cause (a nats.go error, a context's), or nil.
	Err error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the kind and the cause, so errors.Is matches both.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Refused reports whether the server answered the request with a refusal,
// so nothing of it was written.
func (e *Error) Refused() bool { return e.Server != "" }

// IsRefused reports whether err is a request the server refused (nothing
// of it written), as opposed to one that got no reply.
func IsRefused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Refused()
}

func invalidf(format string, a ...any) error {
	return &Error{Kind: ErrInvalid, Msg: fmt.Sprintf(format, a...)}
}

func notFoundf(format string, a ...any) error {
	return &Error{Kind: ErrNotFound, Msg: fmt.Sprintf(format, a...)}
}

// dialError says why connecting to server failed, naming its URL without
// secrets: credentials refused, a NATS server that is no siot server, or
// nothing there. It wraps the cause.
func dialError(server string, err error) error {
	url := transport.RedactURL(server)
	cause := errors.Unwrap(err) // past "transport: dial URL"
	if cause == nil {
		cause = err
	}
	switch {
	case errors.Is(err, nats.ErrAuthorization):
		return &Error{Kind: ErrPermission, Msg: fmt.Sprintf("cannot sign in at %s: %v", url, cause), Err: err}
	case errors.Is(err, nats.ErrNkeysNotSupported):
		return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("no siot server answered at %s: a NATS server is there, but it takes no siot credentials, so no `siot serve` (check --server)", url), Err: err}
	case errors.Is(err, transport.ErrNoURL):
		return &Error{Kind: ErrInvalid, Msg: "no server URL", Err: err}
	}
	return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("cannot connect to %s: %v (is `siot serve` running there? set --server or SIOT_SERVER)", url, cause), Err: err}
}

// requestError says, in the user's terms, why a request sent to c's
// server got no reply: nobody there answers the siot API, the server
// refused it as a permissions violation, or no reply came in time.
func (c *Client) requestError(err error, wait time.Duration) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("no siot server answered at %s: a NATS server is there, but no `siot serve` behind it (check --server)", c.url), Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Kind: ErrUnavailable, Msg: "interrupted", Err: err}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		if p := c.lastAsync.Load(); p != nil && errors.Is(*p, nats.ErrPermissionViolation) {
			return &Error{Kind: ErrPermission, Msg: fmt.Sprintf("permission denied: the server at %s refused the request (it said: %v)", c.url, *p), Err: err}
		}
		return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("no reply from the server at %s within %v (--timeout)", c.url, wait), Err: err}
	case errors.Is(err, nats.ErrConnectionClosed):
		return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("the connection to %s closed (the server stopped?)", c.url), Err: err}
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionReconnecting):
		if last := c.nc.LastError(); last != nil && errors.Is(last, nats.ErrAuthorization) {
			// Reconnecting, and the server refuses the credentials: revoked,
			// or a server that is starting (it refuses every sign-in until
			// its store is open).
			return &Error{Kind: ErrPermission, Msg: fmt.Sprintf("disconnected from %s, which refuses these credentials now: %v", c.url, last), Err: last}
		}
		return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("disconnected from %s (reconnecting)", c.url), Err: err}
	case errors.Is(err, nats.ErrMaxPayload):
		return &Error{Kind: ErrInvalid, Msg: fmt.Sprintf("request to %s: too large for one message: %v", c.url, err), Err: err}
	}
	msg := fmt.Sprintf("request to %s: %v", c.url, err)
	if p := c.lastAsync.Load(); p != nil {
		msg = fmt.Sprintf("%s (the server said: %v)", msg, *p)
	}
	return &Error{Kind: ErrUnavailable, Msg: msg, Err: err}
}

// refusal is the error of a request the server answered with an error:
// what it refused and why, in words, without the server's internal
// prefixes.
func refusal(msg string) error {
	e := &Error{Kind: ErrInvalid, Msg: "the server refused: " + msg, Server: msg}
	switch {
	case strings.Contains(msg, "free disk space below the configured floor"):
		_, detail, _ := strings.Cut(msg, "floor: ")
		if detail != "" {
			detail = " (" + detail + ")"
		}
		e.Kind, e.Msg = ErrUnavailable, "the server refuses writes: disk below its floor"+detail
	case strings.HasPrefix(msg, "permission denied"):
		e.Kind, e.Msg = ErrPermission, msg // "permission denied: node … is outside what … may read"
	case strings.HasPrefix(msg, "limit reached"):
		e.Kind, e.Msg = ErrUnavailable, "the server refused: "+msg+" (retry later)"
	case strings.Contains(msg, "shutting down"), strings.Contains(msg, "corrupt"):
		e.Kind = ErrUnavailable
	}
	return e
}

// containsQuoted reports whether msg names subject in double quotes, as
// a NATS permissions violation does.
func containsQuoted(msg, subject string) bool { return strings.Contains(msg, `"`+subject+`"`) }

// hasQuoted reports whether msg names anything in double quotes.
func hasQuoted(msg string) bool { return strings.Count(msg, `"`) >= 2 }

func joinIDs(ids []string) string { return strings.Join(ids, ", ") }
