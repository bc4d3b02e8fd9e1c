//go:build !lean

package transport

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// wsAuth is srvAuth plus one login token, granted as a user, and the
// address each sign-in came from.
type wsAuth struct {
	srvAuth
	token string
	user  Identity

	mu      sync.Mutex
	remotes []net.Addr
}

func (a *wsAuth) Authenticate(req AuthRequest) (Grant, error) {
	a.mu.Lock()
	a.remotes = append(a.remotes, req.Remote)
	a.mu.Unlock()
	if req.Token != "" {
		if req.Token == a.token {
			return Grant{Identity: a.user, Credential: req.Token}, nil
		}
		return Grant{}, errors.New("unknown token")
	}
	return a.srvAuth.Authenticate(req)
}

// wsStart starts a server with a WebSocket listener and a WebsocketProxy
// of cfg behind an HTTP server on a loopback port; it returns the
// ws:// URL of the proxy. Everything stops at the end of the test.
func wsStart(t *testing.T, auth Authenticator, cfg WebsocketConfig) (*Server, *WebsocketProxy, string) {
	t.Helper()
	s := srvStart(t, ServerConfig{Auth: auth, Websocket: true})
	if !strings.HasPrefix(s.WebsocketURL(), "ws://127.0.0.1:") {
		t.Fatalf("WebsocketURL() = %q, want a loopback ws:// URL", s.WebsocketURL())
	}
	p, err := s.WebsocketProxy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/nats", p)
	hs := httptest.NewServer(mux)
	// Cleanups run last in, first out: the server's Shutdown closes the
	// connections, then the proxy's handlers end, then the HTTP server.
	t.Cleanup(hs.Close)
	t.Cleanup(p.Close)
	t.Cleanup(s.Shutdown)
	return s, p, "ws://" + hs.Listener.Addr().String() + "/nats"
}

// wsDial connects to url with opts; the caller closes the connection.
func wsDial(url string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(url, append(opts, nats.Timeout(srvWait), nats.NoReconnect())...)
}

// TestWebsocketAuthentication: a WebSocket client through the proxy is
// authenticated and confined exactly as a NATS one: without credentials,
// with a forged key or a wrong token it is refused; with a token it asks
// under its prefix and nowhere else. The Authenticator sees the
// client's address, not the proxy's.
func TestWebsocketAuthentication(t *testing.T) {
	srvCheckLeaks(t)
	r := authRand(t)
	admin := authKeyCreds(t, r, KindAdmin, uuid.Nil)
	stranger := authKeyCreds(t, r, KindKey, authUUID(t, r))
	user := Identity{Kind: KindUser, Node: authUUID(t, r)}
	auth := &wsAuth{srvAuth: srvAuthFor(t, admin), token: "v1.good.token", user: user}
	s, _, u := wsStart(t, auth, WebsocketConfig{})

	strangerKey, err := nkeys.FromSeed(stranger.Seed)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"anonymous", nil},
		{"wrong token", []nats.Option{nats.Token("v1.bad.token")}},
		{"unknown key", srvCredsOptions(t, stranger)},
		{"admin key signed by another", []nats.Option{nats.Nkey(authPublicKey(t, admin), strangerKey.Sign)}},
	} {
		nc, err := wsDial(u, tc.opts...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", tc.name)
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: %v, want nats.ErrAuthorization", tc.name, err)
		}
	}
	if got := s.Refused(); got["refused"] != 3 || got["bad signature"] != 1 {
		t.Errorf("Refused() = %v, want 3 refused and 1 bad signature", got)
	}

	sys := srvConnect(t, s, "system")
	for _, name := range []string{NameStatus, NameJSONStatus} {
		sub, err := sys.Subscribe(AnyIdentity(name), func(m *nats.Msg) { _ = m.Respond([]byte("answer to " + m.Subject)) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	nc := srvDialErrs(t, u, errs, nats.Token(auth.token), nats.CustomInboxPrefix(user.Inbox()))
	for _, name := range []string{NameStatus, NameJSONStatus} {
		m, err := nc.Request(Subject(user, name), nil, srvWait)
		if err != nil || string(m.Data) != "answer to "+Subject(user, name) {
			t.Fatalf("request %s: %v, %v", name, m, err)
		}
	}
	other := Identity{Kind: KindUser, Node: authUUID(t, r)}
	for _, subj := range []string{Subject(other, NameStatus), Subject(Identity{Kind: KindAdmin}, NameStatus), "x"} {
		if err := nc.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
		srvWantViolation(t, nc, errs, `Publish to "`+subj+`"`)
	}
	if _, err := nc.SubscribeSync(other.Prefix() + ".>"); err != nil {
		t.Fatal(err)
	}
	srvWantViolation(t, nc, errs, `Subscription to "`+other.Prefix()+`.>"`)

	// Every sign-in came from a client's port, none from the proxy's
	// connection to the listener (whose mapping is forgotten once closed).
	auth.mu.Lock()
	remotes := append([]net.Addr(nil), auth.remotes...)
	auth.mu.Unlock()
	s.mu.Lock()
	open := len(s.proxied)
	s.mu.Unlock()
	// (The forged signature is refused before the Authenticator.)
	if len(remotes) != 4 || open != 1 {
		t.Fatalf("%d sign-ins, %d proxied connections open; want 4 and 1", len(remotes), open)
	}
	for _, a := range remotes {
		if a == nil || a.String() == "" {
			t.Fatalf("sign-in from %v", a)
		}
		if s.clientAddr(a) != a {
			t.Errorf("sign-in from %v, a proxied connection's proxy end", a)
		}
	}
}

// TestWebsocketProxyRefuses: requests that are not upgrades get 400, a
// page of another origin 403, the listener itself refuses a browser, and
// the connection over the limit is answered 503 and counted.
func TestWebsocketProxyRefuses(t *testing.T) {
	srvCheckLeaks(t)
	r := authRand(t)
	admin := authKeyCreds(t, r, KindAdmin, uuid.Nil)
	s, p, u := wsStart(t, srvAuthFor(t, admin), WebsocketConfig{MaxConns: 2, Origins: []string{"https://ui.example.com"}})
	httpURL := "http" + strings.TrimPrefix(u, "ws")
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, httpURL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s /nats without upgrade: %s, want 400", method, resp.Status)
		}
	}
	creds := srvCredsOptions(t, admin)
	host := strings.TrimPrefix(strings.TrimSuffix(u, "/nats"), "ws://")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + host, true},
		{"https://ui.example.com", true},
		{"https://UI.example.com:443", true},
		{"http://ui.example.com", false},
		{"https://evil.example.com", false},
		{"http://" + host + ".evil.example.com", false},
		{"null", false},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		nc, err := wsDial(u, append(creds, nats.WebSocketConnectionHeaders(h))...)
		if tc.ok && err != nil {
			t.Errorf("origin %q: %v", tc.origin, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("origin %q: connected", tc.origin)
		}
		if err == nil {
			nc.Close()
		}
		// The proxy frees the place once it sees the close: wait, or the
		// next dial may find both places of the limit still taken.
		srvEventually(t, "the place freed", func() bool { return p.Open() == 0 })
	}
	// A page that found the listener's port is refused by the listener.
	h := http.Header{"Origin": {"http://" + host}}
	if nc, err := wsDial(s.WebsocketURL(), append(creds, nats.WebSocketConnectionHeaders(h))...); err == nil {
		nc.Close()
		t.Error("a browser connected to the listener directly")
	}

	// The limit: two open, the third refused, and a place freed is taken.
	var open []*nats.Conn
	for range 2 {
		nc, err := wsDial(u, creds...)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, nc)
	}
	before := s.Refused()["websocket limit"]
	if nc, err := wsDial(u, creds...); err == nil {
		nc.Close()
		t.Fatal("a third connection over a limit of 2")
	}
	req, _ := http.NewRequest(http.MethodGet, httpURL, nil)
	req.Header = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("upgrade over the limit: %s, want 503 with Retry-After", resp.Status)
	}
	if got := s.Refused()["websocket limit"]; got != before+2 {
		t.Errorf("websocket limit refusals %d, want %d", got, before+2)
	}
	open[0].Close()
	srvEventually(t, "a place freed", func() bool { return p.Open() < 2 })
	nc, err := wsDial(u, creds...)
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	open[0] = nc
	for _, nc := range open {
		if _, err := nc.RTT(); err != nil {
			t.Errorf("RTT: %v", err)
		}
		nc.Close()
	}
}

// TestWebsocketShutdownClosesClients: the server's Shutdown ends a
// WebSocket session; the client sees its connection closed, and the
// proxy's Close returns.
func TestWebsocketShutdownClosesClients(t *testing.T) {
	srvCheckLeaks(t)
	r := authRand(t)
	admin := authKeyCreds(t, r, KindAdmin, uuid.Nil)
	s, p, u := wsStart(t, srvAuthFor(t, admin), WebsocketConfig{})
	closed := make(chan struct{})
	nc, err := wsDial(u, append(srvCredsOptions(t, admin), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.RTT(); err != nil {
		t.Fatal(err)
	}
	srvWithin(t, "Shutdown", srvWait, s.Shutdown)
	srvWithin(t, "client closed", srvWait, func() { <-closed })
	srvWithin(t, "proxy Close", srvWait, p.Close)
	if n := p.Open(); n != 0 {
		t.Errorf("%d connections open after Close", n)
	}
}

// TestWebsocketIdleTimeout: a connection silent for IdleTimeout is closed,
// and its place freed.
func TestWebsocketIdleTimeout(t *testing.T) {
	srvCheckLeaks(t)
	r := authRand(t)
	admin := authKeyCreds(t, r, KindAdmin, uuid.Nil)
	_, p, u := wsStart(t, srvAuthFor(t, admin), WebsocketConfig{IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(u, "ws://"), "/nats"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /nats HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	// The server's INFO comes, then nothing: the client never answers.
	c.SetReadDeadline(time.Now().Add(srvWait))
	start := time.Now()
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("want the proxy to close the connection: %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
	srvEventually(t, "place freed", func() bool { return p.Open() == 0 })
}
