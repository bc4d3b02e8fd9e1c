package client_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/replica"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// testServer is a real siot server in the test's process: a Badger store
// in a temp dir, an embedded NATS server on a loopback port and the
// replica serving the local API, as siot serve wires them.
type testServer struct {
	t     testing.TB
	dir   string
	root  uuid.UUID
	admin *transport.Creds
	url   string
	addr  string // host:port, kept across restarts
	st    *store.Store
	srv   *transport.Server
	rep   *replica.Replica
}

// startServer starts a server with a new data directory.
func startServer(t testing.TB) *testServer {
	t.Helper()
	admin, err := transport.NewKeyCreds(transport.KindAdmin, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, dir: t.TempDir(), root: uuid.New(), admin: admin, addr: "127.0.0.1:0"}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) start() {
	t := s.t
	t.Helper()
	cfg := store.DefaultConfig(filepath.Join(s.dir, "data"))
	cfg.Root, cfg.MinFreeBytes, cfg.NoBallast = s.root, 0, true
	st, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transport.StartServer(transport.ServerConfig{Listen: s.addr})
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	clock, err := crdt.NewClock(crdt.ClockConfig{Physical: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := s.admin.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replica.Open(replica.Config{Store: st, Clock: clock, Server: srv, AdminKey: pub})
	if err != nil {
		srv.Shutdown()
		_ = st.Close()
		t.Fatal(err)
	}
	s.st, s.srv, s.rep = st, srv, rep
	s.url = srv.ClientURL()
	s.addr = strings.TrimPrefix(s.url, "nats://")
}

// stop stops the server; start starts it again on the same port and data.
func (s *testServer) stop() {
	if s.rep == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.rep.Close(ctx); err != nil {
		s.t.Errorf("close replica: %v", err)
	}
	s.srv.Shutdown()
	if err := s.st.Close(); err != nil {
		s.t.Errorf("close store: %v", err)
	}
	s.rep = nil
}

// dial connects as the administrator.
func (s *testServer) dial(opts ...client.Option) *client.Client {
	s.t.Helper()
	cl, err := client.Dial(context.Background(), s.url, append([]client.Option{client.WithCreds(s.admin), client.WithTimeout(5 * time.Second)}, opts...)...)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(cl.Close)
	return cl
}
