package transport

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"siot/crdt"
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
}

// Server is an embedded NATS server: the message bus of one siot instance.
// Local components reach it in-process; edges, peers and the CLI dial its
// listen address.
type Server struct {
	ns *server.Server
}

// StartServer starts an embedded NATS server and waits until it accepts
// connections. The caller must call Shutdown.
func StartServer(cfg ServerConfig) (*Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("transport: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("transport: listen address %q: bad port", cfg.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	opts := &server.Options{
		Host:       host,
		Port:       port,
		NoSigs:     true, // the siot process owns signals
		MaxPayload: MaxPayload,
		// A link on a slow cellular path is expected; its messages are
		// small and acknowledged, so the default pending limit holds.
		PingInterval: 30 * time.Second,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("transport: nats server: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
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
	return &Server{ns: ns}, nil
}

// ClientURL returns the nats:// URL clients dial.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Connect opens an in-process client connection (no TCP) named name. The
// caller closes it.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(s.ns), nats.Name(name), nats.NoReconnect())
	if err != nil {
		return nil, fmt.Errorf("transport: in-process connection: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server, closing every client connection, and waits
// until it is down.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
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
	n.l.Error("nats: " + fmt.Sprintf(f, a...))
}
func (n natsLogger) Debugf(string, ...any) {}
func (n natsLogger) Tracef(string, ...any) {}

// DialConfig configures a client connection to another instance's server.
type DialConfig struct {
	// Name identifies the connection in the server's monitoring.
	Name string
	// Timeout bounds the TCP connect and NATS handshake. Zero means 20 s:
	// a TLS handshake can take 4 s on a cellular link.
	Timeout time.Duration
	// OnDisconnect is called (from a NATS goroutine) when the connection
	// drops; the connection does not reconnect by itself.
	OnDisconnect func(error)
}

// ErrNoURL is returned by Dial for an empty URL.
var ErrNoURL = errors.New("transport: no server URL")

// Dial connects to a server once, without automatic reconnection: a link
// owns its retries, because every new connection needs a new handshake.
func Dial(url string, cfg DialConfig) (*nats.Conn, error) {
	if url == "" {
		return nil, ErrNoURL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Second
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.Timeout),
		nats.NoReconnect(),
		nats.PingInterval(30 * time.Second),
		nats.MaxPingsOutstanding(3),
	}
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
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", url, err)
	}
	return nc, nil
}
