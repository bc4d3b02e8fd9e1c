package replica

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// Config configures a Replica. Store, Clock and Server are required.
type Config struct {
	Store  *store.Store
	Clock  *crdt.Clock
	Server *transport.Server // this instance's NATS server: links are accepted and the API served on it

	// Upstreams are NATS URLs this instance links to as an edge: its root
	// goes under the upstream's root and its subtree syncs both ways. A
	// URL may list the members of a cluster, separated by commas: the
	// link is one session with one member at a time (serverOrder).
	Upstreams []string
	// Peers are NATS URLs of instances with the same root: everything
	// syncs both ways.
	Peers []string
	// UpstreamCreds and PeerCreds authenticate this instance's links to
	// its upstreams and peers: a device's key, a peer key, or the remote's
	// administrator credentials. Required with Upstreams or Peers.
	UpstreamCreds, PeerCreds *transport.Creds
	// LinkTLS, when set, configures TLS for every link this instance
	// dials (the CAs the remote's certificate must chain to).
	LinkTLS *tls.Config

	// AdminKey is the nkey public key of the local administrator
	// (DATA/admin.creds); empty: no local administrator.
	AdminKey string
	// TokenKey signs the login tokens this instance issues (32 bytes kept
	// in the data directory, so tokens survive a restart). Nil: a random
	// key, tokens die with the process.
	TokenKey []byte

	Logger  *slog.Logger // nil: discard
	Version string       // reported by status

	// Tuning; zero values take the defaults in parentheses.
	AckTimeout     time.Duration // a push unacknowledged this long ends the session (30 s)
	PingInterval   time.Duration // a dialer's session ping, sent when the remote said nothing for this long (30 min)
	KeepAlive      time.Duration // the NATS keepalive of a dialed link's connection (2 min)
	SessionTimeout time.Duration // an acceptor drops a session silent this long (3 h; sooner when its dialer's connections are gone)
	HelloTimeout   time.Duration // handshake request timeout (20 s)
	RetryMin       time.Duration // first reconnect delay (250 ms)
	RetryMax       time.Duration // longest reconnect delay in an outage's first minute (2 s): a link that returns is used within it
	RetryLongMax   time.Duration // longest reconnect delay of a long outage, which grows to it by a tenth of the outage (5 min)
	// MaxStartingSessions bounds the link sessions this acceptor holds
	// in their initial sync; a hello beyond it is refused with a time to
	// retry after, so a cloud that restarts under a fleet takes it back
	// in waves (128).
	MaxStartingSessions int
	Window              int           // pushes in flight per session (4)
	MaxPushBytes        int           // largest push, encoded, about (512 KiB); pushes adapt to the link below it
	MaxPushPoints       int           // points per push (8192: what a cloud store commits at once, histories included)
	RepairInterval      time.Duration // digest repair runs on every connect and then this often, ±20% (60 s)
	// RepairMaxInterval stretches the repair interval of an idle link: each
	// round that finds the scopes equal with no push either way since the
	// last doubles the wait, up to this; a difference or a push resets it
	// to RepairInterval (1 h).
	RepairMaxInterval time.Duration
	MaxWatchers       int // watch requests held at once; more are refused (256)
	// HistoryUpkeepInterval is how often the histories are compacted and
	// trimmed to their retention and budget (10 min; historykeep.go).
	HistoryUpkeepInterval time.Duration
	// HistoryFullInterval is how often a link's history round compares
	// every window, not only those since its mark (6 h; history.go).
	HistoryFullInterval time.Duration
	// PeerGrace is how long an instance that has had peers waits after
	// it starts for their links, before it acts alone on rules and
	// device state (DefaultPeerGrace; rules.go).
	PeerGrace time.Duration

	// Per identity, except the system and the local administrator.
	RequestRate             float64       // API requests a second, with bursts of twice as many (200)
	MaxWatchersPerIdentity  int           // watch requests held at once (16)
	MaxTransfersPerIdentity int           // imports and exports in progress at once (2)
	TokenTTL                time.Duration // lifetime of a login token (12 h)
	RevalidateInterval      time.Duration // how often every connection's credential is checked again (2 s)

	// NoPush turns push and resume off, leaving digest repair alone to
	// converge replicas: for tests and diagnosis, never for production.
	NoPush bool

	// noHistoryUpkeep: no upkeep loop (tests that run upkeepHistory
	// themselves).
	noHistoryUpkeep bool
	// histMaxNodes bounds the node sums of one history message
	// (histMaxNodes when 0; tests lower it).
	histMaxNodes int
	// repairLimits bound what answering one repair request may read;
	// zero fields take the defaults (tests lower them).
	repairLimits repairLimits
	// noChecks bypasses authorization, for the benchmarks that measure
	// what it costs; never set outside them.
	noChecks bool
	// plainFirstLink turns the comparison before a first link's pushes
	// off, for the benchmark that measures what it saves.
	plainFirstLink bool
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AckTimeout, 30*time.Second)
	// An idle link costs bytes on a metered cellular link: the NATS
	// keepalive detects a dead connection, the repair rounds (stretched
	// on idle links) and the session ping keep the acceptor's session,
	// and an acceptor also ends a session whose dialer's connections
	// closed (revalidateLoop). See docs/operations.md, "Idle cost".
	def(&c.PingInterval, 30*time.Minute)
	def(&c.KeepAlive, 2*time.Minute)
	def(&c.SessionTimeout, 3*time.Hour)
	def(&c.HelloTimeout, 20*time.Second)
	def(&c.RetryMin, 250*time.Millisecond)
	def(&c.RetryMax, 2*time.Second)
	def(&c.RetryLongMax, 5*time.Minute)
	c.RetryLongMax = max(c.RetryLongMax, c.RetryMax)
	if c.MaxStartingSessions <= 0 {
		c.MaxStartingSessions = 128
	}
	def(&c.RepairInterval, 60*time.Second)
	def(&c.RepairMaxInterval, time.Hour)
	def(&c.HistoryUpkeepInterval, 10*time.Minute)
	def(&c.HistoryFullInterval, 6*time.Hour)
	def(&c.PeerGrace, DefaultPeerGrace)
	if c.histMaxNodes <= 0 {
		c.histMaxNodes = histMaxNodes
	}
	c.RepairMaxInterval = max(c.RepairMaxInterval, c.RepairInterval)
	if c.Window <= 0 {
		c.Window = 4
	}
	if c.MaxPushBytes <= 0 {
		c.MaxPushBytes = 512 << 10
	}
	if c.MaxPushPoints <= 0 {
		c.MaxPushPoints = 8192
	}
	if c.MaxWatchers <= 0 {
		c.MaxWatchers = 256
	}
	if c.RequestRate <= 0 {
		c.RequestRate = 200
	}
	if c.MaxWatchersPerIdentity <= 0 {
		c.MaxWatchersPerIdentity = 16
	}
	if c.MaxTransfersPerIdentity <= 0 {
		c.MaxTransfersPerIdentity = 2
	}
	def(&c.TokenTTL, 12*time.Hour)
	def(&c.RevalidateInterval, 2*time.Second)
	if len(c.TokenKey) == 0 {
		c.TokenKey = make([]byte, 32)
		_, _ = rand.Read(c.TokenKey)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("replica: Config.Store is required")
	case c.Clock == nil:
		return errors.New("replica: Config.Clock is required")
	case c.Server == nil:
		return errors.New("replica: Config.Server is required")
	case c.MaxPushBytes > crdt.MaxMessageSize/2:
		return fmt.Errorf("replica: MaxPushBytes %d above %d", c.MaxPushBytes, crdt.MaxMessageSize/2)
	}
	for _, u := range append(append([]string(nil), c.Upstreams...), c.Peers...) {
		if u == "" {
			return errors.New("replica: empty link URL")
		}
		if _, err := transport.SplitServers(u); err != nil {
			return fmt.Errorf("replica: link URL: %w", err)
		}
	}
	if len(c.Upstreams) > 0 && c.UpstreamCreds == nil {
		return errors.New("replica: upstream links need Config.UpstreamCreds")
	}
	if len(c.Peers) > 0 && c.PeerCreds == nil {
		return errors.New("replica: peer links need Config.PeerCreds")
	}
	if len(c.TokenKey) < 16 {
		return errors.New("replica: Config.TokenKey shorter than 16 bytes")
	}
	return nil
}

// Replica is one running replica: its store, its clock, its links and its
// local API. Open starts it; Close stops it.
type Replica struct {
	cfg   Config
	st    *store.Store
	clock *crdt.Clock
	log   *slog.Logger
	nc    *nats.Conn // in-process connection to this instance's server

	hub      hub
	router   *router // routes the feed to subtree links
	rules    *ruleEngine
	metrics  metrics
	logLimit limiter // repeated warnings: once a minute per key
	// histLostLogged: the loss of unacknowledged history to the budget
	// was logged (once a process; metrics count every loss).
	histLostLogged atomic.Bool
	auth           *authority
	limits         limits

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	dialers  []*dialLink
	acceptor *acceptor
	links    *linkBook  // every link known, with its last state
	refusals refusalLog // writes refused for a full disk, logged once a minute
	subs     []*nats.Subscription

	apiMu     sync.Mutex
	apiClosed bool // Close has begun: no new watch goroutines
	watchers  int  // watch requests held
	verifying bool // a verify request is running
}

// Open starts a replica: it seeds the clock from the store, accepts links
// and serves the local API on cfg.Server, and dials every upstream and peer
// (retrying in the background for as long as it runs).
func Open(cfg Config) (*Replica, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Clock.Observe(cfg.Store.MaxTime())
	nc, err := cfg.Server.Connect("siot-replica")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Replica{cfg: cfg, st: cfg.Store, clock: cfg.Clock, log: cfg.Logger, nc: nc, ctx: ctx, cancel: cancel}
	r.hub.init()
	r.router = newRouter(cfg.Store, r.hub.register())
	if err := r.router.load(); err != nil {
		cancel()
		nc.Close()
		return nil, err
	}
	if r.links, err = loadLinkBook(cfg.Store, cfg.Logger); err != nil {
		cancel()
		nc.Close()
		return nil, err
	}
	r.refusals = refusalLog{log: cfg.Logger, now: time.Now, interval: time.Minute}
	r.limits.init(&r.cfg)
	r.auth = newAuthority(r)
	r.acceptor = newAcceptor(r)
	if err := r.subscribe(); err != nil {
		cancel()
		nc.Close()
		return nil, err
	}
	cfg.Server.SetAuth(r.auth)
	r.rules = newRuleEngine(r)
	r.wg.Add(5)
	go func() {
		defer r.wg.Done()
		r.acceptor.expire(ctx)
	}()
	go func() {
		defer r.wg.Done()
		if err := r.rules.run(ctx); err != nil {
			r.log.Error("rule engine stopped", "err", err)
		}
	}()
	go func() {
		defer r.wg.Done()
		r.historyLoop(ctx)
	}()
	go func() {
		defer r.wg.Done()
		if err := r.router.run(ctx); err != nil {
			// The store failed under it: routed links stop getting
			// changes; they are ended so their remotes see the fault.
			r.log.Error("router stopped", "err", err)
			r.acceptor.closeAll(fmt.Errorf("router stopped: %w", err))
		}
	}()
	go func() {
		defer r.wg.Done()
		r.revalidateLoop(ctx)
	}()
	for _, u := range cfg.Upstreams {
		r.dialers = append(r.dialers, newDialLink(r, u, transport.RoleEdge, cfg.UpstreamCreds))
	}
	for _, u := range cfg.Peers {
		r.dialers = append(r.dialers, newDialLink(r, u, transport.RolePeer, cfg.PeerCreds))
	}
	for _, d := range r.dialers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			d.run(ctx)
		}()
	}
	return r, nil
}

// queueGroup is the queue group of the members of a cluster.
const queueGroup = "siot"

func (r *Replica) subscribe() error {
	handlers := map[string]nats.MsgHandler{
		transport.NameHello:   r.acceptor.handleHello,
		transport.NameStatus:  r.handleStatus,
		transport.NameImport:  r.handleImport,
		transport.NameExport:  r.handleExport,
		transport.NameNode:    serve(r, r.nodePage),
		transport.NameEdges:   serve(r, r.edgesPage),
		transport.NameWatch:   r.handleWatch,
		transport.NameToken:   serve(r, r.auth.issueToken),
		transport.NameNodes:   serve(r, r.treeNodes),
		transport.NameVerify:  r.handleVerify,
		transport.NameHistory: r.handleHistory,

		transport.NameJSONSet:    r.handleJSONSet,
		transport.NameJSONGet:    r.handleJSONGet,
		transport.NameJSONWatch:  r.handleJSONWatch,
		transport.NameJSONStatus: r.handleJSONStatus,
	}
	// In a cluster the members answer requests that name no server as
	// one queue group, and each answers those that name its own server
	// (transport.SubjectOn).
	server := r.nc.ConnectedServerName()
	for name, h := range handlers {
		sub, err := r.nc.QueueSubscribe(transport.AnyIdentity(name), queueGroup, h)
		if err != nil {
			return fmt.Errorf("replica: subscribe %s: %w", name, err)
		}
		r.subs = append(r.subs, sub)
		if sub, err = r.nc.Subscribe(transport.AtServer(name, server), h); err != nil {
			return fmt.Errorf("replica: subscribe %s: %w", name, err)
		}
		r.subs = append(r.subs, sub)
	}
	return r.nc.Flush()
}

// Close stops the replica: it stops accepting requests, ends every link
// session and waits for its goroutines, or until ctx is done. It does not
// close the store or the server.
func (r *Replica) Close(ctx context.Context) error {
	for _, s := range r.subs {
		_ = s.Unsubscribe()
	}
	r.apiMu.Lock()
	r.apiClosed = true
	r.apiMu.Unlock()
	r.cfg.Server.SetAuth(nil)
	r.cancel()
	r.acceptor.closeAll(nil)
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("replica: close: %w", ctx.Err())
	}
	r.nc.Close()
	return err
}

// revalidateLoop checks every open connection's credential again each
// RevalidateInterval, closing those revoked (a tombstoned key or password
// point, here or synced from elsewhere) or expired, and ends the link
// sessions whose identity has no connection left.
func (r *Replica) revalidateLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.RevalidateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.refusals.flush()
		r.links.refresh(time.Now())
		r.cfg.Server.Revalidate(r.auth.revalidate)
		r.acceptor.endOrphans(r.cfg.Server.Connections())
	}
}

// physicalNow is the clock's corrected physical time.
func (r *Replica) physicalNow() time.Time { return r.cfg.Clock.Physical() }

// Store returns the replica's store.
func (r *Replica) Store() *store.Store { return r.st }

// Write stamps and applies a batch of local writes: a point without a time
// is stamped with the clock, in batch order (a later point beats an earlier
// one for the same register), and one without an origin gets this
// instance's ID. A stamped point is checked against the clock like a
// remote one (crdt.ErrClockSkew when too far ahead). The batch is durable
// when Write returns, and is pushed to every link whose scope holds it.
func (r *Replica) Write(pts []crdt.Point) (store.Result, error) {
	return r.write(pts, false)
}

// WriteOne is Write for one operation: every unstamped point gets the same
// HLC (and, without an origin, this instance's ID), as a move's new edge and
// its tombstone of the old one must. It refuses a batch that writes one
// register twice (store.ErrInvalid), which one time could not order.
func (r *Replica) WriteOne(pts []crdt.Point) (store.Result, error) {
	return r.write(pts, true)
}

func (r *Replica) write(pts []crdt.Point, oneTime bool) (res store.Result, err error) {
	defer func() {
		r.metrics.write(PathLocal, len(pts), res, err)
		r.refusals.note(len(pts), err)
	}()
	batch := make([]crdt.Point, len(pts))
	inst := r.st.Instance()
	var maxRemote crdt.Timestamp
	for i := range pts {
		p := pts[i]
		p.Normalize()
		if err := p.ValidateUnstamped(); err != nil {
			return store.Result{}, fmt.Errorf("%w: point %d: %w", store.ErrInvalid, i, err)
		}
		if p.Time != 0 {
			if err := r.clock.Check(p.Time); err != nil {
				return store.Result{}, fmt.Errorf("point %d: %w", i, err)
			}
			maxRemote = max(maxRemote, p.Time)
		}
		batch[i] = p
	}
	if maxRemote != 0 {
		if _, err := r.clock.Update(maxRemote); err != nil {
			return store.Result{}, err
		}
	}
	if oneTime {
		seen := make(map[crdt.Register]bool, len(batch))
		for i := range batch {
			if seen[batch[i].Register()] {
				return store.Result{}, fmt.Errorf("%w: point %d: writes the register of an earlier point of one operation", store.ErrInvalid, i)
			}
			seen[batch[i].Register()] = true
		}
	}
	var now crdt.Timestamp
	for i := range batch {
		if batch[i].Time == 0 {
			if now == 0 || !oneTime {
				now = r.clock.Now()
			}
			batch[i].Time = now
		}
		if batch[i].Origin == uuid.Nil {
			batch[i].Origin = inst
		}
	}
	res, err = r.apply(store.ApplyOptions{}, batch)
	if err != nil {
		return res, err
	}
	if len(res.Changes) > 0 {
		r.hub.notify()
	}
	return res, nil
}

// apply applies a batch, splitting it when it does not fit in one store
// transaction (an edge profile takes about 1,000 points at once, a push
// carries up to 8,192): each part commits atomically, the marks only with
// the last, so after a crash between parts the sender resends what follows
// the marks and nothing is lost.
func (r *Replica) apply(opts store.ApplyOptions, pts []crdt.Point) (store.Result, error) {
	res, err := r.st.ApplyWith(opts, pts)
	if !errors.Is(err, store.ErrBatchTooLarge) || len(pts) < 2 {
		return res, err
	}
	half := len(pts) / 2
	first, err := r.apply(store.ApplyOptions{Source: opts.Source}, pts[:half])
	if err != nil {
		return first, err
	}
	second, err := r.apply(opts, pts[half:])
	if err != nil {
		return first, err
	}
	if first.FirstSeq == 0 {
		first.FirstSeq = second.FirstSeq
	}
	first.Outcomes = append(first.Outcomes, second.Outcomes...)
	first.Changes = append(first.Changes, second.Changes...)
	return first, nil
}

// applyRemote applies points received from instance src, with marks set in
// the same commit. A point whose time is too far ahead of the clock is
// dropped and counted; the rest are applied.
func (r *Replica) applyRemote(src uuid.UUID, pts []crdt.Point, marks map[string]uint64) (res store.Result, rejected int, reason string, err error) {
	accepted := pts[:0]
	var maxT crdt.Timestamp
	for i := range pts {
		if err := r.clock.Check(pts[i].Time); err != nil {
			if rejected == 0 {
				reason = fmt.Sprintf("point %v/%s/%s: %v", pts[i].Node, pts[i].Type, pts[i].Key, err)
			}
			rejected++
			continue
		}
		maxT = max(maxT, pts[i].Time)
		accepted = append(accepted, pts[i])
	}
	if maxT != 0 {
		if _, err := r.clock.Update(maxT); err != nil {
			return res, rejected, reason, err
		}
	}
	res, err = r.apply(store.ApplyOptions{Source: src, Marks: marks}, accepted)
	r.metrics.remote(marks, rejected, len(accepted), res, err)
	r.refusals.note(len(accepted), err)
	if err != nil {
		return res, rejected, reason, err
	}
	if len(res.Changes) > 0 {
		r.hub.notify()
	}
	return res, rejected, reason, nil
}

// recvMark names the mark that records how far this store holds the change
// feed of instance id.
func recvMark(id uuid.UUID) string { return "recv/" + id.String() }

// hub wakes every session sender when the store changed.
type hub struct {
	mu    sync.Mutex
	kicks map[chan struct{}]struct{}
}

func (h *hub) init() { h.kicks = make(map[chan struct{}]struct{}) }

// register returns a channel that receives a value (coalesced) after each
// change; release it with unregister.
func (h *hub) register() chan struct{} {
	c := make(chan struct{}, 1)
	h.mu.Lock()
	h.kicks[c] = struct{}{}
	h.mu.Unlock()
	return c
}

func (h *hub) unregister(c chan struct{}) {
	h.mu.Lock()
	delete(h.kicks, c)
	h.mu.Unlock()
}

// notify never blocks: a sender that is busy finds the kick when it looks.
func (h *hub) notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.kicks {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
