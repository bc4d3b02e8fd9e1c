package replica

import (
	"errors"
	"fmt"
	"time"

	"github.com/siot-io/siot/transport"
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
//
// Pushes adapt to the link: the state estimates the link's throughput from
// the acks (bytes of a push over the time it took, from when the link was
// free to carry it), and sizes pushes to about two seconds of it and the
// bytes in flight to about eight, so a cellular link at 100 kbit/s gets
// pushes of tens of kilobytes that are acknowledged well within the ack
// timeout, while loopback gets the largest pushes allowed.
type pushState struct {
	window     int    // pushes in flight at most
	emptyEvery uint64 // send an empty push once this many changes were filtered out
	maxBytes   int    // largest push

	rate      float64   // estimated link throughput, bytes/s; 0 until the first ack
	lastAckAt time.Time // when the last ack arrived (the link was free from then)

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
	bytes   int
	sentAt  time.Time
}

// Push sizing bounds.
const (
	minPushBytes     = 16 << 10 // smallest budget, whatever the link
	initialPushBytes = 64 << 10 // budget before the first ack
	pushSeconds      = 2.0      // a push carries about this much of the link's throughput
	flightSeconds    = 8.0      // bytes in flight: about this much
)

func newPushState(have uint64, window int, emptyEvery uint64, maxBytes int) *pushState {
	return &pushState{window: window, emptyEvery: emptyEvery, maxBytes: max(maxBytes, minPushBytes),
		acked: have, cursor: have, lastThrough: have}
}

// budget returns the size the next push should aim for.
func (s *pushState) budget() int {
	b := initialPushBytes
	if s.rate > 0 {
		b = int(s.rate * pushSeconds)
	}
	return min(max(b, minPushBytes), s.maxBytes)
}

func (s *pushState) inflightBytes() int {
	n := 0
	for _, f := range s.inflight {
		n += f.bytes
	}
	return n
}

// wantRead reports whether the owner should read the feed after cursor:
// there is something past it, and the window has room in pushes and bytes.
func (s *pushState) wantRead(lastSeq uint64) bool {
	return s.cursor < lastSeq && s.room()
}

// room reports whether the window has room for another push.
func (s *pushState) room() bool {
	if len(s.inflight) >= s.window {
		return false
	}
	if len(s.inflight) == 0 {
		return true
	}
	limit := 4 * initialPushBytes
	if s.rate > 0 {
		limit = int(s.rate * flightSeconds)
	}
	return s.inflightBytes()+s.budget() <= max(limit, s.budget())
}

// read records a feed read: the changes after cursor through through were
// scanned, and points of them (encoding to about bytes) are for the
// receiver; idle says the scan reached the end of the feed. It returns the
// push to send, or false when none is due (nothing passed the filter and
// the receiver need not hear about it yet).
func (s *pushState) read(through uint64, points, bytes int, idle bool, now time.Time) (transport.Push, bool) {
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
	s.inflight = append(s.inflight, flight{through: p.Through, points: points, bytes: bytes, sentAt: now})
	return p, true
}

// extra records a push of points that are not a range of the feed (a
// subtree that entered the receiver's scope): it covers no new position.
func (s *pushState) extra(points, bytes int, now time.Time) transport.Push {
	p := transport.Push{From: s.lastThrough, Through: s.lastThrough}
	s.lastIdle = false
	s.inflight = append(s.inflight, flight{through: p.Through, points: points, bytes: bytes, sentAt: now})
	return p
}

// errGap is the ack of a push that did not join the receiver's position;
// the state has gone back to it.
var errGap = errors.New("receiver is behind the push; resending from its position")

// ack records an Ack that arrived at now. A Gap ack of a push in flight
// resets the state to the receiver's position and returns errGap (not
// fatal: keep going). An Ack that answers no push in flight is ignored.
func (s *pushState) ack(a transport.Ack, forThrough uint64, now time.Time) error {
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
	// Throughput: the push's bytes over the time the link spent on it,
	// from when it was sent or the previous ack, whichever is later.
	f := s.inflight[i]
	if busy := now.Sub(later(f.sentAt, s.lastAckAt)).Seconds(); f.bytes >= minPushBytes/4 && busy > 0 {
		sample := float64(f.bytes) / busy
		if s.rate == 0 {
			s.rate = sample
		} else {
			s.rate = 0.7*s.rate + 0.3*sample
		}
	}
	s.lastAckAt = now
	s.inflight = s.inflight[i+1:]
	return nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// overdue reports whether the link made no progress for longer than
// timeout: the oldest push in flight was not acknowledged within timeout
// of its sending or of the previous ack, whichever is later.
func (s *pushState) overdue(now time.Time, timeout time.Duration) bool {
	return len(s.inflight) > 0 && now.Sub(later(s.inflight[0].sentAt, s.lastAckAt)) > timeout
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
