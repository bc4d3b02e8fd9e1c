package replica

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// Digest repair on a user's link. A user's replica holds its readable
// view: the subtrees of its parents over active edges and the edges below
// them, never a secret point (crdt.IsSecret: authKey, password). The
// store's digests cover those secrets, so the acceptor answers with the
// readable view's digests instead, derived from the store's by taking the
// secrets out:
//
//	own_r(n)    = own(n) − secretOwn(n)
//	sub_r(n)    = sub(n) − S(n)
//	S(n)        = secretOwn(n) + Σ secretEdge(n→c) over every edge below n
//	              + Σ S(c) over the active children c (once per path, as sub)
//	bucket_r(P, k) = bucket(P, k) − Σ over the children c in bucket k of
//	              secretEdge(P→c) + (S(c) when P→c is active)
//	edge_r(P→c) = edge(P→c) − secretEdge(P→c)
//
// A scope root P (a parent of the user over an active edge) has no edge
// above it in sub(P), so sub_r(P) is exactly what the replica's store
// computes for P. A child record of an inactive child carries zero own
// and below digests on both sides: the child's points are not part of the
// view through that edge (the replica keeps what it was sent before, and
// the acceptor would answer the node as unknown when no other path puts it
// in scope); only the edge itself is compared.
//
// S is derived from a secretIndex the acceptor keeps: the digest of every
// secret register, read from the store once and then from the change
// feed, and the sums S and bucket shares over the nodes that hold a secret
// or are above one, derived again after any edge register or secret point
// changed. An answer is computed against one derivation and then checked:
// if an edge register or a secret changed since the derivation (the feed
// shows it), the answer may mix states and is computed again, so no answer
// ever carries a digest that includes a secret.

// ErrUserRepair refuses a repair request on a user's link: its root is not
// a scope root of the user, too many nodes hold or are above secrets for
// the acceptor to derive the readable digests, or the tree kept changing
// while it answered. The reply's error says which.
var ErrUserRepair = errors.New("repair: refused on a user's link")

// Bounds of the readable view's derivation.
const (
	// maxSecretClosure bounds the nodes that hold a secret or are above
	// one (over active edges) for which S is derived; past it a user's
	// repair is refused (ErrUserRepair). Deriving reads the parents of
	// each, about a microsecond apiece.
	maxSecretClosure = 1 << 20
	// maxSecretCatchUp is the most changes a refresh of the secret index
	// reads from the feed; with more behind it scans the store again.
	maxSecretCatchUp = 2_000_000
	// userRepairTries bounds the answers computed for one request while
	// the tree changes under them.
	userRepairTries = 4
)

// edgeRef names the edge parent → child.
type edgeRef struct{ parent, child uuid.UUID }

// bucketRef names the child bucket b of parent.
type bucketRef struct {
	parent uuid.UUID
	bucket byte
}

// secretIndex is the acceptor's index of secret points, for the readable
// digests of users' repair answers. Safe for concurrent use; its methods
// block while it reads the store.
type secretIndex struct {
	mu    sync.Mutex
	built bool
	seq   uint64 // the feed is read through here
	// changed is the number of the last change that alters the sums: a
	// secret point, or an edge register (which may change which edges
	// are active).
	changed uint64
	regs    map[crdt.Register]crdt.Digest // the digest of each secret register's winner
	own     map[uuid.UUID]crdt.Digest     // per node: its secret node points' digests
	edge    map[edgeRef]crdt.Digest       // per edge: its secret edge points' digests
	sums    *secretSums                   // the last derivation
}

// secretSums is one derivation of the secret index: immutable, shared by
// the answers that use it.
type secretSums struct {
	at     uint64 // the index's changed when derived
	own    map[uuid.UUID]crdt.Digest
	edge   map[edgeRef]crdt.Digest
	sub    map[uuid.UUID]crdt.Digest // S(n), for nodes that hold or are above a secret
	bucket map[bucketRef]crdt.Digest // the secret part of bucket(P, k)
}

// relevant reports whether a change of the register of p may change the
// sums.
func relevant(p *crdt.Point) bool {
	return crdt.IsSecret(p.Type) || p.IsEdge() && p.Type == crdt.TypeEdge
}

// refresh brings the index up to the store's feed. x.mu must be held.
func (x *secretIndex) refresh(st *store.Store) error {
	if x.built && st.LastSeq()-x.seq > maxSecretCatchUp {
		x.built = false
	}
	if !x.built {
		x.regs, x.own, x.edge = map[crdt.Register]crdt.Digest{}, map[uuid.UUID]crdt.Digest{}, map[edgeRef]crdt.Digest{}
		x.seq = st.LastSeq()
		x.changed, x.sums = x.seq, nil
		if err := st.ScanAll(func(p *crdt.Point) error {
			if crdt.IsSecret(p.Type) {
				x.set(p)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("secret index: %w", err)
		}
		x.built = true
	}
	last := x.seq
	err := st.FeedWhere(x.seq, func(c *store.Change) (bool, error) {
		last = c.Seq
		return relevant(&c.Point), nil
	}, func(c *store.Change) error {
		x.changed = c.Seq
		if crdt.IsSecret(c.Point.Type) {
			x.set(&c.Point)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("secret index: %w", err)
	}
	x.seq = last
	return nil
}

// set records p as its register's winner.
func (x *secretIndex) set(p *crdt.Point) {
	r := p.Register()
	d := crdt.PointDigest(p)
	delta := d.Sub(x.regs[r])
	x.regs[r] = d
	if p.IsEdge() {
		e := edgeRef{p.Parent, p.Node}
		if s := x.edge[e].Add(delta); s.IsZero() {
			delete(x.edge, e)
		} else {
			x.edge[e] = s
		}
		return
	}
	if s := x.own[p.Node].Add(delta); s.IsZero() {
		delete(x.own, p.Node)
	} else {
		x.own[p.Node] = s
	}
}

// current returns the sums as of the store's feed now.
func (x *secretIndex) current(st *store.Store) (*secretSums, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.refresh(st); err != nil {
		return nil, err
	}
	if x.sums != nil && x.sums.at == x.changed {
		return x.sums, nil
	}
	s, err := x.derive(st)
	if err != nil {
		return nil, err
	}
	x.sums = s
	return s, nil
}

// stale reports whether s no longer holds: an edge register or a secret
// changed since it was derived.
func (x *secretIndex) stale(st *store.Store, s *secretSums) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.refresh(st); err != nil {
		return false, err
	}
	return x.changed != s.at, nil
}

// derive computes S and the bucket shares: it walks up active parents
// from every node that holds a secret or has a secret edge below it, then
// adds each node's S to its parents' children first (active edges form no
// cycle). It reads the parents of every node it reaches, at most
// maxSecretClosure of them. x.mu must be held.
func (x *secretIndex) derive(st *store.Store) (*secretSums, error) {
	s := &secretSums{at: x.changed, own: x.own, edge: x.edge,
		sub: map[uuid.UUID]crdt.Digest{}, bucket: map[bucketRef]crdt.Digest{}}
	// The maps of own and edge are shared with the index, which replaces
	// entries as it reads the feed: copy them.
	s.own = make(map[uuid.UUID]crdt.Digest, len(x.own))
	for n, d := range x.own {
		s.own[n] = d
		s.sub[n] = s.sub[n].Add(d)
	}
	s.edge = make(map[edgeRef]crdt.Digest, len(x.edge))
	for e, d := range x.edge {
		s.edge[e] = d
		s.sub[e.parent] = s.sub[e.parent].Add(d)
		b := bucketRef{e.parent, e.child[0]}
		s.bucket[b] = s.bucket[b].Add(d)
	}
	ups := make(map[uuid.UUID][]uuid.UUID, len(s.sub)) // active parents
	queue := make([]uuid.UUID, 0, len(s.sub))
	for n := range s.sub {
		queue = append(queue, n)
	}
	seen := make(map[uuid.UUID]bool, len(queue))
	for _, n := range queue {
		seen[n] = true
	}
	for i := 0; i < len(queue); i++ {
		n := queue[i]
		err := st.Parents(n, func(c store.Child) error {
			if !c.Active {
				return nil
			}
			ups[n] = append(ups[n], c.ID)
			if !seen[c.ID] {
				seen[c.ID] = true
				queue = append(queue, c.ID)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("secret index: %w", err)
		}
		if len(queue) > maxSecretClosure {
			return nil, fmt.Errorf("%w: more than %d nodes hold or are above secrets", ErrUserRepair, maxSecretClosure)
		}
	}
	// Children first: a node is summed into its parents once all of its
	// children in the closure were summed into it.
	below := make(map[uuid.UUID]int, len(queue))
	for _, ps := range ups {
		for _, p := range ps {
			below[p]++
		}
	}
	ready := make([]uuid.UUID, 0, len(queue))
	for _, n := range queue {
		if below[n] == 0 {
			ready = append(ready, n)
		}
	}
	for len(ready) > 0 {
		n := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		d := s.sub[n]
		for _, p := range ups[n] {
			s.sub[p] = s.sub[p].Add(d)
			b := bucketRef{p, n[0]}
			s.bucket[b] = s.bucket[b].Add(d)
			if below[p]--; below[p] == 0 {
				ready = append(ready, p)
			}
		}
	}
	// (Nodes left with children unsummed lie on a cycle of edges read
	// while they changed: the check after the answer finds the change.)
	return s, nil
}

// readableView is a user's view of the store's digests (see the top of
// this file): the store's, less the secrets.
type readableView struct {
	st *store.Store
	s  *secretSums
}

var _ repairView = readableView{}

func (v readableView) nodeDigest(n uuid.UUID) (store.Digests, error) {
	d, err := v.st.NodeDigest(n)
	d.Own, d.Sub = d.Own.Sub(v.s.own[n]), d.Sub.Sub(v.s.sub[n])
	return d, err
}

func (v readableView) childDigests(parent uuid.UUID, bucket int, fn func(store.ChildDigest) error) error {
	return v.st.ChildDigests(parent, bucket, uuid.Nil, func(c store.ChildDigest) error {
		c.Edge = c.Edge.Sub(v.s.edge[edgeRef{parent, c.ID}])
		if c.Edge.IsZero() {
			return nil // an edge of secret points only: not in the view
		}
		if c.Active {
			c.Own, c.Sub = c.Own.Sub(v.s.own[c.ID]), c.Sub.Sub(v.s.sub[c.ID])
		} else {
			c.Own, c.Sub = crdt.Digest{}, crdt.Digest{}
		}
		return fn(c)
	})
}

func (v readableView) buckets(parent uuid.UUID, fn func(bucket byte, d crdt.Digest) error) error {
	return v.st.Buckets(parent, func(b byte, d crdt.Digest) error {
		if d = d.Sub(v.s.bucket[bucketRef{parent, b}]); d.IsZero() {
			return nil // only secrets: not in the view
		}
		return fn(b, d)
	})
}

func (v readableView) hidesSecrets() bool { return true }

// answerUser answers a repair request on user session s: within the
// user's scope, over its readable view. The request's root must be one of
// the user's parents over an active edge.
func (a *acceptor) answerUser(s *session, req *transport.RepairRequest) (*transport.RepairReply, error) {
	st := a.r.st
	for range userRepairTries {
		sums, err := a.secrets.current(st)
		if err != nil {
			return nil, err
		}
		// A fresh access each time: its scope's memo must see the tree
		// as it is now.
		acc, err := a.r.accessOf(s.user.id)
		if err != nil {
			return nil, err
		}
		if acc.read == nil || !acc.read.isRoot(req.Root) {
			return nil, fmt.Errorf("%w: %v is not a parent of user %v over an active edge; a round's root is one of its parents",
				ErrUserRepair, req.Root, s.user.id.Node)
		}
		reply, err := answerIn(st, acc.read, readableView{st: st, s: sums}, req, a.r.cfg.repairLimits)
		if err != nil {
			return nil, err
		}
		stale, err := a.secrets.stale(st, sums)
		if err != nil {
			return nil, err
		}
		if !stale {
			return reply, nil
		}
	}
	return nil, fmt.Errorf("%w: the tree changed while each of %d answers was computed; ask again", ErrUserRepair, userRepairTries)
}
