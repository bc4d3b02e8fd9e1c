package notify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"math/big"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpServerConfig says how a testSMTPServer behaves.
type smtpServerConfig struct {
	// user and pass, when user is set, are the one account AUTH PLAIN
	// accepts; AUTH is advertised only then (and, with tls set, only after
	// STARTTLS, as real servers do).
	user, pass string
	// tls, when set, is offered with STARTTLS, or used from the first byte
	// when implicitTLS is set.
	tls         *tls.Config
	implicitTLS bool
	// reply maps a command (upper case: "MAIL", "RCPT", "DATA", "AUTH") to
	// the reply line that answers it instead of the normal one; "." answers
	// the end of the data.
	reply map[string]string
	// silent servers accept connections and never say a word.
	silent bool
}

// received is one message a testSMTPServer accepted.
type received struct {
	from string
	to   []string
	data string
	tls  bool   // the session was encrypted
	user string // who authenticated, "" for nobody
}

// testSMTPServer is a minimal SMTP server on 127.0.0.1 for the tests: EHLO,
// HELO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
type testSMTPServer struct {
	cfg smtpServerConfig
	ln  net.Listener
	wg  sync.WaitGroup
	// accepted gets a value for every connection accepted.
	accepted chan struct{}

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	messages []received
	commands []string // every command line, AUTH arguments hidden
	nconns   int
}

// startSMTPServer starts a server; it is stopped, and its goroutines
// joined, when the test ends.
func startSMTPServer(t *testing.T, cfg smtpServerConfig) *testSMTPServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testSMTPServer{cfg: cfg, ln: ln, accepted: make(chan struct{}, 64), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.close)
	return s
}

func (s *testSMTPServer) addr() string { return s.ln.Addr().String() }

func (s *testSMTPServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// received returns the messages accepted so far.
func (s *testSMTPServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.messages...)
}

// connections returns how many connections the server accepted.
func (s *testSMTPServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nconns
}

// sawCommand reports whether some command line started with prefix.
func (s *testSMTPServer) sawCommand(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.commands {
		if strings.HasPrefix(strings.ToUpper(c), prefix) {
			return true
		}
	}
	return false
}

func (s *testSMTPServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.nconns++
		s.mu.Unlock()
		select {
		case s.accepted <- struct{}{}:
		default:
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			s.serve(c)
		}()
	}
}

// session is the state of one connection.
type session struct {
	conn   net.Conn
	text   *textproto.Conn
	tls    bool
	user   string
	from   string
	to     []string
	inMail bool
}

func (s *testSMTPServer) serve(c net.Conn) {
	if s.cfg.silent {
		io.Copy(io.Discard, c) // until the client or close() hangs up
		return
	}
	ss := &session{conn: c}
	if s.cfg.implicitTLS {
		tc := tls.Server(c, s.cfg.tls)
		if err := tc.Handshake(); err != nil {
			return
		}
		ss.conn, ss.tls = tc, true
	}
	ss.text = textproto.NewConn(ss.conn)
	if ss.text.PrintfLine("220 test.invalid ESMTP ready") != nil {
		return
	}
	for {
		line, err := ss.text.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		logged := line
		if verb == "AUTH" {
			logged = "AUTH …" // the credentials stay out of the log
		}
		s.mu.Lock()
		s.commands = append(s.commands, logged)
		s.mu.Unlock()
		if r, ok := s.cfg.reply[verb]; ok {
			if ss.text.PrintfLine("%s", r) != nil {
				return
			}
			continue
		}
		if !s.handle(ss, verb, arg) {
			return
		}
	}
}

// handle answers one command; false ends the session.
func (s *testSMTPServer) handle(ss *session, verb, arg string) bool {
	reply := func(format string, args ...any) bool { return ss.text.PrintfLine(format, args...) == nil }
	reset := func() { ss.from, ss.to, ss.inMail = "", nil, false }
	switch verb {
	case "EHLO":
		reset()
		lines := []string{"test.invalid greets " + arg}
		if s.cfg.tls != nil && !ss.tls {
			lines = append(lines, "STARTTLS")
		}
		if s.cfg.user != "" && (s.cfg.tls == nil || ss.tls) {
			lines = append(lines, "AUTH PLAIN")
		}
		lines = append(lines, "HELP")
		for i, l := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			if !reply("250%s%s", sep, l) {
				return false
			}
		}
		return true
	case "HELO":
		reset()
		return reply("250 test.invalid")
	case "STARTTLS":
		if s.cfg.tls == nil || ss.tls {
			return reply("502 5.5.1 not offered")
		}
		if !reply("220 2.0.0 go ahead") {
			return false
		}
		tc := tls.Server(ss.conn, s.cfg.tls)
		if err := tc.Handshake(); err != nil {
			return false
		}
		ss.conn, ss.tls = tc, true
		ss.text = textproto.NewConn(tc)
		reset()
		return true
	case "AUTH":
		if s.cfg.user == "" {
			return reply("502 5.5.1 not offered")
		}
		mech, initial, _ := strings.Cut(arg, " ")
		if !strings.EqualFold(mech, "PLAIN") {
			return reply("504 5.5.4 mechanism not supported")
		}
		if initial == "" {
			if !reply("334 ") {
				return false
			}
			l, err := ss.text.ReadLine()
			if err != nil {
				return false
			}
			initial = l
		}
		raw, err := base64.StdEncoding.DecodeString(initial)
		if err != nil {
			return reply("501 5.5.2 bad base64")
		}
		parts := strings.Split(string(raw), "\x00")
		if len(parts) != 3 || parts[1] != s.cfg.user || parts[2] != s.cfg.pass {
			return reply("535 5.7.8 authentication credentials invalid")
		}
		ss.user = parts[1]
		return reply("235 2.7.0 authenticated")
	case "MAIL":
		addr, ok := pathArg(arg, "FROM:")
		if !ok {
			return reply("501 5.5.4 syntax: MAIL FROM:<address>")
		}
		ss.from, ss.to, ss.inMail = addr, nil, true
		return reply("250 2.1.0 ok")
	case "RCPT":
		if !ss.inMail {
			return reply("503 5.5.1 MAIL first")
		}
		addr, ok := pathArg(arg, "TO:")
		if !ok {
			return reply("501 5.5.4 syntax: RCPT TO:<address>")
		}
		ss.to = append(ss.to, addr)
		return reply("250 2.1.5 ok")
	case "DATA":
		if len(ss.to) == 0 {
			return reply("503 5.5.1 RCPT first")
		}
		if !reply("354 end with <CRLF>.<CRLF>") {
			return false
		}
		data, err := io.ReadAll(ss.text.DotReader())
		if err != nil {
			return false
		}
		if r, ok := s.cfg.reply["."]; ok {
			reset()
			return reply("%s", r)
		}
		s.mu.Lock()
		s.messages = append(s.messages, received{from: ss.from, to: ss.to, data: string(data), tls: ss.tls, user: ss.user})
		s.mu.Unlock()
		reset()
		return reply("250 2.0.0 queued")
	case "RSET":
		reset()
		return reply("250 2.0.0 ok")
	case "NOOP":
		return reply("250 2.0.0 ok")
	case "QUIT":
		reply("221 2.0.0 bye")
		return false
	}
	return reply("500 5.5.2 unknown command")
}

// pathArg returns the address of "FROM:<addr> params" (for prefix
// "FROM:").
func pathArg(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if !strings.HasPrefix(rest, "<") {
		return "", false
	}
	addr, _, ok := strings.Cut(rest[1:], ">")
	return addr, ok
}

// testCA returns a self-signed certificate for 127.0.0.1 and localhost,
// valid for an hour around now, and a pool holding it. (The key comes from
// crypto/rand: it plays no part in what the tests check.)
func testCA(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "siot notify test"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}, pool
}
