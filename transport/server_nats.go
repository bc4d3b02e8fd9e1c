//go:build !lean

package transport

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// clusterUser is the user name routes sign in with; the secret is the
// password.
const clusterUser = "siot-route"

// clusterOptions sets up opts for cfg: the route listener, the routes to
// dial (carrying the secret) and the secret routes must present.
func clusterOptions(opts *server.Options, cfg ClusterConfig) error {
	host, port, err := splitListen(cfg.Listen)
	if err != nil {
		return fmt.Errorf("transport: cluster listen address: %w", err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if len(cfg.Secret) < MinClusterSecret {
		return fmt.Errorf("transport: cluster secret of %d bytes: at least %d", len(cfg.Secret), MinClusterSecret)
	}
	if strings.ContainsAny(cfg.Secret, " \t\r\n") {
		return errors.New("transport: cluster secret holds white space")
	}
	name := cfg.Name
	if name == "" {
		name = "siot"
	}
	opts.Cluster = server.ClusterOpts{
		Name: name, Host: host, Port: port,
		Username: clusterUser, Password: cfg.Secret,
		AuthTimeout: 5,
		// Clients are not told the members' client addresses: a link
		// dials the list it was configured with (siot serve
		// --upstream nats://a,nats://b), and a hostile client learns
		// nothing of the cluster's inside.
		NoAdvertise: true,
	}
	for _, r := range cfg.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || u.User != nil || u.Path != "" && u.Path != "/" {
			return fmt.Errorf("transport: route %q: want nats://host:port", RedactURL(r))
		}
		if u.Scheme != "nats" && u.Scheme != "nats-route" {
			return fmt.Errorf("transport: route %q: want nats://host:port", RedactURL(r))
		}
		u.User = url.UserPassword(clusterUser, cfg.Secret)
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// Server is an embedded NATS server: the message bus of one siot instance.
// Local components reach it in-process; edges, peers and the CLI dial its
// listen address. Every connection authenticates (ServerConfig.Auth) and
// may publish and subscribe only under its identity's prefix.
//
// This is the full build's Server, over nats-server; the lean build's
// (server_lean.go) has the same API over the in-house bus.
type Server struct {
	*serverCore // its conns: closed ones are pruned by Revalidate
	ns          *server.Server
	wsURL       string // WebsocketURL
}

// StartServer starts an embedded NATS server and waits until it accepts
// connections. The caller must call Shutdown.
func StartServer(cfg ServerConfig) (*Server, error) {
	host, port, err := splitListen(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("transport: listen address %w", err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	core, err := newCore(&cfg)
	if err != nil {
		return nil, err
	}
	logger := core.log
	s := &Server{serverCore: core}
	opts := &server.Options{
		Host:       host,
		Port:       port,
		NoSigs:     true, // the siot process owns signals
		MaxPayload: MaxPayload,
		// A link on a slow cellular path is expected; its messages are
		// small and acknowledged, so the default pending limit holds.
		// Keepalive costs bytes on a metered link: a client that pings
		// (a link does, at its own interval) is not pinged as well.
		PingInterval: cfg.PingInterval,
		MaxPingsOut:  3,
		// The server's first PING to a client would otherwise come 2 s
		// after it connects, and a sign-in the Authenticator slows down
		// (failed logins, a slow hash, a loaded machine) takes longer: the
		// PING then reaches the client before the answer to its CONNECT,
		// and nats.go gives up ("expected 'PONG', got 'PING'").
		DisableShortFirstPing: true,
		// Every connection authenticates: nkeys sign this nonce.
		AlwaysEnableNonce:          true,
		CustomClientAuthentication: serverAuth{s},
		// A login waits out its slowdown and a slow hash; a TLS
		// handshake on a cellular link takes seconds.
		AuthTimeout: 15,
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLS = true
		opts.TLSTimeout = 10
	}
	if cfg.Websocket {
		opts.Websocket = server.WebsocketOpts{
			// Loopback only, and without TLS since it never leaves the
			// machine: a WebsocketProxy on the HTTP port is the way in.
			Host: "127.0.0.1", Port: server.RANDOM_PORT, NoTLS: true,
			// The proxy removes the Origin header; a browser always
			// sends one, so a page that found this port is refused.
			AllowedOrigins:   []string{wsNoOrigin},
			HandshakeTimeout: 10 * time.Second,
		}
	}
	if cfg.Cluster.Listen != "" {
		if err := clusterOptions(opts, cfg.Cluster); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("transport: nats server: %w", err)
	}
	s.ns = ns
	// The server reports a failed listen only through its logger (Fatalf)
	// and carries on; fatal hands it to the wait below.
	fatal := make(chan string, 1)
	ns.SetLoggerV2(natsLogger{l: logger, fatal: fatal}, false, false, false)
	ns.Start()
	deadline := time.Now().Add(cfg.ReadyTimeout)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		var err error
		select {
		case msg := <-fatal:
			err = fmt.Errorf("transport: nats server on %s: %s", cfg.Listen, msg)
		default:
			if time.Now().After(deadline) {
				err = fmt.Errorf("transport: nats server on %s not ready after %v", cfg.Listen, cfg.ReadyTimeout)
			}
		}
		if err != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, err
		}
	}
	if cfg.Websocket {
		s.wsURL = ns.WebsocketURL()
	}
	return s, nil
}

// ClientURL returns the nats:// URL clients dial.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// WebsocketURL returns the ws:// URL of the loopback WebSocket listener,
// or "" without one (ServerConfig.Websocket unset).
func (s *Server) WebsocketURL() string {
	return s.wsURL
}

// wsNoOrigin is the one origin the WebSocket listener accepts: none can
// have it (.invalid is reserved), so only requests without an Origin
// header, those of a WebsocketProxy or of a non-browser client on the
// machine, are accepted.
const wsNoOrigin = "http://siot.invalid"

// wsAbsent is why a WebsocketProxy of a Server without WebSocket
// listener answers 501.
const wsAbsent = "this server has no WebSocket listener"

// ClusterAddr returns the route listener's host:port, or "" without a
// cluster.
func (s *Server) ClusterAddr() string {
	if a := s.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Routes returns the number of routes to other cluster members (a
// member may hold several to each).
func (s *Server) Routes() int { return s.ns.NumRoutes() }

// inProcess is what in-process connections are made from.
func (s *Server) inProcess() nats.InProcessConnProvider { return s.ns }

// Shutdown stops the server, closing every client connection, and waits
// until it is down.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// serverAuth is the embedded server's authentication hook.
type serverAuth struct{ s *Server }

// Check authenticates one connection: it verifies an nkey's signature of
// the nonce, asks the Authenticator who the client is, and grants the
// identity's permissions. It refuses leaf nodes and gateways: siot
// configures none. Routes never reach it: the server checks them against
// ClusterConfig.Secret.
func (a serverAuth) Check(c server.ClientAuthentication) bool {
	s := a.s
	o := c.GetOpts()
	if c.Kind() != server.CLIENT || o == nil {
		return false
	}
	// A WebSocket client reached the listener through a WebsocketProxy:
	// the sign-in slowdown and the log name the browser's address.
	remote := s.clientAddr(c.RemoteAddress())
	req := AuthRequest{Key: o.Nkey, User: o.Username, Password: o.Password, Token: o.Token, Remote: remote}
	g, ok := s.authenticate(req, o.Sig, c.GetNonce())
	if !ok {
		return false
	}
	id := g.Identity
	if limited(id) && s.count(id) >= s.maxConns {
		// Closed connections linger in the registry until pruned:
		// prune, then count again.
		s.prune()
		if n := s.count(id); n >= s.maxConns {
			s.refuse(remote, "connection limit", fmt.Errorf("%s has %d connections open, the limit", id, n))
			return false
		}
	}
	s.mu.Lock()
	s.conns[c.GetID()] = g
	s.mu.Unlock()
	perms := permissions(id)
	if s.noPerms {
		perms = nil
	}
	c.RegisterUser(&server.User{Username: id.String(), Permissions: perms, ConnectionDeadline: g.Deadline})
	return true
}

// permissions are what a connection of id may do (grantRules), in
// nats-server's terms.
func permissions(id Identity) *server.Permissions {
	pub, sub, all := grantRules(id)
	if all {
		return nil
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
		Response:  &server.ResponsePermission{MaxMsgs: 1, Expires: replyWindow},
	}
}

// Revalidate asks valid about the grant of every open connection (once per
// identity and credential) and closes the connections it refuses, such as
// those of a revoked key, and those that hold more than MaxSubsPerConn
// subscriptions. It forgets connections that have closed. It returns the
// number of connections it closed.
func (s *Server) Revalidate(valid func(Grant) error) int {
	return s.revalidate(valid, s.prune(), func(cid uint64) bool {
		if s.ns.DisconnectClientByID(cid) != nil {
			return false
		}
		s.mu.Lock()
		delete(s.conns, cid)
		s.mu.Unlock()
		return true
	})
}

// count returns the registered connections of id.
func (s *Server) count(id Identity) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.conns {
		if g.Identity == id {
			n++
		}
	}
	return n
}

// prune forgets the registered connections that have closed. A client is
// listed by the server from its creation, before it authenticates: a
// connection registered before the listing was taken and not in it has
// closed; one registered since may be newer than the listing.
//
// (It used to tell a newer connection by its ID, above the highest
// listed one; but the newest connection, closed while no newer one was
// open, was above it too, and was never forgotten: a device that crashed
// after every other had connected kept its link, and never went offline.)
//
// It returns the connections that hold more than MaxSubsPerConn
// subscriptions, with their number (the system's included: Revalidate
// skips it).
func (s *Server) prune() (heavy map[uint64]int) {
	s.mu.Lock()
	before := make([]uint64, 0, len(s.conns))
	for cid := range s.conns {
		before = append(before, cid)
	}
	s.mu.Unlock()
	cz, err := s.ns.Connz(&server.ConnzOptions{Limit: 1 << 30})
	if err != nil {
		return nil
	}
	open := make(map[uint64]bool, len(cz.Conns))
	for _, ci := range cz.Conns {
		open[ci.Cid] = true
		if int(ci.NumSubs) > s.maxSubs {
			if heavy == nil {
				heavy = map[uint64]int{}
			}
			heavy[ci.Cid] = int(ci.NumSubs)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cid := range before {
		if !open[cid] {
			delete(s.conns, cid)
		}
	}
	return heavy
}

// natsLogger adapts slog to the NATS server's logger: warnings and errors
// only, so steady state is quiet.
type natsLogger struct {
	l     *slog.Logger
	fatal chan<- string // gets the first Fatalf message; never blocks
}

func (n natsLogger) Noticef(string, ...any) {}
func (n natsLogger) Warnf(f string, a ...any) {
	n.l.Warn("nats: " + fmt.Sprintf(f, a...))
}
func (n natsLogger) Fatalf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	n.l.Error("nats: " + msg)
	select {
	case n.fatal <- msg:
	default:
	}
}
func (n natsLogger) Errorf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	if strings.Contains(msg, "authentication error") {
		return // the Server's own, rate-limited line says why
	}
	n.l.Error("nats: " + msg)
}
func (n natsLogger) Debugf(string, ...any) {}
func (n natsLogger) Tracef(string, ...any) {}
