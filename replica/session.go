package replica

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// session is one link session seen from this side: the sender of our
// changes and the receiver of theirs. Dialer and acceptor differ only in
// how they set it up: which connection and subjects, and which scope.
type session struct {
	r        *Replica
	remote   uuid.UUID // the other side's instance ID
	role     string
	scope    *scope                    // what we send
	conn     *nats.Conn                // the connection pushes go out on
	pushSubj string                    // where our pushes go
	ackPfx   string                    // our pushes' reply subjects: ackPfx.<through>-<n>
	pushN    atomic.Uint64             // n of the reply subjects: each push's is new
	onEdge   func(p *crdt.Point) error // called for every edge change a routed sender reads; an error ends the session
	ingress  ingress                   // when set, incoming points it does not keep are refused (an edge's or a user's acceptor)
	user     *userView                 // when set, a user's session: what is sent is what the user may read
	mark     string                    // the mark of how far we hold the remote's feed
	replyPfx string                    // when set, answers go only to reply subjects under it (the dialer's inbox)

	fail     func(error)  // ends the session with an error (first one wins)
	ended    atomic.Bool  // fail was called: the status shows the link down at once, while its goroutines finish
	lastSeen atomic.Int64 // unix ns of the last message from the other side

	bytesSent, bytesRecv, rejected atomic.Uint64
	// rate is the link's throughput as our pushes measured it, bytes/s
	// (0: not yet); repairing is set while a repair round runs.
	rate       atomic.Uint64
	repairing  atomic.Bool
	pointsSent atomic.Uint64 // by the sender's pushes
	pointsRecv atomic.Uint64 // by the remote's pushes
	// acked: the remote holds our feed through this change (its last
	// ack; 0 before the first), for a rule's notification that waits
	// until its peers hold its claim (notify.go).
	acked    atomic.Uint64
	caughtUp atomic.Bool // synced once (synced)

	mu          sync.Mutex  // guards the receiver and the status snapshot
	have        uint64      // how far we hold the remote's feed
	remoteIdle  bool        // the last push we got said Idle
	sendIdle    bool        // our sender is caught up
	idleFed     uint64      // the store's last change when sendIdle was set (max for a routed sender)
	pending     uint64      // our sender's estimate of what the remote lacks
	repairEqual bool        // the last repair round found the scopes equal
	lastRepair  RepairStats // the last repair round
	lastDiff    RepairStats // the last repair round that found differences

	// backfill (owned by the sender goroutine): subtrees to send from the
	// store, for a catch-up or because they entered the remote's scope.
	backfill     []backfillNode     // nodes still to send
	backfillAt   *crdt.Register     // where the first node's scan stopped
	backfillSeen map[uuid.UUID]bool // nodes queued by this backfill
	backfillNext []backfillNode     // queued once backfill is empty (userlink.go, firstSync)
	jumpTo       uint64             // the first feed read starts here (firstSync)

	// A routed sender's state (owned by the sender goroutine; see
	// routed.go): its route, the end of a catch-up scan of the feed, and
	// the position a catch-up from the subtree covers.
	route         *route
	scanTo, floor uint64
}

// synced reports whether the session is through its initial sync:
// neither side had more to send at some point. It stays true after, while
// pushes come and go.
func (s *session) synced() bool {
	if s.caughtUp.Load() {
		return true
	}
	s.mu.Lock()
	ok := s.sendIdle && s.remoteIdle
	s.mu.Unlock()
	if ok {
		s.caughtUp.Store(true)
	}
	return ok
}

// ingress decides which of a remote's pushed points are applied: those
// kept; the rest are counted as refused for the reason refusal names
// (a metrics reason) and reported in the ack.
type ingress interface {
	keep(pts []crdt.Point) (kept []crdt.Point, rejected int, reason string, err error)
	refusal() string
}

var (
	_ ingress = subtreeFilter{}
	_ ingress = userIngress{}
)

func newSession(r *Replica, remote uuid.UUID, role string, sc *scope, conn *nats.Conn, pushSubj string, have uint64, fail func(error)) *session {
	s := &session{r: r, remote: remote, role: role, scope: sc, conn: conn, pushSubj: pushSubj,
		ackPfx: ackPrefix(conn), have: have, mark: recvMark(remote)}
	s.fail = func(err error) {
		s.ended.Store(true)
		fail(err)
	}
	s.touch()
	return s
}

// ackPrefix returns a prefix for a session's ack subjects under conn's
// inbox: the inbox and 8 random characters (48 bits; a collision needs
// millions of sessions on one connection). Each ack subject crosses the
// link twice (a push's reply subject, then the ack's subject): nats.go's
// own reply inboxes are 23 characters longer.
func ackPrefix(conn *nats.Conn) string {
	in := conn.NewInbox() // <inbox prefix>.<nuid>
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return in[:strings.LastIndexByte(in, '.')+1] + base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *session) touch() { s.lastSeen.Store(time.Now().UnixNano()) }

// goodbye is the cause of a session the remote ended cleanly with a Bye.
type goodbye struct{ reason string }

func (g *goodbye) Error() string {
	if g.reason == "" {
		return "the remote closed the session"
	}
	return "the remote closed the session: " + g.reason
}

// isGoodbye reports whether err is the end of a session the remote
// closed cleanly.
func isGoodbye(err error) bool {
	var g *goodbye
	return errors.As(err, &g)
}

// errNoSession is an ack subject's no-responders status: the remote no
// longer listens on the session's subject our push went to (it ended the
// session, or its replica stopped while its server runs on).
var errNoSession = errors.New("the remote holds no session for our pushes (no responders)")

// byeWait bounds how long a goodbye waits for the remote's answer.
const byeWait = time.Second

// sayBye tells the remote, on subject subj, that this side ends the
// session cleanly, and waits (at most byeWait) for its answer: once it
// comes, the remote has ended the session, before this side lets go of
// its subjects or its connection. A remote that predates Bye answers it
// with an error, which does as well.
func (s *session) sayBye(subj, reason string) {
	b, err := transport.Encode(transport.Bye{Reason: reason})
	if err != nil {
		return
	}
	s.bytesSent.Add(uint64(len(b)))
	if m, err := s.conn.Request(subj, b, byeWait); err == nil {
		s.bytesRecv.Add(uint64(len(m.Data)))
	}
}

// byeReceived ends the session on the remote's goodbye and answers it.
func (s *session) byeReceived(m *nats.Msg, bye transport.Bye) {
	s.fail(&goodbye{reason: bye.Reason})
	s.respondMsg(m, transport.Ack{})
}

// noResponders reports whether m is the server's no-responders status on
// a reply subject: an empty message with header Status 503.
func noResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header != nil && m.Header.Get("Status") == "503"
}

// inSync: the last digest comparison matched, both senders are caught up
// and nothing is in flight.
func (s *session) status() (inSync bool, pending uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A change written since the sender last looked is not sent yet,
	// though the sender has not woken to say so.
	idle := s.sendIdle && s.remoteIdle && s.r.st.LastSeq() <= s.idleFed
	if s.r.cfg.NoPush {
		idle = true
	}
	return idle && s.repairEqual, s.pending
}

// publish sends a frame and counts it.
func (s *session) publish(subj, reply string, data []byte) error {
	s.bytesSent.Add(uint64(len(data)))
	return s.conn.PublishMsg(&nats.Msg{Subject: subj, Reply: reply, Data: data})
}

func (s *session) respond(m *nats.Msg, data []byte) {
	if m.Reply == "" {
		return // a message that wants no answer (a ping while busy)
	}
	if s.replyPfx != "" && !strings.HasPrefix(m.Reply, s.replyPfx) {
		return // it would go to another identity's subjects
	}
	s.bytesSent.Add(uint64(len(data)))
	_ = m.Respond(data)
}

func (s *session) respondMsg(m *nats.Msg, v any) {
	b, err := transport.Encode(v)
	if err != nil {
		b = transport.EncodeError(err)
	}
	s.respond(m, b)
}

// handlePush is the receiver: it applies a push from the remote and
// answers with an Ack. Called by NATS one message at a time per
// subscription.
func (s *session) handlePush(m *nats.Msg) {
	s.bytesRecv.Add(uint64(len(m.Data)))
	s.touch()
	if bye, ok := transport.IsBye(m.Data); ok {
		s.byeReceived(m, bye)
		return
	}
	var p transport.Push
	if err := transport.Decode(m.Data, 0, &p); err != nil {
		if transport.IsRemote(err) {
			s.fail(err) // the remote ended the session
			return
		}
		s.r.metrics.rejectWrite(rejectReason(err), 0)
		s.respond(m, transport.EncodeError(fmt.Errorf("push: %w", err)))
		s.fail(fmt.Errorf("bad push: %w", err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.From > s.have {
		s.respondMsg(m, transport.Ack{Have: s.have, Gap: true})
		return
	}
	pts, err := crdt.DecodeBatch(p.Points, 0)
	if err != nil {
		s.r.metrics.rejectWrite(rejectReason(err), 0)
		s.respond(m, transport.EncodeError(fmt.Errorf("push %d-%d: %w", p.From, p.Through, err)))
		s.fail(fmt.Errorf("bad push from %v: %w", s.remote, err))
		return
	}
	if p.Through <= s.have && len(pts) == 0 { // nothing we do not hold
		s.remoteIdle = p.Idle
		s.respondMsg(m, transport.Ack{Have: s.have})
		return
	}
	s.pointsRecv.Add(uint64(len(pts)))
	have := max(s.have, p.Through)
	if p.From == 0 && p.Through > 0 {
		// The sender starts its feed over (its store is new, or it found
		// our mark past anything it wrote): its numbering is the truth.
		// A push that covers no position (0 to 0: points a repair round
		// sends, or a subtree sent whole) says nothing of it.
		have = p.Through
	}
	refused, why := 0, ""
	if s.ingress != nil {
		if pts, refused, why, err = s.ingress.keep(pts); err != nil {
			s.respond(m, transport.EncodeError(fmt.Errorf("push %d-%d: %w", p.From, p.Through, err)))
			s.fail(fmt.Errorf("check push: %w", err))
			return
		}
	}
	_, rejected, reason, err := s.r.applyRemote(s.remote, pts, map[string]uint64{s.mark: have})
	if refused > 0 {
		s.r.metrics.rejectPoints(s.ingress.refusal(), refused)
		rejected += refused
		if reason == "" {
			reason = why
		}
	}
	if err != nil {
		s.respond(m, transport.EncodeError(fmt.Errorf("apply push %d-%d: %w", p.From, p.Through, err)))
		s.fail(fmt.Errorf("apply push: %w", err))
		return
	}
	if rejected > 0 {
		s.rejected.Add(uint64(rejected))
		if ok, held := s.r.logLimit.allow("rejected "+s.remote.String(), time.Minute); ok {
			s.r.log.Warn("points rejected", "remote", s.remote, "count", rejected, "first", reason, "earlier_pushes_not_logged", held)
		}
	}
	s.have, s.remoteIdle = have, p.Idle
	s.respondMsg(m, transport.Ack{Have: have, Rejected: rejected, Reason: reason})
}

// ackMsg is an Ack with the Through of the push it answers.
type ackMsg struct {
	ack     transport.Ack
	through uint64
	err     error
}

// runSender pushes our feed to the remote from position have until ctx
// ends or the session fails. It owns its pushState.
func (s *session) runSender(ctx context.Context, have uint64) error {
	if last := s.r.st.LastSeq(); have > last {
		// The remote claims more of our feed than we ever wrote: its
		// mark is wrong (a restored backup, a lie). A resume position
		// never passes what we sent, so send everything again.
		s.r.log.Warn("remote claims changes this instance never wrote; resending all", "remote", s.remote, "claimed", have, "last", last)
		have = 0
	}
	cfg := &s.r.cfg
	// A link that holds everything reads the feed; a subtree's link is
	// routed. Its remote's mark of our feed moves only with the changes
	// it gets: a catch-up after a reconnect reads the subtree, whatever
	// the mark, so no empty push need cross a cellular link to move it.
	routed := !s.scope.full() && s.user == nil
	emptyEvery := uint64(50_000)
	var kick chan struct{}
	if routed {
		rte, pos := s.r.router.add(s.scope.root, s.remote)
		defer s.r.router.remove(rte)
		s.route, kick, emptyEvery = rte, rte.kick, 1<<64-1
		s.catchUp(have, pos)
	} else {
		kick = s.r.hub.register()
		defer s.r.hub.unregister(kick)
	}
	// lastPos is where the sender may read up to; for a routed sender
	// with moving on (to the router's position) included or not: moving
	// on sends nothing, and the router moving is no work for this link.
	lastPos := func(cursor uint64, moveOn bool) uint64 {
		if !routed {
			return s.r.st.LastSeq()
		}
		last := s.routedLast(cursor)
		if moveOn {
			last = max(last, s.r.router.position.Load())
		}
		return last
	}
	read := s.readBatch
	if routed {
		read = s.readRouted
	}
	if s.user != nil && have == 0 {
		// A new browser replica: send its scope from the store, the
		// tree first, rather than the whole feed (userlink.go).
		s.firstSync()
		feed := read
		read = func(ctx context.Context, cursor uint64, budget int) ([]crdt.Point, int, uint64, bool, error) {
			if s.jumpTo > cursor {
				cursor, s.jumpTo = s.jumpTo, 0
			}
			return feed(ctx, cursor, budget)
		}
	}
	st := newPushState(have, cfg.Window, emptyEvery, cfg.MaxPushBytes)
	s.acked.Store(have)
	acks := make(chan ackMsg, cfg.Window+1)
	sub, err := s.conn.Subscribe(s.ackPfx+".*", func(m *nats.Msg) {
		s.bytesRecv.Add(uint64(len(m.Data)))
		s.touch()
		tok, _, _ := strings.Cut(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], "-")
		through, perr := strconv.ParseUint(tok, 10, 64)
		var a transport.Ack
		var err error
		if noResponders(m) {
			// Not a malformed ack: the remote let go of the session.
			err = errNoSession
		} else {
			err = transport.Decode(m.Data, 0, &a)
		}
		if perr != nil {
			err = fmt.Errorf("ack on %s: %w", m.Subject, perr)
		}
		select {
		case acks <- ackMsg{ack: a, through: through, err: err}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe acks: %w", err)
	}
	defer sub.Unsubscribe()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	resumed := newResumeLog(s, have)
	for {
		last := lastPos(st.cursor, true)
		for len(s.backfill) > 0 && st.room() {
			pts, size, err := s.readBackfill(st.budget())
			if err != nil {
				return err
			}
			if len(pts) == 0 {
				continue
			}
			if err := s.sendPush(st.extra(len(pts), size, time.Now()), pts); err != nil {
				return err
			}
		}
		for len(s.backfill) == 0 && st.wantRead(last) {
			pts, size, through, idle, err := read(ctx, st.cursor, st.budget())
			if err != nil {
				return err
			}
			push, ok := st.read(through, len(pts), size, idle, time.Now())
			if !ok {
				continue
			}
			if err := s.sendPush(push, pts); err != nil {
				return err
			}
			last = lastPos(st.cursor, true)
		}
		// The store's last change before the sender's last look: one
		// written after it is not sent yet (status). A routed sender is
		// woken by its route, not by every change of the store.
		fed := uint64(math.MaxUint64)
		if !routed {
			fed = s.r.st.LastSeq()
		}
		last = lastPos(st.cursor, false)
		if len(s.backfill) == 0 && st.idle(last) && !st.lastIdle {
			// Caught up after a push that said otherwise: say so.
			if push, ok := st.read(st.cursor, 0, 0, true, time.Now()); ok {
				if err := s.sendPush(push, nil); err != nil {
					return err
				}
			}
		}
		s.mu.Lock()
		s.sendIdle, s.pending = len(s.backfill) == 0 && st.idle(last) && st.lastIdle, st.pending(last)
		s.idleFed = fed
		caughtUp := s.sendIdle
		s.mu.Unlock()
		resumed.check(caughtUp, st.acked)
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case a := <-acks:
			if errors.Is(a.err, errNoSession) {
				return a.err
			}
			if a.err != nil {
				return fmt.Errorf("ack: %w", a.err)
			}
			if a.ack.Rejected > 0 {
				if ok, held := s.r.logLimit.allow("remote rejected "+s.remote.String(), time.Minute); ok {
					s.r.log.Warn("remote rejected points", "remote", s.remote, "count", a.ack.Rejected, "first", a.ack.Reason, "earlier_acks_not_logged", held)
				}
			}
			sent := st.lastThrough
			if err := st.ack(a.ack, a.through, time.Now()); errors.Is(err, errGap) {
				if routed {
					// The routed changes sent after the receiver's
					// position left the queue: read them again.
					s.catchUp(st.cursor, sent)
				}
			} else if err != nil {
				return err
			}
			s.rate.Store(uint64(st.rate))
			s.acked.Store(st.acked)
		case now := <-tick.C:
			if st.overdue(now, cfg.AckTimeout) {
				return fmt.Errorf("no ack for %v", cfg.AckTimeout)
			}
		}
	}
}

// sendPush encodes push with pts and publishes it, its reply subject
// naming the position it covers and the push.
func (s *session) sendPush(push transport.Push, pts []crdt.Point) error {
	push.Points = crdt.AppendBatch(nil, pts)
	s.pointsSent.Add(uint64(len(pts)))
	b, err := transport.Encode(push)
	if err != nil {
		return err
	}
	// Every push has a reply subject of its own, even a resent one: the
	// remote may answer each reply subject once (its connection's
	// response permission), and two pushes in flight with one subject
	// would have the second answer refused.
	reply := s.ackPfx + "." + strconv.FormatUint(push.Through, 10) + "-" + strconv.FormatUint(s.pushN.Add(1), 10)
	if err := s.publish(s.pushSubj, reply, b); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	return nil
}

// readBatch reads the feed after cursor and returns the points for the
// remote (about size bytes encoded, at most budget), the position read
// through, and whether it reached the end. It serves a link that holds
// everything, and a user's (filtered by userSendable); a subtree's link
// is routed (readRouted).
func (s *session) readBatch(ctx context.Context, cursor uint64, budget int) (pts []crdt.Point, size int, through uint64, idle bool, err error) {
	cfg := &s.r.cfg
	const maxScan = 50_000 // changes looked at per batch, so one read stays short
	through, idle = cursor, true
	scanned := 0
	if s.user != nil {
		s.user.reset()
	}
	// What to send is decided on the change's identity alone, before its
	// register is read: the changes that came by this link are dropped.
	keep := func(c *store.Change) (bool, error) {
		if len(pts) >= cfg.MaxPushPoints || size >= budget || scanned >= maxScan || scanned%1024 == 1023 && ctx.Err() != nil {
			idle = false
			return false, store.ErrStop
		}
		scanned++
		through = c.Seq
		// Routing goes by the link a change arrived on, never by its
		// origin: an origin is data anyone may write.
		return c.Source != s.remote, nil
	}
	err = s.r.st.FeedWhere(cursor, keep, func(c *store.Change) error {
		if s.user != nil {
			if ok, err := s.userSendable(&c.Point); err != nil || !ok {
				return err
			}
		}
		pts = append(pts, c.Point)
		size += pointCost(&c.Point)
		return nil
	})
	return pts, size, through, idle, err
}

// pointCost estimates a point's share of a batch's encoded size: a batch
// of sensor readings costs about 17 bytes a point; new types, keys and
// text cost their length.
func pointCost(p *crdt.Point) int { return 16 + len(p.Key)/2 + len(p.Text) }

// minLinkRate is the slowest link a transfer's timeout allows for, in
// bytes/s: a Cat-M cellular link's 16 kbit/s.
const minLinkRate = 2 << 10

// transferTimeout is how long a request of n bytes, or with a reply of n
// bytes, may take: the ack timeout plus n at half the rate the link was
// measured at, and never less than minLinkRate allows. A repair reply of
// 512 KiB takes 40 s on a 100 kbit/s link; a fixed timeout would end a
// healthy session there.
func (s *session) transferTimeout(n int) time.Duration {
	rate := max(s.rate.Load()/2, minLinkRate)
	return s.r.cfg.AckTimeout + time.Duration(float64(n)/float64(rate)*float64(time.Second))
}

// traffic counts the points pushed either way: a repair loop that sees it
// unchanged knows the link was idle.
func (s *session) traffic() uint64 { return s.pointsSent.Load() + s.pointsRecv.Load() }
