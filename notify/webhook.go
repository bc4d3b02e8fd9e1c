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
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Webhook POSTs the message as JSON.
//
// The body is
//
//	{"id":"…","status":"firing","rule":{"id":"…","name":"…"},
//	 "node":{"id":"…","name":"…"},"text":"…","time":"2006-01-02T15:04:05.000Z",
//	 "instance":"…","values":[{"node":"…","type":"…","key":"…","value":1.5,"text":"…"}]}
//
// with time in UTC, "values" an array even when empty, a value's "text"
// left out when empty and its "value" null when not finite. The request
// carries Content-Type: application/json, Idempotency-Key: <Message.ID>,
// User-Agent and, when Secret is set, X-Siot-Signature.
//
// A Webhook is safe for concurrent use if its Client is; Send does not
// modify it.
type Webhook struct {
	// URL is an http or https URL with a host. Userinfo is allowed and sent
	// as basic auth; errors show its password as "xxxxx".
	URL string
	// Secret, when not empty, signs the body: header X-Siot-Signature:
	// sha256=<hex HMAC-SHA256 of the body with this key>.
	Secret string
	// Client sends the request. nil: a client with a 10 s timeout, whose
	// connections close when Send returns. A Client given here keeps its
	// Transport (and that Transport's idle connections), but Send never
	// follows a redirect whatever its CheckRedirect says.
	Client *http.Client
	// UserAgent is the User-Agent header; "" is "siot".
	UserAgent string
}

const (
	// webhookTimeout bounds a whole exchange with the default client.
	webhookTimeout = 10 * time.Second
	// maxResponseRead is how much of a response body Send reads.
	maxResponseRead = 64 << 10
	// maxSnippet is how much of a failing response's body an error shows.
	maxSnippet = 200
)

// Send makes one attempt to deliver m: it POSTs the JSON body and returns
// nil when the answer is 2xx. It blocks until the answer has been read (up
// to 64 KiB of its body), ctx is done or the client's timeout expires.
//
// The error names the URL, with any password redacted, and, for an answer
// other than 2xx, its status and up to 200 bytes of its body on one line.
// [Permanent] classifies it: an invalid URL or message, a body over 256 KiB,
// a redirect (which is never followed) and 4xx other than 408 and 429 are
// permanent; the rest (a connection error, a timeout, ctx done, 5xx, 408,
// 429) is transient. When ctx ended the attempt, the error wraps ctx.Err().
func (w *Webhook) Send(ctx context.Context, m *Message) error {
	u, name, err := parseWebhookURL(w.URL)
	if err != nil {
		return err
	}
	if err := m.validate(); err != nil {
		return permanentErr(name, err.Error(), err)
	}
	body, err := encodeWebhook(m)
	if err != nil {
		return permanentErr(name, "encoding the message: "+err.Error(), err)
	}
	if len(body) > maxMessageSize {
		return permanentErr(name, fmt.Sprintf("message is %d bytes, more than the limit of %d", len(body), maxMessageSize), nil)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		// u was parsed and checked already; say nothing of its text.
		return permanentErr(name, "making the request failed", nil)
	}
	ua := w.UserAgent
	if ua == "" {
		ua = "siot"
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", m.ID)
	req.Header.Set("User-Agent", ua)
	if w.Secret != "" {
		req.Header.Set("X-Siot-Signature", sign(w.Secret, body))
	}

	client, done := w.client()
	defer done()
	resp, err := client.Do(req)
	if err != nil {
		// A *url.Error's text holds the URL; give only its cause.
		cause := err
		var ue *url.Error
		if errors.As(err, &ue) {
			cause = ue.Err
		}
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(cause, ctxErr) {
			cause = fmt.Errorf("%w (%v)", ctxErr, cause)
		}
		return transientErr(name, oneLine(cause.Error()), cause)
	}
	defer resp.Body.Close()
	got, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponseRead))

	code := resp.StatusCode
	status := statusText(code)
	switch {
	case code >= 200 && code <= 299:
		return nil
	case code >= 300 && code <= 399:
		what := status + ": redirect not followed"
		if loc := resp.Header.Get("Location"); loc != "" {
			what = status + ": redirect to " + clip(redactURL(loc), maxSnippet) + " not followed"
		}
		return permanentErr(name, what, nil)
	}
	what := status
	if s := clip(oneLine(string(got)), maxSnippet); s != "" {
		what += ": " + s
	} else if readErr != nil {
		what += " (reading the body: " + oneLine(readErr.Error()) + ")"
	}
	if code >= 400 && code <= 499 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests {
		return permanentErr(name, what, nil)
	}
	return transientErr(name, what, nil)
}

// client returns the client to send with and what to call when Send is
// done with it: the default client's connections are closed then, so no
// connection goroutine outlives Send.
func (w *Webhook) client() (*http.Client, func()) {
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if w.Client != nil {
		c := *w.Client
		c.CheckRedirect = noRedirect
		return &c, func() {}
	}
	tr := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: webhookTimeout}).DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    webhookTimeout,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: maxResponseRead,
	}
	c := &http.Client{Transport: tr, Timeout: webhookTimeout, CheckRedirect: noRedirect}
	return c, tr.CloseIdleConnections
}

// parseWebhookURL parses and checks a webhook URL, and returns it with the
// name its errors start with ("webhook" and the URL without its password).
// Its errors never show a password.
func parseWebhookURL(raw string) (*url.URL, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		cause := err
		var ue *url.Error
		if errors.As(err, &ue) {
			cause = ue.Err // without the URL
		}
		if strings.Contains(raw, "@") {
			// The reason may quote a piece of a password (a bad escape).
			return nil, "", permanentErr("webhook", "invalid URL", cause)
		}
		return nil, "", permanentErr("webhook", "invalid URL: "+oneLine(cause.Error()), cause)
	}
	name := "webhook " + clip(oneLine(u.Redacted()), maxSnippet)
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, "", permanentErr(name, fmt.Sprintf("invalid URL: scheme %q is neither http nor https", oneLine(u.Scheme)), nil)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, "", permanentErr(name, "invalid URL: no host", nil)
	}
	return u, name, nil
}

// redactURL returns raw with the password of its userinfo, if any, shown
// as "xxxxx"; raw unchanged if it does not parse, on one line.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return oneLine(u.Redacted())
	}
	if i := strings.LastIndexByte(raw, '@'); i >= 0 {
		return "xxxxx" + oneLine(raw[i:]) // too odd to parse: keep the host only
	}
	return oneLine(raw)
}

// statusText returns "503 Service Unavailable", or the bare code for one
// net/http does not know. It ignores the server's reason phrase.
func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return fmt.Sprintf("%d %s", code, t)
	}
	return fmt.Sprint(code)
}

// sign returns the X-Siot-Signature of body under secret.
func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// The JSON body of a webhook.
type (
	webhookBody struct {
		ID       string         `json:"id"`
		Status   string         `json:"status"`
		Rule     webhookRef     `json:"rule"`
		Node     webhookRef     `json:"node"`
		Text     string         `json:"text"`
		Time     string         `json:"time"`
		Instance uuid.UUID      `json:"instance"`
		Values   []webhookValue `json:"values"`
	}
	webhookRef struct {
		ID   uuid.UUID `json:"id"`
		Name string    `json:"name"`
	}
	webhookValue struct {
		Node  uuid.UUID `json:"node"`
		Type  string    `json:"type"`
		Key   string    `json:"key"`
		Value *float64  `json:"value"` // nil: not finite
		Text  string    `json:"text,omitempty"`
	}
)

// encodeWebhook returns the JSON body for m.
func encodeWebhook(m *Message) ([]byte, error) {
	b := webhookBody{
		ID:       m.ID,
		Status:   m.Status,
		Rule:     webhookRef{ID: m.Rule, Name: m.RuleName},
		Node:     webhookRef{ID: m.Node, Name: m.NodeName},
		Text:     m.Text,
		Time:     formatTime(m.Time),
		Instance: m.Instance,
		Values:   make([]webhookValue, len(m.Values)),
	}
	for i, v := range m.Values {
		b.Values[i] = webhookValue{Node: v.Node, Type: v.Type, Key: v.Key, Text: v.Text}
		if !math.IsNaN(v.Value) && !math.IsInf(v.Value, 0) {
			b.Values[i].Value = &v.Value
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&b); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
