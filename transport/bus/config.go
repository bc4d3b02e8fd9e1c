package bus

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"time"
)

// Config configures a Server. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Listen is the TCP listen address, host:port (port 0: a free port).
	// Empty: no listener, in-process connections only.
	Listen string
	// Name is the server_name of INFO; empty: the server's ID.
	Name string
	// TLS, when set, is required of every connection on the listener
	// (INFO says tls_required, then the client starts TLS). In-process
	// connections never use it.
	TLS *tls.Config
	// TLSTimeout bounds a TLS handshake.
	TLSTimeout time.Duration
	// MaxPayload is the largest message payload (headers included); a
	// client that sends a larger one gets -ERR 'Maximum Payload
	// Violation' and is disconnected.
	MaxPayload int
	// MaxConns bounds the open connections, in-process ones and those
	// not yet authenticated included; one more is told -ERR 'maximum
	// connections exceeded' and closed.
	MaxConns int
	// MaxPending bounds the bytes queued for one client that it has not
	// read yet; a client past it is disconnected as a slow consumer.
	MaxPending int
	// WriteDeadline bounds one write to a client; a client that does not
	// read for that long is disconnected as a slow consumer.
	WriteDeadline time.Duration
	// PingInterval is how often the server pings a client it has heard
	// nothing from; after MaxPingsOut unanswered pings it sends -ERR
	// 'Stale Connection' and closes the connection.
	PingInterval time.Duration
	MaxPingsOut  int
	// AuthTimeout bounds the time from accepting a connection to its
	// CONNECT (a TLS handshake included).
	AuthTimeout time.Duration
	// Authorize decides whether a connection may stay, from its CONNECT,
	// and what it may do. It is called once per connection from that
	// connection's goroutine, so it may block. An error refuses the
	// connection: it gets -ERR 'Authorization Violation' and is closed.
	// Nil: every connection may do anything.
	Authorize func(ConnectInfo) (Access, error)
	// Closed, when set, is called once for every connection Authorize
	// accepted, after it has closed and its subscriptions are gone.
	Closed func(id uint64)
	// Logger receives warnings (slow consumers, protocol errors); nil
	// discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: nats-server's where it has one.
func DefaultConfig() Config {
	return Config{
		TLSTimeout:    10 * time.Second,
		MaxPayload:    1 << 20,
		MaxConns:      1024,
		MaxPending:    64 << 20,
		WriteDeadline: 10 * time.Second,
		PingInterval:  2 * time.Minute,
		MaxPingsOut:   2,
		AuthTimeout:   2 * time.Second,
	}
}

// withDefaults fills the zero fields of c from DefaultConfig and checks
// the others.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.TLSTimeout <= 0 {
		c.TLSTimeout = d.TLSTimeout
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = d.MaxPayload
	}
	if c.MaxConns <= 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxPending <= 0 {
		c.MaxPending = d.MaxPending
	}
	if c.WriteDeadline <= 0 {
		c.WriteDeadline = d.WriteDeadline
	}
	if c.PingInterval <= 0 {
		c.PingInterval = d.PingInterval
	}
	if c.MaxPingsOut <= 0 {
		c.MaxPingsOut = d.MaxPingsOut
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = d.AuthTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxPayload > 64<<20 {
		return c, errors.New("bus: MaxPayload above 64 MiB")
	}
	if c.MaxPending < 2*c.MaxPayload {
		return c, errors.New("bus: MaxPending below twice MaxPayload")
	}
	return c, nil
}

// ConnectInfo is what Authorize decides from.
type ConnectInfo struct {
	// ID is the connection's ID, unique in the server's life, as
	// Conns, Disconnect and Config.Closed name it.
	ID uint64
	// Remote is the client's address (net.Pipe's for in-process ones).
	Remote    net.Addr
	InProcess bool
	// Nonce is the nonce of the INFO the client was sent; an nkey signs
	// it (Options.Sig).
	Nonce string
	Opts  ConnectOptions
}

// ConnectOptions are the CONNECT fields Authorize sees. Pass and Token
// are secrets.
type ConnectOptions struct {
	User  string `json:"user"`
	Pass  string `json:"pass"`
	Token string `json:"auth_token"`
	Nkey  string `json:"nkey"`
	Sig   string `json:"sig"`
	Name  string `json:"name"`
}

// Access is what an accepted connection may do.
type Access struct {
	// Perms limits what the connection may publish and subscribe to;
	// nil: anything.
	Perms *Permissions
	// Deadline, when not zero, is when the server closes the connection
	// with -ERR 'User Authentication Expired'.
	Deadline time.Time
	// MaxSubs bounds the connection's subscriptions: a SUB past it gets
	// -ERR 'Maximum Subscriptions Exceeded' and the connection is closed.
	// Zero: no bound.
	MaxSubs int
}

// Permissions are the subjects a connection may use. A publish or a
// subscription outside them is refused with -ERR 'Permissions Violation
// for Publish to "subject"' or '... for Subscription to "subject"' and
// the connection stays open.
type Permissions struct {
	// Publish are the subject patterns the connection may publish to.
	Publish []string
	// Subscribe are the patterns the connection may subscribe under: a
	// subscription must match nothing outside one of them.
	Subscribe []string
	// Replies, when not zero, lets the connection answer the requests
	// it receives: publish to the reply subject of a message delivered
	// to it, at most Replies times, within ReplyTTL of the delivery.
	Replies  int
	ReplyTTL time.Duration
}

// ConnStat describes an open connection.
type ConnStat struct {
	ID   uint64
	Name string // CONNECT's name
	Subs int    // its subscriptions
}
