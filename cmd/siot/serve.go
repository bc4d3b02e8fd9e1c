package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/google/uuid"

	"siot/crdt"
	"siot/replica"
	"siot/store"
	"siot/transport"
)

const serveUsage = `Usage: siot serve [flags]

Run a siot instance: an embedded NATS server on --listen, a Badger store in
--data, the local API, and a link to every --upstream and --peer. Without
links it is a standalone system (a cloud); with --upstream it is an edge
whose tree appears under the upstream's root; with --peer it is a full copy
of another instance with the same root. SIGINT or SIGTERM stops it cleanly
(exit status 0).

On first start the root node's ID is --id, or the peer's root when the data
directory is empty and --peer is given, or a new random ID; it is kept in
the data directory and --id must match it afterwards.

Examples:
  siot serve
  siot serve --data /var/lib/siot --listen 0.0.0.0:4222
  siot serve --data ./edge --listen 127.0.0.1:4223 --http 127.0.0.1:8119 --upstream nats://cloud.example.com:4222
  siot serve --data ./cloud2 --listen 127.0.0.1:4224 --peer nats://127.0.0.1:4222

Flags:
`

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type serveCmd struct {
	m *Main
	f serveFlags
	// ready, when set, is called once the instance serves (tests).
	ready func(id uuid.UUID, natsURL, httpAddr string)
}

type serveFlags struct {
	data, listen, httpAddr, id, profile, logLevel, logFormat string
	upstreams, peers                                         stringList
	minFree                                                  uint64
}

func (c *serveCmd) usage() string { return serveUsage }

func (c *serveCmd) flags(fs *flag.FlagSet) {
	m, f := c.m, &c.f
	fs.StringVar(&f.data, "data", envOr(m.Getenv, "SIOT_DATA", "./siot-data"), "data directory (env SIOT_DATA)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:4222", "NATS listen address, host:port")
	fs.StringVar(&f.httpAddr, "http", "127.0.0.1:8118", "HTTP address for /healthz, /readyz, /status and /metrics; empty to disable")
	fs.StringVar(&f.id, "id", "", "the root node's UUID, set on first start")
	fs.Var(&f.upstreams, "upstream", "NATS URL of an upstream to link to as an edge (repeatable)")
	fs.Var(&f.peers, "peer", "NATS URL of a peer with the same root (repeatable)")
	fs.StringVar(&f.profile, "profile", "", `store memory profile: "cloud" or "edge" (default: edge with --upstream and no --peer, else cloud)`)
	fs.Uint64Var(&f.minFree, "min-free", 256<<20, "refuse writes when free disk space under --data falls below this many bytes")
	fs.StringVar(&f.logLevel, "log-level", envOr(m.Getenv, "SIOT_LOG_LEVEL", "info"), "debug, info, warn or error (env SIOT_LOG_LEVEL)")
	fs.StringVar(&f.logFormat, "log-format", "", `"text" or "json" (default: text on a terminal, json otherwise)`)
}

func (c *serveCmd) run(ctx context.Context, args []string) error {
	m, f := c.m, c.f
	if len(args) > 0 {
		return &UsageError{Msg: "serve takes no arguments"}
	}
	var root uuid.UUID
	if f.id != "" {
		id, err := crdt.ParseID(f.id)
		if err != nil {
			return &UsageError{Msg: fmt.Sprintf("--id: %v", err)}
		}
		root = id
	}
	for _, u := range append(append([]string(nil), f.upstreams...), f.peers...) {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			return &UsageError{Msg: fmt.Sprintf("link URL %q: want nats://host:port or tls://host:port", u)}
		}
	}
	profile := store.ProfileCloud
	switch f.profile {
	case "cloud":
	case "edge":
		profile = store.ProfileEdge
	case "":
		if len(f.upstreams) > 0 && len(f.peers) == 0 {
			profile = store.ProfileEdge
		}
	default:
		return &UsageError{Msg: fmt.Sprintf("--profile %q: want cloud or edge", f.profile)}
	}
	log, err := newLogger(m.Stderr, f.logLevel, f.logFormat)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	return c.serve(ctx, f, root, profile, log)
}

func (c *serveCmd) serve(ctx context.Context, f serveFlags, root uuid.UUID, profile store.Profile, log *slog.Logger) error {
	if err := os.MkdirAll(f.data, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if root == uuid.Nil && len(f.peers) > 0 && isEmptyDir(f.data) {
		r, err := learnRoot(ctx, f.peers, log)
		if err != nil {
			return err
		}
		root = r
	}
	if c.m.Getenv("GOMEMLIMIT") == "" {
		// Badger's buffers are large and short-lived: without a soft
		// limit the heap grows to twice what is live (store.Profile).
		debug.SetMemoryLimit(profile.MemoryLimit())
	}
	scfg := store.DefaultConfig(f.data)
	scfg.Root, scfg.Profile, scfg.MinFreeBytes, scfg.Logger = root, profile, f.minFree, log
	st, err := store.Open(scfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	srv, err := transport.StartServer(transport.ServerConfig{Listen: f.listen, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	clock, err := crdt.NewClock(crdt.ClockConfig{Physical: time.Now})
	if err != nil {
		return err
	}
	rep, err := replica.Open(replica.Config{Store: st, Clock: clock, Server: srv, Upstreams: f.upstreams, Peers: f.peers,
		Logger: log, Version: buildVersion().version})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rep.Close(cctx); err != nil {
			log.Error("close replica", "err", err)
		}
	}()

	httpAddr := ""
	var hs *http.Server
	var errc chan error // nil without HTTP: never ready
	if f.httpAddr != "" {
		errc = make(chan error, 1)
		ln, err := net.Listen("tcp", f.httpAddr)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		httpAddr = ln.Addr().String()
		hs = &http.Server{Handler: httpHandler(rep), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
			close(errc)
		}()
	}
	log.Info("siot serving", "id", st.Root(), "instance", st.Instance(), "nats", srv.ClientURL(), "http", httpAddr,
		"data", f.data, "upstreams", len(f.upstreams), "peers", len(f.peers))
	if c.ready != nil {
		c.ready(st.Root(), srv.ClientURL(), httpAddr)
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("siot stopping", "reason", context.Cause(ctx))
	case err, ok := <-errc:
		if ok {
			runErr = err
		}
	}
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
		for range errc {
		}
	}
	return runErr
}

// learnRoot asks the peers for their root, retrying until one answers or
// ctx ends: an instance with empty data started with --peer takes it.
func learnRoot(ctx context.Context, peers []string, log *slog.Logger) (uuid.UUID, error) {
	wait := 250 * time.Millisecond
	for {
		for _, u := range peers {
			root, err := askRoot(u)
			if err == nil {
				log.Info("root taken from peer", "peer", u, "id", root)
				return root, nil
			}
			log.Warn("waiting for a peer to learn the root", "peer", u, "err", err)
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2))
		select {
		case <-ctx.Done():
			t.Stop()
			return uuid.Nil, fmt.Errorf("no peer answered with its root: %w", context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func askRoot(url string) (uuid.UUID, error) {
	nc, err := transport.Dial(url, transport.DialConfig{Name: "siot root probe", Timeout: 10 * time.Second})
	if err != nil {
		return uuid.Nil, err
	}
	defer nc.Close()
	// An identity-only hello: a nil root asks, no session is opened.
	b, err := transport.Encode(transport.Hello{Proto: transport.LinkProto, Instance: uuid.New(), Role: transport.RolePeer,
		Time: time.Now().UnixMilli()})
	if err != nil {
		return uuid.Nil, err
	}
	reply, err := nc.Request(transport.SubjectHello, b, 10*time.Second)
	if err != nil {
		return uuid.Nil, err
	}
	var w transport.Welcome
	if err := transport.Decode(reply.Data, 0, &w); err != nil {
		return uuid.Nil, err
	}
	if w.Root == uuid.Nil {
		return uuid.Nil, errors.New("peer answered without a root")
	}
	return w.Root, nil
}

// isEmptyDir reports whether dir holds no files (a store was never
// created there).
func isEmptyDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			return false
		}
	}
	return true
}

// httpHandler serves health, readiness, status and metrics.
func httpHandler(rep *replica.Replica) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler(rep, processInfo{start: time.Now(), version: buildVersion().version}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if _, _, err := rep.Store().Get(crdt.Register{Node: rep.Store().Root(), Type: crdt.TypeNodeType}); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep.Status())
	})
	return mux
}

// newLogger returns a slog logger on w: text on a terminal, JSON otherwise,
// unless format says.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func envOr(getenv func(string) string, key, def string) string {
	if getenv != nil {
		if v := getenv(key); v != "" {
			return v
		}
	}
	return def
}
