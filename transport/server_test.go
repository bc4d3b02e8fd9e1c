package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"

	"github.com/siot-io/siot/crdt"
)

// srvWait bounds every wait in these tests: long enough for a loaded CI
// machine running -race, short enough that a hang fails the test instead of
// the run.
const srvWait = 10 * time.Second

// srvCheckLeaks fails the test if it leaves goroutines behind. Call it
// first, so its cleanup runs after every other (cleanups run last in,
// first out): by then the test's servers are down and its connections
// closed. goleak.VerifyNone retries for a while, so goroutines that are on
// their way out do not count. No goroutine is ignored beyond those running
// before the test: after Shutdown the NATS server and the nats.go clients
// stop every goroutine they started.
func srvCheckLeaks(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// srvStart starts a server on a random loopback port and shuts it down at
// the end of the test.
func srvStart(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := StartServer(cfg)
	if err != nil {
		t.Fatalf("StartServer(%q): %v", cfg.Listen, err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// srvAuth is the tests' Authenticator: it accepts the nkeys it holds, each
// as its identity, and the email addresses and passwords of logins, and
// refuses every other client. Its maps are not changed once the server
// runs, so concurrent Authenticate calls only read them.
type srvAuth struct {
	keys   map[string]Identity // by nkey public key
	logins map[string]string   // passwords by email address
}

var _ Authenticator = srvAuth{}

func (a srvAuth) Authenticate(req AuthRequest) (Grant, error) {
	if req.Key == "" {
		if pw, ok := a.logins[req.User]; ok && req.Password == pw {
			return Grant{Identity: Identity{Kind: KindLogin, Node: EmailID(req.User)}, Credential: req.User}, nil
		}
		return Grant{}, errors.New("no nkey")
	}
	id, ok := a.keys[req.Key]
	if !ok {
		return Grant{}, errors.New("unknown nkey")
	}
	return Grant{Identity: id, Credential: req.Key}, nil
}

// srvAuthFor returns an Authenticator that accepts exactly creds, each as
// its identity.
func srvAuthFor(t *testing.T, creds ...*Creds) srvAuth {
	t.Helper()
	a := srvAuth{keys: map[string]Identity{}, logins: map[string]string{}}
	for _, c := range creds {
		id, err := c.Identity()
		if err != nil {
			t.Fatal(err)
		}
		a.keys[authPublicKey(t, c)] = id
	}
	return a
}

// srvStartAdmin starts a server, as srvStart, whose Authenticator accepts
// one admin key, and returns its credentials for Dial.
func srvStartAdmin(t *testing.T, cfg ServerConfig) (*Server, *Creds) {
	t.Helper()
	admin := authKeyCreds(t, authRand(t), KindAdmin, uuid.Nil)
	cfg.Auth = srvAuthFor(t, admin)
	return srvStart(t, cfg), admin
}

// srvConnect opens an in-process connection closed at the end of the test.
func srvConnect(t *testing.T, s *Server, name string) *nats.Conn {
	t.Helper()
	nc, err := s.Connect(name)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// srvDial dials url and closes the connection at the end of the test.
func srvDial(t *testing.T, url string, cfg DialConfig) *nats.Conn {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = srvWait
	}
	nc, err := Dial(url, cfg)
	if err != nil {
		t.Fatalf("Dial(%s): %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// srvEventually polls cond until it holds or srvWait passes.
func srvEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(srvWait)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("%s: not after %v", what, srvWait)
		case <-tick.C:
		}
	}
}

// srvWithin runs f and fails the test if it does not return within d.
func srvWithin(t *testing.T, what string, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still running after %v", what, d)
	}
}

// srvFreePort returns a loopback address nothing listens on: a port the
// kernel just handed out and that was closed again.
func srvFreePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestServerClientURL(t *testing.T) {
	srvCheckLeaks(t)
	s, _ := srvStartAdmin(t, ServerConfig{})
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatalf("ClientURL %q: %v", s.ClientURL(), err)
	}
	if u.Scheme != "nats" || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" {
		t.Fatalf("ClientURL = %q, want nats://127.0.0.1:<port>", s.ClientURL())
	}
	if !net.ParseIP(u.Hostname()).IsLoopback() {
		t.Fatalf("ClientURL %q is not loopback", s.ClientURL())
	}
}

// TestServerRequestReply runs the link handshake's shape over a real
// server: a Dial()ed connection asks, an in-process one answers, and the
// other way round.
func TestServerRequestReply(t *testing.T) {
	srvCheckLeaks(t)
	s, admin := srvStartAdmin(t, ServerConfig{})
	dialer := Identity{Kind: KindAdmin}
	local := srvConnect(t, s, "local")
	remote := srvDial(t, s.ClientURL(), DialConfig{Name: "edge", Creds: admin})
	if got := remote.ConnectedUrl(); got != s.ClientURL() {
		t.Errorf("ConnectedUrl = %q, want %q", got, s.ClientURL())
	}

	session := NewSessionID()
	sub, err := local.Subscribe(AnyIdentity(NameHello), func(m *nats.Msg) {
		if id, _, err := ParseSubject(m.Subject); err != nil || id != dialer {
			_ = m.Respond(EncodeError(fmt.Errorf("hello from %q", m.Subject)))
			return
		}
		var h Hello
		var reply []byte
		if err := Decode(m.Data, 0, &h); err != nil {
			reply = EncodeError(err)
		} else {
			reply, _ = Encode(&Welcome{Instance: h.Root, Root: h.Instance, Time: h.Time + 1, Session: session, Have: 7})
		}
		_ = m.Respond(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := local.Flush(); err != nil { // the server has the subscription
		t.Fatal(err)
	}
	hello := Hello{Proto: LinkProto, Instance: uuid.New(), Root: uuid.New(), Role: RoleEdge, Time: 1000}
	req, _ := Encode(hello)
	resp, err := remote.Request(Subject(dialer, NameHello), req, srvWait)
	if err != nil {
		t.Fatalf("request from the dialed connection: %v", err)
	}
	var w Welcome
	if err := Decode(resp.Data, 0, &w); err != nil {
		t.Fatal(err)
	}
	want := Welcome{Instance: hello.Root, Root: hello.Instance, Time: 1001, Session: session, Have: 7}
	if w != want {
		t.Fatalf("Welcome = %+v, want %+v", w, want)
	}
	// A refused request comes back as a RemoteError.
	resp, err = remote.Request(Subject(dialer, NameHello), []byte{Version + 1, byte(MsgHello), 0x80}, srvWait)
	if err != nil {
		t.Fatal(err)
	}
	if err := Decode(resp.Data, 0, &w); !IsRemote(err) || !strings.Contains(err.Error(), ErrVersion.Error()) {
		t.Fatalf("reply to a bad hello: %v, want a RemoteError about the version", err)
	}

	// The other way: the dialed side answers, the in-process side asks.
	subj, err := Subjects(dialer, session)
	if err != nil {
		t.Fatal(err)
	}
	sub2, err := remote.Subscribe(subj.Down, func(m *nats.Msg) {
		var p Push
		if err := Decode(m.Data, 0, &p); err != nil {
			_ = m.Respond(EncodeError(err))
			return
		}
		ack, _ := Encode(Ack{Have: p.Through})
		_ = m.Respond(ack)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Unsubscribe()
	if err := remote.Flush(); err != nil {
		t.Fatal(err)
	}
	push, _ := Encode(Push{From: 0, Through: 3, Points: crdt.AppendBatch(nil, wireSensorPoints(3))})
	resp, err = local.Request(subj.Down, push, srvWait)
	if err != nil {
		t.Fatalf("request from the in-process connection: %v", err)
	}
	var ack Ack
	if err := Decode(resp.Data, 0, &ack); err != nil || ack != (Ack{Have: 3}) {
		t.Fatalf("ack = %+v, %v", ack, err)
	}
}

// TestServerCarriesLargestFrame: the largest frame Decode accepts
// (crdt.MaxMessageSize) crosses the bus in both directions, and so does a
// payload of exactly MaxPayload bytes.
func TestServerCarriesLargestFrame(t *testing.T) {
	srvCheckLeaks(t)
	s, admin := srvStartAdmin(t, ServerConfig{})
	pfx := Identity{Kind: KindAdmin}.Prefix()
	local := srvConnect(t, s, "local")
	remote := srvDial(t, s.ClientURL(), DialConfig{Name: "edge", Creds: admin})
	for _, nc := range []*nats.Conn{local, remote} {
		if got := nc.MaxPayload(); got != MaxPayload {
			t.Fatalf("MaxPayload seen by the client = %d, want %d", got, MaxPayload)
		}
	}
	probe, _ := Encode(Import{Points: make([]byte, 1<<16)})
	big := Import{Points: bytes.Repeat([]byte{0x5a}, crdt.MaxMessageSize-(len(probe)-1<<16))}
	frame, err := Encode(big)
	if err != nil || len(frame) != crdt.MaxMessageSize {
		t.Fatalf("test frame of %d bytes (%v), want %d", len(frame), err, crdt.MaxMessageSize)
	}
	for _, dir := range []struct {
		name          string
		asker, answer *nats.Conn
	}{{"dialed to in-process", remote, local}, {"in-process to dialed", local, remote}} {
		subject := pfx + ".test.big." + strings.ReplaceAll(dir.name, " ", "-")
		sub, err := dir.answer.Subscribe(subject, func(m *nats.Msg) {
			var imp Import
			if err := Decode(m.Data, 0, &imp); err != nil {
				_ = m.Respond(EncodeError(err))
				return
			}
			res, _ := Encode(ImportResult{Applied: len(imp.Points)})
			_ = m.Respond(res)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := dir.answer.Flush(); err != nil {
			t.Fatal(err)
		}
		resp, err := dir.asker.Request(subject, frame, srvWait)
		if err != nil {
			t.Fatalf("%s: request of %d bytes: %v", dir.name, len(frame), err)
		}
		var res ImportResult
		if err := Decode(resp.Data, 0, &res); err != nil || res.Applied != len(big.Points) {
			t.Fatalf("%s: result %+v, %v; want %d bytes applied", dir.name, res, err, len(big.Points))
		}
		_ = sub.Unsubscribe()
	}

	sub, err := local.SubscribeSync(pfx + ".test.max")
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := remote.Publish(pfx+".test.max", make([]byte, MaxPayload)); err != nil {
		t.Fatalf("publish of MaxPayload bytes: %v", err)
	}
	m, err := sub.NextMsg(srvWait)
	if err != nil || len(m.Data) != MaxPayload {
		t.Fatalf("received %v, want %d bytes", err, MaxPayload)
	}
}

// TestServerRefusesOversizedPayload shows the limit is the server's, not
// only the client's: nats.go refuses to publish past the limit the server
// announced, and a client that ignores it is told off and disconnected by
// the server itself.
func TestServerRefusesOversizedPayload(t *testing.T) {
	srvCheckLeaks(t)
	s, admin := srvStartAdmin(t, ServerConfig{})
	over := make([]byte, MaxPayload+1)
	subject := Identity{Kind: KindAdmin}.Prefix() + ".test.over"
	local := srvConnect(t, s, "local")
	remote := srvDial(t, s.ClientURL(), DialConfig{Name: "edge", Creds: admin})
	for name, nc := range map[string]*nats.Conn{"in-process": local, "dialed": remote} {
		if err := nc.Publish(subject, over); !errors.Is(err, nats.ErrMaxPayload) {
			t.Errorf("%s: publish of MaxPayload+1 bytes: %v, want nats.ErrMaxPayload", name, err)
		}
		if _, err := nc.Request(subject, over, time.Second); !errors.Is(err, nats.ErrMaxPayload) {
			t.Errorf("%s: request of MaxPayload+1 bytes: %v, want nats.ErrMaxPayload", name, err)
		}
		if err := nc.Flush(); err != nil || !nc.IsConnected() {
			t.Errorf("%s: connection unusable after the refused publish: %v", name, err)
		}
	}

	// Speak the protocol by hand, as a client that ignores the limit
	// would: the server announces MaxPayload, then refuses the PUB from
	// its header, before any payload is sent. The client signs the
	// server's nonce with the admin key, as nats.go would.
	u, _ := url.Parse(s.ClientURL())
	conn, err := net.DialTimeout("tcp", u.Host, srvWait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(srvWait)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("first line %q, %v; want INFO", line, err)
	}
	var info struct {
		MaxPayload int64  `json:"max_payload"`
		Nonce      string `json:"nonce"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, "INFO "))), &info); err != nil {
		t.Fatalf("INFO %q: %v", line, err)
	}
	if info.MaxPayload != MaxPayload {
		t.Fatalf("server announces max_payload %d, want %d", info.MaxPayload, MaxPayload)
	}
	kp, err := nkeys.FromSeed(admin.Seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	sig, err := kp.Sign([]byte(info.Nonce))
	if err != nil || info.Nonce == "" {
		t.Fatalf("signing nonce %q: %v", info.Nonce, err)
	}
	connect, _ := json.Marshal(map[string]any{"verbose": false, "pedantic": false, "user": "admin",
		"nkey": pub, "sig": base64.RawURLEncoding.EncodeToString(sig)})
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nPUB %s %d\r\n", connect, subject, MaxPayload+1); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for {
		line, err := r.ReadString('\n')
		got.WriteString(line)
		if err != nil {
			break // the server closed the connection, as it should
		}
	}
	if !strings.Contains(got.String(), "-ERR 'Maximum Payload Violation'") {
		t.Fatalf("server answered %q, want a Maximum Payload Violation", got.String())
	}
}

// TestServerShutdownClosesClients: Shutdown returns with clients still
// connected, the dialed connection's OnDisconnect fires, both connections
// end up closed (neither reconnects), and the server takes no new
// in-process connection.
func TestServerShutdownClosesClients(t *testing.T) {
	srvCheckLeaks(t)
	s, admin := srvStartAdmin(t, ServerConfig{})
	subject := Identity{Kind: KindAdmin}.Prefix() + ".test.x"
	local := srvConnect(t, s, "local")
	disconnected := make(chan error, 4)
	remote := srvDial(t, s.ClientURL(), DialConfig{Name: "edge", Creds: admin, OnDisconnect: func(err error) { disconnected <- err }})
	sub, err := remote.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Flush(); err != nil {
		t.Fatal(err)
	}
	srvWithin(t, "Shutdown", srvWait, s.Shutdown)
	select {
	case err := <-disconnected:
		t.Logf("OnDisconnect(%v); LastError %v", err, remote.LastError())
	case <-time.After(srvWait):
		t.Fatalf("OnDisconnect not called %v after Shutdown", srvWait)
	}
	srvEventually(t, "dialed connection closed", remote.IsClosed)
	srvEventually(t, "in-process connection closed", local.IsClosed)
	if _, err := sub.NextMsg(10 * time.Millisecond); err == nil {
		t.Error("subscription still delivers after Shutdown")
	}
	if err := remote.Publish(subject, []byte("x")); err == nil {
		t.Error("publish after Shutdown succeeded")
	}
	var nc *nats.Conn
	srvWithin(t, "Connect after Shutdown", srvWait, func() { nc, err = s.Connect("late") })
	if err == nil {
		nc.Close()
		t.Error("Connect after Shutdown succeeded")
	}
	srvWithin(t, "second Shutdown", srvWait, s.Shutdown)
	select {
	case err := <-disconnected:
		t.Errorf("OnDisconnect called twice (second: %v)", err)
	default:
	}
}

// TestDialOnDisconnectOnClose pins what the link layer sees when it closes
// its own connection: OnDisconnect is called then too (nats.go reports
// every disconnect), once, with a nil error.
func TestDialOnDisconnectOnClose(t *testing.T) {
	srvCheckLeaks(t)
	s, admin := srvStartAdmin(t, ServerConfig{})
	disconnected := make(chan error, 4)
	nc, err := Dial(s.ClientURL(), DialConfig{Timeout: srvWait, Creds: admin, OnDisconnect: func(err error) { disconnected <- err }})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	select {
	case err := <-disconnected:
		if err != nil {
			t.Errorf("OnDisconnect(%v) after Close, want nil", err)
		}
	case <-time.After(srvWait):
		t.Fatalf("OnDisconnect not called %v after Close", srvWait)
	}
	if !nc.IsClosed() {
		t.Error("connection not closed after Close")
	}
}

func TestStartServerRefusesBadAddress(t *testing.T) {
	srvCheckLeaks(t)
	for _, addr := range []string{"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:nats", "127.0.0.1:-1", "127.0.0.1:65536",
		"127.0.0.1:99999999999999999999", "127.0.0.1:0:0", "[::1:0"} {
		var s *Server
		var err error
		srvWithin(t, fmt.Sprintf("StartServer(%q)", addr), srvWait, func() {
			s, err = StartServer(ServerConfig{Listen: addr, ReadyTimeout: 200 * time.Millisecond})
		})
		if err == nil {
			s.Shutdown()
			t.Errorf("StartServer(%q) succeeded", addr)
			continue
		}
		if s != nil {
			t.Errorf("StartServer(%q) returned a server with its error", addr)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", addr)) || !strings.HasPrefix(err.Error(), "transport: listen address") {
			t.Errorf("StartServer(%q) = %q, want an error naming the address", addr, err)
		}
	}
}

// srvLogHandler records the server's log for assertions.
type srvLogHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *srvLogHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *srvLogHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}
func (h *srvLogHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *srvLogHandler) WithGroup(string) slog.Handler      { return h }

func (h *srvLogHandler) errors() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if r.Level >= slog.LevelError {
			out = append(out, r.Message)
		}
	}
	return out
}

// TestStartServerPortInUse: a second server on a taken port fails with an
// error after ReadyTimeout instead of hanging, logs the listen error, and
// leaves the first server serving.
func TestStartServerPortInUse(t *testing.T) {
	srvCheckLeaks(t)
	first, admin := srvStartAdmin(t, ServerConfig{})
	u, _ := url.Parse(first.ClientURL())
	addr := "127.0.0.1:" + u.Port()
	logs := &srvLogHandler{}
	const ready = 300 * time.Millisecond
	start := time.Now()
	var second *Server
	var err error
	srvWithin(t, "second StartServer", srvWait, func() {
		second, err = StartServer(ServerConfig{Listen: addr, ReadyTimeout: ready, Logger: slog.New(logs)})
	})
	took := time.Since(start)
	if err == nil {
		second.Shutdown()
		t.Fatalf("second server on %s started", addr)
	}
	if second != nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("second StartServer = %v, %q; want nil and an error naming %s", second, err, addr)
	}
	t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
	var listenErr bool
	for _, m := range logs.errors() {
		listenErr = listenErr || strings.Contains(m, "listen")
	}
	if !listenErr {
		t.Errorf("logged errors %q, want the listen error", logs.errors())
	}
	nc := srvDial(t, first.ClientURL(), DialConfig{Creds: admin})
	if _, err := nc.RTT(); err != nil {
		t.Fatalf("first server after the second failed: %v", err)
	}
}

func TestDialNoURL(t *testing.T) {
	nc, err := Dial("", DialConfig{})
	if !errors.Is(err, ErrNoURL) || nc != nil {
		t.Fatalf("Dial(\"\") = %v, %v; want ErrNoURL", nc, err)
	}
}

// TestDialClosedPort: nothing listens; Dial fails at once, well within
// its timeout, with an error naming the URL.
func TestDialClosedPort(t *testing.T) {
	srvCheckLeaks(t)
	u := "nats://" + srvFreePort(t)
	const timeout = 2 * time.Second
	start := time.Now()
	var nc *nats.Conn
	var err error
	creds := authKeyCreds(t, authRand(t), KindAdmin, uuid.Nil)
	srvWithin(t, "Dial", timeout+srvWait, func() { nc, err = Dial(u, DialConfig{Timeout: timeout, Creds: creds}) })
	took := time.Since(start)
	if err == nil {
		nc.Close()
		t.Fatalf("Dial(%s) to a closed port succeeded", u)
	}
	if nc != nil || !strings.Contains(err.Error(), u) {
		t.Errorf("Dial = %v, %q; want nil and an error naming %s", nc, err, u)
	}
	if took > timeout {
		t.Errorf("Dial took %v, timeout %v", took, timeout)
	}
	t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
}

// TestDialTimeoutBoundsHandshake: a listener that accepts and never
// speaks (a server wedged, or a blackholed path after SYN) fails Dial after
// about Timeout, not never.
func TestDialTimeoutBoundsHandshake(t *testing.T) {
	srvCheckLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		l.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	}()
	const timeout = 300 * time.Millisecond
	start := time.Now()
	var nc *nats.Conn
	creds := authKeyCreds(t, authRand(t), KindAdmin, uuid.Nil)
	srvWithin(t, "Dial", timeout+srvWait, func() {
		nc, err = Dial("nats://"+l.Addr().String(), DialConfig{Timeout: timeout, Creds: creds})
	})
	took := time.Since(start)
	if err == nil {
		nc.Close()
		t.Fatal("Dial to a silent listener succeeded")
	}
	if took < timeout {
		t.Errorf("Dial gave up after %v, before its timeout %v", took, timeout)
	}
	t.Logf("gave up after %v: %v", took.Round(time.Millisecond), err)
}

func TestDialBadURL(t *testing.T) {
	srvCheckLeaks(t)
	creds := authKeyCreds(t, authRand(t), KindAdmin, uuid.Nil)
	for _, u := range []string{"nats://127.0.0.1:notaport", "nats://127.0.0.1:99999", "://x"} {
		var nc *nats.Conn
		var err error
		srvWithin(t, "Dial("+u+")", srvWait, func() { nc, err = Dial(u, DialConfig{Timeout: time.Second, Creds: creds}) })
		if err == nil {
			nc.Close()
			t.Errorf("Dial(%q) succeeded", u)
		}
	}
}

// srvDialErrs connects to url with opts, sending the connection's
// asynchronous errors (the server's -ERR for a refused subscription or
// publish) to errs, and closes it at the end of the test.
func srvDialErrs(t *testing.T, url string, errs chan<- error, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append(opts, nats.Timeout(srvWait), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default: // the test fails on the error it misses
			}
		}))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// srvCredsOptions returns the nats.go options of creds.
func srvCredsOptions(t *testing.T, creds *Creds) []nats.Option {
	t.Helper()
	opts, err := creds.options()
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// srvWantViolation waits for the server to report a permissions violation
// on the connection whose errors errs receives, naming what ("Publish to
// \"subject\"").
func srvWantViolation(t *testing.T, nc *nats.Conn, errs <-chan error, what string) {
	t.Helper()
	if err := nc.Flush(); err != nil { // the server has answered the operation before
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), what) {
			t.Errorf("error %v, want a permissions violation for %s", err, what)
		}
	case <-time.After(srvWait):
		t.Fatalf("no permissions violation for %s after %v", what, srvWait)
	}
}

// TestServerAuthentication: the server refuses clients without
// credentials it accepts, and confines each accepted client to its
// identity's prefix: it may neither subscribe nor publish outside it,
// and what it publishes under it is delivered.
func TestServerAuthentication(t *testing.T) {
	srvCheckLeaks(t)
	r := authRand(t)
	admin := authKeyCreds(t, r, KindAdmin, uuid.Nil)
	key := authKeyCreds(t, r, KindKey, authUUID(t, r))
	other := authKeyCreds(t, r, KindKey, authUUID(t, r))
	stranger := authKeyCreds(t, r, KindKey, authUUID(t, r))
	auth := srvAuthFor(t, admin, key, other)
	const email, password = "ann@example.com", "hunter2 hunter2"
	auth.logins[email] = password
	s := srvStart(t, ServerConfig{Auth: auth})
	u := s.ClientURL()

	strangerKey, err := nkeys.FromSeed(stranger.Seed)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"anonymous", nil},
		{"user and password", []nats.Option{nats.UserInfo("admin", "admin")}},
		{"wrong login password", []nats.Option{nats.UserInfo(email, password+"x")}},
		{"token", []nats.Option{nats.Token("v1.x.y")}},
		{"unknown key", srvCredsOptions(t, stranger)},
		{"admin key signed by another", []nats.Option{nats.Nkey(authPublicKey(t, admin), strangerKey.Sign)}},
	} {
		nc, err := nats.Connect(u, append(tc.opts, nats.Timeout(srvWait), nats.NoReconnect())...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", tc.name)
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: %v, want nats.ErrAuthorization", tc.name, err)
		}
	}
	if nc, err := Dial(u, DialConfig{Timeout: srvWait, Creds: stranger}); err == nil {
		nc.Close()
		t.Error("Dial with an unknown key connected")
	} else if !errors.Is(err, nats.ErrAuthorization) || !strings.Contains(err.Error(), "refused these credentials") {
		t.Errorf("Dial with an unknown key: %v, want an authorization error that says so", err)
	}
	// (Not ConnectAs: over the in-process pipe a refusal takes the
	// server's 10 s write deadline to come back.)
	if got, want := s.Refused(), map[string]uint64{"refused": 6, "bad signature": 1}; !maps.Equal(got, want) {
		t.Errorf("Refused() = %v, want %v", got, want)
	}

	sys := srvConnect(t, s, "system")
	all, err := sys.SubscribeSync("siot.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	kid, _ := key.Identity()
	oid, _ := other.Identity()
	errs := make(chan error, 16)
	nc := srvDialErrs(t, u, errs, srvCredsOptions(t, key)...)
	for _, subj := range []string{"siot.>", ">", "siot.*.*.api.status", oid.Prefix() + ".>", oid.Inbox() + ".>",
		Identity{Kind: KindAdmin}.Prefix() + ".>", "siot.key.*.>", "_INBOX.>"} {
		if _, err := nc.SubscribeSync(subj); err != nil {
			t.Fatalf("subscribe %q: %v", subj, err)
		}
		srvWantViolation(t, nc, errs, `Subscription to "`+subj+`"`)
	}
	for _, subj := range []string{Subject(oid, NameStatus), Subject(Identity{Kind: KindAdmin}, NameImport),
		Subject(Identity{Kind: KindSystem}, NameHello), "siot.link.hello", "siot.api.status", "_INBOX.x", "x"} {
		if err := nc.Publish(subj, []byte("forbidden")); err != nil {
			t.Fatalf("publish %q: %v", subj, err)
		}
		srvWantViolation(t, nc, errs, `Publish to "`+subj+`"`)
	}
	// Messages from one connection arrive in order: the first the system
	// subscriber gets is the allowed one, so no forbidden one came.
	own := kid.Prefix() + ".test.allowed"
	if err := nc.Publish(own, []byte("allowed")); err != nil {
		t.Fatal(err)
	}
	if m, err := all.NextMsg(srvWait); err != nil || m.Subject != own || string(m.Data) != "allowed" {
		t.Fatalf("system subscriber got %v, %v; want %s and nothing before it", m, err, own)
	}

	// Under its prefix it subscribes, asks and answers.
	down, err := nc.SubscribeSync(kid.Prefix() + ".link.s.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := sys.Publish(kid.Prefix()+".link.s.down", []byte("push")); err != nil {
		t.Fatal(err)
	}
	if m, err := down.NextMsg(srvWait); err != nil || string(m.Data) != "push" {
		t.Fatalf("subscription under its prefix got %v, %v", m, err)
	}
	answer, err := sys.Subscribe(AnyIdentity(NameStatus), func(m *nats.Msg) {
		id, _, err := ParseSubject(m.Subject)
		if err != nil {
			_ = m.Respond([]byte(err.Error()))
			return
		}
		_ = m.Respond([]byte(id.String()))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer answer.Unsubscribe()
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := nc.Request(Subject(kid, NameStatus), nil, srvWait); err != nil || string(m.Data) != kid.String() {
		t.Fatalf("request under its prefix: %v, %v; want an answer naming %v", m, err, kid)
	}
	echo, err := nc.Subscribe(kid.Prefix()+".link.t.ping", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := sys.Request(kid.Prefix()+".link.t.ping", []byte("ping"), srvWait); err != nil || string(m.Data) != "ping" {
		t.Fatalf("its answer to the system's request: %v, %v", m, err)
	}
	select {
	case err := <-errs:
		t.Errorf("unexpected asynchronous error: %v", err)
	default:
	}

	// A login connection may only ask for a token.
	lid := Identity{Kind: KindLogin, Node: EmailID(email)}
	lerrs := make(chan error, 16)
	login := srvDialErrs(t, u, lerrs, nats.UserInfo(email, password), nats.CustomInboxPrefix(lid.Inbox()))
	for _, subj := range []string{Subject(lid, NameStatus), Subject(lid, NameHello), lid.Prefix() + ".link.s.up",
		SubjectOn(login, lid, NameStatus), Subject(lid, NameToken) + ".a.b"} {
		if err := login.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
		srvWantViolation(t, login, lerrs, `Publish to "`+subj+`"`)
	}
	token, err := sys.Subscribe(AnyIdentity(NameToken), func(m *nats.Msg) { _ = m.Respond([]byte("token for " + m.Subject)) })
	if err != nil {
		t.Fatal(err)
	}
	defer token.Unsubscribe()
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := login.Request(Subject(lid, NameToken), nil, srvWait); err != nil || string(m.Data) != "token for "+Subject(lid, NameToken) {
		t.Fatalf("login's token request: %v, %v", m, err)
	}
	// The same request naming the server (as siot login sends it).
	named, err := sys.Subscribe(AtServer(NameToken, sys.ConnectedServerName()), func(m *nats.Msg) { _ = m.Respond([]byte("named")) })
	if err != nil {
		t.Fatal(err)
	}
	defer named.Unsubscribe()
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := login.Request(SubjectOn(login, lid, NameToken), nil, srvWait); err != nil || string(m.Data) != "named" {
		t.Fatalf("login's token request naming the server: %v, %v", m, err)
	}
}

// TestServerRevalidate: Revalidate asks once per identity and credential,
// closes the connections of the grants it refuses, dialed and in-process,
// and keeps the others.
func TestServerRevalidate(t *testing.T) {
	srvCheckLeaks(t)
	r := authRand(t)
	admin := authKeyCreds(t, r, KindAdmin, uuid.Nil)
	revoked := authKeyCreds(t, r, KindKey, authUUID(t, r))
	kept := authKeyCreds(t, r, KindKey, authUUID(t, r))
	s := srvStart(t, ServerConfig{Auth: srvAuthFor(t, admin, revoked, kept)})
	sys := srvConnect(t, s, "system")
	a := srvDial(t, s.ClientURL(), DialConfig{Name: "admin", Creds: admin})
	k := srvDial(t, s.ClientURL(), DialConfig{Name: "kept", Creds: kept})
	gone := []*nats.Conn{srvDial(t, s.ClientURL(), DialConfig{Name: "revoked", Creds: revoked})}
	nc, err := s.ConnectAs("revoked in-process", revoked)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	gone = append(gone, nc)

	aid, _ := admin.Identity()
	rid, _ := revoked.Identity()
	kid, _ := kept.Identity()
	system := Identity{Kind: KindSystem}
	if got, want := s.Connections(), map[Identity]int{system: 1, aid: 1, rid: 2, kid: 1}; !maps.Equal(got, want) {
		t.Fatalf("Connections() = %v, want %v", got, want)
	}
	asked := map[Identity][]string{}
	n := s.Revalidate(func(g Grant) error {
		asked[g.Identity] = append(asked[g.Identity], g.Credential)
		if g.Identity == rid {
			return errors.New("key revoked")
		}
		return nil
	})
	if n != 2 {
		t.Errorf("Revalidate closed %d connections, want 2", n)
	}
	want := map[Identity][]string{aid: {authPublicKey(t, admin)}, rid: {authPublicKey(t, revoked)}, kid: {authPublicKey(t, kept)}}
	if !maps.EqualFunc(asked, want, slices.Equal) {
		t.Errorf("Revalidate asked about %v, want %v (once each, never the system)", asked, want)
	}
	for _, nc := range gone {
		srvEventually(t, "revoked connection closed", nc.IsClosed)
	}
	for name, nc := range map[string]*nats.Conn{"system": sys, "admin": a, "kept": k} {
		if _, err := nc.RTT(); err != nil {
			t.Errorf("%s connection after Revalidate: %v", name, err)
		}
	}
	if got, want := s.Connections(), map[Identity]int{system: 1, aid: 1, kid: 1}; !maps.Equal(got, want) {
		t.Errorf("Connections() after Revalidate = %v, want %v", got, want)
	}
	if n := s.Revalidate(func(Grant) error { return nil }); n != 0 {
		t.Errorf("second Revalidate closed %d connections", n)
	}
}

// TestServerConnectionsForgetTheNewestClosed: a closed connection leaves
// Connections by the next Revalidate, the newest one too, when no
// connection newer than it is open (a device that crashed, the last one
// to have connected: its link must end, for it to go offline).
func TestServerConnectionsForgetTheNewestClosed(t *testing.T) {
	srvCheckLeaks(t)
	r := authRand(t)
	older := authKeyCreds(t, r, KindKey, authUUID(t, r))
	newest := authKeyCreds(t, r, KindKey, authUUID(t, r))
	s := srvStart(t, ServerConfig{Auth: srvAuthFor(t, older, newest)})
	srvDial(t, s.ClientURL(), DialConfig{Name: "older", Creds: older})
	nc := srvDial(t, s.ClientURL(), DialConfig{Name: "newest", Creds: newest})
	oid, _ := older.Identity()
	nid, _ := newest.Identity()
	if got := s.Connections(); got[oid] != 1 || got[nid] != 1 {
		t.Fatalf("Connections() = %v, want one of each", got)
	}
	nc.Close()
	srvEventually(t, "the newest connection, closed, gone from Connections after a Revalidate", func() bool {
		s.Revalidate(func(Grant) error { return nil })
		return s.Connections()[nid] == 0
	})
	if got := s.Connections(); got[oid] != 1 {
		t.Errorf("Connections() = %v: the older connection, open, is gone", got)
	}
}

// TestServerWithoutAuth: a server without an Authenticator takes only its
// in-process system connections until SetAuth gives it one.
func TestServerWithoutAuth(t *testing.T) {
	srvCheckLeaks(t)
	admin := authKeyCreds(t, authRand(t), KindAdmin, uuid.Nil)
	s := srvStart(t, ServerConfig{})
	if _, err := srvConnect(t, s, "system").RTT(); err != nil {
		t.Fatal(err)
	}
	if nc, err := Dial(s.ClientURL(), DialConfig{Timeout: srvWait, Creds: admin}); !errors.Is(err, nats.ErrAuthorization) {
		if err == nil {
			nc.Close()
		}
		t.Fatalf("Dial without an Authenticator: %v, want nats.ErrAuthorization", err)
	}
	if got := s.Refused()["no authenticator"]; got != 1 {
		t.Errorf("Refused()[no authenticator] = %d, want 1", got)
	}
	s.SetAuth(srvAuthFor(t, admin))
	if _, err := srvDial(t, s.ClientURL(), DialConfig{Creds: admin}).RTT(); err != nil {
		t.Fatal(err)
	}
}

// TestDialNeedsCreds: Dial refuses to connect without credentials, and
// credentials in the URL, which would show in logs.
func TestDialNeedsCreds(t *testing.T) {
	srvCheckLeaks(t)
	u := "nats://" + srvFreePort(t)
	if nc, err := Dial(u, DialConfig{}); !errors.Is(err, ErrNoCreds) || nc != nil {
		t.Errorf("Dial without credentials = %v, %v; want ErrNoCreds", nc, err)
	}
	admin := authKeyCreds(t, authRand(t), KindAdmin, uuid.Nil)
	withUser := strings.Replace(u, "nats://", "nats://admin:s3cret@", 1)
	nc, err := Dial(withUser, DialConfig{Creds: admin})
	if err == nil {
		nc.Close()
		t.Fatal("Dial with credentials in the URL succeeded")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "credential file") {
		t.Errorf("Dial with credentials in the URL: %q; want the password left out and the credential file named", err)
	}
}

// slowAuth is an Authenticator that takes its time: a slowed-down login.
type slowAuth struct {
	Authenticator
	delay time.Duration
}

func (a slowAuth) Authenticate(req AuthRequest) (Grant, error) {
	time.Sleep(a.delay) // the sign-in's own slowness is what is under test
	return a.Authenticator.Authenticate(req)
}

// TestSlowSignInConnects: a sign-in that takes longer than nats-server's
// short first PING (2 s) still connects. The server used to send that
// PING before the answer to CONNECT, and the client gave up ("expected
// 'PONG', got 'PING'").
func TestSlowSignInConnects(t *testing.T) {
	srvCheckLeaks(t)
	admin := authKeyCreds(t, authRand(t), KindAdmin, uuid.Nil)
	s := srvStart(t, ServerConfig{Auth: slowAuth{srvAuthFor(t, admin), 2500 * time.Millisecond}})
	nc := srvDial(t, s.ClientURL(), DialConfig{Creds: admin})
	if !nc.IsConnected() {
		t.Fatal("not connected")
	}
}

func TestDialServerList(t *testing.T) {
	srvCheckLeaks(t)
	s, admin := srvStartAdmin(t, ServerConfig{})
	// The first server of the list is down: the next one is tried.
	dead := "nats://127.0.0.1:1"
	nc := srvDial(t, dead+", "+s.ClientURL(), DialConfig{Creds: admin})
	if got := nc.ConnectedUrl(); got != s.ClientURL() {
		t.Fatalf("connected to %q, want %q", got, s.ClientURL())
	}
	for _, bad := range []string{s.ClientURL() + ",", "," + s.ClientURL(), s.ClientURL() + ",nats://a:b@127.0.0.1:2", s.ClientURL() + ",127.0.0.1:4222"} {
		if nc, err := Dial(bad, DialConfig{Creds: admin, Timeout: srvWait}); err == nil {
			nc.Close()
			t.Errorf("Dial(%q) connected", bad)
		} else if strings.Contains(err.Error(), ":b@") {
			t.Errorf("Dial(%q): the error shows the password: %v", bad, err)
		}
	}
}
