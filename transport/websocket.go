package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

// WebsocketConfig configures a WebsocketProxy.
type WebsocketConfig struct {
	// Origins are the origins, scheme://host[:port], whose pages may
	// connect besides the proxy's own (an Origin whose host and port are
	// the request's Host). A request without an Origin header is not a
	// browser's, and is let through: it needs credentials all the same.
	Origins []string
	// MaxConns bounds the open WebSocket connections; one more is
	// answered 503. Zero means DefaultMaxWebsockets.
	MaxConns int
	// HandshakeTimeout bounds the upgrade exchange with the listener.
	// Zero means 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection one of whose directions carried
	// nothing for this long. NATS keepalive (a PING and its PONG at
	// least every ServerConfig.PingInterval) keeps a live one busy. Zero
	// means three ping intervals.
	IdleTimeout time.Duration
}

// DefaultMaxWebsockets is WebsocketConfig.MaxConns' default.
const DefaultMaxWebsockets = 1024

// WebsocketProxy is an http.Handler that passes WebSocket upgrades to the
// Server's loopback WebSocket listener (ServerConfig.Websocket) and then
// copies bytes both ways, so that browsers reach NATS on the origin of
// the web UI. It checks the request's origin; the listener checks the
// credentials, as on the NATS port. Other requests are answered 400; all
// requests 501 when the Server has no listener (the lean build).
//
// It is safe for concurrent use. Each upgraded connection holds its
// request's goroutine until it ends; Close ends them all.
type WebsocketProxy struct {
	s       *serverCore
	addr    string // the listener's host:port; "" for none
	origins map[string]bool
	sem     chan struct{}
	hs      time.Duration
	idle    time.Duration

	mu     sync.Mutex
	closed bool
	open   map[net.Conn]struct{} // both ends of every upgraded connection
	wg     sync.WaitGroup        // one per request past the checks
}

// WebsocketProxy returns a proxy to the Server's WebSocket listener. It
// fails on a malformed WebsocketConfig.Origins entry. The caller calls
// Close after the Server's Shutdown: connections then end with the
// WebSocket close the server sent.
func (s *Server) WebsocketProxy(cfg WebsocketConfig) (*WebsocketProxy, error) {
	p := &WebsocketProxy{s: s.serverCore, origins: map[string]bool{}, open: map[net.Conn]struct{}{},
		hs: cfg.HandshakeTimeout, idle: cfg.IdleTimeout}
	if u := s.WebsocketURL(); u != "" {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("transport: websocket listener %q: %w", u, err)
		}
		p.addr = pu.Host
	}
	for _, o := range cfg.Origins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil ||
			u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("transport: websocket origin %q: want http://host[:port] or https://host[:port]", o)
		}
		p.origins[originKey(u.Scheme, u.Host)] = true
	}
	n := cfg.MaxConns
	if n <= 0 {
		n = DefaultMaxWebsockets
	}
	p.sem = make(chan struct{}, n)
	if p.hs <= 0 {
		p.hs = 10 * time.Second
	}
	if p.idle <= 0 {
		p.idle = 3 * s.ping
	}
	return p, nil
}

// originKey is scheme://host:port in lowercase, the port explicit.
func originKey(scheme, hostport string) string {
	scheme = strings.ToLower(scheme)
	hostport = strings.ToLower(hostport)
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		port := "80"
		if scheme == "https" {
			port = "443"
		}
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), port)
	}
	return scheme + "://" + hostport
}

// originOK reports whether r's Origin may connect: none (not a browser),
// one of the configured ones, or the request's own host.
func (p *WebsocketProxy) originOK(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Sec-WebSocket-Origin")
	}
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
		return false // "null" (a sandbox, a file) included
	}
	key := originKey(u.Scheme, u.Host)
	// The request's Host is reached with the origin's scheme: behind a
	// TLS proxy the Host of https://example.com is example.com.
	return p.origins[key] || key == originKey(u.Scheme, r.Host)
}

// isUpgrade reports whether r asks for a WebSocket.
func isUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return true
			}
		}
	}
	return false
}

// wsForward are the request headers passed to the listener: those of the
// WebSocket handshake. Cookies, credentials and the origin stay behind.
var wsForward = []string{"Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
	"Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "User-Agent"}

func (p *WebsocketProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		io.WriteString(w, msg+"\n")
	}
	switch {
	case p.addr == "":
		fail(http.StatusNotImplemented, wsAbsent)
		return
	case !isUpgrade(r):
		fail(http.StatusBadRequest, "want a WebSocket upgrade (GET with Upgrade: websocket) to NATS")
		return
	case !p.originOK(r):
		p.s.refuse(tcpAddr(r.RemoteAddr), "websocket origin", fmt.Errorf("origin %q, host %q", r.Header.Get("Origin"), r.Host))
		fail(http.StatusForbidden, "origin not allowed")
		return
	}
	select {
	case p.sem <- struct{}{}:
	default:
		p.s.refuse(tcpAddr(r.RemoteAddr), "websocket limit", fmt.Errorf("%d WebSocket connections open, the limit", cap(p.sem)))
		w.Header().Set("Retry-After", "10")
		fail(http.StatusServiceUnavailable, "too many WebSocket connections")
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.sem
		fail(http.StatusServiceUnavailable, "shutting down")
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer func() {
		<-p.sem
		p.wg.Done()
	}()
	if err := p.pipe(w, r, fail); err != nil {
		p.s.log.Debug("websocket proxy", "remote", r.RemoteAddr, "err", err)
	}
}

// pipe does the upgrade with the listener, hands its answer to the
// client and copies bytes both ways until either end closes or idles.
func (p *WebsocketProxy) pipe(w http.ResponseWriter, r *http.Request, fail func(int, string)) error {
	ctx, cancel := context.WithTimeout(r.Context(), p.hs)
	defer cancel()
	d := net.Dialer{}
	back, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		fail(http.StatusBadGateway, "NATS unreachable")
		return err
	}
	if !p.track(back) {
		back.Close()
		fail(http.StatusServiceUnavailable, "shutting down")
		return nil
	}
	defer p.untrack(back)
	if client := tcpAddr(r.RemoteAddr); client != nil {
		defer p.s.proxyFor(back.LocalAddr(), client)()
	}
	deadline, _ := ctx.Deadline()
	back.SetDeadline(deadline)
	out := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Host: p.addr,
		ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}}
	for _, h := range wsForward {
		if v := r.Header.Values(h); len(v) > 0 {
			out.Header[h] = v
		}
	}
	if a := tcpAddr(r.RemoteAddr); a != nil {
		out.Header.Set("X-Forwarded-For", a.IP.String())
	}
	if err := out.Write(back); err != nil {
		fail(http.StatusBadGateway, "NATS unreachable")
		return err
	}
	br := bufio.NewReader(back)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		fail(http.StatusBadGateway, "NATS did not answer the upgrade")
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		fail(resp.StatusCode, strings.TrimSpace(string(msg)))
		return fmt.Errorf("listener answered %s", resp.Status)
	}
	back.SetDeadline(time.Time{})
	user, ubuf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fmt.Errorf("hijack: %w", err)
	}
	if !p.track(user) {
		user.Close()
		return nil
	}
	defer p.untrack(user)
	user.SetDeadline(time.Time{}) // the http.Server's, if any
	resp.Body = nil
	if err := resp.Write(ubuf); err != nil {
		return err
	}
	if err := ubuf.Flush(); err != nil {
		return err
	}
	// Whatever either side sent past the handshake is in its reader.
	errc := make(chan error, 1)
	go func() { errc <- p.copy(user, back, br) }()
	err = p.copy(back, user, ubuf.Reader)
	// One direction ended: end the other.
	user.Close()
	back.Close()
	if e := <-errc; err == nil || errors.Is(err, net.ErrClosed) {
		err = e
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// copy copies from src (read through rd, which may hold bytes already
// read) to dst until src ends, either fails, or src is silent or dst
// blocked for the idle timeout.
func (p *WebsocketProxy) copy(dst, src net.Conn, rd io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		src.SetReadDeadline(time.Now().Add(p.idle))
		n, err := rd.Read(buf)
		if n > 0 {
			dst.SetWriteDeadline(time.Now().Add(p.idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

// track records an open connection for Close; false once closed.
func (p *WebsocketProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (p *WebsocketProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

// Open returns the number of upgraded connections open or being set up.
func (p *WebsocketProxy) Open() int { return len(p.sem) }

// Close refuses new connections (503), closes the open ones and waits
// for their requests to end. Called after the Server's Shutdown, it
// closes none itself: their WebSocket close has come through.
func (p *WebsocketProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// tcpAddr parses an http.Request's RemoteAddr; nil if it is not ip:port.
func tcpAddr(s string) *net.TCPAddr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}

var _ http.Handler = (*WebsocketProxy)(nil)
