package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// captured is what a test webhook server saw of one request.
type captured struct {
	method string
	header http.Header
	body   []byte
}

// hookServer starts an httptest server whose handler records each request
// and answers with answer; it is closed when the test ends.
func hookServer(t *testing.T, answer http.HandlerFunc) (*httptest.Server, func() []captured) {
	t.Helper()
	var mu sync.Mutex
	var got []captured
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, captured{method: r.Method, header: r.Header.Clone(), body: body})
		mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []captured {
		mu.Lock()
		defer mu.Unlock()
		return append([]captured(nil), got...)
	}
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func TestWebhookDelivers(t *testing.T) {
	srv, got := hookServer(t, status(http.StatusNoContent, ""))
	m := testMessage()
	wh := &Webhook{URL: srv.URL + "/hook?x=1", Secret: "s3cret-key"}
	if err := wh.Send(context.Background(), m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	reqs := got()
	if len(reqs) != 1 {
		t.Fatalf("server got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.method != http.MethodPost {
		t.Errorf("method %s, want POST", r.method)
	}
	for k, want := range map[string]string{
		"Content-Type":    "application/json",
		"Idempotency-Key": m.ID,
		"User-Agent":      "siot",
	} {
		if v := r.header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	mac := hmac.New(sha256.New, []byte("s3cret-key"))
	mac.Write(r.body)
	wantSig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if sig := r.header.Get("X-Siot-Signature"); !hmac.Equal([]byte(sig), []byte(wantSig)) {
		t.Errorf("X-Siot-Signature = %q, want %q", sig, wantSig)
	}

	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	want := map[string]any{
		"id":       m.ID,
		"status":   "firing",
		"rule":     map[string]any{"id": m.Rule.String(), "name": "Boiler too hot"},
		"node":     map[string]any{"id": m.Node.String(), "name": "Boiler 1"},
		"text":     m.Text,
		"time":     "2024-05-01T10:34:56.789Z",
		"instance": m.Instance.String(),
		"values": []any{
			map[string]any{"node": m.Values[0].Node.String(), "type": "temp", "key": "0", "value": 92.5},
			map[string]any{"node": m.Values[1].Node.String(), "type": "mode", "key": "0", "value": 1.0, "text": "auto"},
		},
	}
	if !reflect.DeepEqual(body, want) {
		t.Errorf("body:\n got %v\nwant %v", body, want)
	}
}

func TestWebhookBodyEdges(t *testing.T) {
	m := testMessage()
	m.Values = nil
	m.Text = "<b>&</b>"
	b, err := encodeWebhook(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"values":[]`)) {
		t.Errorf("no values must encode as [], got %s", b)
	}
	if !bytes.Contains(b, []byte(`"text":"<b>&</b>"`)) {
		t.Errorf("text must not be HTML-escaped, got %s", b)
	}
	m.Values = []Value{{Type: "x", Value: math.NaN()}, {Type: "y", Value: math.Inf(1)}}
	b, err = encodeWebhook(m)
	if err != nil {
		t.Fatalf("non-finite values: %v", err)
	}
	if n := bytes.Count(b, []byte(`"value":null`)); n != 2 {
		t.Errorf("non-finite values must encode as null, got %s", b)
	}
}

func TestWebhookUserAgentAndNoSecret(t *testing.T) {
	srv, got := hookServer(t, status(http.StatusOK, "ok"))
	wh := &Webhook{URL: srv.URL, UserAgent: "siot/1.2"}
	if err := wh.Send(context.Background(), testMessage()); err != nil {
		t.Fatal(err)
	}
	r := got()[0]
	if ua := r.header.Get("User-Agent"); ua != "siot/1.2" {
		t.Errorf("User-Agent %q", ua)
	}
	if _, ok := r.header["X-Siot-Signature"]; ok {
		t.Error("X-Siot-Signature sent without a secret")
	}
}

func TestWebhookStatus(t *testing.T) {
	for _, tc := range []struct {
		code      int
		ok        bool
		permanent bool
	}{
		{200, true, false},
		{201, true, false},
		{202, true, false},
		{204, true, false},
		{400, false, true},
		{401, false, true},
		{404, false, true},
		{408, false, false},
		{410, false, true},
		{429, false, false},
		{500, false, false},
		{502, false, false},
		{503, false, false},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			srv, _ := hookServer(t, status(tc.code, "the reason"))
			err := (&Webhook{URL: srv.URL + "/hook"}).Send(context.Background(), testMessage())
			if tc.ok {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if Permanent(err) != tc.permanent {
				t.Errorf("Permanent = %v, want %v (%v)", Permanent(err), tc.permanent, err)
			}
			want := fmt.Sprintf("webhook %s/hook: %d %s: the reason", srv.URL, tc.code, http.StatusText(tc.code))
			if err.Error() != want {
				t.Errorf("error %q\n want %q", err, want)
			}
		})
	}
}

func TestWebhookRedirectNotFollowed(t *testing.T) {
	var followed atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { followed.Add(1) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	err := (&Webhook{URL: srv.URL + "/hook"}).Send(context.Background(), testMessage())
	if err == nil {
		t.Fatal("a redirect counted as success")
	}
	if !strings.Contains(err.Error(), "307 Temporary Redirect") || !strings.Contains(err.Error(), "/elsewhere") {
		t.Errorf("error does not name the redirect: %v", err)
	}
	if !Permanent(err) {
		t.Errorf("a redirect is permanent: %v", err)
	}
	if n := followed.Load(); n != 0 {
		t.Errorf("redirect followed %d times", n)
	}
}

// A caller's Client keeps its TLS setup but may not follow redirects
// either.
func TestWebhookOwnClientTLS(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/hook", http.StatusMovedPermanently)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()

	if err := (&Webhook{URL: srv.URL + "/hook", Client: client}).Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("Send over https: %v", err)
	}
	err := (&Webhook{URL: srv.URL + "/moved", Client: client}).Send(context.Background(), testMessage())
	if err == nil || !strings.Contains(err.Error(), "301 Moved Permanently") {
		t.Fatalf("redirect: %v", err)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("server got %d requests, want 2 (the redirect not followed)", n)
	}
	if client.CheckRedirect != nil {
		t.Error("Send changed the caller's Client")
	}
}

func TestWebhookContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, _ := hookServer(t, func(w http.ResponseWriter, r *http.Request) {
		cancel()             // the request has arrived: give up on it
		<-r.Context().Done() // and hang until the client goes away
	})
	start := time.Now()
	err := (&Webhook{URL: srv.URL}).Send(ctx, testMessage())
	if err == nil {
		t.Fatal("Send succeeded against a hanging server")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error does not wrap context.Canceled: %v", err)
	}
	if Permanent(err) {
		t.Errorf("a cancelled attempt is transient: %v", err)
	}
	if d := time.Since(start); d > wait/2 {
		t.Errorf("Send took %v after the cancel", d)
	}
}

func TestWebhookSnippet(t *testing.T) {
	long := "line one\r\n\tline\x00two\x1b[31m " + strings.Repeat("é", 5000)
	srv, _ := hookServer(t, status(http.StatusInternalServerError, long))
	err := (&Webhook{URL: srv.URL}).Send(context.Background(), testMessage())
	if err == nil {
		t.Fatal("no error")
	}
	prefix := "webhook " + srv.URL + ": 500 Internal Server Error: "
	text := err.Error()
	if !strings.HasPrefix(text, prefix) {
		t.Fatalf("error %q does not start with %q", text, prefix)
	}
	snip := strings.TrimSuffix(text[len(prefix):], "…")
	if len(snip) > maxSnippet {
		t.Errorf("snippet is %d bytes, more than %d", len(snip), maxSnippet)
	}
	if !strings.HasPrefix(snip, "line one line two [31m éé") {
		t.Errorf("snippet not sanitized: %q", snip)
	}
	if strings.ContainsAny(text, "\r\n\t\x00\x1b") {
		t.Errorf("error holds control characters: %q", text)
	}
	if !strings.HasSuffix(text, "…") {
		t.Errorf("a cut snippet ends with …: %q", text)
	}
}

func TestWebhookRedactsSecrets(t *testing.T) {
	var auth atomic.Value
	srv, _ := hookServer(t, func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		auth.Store(u + ":" + p)
		w.WriteHeader(http.StatusBadGateway)
	})
	url := strings.Replace(srv.URL, "http://", "http://alice:hunter22@", 1)
	wh := &Webhook{URL: url + "/hook", Secret: "sig-key-123"}
	err := wh.Send(context.Background(), testMessage())
	if err == nil {
		t.Fatal("no error")
	}
	if got, _ := auth.Load().(string); got != "alice:hunter22" {
		t.Errorf("basic auth from the URL: got %q", got)
	}
	checkRedacted(t, err, "hunter22", "sig-key-123")
	if !strings.Contains(err.Error(), "alice:xxxxx@") {
		t.Errorf("error does not show the redacted URL: %v", err)
	}

	// The same for a server that is gone: a connection error.
	srv.Close()
	err = wh.Send(context.Background(), testMessage())
	if err == nil || Permanent(err) {
		t.Fatalf("a refused connection is transient: %v", err)
	}
	checkRedacted(t, err, "hunter22", "sig-key-123")

	// And for URLs that do not parse or are refused.
	for _, raw := range []string{"ftp://bob:hunter22@example.com/x", "http://bob:hunter22%zz@example.com/", "http://bob:hunter22@/x"} {
		err := (&Webhook{URL: raw}).Send(context.Background(), testMessage())
		if err == nil || !Permanent(err) {
			t.Fatalf("%s: want a permanent error, got %v", raw, err)
		}
		checkRedacted(t, err, "hunter22")
	}
}

func checkRedacted(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error shows %q: %v", s, err)
		}
	}
}

func TestWebhookOversized(t *testing.T) {
	srv, got := hookServer(t, status(http.StatusOK, ""))
	m := testMessage()
	m.Text = strings.Repeat("x", maxMessageSize)
	err := (&Webhook{URL: srv.URL}).Send(context.Background(), m)
	if err == nil || !Permanent(err) {
		t.Fatalf("oversized message: want a permanent error, got %v", err)
	}
	if !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("error does not say why: %v", err)
	}
	if n := len(got()); n != 0 {
		t.Errorf("server got %d requests", n)
	}
}

func TestWebhookInvalid(t *testing.T) {
	for _, raw := range []string{"", "ftp://example.com/x", "mailto:ops@example.com", "http://", "http:///path", "https://:443/x", "://nothing", "example.com/hook", "http://exa mple.com/"} {
		err := (&Webhook{URL: raw}).Send(context.Background(), testMessage())
		if err == nil || !Permanent(err) {
			t.Errorf("URL %q: want a permanent error, got %v", raw, err)
		} else if !strings.HasPrefix(err.Error(), "webhook") || !strings.Contains(err.Error(), "invalid URL") {
			t.Errorf("URL %q: unclear error %q", raw, err)
		}
	}
	srv, got := hookServer(t, status(http.StatusOK, ""))
	for name, mutate := range map[string]func(*Message){
		"no ID":       func(m *Message) { m.ID = "" },
		"ID with CR":  func(m *Message) { m.ID = "a\r\nb" },
		"ID too long": func(m *Message) { m.ID = strings.Repeat("a", maxIDLen+1) },
		"status":      func(m *Message) { m.Status = "pending" },
		"no time":     func(m *Message) { m.Time = time.Time{} },
	} {
		m := testMessage()
		mutate(m)
		err := (&Webhook{URL: srv.URL}).Send(context.Background(), m)
		if err == nil || !Permanent(err) {
			t.Errorf("%s: want a permanent error, got %v", name, err)
		}
	}
	if err := (&Webhook{URL: srv.URL}).Send(context.Background(), nil); err == nil || !Permanent(err) {
		t.Errorf("nil message: want a permanent error, got %v", err)
	}
	if n := len(got()); n != 0 {
		t.Errorf("server got %d requests for invalid messages", n)
	}
}

func TestPermanent(t *testing.T) {
	if Permanent(nil) || Permanent(errors.New("x")) || Permanent(context.Canceled) {
		t.Error("foreign errors are not permanent")
	}
	err := permanentErr("webhook x", "bad", nil)
	if !Permanent(fmt.Errorf("rule r: %w", err)) {
		t.Error("a wrapped permanent error is permanent")
	}
	if Permanent(fmt.Errorf("rule r: %w", transientErr("webhook x", "503", nil))) {
		t.Error("a wrapped transient error is transient")
	}
}
