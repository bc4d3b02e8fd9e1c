package replica

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/siot-io/siot/transport"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestPushStateWindowAndAcks(t *testing.T) {
	s := newPushState(10, 2, 1000, 1<<20)
	if s.wantRead(10) {
		t.Fatal("wants to read with nothing new")
	}
	if !s.wantRead(50) {
		t.Fatal("does not read new changes")
	}
	p1, ok := s.read(20, 5, 100, false, t0)
	if !ok || p1.From != 10 || p1.Through != 20 || p1.Idle {
		t.Fatalf("first push %+v %v", p1, ok)
	}
	p2, ok := s.read(30, 5, 100, false, t0)
	if !ok || p2.From != 20 || p2.Through != 30 {
		t.Fatalf("second push %+v", p2)
	}
	if s.wantRead(50) {
		t.Fatal("reads beyond a window of 2")
	}
	if got := s.pending(50); got != 10+20 {
		t.Fatalf("pending = %d, want 30", got)
	}
	// A stale ack (no such push in flight) changes nothing.
	if err := s.ack(transport.Ack{Have: 99}, 25, t0); err != nil || s.acked != 10 {
		t.Fatalf("stale ack: %v, acked %d", err, s.acked)
	}
	if err := s.ack(transport.Ack{Have: 20}, 20, t0.Add(time.Millisecond)); err != nil || s.acked != 20 || len(s.inflight) != 1 {
		t.Fatalf("ack: %v acked %d inflight %d", err, s.acked, len(s.inflight))
	}
	if !s.wantRead(50) {
		t.Fatal("window freed but no read")
	}
	if err := s.ack(transport.Ack{Have: 30}, 30, t0.Add(2*time.Millisecond)); err != nil || s.acked != 30 {
		t.Fatal(err)
	}
	if s.idle(30) != true || s.idle(31) {
		t.Fatal("idle wrong")
	}
}

func TestPushStateFilteredRangesAndIdle(t *testing.T) {
	s := newPushState(0, 4, 100, 1<<20)
	// Nothing passed the filter: no push until 100 changes were skipped.
	if _, ok := s.read(50, 0, 0, false, t0); ok {
		t.Fatal("empty push sent for 50 skipped changes")
	}
	p, ok := s.read(120, 0, 0, false, t0)
	if !ok || p.From != 0 || p.Through != 120 {
		t.Fatalf("empty push to move the mark: %+v %v", p, ok)
	}
	// Reaching the end says idle once.
	p, ok = s.read(130, 0, 0, true, t0)
	if !ok || !p.Idle || p.From != 120 || p.Through != 130 {
		t.Fatalf("idle push %+v %v", p, ok)
	}
	if _, ok := s.read(131, 0, 0, true, t0); ok {
		t.Fatal("idle said twice")
	}
	// Points after idle are pushed and clear it.
	p, ok = s.read(140, 3, 60, false, t0)
	if !ok || p.Idle || p.From != 130 || p.Through != 140 {
		t.Fatalf("push after idle %+v", p)
	}
}

func TestPushStateGapGoesBack(t *testing.T) {
	s := newPushState(100, 4, 1000, 1<<20)
	s.read(110, 1, 20, false, t0)
	s.read(120, 1, 20, false, t0)
	err := s.ack(transport.Ack{Have: 90, Gap: true}, 110, t0)
	if !errors.Is(err, errGap) || s.cursor != 90 || s.lastThrough != 90 || len(s.inflight) != 0 {
		t.Fatalf("gap: %v cursor %d last %d inflight %d", err, s.cursor, s.lastThrough, len(s.inflight))
	}
	// The ack of the push sent before the reset is stale now.
	if err := s.ack(transport.Ack{Have: 90, Gap: true}, 120, t0); err != nil || s.cursor != 90 {
		t.Fatalf("stale gap: %v", err)
	}
	// A receiver claiming more than was sent is a protocol error.
	s.read(95, 1, 20, false, t0)
	if err := s.ack(transport.Ack{Have: 500, Gap: true}, 95, t0); err == nil || errors.Is(err, errGap) {
		t.Fatalf("impossible gap accepted: %v", err)
	}
}

func TestPushStateAdaptsToLinkSpeed(t *testing.T) {
	s := newPushState(0, 4, 1000, 512<<10)
	if s.budget() != initialPushBytes {
		t.Fatalf("initial budget %d", s.budget())
	}
	// A 100 kbit/s link: 12,500 bytes/s.
	now := t0
	for i := range 10 {
		b := s.budget()
		s.read(uint64(i+1), 100, b, false, now)
		now = now.Add(time.Duration(float64(b) / 12500 * float64(time.Second)))
		if err := s.ack(transport.Ack{Have: uint64(i + 1)}, uint64(i+1), now); err != nil {
			t.Fatal(err)
		}
	}
	if b := s.budget(); b < 20_000 || b > 30_000 {
		t.Fatalf("budget on a 100 kbit/s link = %d, want about 25,000 (2 s)", b)
	}
	// A fast link grows it to the cap.
	for i := 10; i < 30; i++ {
		b := s.budget()
		s.read(uint64(i+1), 100, b, false, now)
		now = now.Add(time.Duration(float64(b) / 100e6 * float64(time.Second)))
		if err := s.ack(transport.Ack{Have: uint64(i + 1)}, uint64(i+1), now); err != nil {
			t.Fatal(err)
		}
	}
	if s.budget() != 512<<10 {
		t.Fatalf("budget on a fast link = %d, want the cap", s.budget())
	}
}

func TestPushStateOverdueMeansNoProgress(t *testing.T) {
	s := newPushState(0, 4, 1000, 1<<20)
	s.read(1, 1, 40_000, false, t0)
	s.read(2, 1, 40_000, false, t0)
	if s.overdue(t0.Add(20*time.Second), 30*time.Second) {
		t.Fatal("overdue early")
	}
	// The first is acked at 25 s: the second's clock starts then.
	if err := s.ack(transport.Ack{Have: 1}, 1, t0.Add(25*time.Second)); err != nil {
		t.Fatal(err)
	}
	if s.overdue(t0.Add(50*time.Second), 30*time.Second) {
		t.Fatal("a slow but progressing link counted as dead")
	}
	if !s.overdue(t0.Add(56*time.Second), 30*time.Second) {
		t.Fatal("no progress for 31 s not overdue")
	}
}

// TestAckPrefixesAreDistinct: the sessions on one connection (an
// acceptor's, shared by all its links) each get acks of their own.
func TestAckPrefixesAreDistinct(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	inbox := n.rep.nc.NewInbox()
	inbox = inbox[:strings.LastIndexByte(inbox, '.')+1]
	seen := make(map[string]bool)
	for range 1000 {
		p := ackPrefix(n.rep.nc)
		if !strings.HasPrefix(p, inbox) || len(p) != len(inbox)+8 || strings.ContainsAny(p[len(inbox):], ".*> ") {
			t.Fatalf("ack prefix %q: want %q and 8 subject-safe characters", p, inbox)
		}
		if seen[p] {
			t.Fatalf("ack prefix %q given twice", p)
		}
		seen[p] = true
	}
}
