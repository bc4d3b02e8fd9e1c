package replica

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// ErrRootMismatch is a peer link refused because the two instances have
// different roots.
var ErrRootMismatch = errors.New("replica: peers have different roots")

// dialLink is a link this instance opens: to an upstream (as an edge) or
// to a peer. It reconnects with backoff for as long as the replica runs.
type dialLink struct {
	r     *Replica
	url   string
	shown string // url without credentials, for logs, status and metrics
	role  string
	creds *transport.Creds
	id    transport.Identity // the identity creds sign in as

	histAck histAck // how far the upstream acknowledged our history (history.go)

	mu        sync.Mutex
	sess      *session // the live session, nil when down
	lastErr   string
	connected bool
	// counters of ended sessions, so status totals survive reconnects
	sentBefore, recvBefore, rejBefore uint64

	down downLog // owned by run's goroutine
	// missed counts the attempts since the last welcome: each starts one
	// server further down the order (serverOrder). Owned by run's
	// goroutine.
	missed int
}

// serverOrder returns the servers of a link URL (one, or a cluster's
// members separated by commas) in the order this instance tries them:
// by a hash of the instance and the server (rendezvous hashing), so the
// edges of a fleet spread evenly over the members, each returns to the
// same member after a reconnect (its resume positions are that member's),
// and the edges of a member that is down spread evenly over the rest.
// skip rotates the order: attempts that got no welcome start further
// down, so a member whose server is up but whose replica does not answer
// is passed over.
func serverOrder(instance uuid.UUID, servers []string, skip int) []string {
	type ranked struct {
		url  string
		rank uint64
	}
	rs := make([]ranked, len(servers))
	for i, u := range servers {
		h := fnv.New64a()
		h.Write(instance[:])
		h.Write([]byte(u))
		rs[i] = ranked{u, h.Sum64()}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int { return cmp.Compare(b.rank, a.rank) })
	out := make([]string, len(rs))
	for i := range rs {
		out[i] = rs[(i+skip)%len(rs)].url
	}
	return out
}

func newDialLink(r *Replica, url, role string, creds *transport.Creds) *dialLink {
	id, _ := creds.Identity() // validated by Config.validate
	return &dialLink{r: r, url: url, shown: transport.RedactURL(url), role: role, creds: creds, id: id}
}

func (d *dialLink) run(ctx context.Context) {
	cfg := &d.r.cfg
	backoff := cfg.RetryMin
	var downSince time.Time
	for ctx.Err() == nil {
		started := time.Now()
		before := d.status()
		err := d.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("session ended")
		}
		d.mu.Lock()
		d.lastErr = err.Error()
		d.connected = false
		d.mu.Unlock()
		d.down.ended(d, err, started, before, d.status())
		now := time.Now()
		if now.Sub(started) > time.Minute || downSince.IsZero() {
			backoff, downSince = cfg.RetryMin, now
		}
		var wait time.Duration
		wait, backoff = retryWait(cfg.RetryMin, cfg.RetryMax, cfg.RetryLongMax, now.Sub(downSince), backoff, retryAfter(err), rand.Float64())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// retryWait is the wait before the next attempt of a link down for
// downFor, and the backoff after it; u is uniform in [0, 1). The backoff
// doubles from lo up to a cap that grows with the outage: hi (2 s) for
// its first minute, a tenth of the outage after that, at most longMax
// (5 min). A thousand edges that lost their cloud for an hour then come
// back spread over minutes, not in one second. The wait is drawn from
// [backoff/2, backoff]. A refusal that said when to retry (after) waits
// that long, plus up to half of it.
func retryWait(lo, hi, longMax, downFor, backoff, after time.Duration, u float64) (wait, next time.Duration) {
	if after > 0 {
		return after + time.Duration(u*float64(after/2)), backoff
	}
	limit := hi
	if downFor > time.Minute {
		limit = min(longMax, max(hi, downFor/10))
	}
	backoff = min(max(backoff, lo), limit)
	wait = backoff/2 + time.Duration(u*float64(backoff/2))
	return wait, min(2*backoff, limit)
}

// retryAfter returns the wait a refusal asked for ("retry after 12s"),
// or 0.
func retryAfter(err error) time.Duration {
	if err == nil || !errors.Is(err, ErrBusy) && !strings.Contains(err.Error(), busyText) {
		return 0
	}
	msg := err.Error()
	i := strings.Index(msg, busyText)
	if i < 0 {
		return 0
	}
	rest := msg[i+len(busyText):]
	j := strings.IndexByte(rest, 's')
	if j <= 0 {
		return 0
	}
	secs, err := strconv.Atoi(rest[:j])
	if err != nil || secs <= 0 || secs > 3600 {
		return 0
	}
	return time.Duration(secs) * time.Second
}

// session runs one connection: handshake, then push both ways until an
// error or ctx ends it.
func (d *dialLink) session(parent context.Context) error {
	r := d.r
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	servers, err := transport.SplitServers(d.url)
	if err != nil {
		return err
	}
	d.missed++ // until a welcome comes
	servers = serverOrder(r.st.Instance(), servers, d.missed-1)
	nc, err := transport.Dial(strings.Join(servers, ","), transport.DialConfig{
		Name:         "siot " + r.st.Instance().String(),
		Timeout:      r.cfg.HelloTimeout,
		OnDisconnect: func(err error) { cancel(fmt.Errorf("disconnected: %v", err)) },
		OnError: func(err error) {
			if ok, held := r.logLimit.allow("link nats "+d.shown+" "+err.Error(), time.Minute); ok {
				r.log.Warn("link connection", "url", d.shown, "err", err, "repeats_not_logged", held)
			}
		},
		Creds:        d.creds,
		TLS:          r.cfg.LinkTLS,
		PingInterval: r.cfg.KeepAlive,
	})
	if err != nil {
		return err
	}
	defer nc.Close()

	w, err := d.hello(nc)
	if err != nil {
		return err
	}
	d.missed = 0
	subj, err := transport.Subjects(d.id, w.Session)
	if err != nil {
		return err
	}
	have, err := r.st.Mark(recvMark(w.Instance))
	if err != nil {
		return err
	}
	fail := func(err error) { cancel(err) }
	s := newSession(r, w.Instance, d.role, newScope(r.st, uuid.Nil), nc, subj.Up, have, fail)
	down, err := nc.Subscribe(subj.Down, s.handlePush)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer down.Unsubscribe()
	rp := &repairer{s: s, root: r.st.Root(), subject: subj.Repair, pushTo: subj.Up}
	from := w.Have
	if from, have, err = d.compareFirst(ctx, s, rp, w, have); err != nil {
		return err
	}
	b, _ := transport.Encode(transport.Start{Have: have})
	s.bytesSent.Add(uint64(len(b)))
	reply, err := nc.Request(subj.Start, b, r.cfg.HelloTimeout)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	s.bytesRecv.Add(uint64(len(reply.Data)))
	if err := transport.Decode(reply.Data, 0, &transport.Ack{}); err != nil {
		return fmt.Errorf("start: %w", err)
	}

	d.mu.Lock()
	d.sess, d.connected, d.lastErr = s, true, ""
	d.mu.Unlock()
	r.links.up(d.kind(), d.shown, d.role, d.shown, s)
	defer func() {
		d.mu.Lock()
		d.sess, d.connected = nil, false
		d.sentBefore += s.bytesSent.Load()
		d.recvBefore += s.bytesRecv.Load()
		d.rejBefore += s.rejected.Load()
		d.mu.Unlock()
		r.links.down(d.kind(), d.shown, s)
	}()
	r.log.Info("link up", append([]any{"url", d.shown, "role", d.role, "remote", w.Instance, "resume_from", w.Have, "have", have},
		d.down.up()...)...)

	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if r.cfg.NoPush {
			return
		}
		if err := s.runSender(ctx, from); err != nil {
			cancel(err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := d.repairLoop(ctx, s, rp, d.newHistSyncer(s, subj.Repair)); err != nil {
			cancel(err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := d.ping(ctx, s, subj.Ping); err != nil {
			cancel(err)
		}
	}()
	<-ctx.Done()
	wg.Wait()
	if parent.Err() != nil {
		// This instance closes the link: say goodbye, so the acceptor
		// shows it down at once rather than when the session times out.
		// The Bye goes on the ping subject: an acceptor that predates it
		// answers it as a bad ping and keeps the session until its
		// timeout, as before.
		if !isGoodbye(context.Cause(ctx)) && !nc.IsClosed() {
			s.sayBye(subj.Ping, "instance shutting down")
		}
		return nil
	}
	return context.Cause(ctx)
}

// kind is the link's kind in the link book.
func (d *dialLink) kind() string {
	if d.role == transport.RoleEdge {
		return KindUpstream
	}
	return KindPeer
}

// compareFirst starts a first link between replicas that both hold data
// by comparing before anything is pushed: a peer seeded from a backup, or
// an edge whose positions were lost, would otherwise send its whole feed
// and get the other's. When both hold a tree (Welcome.Holds, holdsTree)
// and either position is 0, it captures both feeds' ends, runs digest
// repair rounds until one finds the scopes equal (every difference found
// is fixed both ways), then moves each position to the end it captured:
// ours in the acceptor by a push from 0 with no points, theirs in our
// store. It returns where our sender starts and our position in the
// acceptor's feed. Otherwise, or when the rounds never find the scopes
// equal (writes racing them on both sides), the link starts as usual.
func (d *dialLink) compareFirst(ctx context.Context, s *session, rp *repairer, w transport.Welcome, have uint64) (from, newHave uint64, err error) {
	r := d.r
	if r.cfg.plainFirstLink || !w.Holds || (have > 0 && w.Have > 0) {
		return w.Have, have, nil
	}
	holds, err := holdsTree(r.st, r.st.Root())
	if err != nil || !holds {
		return w.Have, have, err
	}
	ours := r.st.LastSeq()
	var last RepairStats
	for try := 0; try < 4 && !last.Equal; try++ {
		if last, err = rp.round(ctx); err != nil {
			return 0, 0, fmt.Errorf("compare before the first push: %w", err)
		}
		s.noteRepair(last)
		r.log.Info("first link: compared before pushing", "url", d.shown, "equal", last.Equal,
			"fetched", last.Fetched, "sent", last.Sent, "bytes_out", last.BytesOut, "bytes_in", last.BytesIn)
	}
	if !last.Equal {
		return w.Have, have, nil
	}
	from, newHave = w.Have, have
	if w.Have == 0 && ours > 0 {
		b, err := transport.Encode(transport.Push{Through: ours, Points: crdt.AppendBatch(nil, nil)})
		if err != nil {
			return 0, 0, err
		}
		s.bytesSent.Add(uint64(len(b)))
		m, err := s.conn.Request(s.pushSubj, b, r.cfg.AckTimeout)
		if err != nil {
			return 0, 0, fmt.Errorf("compare before the first push: position: %w", err)
		}
		s.bytesRecv.Add(uint64(len(m.Data)))
		var a transport.Ack
		if err := transport.Decode(m.Data, 0, &a); err != nil {
			return 0, 0, fmt.Errorf("compare before the first push: position: %w", err)
		}
		if a.Have != ours {
			return 0, 0, fmt.Errorf("compare before the first push: the acceptor holds %d of our feed, not %d", a.Have, ours)
		}
		from = ours
	}
	if have == 0 && w.Last > 0 {
		if err := r.st.SetMarks(map[string]uint64{s.mark: w.Last}); err != nil {
			return 0, 0, err
		}
		s.mu.Lock()
		s.have = w.Last
		s.mu.Unlock()
		newHave = w.Last
	}
	return from, newHave, nil
}

// noteRepair records a repair round's outcome in the session's status
// and the metrics.
func (s *session) noteRepair(st RepairStats) {
	s.mu.Lock()
	s.repairEqual, s.lastRepair = st.Equal, st
	if !st.Equal {
		s.lastDiff = st
	}
	s.mu.Unlock()
	s.r.metrics.repairRound(st)
}

// hello sends the Hello and checks the Welcome.
func (d *dialLink) hello(nc *nats.Conn) (transport.Welcome, error) {
	r := d.r
	h := transport.Hello{Proto: transport.LinkProto, Instance: r.st.Instance(), Root: r.st.Root(), Role: d.role,
		Time: r.clock.Physical().UnixMilli()}
	b, err := transport.Encode(h)
	if err != nil {
		return transport.Welcome{}, err
	}
	sent := time.Now()
	// The member of a cluster this link reached serves it, so the
	// session ends with that member's connection and moves with it.
	reply, err := nc.Request(transport.SubjectOn(nc, d.id, transport.NameHello), b, r.cfg.HelloTimeout)
	if err != nil {
		return transport.Welcome{}, fmt.Errorf("hello: %w", err)
	}
	rtt := time.Since(sent)
	var w transport.Welcome
	if err := transport.Decode(reply.Data, 0, &w); err != nil {
		return w, fmt.Errorf("hello refused: %w", err)
	}
	switch {
	case w.Instance == uuid.Nil || w.Instance == r.st.Instance():
		return w, fmt.Errorf("hello: remote instance %v: cannot link to itself or to nil", w.Instance)
	case d.role == transport.RolePeer && w.Root != r.st.Root():
		return w, fmt.Errorf("%w: this instance's root is %v, the peer's is %v", ErrRootMismatch, r.st.Root(), w.Root)
	case d.role == transport.RoleEdge && w.Root == r.st.Root():
		return w, fmt.Errorf("upstream has this instance's root %v: link it as a peer", w.Root)
	}
	d.correctClock(w.Time, rtt)
	return w, nil
}

// correctClock trusts the remote's clock when ours is off by more than
// half the skew bound: a device without a real-time clock boots in 1970.
func (d *dialLink) correctClock(remoteMs int64, rtt time.Duration) {
	c := d.r.clock
	raw := c.Physical().Add(-c.Correction())
	off := time.UnixMilli(remoteMs).Add(rtt / 2).Sub(raw)
	if off.Abs() > c.MaxOffset()/2 {
		if (off - c.Correction()).Abs() > time.Second {
			d.r.log.Warn("clock corrected from the remote", "url", d.shown, "offset", off.Round(time.Millisecond))
		}
		c.SetCorrection(off)
	} else if c.Correction() != 0 {
		c.SetCorrection(0)
	}
}

// repairLoop runs digest repair on the session: once the initial resume is
// done (or at once without push), then every RepairInterval with jitter,
// stretched on an idle link in sync up to RepairMaxInterval.
// A round that found differences is followed at once by another, until
// one finds the scopes equal (at most a few: writes racing a round only
// add one); when three did not, the rounds run once more as soon as the
// link is idle, and after that at the interval.
//
// Each pass runs a history round after the repair rounds when one is due
// (history.go).
func (d *dialLink) repairLoop(ctx context.Context, s *session, rp *repairer, hs *histSyncer) error {
	cfg := &d.r.cfg
	if !cfg.NoPush {
		// Let push and resume carry the bulk first.
		if !d.waitIdle(ctx, s, cfg.RepairInterval) {
			return nil
		}
	}
	wait, traffic := cfg.RepairInterval, s.traffic()
	raced := false // the last rounds found differences and the retry on idle is spent
	for {
		equal := false
		for try := 0; try < 3; try++ {
			st, err := rp.round(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			s.noteRepair(st)
			if st.Equal {
				d.r.log.Debug("repair", "url", d.shown, "equal", true, "round_trips", st.RoundTrips,
					"bytes_out", st.BytesOut, "bytes_in", st.BytesIn, "took", st.Took.Round(time.Millisecond))
			}
			if !st.Equal {
				d.r.log.Info("repair", "url", d.shown, "round_trips", st.RoundTrips, "fetched", st.Fetched,
					"sent", st.Sent, "bytes_out", st.BytesOut, "bytes_in", st.BytesIn, "took", st.Took.Round(time.Millisecond))
			}
			if st.Equal {
				equal = true
				break
			}
		}
		if hs.due(time.Now()) {
			st, err := hs.round(ctx)
			if ctx.Err() != nil {
				return nil
			}
			switch {
			case err != nil:
				d.r.log.Warn("history round", "url", d.shown, "err", err)
			case st.Windows > 0:
				d.r.log.Info("history round", "url", d.shown, "windows", st.Windows, "sent", st.Sent, "fetched", st.Fetched,
					"round_trips", st.RoundTrips, "took", st.Took.Round(time.Millisecond))
			}
		}
		if !equal && !raced && !cfg.NoPush {
			// Writes racing the rounds show as differences (points in
			// flight). Check again as soon as the pushes are acknowledged,
			// once: the status says in sync only after a round finds the
			// scopes equal, and it should not wait a whole interval. A
			// difference that outlives that waits the interval.
			raced = true
			if !d.waitIdle(ctx, s, cfg.RepairInterval) {
				return nil
			}
			continue
		}
		raced = false
		// An idle link in sync is checked less and less often, up to
		// RepairMaxInterval: each check costs bytes on a metered link.
		// A difference or any push since the last round starts over.
		if now := s.traffic(); equal && now == traffic {
			wait = min(2*wait, cfg.RepairMaxInterval)
		} else {
			wait, traffic = cfg.RepairInterval, now
		}
		jittered := wait + time.Duration(rand.Int64N(int64(wait)/5+1)) - wait/10
		t := time.NewTimer(jittered)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// waitIdle waits until the session's pushes both ways are caught up and
// acknowledged, or for at most limit. It reports false when ctx ended.
func (d *dialLink) waitIdle(ctx context.Context, s *session, limit time.Duration) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(limit)
	for {
		s.mu.Lock()
		idle := s.sendIdle && s.remoteIdle
		s.mu.Unlock()
		if idle || time.Now().After(deadline) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// ping keeps an idle session alive and learns that the remote still serves
// it. A session that carries traffic needs no ping: the remote's messages
// prove it alive, and a ping would queue behind pushes on a slow link.
func (d *dialLink) ping(ctx context.Context, s *session, subj string) error {
	t := time.NewTicker(d.r.cfg.PingInterval)
	defer t.Stop()
	b, _ := transport.Encode(transport.Ping{})
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if time.Since(time.Unix(0, s.lastSeen.Load())) < d.r.cfg.PingInterval {
			continue // the remote spoke recently: the link is alive
		}
		s.mu.Lock()
		busy := !s.sendIdle || s.repairing.Load()
		s.mu.Unlock()
		s.bytesSent.Add(uint64(len(b)))
		if busy {
			// Our pushes in flight, or a repair round's requests, watch
			// the link (each has its own timeout); the ping's reply
			// would queue behind their replies and, on a slow link, time
			// out on a healthy session. The ping still tells the remote
			// we are here.
			if err := s.conn.Publish(subj, b); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			continue
		}
		reply, err := s.conn.Request(subj, b, d.r.cfg.AckTimeout)
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		s.bytesRecv.Add(uint64(len(reply.Data)))
		if err := transport.Decode(reply.Data, 0, &transport.Ack{}); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}

// status reports the link for Status.
func (d *dialLink) status() transport.LinkStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	ls := transport.LinkStatus{URL: d.shown, Role: d.role, Connected: d.connected && (d.sess == nil || !d.sess.ended.Load()), LastError: d.lastErr,
		BytesSent: d.sentBefore, BytesRecv: d.recvBefore, Rejected: d.rejBefore}
	if s := d.sess; s != nil {
		ls.LastSeen = formatSeen(time.Unix(0, s.lastSeen.Load()))
		ls.Remote = s.remote.String()
		ls.InSync, ls.Pending = s.status()
		ls.BytesSent += s.bytesSent.Load()
		ls.BytesRecv += s.bytesRecv.Load()
		ls.Rejected += s.rejected.Load()
	}
	return ls
}
