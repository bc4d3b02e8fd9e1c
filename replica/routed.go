package replica

import (
	"context"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// A link whose scope is a subtree (an accepted edge's) reads no feed of
// its own: the router queues the changes in its subtree, and what came
// before the route existed, or was lost to a gap or an overflow, is read
// from the store by one of two catch-ups:
//   - a short range of the feed, scanned (scanTo);
//   - or the subtree itself, each register written in the range: the
//     cost of a new edge's first sync, or of a resume after a long
//     outage, is the size of the edge's subtree, not of the cloud's feed.

// scanCatchUp is the longest range of the feed a catch-up scans; past it
// the catch-up reads the subtree.
const scanCatchUp = 10_000

// catchUp arranges for the changes in scope numbered after from through
// to to be sent before the route's queue.
func (s *session) catchUp(from, to uint64) {
	if to <= from {
		return
	}
	if from > 0 && to-from <= scanCatchUp {
		s.scanTo = max(s.scanTo, to)
		return
	}
	s.backfill = append(s.backfill, backfillNode{id: s.scope.root, after: from, upto: to, expand: true})
	s.floor = max(s.floor, to)
}

// routedLast is the position a routed sender has work up to: the end of a
// catch-up, or past the queued changes.
func (s *session) routedLast(cursor uint64) uint64 {
	last := max(s.scanTo, s.floor, cursor)
	if n := s.route.queued(); n > 0 {
		last = max(last, cursor+uint64(n))
	}
	return last
}

// sendable applies the checks every routed change passes: the session's
// edge watch, the arrival link, and for edge points the parent's place in
// the scope. It queues the subtree below an edge that entered the scope.
func (s *session) sendable(c *store.Change) (bool, error) {
	p := &c.Point
	if p.Type == crdt.TypeEdge && s.onEdge != nil {
		if err := s.onEdge(p); err != nil {
			return false, err
		}
	}
	if c.Source == s.remote {
		return false, nil
	}
	if p.IsEdge() {
		if !s.r.router.holds(s.scope.root, p.Parent) {
			return false, nil
		}
		if p.Type == crdt.TypeEdge && !p.Tombstone {
			// p.Node may just have entered the scope (created, moved or
			// undeleted under it): its subtree's older points were not
			// routed here, so send it whole. Duplicates merge as stale.
			s.backfill = append(s.backfill, backfillNode{id: p.Node, expand: true})
		}
	}
	return true, nil
}

// collect appends c's point to pts when it is sendable, adding its cost
// to size.
func (s *session) collect(c *store.Change, pts *[]crdt.Point, size *int) error {
	ok, err := s.sendable(c)
	if err != nil || !ok {
		return err
	}
	*pts = append(*pts, c.Point)
	*size += pointCost(&c.Point)
	return nil
}

// readRouted is readBatch for a routed sender: the catch-up scan first,
// then the queue.
func (s *session) readRouted(ctx context.Context, cursor uint64, budget int) (pts []crdt.Point, size int, through uint64, idle bool, err error) {
	cfg := &s.r.cfg
	if cursor < s.scanTo {
		return s.scanRange(ctx, cursor, s.scanTo, budget)
	}
	pos := s.r.router.position.Load()
	seqs, overflow := s.route.peek(cfg.MaxPushPoints)
	if overflow {
		s.catchUp(cursor, s.r.router.restart(s.route))
		return nil, 0, cursor, false, nil
	}
	fresh := seqs[:0:0]
	for _, q := range seqs {
		if q > cursor {
			fresh = append(fresh, q)
		}
	}
	var stoppedAt uint64
	err = s.r.st.FeedAt(fresh, func(c *store.Change) error {
		if len(pts) >= cfg.MaxPushPoints || size >= budget {
			stoppedAt = c.Seq
			return store.ErrStop
		}
		return s.collect(c, &pts, &size)
	})
	if err != nil {
		return nil, 0, cursor, false, err
	}
	through = max(cursor, s.floor)
	if stoppedAt > 0 {
		used := 0
		for used < len(seqs) && seqs[used] < stoppedAt {
			used++
		}
		s.route.drop(used)
		return pts, size, max(through, stoppedAt-1), false, nil
	}
	if len(seqs) > 0 {
		through = max(through, seqs[len(seqs)-1])
	}
	if s.route.drop(len(seqs)) > 0 {
		return pts, size, through, false, nil
	}
	return pts, size, max(through, pos), true, nil
}

// scanRange reads the feed after cursor through to for the scope.
func (s *session) scanRange(ctx context.Context, cursor, to uint64, budget int) (pts []crdt.Point, size int, through uint64, idle bool, err error) {
	cfg := &s.r.cfg
	through, done := cursor, true
	scanned := 0
	keep := func(c *store.Change) (bool, error) {
		if c.Seq > to {
			return false, store.ErrStop
		}
		if len(pts) >= cfg.MaxPushPoints || size >= budget || scanned%1024 == 1023 && ctx.Err() != nil {
			done = false
			return false, store.ErrStop
		}
		scanned++
		through = c.Seq
		p := &c.Point
		target := p.Node
		if p.IsEdge() {
			target = p.Parent
			if p.Type == crdt.TypeEdge && p.Node == s.scope.root {
				return true, nil // the root's own edge: sendable decides
			}
		}
		return s.r.router.holds(s.scope.root, target), nil
	}
	err = s.r.st.FeedWhere(cursor, keep, func(c *store.Change) error {
		return s.collect(c, &pts, &size)
	})
	if done {
		through = to
	}
	return pts, size, through, false, err
}

// backfillNode is a node whose registers a backfill sends: those written
// after change after and through change upto (0: any), or all of them
// when the edge from via (the parent it was reached from) was written
// after after: it entered the scope since. expand says its children are
// still to be queued; edgeOnly that only its edge from via is sent (the
// edge is not active: a deleted node's tombstone).
type backfillNode struct {
	id       uuid.UUID
	via      uuid.UUID
	after    uint64
	upto     uint64
	expand   bool
	edgeOnly bool
	entered  bool // the check against via's edge was done
	part     part // which of the registers: all, or the tree's or the rest (firstSync)
}

// part selects registers of a backfill: a user's first sync sends the
// tree's first (edges, types and descriptions of every node, breadth
// first), then the other points.
type part uint8

const (
	partAll part = iota
	partTree
	partRest
)

// takes reports whether a backfill of part pt sends p.
func (pt part) takes(p *crdt.Point) bool {
	if pt == partAll {
		return true
	}
	tree := p.IsEdge() || p.Type == crdt.TypeNodeType || p.Type == TypeDescription
	return tree == (pt == partTree)
}

// readBackfill reads up to budget bytes of the backfill: the registers of
// the queued nodes and of their descendants, in the remote's scope.
func (s *session) readBackfill(budget int) (pts []crdt.Point, size int, err error) {
	if s.user != nil {
		s.user.reset() // decide on the tree as it is now
	}
	for len(s.backfill) > 0 && size < budget {
		b := &s.backfill[0]
		if b.via != uuid.Nil && b.after > 0 && !b.entered {
			b.entered = true
			seq, ok, err := s.r.st.EdgeSeq(b.id, b.via)
			if err != nil {
				return nil, 0, err
			}
			if ok && seq > b.after {
				b.after = 0
			}
		}
		if b.expand {
			b.expand = false
			if s.backfillSeen == nil {
				s.backfillSeen = make(map[uuid.UUID]bool)
			}
			s.backfillSeen[b.id] = true
			id, after, upto, pt := b.id, b.after, b.upto, b.part
			err := s.r.st.Children(id, func(c store.Child) error {
				if c.Active && s.backfillSeen[c.ID] {
					return nil
				}
				if c.Active {
					s.backfillSeen[c.ID] = true
				}
				s.backfill = append(s.backfill, backfillNode{id: c.ID, via: id, after: after, upto: upto,
					expand: c.Active, edgeOnly: !c.Active, part: pt})
				return nil
			})
			if err != nil {
				return nil, 0, err
			}
			b = &s.backfill[0] // the append may have moved it
		}
		done := true
		err := s.r.st.ScanNodeSince(b.id, s.backfillAt, b.after, func(c *store.Change) error {
			if size >= budget {
				done = false
				return store.ErrStop
			}
			p := &c.Point
			r := p.Register()
			s.backfillAt = &r
			if b.upto > 0 && c.Seq > b.upto || c.Source == s.remote {
				return nil
			}
			if b.edgeOnly && p.Parent != b.via || !b.part.takes(p) {
				return nil
			}
			if s.user != nil {
				ok, err := s.user.readable(p)
				if err != nil || !ok {
					return err
				}
			} else if p.IsEdge() && !s.r.router.holds(s.scope.root, p.Parent) {
				return nil
			}
			pts = append(pts, *p)
			size += pointCost(p)
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
		if done {
			s.backfill, s.backfillAt = s.backfill[1:], nil
			if len(s.backfill) == 0 {
				s.backfillSeen = nil
				s.backfill, s.backfillNext = s.backfillNext, nil
			}
		}
	}
	return pts, size, nil
}
