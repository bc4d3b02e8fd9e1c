//go:build !lean

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/siot-io/siot/transport"
)

// wsOptions returns the nats.go options that sign in with the credential
// file at path (an administrator's nkey or a user's token), and the
// identity they sign in as.
func wsOptions(t *testing.T, path string) ([]nats.Option, transport.Identity) {
	t.Helper()
	c, err := transport.ReadCreds(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Identity()
	if err != nil {
		t.Fatal(err)
	}
	opts := []nats.Option{nats.CustomInboxPrefix(id.Inbox()), nats.Timeout(20 * time.Second), nats.NoReconnect()}
	if c.Kind == transport.KindUser {
		return slices.Clip(append(opts, nats.Token(c.Token))), id
	}
	kp, err := nkeys.FromSeed(c.Seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	// Clipped: callers append to it concurrently.
	return slices.Clip(append(opts, nats.UserInfo(string(transport.KindAdmin), ""), nats.Nkey(pub, kp.Sign))), id
}

// wsJSON sends a JSON API request over nc and decodes the reply into v;
// a refusal is an error.
func wsJSON(nc *nats.Conn, id transport.Identity, name, req string, v any) error {
	m, err := nc.Request(transport.Subject(id, name), []byte(req), 20*time.Second)
	if err != nil {
		return err
	}
	var refusal struct{ Error string }
	if json.Unmarshal(m.Data, &refusal) == nil && refusal.Error != "" {
		return errors.New(refusal.Error)
	}
	return json.Unmarshal(m.Data, v)
}

// TestServeWebsocket: browsers' NATS over WebSocket on the HTTP port
// (/nats), with the administrator's key and a user's login token: status
// (msgpack and JSON) answers; a write through it is durable and seen over
// TCP; a watch through it sees a write made over TCP; a page of another
// origin is refused, one of --http-origin let in; 200 connections at once
// get their answers; a stop mid-session closes the WebSocket, and the
// write is there after a restart.
func TestServeWebsocket(t *testing.T) {
	data := t.TempDir()
	args := []string{"--data", data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-origin", "https://ui.example.com"}
	srv := serve(t, args...)
	u := "ws://" + srv.http + "/nats"
	adminOpts, admin := wsOptions(t, filepath.Join(data, "admin.creds"))

	// Not an upgrade: 400.
	resp, err := http.Get("http://" + srv.http + "/nats")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET /nats without upgrade: %s, want 400", resp.Status)
	}

	nc, err := nats.Connect(u, adminOpts...)
	if err != nil {
		t.Fatalf("admin over WebSocket: %v", err)
	}
	defer nc.Close()
	var st transport.Status
	req, _ := transport.Encode(transport.StatusRequest{})
	m, err := nc.Request(transport.Subject(admin, transport.NameStatus), req, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.Decode(m.Data, 0, &st); err != nil || st.ID != srv.id {
		t.Fatalf("api.status over WebSocket: %+v, %v; want root %s", st, err, srv.id)
	}

	// A user signs in with a login token (siot login), as the browser will.
	dir := t.TempDir()
	user := strings.TrimSpace(mustCLI(t, "pass-word-1\npass-word-1\n", "user", "add", "--parent", srv.id, "--email", "ann@example.com", "--server", srv.nats))
	tokenFile := filepath.Join(dir, "ann.creds")
	mustCLI(t, "pass-word-1\n", "login", "--email", "ann@example.com", "--out", tokenFile, "--server", srv.nats)
	userOpts, uid := wsOptions(t, tokenFile)
	if uid.Kind != transport.KindUser || !strings.Contains(user, uid.Node.String()) {
		t.Fatalf("login token of %v, user add said %q", uid, user)
	}
	unc, err := nats.Connect(u, userOpts...)
	if err != nil {
		t.Fatalf("user over WebSocket: %v", err)
	}
	defer unc.Close()
	var js struct{ ID, You string }
	if err := wsJSON(unc, uid, transport.NameJSONStatus, "{}", &js); err != nil || js.ID != srv.id || js.You != "user:"+uid.Node.String() {
		t.Fatalf("json.status as the user: %+v, %v", js, err)
	}
	if m, err := unc.Request(transport.Subject(uid, transport.NameStatus), req, 20*time.Second); err != nil {
		t.Fatal(err)
	} else if err := transport.Decode(m.Data, 0, &st); err != nil || st.ID != srv.id {
		t.Fatalf("api.status as the user: %+v, %v", st, err)
	}

	// A write through it is durable when answered, and seen over TCP.
	var applied struct{ Applied int }
	set := fmt.Sprintf(`{"node":%q,"type":"temp","value":21.5}`, srv.id)
	if err := wsJSON(nc, admin, transport.NameJSONSet, set, &applied); err != nil || applied.Applied != 1 {
		t.Fatalf("json.set over WebSocket: %+v, %v", applied, err)
	}
	if out := mustCLI(t, "", "get", srv.id, "--server", srv.nats); !strings.Contains(out, "21.5") {
		t.Fatalf("siot get over TCP after a WebSocket write:\n%s", out)
	}

	// A watch through it sees a write made over TCP.
	var js2 struct{ LastSeq string }
	if err := wsJSON(nc, admin, transport.NameJSONStatus, "{}", &js2); err != nil {
		t.Fatal(err)
	}
	type watchReply struct {
		Records []struct {
			Node, Type string
			Value      float64
		}
	}
	watched := make(chan error, 1)
	var wr watchReply
	go func() {
		watched <- wsJSON(nc, admin, transport.NameJSONWatch, fmt.Sprintf(`{"after":%q,"wait":15000}`, js2.LastSeq), &wr)
	}()
	mustCLI(t, "", "set", srv.id, "temp=30", "--server", srv.nats)
	select {
	case err := <-watched:
		if err != nil || len(wr.Records) != 1 || wr.Records[0].Type != "temp" || wr.Records[0].Value != 30 {
			t.Fatalf("json.watch over WebSocket: %+v, %v", wr, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("json.watch over WebSocket: no reply")
	}

	// Origins: the page's own and --http-origin's are let in, others not.
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"http://" + srv.http, true},
		{"https://ui.example.com", true},
		{"https://evil.example.com", false},
		{"http://" + srv.http + ".evil.example.com", false},
	} {
		c, err := nats.Connect(u, append(userOpts, nats.WebSocketConnectionHeaders(http.Header{"Origin": {tc.origin}}))...)
		if err == nil {
			c.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("origin %s: connect error %v, want refused %v", tc.origin, err, !tc.ok)
		}
	}

	// 200 at once (the administrator's: a user is held to 64).
	const clients = 200
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := nats.Connect(u, append(adminOpts, nats.Name(fmt.Sprint("ws ", i)))...)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			var js struct{ ID string }
			if err := wsJSON(c, admin, transport.NameJSONStatus, "{}", &js); err != nil || js.ID != srv.id {
				errs <- fmt.Errorf("client %d: %+v, %v", i, js, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Stopped mid-session: the WebSocket closes; the write stays.
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := srv.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the WebSocket session outlived the server")
	}
	if strings.Contains(srv.log.String(), `"level":"ERROR"`) {
		t.Errorf("errors logged:\n%s", srv.log.String())
	}
	again := serve(t, args...)
	if out := mustCLI(t, "", "get", again.id, "--server", again.nats); !strings.Contains(out, "30") {
		t.Fatalf("after a restart:\n%s", out)
	}
}

// TestServeWebsocketLimit: past --http-websockets connections, the next
// is answered 503 and the ones open keep working.
func TestServeWebsocketLimit(t *testing.T) {
	data := t.TempDir()
	srv := serve(t, "--data", data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-websockets", "3")
	u := "ws://" + srv.http + "/nats"
	opts, admin := wsOptions(t, filepath.Join(data, "admin.creds"))
	var open []*nats.Conn
	for range 3 {
		nc, err := nats.Connect(u, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		open = append(open, nc)
	}
	if nc, err := nats.Connect(u, opts...); err == nil {
		nc.Close()
		t.Fatal("a fourth connection past --http-websockets 3")
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.http+"/nats", nil)
	req.Header = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upgrade past the limit: %s, want 503", resp.Status)
	}
	for i, nc := range open {
		var js struct{ ID string }
		if err := wsJSON(nc, admin, transport.NameJSONStatus, "{}", &js); err != nil || js.ID != srv.id {
			t.Errorf("connection %d: %+v, %v", i, js, err)
		}
	}
}
