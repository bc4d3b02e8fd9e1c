package replica

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// A user's link (role "user"): a replica of what one signed-in user may
// see, a browser's. It is the local API's authorization carried onto a
// link, nothing more:
//
//   - down, the acceptor sends the points the user may read through the
//     API (accessOf, canRead: the subtrees of its parents, no authKey or
//     password), decided again for every batch from the tree as it is, so
//     a move, a new parent or a deleted edge takes effect at the next
//     batch; a subtree that enters the scope is sent whole (a backfill).
//     The user's own edges and roles are sent too, tombstones included:
//     they are how its replica learns that a parent went away;
//   - up, every point is judged as the same point in an API import by the
//     user would be (writeRefusals: scope, structure only where it
//     administers, credentials), one by one, and must name as origin the
//     user's node or the dialer's instance; the rest is refused, counted
//     and reported in the ack, like an edge's points outside its subtree;
//   - digest repair compares the readable view (userrepair.go): a round's
//     root is one of the user's parents over an active edge, and the
//     acceptor answers with the store's digests less the secrets below
//     each node, never lists, sketches or sends a secret, and answers a
//     node outside the scope as unknown; the points the replica pushes in
//     a round are judged as its other pushes are. What stays refused
//     (ErrUserRepair): another root, and a tree whose secrets are too
//     many to derive the sums for, or that kept changing during the answer.

// userView decides what a user's session sends. It is owned by the
// session's sender goroutine.
type userView struct {
	r  *Replica
	id transport.Identity // the user
	// acc is the user's access as of the batch being read; nil until the
	// next read, or after the user's own edges changed.
	acc *access
}

// reset makes the next decision read the tree again: call it before each
// batch, so a scope that moved is followed at once.
func (v *userView) reset() { v.acc = nil }

func (v *userView) access() (*access, error) {
	if v.acc == nil {
		a, err := v.r.accessOf(v.id)
		if err != nil {
			return nil, err
		}
		v.acc = a
	}
	return v.acc, nil
}

// own reports whether p is an edge register (an edge, a role) of the
// user's own node.
func (v *userView) own(p *crdt.Point) bool { return p.IsEdge() && p.Node == v.id.Node }

// readable reports whether p may go down the link.
func (v *userView) readable(p *crdt.Point) (bool, error) {
	if crdt.IsSecret(p.Type) {
		return false, nil
	}
	if v.own(p) {
		return true, nil
	}
	a, err := v.access()
	if err != nil {
		return false, err
	}
	return a.canRead(p)
}

// userSendable is the user session's filter of a change its sender read
// from the feed: it follows the scope as edges change, and queues for a
// backfill the subtrees that may have entered it.
func (s *session) userSendable(p *crdt.Point) (bool, error) {
	v := s.user
	if p.IsEdge() {
		if v.own(p) {
			v.reset() // its parents or roles changed
		} else if p.Type == crdt.TypeEdge && v.acc != nil {
			v.acc.invalidate()
		}
	}
	ok, err := v.readable(p)
	if err != nil || !ok {
		return false, err
	}
	if p.Type == crdt.TypeEdge && !p.Tombstone {
		// A node placed under the scope, or a new parent of the user:
		// its subtree's older points were not sent, so send it whole.
		// Duplicates merge as stale.
		n := p.Node
		if v.own(p) {
			n = p.Parent
		}
		s.backfill = append(s.backfill, backfillNode{id: n, expand: true})
	}
	return true, nil
}

// userIngress keeps the points a user's replica may push: those the user
// could write through the API, with an origin of its own.
type userIngress struct {
	r        *Replica
	id       transport.Identity // the user
	instance uuid.UUID          // the dialer's instance
}

func (f userIngress) keep(pts []crdt.Point) (kept []crdt.Point, rejected int, reason string, err error) {
	if f.r.cfg.noChecks {
		return pts, 0, "", nil
	}
	acc, err := f.r.accessOf(f.id)
	if err != nil {
		return nil, 0, "", err
	}
	whys, err := acc.writeRefusals(pts)
	if err != nil {
		return nil, 0, "", err
	}
	kept = pts[:0:0]
	for i := range pts {
		p := &pts[i]
		why := whys[i]
		if why == "" && p.Origin != f.id.Node && p.Origin != f.instance {
			why = fmt.Sprintf("origin %v is neither the user nor its instance", p.Origin)
		}
		if why == "" && p.Type == crdt.TypeEmail && !p.Tombstone && p.Text != "" {
			taken, err := f.r.emailTaken(p.Text, p.Node)
			if err != nil {
				return nil, 0, "", err
			}
			if taken {
				why = "another user signs in with this address"
			}
		}
		if why == "" {
			kept = append(kept, *p)
			continue
		}
		if rejected == 0 {
			reason = fmt.Sprintf("%v: point %s: %s", ErrForbidden, describePoint(p), why)
		}
		rejected++
	}
	return kept, rejected, reason, nil
}

func (f userIngress) refusal() string { return ReasonForbidden }

// firstSync arranges a new user replica's first sync (its start position
// is 0): instead of the whole feed, which on a cloud holds every change
// of every site, the sender sends the user's scope from the store, as a
// backfill of each scope root (the user's parents) in two passes, breadth
// first: the tree (edge registers, nodeType and description of every
// node) and then everything else, so a page can show the tree long before
// the readings have arrived. The feed is then read from its end as it was
// before the backfill began: the first push after the backfill covers
// 0 through there, which the replica takes as its position. What changed
// meanwhile is after that position, or arrived in the backfill already
// (it merges as stale).
func (s *session) firstSync() {
	last := s.r.st.LastSeq()
	if last == 0 {
		return
	}
	var roots []uuid.UUID
	if err := s.r.st.Parents(s.user.id.Node, func(c store.Child) error {
		if c.Active {
			roots = append(roots, c.ID)
		}
		return nil
	}); err != nil {
		// Without roots there is nothing to backfill: the feed from 0
		// sends the same, only later.
		s.r.log.Warn("user first sync: reading the user's parents", "user", s.user.id.Node, "err", err)
		return
	}
	for _, r := range roots {
		s.backfill = append(s.backfill, backfillNode{id: r, expand: true, part: partTree})
		s.backfillNext = append(s.backfillNext, backfillNode{id: r, expand: true, part: partRest})
	}
	// The user's own edge registers from parents that are not its scope
	// now (a parent it left) are not below a root: the backfill of the
	// user's own node, edges only, carries them.
	s.backfillNext = append(s.backfillNext, backfillNode{id: s.user.id.Node, part: partTree})
	s.jumpTo = last
}
