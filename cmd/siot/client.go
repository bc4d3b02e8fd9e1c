package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/transport"
)

// clientFlags are the flags every command that talks to a server shares.
type clientFlags struct {
	server  string
	creds   string
	tlsCA   string
	timeout time.Duration
}

const (
	defaultServer = "nats://127.0.0.1:4222"
	// defaultCreds is the local administrator's credential file of a
	// server started with the default --data, used when it exists.
	defaultCreds = "./siot-data/admin.creds"
)

func (f *clientFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&f.server, "server", envOr(getenv, "SIOT_SERVER", defaultServer), "NATS URL of the siot server (env SIOT_SERVER)")
	fs.StringVar(&f.creds, "creds", envOr(getenv, "SIOT_CREDS", ""), "credential file (env SIOT_CREDS; default "+defaultCreds+" when it exists)")
	fs.StringVar(&f.tlsCA, "tls-ca", envOr(getenv, "SIOT_TLS_CA", ""), "PEM file of the CAs the server's TLS certificate must chain to (env SIOT_TLS_CA)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for each reply")
}

// client is a connection to a running server's local API.
type client struct {
	nc      *nats.Conn
	url     string             // the server's URL, without secrets, for errors
	id      transport.Identity // who the server knows us as: requests go under its prefix
	timeout time.Duration
	async   *asyncErrors
}

// asyncErrors keeps the last error the server sent outside a reply (a
// permissions violation): a request it refused that way gets no reply, so
// a permissions violation ends the request in flight at once, with it as
// the cause, rather than let it time out. Safe for concurrent use: note is
// called from a NATS goroutine.
type asyncErrors struct {
	last   atomic.Pointer[error]
	mu     sync.Mutex
	denied context.CancelCauseFunc // of the request in flight, or nil
}

func (a *asyncErrors) note(err error) {
	a.last.Store(&err)
	if errors.Is(err, nats.ErrPermissionViolation) {
		a.mu.Lock()
		if a.denied != nil {
			a.denied(err)
		}
		a.mu.Unlock()
	}
}

// inFlight makes cancel the request in flight's, until the returned
// function is called.
func (a *asyncErrors) inFlight(cancel context.CancelCauseFunc) (done func()) {
	a.mu.Lock()
	a.denied = cancel
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		a.denied = nil
		a.mu.Unlock()
	}
}

// explain adds the last asynchronous error to err.
func (a *asyncErrors) explain(err error) error {
	if a == nil {
		return err
	}
	if p := a.last.Load(); p != nil {
		return fmt.Errorf("%w (the server said: %v)", err, *p)
	}
	return err
}

// loadCreds reads the credential file the flags name, or the default one.
func (f *clientFlags) loadCreds() (*transport.Creds, error) {
	path := f.creds
	if path == "" {
		if _, err := os.Stat(defaultCreds); err != nil {
			return nil, errors.New("no credentials: give --creds FILE or SIOT_CREDS (a server writes its administrator's to DATA/admin.creds)")
		}
		path = defaultCreds
	}
	return transport.ReadCreds(path)
}

// loadTLS returns the TLS configuration of --tls-ca, or nil.
func loadTLS(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func (f *clientFlags) dial() (*client, error) {
	creds, err := f.loadCreds()
	if err != nil {
		return nil, err
	}
	return f.dialAs(creds)
}

// dialAs connects with creds.
func (f *clientFlags) dialAs(creds *transport.Creds) (*client, error) {
	id, err := creds.Identity()
	if err != nil {
		return nil, err
	}
	tc, err := loadTLS(f.tlsCA)
	if err != nil {
		return nil, err
	}
	async := &asyncErrors{}
	nc, err := transport.Dial(f.server, transport.DialConfig{Name: "siot cli", Timeout: min(f.timeout, 10*time.Second),
		Creds: creds, TLS: tc, OnError: async.note})
	if err != nil {
		return nil, dialError(f.server, err)
	}
	return &client{nc: nc, url: transport.RedactURL(f.server), id: id, timeout: f.timeout, async: async}, nil
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
		return &requestErr{fmt.Sprintf("cannot sign in at %s: %v", url, cause), err}
	case errors.Is(err, nats.ErrNkeysNotSupported):
		return &requestErr{fmt.Sprintf("no siot server answered at %s: a NATS server is there, but it takes no siot credentials, so no `siot serve` (check --server)", url), err}
	}
	return &requestErr{fmt.Sprintf("cannot connect to %s: %v (is `siot serve` running there? set --server or SIOT_SERVER)", url, cause), err}
}

func (c *client) close() { c.nc.Close() }

// call sends req as request name (transport.NameStatus...) and decodes
// the reply into resp. It waits for the reply up to the client's timeout,
// or until ctx is done.
func (c *client) call(ctx context.Context, name string, req, resp any) error {
	return c.callWait(ctx, name, req, resp, 0)
}

// callWait is call for a request the server may hold for up to extra
// (a watch): the reply is awaited for the timeout plus extra.
func (c *client) callWait(ctx context.Context, name string, req, resp any, extra time.Duration) error {
	b, err := transport.Encode(req)
	if err != nil {
		return err
	}
	wait := c.timeout + extra
	denied, deny := context.WithCancelCause(ctx)
	defer deny(nil)
	defer c.async.inFlight(deny)()
	ctx, cancel := context.WithTimeout(denied, wait)
	defer cancel()
	// To the server this client dialed, not any member of its cluster.
	m, err := c.nc.RequestWithContext(ctx, transport.SubjectOn(c.nc, c.id, name), b)
	if err != nil {
		if cause := context.Cause(denied); errors.Is(cause, nats.ErrPermissionViolation) {
			return &requestErr{fmt.Sprintf("permission denied: the server at %s refused the request (%v)", c.url, cause), cause}
		}
		return c.requestError(err, wait)
	}
	if err := transport.Decode(m.Data, 0, resp); err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) {
			return refusal(re.Msg)
		}
		return fmt.Errorf("unreadable reply from %s: %w", c.url, err)
	}
	return nil
}

// requestError says, in the user's terms, why a request sent to c's
// server got no reply: nobody there answers the siot API, the server
// refused it as a permissions violation, or no reply came in time.
func (c *client) requestError(err error, wait time.Duration) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &requestErr{fmt.Sprintf("no siot server answered at %s: a NATS server is there, but no `siot serve` behind it (check --server)", c.url), err}
	case errors.Is(err, context.Canceled):
		return &requestErr{"interrupted", err}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		if p := c.async.last.Load(); p != nil {
			return &requestErr{fmt.Sprintf("permission denied: the server at %s refused the request (it said: %v)", c.url, *p), err}
		}
		return &requestErr{fmt.Sprintf("no reply from the server at %s within %v (--timeout)", c.url, wait), err}
	case errors.Is(err, nats.ErrConnectionClosed):
		return &requestErr{fmt.Sprintf("the connection to %s closed (the server stopped?)", c.url), err}
	}
	return fmt.Errorf("request to %s: %w", c.url, c.async.explain(err))
}

// requestErr is a failed request said in the user's terms; it wraps the
// NATS error, so callers can still tell a timeout from a refusal.
type requestErr struct {
	msg string
	err error
}

func (e *requestErr) Error() string { return e.msg }
func (e *requestErr) Unwrap() error { return e.err }

// refusal is the error of a request the server answered with an error:
// what it refused and why, in words, without the server's internal
// prefixes.
func refusal(msg string) error {
	switch {
	case strings.Contains(msg, "free disk space below the configured floor"):
		_, detail, _ := strings.Cut(msg, "floor: ")
		if detail != "" {
			detail = " (" + detail + ")"
		}
		return &refusedError{why: "the server refuses writes: disk below its floor" + detail, raw: msg}
	case strings.HasPrefix(msg, "permission denied"):
		return &refusedError{why: msg, raw: msg} // "permission denied: node … is outside what … may read"
	case strings.HasPrefix(msg, "limit reached"):
		return &refusedError{why: "the server refused: " + msg + " (retry later)", raw: msg}
	}
	return &refusedError{why: "the server refused: " + msg, raw: msg}
}

// refusedError is a request the server refused; raw is its own text.
type refusedError struct{ why, raw string }

func (e *refusedError) Error() string { return e.why }
