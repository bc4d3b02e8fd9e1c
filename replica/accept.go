package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// ErrBusy refuses a hello while too many link sessions are in their
// initial sync; its text says when to retry ("retry after 12s").
var ErrBusy = errors.New("busy")

// busyText comes before the seconds to wait in an ErrBusy refusal.
const busyText = "retry after "

// maxSessionsPerIdentity bounds the link sessions of one identity (the
// local administrator's aside).
const maxSessionsPerIdentity = 4

// ErrDetached refuses an edge whose edge upstream was deleted: it keeps
// running on its own and is not re-added until the edge is undeleted.
var ErrDetached = errors.New("detached: the edge above this device is deleted upstream")

// acceptor serves the links other instances open to this one.
type acceptor struct {
	r  *Replica
	mu sync.Mutex
	// sessions by session ID
	sessions map[string]*acceptedSession
	closed   bool
	wg       sync.WaitGroup
	refused  atomic.Uint64 // hellos refused
	// repairTime is the time spent answering repair requests, ns.
	repairTime atomic.Int64
	// secrets indexes the secret points, for the readable digests of
	// users' repair answers (userrepair.go).
	secrets secretIndex
}

// acceptedSession is a session a dialer opened here.
type acceptedSession struct {
	id      string
	s       *session
	subj    transport.SessionSubjects
	subs    []*nats.Subscription
	ctx     context.Context
	cancel  context.CancelCauseFunc
	started bool
	since   time.Time
	dialer  transport.Identity // who opened it, as the server verified
	// kind and name identify the link in the link book: an edge by its
	// root, a peer by its instance.
	kind, name string
}

func newAcceptor(r *Replica) *acceptor {
	return &acceptor{r: r, sessions: make(map[string]*acceptedSession)}
}

// handleHello opens a session for a dialer. Refusals are MsgError replies
// that say why.
func (a *acceptor) handleHello(m *nats.Msg) {
	if id, _, err := transport.ParseSubject(m.Subject); err == nil && !replyOK(id, m.Reply) {
		a.refused.Add(1) // no answer: it would go to another's subjects
		return
	}
	w, err := a.hello(m)
	var b []byte
	if err != nil {
		a.refused.Add(1)
		if ok, held := a.r.logLimit.allow("refused "+err.Error(), time.Minute); ok {
			a.r.log.Warn("link refused", "err", err, "repeats_not_logged", held)
		}
		b = transport.EncodeError(err)
	} else if b, err = transport.Encode(w); err != nil {
		b = transport.EncodeError(err)
	}
	_ = m.Respond(b)
}

func (a *acceptor) hello(m *nats.Msg) (transport.Welcome, error) {
	r := a.r
	id, _, err := transport.ParseSubject(m.Subject)
	if err != nil {
		return transport.Welcome{}, err
	}
	if !replyOK(id, m.Reply) {
		return transport.Welcome{}, errors.New("hello: the reply subject is not the dialer's inbox")
	}
	if err := r.limits.allow(id, time.Now()); err != nil {
		return transport.Welcome{}, err
	}
	var h transport.Hello
	if err := transport.Decode(m.Data, 0, &h); err != nil {
		return transport.Welcome{}, fmt.Errorf("hello: %w", err)
	}
	w := transport.Welcome{Instance: r.st.Instance(), Root: r.st.Root(), Time: r.clock.Physical().UnixMilli()}
	if h.Proto != transport.LinkProto {
		return w, fmt.Errorf("hello: link protocol %d, this server speaks %d", h.Proto, transport.LinkProto)
	}
	if h.Instance == uuid.Nil || h.Instance == r.st.Instance() {
		return w, fmt.Errorf("hello: instance %v: cannot link to itself or to nil", h.Instance)
	}
	if (h.Root != uuid.Nil || h.Role == transport.RoleUser) && !exempt(id) {
		if n := a.starting(); n >= r.cfg.MaxStartingSessions {
			// Shed politely, before anything is written: each refused
			// dialer waits its own while, longer as the backlog grows
			// (an initial sync takes a few hundred ms of the cloud's
			// time: 128 drain in seconds).
			return w, fmt.Errorf("%w: %d links in their initial sync; %s%ds", ErrBusy, n, busyText, 1+rand.IntN(2+n/32))
		}
	}
	// Who may link how: a peer holds everything, so it takes an
	// administrator of everything (the local administrator's credentials
	// or a key on the root); an edge links as the node its key is on, or
	// as any root with the local administrator's credentials (which may
	// adopt a new edge under the root).
	whole := id.Kind == transport.KindSystem || id.Kind == transport.KindAdmin ||
		id.Kind == transport.KindKey && id.Node == r.st.Root()
	var sc *scope
	switch h.Role {
	case transport.RolePeer:
		if !whole {
			return transport.Welcome{}, fmt.Errorf("%w: %s may not link as a peer: it takes a peer key (siot peer add) or the administrator's credentials", ErrForbidden, id)
		}
		if h.Root == uuid.Nil {
			return w, nil // identity only: a new peer learns the root
		}
		if h.Root != r.st.Root() {
			return w, fmt.Errorf("%w: this server's root is %v, yours is %v", ErrRootMismatch, r.st.Root(), h.Root)
		}
		sc = newScope(r.st, uuid.Nil)
	case transport.RoleEdge:
		if h.Root == uuid.Nil || h.Root == r.st.Root() {
			return w, fmt.Errorf("hello: edge root %v: it must be a node of its own (same root: link as a peer)", h.Root)
		}
		switch {
		case id.Kind == transport.KindKey && id.Node == h.Root:
		case id.Kind == transport.KindSystem || id.Kind == transport.KindAdmin:
		default:
			return transport.Welcome{}, fmt.Errorf("%w: %s may not link as edge %v: a device links as the node its key is on", ErrForbidden, id, h.Root)
		}
		if err := a.attach(h.Root); err != nil {
			return w, err
		}
		sc = newScope(r.st, h.Root)
	case transport.RoleUser:
		// A user's replica (a browser's) signs in with the user's token
		// and has no root of its own: its scope is the user's, as the
		// API computes it for each batch (userView), so the session's
		// scope holds nothing of its own.
		if id.Kind != transport.KindUser {
			return transport.Welcome{}, fmt.Errorf("%w: %s may not link as a user: a user's replica signs in with the user's token", ErrForbidden, id)
		}
		if h.Root != uuid.Nil {
			return w, fmt.Errorf("hello: a user's link has no root of its own: send a nil root, not %v", h.Root)
		}
		sc = newRootsScope(r.st, nil)
	default:
		return w, fmt.Errorf("hello: unknown role %q", h.Role)
	}
	// The mark of how far this store holds the dialer's feed is the
	// instance's, kept apart per device key: another identity that
	// claims the instance ID moves no mark of the real one.
	mark := recvMark(h.Instance)
	if id.Kind == transport.KindKey && !whole || id.Kind == transport.KindUser {
		mark += "@" + id.Node.String()
	}
	have, err := r.st.Mark(mark)
	if err != nil {
		return w, err
	}
	w.Last = r.st.LastSeq()
	scopeRoot := sc.root
	if sc.full() {
		scopeRoot = r.st.Root()
	}
	if h.Role != transport.RoleUser { // a user's link never compares first: no repair
		if w.Holds, err = holdsTree(r.st, scopeRoot); err != nil {
			return w, err
		}
	}
	sid := transport.NewSessionID()
	subj, err := transport.Subjects(id, sid)
	if err != nil {
		return w, err
	}
	ctx, cancel := context.WithCancelCause(r.ctx)
	as := &acceptedSession{id: sid, subj: subj, ctx: ctx, cancel: cancel, since: time.Now(), dialer: id,
		kind: KindPeer, name: h.Instance.String()}
	switch h.Role {
	case transport.RoleEdge:
		as.kind, as.name = KindEdge, h.Root.String()
	case transport.RoleUser:
		// Not in the link book: each browser tab is an instance of its
		// own, and the book keeps a record per link for good.
		as.kind, as.name = "", ""
	}
	as.s = newSession(r, h.Instance, h.Role, sc, r.nc, subj.Down, have, func(err error) { a.end(as, err) })
	as.s.mark = mark
	if id.Kind != transport.KindSystem {
		as.s.replyPfx = id.Inbox() + "."
	}
	if h.Role == transport.RoleUser {
		as.s.user = &userView{r: r, id: id}
		as.s.ingress = userIngress{r: r, id: id, instance: h.Instance}
		// In sync once both sides are idle, until a repair round says
		// otherwise: a replica may not run repair at all.
		as.s.repairEqual = true
	}
	if h.Role == transport.RoleEdge {
		root := h.Root
		as.s.ingress = &subtreeFilter{st: r.st, root: root, emailTaken: r.emailTaken,
			keys: id.Kind == transport.KindSystem || id.Kind == transport.KindAdmin}
		as.s.onEdge = func(p *crdt.Point) error {
			if p.Node != root {
				return nil
			}
			return a.attached(root)
		}
	}
	for subject, handler := range map[string]nats.MsgHandler{
		subj.Start: func(m *nats.Msg) { a.handleStart(as, m) },
		subj.Up:    as.s.handlePush,
		subj.Ping:  func(m *nats.Msg) { a.handlePing(as, m) },
		subj.Repair: func(m *nats.Msg) {
			a.handleRepair(as, m)
		},
	} {
		sub, err := r.nc.Subscribe(subject, handler)
		if err != nil {
			cancel(err)
			for _, s := range as.subs {
				_ = s.Unsubscribe()
			}
			return w, fmt.Errorf("subscribe %s: %w", subject, err)
		}
		as.subs = append(as.subs, sub)
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.drop(as)
		return w, errors.New("server is shutting down")
	}
	// A dialer that reconnects replaces its old sessions: the same
	// instance under the same identity, never another identity's.
	// An identity other than the administrator's holds at most
	// maxSessionsPerIdentity sessions: each costs subscriptions and a
	// sender, and a device needs one. The oldest go first.
	var old, same []*acceptedSession
	for _, o := range a.sessions {
		switch {
		case o.s.remote == h.Instance && o.dialer == id:
			old = append(old, o)
		case o.dialer == id:
			same = append(same, o)
		}
	}
	if !exempt(id) && len(same) >= maxSessionsPerIdentity {
		slices.SortFunc(same, func(x, y *acceptedSession) int { return x.since.Compare(y.since) })
		old = append(old, same[:len(same)-maxSessionsPerIdentity+1]...)
	}
	a.sessions[sid] = as
	a.mu.Unlock()
	if as.kind != "" {
		r.links.up(as.kind, as.name, h.Role, "", as.s)
	}
	for _, o := range old {
		a.end(o, errors.New("replaced by a new session"))
	}
	w.Session, w.Have = sid, have
	r.log.Info("link accepted", "remote", h.Instance, "identity", id.String(), "role", h.Role, "root", h.Root, "have", have)
	return w, nil
}

// starting counts the sessions not yet through their initial sync: one
// side or the other still has changes to send.
func (a *acceptor) starting() int {
	a.mu.Lock()
	all := make([]*acceptedSession, 0, len(a.sessions))
	for _, as := range a.sessions {
		all = append(all, as)
	}
	a.mu.Unlock()
	n := 0
	for _, as := range all {
		as.s.mu.Lock()
		if !(as.s.sendIdle && as.s.remoteIdle) {
			n++
		}
		as.s.mu.Unlock()
	}
	return n
}

// endOrphans ends the sessions whose dialer's identity has no open
// connection left (conns, from transport.Server.Connections): a revoked
// credential's connections were closed, so are its sessions.
func (a *acceptor) endOrphans(conns map[transport.Identity]int) {
	var orphans []*acceptedSession
	a.mu.Lock()
	for _, as := range a.sessions {
		if as.dialer.Kind != transport.KindSystem && conns[as.dialer] == 0 {
			orphans = append(orphans, as)
		}
	}
	a.mu.Unlock()
	for _, as := range orphans {
		a.end(as, fmt.Errorf("%s has no connection left", as.dialer))
	}
}

// attach checks that edge root may link: an edge with no edge here is
// adopted under this root; one whose every edge is deleted is detached.
func (a *acceptor) attach(root uuid.UUID) error {
	parents, active, err := a.parents(root)
	if err != nil {
		return err
	}
	if active > 0 {
		return nil
	}
	if parents > 0 {
		return ErrDetached
	}
	r := a.r
	_, err = r.Write([]crdt.Point{{Node: root, Parent: r.st.Root(), Type: crdt.TypeEdge, Key: crdt.DefaultKey}})
	if err != nil {
		return fmt.Errorf("adopt %v: %w", root, err)
	}
	r.log.Info("edge adopted", "node", root)
	return nil
}

// attached returns ErrDetached when root has no active parent edge.
func (a *acceptor) attached(root uuid.UUID) error {
	_, active, err := a.parents(root)
	if err != nil {
		return err
	}
	if active == 0 {
		return ErrDetached
	}
	return nil
}

func (a *acceptor) parents(n uuid.UUID) (all, active int, err error) {
	err = a.r.st.Parents(n, func(c store.Child) error {
		all++
		if c.Active {
			active++
		}
		return nil
	})
	return all, active, err
}

func (a *acceptor) handleStart(as *acceptedSession, m *nats.Msg) {
	s := as.s
	s.bytesRecv.Add(uint64(len(m.Data)))
	s.touch()
	var st transport.Start
	if err := transport.Decode(m.Data, 0, &st); err != nil {
		s.respond(m, transport.EncodeError(fmt.Errorf("start: %w", err)))
		return
	}
	a.mu.Lock()
	if as.started || a.closed || as.ctx.Err() != nil {
		a.mu.Unlock()
		s.respond(m, transport.EncodeError(errors.New("start: session already started or ended")))
		return
	}
	as.started = true
	a.wg.Add(1)
	a.mu.Unlock()
	s.mu.Lock()
	have := s.have
	s.mu.Unlock()
	s.respondMsg(m, transport.Ack{Have: have})
	go func() {
		defer a.wg.Done()
		if a.r.cfg.NoPush {
			<-as.ctx.Done()
			return
		}
		err := s.runSender(as.ctx, st.Have)
		if err != nil {
			a.end(as, err)
		}
	}()
}

func (a *acceptor) handlePing(as *acceptedSession, m *nats.Msg) {
	s := as.s
	s.bytesRecv.Add(uint64(len(m.Data)))
	s.touch()
	if bye, ok := transport.IsBye(m.Data); ok {
		a.end(as, &goodbye{reason: bye.Reason})
		s.respondMsg(m, transport.Ack{})
		return
	}
	if err := transport.Decode(m.Data, 0, &transport.Ping{}); err != nil {
		s.respond(m, transport.EncodeError(fmt.Errorf("ping: %w", err)))
		return
	}
	s.mu.Lock()
	have := s.have
	s.mu.Unlock()
	s.respondMsg(m, transport.Ack{Have: have})
}

// end closes a session; when err is not nil the dialer is told why (a
// MsgError on its down subject) so it does not wait for a timeout, unless
// err is the dialer's own goodbye.
func (a *acceptor) end(as *acceptedSession, err error) {
	a.mu.Lock()
	_, live := a.sessions[as.id]
	delete(a.sessions, as.id)
	a.mu.Unlock()
	if !live {
		return
	}
	if err != nil && a.r.ctx.Err() == nil {
		if !isGoodbye(err) {
			_ = a.r.nc.Publish(as.subj.Down, transport.EncodeError(err))
		}
		a.r.log.Info("link session ended", "remote", as.s.remote, "role", as.s.role, "err", err,
			"up", time.Since(as.since).Round(time.Millisecond), "bytes_sent", as.s.bytesSent.Load(), "bytes_recv", as.s.bytesRecv.Load())
	}
	a.drop(as)
}

func (a *acceptor) drop(as *acceptedSession) {
	a.release(as)
	if as.kind != "" {
		a.r.links.down(as.kind, as.name, as.s)
	}
}

// release cancels a session and lets go of its subjects.
func (a *acceptor) release(as *acceptedSession) {
	as.cancel(errors.New("session closed"))
	for _, s := range as.subs {
		_ = s.Unsubscribe()
	}
}

// expire ends sessions whose dialer went silent, until ctx ends.
func (a *acceptor) expire(ctx context.Context) {
	timeout := a.r.cfg.SessionTimeout
	t := time.NewTicker(max(timeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		var stale []*acceptedSession
		a.mu.Lock()
		for _, as := range a.sessions {
			if time.Duration(now-as.s.lastSeen.Load()) > timeout {
				stale = append(stale, as)
			}
		}
		a.mu.Unlock()
		for _, as := range stale {
			a.end(as, fmt.Errorf("no message for %v", timeout))
		}
	}
}

// closeAll ends every session and waits for their senders. With a nil
// cause the replica is closing cleanly: each dialer gets a Bye, so it
// shows the link down at once; otherwise the dialers get the cause as an
// error.
func (a *acceptor) closeAll(cause error) {
	a.mu.Lock()
	a.closed = true
	all := make([]*acceptedSession, 0, len(a.sessions))
	for _, as := range a.sessions {
		all = append(all, as)
	}
	clear(a.sessions)
	a.mu.Unlock()
	var byes sync.WaitGroup
	for _, as := range all {
		if cause == nil {
			// The goodbyes go before the subscriptions: a dialer's push
			// that comes after them finds no one, and the dialer, told
			// first, takes that for the end it is.
			byes.Go(func() { as.s.sayBye(as.subj.Down, "server shutting down") })
		} else {
			_ = a.r.nc.Publish(as.subj.Down, transport.EncodeError(cause))
		}
	}
	byes.Wait()
	ends := make([]linkEnd, 0, len(all))
	for _, as := range all {
		a.release(as)
		if as.kind != "" {
			ends = append(ends, linkEnd{as.kind, as.name, as.s})
		}
	}
	a.r.links.downAll(ends)
	a.wg.Wait()
}

// status reports the accepted sessions.
func (a *acceptor) status() []transport.LinkStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]transport.LinkStatus, 0, len(a.sessions))
	for _, as := range a.sessions {
		s := as.s
		ls := transport.LinkStatus{Role: s.role, Remote: s.remote.String(), Connected: true,
			BytesSent: s.bytesSent.Load(), BytesRecv: s.bytesRecv.Load(), Rejected: s.rejected.Load(),
			LastSeen: formatSeen(time.Unix(0, s.lastSeen.Load()))}
		ls.InSync, ls.Pending = s.status()
		out = append(out, ls)
	}
	return out
}
