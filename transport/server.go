package transport

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/siot-io/siot/crdt"
)

// MaxPayload is the NATS payload limit siot servers run with: a frame of
// crdt.MaxMessageSize plus its header and some room.
const MaxPayload = crdt.MaxMessageSize + 4096

// ServerConfig configures an embedded NATS server.
type ServerConfig struct {
	// Listen is the client listen address, host:port. Port 0 picks a free
	// port (tests). Required.
	Listen string
	// Logger receives the server's warnings and errors; nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds how long StartServer waits for the listener.
	// Zero means 10 s.
	ReadyTimeout time.Duration
	// Auth decides who each connection is (SetAuth changes it). Nil
	// refuses every connection but the in-process one of Connect.
	Auth Authenticator
	// TLS, when set, is required of every client on the listener.
	TLS *tls.Config
	// MaxConnsPerIdentity bounds the open connections of one identity
	// (the local administrator's aside); more are refused. Zero means 64.
	MaxConnsPerIdentity int
	// PingInterval is how often the server pings a client it has heard
	// nothing from (NATS keepalive; a client that pings as often is never
	// pinged). Zero means 2 minutes.
	PingInterval time.Duration
	// MaxSubsPerConn bounds the subscriptions of a connection other than
	// the system's; Revalidate closes one that holds more. Zero means
	// 1,000.
	MaxSubsPerConn int
	// NoPermissions grants authenticated connections no subject
	// permissions: any of them may publish and subscribe anywhere. Only
	// for the benchmarks that measure what permissions cost; siot serve
	// never sets it.
	NoPermissions bool
	// Websocket opens a WebSocket listener for NATS clients (browsers) on
	// a free loopback port, without TLS, for a WebsocketProxy to pass
	// connections to; browsers never reach it directly (WebsocketURL).
	// Its clients authenticate and are granted permissions exactly as
	// those of Listen. The lean build has none: it ignores Websocket.
	Websocket bool
	// Cluster, when its Listen is set, makes this server a member of a
	// NATS cluster with the servers of other siot instances (scale-out:
	// docs/operations.md). Zero: a server of its own.
	Cluster ClusterConfig
}

// ClusterConfig joins an embedded server to a NATS cluster. The members
// exchange every message over routes, so a client connected to any of
// them reaches the subscribers of all; each member still authenticates
// its own clients, with its own replica's store.
type ClusterConfig struct {
	// Listen is the route listen address, host:port (port 0: a free port).
	Listen string
	// Routes are other members' route addresses, nats://host:port. One
	// is enough: members tell each other about the rest.
	Routes []string
	// Secret is what every member's routes sign in with, the same on all
	// of them (siot serve reads it from --cluster-secret). At least
	// MinClusterSecret bytes. A route that presents another is refused.
	Secret string
	// Name is the cluster's name, the same on every member; empty means
	// "siot".
	Name string
}

// MinClusterSecret is the shortest ClusterConfig.Secret accepted.
const MinClusterSecret = 32

// splitListen parses host:port; port 0 asks for a free port.
func splitListen(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	return host, port, nil
}

// Authenticator decides who a connection is. The server calls
// Authenticate once per connection, from that connection's goroutine, so
// it may block (a slow password hash, a slowdown after failed logins)
// without holding up other clients. It returns what to grant, or an error
// saying why it refuses, which the server logs and the client sees as an
// authorization violation.
type Authenticator interface {
	Authenticate(req AuthRequest) (Grant, error)
}

// Grant is an accepted connection's identity. Deadline, when not zero, is
// when the server closes the connection (an expiring token). Credential
// names the credential used (a public key, a token) so that Revalidate can
// check it again later; it stays in memory and is never logged.
type Grant struct {
	Identity   Identity
	Deadline   time.Time
	Credential string
}

// AuthRequest is what a connecting client presented. Password and Token
// are secrets: never log them.
type AuthRequest struct {
	// Key is the client's nkey public key; the server has checked its
	// signature of the connection's nonce. Empty without an nkey.
	Key      string
	User     string
	Password string
	Token    string
	Remote   net.Addr
}

// Connect opens an in-process client connection (no TCP) named name, as
// the system identity: it may publish and subscribe anywhere. The caller
// closes it.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	pub, _ := s.sys.PublicKey()
	nc, err := nats.Connect("", nats.InProcessServer(s.inProcess()), nats.Name(name), nats.NoReconnect(),
		nats.UserInfo(string(KindSystem), ""), nats.Nkey(pub, s.sys.Sign),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			s.log.Warn("nats client", "conn", name, "subject", subject, "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("transport: in-process connection: %w", err)
	}
	return nc, nil
}

// ConnectAs opens an in-process connection authenticated with creds, as a
// remote client would be (tests, and a process that talks to its own
// server). The caller closes it.
func (s *Server) ConnectAs(name string, creds *Creds) (*nats.Conn, error) {
	copts, err := creds.options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect("", append(copts, nats.InProcessServer(s.inProcess()), nats.Name(name), nats.NoReconnect())...)
	if err != nil {
		return nil, fmt.Errorf("transport: in-process connection: %w", err)
	}
	return nc, nil
}

// serverCore is what both builds' Servers hold: the system key, the
// Authenticator, the registry of authenticated connections and the count
// of refusals.
type serverCore struct {
	sys nkeys.KeyPair // the in-process connections' key; never leaves the process
	log *slog.Logger

	maxConns int
	maxSubs  int
	noPerms  bool
	ping     time.Duration // ServerConfig.PingInterval

	mu    sync.Mutex
	auth  Authenticator
	conns map[uint64]Grant // authenticated connections by client ID
	// refused counts connections refused, by reason class.
	refused    map[string]uint64
	refusedLog map[string]refusedLine // by source and reason
	// proxied are the clients of a WebsocketProxy's open connections to
	// the WebSocket listener, by the proxy end's address: the listener
	// sees the proxy, the Authenticator must see the browser.
	proxied map[string]net.Addr
}

// newCore fills cfg's defaults and makes the system key.
func newCore(cfg *ServerConfig) (*serverCore, error) {
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	if cfg.MaxConnsPerIdentity <= 0 {
		cfg.MaxConnsPerIdentity = 64
	}
	if cfg.MaxSubsPerConn <= 0 {
		cfg.MaxSubsPerConn = 1000
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 2 * time.Minute
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	sys, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("transport: system key: %w", err)
	}
	return &serverCore{sys: sys, log: logger, auth: cfg.Auth, maxConns: cfg.MaxConnsPerIdentity, maxSubs: cfg.MaxSubsPerConn,
		noPerms: cfg.NoPermissions, ping: cfg.PingInterval, proxied: map[string]net.Addr{}, conns: make(map[uint64]Grant), refused: make(map[string]uint64), refusedLog: map[string]refusedLine{}}, nil
}

// authenticate decides who a connection is: it verifies an nkey's
// signature (sig) of the connection's nonce, recognises the system key,
// and otherwise asks the Authenticator. A refusal is counted and logged
// (refuse) and reported as false.
func (s *serverCore) authenticate(req AuthRequest, sig string, nonce []byte) (Grant, bool) {
	if req.Key != "" {
		if err := verifyNonce(req.Key, sig, nonce); err != nil {
			s.refuse(req.Remote, "bad signature", err)
			return Grant{}, false
		}
	}
	if pub, _ := s.sys.PublicKey(); req.Key != "" && req.Key == pub {
		return Grant{Identity: Identity{Kind: KindSystem}}, true
	}
	s.mu.Lock()
	auth := s.auth
	s.mu.Unlock()
	if auth == nil {
		s.refuse(req.Remote, "no authenticator", errors.New("this server accepts no remote clients yet"))
		return Grant{}, false
	}
	g, err := auth.Authenticate(req)
	if err != nil {
		s.refuse(req.Remote, "refused", err)
		return Grant{}, false
	}
	if !g.Identity.valid() || g.Identity.Kind == KindSystem {
		s.refuse(req.Remote, "refused", fmt.Errorf("authenticator granted identity %q", g.Identity))
		return Grant{}, false
	}
	return g, true
}

// proxyFor records that the connection from local (the proxy's end) to
// the WebSocket listener carries client's; the returned func forgets it.
func (s *serverCore) proxyFor(local, client net.Addr) (forget func()) {
	key := local.String()
	s.mu.Lock()
	s.proxied[key] = client
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.proxied, key)
		s.mu.Unlock()
	}
}

// clientAddr returns the address of the client behind remote: the
// browser's when remote is a WebsocketProxy's connection, else remote.
func (s *serverCore) clientAddr(remote net.Addr) net.Addr {
	if remote == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.proxied[remote.String()]; ok {
		return a
	}
	return remote
}

// limited reports whether id is held to MaxConnsPerIdentity: all but the
// system and the local administrator are.
func limited(id Identity) bool { return id.Kind != KindSystem && id.Kind != KindAdmin }

// replyWindow is how long a connection may answer a request it received.
const replyWindow = 2 * time.Minute

// grantRules are the subjects a connection of id may publish and
// subscribe to (subject patterns): under its prefix; a login connection
// may only ask for a token. all is set for the system connection, which
// may do anything. Besides these, a connection may answer each request
// it received once, within replyWindow.
func grantRules(id Identity) (pub, sub []string, all bool) {
	if id.Kind == KindSystem {
		return nil, nil, true
	}
	pfx := id.Prefix()
	pub = []string{pfx + ".>"}
	if id.Kind == KindLogin {
		// A token request, to any server or to a named one (SubjectOn).
		pub = []string{Subject(id, NameToken), Subject(id, NameToken) + ".*"}
	}
	return pub, []string{pfx + ".>"}, false
}

// SetAuth sets the Authenticator that decides who connects from now on
// (nil: nobody but the system identity). A replica sets itself once it is
// open.
func (s *serverCore) SetAuth(a Authenticator) {
	s.mu.Lock()
	s.auth = a
	s.mu.Unlock()
}

// verifyNonce checks that sig (base64url, as nats.go sends it) is pub's
// signature of nonce.
func verifyNonce(pub, sig string, nonce []byte) error {
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return fmt.Errorf("nkey: %w", err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return errors.New("nkey signature: not base64")
		}
	}
	if len(nonce) == 0 {
		return errors.New("no nonce")
	}
	if err := kp.Verify(nonce, raw); err != nil {
		return errors.New("nkey signature does not match")
	}
	return nil
}

// refuse counts a refused connection from remote and logs it, at most
// once a minute per source and reason.
func (s *serverCore) refuse(remote net.Addr, class string, err error) {
	host := ""
	if a := remote; a != nil {
		host = a.String()
		if h, _, e := net.SplitHostPort(host); e == nil {
			host = h
		}
	}
	// One line a minute per source and reason: a revoked device that
	// keeps retrying does not flood the log.
	now := time.Now()
	key := host + " " + class
	s.mu.Lock()
	s.refused[class]++
	last, seen := s.refusedLog[key]
	log := !seen || now.Sub(last.at) >= time.Minute
	held := last.held
	if log {
		if len(s.refusedLog) >= 10_000 {
			clear(s.refusedLog)
		}
		s.refusedLog[key] = refusedLine{at: now}
	} else {
		last.held++
		s.refusedLog[key] = last
	}
	s.mu.Unlock()
	if log {
		s.log.Warn("connection refused", "remote", host, "reason", class, "err", err, "repeats_not_logged", held)
	}
}

// refusedLine is when a refusal was last logged for one source and
// reason, and how many since were not.
type refusedLine struct {
	at   time.Time
	held int
}

// Refused returns how many connections were refused, by reason.
func (s *serverCore) Refused() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.refused))
	for k, v := range s.refused {
		out[k] = v
	}
	return out
}

// Connections returns the number of open connections of each identity, as
// of the last Revalidate (closed ones may linger until then).
func (s *serverCore) Connections() map[Identity]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[Identity]int{}
	for _, g := range s.conns {
		out[g.Identity]++
	}
	return out
}

// RedactURL returns u with any user name, password or token replaced by
// "redacted", for logs and status. A string that is not a URL is returned
// as "invalid URL".
func RedactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, part := range parts {
		pu, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			parts[i] = "invalid URL"
			continue
		}
		if pu.User != nil {
			pu.User = url.User("redacted")
		}
		parts[i] = pu.String()
	}
	return strings.Join(parts, ",")
}

// SplitServers splits a link URL into the servers it names: one NATS URL,
// or several separated by commas (the members of a cluster). It refuses
// an empty entry, one that is not a nats:// or tls:// URL with a host,
// and credentials in a URL: nats.go would send them instead of the
// credential file's, and they would show in logs and status.
func SplitServers(serverURL string) ([]string, error) { return splitServers(serverURL) }

func splitServers(serverURL string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(serverURL, ",") {
		part = strings.TrimSpace(part)
		pu, err := url.Parse(part)
		switch {
		case part == "":
			return nil, fmt.Errorf("transport: dial %s: an empty server in the list", RedactURL(serverURL))
		case err != nil || pu.Host == "" || pu.Scheme != "nats" && pu.Scheme != "tls":
			return nil, fmt.Errorf("transport: dial %s: not a URL", RedactURL(part))
		case pu.User != nil:
			return nil, fmt.Errorf("transport: dial %s: put credentials in a credential file, not in the URL", RedactURL(part))
		}
		out = append(out, part)
	}
	return out, nil
}

// DialConfig configures a client connection to another instance's server.
type DialConfig struct {
	// Name identifies the connection in the server's monitoring.
	Name string
	// Timeout bounds the TCP connect and NATS handshake. Zero means 20 s:
	// a TLS handshake can take 4 s on a cellular link.
	Timeout time.Duration
	// PingInterval is the NATS keepalive: a ping this often, and the
	// connection is dropped after two unanswered. Zero means 30 s.
	PingInterval time.Duration
	// OnDisconnect is called (from a NATS goroutine) when the connection
	// drops; the connection does not reconnect by itself unless
	// Reconnect is set.
	// OnError receives the connection's asynchronous errors (a slow
	// consumer, a write to a peer that went away); nil drops them.
	// nats.go would write them to stderr, past the caller's logger.
	OnError      func(error)
	OnDisconnect func(error)
	// Creds authenticate the connection. Required, unless Login is set:
	// servers refuse anonymous clients.
	Creds *Creds
	// Login signs in with an email address and a password instead: the
	// connection may then only ask for a token (siot login).
	Login *Login
	// TLS configures TLS: the CAs the server's certificate must chain to.
	// Nil uses TLS only for tls:// URLs, with the system's roots.
	TLS *tls.Config
	// Reconnect makes the connection reconnect by itself, forever, after
	// it drops: the client library's connections, which hold no session.
	// The waits between attempts grow from 100 ms to ReconnectMax
	// (zero: 2 s), with 20% jitter. Nothing is buffered while
	// disconnected: a publish fails at once, so a request sent then is
	// known not sent. A server that refuses the credentials is tried
	// again too (it refuses every sign-in while it starts).
	Reconnect    bool
	ReconnectMax time.Duration
	// OnReconnect is called (from a NATS goroutine) when a Reconnect
	// connection is back.
	OnReconnect func()
}

// reconnectOptions are the nats.go options of a Reconnect connection.
func reconnectOptions(cfg DialConfig) []nats.Option {
	most := cfg.ReconnectMax
	if most <= 0 {
		most = 2 * time.Second
	}
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.IgnoreAuthErrorAbort(),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := 100 * time.Millisecond << min(attempts, 10)
			d = min(d, most)
			return d - time.Duration(mrand.Int64N(int64(d)/5+1))
		}),
	}
	if f := cfg.OnReconnect; f != nil {
		opts = append(opts, nats.ReconnectHandler(func(*nats.Conn) { f() }))
	}
	return opts
}

// Login is an email address and a password. The password is a secret.
type Login struct{ Email, Password string }

// Identity is the identity a login connection is granted.
func (l *Login) Identity() Identity {
	return Identity{Kind: KindLogin, Node: EmailID(l.Email)}
}

// ErrNoCreds is returned by Dial without credentials.
var ErrNoCreds = errors.New("transport: no credentials (every siot server requires them)")

// ErrNoURL is returned by Dial for an empty URL.
var ErrNoURL = errors.New("transport: no server URL")

// Dial connects to a server once, without automatic reconnection: a link
// owns its retries, because every new connection needs a new handshake.
func Dial(serverURL string, cfg DialConfig) (*nats.Conn, error) {
	if serverURL == "" {
		return nil, ErrNoURL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.Creds == nil && cfg.Login == nil {
		return nil, ErrNoCreds
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 30 * time.Second
	}
	servers, err := splitServers(serverURL)
	if err != nil {
		return nil, err
	}
	var copts []nats.Option
	if cfg.Login != nil {
		copts = []nats.Option{nats.CustomInboxPrefix(cfg.Login.Identity().Inbox()), nats.UserInfo(cfg.Login.Email, cfg.Login.Password)}
	} else if copts, err = cfg.Creds.options(); err != nil {
		return nil, err
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.Timeout),
		// The servers are tried in the order given (a link orders its
		// cluster's members itself), and only those: a server's list of
		// others is not trusted to send credentials to.
		nats.DontRandomize(),
		nats.IgnoreDiscoveredServers(),
		nats.PingInterval(cfg.PingInterval),
		nats.MaxPingsOutstanding(2),
	}
	opts = append(opts, copts...)
	if cfg.Reconnect {
		opts = append(opts, reconnectOptions(cfg)...)
	} else {
		opts = append(opts, nats.NoReconnect())
	}
	if cfg.TLS != nil {
		opts = append(opts, nats.Secure(cfg.TLS))
	}
	onErr := cfg.OnError
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if onErr != nil {
			onErr(err)
		}
	}))
	if cfg.OnDisconnect != nil {
		f := cfg.OnDisconnect
		opts = append(opts, nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			// Without reconnection nats.go passes nil for a dropped
			// connection too and keeps the cause in LastError, which is
			// nil after a local Close.
			if err == nil {
				err = nc.LastError()
			}
			f(err)
		}))
	}
	nc, err := nats.Connect(strings.Join(servers, ","), opts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) {
			err = fmt.Errorf("%w: the server refused these credentials (unknown, revoked or expired; the server's log says which)", err)
		}
		return nil, fmt.Errorf("transport: dial %s: %w", RedactURL(serverURL), err)
	}
	return nc, nil
}

// revalidate is Revalidate over either build's server: heavy are the
// connections over MaxSubsPerConn with their subscription counts, and
// disconnect closes a connection and forgets it, reporting whether it was
// still open.
func (s *Server) revalidate(valid func(Grant) error, heavy map[uint64]int, disconnect func(cid uint64) bool) int {
	s.mu.Lock()
	conns := make(map[uint64]Grant, len(s.conns))
	for cid, g := range s.conns {
		conns[cid] = g
	}
	s.mu.Unlock()
	type key struct {
		id   Identity
		cred string
	}
	verdict := map[key]error{}
	closed := 0
	for cid, g := range conns {
		if g.Identity.Kind == KindSystem {
			continue
		}
		k := key{g.Identity, g.Credential}
		err, ok := verdict[k]
		if !ok {
			err = valid(g)
			verdict[k] = err
		}
		if n, over := heavy[cid]; over && err == nil {
			err = fmt.Errorf("%d subscriptions on one connection, more than %d", n, s.maxSubs)
		}
		if err != nil && disconnect(cid) {
			closed++
			s.log.Warn("connection closed", "identity", g.Identity.String(), "reason", err)
		}
	}
	return closed
}
