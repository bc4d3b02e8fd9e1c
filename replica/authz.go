package replica

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/rules"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// Authorization: what an identity may read and write, decided from the
// tree when each request arrives, so a move or a tombstone takes effect
// at the next request.
//
//   - system, the local administrator and a key on the root (a peer):
//     everything, credentials included;
//   - a key on node N (a device): N's subtree, and structure in it;
//   - a user: the subtrees of its parents (its parents, siblings, their
//     descendants); structure only below the parents whose edge to it
//     carries role "admin".
//
// A scoped identity reads the points of the nodes in its scope and the
// edges below them, never a credential's secret. It writes a node point
// of a node in its scope; an edge point when it administers the parent
// and the child is in its administered scope or new; a user's password or
// address only when it administers every parent of the user as well, so
// nobody grants more than it holds; and a key (authKey) never, but for
// its revocation (a tombstone) where it administers: keys are the local
// administrator's to write.

// access is what one identity may reach. It caches tree walks for the
// length of one request: build a new one for each request.
type access struct {
	id      transport.Identity
	all     bool   // the whole tree
	secrets bool   // credential points too
	read    *scope // when !all: what it may read and write points of
	admin   *scope // when !all: where it may change structure
	st      *store.Store
	root    uuid.UUID // the store's root
}

// accessOf returns what id may reach now.
func (r *Replica) accessOf(id transport.Identity) (*access, error) {
	a := &access{id: id, st: r.st, root: r.st.Root()}
	switch id.Kind {
	case transport.KindSystem, transport.KindAdmin:
		a.all, a.secrets = true, true
	case transport.KindKey:
		if id.Node == r.st.Root() {
			a.all, a.secrets = true, true
			break
		}
		a.read = newRootsScope(r.st, []uuid.UUID{id.Node})
		a.admin = a.read
	case transport.KindUser:
		var read, admin []uuid.UUID
		var parents []uuid.UUID
		if err := r.st.Parents(id.Node, func(c store.Child) error {
			if c.Active {
				parents = append(parents, c.ID)
			}
			return nil
		}); err != nil {
			return nil, err
		}
		for _, p := range parents {
			read = append(read, p)
			role, ok, err := r.st.Get(crdt.Register{Node: id.Node, Parent: p, Type: crdt.TypeRole, Key: crdt.DefaultKey})
			if err != nil {
				return nil, err
			}
			if ok && !role.Tombstone && role.Text == crdt.RoleAdmin {
				admin = append(admin, p)
			}
		}
		a.read, a.admin = newRootsScope(r.st, read), newRootsScope(r.st, admin)
	default:
		a.read, a.admin = newRootsScope(r.st, nil), newRootsScope(r.st, nil)
	}
	return a, nil
}

// fullAccess is the system's access.
func (r *Replica) fullAccess() *access {
	return &access{id: transport.Identity{Kind: transport.KindSystem}, all: true, secrets: true, st: r.st, root: r.st.Root()}
}

// invalidate forgets memoized membership; call it when an edge changed.
func (a *access) invalidate() {
	if a.read != nil {
		a.read.invalidate()
	}
	if a.admin != nil {
		a.admin.invalidate()
	}
}

// canReadNode reports whether a may read node n's points.
func (a *access) canReadNode(n uuid.UUID) (bool, error) {
	if a.all {
		return true, nil
	}
	return a.read.containsNode(n)
}

// canRead reports whether a may read point p.
func (a *access) canRead(p *crdt.Point) (bool, error) {
	if crdt.IsSecret(p.Type) && !a.secrets {
		return false, nil
	}
	if a.all {
		return true, nil
	}
	return a.read.contains(p)
}

// hasState reports whether node n has any point or edge in the store.
func (a *access) hasState(n uuid.UUID) (bool, error) { return nodeHasState(a.st, n) }

// checkWrite returns nil when a may write every point of pts, or an error
// wrapping ErrForbidden that names the first it may not and how many it
// may not.
func (a *access) checkWrite(pts []crdt.Point) error {
	if a.all {
		return nil
	}
	if a.id.Kind == transport.KindLogin {
		return fmt.Errorf("%w: a login connection may only ask for a token", ErrForbidden)
	}
	whys, err := a.writeRefusals(pts)
	if err != nil {
		return err
	}
	refused, first := 0, ""
	for i, why := range whys {
		if why == "" {
			continue
		}
		if refused == 0 {
			first = fmt.Sprintf("point %d (%s): %s", i, describePoint(&pts[i]), why)
		}
		refused++
	}
	if refused > 0 {
		return fmt.Errorf("%w: %s may not write %d of %d points; first: %s", ErrForbidden, a.id, refused, len(pts), first)
	}
	return nil
}

// describePoint names a point in a refusal.
func describePoint(p *crdt.Point) string {
	if p.IsEdge() {
		return fmt.Sprintf("edge %v→%v %s/%s", p.Parent, p.Node, p.Type, p.Key)
	}
	return fmt.Sprintf("%v/%s/%s", p.Node, p.Type, p.Key)
}

// writeRefusals says, for each point of pts, why a may not write it ("":
// it may), each judged as part of the batch pts (a node the batch creates
// under an administered node may be written). a must not be all.
func (a *access) writeRefusals(pts []crdt.Point) ([]string, error) {
	inAdmin := func(n uuid.UUID) (bool, error) { return a.admin.containsNode(n) }
	// Nodes this batch creates below administered nodes, to a fixed
	// point (a new node may hang under another new node).
	created := map[uuid.UUID]bool{}
	for changed := true; changed; {
		changed = false
		for i := range pts {
			p := &pts[i]
			if p.Type != crdt.TypeEdge || p.Tombstone || created[p.Node] {
				continue
			}
			ok := created[p.Parent]
			var err error
			if !ok {
				if ok, err = inAdmin(p.Parent); err != nil {
					return nil, err
				}
			}
			if !ok {
				continue
			}
			old, err := a.hasState(p.Node)
			if err != nil {
				return nil, err
			}
			if !old && p.Node != a.root {
				created[p.Node] = true
				changed = true
			}
		}
	}
	whys := make([]string, len(pts))
	for i := range pts {
		why, err := a.writeRefusal(&pts[i], created, inAdmin)
		if err != nil {
			return nil, err
		}
		whys[i] = why
	}
	return whys, nil
}

// writeRefusal says why a may not write p, or "" when it may.
func (a *access) writeRefusal(p *crdt.Point, created map[uuid.UUID]bool, inAdmin func(uuid.UUID) (bool, error)) (string, error) {
	if p.IsEdge() {
		ok := created[p.Parent]
		if !ok {
			var err error
			if ok, err = inAdmin(p.Parent); err != nil {
				return "", err
			}
		}
		if !ok {
			return "changing structure there needs the admin role on the parent or above", nil
		}
		if created[p.Node] {
			return "", nil
		}
		in, err := inAdmin(p.Node)
		if err != nil || in {
			return "", err
		}
		old, err := a.hasState(p.Node)
		if err != nil || !old {
			return "", err
		}
		// A node deleted from under what the identity administers (no
		// live edge left, every edge from an administered parent) is
		// still its own: it may restore it, or place it elsewhere there.
		// One that any other parent holds is not: placing it would pull
		// that parent's node into this scope.
		if mine, err := a.onlyUnder(p.Node, inAdmin); err != nil || mine {
			return "", err
		}
		return "the child is a node outside what you administer", nil
	}
	if p.Type == crdt.TypeAuthKey && !p.Tombstone {
		// Keys are the operator's: a key minted by a scoped identity
		// would read the credentials of users its node holds, and
		// outlive the revocation of the identity that minted it. A
		// revocation (a tombstone) only takes the admin role.
		return "keys are the local administrator's to write (siot device add, siot peer add)", nil
	}
	if rules.IsDeliveryType(p.Type) {
		// A claim names recipients and says anything; an outcome
		// silences or repeats one. Only rule engines write them.
		return "notification records are written by the instances that run the rule", nil
	}
	if created[p.Node] {
		return "", nil
	}
	in, err := a.read.containsNode(p.Node)
	if err != nil {
		return "", err
	}
	if !in {
		return "the node is outside your scope", nil
	}
	if !crdt.IsCredential(p.Type) {
		return "", nil
	}
	// A credential grants what its node reaches: the subtree for a key,
	// the parents' subtrees for a user.
	if in, err := inAdmin(p.Node); err != nil || !in {
		return "a credential needs the admin role over its node", err
	}
	if p.Type == crdt.TypeAuthKey {
		return "", nil // a revocation, below
	}
	why := ""
	err = a.st.Parents(p.Node, func(c store.Child) error {
		in, err := inAdmin(c.ID)
		if err != nil {
			return err
		}
		if !in {
			why = fmt.Sprintf("the user is also under %v, which you do not administer", c.ID)
			return store.ErrStop
		}
		return nil
	})
	if err != nil && err != store.ErrStop {
		return "", err
	}
	return why, nil
}

// onlyUnder reports whether node has edges, none of them live, and every
// one of them from a parent that inAdmin accepts.
func (a *access) onlyUnder(node uuid.UUID, inAdmin func(uuid.UUID) (bool, error)) (bool, error) {
	mine, any := true, false
	err := a.st.Parents(node, func(c store.Child) error {
		any = true
		if c.Active {
			mine = false
			return store.ErrStop
		}
		in, err := inAdmin(c.ID)
		if err != nil {
			return err
		}
		if !in {
			mine = false
			return store.ErrStop
		}
		return nil
	})
	if err != nil && err != store.ErrStop {
		return false, err
	}
	return mine && any, nil
}

// limits bounds what one identity may ask of the API at once: a request
// rate, held watchers and concurrent transfers (imports and exports).
// The system and the local administrator are bounded only by the
// server-wide limits.
type limits struct {
	rate, burst  float64 // requests per second and bucket size
	maxWatchers  int
	maxTransfers int

	mu  sync.Mutex
	ids map[transport.Identity]*idLimits
}

type idLimits struct {
	tokens    float64
	last      time.Time
	watchers  int
	transfers int
}

// maxLimitIDs bounds the identities tracked; idle ones are dropped first.
const maxLimitIDs = 100_000

func (l *limits) init(c *Config) {
	l.rate, l.burst = c.RequestRate, 2*c.RequestRate
	l.maxWatchers, l.maxTransfers = c.MaxWatchersPerIdentity, c.MaxTransfersPerIdentity
	l.ids = map[transport.Identity]*idLimits{}
}

func exempt(id transport.Identity) bool {
	return id.Kind == transport.KindSystem || id.Kind == transport.KindAdmin
}

func (l *limits) get(id transport.Identity, now time.Time) *idLimits {
	s := l.ids[id]
	if s == nil {
		if len(l.ids) >= maxLimitIDs {
			for k, v := range l.ids {
				if v.watchers == 0 && v.transfers == 0 && now.Sub(v.last) > time.Minute {
					delete(l.ids, k)
				}
			}
		}
		s = &idLimits{tokens: l.burst, last: now}
		l.ids[id] = s
	}
	return s
}

// allow takes one request from id's bucket, or says how long to wait.
func (l *limits) allow(id transport.Identity, now time.Time) error {
	if exempt(id) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.get(id, now)
	s.tokens = min(l.burst, s.tokens+now.Sub(s.last).Seconds()*l.rate)
	s.last = now
	if s.tokens < 1 {
		return fmt.Errorf("%w: %s sends more than %.0f requests a second; slow down", ErrLimited, id, l.rate)
	}
	s.tokens--
	return nil
}

// take reserves one of id's watchers (watch) or transfers; release undoes it.
func (l *limits) take(id transport.Identity, watch bool) error {
	if exempt(id) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.get(id, time.Now())
	switch {
	case watch && s.watchers >= l.maxWatchers:
		return fmt.Errorf("%w: %s has %d watchers waiting, the limit", ErrLimited, id, s.watchers)
	case !watch && s.transfers >= l.maxTransfers:
		return fmt.Errorf("%w: %s has %d imports, exports or history reads in progress, the limit", ErrLimited, id, s.transfers)
	case watch:
		s.watchers++
	default:
		s.transfers++
	}
	return nil
}

func (l *limits) release(id transport.Identity, watch bool) {
	if exempt(id) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.ids[id]; s != nil {
		if watch {
			s.watchers--
		} else {
			s.transfers--
		}
	}
}

// requester parses the identity of a request from its subject, counts it
// against the identity's rate and answers the refusal itself with an error
// frame; ok is false when the request was refused.
func (r *Replica) requester(m *nats.Msg) (transport.Identity, bool) {
	return r.requesterAnswering(m, replyErr)
}

// requesterAnswering is requester for an API that answers refusals with
// fail (the JSON API: an error object).
func (r *Replica) requesterAnswering(m *nats.Msg, fail func(*nats.Msg, error)) (transport.Identity, bool) {
	id, _, err := transport.ParseSubject(m.Subject)
	if err != nil {
		fail(m, err)
		return id, false
	}
	if !replyOK(id, m.Reply) {
		// The answer would go elsewhere than the requester's inbox:
		// the server answers anywhere it is told, so it must not be
		// told to answer into another identity's subjects.
		r.metrics.refuse(ReasonInvalid)
		return id, false
	}
	if err := r.limits.allow(id, time.Now()); err != nil {
		r.metrics.refuse(ReasonLimited)
		fail(m, err)
		return id, false
	}
	return id, true
}

// replyOK reports whether a request of id asks for its answer in id's own
// inbox (the system may ask anywhere).
func replyOK(id transport.Identity, reply string) bool {
	return id.Kind == transport.KindSystem || strings.HasPrefix(reply, id.Inbox()+".")
}
