package bus

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

// wait bounds every wait in these tests.
const wait = 10 * time.Second

// start starts a server on a loopback port, checks at the end of the test
// that it left no goroutine behind, and shuts it down.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// connect connects nats.go in-process, with opts, and closes it at the
// end of the test.
func connect(t *testing.T, s *Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect("", append(opts, nats.InProcessServer(s), nats.NoReconnect(), nats.Timeout(wait))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// raw dials s over TCP, reads its INFO and sends CONNECT line (when not
// empty).
func raw(t *testing.T, s *Server, connectLine string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr().String(), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO {") {
		t.Fatalf("first line %q, %v", line, err)
	}
	if connectLine != "" {
		if _, err := io.WriteString(c, connectLine); err != nil {
			t.Fatal(err)
		}
	}
	return c, r
}

// readAll reads until the server closes the connection.
func readAll(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read: %v (got %q)", err, b)
	}
	return string(b)
}

func TestSubjectMatching(t *testing.T) {
	for _, c := range []struct {
		pattern, subject string
		match            bool
	}{
		{"a.b", "a.b", true}, {"a.b", "a.c", false}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true}, {"a.>", "a", false}, {">", "a", true}, {"*.b", "a.b", true},
		{"a.*.c", "a.b.c", true}, {"a.*.c", "a.b.d", false}, {"a", "a.b", false}, {"a.b", "a", false},
	} {
		if got := matchSubject(c.pattern, c.subject); got != c.match {
			t.Errorf("matchSubject(%q, %q) = %v", c.pattern, c.subject, got)
		}
	}
	for _, c := range []struct {
		sub, pattern string
		subset       bool
	}{
		{"a.b.>", "a.b.>", true}, {"a.b.c", "a.b.>", true}, {"a.b.*", "a.b.>", true}, {"a.*.>", "a.b.>", false},
		{"a.>", "a.b.>", false}, {">", "a.>", false}, {"a.b", "a.b.>", false}, {"a.*", "a.*", true},
		{"a.>", "a.*", false}, {"a.b", "a.*", true}, {"a.b.c", "a.*", false}, {"x.b.c", "a.>", false},
	} {
		if got := subsetOf(c.sub, c.pattern); got != c.subset {
			t.Errorf("subsetOf(%q, %q) = %v", c.sub, c.pattern, got)
		}
	}
	for s, want := range map[string][2]bool{ // {as a publish, as a subscription}
		"a.b": {true, true}, "a.*": {false, true}, "a.>": {false, true}, "a.>.b": {false, false},
		"": {false, false}, "a..b": {false, false}, ".a": {false, false}, "a.": {false, false}, "a*.b>": {true, true},
	} {
		if got := [2]bool{validSubject(s, false), validSubject(s, true)}; got != want {
			t.Errorf("validSubject(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestWildcardsAndQueues: plain subscriptions with wildcards get every
// message that matches; a queue group gets each message once.
func TestWildcardsAndQueues(t *testing.T) {
	s := start(t, Config{})
	nc := connect(t, s)
	subs := map[string]*nats.Subscription{}
	for _, subj := range []string{"a.b.c", "a.*.c", "a.>", "*.*", "b.>"} {
		sub, err := nc.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		subs[subj] = sub
	}
	q1, _ := nc.QueueSubscribeSync("a.>", "q")
	q2, _ := nc.QueueSubscribeSync("a.b.*", "q")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 40
	for range n {
		if err := nc.Publish("a.b.c", []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish("a.b", []byte("m")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"a.b.c": n, "a.*.c": n, "a.>": n + 1, "*.*": 1, "b.>": 0}
	for subj, sub := range subs {
		got := 0
		for {
			if _, err := sub.NextMsg(50 * time.Millisecond); err != nil {
				break
			}
			got++
		}
		if got != want[subj] {
			t.Errorf("%s received %d, want %d", subj, got, want[subj])
		}
	}
	c1, _, _ := q1.Pending()
	c2, _, _ := q2.Pending()
	if c1+c2 != n+1 || c2 > n {
		t.Errorf("queue group received %d + %d, want %d in all", c1, c2, n+1)
	}
}

// TestNoResponders: a request nobody subscribes to fails at once with
// ErrNoResponders; one that is answered gets its answer.
func TestNoResponders(t *testing.T) {
	s := start(t, Config{})
	nc := connect(t, s)
	if _, err := nc.Request("nobody.here", nil, wait); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request to nobody: %v, want ErrNoResponders", err)
	}
	sub, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if m, err := nc.Request("echo", []byte("hi"), wait); err != nil || string(m.Data) != "hi" {
		t.Fatalf("request: %v, %v", m, err)
	}
	// Headers cross, too.
	msg := nats.NewMsg("echo")
	msg.Header.Set("K", "v")
	hsub, _ := nc.SubscribeSync("hdr")
	msg.Subject = "hdr"
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	if m, err := hsub.NextMsg(wait); err != nil || m.Header.Get("K") != "v" {
		t.Fatalf("message with headers: %v, %v", m, err)
	}
}

// TestPermissions: a connection confined to a prefix is refused a publish
// or a subscription outside it with the words nats.go recognises, stays
// connected, and may answer a request it received once; past its
// subscriptions it is closed.
func TestPermissions(t *testing.T) {
	s := start(t, Config{Authorize: func(ci ConnectInfo) (Access, error) {
		if ci.Opts.User == "free" {
			return Access{}, nil
		}
		return Access{Perms: &Permissions{Publish: []string{"p.>"}, Subscribe: []string{"p.>"}, Replies: 1, ReplyTTL: time.Minute}, MaxSubs: 2}, nil
	}})
	free := connect(t, s, nats.UserInfo("free", ""))
	errs := make(chan error, 8)
	nc := connect(t, s, nats.UserInfo("p", ""), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	want := func(what string) {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), what) {
				t.Errorf("error %v, want %s", err, what)
			}
		case <-time.After(wait):
			t.Fatalf("no error for %s", what)
		}
	}
	if _, err := nc.SubscribeSync("q.>"); err != nil {
		t.Fatal(err)
	}
	want(`Subscription to "q.>"`)
	if _, err := nc.SubscribeSync(">"); err != nil {
		t.Fatal(err)
	}
	want(`Subscription to ">"`)
	if _, err := nc.QueueSubscribeSync("p.*.>", "g"); err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		t.Fatal("disconnected by a refusal")
	}
	if err := nc.Publish("q.x", nil); err != nil {
		t.Fatal(err)
	}
	want(`Publish to "q.x"`)
	all, _ := free.SubscribeSync(">")
	if err := free.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("p.x", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if m, err := all.NextMsg(wait); err != nil || m.Subject != "p.x" {
		t.Fatalf("allowed publish: %v, %v (nothing forbidden before it)", m, err)
	}
	// It answers a request it got, once.
	in, _ := nc.SubscribeSync("p.req")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	inbox := "reply.1"
	rsub, _ := free.SubscribeSync(inbox)
	if err := free.PublishRequest("p.req", inbox, []byte("q")); err != nil {
		t.Fatal(err)
	}
	m, err := in.NextMsg(wait)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Respond([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if r, err := rsub.NextMsg(wait); err != nil || string(r.Data) != "a" {
		t.Fatalf("reply: %v, %v", r, err)
	}
	if err := m.Respond([]byte("again")); err != nil {
		t.Fatal(err)
	}
	want(`Publish to "reply.1"`)
	if _, err := nc.SubscribeSync("p.four"); err != nil { // the third
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrMaxSubscriptionsExceeded) {
			t.Errorf("error %v, want ErrMaxSubscriptionsExceeded", err)
		}
	case <-time.After(wait):
		t.Fatal("no error for the subscription past the maximum")
	}
	deadline := time.Now().Add(wait)
	for !nc.IsClosed() {
		if time.Now().After(deadline) {
			t.Fatal("not closed past its subscriptions")
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
}

// TestAuthRefused: a connection Authorize refuses gets an authorization
// violation (nats.ErrAuthorization), and one that sends anything but
// CONNECT first is refused the same way.
func TestAuthRefused(t *testing.T) {
	s := start(t, Config{Authorize: func(ci ConnectInfo) (Access, error) {
		if ci.Nonce == "" {
			t.Error("no nonce")
		}
		return Access{}, errors.New("no")
	}})
	if nc, err := nats.Connect("nats://"+s.Addr().String(), nats.NoReconnect(), nats.Timeout(wait)); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("connect: %v, want ErrAuthorization", err)
	}
	_, r := raw(t, s, "PING\r\n")
	if got := readAll(t, r); got != "-ERR 'Authorization Violation'\r\n" {
		t.Fatalf("PING before CONNECT: %q", got)
	}
}

// TestBadInput: the server answers input it does not accept with -ERR
// and closes the connection.
func TestBadInput(t *testing.T) {
	s := start(t, Config{MaxPayload: 100})
	for in, want := range map[string]string{
		"FOO\r\n":              "Unknown Protocol Operation",
		"PUB a 101\r\n":        "Maximum Payload Violation",
		"PUB a 1000000000\r\n": "Maximum Payload Violation",
		"PUB a 2\r\nabc\r\n":   "Parser Error",
		"PUB a.* 1\r\na\r\n":   "Invalid Subject",
		"SUB a..b 1\r\n":       "Invalid Subject",
		"SUB\r\n":              "Parser Error",
		"HPUB a 5 3\r\n":       "Parser Error",
		"UNSUB 1 x\r\n":        "Parser Error",
		"PUB a " + strings.Repeat("x", 5000) + "\r\n": "Maximum Control Line Exceeded",
	} {
		_, r := raw(t, s, "CONNECT {}\r\n"+in)
		if got := readAll(t, r); !strings.HasSuffix(got, "-ERR '"+want+"'\r\n") {
			t.Errorf("%.20q: got %q, want -ERR %s", in, got, want)
		}
	}
	_, r := raw(t, s, "CONNECT {\r\n")
	if got := readAll(t, r); got != "-ERR 'Parser Error'\r\n" {
		t.Errorf("bad CONNECT JSON: %q", got)
	}
}

// TestSlowConsumer: a client that stops reading is disconnected once
// what is queued for it passes MaxPending, and the publisher is not held
// up.
func TestSlowConsumer(t *testing.T) {
	s := start(t, Config{MaxPayload: 1 << 10, MaxPending: 64 << 10})
	c, r := raw(t, s, "CONNECT {}\r\nSUB x 1\r\nPING\r\n")
	if line, err := r.ReadString('\n'); err != nil || line != "PONG\r\n" {
		t.Fatalf("%q, %v", line, err)
	}
	pub := connect(t, s)
	data := make([]byte, 1<<10)
	deadline := time.Now().Add(wait)
	for len(s.Conns()) == 2 {
		if time.Now().After(deadline) {
			t.Fatal("the slow consumer is still connected")
		}
		for range 64 {
			if err := pub.Publish("x", data); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	_ = c
	if !pub.IsConnected() {
		t.Fatal("publisher disconnected")
	}
}

// TestStaleConnection: a client that answers no PING is told so and
// closed after MaxPingsOut of them.
func TestStaleConnection(t *testing.T) {
	s := start(t, Config{PingInterval: 20 * time.Millisecond, MaxPingsOut: 2})
	_, r := raw(t, s, "CONNECT {}\r\n")
	if got := readAll(t, r); got != "PING\r\nPING\r\n-ERR 'Stale Connection'\r\n" {
		t.Fatalf("got %q", got)
	}
}

// TestMaxConns: a connection past MaxConns is refused; Shutdown closes
// the others and refuses new in-process ones.
func TestMaxConns(t *testing.T) {
	s := start(t, Config{MaxConns: 1})
	nc := connect(t, s)
	c, err := net.DialTimeout("tcp", s.Addr().String(), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	if got := readAll(t, bufio.NewReader(c)); got != "-ERR 'maximum connections exceeded'\r\n" {
		t.Fatalf("got %q", got)
	}
	s.Shutdown()
	deadline := time.Now().Add(wait)
	for !nc.IsClosed() {
		if time.Now().After(deadline) {
			t.Fatal("client not closed by Shutdown")
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
	if _, err := s.InProcessConn(); !errors.Is(err, ErrClosed) {
		t.Fatalf("InProcessConn after Shutdown: %v", err)
	}
}

// TestUnsubMax: UNSUB with a maximum ends the subscription after that
// many messages in all.
func TestUnsubMax(t *testing.T) {
	s := start(t, Config{})
	nc := connect(t, s)
	sub, _ := nc.SubscribeSync("x")
	if err := sub.AutoUnsubscribe(3); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := nc.Publish("x", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := s.Conns()[0].Subs; got != 0 {
		t.Errorf("%d subscriptions left after the maximum", got)
	}
}
