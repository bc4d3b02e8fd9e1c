package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"
)

// SMTP sends the message as a plain-text email.
//
// The email has the headers From, To, Subject ("[siot] FIRING: <RuleName> —
// <NodeName or node ID>", or RESOLVED), Date (Message.Time), Message-ID
// (<Message.ID@siot>), MIME-Version, Content-Type: text/plain;
// charset=utf-8, Content-Transfer-Encoding: quoted-printable and
// X-Siot-Notification: <Message.ID>. Its body is the Text, then the status,
// rule, node, time, instance and values, one per line.
//
// An SMTP is safe for concurrent use; Send does not modify it.
type SMTP struct {
	Addr string // host:port
	// From is the sender, To the recipients (a comma-separated list), each
	// an RFC 5322 address such as "Siot <siot@example.com>".
	From string
	To   string
	// Username and Password authenticate with AUTH PLAIN; both empty: no
	// AUTH.
	Username, Password string
	// TLS is "starttls" (the default when ""): STARTTLS required if a
	// Username or Password is set, used when offered otherwise; "tls":
	// implicit TLS (port 465 style); "none": never, and then AUTH is
	// refused unless Addr's host is localhost, 127.0.0.1 or ::1.
	TLS string
	// TLSConfig is cloned for the TLS connection. nil: system roots,
	// ServerName from Addr. An empty ServerName is set from Addr.
	TLSConfig *tls.Config
	// Timeout bounds the whole exchange, dial included; 0: 30 s.
	Timeout time.Duration
	// Hello is the EHLO name; "" is "localhost".
	Hello string
}

// The values of SMTP.TLS.
const (
	smtpStartTLS = "starttls"
	smtpTLS      = "tls"
	smtpNoTLS    = "none"
)

const (
	smtpTimeout = 30 * time.Second
	// maxNameLen bounds the rule's and the node's name in a Subject, in
	// bytes, so the header stays far from the 998 bytes a line may have.
	maxNameLen = 120
)

// smtpPlan is one delivery, checked and built before any I/O.
type smtpPlan struct {
	name     string // "smtp <Addr>", what errors start with
	addr     string
	host     string
	mode     string // smtpStartTLS, smtpTLS or smtpNoTLS
	tls      *tls.Config
	auth     smtp.Auth // nil: no AUTH
	hello    string
	timeout  time.Duration
	from     string   // the envelope sender
	to       []string // the envelope recipients
	data     []byte   // the whole email, CRLF line ends, not dot-stuffed
	password string   // kept only to check no error shows it
}

// Send makes one attempt to deliver m: it connects to Addr, says EHLO,
// secures the connection as TLS says, authenticates when asked, and sends
// the email to every recipient. It returns nil once the server accepted
// the message (250 after DATA); an error after that (on QUIT) is ignored.
// It blocks until then, until ctx is done or until Timeout has passed
// since the call, whichever comes first.
//
// The error names the server (Addr) and the step that failed, with the
// server's reply on one line, and never shows the password. [Permanent]
// classifies it: an invalid configuration, address or message, header
// injection (CR or LF in From, To, or the Subject's parts), a message over
// 256 KiB, a server that lacks STARTTLS when credentials are set or lacks
// AUTH, and a 5yz reply are permanent; the rest (a connection or TLS
// error, a timeout, ctx done, a 4yz reply) is transient. When ctx ended the
// attempt, the error wraps ctx.Err().
func (s *SMTP) Send(ctx context.Context, m *Message) error {
	p, err := s.plan(m)
	if err != nil {
		return err
	}
	return p.deliver(ctx)
}

// plan checks the configuration and m and builds the email, without I/O.
func (s *SMTP) plan(m *Message) (*smtpPlan, error) {
	name := "smtp " + clip(oneLine(s.Addr), maxSnippet)
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || host == "" || port == "" {
		return nil, permanentErr(name, "invalid address: want host:port", err)
	}
	p := &smtpPlan{name: name, addr: s.Addr, host: host, hello: s.Hello, timeout: s.Timeout, password: s.Password}
	if p.hello == "" {
		p.hello = "localhost"
	}
	if strings.ContainsAny(p.hello, "\r\n") {
		return nil, permanentErr(name, "the EHLO name holds CR or LF", nil)
	}
	if p.timeout <= 0 {
		p.timeout = smtpTimeout
	}

	switch s.TLS {
	case "", smtpStartTLS:
		p.mode = smtpStartTLS
	case smtpTLS, smtpNoTLS:
		p.mode = s.TLS
	default:
		return nil, permanentErr(name, fmt.Sprintf("TLS %q is not one of starttls, tls, none", oneLine(s.TLS)), nil)
	}
	if p.mode != smtpNoTLS {
		p.tls = &tls.Config{}
		if s.TLSConfig != nil {
			p.tls = s.TLSConfig.Clone()
		}
		if p.tls.ServerName == "" {
			p.tls.ServerName = host
		}
	}
	if s.Username != "" || s.Password != "" {
		if p.mode == smtpNoTLS && !isLocalhost(host) {
			return nil, permanentErr(name, "refusing to send credentials without TLS to a host other than localhost", nil)
		}
		if strings.ContainsAny(s.Username+s.Password, "\x00\r\n") {
			return nil, permanentErr(name, "the username or password holds NUL, CR or LF", nil)
		}
		p.auth = smtp.PlainAuth("", s.Username, s.Password, host)
	}

	if err := m.validate(); err != nil {
		return nil, permanentErr(name, err.Error(), err)
	}
	if strings.ContainsAny(s.From, "\r\n") || strings.ContainsAny(s.To, "\r\n") {
		return nil, permanentErr(name, "header injection: From or To holds CR or LF", nil)
	}
	if strings.ContainsAny(m.RuleName, "\r\n") || strings.ContainsAny(m.NodeName, "\r\n") {
		return nil, permanentErr(name, "header injection: the rule's or the node's name holds CR or LF", nil)
	}
	from, err := mail.ParseAddress(s.From)
	if err != nil {
		return nil, permanentErr(name, "invalid From address: "+oneLine(err.Error()), err)
	}
	to, err := mail.ParseAddressList(s.To)
	if err != nil {
		return nil, permanentErr(name, "invalid To address: "+oneLine(err.Error()), err)
	}
	p.from = from.Address
	for _, a := range to {
		p.to = append(p.to, a.Address)
	}
	p.data = buildEmail(from, to, m)
	if len(p.data) > maxMessageSize {
		return nil, permanentErr(name, fmt.Sprintf("message is %d bytes, more than the limit of %d", len(p.data), maxMessageSize), nil)
	}
	return p, nil
}

// isLocalhost reports whether host is one net/smtp's PlainAuth trusts
// without TLS.
func isLocalhost(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// deliver runs the SMTP exchange of p.
func (p *smtpPlan) deliver(ctx context.Context) (err error) {
	deadline := time.Now().Add(p.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	step := "connecting"
	fail := func(err error) error { return p.classify(ctx, step, err) }

	dialer := &net.Dialer{}
	var conn net.Conn
	if p.mode == smtpTLS {
		conn, err = (&tls.Dialer{NetDialer: dialer, Config: p.tls}).DialContext(dctx, "tcp", p.addr)
	} else {
		conn, err = dialer.DialContext(dctx, "tcp", p.addr)
	}
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	// The deadline bounds every read and write; when ctx is done first, a
	// deadline in the past ends the one under way. The AfterFunc is joined
	// before Send returns.
	if err := conn.SetDeadline(deadline); err != nil {
		return fail(err)
	}
	stopped := make(chan struct{})
	stop := context.AfterFunc(dctx, func() {
		defer close(stopped)
		conn.SetDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-stopped
		}
	}()

	step = "reading the greeting"
	c, err := smtp.NewClient(conn, p.host)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	step = "EHLO"
	if err := c.Hello(p.hello); err != nil {
		return fail(err)
	}
	if p.mode == smtpStartTLS {
		if ok, _ := c.Extension("STARTTLS"); ok {
			step = "STARTTLS"
			if err := c.StartTLS(p.tls); err != nil {
				return fail(err)
			}
		} else if p.auth != nil {
			return permanentErr(p.name, "the server does not offer STARTTLS: refusing to send credentials in clear", nil)
		}
	}
	if p.auth != nil {
		if ok, _ := c.Extension("AUTH"); !ok {
			return permanentErr(p.name, "the server does not offer AUTH", nil)
		}
		step = "AUTH"
		if err := c.Auth(p.auth); err != nil {
			return fail(err)
		}
	}
	step = "MAIL FROM <" + oneLine(p.from) + ">"
	if err := c.Mail(p.from); err != nil {
		return fail(err)
	}
	for _, to := range p.to {
		step = "RCPT TO <" + oneLine(to) + ">"
		if err := c.Rcpt(to); err != nil {
			return fail(err)
		}
	}
	step = "DATA"
	w, err := c.Data()
	if err != nil {
		return fail(err)
	}
	if _, err := w.Write(p.data); err != nil {
		return fail(err)
	}
	step = "end of DATA"
	if err := w.Close(); err != nil {
		return fail(err)
	}
	// The server has taken the message; a failing QUIT changes nothing.
	c.Quit()
	return nil
}

// classify turns an error of step into the error Send returns.
func (p *smtpPlan) classify(ctx context.Context, step string, err error) error {
	prefix := p.name + ": " + step
	if ctxErr := ctx.Err(); ctxErr != nil {
		return transientErr(prefix, ctxErr.Error(), ctxErr)
	}
	var reply *textproto.Error
	if errors.As(err, &reply) {
		text := p.scrub(fmt.Sprintf("%03d %s", reply.Code, clip(oneLine(reply.Msg), maxSnippet)))
		if reply.Code >= 500 && reply.Code <= 599 {
			return permanentErr(prefix, text, err)
		}
		return transientErr(prefix, text, err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return transientErr(prefix, "timed out ("+p.timeout.String()+" for the whole exchange)", err)
	}
	return transientErr(prefix, p.scrub(oneLine(err.Error())), err)
}

// scrub hides the password in text, which came from elsewhere (a server
// may echo what it was sent).
func (p *smtpPlan) scrub(text string) string {
	if p.password == "" {
		return text
	}
	return strings.ReplaceAll(text, p.password, "xxxxx")
}

// buildEmail returns the email for m: header and quoted-printable body,
// with CRLF line ends.
func buildEmail(from *mail.Address, to []*mail.Address, m *Message) []byte {
	var b bytes.Buffer
	header := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	header("From", from.String())
	tos := make([]string, len(to))
	for i, a := range to {
		tos[i] = a.String()
	}
	header("To", strings.Join(tos, ", "))
	b.WriteString(foldHeader("Subject", mime.QEncoding.Encode("utf-8", subject(m))))
	header("Date", m.Time.Format(time.RFC1123Z))
	header("Message-ID", "<"+m.ID+"@siot>")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	header("X-Siot-Notification", m.ID)
	b.WriteString("\r\n")

	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(emailBody(m))) // a bytes.Buffer does not fail
	qp.Close()
	return b.Bytes()
}

// subject returns the Subject of m, unencoded.
func subject(m *Message) string {
	state := "FIRING"
	if m.Status == statusResolved {
		state = "RESOLVED"
	}
	node := m.NodeName
	if node == "" {
		node = m.Node.String()
	}
	return "[siot] " + state + ": " + clip(m.RuleName, maxNameLen) + " — " + clip(node, maxNameLen)
}

// foldHeader returns the header line "k: v" with CRLF, folded before a
// space wherever a line would pass 78 bytes (right after the colon too, if
// the first word does not fit there but fits a line of its own). v holds
// no CR or LF; its encoded words hold no space, so folding never splits
// one.
func foldHeader(k, v string) string {
	var b strings.Builder
	b.WriteString(k + ":")
	line := len(k) + 1
	for i, word := range strings.Split(v, " ") {
		if line+1+len(word) > 78 && (i > 0 || len(word) <= 77) {
			b.WriteString("\r\n")
			line = 0
		}
		b.WriteString(" " + word)
		line += 1 + len(word)
	}
	b.WriteString("\r\n")
	return b.String()
}

// emailBody returns the text of the email, LF line ends.
func emailBody(m *Message) string {
	var b strings.Builder
	// Every line end becomes LF, which the quoted-printable writer turns
	// into CRLF; it would take a bare CR for a line end too.
	text := strings.ReplaceAll(strings.ReplaceAll(m.Text, "\r\n", "\n"), "\r", "\n")
	b.WriteString(text)
	if !strings.HasSuffix(text, "\n") {
		b.WriteString("\n")
	}
	b.WriteString("\n")
	line := func(k, v string) { b.WriteString(k + ": " + v + "\n") }
	line("Status", m.Status)
	line("Rule", named(m.RuleName, m.Rule.String()))
	line("Node", named(m.NodeName, m.Node.String()))
	line("Time", formatTime(m.Time))
	line("Instance", m.Instance.String())
	if len(m.Values) > 0 {
		b.WriteString("Values:\n")
	}
	for _, v := range m.Values {
		fmt.Fprintf(&b, "  %s %s %s = %s", v.Node, oneLine(v.Type), oneLine(v.Key), strconv.FormatFloat(v.Value, 'g', -1, 64))
		if v.Text != "" {
			b.WriteString(" " + strconv.Quote(v.Text))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// named returns "name (id)", or id when name is empty, on one line.
func named(name, id string) string {
	if name = oneLine(name); name == "" {
		return id
	}
	return name + " (" + id + ")"
}
