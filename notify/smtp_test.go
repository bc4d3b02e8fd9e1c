package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"
)

// parsed is an email as a reader sees it: its header and its decoded body.
type parsed struct {
	header mail.Header
	body   string
}

func parseEmail(t *testing.T, data string) parsed {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatalf("the email does not parse: %v\n%s", err, data)
	}
	if cte := msg.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
		t.Fatalf("Content-Transfer-Encoding %q", cte)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatalf("the body is not quoted-printable: %v", err)
	}
	// The server's DotReader turned CRLF into LF.
	for i, line := range strings.Split(data, "\n") {
		if len(strings.TrimSuffix(line, "\r")) > 78 {
			t.Errorf("line %d is %d bytes: %q", i, len(line), line)
		}
	}
	return parsed{header: msg.Header, body: string(body)}
}

func decodeHeader(t *testing.T, v string) string {
	t.Helper()
	s, err := new(mime.WordDecoder).DecodeHeader(v)
	if err != nil {
		t.Fatalf("header %q: %v", v, err)
	}
	return s
}

func TestSMTPPlainDelivery(t *testing.T) {
	srv := startSMTPServer(t, smtpServerConfig{})
	m := testMessage()
	// A line over 76 bytes, a leading dot (dot-stuffing), '=' and a bare CR.
	m.Text = "Boiler 1 is at 92.5 °C = too hot; " + strings.Repeat("long ", 30) + "\r\n.hidden line\nlast\rline"
	s := &SMTP{Addr: srv.addr(), From: "Siot Alerts <alerts@example.com>", To: "ops@example.com, Zoë <zoe@example.com>", Hello: "edge-1"}
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.received()
	if len(got) != 1 {
		t.Fatalf("server got %d messages", len(got))
	}
	r := got[0]
	if r.from != "alerts@example.com" || strings.Join(r.to, ",") != "ops@example.com,zoe@example.com" {
		t.Errorf("envelope from %q to %q", r.from, r.to)
	}
	if r.tls || r.user != "" {
		t.Errorf("tls %v user %q, want neither", r.tls, r.user)
	}
	if !srv.sawCommand("EHLO EDGE-1") {
		t.Error("EHLO did not use Hello")
	}

	e := parseEmail(t, r.data)
	for k, want := range map[string]string{
		"Subject":             "[siot] FIRING: Boiler too hot — Boiler 1",
		"Message-Id":          "<" + m.ID + "@siot>",
		"X-Siot-Notification": m.ID,
		"Mime-Version":        "1.0",
		"Content-Type":        "text/plain; charset=utf-8",
	} {
		if v := decodeHeader(t, e.header.Get(k)); v != want {
			t.Errorf("%s: %q, want %q", k, v, want)
		}
	}
	if from, err := e.header.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "alerts@example.com" || from[0].Name != "Siot Alerts" {
		t.Errorf("From %v (%v)", from, err)
	}
	if to, err := e.header.AddressList("To"); err != nil || len(to) != 2 || to[1].Name != "Zoë" {
		t.Errorf("To %v (%v)", to, err)
	}
	if date, err := e.header.Date(); err != nil || !date.Equal(m.Time.Truncate(time.Second)) {
		t.Errorf("Date %v (%v), want %v", date, err, m.Time)
	}

	wantText := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(m.Text)
	body := strings.ReplaceAll(e.body, "\r\n", "\n")
	if !strings.HasPrefix(body, wantText+"\n\n") {
		t.Errorf("body does not start with the text:\n%q\nwant prefix\n%q", body, wantText)
	}
	for _, line := range []string{
		"Status: firing",
		"Rule: Boiler too hot (11111111-1111-4111-8111-111111111111)",
		"Node: Boiler 1 (22222222-2222-4222-8222-222222222222)",
		"Time: 2024-05-01T10:34:56.789Z",
		"Instance: 33333333-3333-4333-8333-333333333333",
		"  44444444-4444-4444-8444-444444444444 temp 0 = 92.5",
		`  44444444-4444-4444-8444-444444444444 mode 0 = 1 "auto"`,
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("body lacks the line %q:\n%s", line, body)
		}
	}
}

func TestSMTPSubjectResolvedAndLong(t *testing.T) {
	m := testMessage()
	m.Status = "resolved"
	m.NodeName = ""
	if got, want := subject(m), "[siot] RESOLVED: Boiler too hot — 22222222-2222-4222-8222-222222222222"; got != want {
		t.Errorf("subject %q, want %q", got, want)
	}
	// Long names, ASCII and not, fold into lines of at most 78 bytes and
	// decode back to the subject.
	for _, name := range []string{strings.Repeat("Kessel ", 40), strings.Repeat("Kesselhaus-Überwachung ", 10), strings.Repeat("x", 100)} {
		m.RuleName = name
		from, _ := mail.ParseAddress("a@example.com")
		e := parseEmail(t, string(buildEmail(from, []*mail.Address{from}, m)))
		if got, want := decodeHeader(t, e.header.Get("Subject")), subject(m); got != want {
			t.Errorf("subject decodes to\n%q\nwant\n%q", got, want)
		}
	}
}

func TestSMTPStartTLSAuth(t *testing.T) {
	serverTLS, pool := testCA(t)
	srv := startSMTPServer(t, smtpServerConfig{tls: serverTLS, user: "alice", pass: "correct horse"})
	s := &SMTP{
		Addr: srv.addr(), From: "alerts@example.com", To: "ops@example.com",
		Username: "alice", Password: "correct horse",
		TLSConfig: &tls.Config{RootCAs: pool},
	}
	if err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.received()
	if len(got) != 1 || !got[0].tls || got[0].user != "alice" {
		t.Fatalf("received %+v, want one message over TLS from alice", got)
	}

	wrong := *s
	wrong.Password = "battery staple"
	err := wrong.Send(context.Background(), testMessage())
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if !Permanent(err) || !strings.Contains(err.Error(), "535") || !strings.Contains(err.Error(), "AUTH") {
		t.Errorf("want a permanent AUTH error with 535, got %v", err)
	}
	checkRedacted(t, err, "battery staple")
	if n := len(srv.received()); n != 1 {
		t.Errorf("server got %d messages, want still 1", n)
	}
}

// Without a CA that vouches for the server, STARTTLS fails, and nothing
// is sent in clear instead.
func TestSMTPStartTLSUntrusted(t *testing.T) {
	serverTLS, _ := testCA(t)
	srv := startSMTPServer(t, smtpServerConfig{tls: serverTLS, user: "alice", pass: "pw-123456"})
	s := &SMTP{Addr: srv.addr(), From: "a@example.com", To: "b@example.com", Username: "alice", Password: "pw-123456"}
	err := s.Send(context.Background(), testMessage())
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("want a STARTTLS error, got %v", err)
	}
	if srv.sawCommand("AUTH") || srv.sawCommand("MAIL") {
		t.Error("the client went on after a failed STARTTLS")
	}
}

// Credentials require STARTTLS: a server without it gets no AUTH.
func TestSMTPStartTLSRequiredForAuth(t *testing.T) {
	srv := startSMTPServer(t, smtpServerConfig{user: "alice", pass: "pw-123456"})
	// Addr's host is not "127.0.0.1", so PlainAuth itself would not catch it.
	addr := strings.Replace(srv.addr(), "127.0.0.1", "localhost", 1)
	s := &SMTP{Addr: addr, From: "a@example.com", To: "b@example.com", Username: "alice", Password: "pw-123456"}
	err := s.Send(context.Background(), testMessage())
	if err == nil || !Permanent(err) || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("want a permanent error about STARTTLS, got %v", err)
	}
	if srv.sawCommand("AUTH") {
		t.Error("credentials sent without TLS")
	}
}

func TestSMTPImplicitTLS(t *testing.T) {
	serverTLS, pool := testCA(t)
	srv := startSMTPServer(t, smtpServerConfig{tls: serverTLS, implicitTLS: true, user: "alice", pass: "pw-123456"})
	s := &SMTP{Addr: srv.addr(), From: "a@example.com", To: "b@example.com", Username: "alice", Password: "pw-123456", TLS: "tls", TLSConfig: &tls.Config{RootCAs: pool}}
	if err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := srv.received(); len(got) != 1 || !got[0].tls || got[0].user != "alice" {
		t.Fatalf("received %+v", got)
	}
}

func TestSMTPNoTLS(t *testing.T) {
	serverTLS, _ := testCA(t)
	// The server offers STARTTLS; "none" does not take it, and may
	// authenticate in clear to loopback only.
	srv := startSMTPServer(t, smtpServerConfig{tls: serverTLS})
	s := &SMTP{Addr: srv.addr(), From: "a@example.com", To: "b@example.com", TLS: "none"}
	if err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := srv.received(); len(got) != 1 || got[0].tls {
		t.Fatalf("received %+v, want one message in clear", got)
	}

	authSrv := startSMTPServer(t, smtpServerConfig{user: "alice", pass: "pw-123456"})
	s = &SMTP{Addr: authSrv.addr(), From: "a@example.com", To: "b@example.com", TLS: "none", Username: "alice", Password: "pw-123456"}
	if err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("Send with AUTH to loopback: %v", err)
	}
	if got := authSrv.received(); len(got) != 1 || got[0].user != "alice" {
		t.Fatalf("received %+v", got)
	}
}

// plan refuses before any dial; 192.0.2.1 (TEST-NET-1) is never reached:
// a dial would hang until the huge Timeout, not return at once.
func TestSMTPNoTLSAuthRemoteRefused(t *testing.T) {
	s := &SMTP{Addr: "192.0.2.1:25", From: "a@example.com", To: "b@example.com", TLS: "none", Username: "alice", Password: "pw-123456", Timeout: time.Hour}
	if _, err := s.plan(testMessage()); err == nil || !Permanent(err) {
		t.Fatalf("plan: want a permanent error, got %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := s.Send(ctx, testMessage())
	if err == nil || !Permanent(err) || !strings.Contains(err.Error(), "without TLS") {
		t.Fatalf("want a permanent error about TLS, got %v", err)
	}
	checkRedacted(t, err, "pw-123456")
}

func TestSMTPReplies(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reply     map[string]string
		permanent bool
		want      string
	}{
		{"451 at end of data", map[string]string{".": "451 4.3.0 try again later"}, false, "end of DATA: 451 4.3.0 try again later"},
		{"452 on RCPT", map[string]string{"RCPT": "452 4.2.2 mailbox full"}, false, "RCPT TO <ops@example.com>: 452"},
		{"550 on RCPT", map[string]string{"RCPT": "550 5.1.1 no such user"}, true, "RCPT TO <ops@example.com>: 550 5.1.1 no such user"},
		{"553 on MAIL", map[string]string{"MAIL": "553 5.7.1 sender refused"}, true, "MAIL FROM <alerts@example.com>: 553"},
		{"554 on DATA", map[string]string{"DATA": "554 5.3.4 no"}, true, "DATA: 554"},
		{"552 at end of data", map[string]string{".": "552 5.3.4 too big"}, true, "end of DATA: 552"},
		{"421 on EHLO", map[string]string{"EHLO": "421 4.3.2 shutting down", "HELO": "421 4.3.2 shutting down"}, false, "EHLO: 421"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startSMTPServer(t, smtpServerConfig{reply: tc.reply})
			s := &SMTP{Addr: srv.addr(), From: "alerts@example.com", To: "ops@example.com"}
			err := s.Send(context.Background(), testMessage())
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if Permanent(err) != tc.permanent {
				t.Errorf("Permanent = %v, want %v: %v", Permanent(err), tc.permanent, err)
			}
			if want := "smtp " + srv.addr() + ": " + tc.want; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q\nwant prefix %q", err, want)
			}
			if n := len(srv.received()); n != 0 {
				t.Errorf("server kept %d messages", n)
			}
		})
	}
}

func TestSMTPSilentServerTimeout(t *testing.T) {
	srv := startSMTPServer(t, smtpServerConfig{silent: true})
	s := &SMTP{Addr: srv.addr(), From: "a@example.com", To: "b@example.com", Timeout: 200 * time.Millisecond}
	start := time.Now()
	err := s.Send(context.Background(), testMessage())
	if err == nil || Permanent(err) {
		t.Fatalf("want a transient error, got %v", err)
	}
	if !strings.Contains(err.Error(), "greeting") || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("unclear error: %v", err)
	}
	if d := time.Since(start); d > wait/2 {
		t.Errorf("Send took %v with a 200ms Timeout", d)
	}
}

func TestSMTPSilentServerCancel(t *testing.T) {
	srv := startSMTPServer(t, smtpServerConfig{silent: true})
	s := &SMTP{Addr: srv.addr(), From: "a@example.com", To: "b@example.com", Timeout: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Send(ctx, testMessage()) }()
	select {
	case <-srv.accepted:
	case <-time.After(wait):
		t.Fatal("Send never connected")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || Permanent(err) {
			t.Errorf("want a transient error wrapping context.Canceled, got %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Send did not return after cancel")
	}
}

func TestSMTPRefusedInput(t *testing.T) {
	srv := startSMTPServer(t, smtpServerConfig{})
	base := SMTP{Addr: srv.addr(), From: "alerts@example.com", To: "ops@example.com"}
	for _, tc := range []struct {
		name string
		smtp func(*SMTP)
		msg  func(*Message)
		want string
	}{
		{name: "From injection", smtp: func(s *SMTP) { s.From = "a@example.com\r\nBcc: victim@example.com" }, want: "header injection"},
		{name: "To injection", smtp: func(s *SMTP) { s.To = "ops@example.com\nBcc: victim@example.com" }, want: "header injection"},
		{name: "rule name injection", msg: func(m *Message) { m.RuleName = "x\r\nBcc: victim@example.com" }, want: "header injection"},
		{name: "node name injection", msg: func(m *Message) { m.NodeName = "x\nBcc: victim@example.com" }, want: "header injection"},
		{name: "bad From", smtp: func(s *SMTP) { s.From = "not an address" }, want: "invalid From"},
		{name: "no To", smtp: func(s *SMTP) { s.To = "" }, want: "invalid To"},
		{name: "no port", smtp: func(s *SMTP) { s.Addr = "127.0.0.1" }, want: "invalid address"},
		{name: "bad TLS", smtp: func(s *SMTP) { s.TLS = "ssl" }, want: "TLS \"ssl\""},
		{name: "EHLO injection", smtp: func(s *SMTP) { s.Hello = "x\r\nMAIL FROM:<a@b>" }, want: "EHLO"},
		{name: "status", msg: func(m *Message) { m.Status = "FIRING" }, want: "status"},
		{name: "oversized", msg: func(m *Message) { m.Text = strings.Repeat("ü", maxMessageSize/2) }, want: "more than the limit"},
	} {
		s, m := base, testMessage()
		if tc.smtp != nil {
			tc.smtp(&s)
		}
		if tc.msg != nil {
			tc.msg(m)
		}
		err := s.Send(context.Background(), m)
		if err == nil || !Permanent(err) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "smtp ") {
			t.Errorf("%s: want a permanent error about %q, got %v", tc.name, tc.want, err)
		}
	}
	if n := srv.connections(); n != 0 {
		t.Errorf("refused input still dialed the server %d times", n)
	}
}

// FuzzEmail checks that any rule name, node name and text without CR or
// LF in the names makes an email that parses, keeps every line within 78
// bytes (names are clipped, encoded words are short), and decodes back to
// the subject and the body it was built from.
func FuzzEmail(f *testing.F) {
	f.Add("Boiler too hot", "Boiler 1", "92.5 °C")
	f.Add("", "", "")
	f.Add(strings.Repeat("Überwachung ", 20), strings.Repeat("x", 300), ".\r\n.\r\n=?utf-8?q?x?=")
	f.Add("=?utf-8?q?fake?=", "\x00\xff", "\r\r\n\n")
	from, _ := mail.ParseAddress("Siot <a@example.com>")
	f.Fuzz(func(t *testing.T, rule, node, text string) {
		if strings.ContainsAny(rule+node, "\r\n") {
			t.Skip("refused as header injection")
		}
		m := testMessage()
		m.RuleName, m.NodeName, m.Text = rule, node, text
		data := string(buildEmail(from, []*mail.Address{from}, m))
		// What a server's DotReader gives: LF line ends.
		e := parseEmail(t, strings.ReplaceAll(data, "\r\n", "\n"))
		if got, want := decodeHeader(t, e.header.Get("Subject")), subject(m); got != want {
			t.Errorf("subject decodes to %q, want %q", got, want)
		}
		if got, want := strings.ReplaceAll(e.body, "\r\n", "\n"), emailBody(m); got != want {
			t.Errorf("body decodes to\n%q\nwant\n%q", got, want)
		}
	})
}
