//go:build !lean

// The cluster tests run in the full build only: the lean one refuses a
// cluster (TestLeanRefusesCluster).

package transport

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

const testSecret = "0123456789abcdef0123456789abcdef-cluster"

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// clusterOf starts n servers on loopback that form one cluster: each
// routes to the first. They share the first one's administrator.
func clusterOf(t *testing.T, n int, secret string) ([]*Server, *Creds) {
	t.Helper()
	first, admin := srvStartAdmin(t, ServerConfig{Cluster: ClusterConfig{Listen: "127.0.0.1:0", Secret: secret}})
	out := []*Server{first}
	for range n - 1 {
		s := srvStart(t, ServerConfig{Auth: srvAuthFor(t, admin), Cluster: ClusterConfig{
			Listen: "127.0.0.1:0", Secret: secret, Routes: []string{"nats://" + first.ClusterAddr()}}})
		out = append(out, s)
	}
	return out, admin
}

// TestClusterRequestsReachTheNamedMember runs what scale-out rests on: a
// request from a client of any member that names its server (SubjectOn)
// reaches that member's subscriber and no other; one that names none
// reaches one member of the queue group, over the routes if need be.
func TestClusterRequestsReachTheNamedMember(t *testing.T) {
	srvCheckLeaks(t)
	srvs, admin := clusterOf(t, 3, testSecret)
	srvEventually(t, "a full mesh of routes", func() bool {
		for _, s := range srvs {
			if s.Routes() < 2 {
				return false
			}
		}
		return true
	})
	// Every member answers as a replica does: requests that name it, and
	// those that name nobody as one of the queue group. Member 2 has no
	// subscriber at all.
	answered := make(chan string, 64)
	for i, name := range []string{"zero", "one"} {
		nc := srvConnect(t, srvs[i], name)
		h := func(m *nats.Msg) { answered <- name; _ = m.Respond([]byte(name)) }
		if _, err := nc.QueueSubscribe(AnyIdentity(NameHello), "siot", h); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Subscribe(AtServer(NameHello, nc.ConnectedServerName()), h); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	admin0 := Identity{Kind: KindAdmin}
	ask := func(s *Server, named bool) (string, error) {
		t.Helper()
		nc := srvDial(t, s.ClientURL(), DialConfig{Creds: admin})
		subj := Subject(admin0, NameHello)
		if named {
			subj = SubjectOn(nc, admin0, NameHello)
		}
		// Interest travels over the routes asynchronously: ask until a
		// subscriber answers, or for a second when none will.
		var got string
		var err error
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			var m *nats.Msg
			if m, err = nc.Request(subj, nil, 200*time.Millisecond); err == nil {
				got = string(m.Data)
				break
			}
		}
		return got, err
	}
	for range 10 {
		if got, err := ask(srvs[0], true); got != "zero" {
			t.Fatalf("a request to member 0 was answered by %q (%v)", got, err)
		}
		if got, err := ask(srvs[1], true); got != "one" {
			t.Fatalf("a request to member 1 was answered by %q (%v)", got, err)
		}
	}
	if got, err := ask(srvs[2], true); !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("a request to member 2, which has no subscriber, was answered by %q (%v)", got, err)
	}
	if got, err := ask(srvs[2], false); got != "zero" && got != "one" {
		t.Fatalf("a request to any member was answered by %q (%v)", got, err)
	}
	// Each request reached one subscriber: 21 answers in all.
	time.Sleep(100 * time.Millisecond)
	if n := len(answered); n != 21 {
		t.Fatalf("%d answers for 21 requests", n)
	}
}

// TestClusterRefusesAWrongSecret: a server that presents another secret
// never joins, and nothing published on it reaches the cluster.
func TestClusterRefusesAWrongSecret(t *testing.T) {
	srvCheckLeaks(t)
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	first, admin := srvStartAdmin(t, ServerConfig{Logger: log, Cluster: ClusterConfig{Listen: "127.0.0.1:0", Secret: testSecret}})
	hostile := srvStart(t, ServerConfig{Logger: log, Auth: srvAuthFor(t, admin), Cluster: ClusterConfig{
		Listen: "127.0.0.1:0", Secret: strings.Repeat("x", MinClusterSecret), Routes: []string{"nats://" + first.ClusterAddr()}}})
	srvEventually(t, "the refused route in the log of the server that dialed it", func() bool {
		return strings.Contains(logs.String(), "uthorization")
	})
	if n := first.Routes(); n != 0 {
		t.Fatalf("member has %d routes after a wrong secret", n)
	}
	if n := hostile.Routes(); n != 0 {
		t.Fatalf("the hostile server has %d routes", n)
	}
	got := make(chan string, 1)
	nc := srvConnect(t, first, "member")
	if _, err := nc.Subscribe("siot.>", func(m *nats.Msg) { got <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	hc := srvConnect(t, hostile, "hostile")
	if err := hc.Publish("siot.admin.local.api.import", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := hc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		t.Fatalf("a message from the hostile server reached the cluster: %s", s)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestClusterConfigRefused(t *testing.T) {
	srvCheckLeaks(t)
	for _, tc := range []struct {
		name string
		cfg  ClusterConfig
		want string
	}{
		{"short secret", ClusterConfig{Listen: "127.0.0.1:0", Secret: "short"}, "at least"},
		{"secret with a space", ClusterConfig{Listen: "127.0.0.1:0", Secret: testSecret + " x"}, "white space"},
		{"route with credentials", ClusterConfig{Listen: "127.0.0.1:0", Secret: testSecret, Routes: []string{"nats://u:p@127.0.0.1:1"}}, "want nats://host:port"},
		{"route without host", ClusterConfig{Listen: "127.0.0.1:0", Secret: testSecret, Routes: []string{"nats://"}}, "want nats://host:port"},
		{"route of another scheme", ClusterConfig{Listen: "127.0.0.1:0", Secret: testSecret, Routes: []string{"http://127.0.0.1:1"}}, "want nats://host:port"},
		{"bad listen", ClusterConfig{Listen: "127.0.0.1", Secret: testSecret}, "cluster listen address"},
	} {
		s, err := StartServer(ServerConfig{Listen: "127.0.0.1:0", Cluster: tc.cfg})
		if err == nil {
			s.Shutdown()
			t.Errorf("%s: started", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
		if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), ":p@") {
			t.Errorf("%s: the error shows a secret: %v", tc.name, err)
		}
	}
}
