// Package client is the Go client library of siot: what edge applications,
// tools and the siot command itself use to talk to a running server.
//
// A Client is one authenticated NATS connection to one server's local API
// (docs/protocol.md, "Local API"). It reconnects by itself when the
// connection drops; a request made while it is disconnected fails at once
// with ErrUnavailable and is known not sent, and one waiting for its reply
// when the connection drops fails then, with ErrUnavailable too (its
// outcome unknown: the server may have applied it). Every method is safe
// for concurrent use.
//
//	cl, err := client.Dial(ctx, "nats://127.0.0.1:4222", client.WithCredsFile("siot-data/admin.creds"))
//	...
//	defer cl.Close()
//	_, err = cl.Set(ctx, client.Point{Node: sensor, Type: "temp", Value: 21.5})
//
// Points are crdt.Point values. A point written without a time (HLC) and
// origin is stamped by the server on arrival; one that carries them keeps
// them. Errors are *Error values that match one of ErrNotFound,
// ErrPermission, ErrInvalid and ErrUnavailable with errors.Is.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// Point is one value of a node or an edge (crdt.Point).
type Point = crdt.Point

// Status is what a server says of itself (siot status).
type Status = transport.Status

// DefaultTimeout is how long a request waits for its reply unless
// WithTimeout says otherwise.
const DefaultTimeout = 30 * time.Second

// An Option configures Dial.
type Option func(*config) error

type config struct {
	creds       *transport.Creds
	login       *transport.Login
	tls         *tls.Config
	timeout     time.Duration
	dialTimeout time.Duration
	name        string
	noReconnect bool
}

// WithCreds signs in with parsed credentials.
func WithCreds(c *transport.Creds) Option {
	return func(cfg *config) error {
		if c == nil {
			return errors.New("client: nil credentials")
		}
		cfg.creds = c
		return nil
	}
}

// WithCredsFile signs in with the credential file at path: a server's
// DATA/admin.creds, a device's file from siot device add, a user's from
// siot login.
func WithCredsFile(path string) Option {
	return func(cfg *config) error {
		c, err := transport.ReadCreds(path)
		if err != nil {
			return err
		}
		cfg.creds = c
		return nil
	}
}

// WithLogin signs in with a user's email address and password. Such a
// connection may only ask for a token (Client.Token), which WithCreds
// then signs in with.
func WithLogin(email, password string) Option {
	return func(cfg *config) error {
		cfg.login = &transport.Login{Email: email, Password: password}
		return nil
	}
}

// WithTLS sets the TLS configuration of the connection.
func WithTLS(t *tls.Config) Option {
	return func(cfg *config) error { cfg.tls = t; return nil }
}

// WithCAFile requires the server's TLS certificate to chain to a CA of the
// PEM file at path.
func WithCAFile(path string) Option {
	return func(cfg *config) error {
		t, err := LoadCA(path)
		if err != nil {
			return err
		}
		cfg.tls = t
		return nil
	}
}

// LoadCA returns a TLS configuration that trusts the CAs of a PEM file.
func LoadCA(path string) (*tls.Config, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// WithTimeout sets how long each request waits for its reply (default
// DefaultTimeout). The connection itself is given at most 10 s.
func WithTimeout(d time.Duration) Option {
	return func(cfg *config) error {
		if d <= 0 {
			return errors.New("client: timeout must be positive")
		}
		cfg.timeout = d
		return nil
	}
}

// WithName names the connection in the server's monitoring.
func WithName(name string) Option {
	return func(cfg *config) error { cfg.name = name; return nil }
}

// WithoutReconnect makes the client give up when the connection drops:
// every later request fails with ErrUnavailable. Commands that run once
// use it.
func WithoutReconnect() Option {
	return func(cfg *config) error { cfg.noReconnect = true; return nil }
}

// Client is a connection to a running server's local API.
type Client struct {
	nc      *nats.Conn
	url     string             // the server's URL, without secrets, for errors
	id      transport.Identity // who the server knows us as
	timeout time.Duration

	// lastAsync is the last error the server sent outside a reply (a
	// permissions violation): a request it refused that way gets no reply.
	lastAsync atomic.Pointer[error]
	mu        sync.Mutex
	inflight  map[*inflight]struct{}

	// Node adds, removes, moves and lists nodes.
	Node Nodes
}

// inflight is one request waiting for its reply: a permissions violation
// of its subject ends it at once rather than let it time out.
type inflight struct {
	subject string
	cancel  context.CancelCauseFunc
}

// Dial connects to the server at url (nats://host:port, tls://host:port,
// or several separated by commas) and signs in. Credentials are required
// (WithCreds or WithCredsFile): every siot server refuses anonymous
// clients. ctx bounds the connection attempt.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	cfg := config{timeout: DefaultTimeout, name: "siot client"}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, &Error{Kind: ErrInvalid, Msg: err.Error(), Err: err}
		}
	}
	if cfg.creds == nil && cfg.login == nil {
		err := errors.New("no credentials: give --creds FILE or SIOT_CREDS (a server writes its administrator's to DATA/admin.creds)")
		return nil, &Error{Kind: ErrPermission, Msg: err.Error(), Err: transport.ErrNoCreds}
	}
	var id transport.Identity
	if cfg.login != nil {
		id, cfg.creds = cfg.login.Identity(), nil
	} else {
		var err error
		if id, err = cfg.creds.Identity(); err != nil {
			return nil, &Error{Kind: ErrInvalid, Msg: err.Error(), Err: err}
		}
	}
	cfg.dialTimeout = min(cfg.timeout, 10*time.Second)
	if d, ok := ctx.Deadline(); ok {
		cfg.dialTimeout = min(cfg.dialTimeout, max(time.Until(d), time.Millisecond))
	}
	c := &Client{url: transport.RedactURL(url), id: id, timeout: cfg.timeout, inflight: map[*inflight]struct{}{}}
	c.Node = Nodes{c: c}
	nc, err := transport.Dial(url, transport.DialConfig{Name: cfg.name, Timeout: cfg.dialTimeout,
		Creds: cfg.creds, Login: cfg.login, TLS: cfg.tls, OnError: c.noteAsync, OnDisconnect: c.dropped, Reconnect: !cfg.noReconnect})
	if err != nil {
		return nil, dialError(url, err)
	}
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, &Error{Kind: ErrUnavailable, Msg: "interrupted", Err: err}
	}
	c.nc = nc
	return c, nil
}

// Close closes the connection. Requests in flight fail with
// ErrUnavailable.
func (c *Client) Close() { c.nc.Close() }

// URL is the server's URL, without secrets.
func (c *Client) URL() string { return c.url }

// Identity is who the server knows this client as.
func (c *Client) Identity() transport.Identity { return c.id }

// Connected reports whether the connection is up now.
func (c *Client) Connected() bool { return c.nc.IsConnected() }

// LastError is the connection's last error: while it reconnects, why the
// last attempt failed (a refused sign-in wraps nats.ErrAuthorization).
func (c *Client) LastError() error { return c.nc.LastError() }

// noteAsync keeps an error the server sent outside a reply, and ends the
// requests in flight that it refused.
func (c *Client) noteAsync(err error) {
	c.lastAsync.Store(&err)
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for f := range c.inflight {
		// The violation names the subject: end the requests sent there,
		// or all of them when it cannot be told.
		if msg := err.Error(); f.subject == "" || containsQuoted(msg, f.subject) || !hasQuoted(msg) {
			f.cancel(err)
		}
	}
}

// errDropped ends the requests in flight when the connection drops: their
// replies cannot come any more (a reply is sent on the connection the
// request came by), so waiting out their timeout would only delay the
// caller.
var errDropped = errors.New("the connection dropped while the request waited for its reply")

// dropped ends every request in flight (from a NATS goroutine).
func (c *Client) dropped(error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for f := range c.inflight {
		f.cancel(errDropped)
	}
}

// Request sends req (a message of package transport) as the local API
// request name (transport.NameStatus, ...) and decodes the reply into
// resp. It is the escape hatch below the typed methods.
func (c *Client) Request(ctx context.Context, name string, req, resp any) error {
	return c.RequestWait(ctx, name, req, resp, 0)
}

// RequestWait is Request for a request the server may hold for up to
// extra (a watch): the reply is awaited for the timeout plus extra.
func (c *Client) RequestWait(ctx context.Context, name string, req, resp any, extra time.Duration) error {
	b, err := transport.Encode(req)
	if err != nil {
		return &Error{Kind: ErrInvalid, Msg: err.Error(), Err: err}
	}
	wait := c.timeout + extra
	// To the server this client dialed, not any member of its cluster.
	subj := transport.SubjectOn(c.nc, c.id, name)
	denied, deny := context.WithCancelCause(ctx)
	defer deny(nil)
	f := &inflight{subject: subj, cancel: deny}
	c.mu.Lock()
	c.inflight[f] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, f)
		c.mu.Unlock()
	}()
	rctx, cancel := context.WithTimeout(denied, wait)
	defer cancel()
	m, err := c.nc.RequestWithContext(rctx, subj, b)
	if err != nil {
		cause := context.Cause(denied)
		if errors.Is(cause, nats.ErrPermissionViolation) {
			return &Error{Kind: ErrPermission, Msg: fmt.Sprintf("permission denied: the server at %s refused the request (%v)", c.url, cause), Err: cause}
		}
		if errors.Is(cause, errDropped) {
			return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("%s: %v; it may or may not have been applied", c.url, cause), Err: cause}
		}
		return c.requestError(err, wait)
	}
	if err := transport.Decode(m.Data, 0, resp); err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) {
			return refusal(re.Msg)
		}
		return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("unreadable reply from %s: %v", c.url, err), Err: err}
	}
	return nil
}

// Status asks the server for its status: its root, its links, and who it
// knows this client as.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.Request(ctx, transport.NameStatus, transport.StatusRequest{}, &st)
	return st, err
}

// ServerRoot returns the server's root node, whatever the credentials
// reach.
func (c *Client) ServerRoot(ctx context.Context) (uuid.UUID, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return uuid.Nil, err
	}
	id, err := crdt.ParseID(st.ID)
	if err != nil {
		return uuid.Nil, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("server root: %v", err), Err: err}
	}
	return id, nil
}

// Token asks for a login token, on a connection signed in WithLogin, for
// ttl (0: the server's default; never above its limit), and returns it
// as the user's credentials.
func (c *Client) Token(ctx context.Context, ttl time.Duration) (*transport.Creds, error) {
	var tok transport.TokenReply
	if err := c.Request(ctx, transport.NameToken, transport.TokenRequest{TTL: int64(ttl / time.Second)}, &tok); err != nil {
		return nil, err
	}
	return &transport.Creds{Kind: transport.KindUser, Node: tok.User, Token: tok.Token, Expires: time.UnixMilli(tok.Expires)}, nil
}

// Root returns the node a client starts from by default: the server's
// root, or, for credentials that reach one subtree (a device, a user with
// one parent), that subtree's root. Credentials that reach several
// subtrees get ErrInvalid naming them.
func (c *Client) Root(ctx context.Context) (uuid.UUID, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return uuid.Nil, err
	}
	var s string
	switch len(st.Scope) {
	case 0:
		s = st.ID
	case 1:
		s = st.Scope[0]
	default:
		return uuid.Nil, invalidf("these credentials reach %d subtrees (%s): name one", len(st.Scope), joinIDs(st.Scope))
	}
	id, err := crdt.ParseID(s)
	if err != nil {
		return uuid.Nil, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("server root: %v", err), Err: err}
	}
	return id, nil
}
