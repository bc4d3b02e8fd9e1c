package replica

import (
	"errors"
	"fmt"
	"time"

	"siot/transport"
)

// pushState is the sending half of a link session as a pure state
// machine: it decides what to read from the feed, what to push and when to
// go back, and is told what was read and what was acknowledged. The
// goroutine that owns it does the reading and the sending.
//
// Positions are change numbers of the local feed (store.Feed). The
// receiver holds everything through acked; pushes in flight cover
// (acked, lastThrough]; the feed has been read, and filtered, through
// cursor (>= lastThrough).
type pushState struct {
	window     int    // pushes in flight at most
	emptyEvery uint64 // send an empty push once this many changes were filtered out

	acked       uint64
	cursor      uint64
	lastThrough uint64 // Through of the last push sent: the next push's From
	lastIdle    bool   // the last push sent said Idle
	inflight    []flight
}

// flight is one push awaiting its Ack.
type flight struct {
	through uint64
	points  int
	sentAt  time.Time
}

func newPushState(have uint64, window int, emptyEvery uint64) *pushState {
	return &pushState{window: window, emptyEvery: emptyEvery, acked: have, cursor: have, lastThrough: have}
}

// wantRead reports whether the owner should read the feed after cursor:
// there is something past it and the window has room.
func (s *pushState) wantRead(lastSeq uint64) bool {
	return s.cursor < lastSeq && len(s.inflight) < s.window
}

// read records a feed read: the changes after cursor through through were
// scanned, and points of them (already encoded into a batch of that many
// points) are for the receiver; idle says the scan reached the end of the
// feed. It returns the push to send, or false when none is due (nothing
// passed the filter and the receiver need not hear about it yet).
func (s *pushState) read(through uint64, points int, idle bool, now time.Time) (transport.Push, bool) {
	if through > s.cursor {
		s.cursor = through
	}
	due := points > 0 ||
		(idle && !s.lastIdle) || // tell the receiver we are caught up
		s.cursor-s.lastThrough >= s.emptyEvery // move its mark past filtered changes
	if !due {
		return transport.Push{}, false
	}
	p := transport.Push{From: s.lastThrough, Through: s.cursor, Idle: idle}
	s.lastThrough, s.lastIdle = s.cursor, idle
	s.inflight = append(s.inflight, flight{through: p.Through, points: points, sentAt: now})
	return p, true
}

// errGap is the ack of a push that did not join the receiver's position;
// the state has gone back to it.
var errGap = errors.New("receiver is behind the push; resending from its position")

// ack records an Ack. A Gap ack of a push in flight resets the state to the
// receiver's position and returns errGap (not fatal: keep going). An Ack
// that holds less than was acknowledged before, or that answers no push in
// flight, is ignored.
func (s *pushState) ack(a transport.Ack, forThrough uint64) error {
	i := -1
	for j := range s.inflight {
		if s.inflight[j].through == forThrough {
			i = j
			break
		}
	}
	if i < 0 {
		return nil // stale: answers a push from before a reset
	}
	if a.Gap {
		if a.Have > s.lastThrough {
			return fmt.Errorf("receiver claims change %d, beyond %d sent", a.Have, s.lastThrough)
		}
		s.acked, s.cursor, s.lastThrough, s.lastIdle = a.Have, a.Have, a.Have, false
		s.inflight = s.inflight[:0]
		return errGap
	}
	if a.Have > s.acked {
		s.acked = a.Have
	}
	s.inflight = s.inflight[i+1:]
	return nil
}

// overdue reports whether the oldest push in flight has waited longer than
// timeout.
func (s *pushState) overdue(now time.Time, timeout time.Duration) bool {
	return len(s.inflight) > 0 && now.Sub(s.inflight[0].sentAt) > timeout
}

// idle reports whether everything through lastSeq was read and every push
// acknowledged.
func (s *pushState) idle(lastSeq uint64) bool {
	return s.cursor >= lastSeq && len(s.inflight) == 0
}

// pending estimates what the receiver still lacks: points in flight plus
// changes not yet read (some of which the filter will drop).
func (s *pushState) pending(lastSeq uint64) uint64 {
	var n uint64
	for _, f := range s.inflight {
		n += uint64(f.points)
	}
	if lastSeq > s.cursor {
		n += lastSeq - s.cursor
	}
	return n
}
