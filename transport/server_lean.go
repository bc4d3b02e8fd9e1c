//go:build lean

package transport

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/transport/bus"
)

// Server is the embedded message bus of one siot instance. Local
// components reach it in-process; edges, peers and the CLI dial its
// listen address. Every connection authenticates (ServerConfig.Auth) and
// may publish and subscribe only under its identity's prefix.
//
// This is the lean build's Server (-tags lean), over the in-house broker
// of package bus instead of nats-server, with the same API. It leaves out
// clustering: StartServer refuses a ServerConfig.Cluster. As in the full
// build, Revalidate closes a connection holding more than MaxSubsPerConn
// subscriptions; besides, the bus closes one at once at ten times that
// (subsHardCap), so none holds unbounded memory in between.
type Server struct {
	*serverCore // its conns: exact, a connection leaves them when it closes
	bus         *bus.Server
	url         string
}

// ErrLeanCluster is returned by the lean build's StartServer for a
// cluster configuration.
var ErrLeanCluster = errors.New("transport: a cluster (--cluster, --route) is not in the lean build (make lean); use the full build")

// subsHardCap is how many times MaxSubsPerConn a connection's
// subscriptions may reach before the bus closes it without waiting for
// Revalidate.
const subsHardCap = 10

// maxConnsLean bounds the lean server's connections, all identities
// together (nats-server's default is 65,536: a lean build serves an edge).
const maxConnsLean = 4096

// StartServer starts the embedded bus, listening on cfg.Listen. The
// caller must call Shutdown. A Cluster configuration is refused
// (ErrLeanCluster).
func StartServer(cfg ServerConfig) (*Server, error) {
	host, port, err := splitListen(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("transport: listen address %w", err)
	}
	if cfg.Cluster.Listen != "" || len(cfg.Cluster.Routes) > 0 {
		return nil, ErrLeanCluster
	}
	core, err := newCore(&cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{serverCore: core}
	b, err := bus.Start(bus.Config{
		Listen:     net.JoinHostPort(host, strconv.Itoa(port)),
		TLS:        cfg.TLS,
		TLSTimeout: 10 * time.Second,
		MaxPayload: MaxPayload,
		MaxConns:   maxConnsLean,
		// As the full build: a client that pings is not pinged; the
		// first ping comes after a whole interval, never before the
		// answer to a slow sign-in.
		PingInterval: cfg.PingInterval,
		MaxPingsOut:  3,
		// A login waits out its slowdown and a slow hash; a TLS
		// handshake on a cellular link takes seconds.
		AuthTimeout: 15 * time.Second,
		Authorize:   s.authorize,
		Closed:      s.closed,
		Logger:      core.log,
	})
	if err != nil {
		core.log.Error("nats: " + err.Error())
		return nil, fmt.Errorf("transport: nats server on %s: %w", cfg.Listen, err)
	}
	s.bus = b
	scheme := "nats"
	if cfg.TLS != nil {
		scheme = "tls"
	}
	s.url = scheme + "://" + net.JoinHostPort(host, strconv.Itoa(b.Addr().(*net.TCPAddr).Port))
	return s, nil
}

// authorize is the bus's Authorize hook: authenticate, the connection
// limit of the identity, and its permissions.
func (s *Server) authorize(ci bus.ConnectInfo) (bus.Access, error) {
	o := ci.Opts
	req := AuthRequest{Key: o.Nkey, User: o.User, Password: o.Pass, Token: o.Token, Remote: ci.Remote}
	g, ok := s.authenticate(req, o.Sig, []byte(ci.Nonce))
	if !ok {
		return bus.Access{}, errors.New("refused")
	}
	id := g.Identity
	s.mu.Lock()
	n := 0
	if limited(id) {
		for _, other := range s.conns {
			if other.Identity == id {
				n++
			}
		}
	}
	if n >= s.maxConns {
		s.mu.Unlock()
		s.refuse(ci.Remote, "connection limit", fmt.Errorf("%s has %d connections open, the limit", id, n))
		return bus.Access{}, errors.New("connection limit")
	}
	s.conns[ci.ID] = g
	s.mu.Unlock()
	a := bus.Access{Deadline: g.Deadline}
	pub, sub, all := grantRules(id)
	if !all {
		a.MaxSubs = subsHardCap * s.maxSubs
		if !s.noPerms {
			a.Perms = &bus.Permissions{Publish: pub, Subscribe: sub, Replies: 1, ReplyTTL: replyWindow}
		}
	}
	return a, nil
}

// closed is the bus's Closed hook: the connection leaves the registry.
func (s *Server) closed(id uint64) {
	s.mu.Lock()
	delete(s.conns, id)
	s.mu.Unlock()
}

// ClientURL returns the nats:// (tls:// with TLS) URL clients dial.
func (s *Server) ClientURL() string { return s.url }

// WebsocketURL returns "": the lean build has no WebSocket listener, and
// its WebsocketProxy answers 501 Not Implemented.
func (s *Server) WebsocketURL() string { return "" }

// wsAbsent is why a WebsocketProxy answers 501.
const wsAbsent = "WebSocket (/nats) is not in the lean build (make lean); use the full build"

// ClusterAddr returns "": the lean build has no cluster.
func (s *Server) ClusterAddr() string { return "" }

// Routes returns 0: the lean build has no cluster.
func (s *Server) Routes() int { return 0 }

// inProcess is what in-process connections are made from.
func (s *Server) inProcess() nats.InProcessConnProvider { return s.bus }

// Shutdown stops the server, closing every client connection, and waits
// until it is down.
func (s *Server) Shutdown() { s.bus.Shutdown() }

// Revalidate asks valid about the grant of every open connection (once per
// identity and credential) and closes the connections it refuses, such as
// those of a revoked key, and those that hold more than MaxSubsPerConn
// subscriptions. It returns the number of connections it closed.
func (s *Server) Revalidate(valid func(Grant) error) int {
	heavy := map[uint64]int{}
	for _, c := range s.bus.Conns() {
		if c.Subs > s.maxSubs {
			heavy[c.ID] = c.Subs
		}
	}
	return s.revalidate(valid, heavy, func(cid uint64) bool {
		if !s.bus.Disconnect(cid) {
			return false
		}
		s.closed(cid)
		return true
	})
}
