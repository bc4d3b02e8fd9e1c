package bus

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ErrClosed is returned by InProcessConn after Shutdown.
var ErrClosed = errors.New("bus: server shut down")

// Server is a running broker. Its methods are safe for concurrent use.
type Server struct {
	cfg  Config
	id   string
	name string
	ln   net.Listener // nil without Config.Listen
	log  *slog.Logger
	subs sublist

	wg sync.WaitGroup // the accept loop and every client's goroutines

	mu      sync.Mutex
	closed  bool
	nextID  uint64
	clients map[uint64]*client
}

// Start validates cfg, listens on cfg.Listen (when set) and accepts
// connections until Shutdown, which the caller must call.
func Start(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var raw [20]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("bus: server id: %w", err)
	}
	s := &Server{cfg: cfg, id: "N" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:]),
		log: cfg.Logger, clients: map[uint64]*client{}}
	s.name = cfg.Name
	if s.name == "" {
		s.name = s.id
	}
	if cfg.Listen != "" {
		if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("bus: listen: %w", err)
		}
		s.wg.Add(1)
		go s.acceptLoop()
	}
	return s, nil
}

// Addr returns the listener's address, or nil without one.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// ID returns the server_id of INFO, random at each start.
func (s *Server) ID() string { return s.id }

// Name returns the server_name of INFO.
func (s *Server) Name() string { return s.name }

// acceptLoop accepts connections until the listener closes.
func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return // Shutdown
		}
		if err != nil {
			// Out of file descriptors, or a connection reset
			// before it was accepted: wait a little, not to spin.
			s.log.Warn("bus: accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err := s.serve(conn, false); err != nil {
			conn.Close()
		}
	}
}

// InProcessConn returns the client end of a new in-process connection
// (net.Pipe): nats.InProcessServer takes a Server. It fails after
// Shutdown.
func (s *Server) InProcessConn() (net.Conn, error) {
	cli, srv := net.Pipe()
	if err := s.serve(srv, true); err != nil {
		cli.Close()
		srv.Close()
		return nil, err
	}
	return cli, nil
}

// serve registers conn and starts its goroutine; it fails only after
// Shutdown.
func (s *Server) serve(conn net.Conn, inProcess bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.nextID++
	c := newClient(s, s.nextID, conn, inProcess)
	full := len(s.clients) >= s.cfg.MaxConns
	if !full {
		s.clients[c.id] = c
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go c.run(full)
	return nil
}

// forget removes a closed client.
func (s *Server) forget(c *client) {
	s.mu.Lock()
	delete(s.clients, c.id)
	s.mu.Unlock()
}

// Conns returns the open connections that Authorize accepted.
func (s *Server) Conns() []ConnStat {
	s.mu.Lock()
	cs := make([]*client, 0, len(s.clients))
	for _, c := range s.clients {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	var out []ConnStat
	for _, c := range cs {
		if st, ok := c.stat(); ok {
			out = append(out, st)
		}
	}
	return out
}

// Disconnect closes connection id and reports whether it was open.
func (s *Server) Disconnect(id uint64) bool {
	s.mu.Lock()
	c := s.clients[id]
	s.mu.Unlock()
	if c == nil {
		return false
	}
	c.kill("disconnected by the server")
	return true
}

// Shutdown stops accepting, closes every connection and waits until all
// of the server's goroutines have returned. It may be called again.
func (s *Server) Shutdown() {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	cs := make([]*client, 0, len(s.clients))
	for _, c := range s.clients {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	if first && s.ln != nil {
		s.ln.Close()
	}
	for _, c := range cs {
		c.kill("server shut down")
	}
	s.wg.Wait()
}

// route delivers a message published by from: to every plain
// subscription that matches and to one member of each matching queue
// group. A request (a reply subject) that reaches nobody gets the
// no-responders status message back when its client asked for those.
func (s *Server) route(from *client, subject, reply string, hdr int, payload []byte) {
	var skip *client
	if !from.echo {
		skip = from
	}
	delivered := false
	for _, sb := range s.subs.match(subject, skip) {
		if sb.c.deliver(sb, subject, reply, hdr, payload) {
			delivered = true
		}
	}
	if delivered || reply == "" || !from.noResponders || !from.headers {
		return
	}
	for _, sb := range s.subs.match(reply, nil) {
		if sb.c == from {
			sb.c.deliver(sb, reply, "", len(noRespondersHdr), []byte(noRespondersHdr))
		}
	}
}

// noRespondersHdr is the status header of a no-responders message.
const noRespondersHdr = "NATS/1.0 503\r\n\r\n"
