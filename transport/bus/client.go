package bus

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Errors sent to clients, worded as nats-server words them (nats.go
// matches some of them).
const (
	errAuthorization = "Authorization Violation"
	errExpired       = "User Authentication Expired"
	errStale         = "Stale Connection"
	errMaxConns      = "maximum connections exceeded"
	errMaxSubs       = "Maximum Subscriptions Exceeded"
)

// maxReplies bounds the reply subjects one connection may answer at a
// time (Permissions.Replies).
const maxReplies = 10_000

// finalFlush bounds the last write to a client that is being closed (its
// -ERR): a client that does not read it is not waited for.
const finalFlush = 2 * time.Second

// client is one connection. Its read goroutine (run) parses and handles
// what the client sends, in order; its write goroutine (writeLoop, started
// once the client is authorized) writes what is queued for it and pings
// it. Other clients' read goroutines queue messages for it (deliver).
type client struct {
	srv       *Server
	id        uint64
	raw       net.Conn // what kill closes
	conn      net.Conn // raw, or the TLS connection over it once TLS starts
	inProcess bool

	// Set by run before the client is authorized (and so before any
	// other goroutine sees it), read-only afterwards.
	name                                 string
	verbose, echo, headers, noResponders bool
	access                               Access

	lastIn   atomic.Int64 // unix ns of the last operation read
	pingsOut atomic.Int32

	wake       chan struct{} // a write is pending; capacity 1
	done       chan struct{} // closed by kill
	writerDone chan struct{} // closed when writeLoop returns

	mu         sync.Mutex
	out        []byte // queued for the client, not written yet
	closing    bool   // nothing more is queued; the writer closes after flushing
	dead       bool   // conn closed
	authorized bool
	subs       map[string]*sub // by sid
	replies    map[string]replyGrant
}

// replyGrant is a reply subject the client may publish to.
type replyGrant struct {
	left    int
	expires time.Time
}

func newClient(s *Server, id uint64, conn net.Conn, inProcess bool) *client {
	return &client{srv: s, id: id, raw: conn, conn: conn, inProcess: inProcess, wake: make(chan struct{}, 1),
		done: make(chan struct{}), writerDone: make(chan struct{}), subs: map[string]*sub{}}
}

// serverInfo is the INFO the server sends first.
type serverInfo struct {
	ID          string `json:"server_id"`
	Name        string `json:"server_name"`
	Version     string `json:"version"`
	Proto       int    `json:"proto"`
	Headers     bool   `json:"headers"`
	MaxPayload  int    `json:"max_payload"`
	ClientID    uint64 `json:"client_id"`
	AuthReq     bool   `json:"auth_required,omitempty"`
	TLSRequired bool   `json:"tls_required,omitempty"`
	Nonce       string `json:"nonce"`
}

// connectMsg is the CONNECT a client sends.
type connectMsg struct {
	ConnectOptions
	Verbose      bool  `json:"verbose"`
	Pedantic     bool  `json:"pedantic"`
	Echo         *bool `json:"echo"`
	Headers      bool  `json:"headers"`
	NoResponders bool  `json:"no_responders"`
	Protocol     int   `json:"protocol"`
}

// version is the nats-server version the INFO claims: nats.go enables
// headers and no-responders from 2.2.0 on.
const version = "2.10.0"

// run is the client's read goroutine: handshake, then one operation at a
// time until the connection ends. It returns after the write goroutine.
func (c *client) run(full bool) {
	s := c.srv
	defer s.wg.Done()
	if full {
		c.writeDirect("-ERR '" + errMaxConns + "'\r\n")
		c.raw.Close()
		return
	}
	defer s.forget(c)
	r, ok := c.handshake()
	if !ok {
		c.kill("")
		return
	}
	go c.writeLoop()
	var expiry *time.Timer
	if d := c.access.Deadline; !d.IsZero() {
		expiry = time.AfterFunc(time.Until(d), func() { c.closeWith(errExpired) })
	}
	c.readLoop(r)
	<-c.writerDone
	c.kill("")
	if expiry != nil {
		expiry.Stop()
	}
	c.mu.Lock()
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	for _, sb := range subs {
		s.subs.remove(sb)
	}
	if s.cfg.Closed != nil {
		s.cfg.Closed(c.id)
	}
}

// handshake sends INFO, starts TLS when the server requires it, reads
// CONNECT and asks Authorize. It reports whether the client may go on,
// with the reader to go on with.
func (c *client) handshake() (*bufio.Reader, bool) {
	s := c.srv
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, false
	}
	useTLS := s.cfg.TLS != nil && !c.inProcess
	info := serverInfo{ID: s.id, Name: s.name, Version: version, Proto: 1, Headers: true, MaxPayload: s.cfg.MaxPayload,
		ClientID: c.id, AuthReq: s.cfg.Authorize != nil, TLSRequired: useTLS, Nonce: base64.RawURLEncoding.EncodeToString(raw[:])}
	js, err := json.Marshal(info)
	if err != nil {
		return nil, false
	}
	if err := c.conn.SetDeadline(time.Now().Add(s.cfg.AuthTimeout)); err != nil {
		return nil, false
	}
	if !c.writeDirect("INFO " + string(js) + "\r\n") {
		return nil, false
	}
	if useTLS {
		tc := tls.Server(c.conn, s.cfg.TLS)
		if err := tc.SetDeadline(time.Now().Add(min(s.cfg.TLSTimeout, s.cfg.AuthTimeout))); err != nil {
			return nil, false
		}
		if err := tc.Handshake(); err != nil {
			s.log.Debug("bus: TLS handshake", "remote", c.raw.RemoteAddr().String(), "err", err)
			return nil, false
		}
		c.conn = tc
		if err := tc.SetDeadline(time.Now().Add(s.cfg.AuthTimeout)); err != nil {
			return nil, false
		}
	}
	r := bufio.NewReaderSize(c.conn, readBufferSize)
	o, err := readOp(r, s.cfg.MaxPayload)
	if err != nil {
		var pe protoError
		if errors.As(err, &pe) {
			c.writeDirect("-ERR '" + string(pe) + "'\r\n")
		}
		return nil, false
	}
	var cm connectMsg
	if o.kind != opConnect {
		c.writeDirect("-ERR '" + errAuthorization + "'\r\n")
		return nil, false
	}
	if err := json.Unmarshal(o.connect, &cm); err != nil {
		c.writeDirect("-ERR '" + string(errParser) + "'\r\n")
		return nil, false
	}
	if err := c.conn.SetDeadline(time.Time{}); err != nil {
		return nil, false
	}
	var access Access
	if s.cfg.Authorize != nil {
		access, err = s.cfg.Authorize(ConnectInfo{ID: c.id, Remote: c.raw.RemoteAddr(), InProcess: c.inProcess, Nonce: info.Nonce, Opts: cm.ConnectOptions})
		if err != nil {
			c.writeDirect("-ERR '" + errAuthorization + "'\r\n")
			return nil, false
		}
	}
	c.name, c.verbose, c.headers, c.noResponders = cm.Name, cm.Verbose, cm.Headers, cm.NoResponders
	c.echo = cm.Echo == nil || *cm.Echo
	c.access = access
	c.mu.Lock()
	dead := c.dead
	c.authorized = !dead
	c.mu.Unlock()
	if dead {
		// Killed while Authorize ran: Closed is still called, as for
		// any accepted connection.
		if s.cfg.Authorize != nil && s.cfg.Closed != nil {
			s.cfg.Closed(c.id)
		}
		return nil, false
	}
	c.lastIn.Store(time.Now().UnixNano())
	if c.verbose {
		c.queue("+OK\r\n")
	}
	return r, true
}

// writeDirect writes p before the write goroutine runs, bounded by
// finalFlush, and reports whether it was written.
func (c *client) writeDirect(p string) bool {
	if err := c.conn.SetWriteDeadline(time.Now().Add(finalFlush)); err != nil {
		return false
	}
	_, err := io.WriteString(c.conn, p)
	return err == nil
}

// readLoop handles the client's operations until the connection ends or
// the client breaks the protocol.
func (c *client) readLoop(r *bufio.Reader) {
	s := c.srv
	for {
		o, err := readOp(r, s.cfg.MaxPayload)
		if err != nil {
			var pe protoError
			if errors.As(err, &pe) {
				s.log.Warn("bus: protocol error", "conn", c.id, "name", c.name, "err", string(pe))
				c.closeWith(string(pe))
			} else {
				c.kill("")
			}
			return
		}
		c.lastIn.Store(time.Now().UnixNano())
		switch o.kind {
		case opPing:
			c.queue("PONG\r\n")
			continue
		case opPong:
			c.pingsOut.Store(0)
			continue
		case opConnect:
			// A second CONNECT changes nothing.
		case opPub:
			if !c.canPublish(o.subject) {
				c.queue("-ERR 'Permissions Violation for Publish to " + strconv.Quote(o.subject) + "'\r\n")
				continue
			}
			s.route(c, o.subject, o.reply, o.hdr, o.payload)
		case opSub:
			if msg, fatal := c.subscribe(o); fatal {
				c.closeWith(msg)
				return
			} else if msg != "" {
				c.queue("-ERR '" + msg + "'\r\n")
				continue
			}
		case opUnsub:
			c.unsubscribe(o.sid, o.max)
		}
		if c.verbose {
			c.queue("+OK\r\n")
		}
	}
}

// canPublish reports whether the client may publish to subject: its
// permissions allow it, or it is the reply subject of a request it
// received (which it may then answer once less).
func (c *client) canPublish(subject string) bool {
	p := c.access.Perms
	if p == nil {
		return true
	}
	for _, pat := range p.Publish {
		if matchSubject(pat, subject) {
			return true
		}
	}
	if p.Replies <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.replies[subject]
	if !ok {
		return false
	}
	live := time.Now().Before(g.expires)
	if g.left--; g.left <= 0 || !live {
		delete(c.replies, subject)
	} else {
		c.replies[subject] = g
	}
	return live
}

// subscribe adds the subscription of a SUB, or returns the error to send,
// and whether the connection is to be closed with it.
func (c *client) subscribe(o op) (string, bool) {
	if p := c.access.Perms; p != nil {
		allowed := false
		for _, pat := range p.Subscribe {
			if subsetOf(o.subject, pat) {
				allowed = true
				break
			}
		}
		if !allowed {
			msg := "Permissions Violation for Subscription to " + strconv.Quote(o.subject)
			if o.queue != "" {
				msg += " using queue " + strconv.Quote(o.queue)
			}
			return msg, false
		}
	}
	sb := &sub{c: c, subject: o.subject, queue: o.queue, sid: o.sid}
	c.mu.Lock()
	if c.subs == nil || c.subs[o.sid] != nil {
		c.mu.Unlock()
		return "", false // closing, or a sid in use: nats-server ignores it too
	}
	if m := c.access.MaxSubs; m > 0 && len(c.subs) >= m {
		c.mu.Unlock()
		return errMaxSubs, true
	}
	c.subs[o.sid] = sb
	c.mu.Unlock()
	c.srv.subs.insert(sb)
	return "", false
}

// unsubscribe ends subscription sid now, or after max messages in all.
func (c *client) unsubscribe(sid string, max uint64) {
	c.mu.Lock()
	sb := c.subs[sid]
	if sb == nil {
		c.mu.Unlock()
		return
	}
	if max > 0 && sb.delivered < max {
		sb.max = max
		c.mu.Unlock()
		return
	}
	delete(c.subs, sid)
	c.mu.Unlock()
	c.srv.subs.remove(sb)
}

// deliver queues a message of subscription sb for c and reports whether
// it did (not for a closing client, or a subscription past its maximum).
// hdr is the length of the headers in front of payload, -1 for none.
func (c *client) deliver(sb *sub, subject, reply string, hdr int, payload []byte) bool {
	c.mu.Lock()
	if c.closing || sb.max > 0 && sb.delivered >= sb.max {
		c.mu.Unlock()
		return false
	}
	sb.delivered++
	last := sb.max > 0 && sb.delivered >= sb.max
	if last && c.subs != nil {
		delete(c.subs, sb.sid)
	}
	withHdr := hdr >= 0 && c.headers
	if hdr >= 0 && !c.headers {
		payload = payload[hdr:]
	}
	b := c.out
	if withHdr {
		b = append(b, "HMSG "...)
	} else {
		b = append(b, "MSG "...)
	}
	b = append(append(append(b, subject...), ' '), sb.sid...)
	if reply != "" {
		b = append(append(b, ' '), reply...)
	}
	if withHdr {
		b = strconv.AppendInt(append(b, ' '), int64(hdr), 10)
	}
	b = strconv.AppendInt(append(b, ' '), int64(len(payload)), 10)
	b = append(append(append(b, "\r\n"...), payload...), "\r\n"...)
	c.out = b
	if p := c.access.Perms; reply != "" && p != nil && p.Replies > 0 {
		c.allowReply(reply, p)
	}
	over := len(c.out) > c.srv.cfg.MaxPending
	c.mu.Unlock()
	if last {
		c.srv.subs.remove(sb)
	}
	if over {
		c.srv.log.Warn("bus: slow consumer disconnected", "conn", c.id, "name", c.name, "pending_bytes", c.srv.cfg.MaxPending)
		c.kill("slow consumer")
		return true
	}
	c.signal()
	return true
}

// allowReply lets c answer reply. c.mu is held.
func (c *client) allowReply(reply string, p *Permissions) {
	now := time.Now()
	if c.replies == nil {
		c.replies = map[string]replyGrant{}
	}
	if len(c.replies) >= maxReplies {
		for k, g := range c.replies {
			if !now.Before(g.expires) {
				delete(c.replies, k)
			}
		}
		for k := range c.replies {
			if len(c.replies) < maxReplies {
				break
			}
			delete(c.replies, k) // the bound holds: an arbitrary one goes
		}
	}
	c.replies[reply] = replyGrant{left: p.Replies, expires: now.Add(p.ReplyTTL)}
}

// queue queues a protocol line for the client.
func (c *client) queue(line string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.out = append(c.out, line...)
	c.mu.Unlock()
	c.signal()
}

// closeWith queues -ERR 'msg' as the last thing the client gets; the
// write goroutine closes the connection once it is written.
func (c *client) closeWith(msg string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.out = append(c.out, "-ERR '"+msg+"'\r\n"...)
	c.closing = true
	c.mu.Unlock()
	c.signal()
}

func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// kill closes the connection now; what is queued is dropped. The read
// and write goroutines then return.
func (c *client) kill(string) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead, c.closing = true, true
	c.mu.Unlock()
	close(c.done)
	c.raw.Close()
}

// writeLoop writes what is queued for the client and pings it when it
// has been quiet, until the connection closes.
func (c *client) writeLoop() {
	defer close(c.writerDone)
	cfg := &c.srv.cfg
	ping := time.NewTimer(cfg.PingInterval)
	defer ping.Stop()
	var buf []byte
	for {
		select {
		case <-c.done:
			return
		case <-ping.C:
			ping.Reset(cfg.PingInterval)
			if time.Since(time.Unix(0, c.lastIn.Load())) < cfg.PingInterval {
				continue
			}
			if int(c.pingsOut.Add(1)) > cfg.MaxPingsOut {
				c.closeWith(errStale)
			} else {
				c.queue("PING\r\n")
			}
			continue
		case <-c.wake:
		}
		c.mu.Lock()
		buf, c.out = c.out, buf[:0]
		closing := c.closing
		c.mu.Unlock()
		if len(buf) > 0 {
			d := cfg.WriteDeadline
			if closing {
				d = min(d, finalFlush)
			}
			if c.conn.SetWriteDeadline(time.Now().Add(d)) != nil {
				c.kill("")
				return
			}
			if _, err := c.conn.Write(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					c.srv.log.Warn("bus: slow consumer disconnected", "conn", c.id, "name", c.name, "write_deadline", d)
				}
				c.kill("")
				return
			}
			if cap(buf) > 1<<20 {
				buf = nil // do not keep a large buffer for a quiet client
			}
		}
		if closing {
			c.kill("")
			return
		}
	}
}

// stat describes c, if Authorize accepted it and it is open.
func (c *client) stat() (ConnStat, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.authorized || c.dead {
		return ConnStat{}, false
	}
	return ConnStat{ID: c.id, Name: c.name, Subs: len(c.subs)}, true
}
