package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/replica"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

const serveUsage = `Usage: siot serve [flags]

Run a siot instance: an embedded NATS server on --listen, a Badger store in
--data, the local API, and a link to every --upstream and --peer. Without
links it is a standalone system (a cloud); with --upstream it is an edge
whose tree appears under the upstream's root; with --peer it is a full copy
of another instance with the same root. SIGINT or SIGTERM stops it cleanly
(exit status 0).

Every flag can also be set by an environment variable, SIOT_ and the flag's
name in capitals with underscores (SIOT_MIN_FREE for --min-free; but
SIOT_LINK_CREDS for --creds), or in the --config file, one "name = value"
a line (min-free = 1GiB; # starts a comment line). A flag beats the
environment, which beats the file. Repeatable flags take several values in
their variable separated by blanks, and repeat their key in the file. A
size takes a unit: KiB, MiB, GiB, TiB (1024) or kB, MB, GB, TB (1000). A
bad value, an unknown key or a malformed host:port is a usage error
(exit status 2) naming the flag, the variable or the file and line.
SIGHUP re-reads the settings: it applies --log-level and the --tls-cert
and --tls-key files, and logs what changed and what needs a restart.

On first start the root node's ID is --id, or the peer's root when the data
directory is empty and --peer is given, or, with --upstream and --creds of a
device, the device's node, or a new random ID; it is kept in the data
directory and --id must match it afterwards.

Every connection authenticates. On first start (and whenever the file is
missing) serve writes the local administrator's credentials to
DATA/admin.creds, mode 0600: client commands use them by default from
./siot-data. Links sign in with --creds (upstreams: a device's file from
"siot device add") and --peer-creds (peers: "siot peer add" on the peer).
A listener on an address other than loopback needs TLS (--tls-cert,
--tls-key) unless --insecure says otherwise. --http serves the web UI (sign
in as a user of "siot user add"), with NATS over WebSocket on /nats; on an
address other than loopback, /nats needs --http-tls (the same certificate,
HTTPS and WSS) unless --insecure says otherwise.

Clouds scale out as a NATS cluster: each is started with --cluster (its
route address), --cluster-secret (the same file on every member; the first
member, without --route, writes it when missing) and, but for the first,
--route to a member; each is also a --peer of the others. An edge names
every member in one --upstream, separated by commas, and is served by one
member at a time.

Examples:
  siot serve
  siot serve --data /var/lib/siot --listen 0.0.0.0:4222 --tls-cert cert.pem --tls-key key.pem
  siot serve --data ./edge --listen 127.0.0.1:4223 --http 127.0.0.1:8119 --upstream tls://cloud.example.com:4222 --creds device.creds --tls-ca ca.pem
  siot serve --data ./cloud2 --listen 127.0.0.1:4224 --peer nats://127.0.0.1:4222 --peer-creds peer.creds
  siot serve --data ./cloud2 --listen 127.0.0.1:4224 --cluster 127.0.0.1:6224 --route nats://127.0.0.1:6222 --cluster-secret cluster.secret --peer nats://127.0.0.1:4222 --peer-creds peer.creds
  siot serve --data ./edge --listen 127.0.0.1:4223 --upstream nats://127.0.0.1:4222,nats://127.0.0.1:4224 --creds device.creds
  siot serve --config /etc/siot/siot.conf --log-level debug
  SIOT_DATA=/var/lib/siot SIOT_MIN_FREE=1GiB siot serve

Flags:
`

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type serveCmd struct {
	m *Main
	f serveFlags
	// fs is the flag set f is bound to (flags); origins says where each
	// flag set other than on the command line came from (loadSources).
	fs      *flag.FlagSet
	cmdline map[string]bool
	origins map[string]string
	// ready, when set, is called once the instance serves (tests).
	ready func(id uuid.UUID, natsURL, httpAddr string)
}

type serveFlags struct {
	config                                                   string
	data, listen, httpAddr, id, profile, logLevel, logFormat string
	upstreams, peers                                         stringList
	minFree                                                  byteSize
	creds, peerCreds, tlsCert, tlsKey, tlsCA                 string
	cluster, clusterSecret                                   string
	routes, httpOrigins                                      stringList
	httpWebsockets                                           int
	insecure, httpTLS                                        bool
	keepAlive, sessionPing, repairInterval, repairMax        time.Duration
}

func (c *serveCmd) usage() string { return serveUsage }

func (c *serveCmd) flags(fs *flag.FlagSet) {
	f := &c.f
	c.fs = fs
	fs.StringVar(&f.config, "config", "", "configuration file: serve's settings, one \"name = value\" a line; flags and the environment beat it")
	fs.StringVar(&f.data, "data", "./siot-data", "data directory")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:4222", "NATS listen address, host:port")
	fs.StringVar(&f.httpAddr, "http", "127.0.0.1:8118", "HTTP address for the web UI (/), /healthz, /readyz, /status, /metrics and /nats (NATS over WebSocket, for browsers); empty to disable")
	fs.BoolVar(&f.httpTLS, "http-tls", false, "serve --http over TLS with --tls-cert and --tls-key (HTTPS, and WSS on /nats)")
	fs.Var(&f.httpOrigins, "http-origin", "`ORIGIN`, scheme://host[:port], of other pages that may open /nats besides the --http address's own (repeatable)")
	fs.IntVar(&f.httpWebsockets, "http-websockets", transport.DefaultMaxWebsockets, "most WebSocket connections open at once on /nats; more are answered 503")
	fs.StringVar(&f.id, "id", "", "the root node's UUID, set on first start")
	fs.Var(&f.upstreams, "upstream", "`URL` (NATS) of an upstream to link to as an edge, or the members of a cluster separated by commas (repeatable)")
	fs.Var(&f.peers, "peer", "`URL` (NATS) of a peer with the same root (repeatable)")
	fs.StringVar(&f.profile, "profile", "", `store memory profile: "cloud" or "edge" (default: edge with --upstream and no --peer, else cloud)`)
	f.minFree = 256 << 20
	fs.Var(&f.minFree, "min-free", "refuse writes when free disk space under --data falls below this `size`: bytes, or with a unit (512MiB, 1GB); raised to what the store needs to write its next files: 36 MiB edge, 180 MiB cloud")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error (SIGHUP re-reads it)")
	fs.StringVar(&f.logFormat, "log-format", "", `"text" or "json" (default: text on a terminal, json otherwise)`)
	fs.StringVar(&f.creds, "creds", "", "credential file the --upstream links sign in with: a device's (siot device add)")
	fs.StringVar(&f.peerCreds, "peer-creds", "", "credential file the --peer links sign in with (siot peer add on the peer)")
	fs.StringVar(&f.cluster, "cluster", "", "route listen address, host:port: join a NATS cluster of siot clouds (scale-out; docs/operations.md)")
	fs.Var(&f.routes, "route", "`URL`, nats://host:port, of another cluster member's --cluster address (repeatable; one is enough)")
	fs.StringVar(&f.clusterSecret, "cluster-secret", "", "file of the secret every cluster member's routes sign in with; made on the first member (no --route) when missing, then copied to the others")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) of the NATS listener; with --tls-key, clients must use TLS (SIGHUP re-reads both)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM file of the CAs the upstreams' and peers' certificates must chain to")
	fs.BoolVar(&f.insecure, "insecure", false, "allow a listener on a non-loopback address without TLS (logged)")
	fs.DurationVar(&f.keepAlive, "keepalive", 2*time.Minute, "NATS keepalive of the links this instance dials and of its listener's clients (12 B each; about 0.26 MB a month per link at 2m)")
	fs.DurationVar(&f.sessionPing, "session-ping", 30*time.Minute, "a dialed link's session ping when nothing else crossed for this long (about 0.2 KB each)")
	fs.DurationVar(&f.repairInterval, "repair-interval", time.Minute, "digest repair of a dialed link after a change (about 0.4 KB a round when in sync)")
	fs.DurationVar(&f.repairMax, "repair-max-interval", time.Hour, "the longest repair interval of an idle link in sync: it doubles from --repair-interval")
	fs.VisitAll(func(fl *flag.Flag) {
		fl.Usage += " (env " + serveEnv(fl.Name) + ")"
	})
}

// loadSources completes the flags given on the command line with the
// environment and the configuration file (--config, or SIOT_CONFIG), and
// records where each value came from.
func (c *serveCmd) loadSources() error {
	c.cmdline = map[string]bool{}
	c.fs.Visit(func(fl *flag.Flag) { c.cmdline[fl.Name] = true })
	getenv := c.m.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	origin := "--config"
	if !c.cmdline["config"] {
		c.f.config, origin = getenv(serveEnv("config")), serveEnv("config")
	}
	file, err := readConfig(origin, c.f.config, c.fs)
	if err != nil {
		return err
	}
	if err := applySources(c.fs, c.cmdline, getenv, c.f.config, file); err != nil {
		return err
	}
	c.origins = map[string]string{}
	for _, s := range file {
		if !c.cmdline[s.name] && getenv(serveEnv(s.name)) == "" {
			c.origins[s.name] = fmt.Sprintf("%s:%d: %s", c.f.config, s.line, s.name)
		}
	}
	c.fs.VisitAll(func(fl *flag.Flag) {
		if !c.cmdline[fl.Name] && fl.Name != "config" && getenv(serveEnv(fl.Name)) != "" {
			c.origins[fl.Name] = serveEnv(fl.Name)
		}
	})
	return nil
}

// origin names where flag name's value came from, for an error: the flag
// ("--listen"), its environment variable, or the file and line.
func (c *serveCmd) origin(name string) string {
	if o, ok := c.origins[name]; ok {
		return o
	}
	return "--" + name
}

func (c *serveCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "serve takes no arguments"}
	}
	if err := c.loadSources(); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	m, f := c.m, c.f
	var root uuid.UUID
	if f.id != "" {
		id, err := crdt.ParseID(f.id)
		if err != nil {
			return &UsageError{Msg: fmt.Sprintf("%s: %v", c.origin("id"), err)}
		}
		root = id
	}
	for _, links := range []struct {
		name string
		urls []string
	}{{"upstream", f.upstreams}, {"peer", f.peers}} {
		for _, u := range links.urls {
			if _, err := transport.SplitServers(u); err != nil {
				return &UsageError{Msg: fmt.Sprintf("%s: link URL %s: want nats://host:port or tls://host:port, or a list of them separated by commas (a cluster's members); credentials go in a file (--creds, --peer-creds), never in the URL", c.origin(links.name), transport.RedactURL(u))}
			}
		}
	}
	for _, a := range []struct{ name, addr string }{{"listen", f.listen}, {"http", f.httpAddr}, {"cluster", f.cluster}} {
		if a.addr == "" && a.name != "listen" {
			continue // disabled
		}
		if err := checkHostPort(a.addr); err != nil {
			return &UsageError{Msg: fmt.Sprintf("%s: %v", c.origin(a.name), err)}
		}
	}
	if f.httpWebsockets < 1 {
		return &UsageError{Msg: c.origin("http-websockets") + ": at least 1"}
	}
	for _, o := range f.httpOrigins {
		if err := checkOrigin(o); err != nil {
			return &UsageError{Msg: fmt.Sprintf("%s %q: %v", c.origin("http-origin"), o, err)}
		}
	}
	for _, r := range f.routes {
		if err := checkRoute(r); err != nil {
			return &UsageError{Msg: fmt.Sprintf("%s %s: %v", c.origin("route"), transport.RedactURL(r), err)}
		}
	}
	if f.cluster == "" && (len(f.routes) > 0 || f.clusterSecret != "") {
		return &UsageError{Msg: "--route and --cluster-secret need --cluster"}
	}
	if f.cluster != "" && f.clusterSecret == "" {
		return &UsageError{Msg: "--cluster needs --cluster-secret: routes sign in with it"}
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
		return &UsageError{Msg: fmt.Sprintf("%s %q: want cloud or edge", c.origin("profile"), f.profile)}
	}
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return &UsageError{Msg: fmt.Sprintf("%s %q: want debug, info, warn or error", c.origin("log-level"), f.logLevel)}
	}
	log, err := newLogger(m.Stderr, level, f.logFormat)
	if err != nil {
		return &UsageError{Msg: fmt.Sprintf("%s: %v", c.origin("log-format"), err)}
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"keepalive", f.keepAlive}, {"session-ping", f.sessionPing}, {"repair-interval", f.repairInterval}, {"repair-max-interval", f.repairMax}} {
		if d.d < time.Second {
			return &UsageError{Msg: c.origin(d.name) + ": at least 1s"}
		}
	}
	if f.repairMax < f.repairInterval {
		return &UsageError{Msg: "--repair-max-interval is shorter than --repair-interval"}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return &UsageError{Msg: "--tls-cert and --tls-key go together"}
	}
	if len(f.upstreams) > 0 && f.creds == "" {
		return &UsageError{Msg: "--upstream needs --creds: the upstream refuses anonymous links (siot device add on the upstream writes one)"}
	}
	if len(f.peers) > 0 && f.peerCreds == "" {
		return &UsageError{Msg: "--peer needs --peer-creds: the peer refuses anonymous links (siot peer add on the peer writes one)"}
	}
	if host, _, err := net.SplitHostPort(f.listen); err == nil && !isLoopback(host) && f.tlsCert == "" {
		if !f.insecure {
			return &UsageError{Msg: fmt.Sprintf("--listen %s is not a loopback address: give --tls-cert and --tls-key, or --insecure to send credentials and data in clear", f.listen)}
		}
		log.Warn("listening without TLS on a non-loopback address (--insecure): credentials and data cross the network in clear", "listen", f.listen)
	}
	if f.httpTLS && f.tlsCert == "" {
		return &UsageError{Msg: "--http-tls needs --tls-cert and --tls-key"}
	}
	if host, _, err := net.SplitHostPort(f.httpAddr); err == nil && !isLoopback(host) && !f.httpTLS && f.insecure {
		log.Warn("web UI and /nats without TLS on a non-loopback address (--insecure): passwords and tokens cross the network in clear", "http", f.httpAddr)
	}
	if host, _, err := net.SplitHostPort(f.cluster); err == nil && !isLoopback(host) {
		if !f.insecure {
			return &UsageError{Msg: fmt.Sprintf("--cluster %s is not a loopback address: routes carry every message and the cluster secret without TLS; keep them on a private network and say so with --insecure", f.cluster)}
		}
		log.Warn("cluster routes without TLS on a non-loopback address (--insecure): keep them on a private network", "cluster", f.cluster)
	}
	return c.serve(ctx, f, root, profile, log, level)
}

// checkOrigin checks an --http-origin: scheme://host[:port], http or
// https, nothing after.
func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return errors.New("want http://host[:port] or https://host[:port], as a browser sends it in Origin")
	}
	return nil
}

// isLoopback reports whether host names only the loopback interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// linkSecurity loads the link credentials and TLS settings of the flags.
func linkSecurity(f serveFlags) (up, peer *transport.Creds, tc *tls.Config, err error) {
	if f.creds != "" {
		if up, err = transport.ReadCreds(f.creds); err != nil {
			return nil, nil, nil, fmt.Errorf("--creds: %w", err)
		}
		if up.Kind == transport.KindUser {
			return nil, nil, nil, errors.New("--creds: a user's login token cannot link an instance: use a device's credentials")
		}
	}
	if f.peerCreds != "" {
		if peer, err = transport.ReadCreds(f.peerCreds); err != nil {
			return nil, nil, nil, fmt.Errorf("--peer-creds: %w", err)
		}
	}
	if f.tlsCA != "" {
		tc, err = client.LoadCA(f.tlsCA)
	}
	return up, peer, tc, err
}

// clearWebsocketRefused reports whether /nats on the HTTP address addr
// (host:port) is refused: sign-ins (passwords, tokens) would cross a
// network in clear. Loopback, --http-tls and --insecure serve it.
func clearWebsocketRefused(addr string, httpTLS, insecure bool) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && !isLoopback(host) && !httpTLS && !insecure
}

// serverTLS loads the listener's certificate, or returns nil without one.
// The certificate is taken from cert at each handshake: storing another
// there (SIGHUP) serves it to new connections.
func serverTLS(f serveFlags) (*tls.Config, *atomic.Pointer[tls.Certificate], error) {
	if f.tlsCert == "" {
		return nil, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	p := new(atomic.Pointer[tls.Certificate])
	p.Store(&cert)
	get := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.Load(), nil }
	return &tls.Config{GetCertificate: get, MinVersion: tls.VersionTLS12}, p, nil
}

// adminCreds returns the local administrator's credentials in dir
// (admin.creds), writing new ones when the file is missing: deleting it
// and restarting rotates the key.
func adminCreds(dir string, log *slog.Logger) (*transport.Creds, error) {
	path := filepath.Join(dir, "admin.creds")
	c, err := transport.ReadCreds(path)
	if err == nil {
		if c.Kind != transport.KindAdmin {
			return nil, fmt.Errorf("%s: not administrator credentials", path)
		}
		return c, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if c, err = transport.NewKeyCreds(transport.KindAdmin, uuid.Nil); err != nil {
		return nil, err
	}
	if err := transport.WriteCreds(path, c, false); err != nil {
		return nil, err
	}
	log.Info("administrator credentials written", "file", path)
	return c, nil
}

// clusterSecret reads the cluster's route secret from path. When the
// file is missing and first is set (a member with no --route: the first of
// its cluster) it writes a new random one, mode 0600, to be copied to the
// other members; a member that routes to others must be given theirs.
func clusterSecret(path string, first bool, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		secret := strings.TrimSpace(string(b))
		if len(secret) < transport.MinClusterSecret || strings.ContainsAny(secret, " \t\r\n") {
			return "", fmt.Errorf("--cluster-secret %s: want one line of at least %d characters without spaces", path, transport.MinClusterSecret)
		}
		return secret, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("--cluster-secret: %w", err)
	case !first:
		return "", fmt.Errorf("--cluster-secret %s: no such file; copy it from a member of the cluster (the first member writes it)", path)
	}
	raw := make([]byte, 32)
	_, _ = crand.Read(raw)
	secret := base64.RawURLEncoding.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("--cluster-secret: %w", err)
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("--cluster-secret: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("--cluster-secret: %w", err)
	}
	log.Info("cluster secret written: copy it to every member", "file", path)
	return secret, nil
}

// tokenKey returns the key login tokens are signed with, kept in
// DATA/token.key (mode 0600) so tokens survive a restart; deleting it
// invalidates every token.
func tokenKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, "token.key")
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) == 32:
		return b, nil
	case err == nil:
		return nil, fmt.Errorf("token key %s: %d bytes, want 32 (delete it to make a new one; every token then stops working)", path, len(b))
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("token key: %w", err)
	}
	b = make([]byte, 32)
	_, _ = crand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return b, nil
}

func (c *serveCmd) serve(ctx context.Context, f serveFlags, root uuid.UUID, profile store.Profile, log *slog.Logger, level *slog.LevelVar) error {
	if err := os.MkdirAll(f.data, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	upCreds, peerCreds, linkTLS, err := linkSecurity(f)
	if err != nil {
		return err
	}
	stls, cert, err := serverTLS(f)
	if err != nil {
		return err
	}
	empty := isEmptyDir(f.data)
	if root == uuid.Nil && len(f.peers) > 0 && empty {
		r, err := learnRoot(ctx, f.peers, peerCreds, linkTLS, log)
		if err != nil {
			return err
		}
		root = r
	}
	if root == uuid.Nil && len(f.upstreams) > 0 && empty && upCreds.Kind == transport.KindKey {
		// A provisioned device: its root is the node its key is on.
		root = upCreds.Node
	}
	admin, err := adminCreds(f.data, log)
	if err != nil {
		return err
	}
	adminPub, err := admin.PublicKey()
	if err != nil {
		return err
	}
	tkey, err := tokenKey(f.data)
	if err != nil {
		return err
	}
	if c.m.Getenv("GOMEMLIMIT") == "" {
		// Badger's buffers are large and short-lived: without a soft
		// limit the heap grows to twice what is live (store.Profile).
		debug.SetMemoryLimit(profile.MemoryLimit())
	}
	scfg := store.DefaultConfig(f.data)
	scfg.Root, scfg.Profile, scfg.MinFreeBytes, scfg.Logger = root, profile, uint64(f.minFree), log
	st, err := store.Open(scfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	var cluster transport.ClusterConfig
	if f.cluster != "" {
		secret, err := clusterSecret(f.clusterSecret, len(f.routes) == 0, log)
		if err != nil {
			return err
		}
		cluster = transport.ClusterConfig{Listen: f.cluster, Routes: f.routes, Secret: secret}
	}
	srv, err := transport.StartServer(transport.ServerConfig{Listen: f.listen, Logger: log, TLS: stls, PingInterval: f.keepAlive, Cluster: cluster,
		Websocket: f.httpAddr != ""})
	if err != nil {
		return err
	}
	var wsp *transport.WebsocketProxy
	defer func() {
		srv.Shutdown()
		// After the server's: its WebSocket sessions ended with the
		// close it sent them, through the proxy.
		if wsp != nil {
			wsp.Close()
		}
	}()
	clock, err := crdt.NewClock(crdt.ClockConfig{Physical: time.Now})
	if err != nil {
		return err
	}
	rep, err := replica.Open(replica.Config{Store: st, Clock: clock, Server: srv, Upstreams: f.upstreams, Peers: f.peers,
		UpstreamCreds: upCreds, PeerCreds: peerCreds, LinkTLS: linkTLS, AdminKey: adminPub, TokenKey: tkey,
		KeepAlive: f.keepAlive, PingInterval: f.sessionPing, RepairInterval: f.repairInterval, RepairMaxInterval: f.repairMax,
		SessionTimeout: max(3*time.Hour, 3*f.sessionPing, 3*f.repairMax),
		Logger:         log, Version: buildVersion().version})
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
		if wsp, err = srv.WebsocketProxy(transport.WebsocketConfig{Origins: f.httpOrigins, MaxConns: f.httpWebsockets}); err != nil {
			ln.Close()
			return err
		}
		ui, err := uiHandler(uiFiles())
		if err != nil {
			ln.Close()
			return err
		}
		var ws http.Handler = wsp
		if clearWebsocketRefused(httpAddr, f.httpTLS, f.insecure) {
			// Sign-ins cross /nats: passwords and tokens. Health and
			// metrics stay served in clear (they carry no credential).
			ws = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "forbidden: /nats on a non-loopback address needs --http-tls (or --insecure, behind a proxy that terminates TLS)", http.StatusForbidden)
			})
		}
		hs = &http.Server{Handler: httpHandler(rep, ws, ui), ReadHeaderTimeout: 10 * time.Second,
			// A failed handshake or a broken request is the client's: debug.
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		if f.httpTLS {
			hs.TLSConfig = stls.Clone()
			ln = tls.NewListener(ln, hs.TLSConfig)
		}
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
			close(errc)
		}()
	}
	log.Info("siot serving", "version", buildVersion().String(), "id", st.Root(), "instance", st.Instance(), "nats", srv.ClientURL(), "http", httpAddr,
		"data", f.data, "upstreams", len(f.upstreams), "peers", len(f.peers), "cluster", srv.ClusterAddr())
	if c.ready != nil {
		c.ready(st.Root(), srv.ClientURL(), httpAddr)
	}
	var runErr error
	for running := true; running; {
		select {
		case <-ctx.Done():
			log.Info("siot stopping", "reason", context.Cause(ctx))
			running = false
		case err, ok := <-errc:
			if ok {
				runErr = err
			}
			running = false
		case <-c.m.Hangup:
			c.reload(log, level, cert)
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
func learnRoot(ctx context.Context, peers []string, creds *transport.Creds, tc *tls.Config, log *slog.Logger) (uuid.UUID, error) {
	wait := 250 * time.Millisecond
	for {
		for _, u := range peers {
			root, err := askRoot(u, creds, tc)
			if err == nil {
				log.Info("root taken from peer", "peer", transport.RedactURL(u), "id", root)
				return root, nil
			}
			log.Warn("waiting for a peer to learn the root", "peer", transport.RedactURL(u), "err", err)
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

func askRoot(url string, creds *transport.Creds, tc *tls.Config) (uuid.UUID, error) {
	id, err := creds.Identity()
	if err != nil {
		return uuid.Nil, err
	}
	nc, err := transport.Dial(url, transport.DialConfig{Name: "siot root probe", Timeout: 10 * time.Second, Creds: creds, TLS: tc})
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
	reply, err := nc.Request(transport.SubjectOn(nc, id, transport.NameHello), b, 10*time.Second)
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

// httpHandler serves health, readiness, status and metrics, NATS over
// WebSocket on /nats (ws; 501 in the lean build) and the web UI on /
// (ui: uiHandler).
func httpHandler(rep *replica.Replica, ws, ui http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/nats", ws)
	mux.Handle("/", ui)
	mux.Handle("GET /metrics", metricsHandler(rep, processInfo{start: time.Now(), version: buildVersion().version}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		var why []string
		if _, _, err := rep.Store().Get(crdt.Register{Node: rep.Store().Root(), Type: crdt.TypeNodeType}); err != nil {
			why = append(why, "store: "+err.Error())
		}
		if why = append(why, rep.NotReady()...); len(why) > 0 {
			// One line per reason.
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, strings.Join(why, "\n")+"\n")
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

// newLogger returns a slog logger on w that logs from level up: text on a
// terminal, JSON otherwise, unless format says.
func newLogger(w io.Writer, level slog.Leveler, format string) (*slog.Logger, error) {
	if format == "" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: logAttr(format)}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("%q: want text or json", format)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// reload re-reads the settings (SIGHUP) from the same sources, in the same
// order, as at start: the command line, the environment (as the process
// was started with it) and the configuration file. It applies the log
// level and the listener's certificate (re-read from --tls-cert and
// --tls-key when the listener has TLS) and logs what changed, or that
// nothing did; a changed setting that only a restart applies is logged
// with a warning. An error in the settings or the certificate is logged
// and changes nothing.
func (c *serveCmd) reload(log *slog.Logger, level *slog.LevelVar, cert *atomic.Pointer[tls.Certificate]) {
	nc := &serveCmd{m: c.m}
	nfs := newFlagSet("serve", nc)
	for name := range c.cmdline {
		if l, ok := c.fs.Lookup(name).Value.(*stringList); ok {
			for _, v := range *l {
				_ = nfs.Set(name, v)
			}
			continue
		}
		_ = nfs.Set(name, c.fs.Lookup(name).Value.String())
	}
	fail := func(err error) { log.Error("reload failed: settings unchanged", "err", err) }
	if err := nc.loadSources(); err != nil {
		fail(err)
		return
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(nc.f.logLevel)); err != nil {
		fail(fmt.Errorf("%s %q: want debug, info, warn or error", nc.origin("log-level"), nc.f.logLevel))
		return
	}
	reloadable := map[string]bool{"log-level": true}
	var newCert *tls.Certificate
	if cert != nil && nc.f.tlsCert != "" && nc.f.tlsKey != "" {
		reloadable["tls-cert"], reloadable["tls-key"] = true, true
		kp, err := tls.LoadX509KeyPair(nc.f.tlsCert, nc.f.tlsKey)
		if err != nil {
			fail(fmt.Errorf("--tls-cert/--tls-key: %w", err))
			return
		}
		newCert = &kp
	}
	var changed, restart []string
	if old := level.Level(); lv != old {
		changed = append(changed, fmt.Sprintf("log-level %s→%s", strings.ToLower(old.String()), strings.ToLower(lv.String())))
	}
	if newCert != nil && !sameChain(cert.Load(), newCert) {
		changed = append(changed, "tls-cert")
	}
	nfs.VisitAll(func(fl *flag.Flag) {
		if !reloadable[fl.Name] && fl.Value.String() != c.fs.Lookup(fl.Name).Value.String() {
			restart = append(restart, fl.Name)
		}
	})
	apply := func() {
		level.Set(lv)
		if newCert != nil {
			cert.Store(newCert)
		}
	}
	report := func() {
		if len(changed) == 0 {
			log.Info("configuration reloaded: nothing changed")
		} else {
			log.Info("configuration reloaded", "changed", strings.Join(changed, ", "))
		}
		if len(restart) > 0 {
			log.Warn("configuration reloaded: a restart is needed to apply", "settings", strings.Join(restart, ", "))
		}
	}
	// The report goes out at the more verbose of the two levels.
	if lv > level.Level() {
		report()
		apply()
	} else {
		apply()
		report()
	}
}

// sameChain reports whether a and b hold the same certificate chain.
func sameChain(a, b *tls.Certificate) bool {
	if len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if !bytes.Equal(a.Certificate[i], b.Certificate[i]) {
			return false
		}
	}
	return true
}

func envOr(getenv func(string) string, key, def string) string {
	if getenv != nil {
		if v := getenv(key); v != "" {
			return v
		}
	}
	return def
}
