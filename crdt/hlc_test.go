package crdt

import (
	"errors"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// manualClock is a physical clock the test moves by hand.
type manualClock struct{ t time.Time }

func (m *manualClock) now() time.Time { return m.t }

func newTestClock(t testing.TB, start time.Time, maxOffset time.Duration) (*Clock, *manualClock) {
	t.Helper()
	m := &manualClock{t: start}
	c, err := NewClock(ClockConfig{Physical: m.now, MaxOffset: maxOffset})
	if err != nil {
		t.Fatal(err)
	}
	return c, m
}

func TestTimestampParts(t *testing.T) {
	ts := NewTimestamp(1700000000123, 7)
	if ts.Physical() != 1700000000123 || ts.Logical() != 7 {
		t.Fatalf("parts: %d %d", ts.Physical(), ts.Logical())
	}
	if got, err := ParseTimestamp(ts.String()); err != nil || got != ts {
		t.Fatalf("parse(%s) = %v, %v", ts, got, err)
	}
	if NewTimestamp(-5, 1) != 1 {
		t.Fatalf("negative physical time not clamped to 0")
	}
	if NewTimestamp(1<<60, 0).Physical() != MaxPhysical {
		t.Fatalf("physical time past the 48-bit range not clamped")
	}
	for _, bad := range []string{"", "-1", "+1", "01", "1.5", " 1", "18446744073709551616", "abc", "99999999999999999999999"} {
		if _, err := ParseTimestamp(bad); err == nil {
			t.Errorf("ParseTimestamp(%q) accepted", bad)
		}
	}
}

func TestClockNowFollowsPhysical(t *testing.T) {
	start := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	c, m := newTestClock(t, start, 0)
	a := c.Now()
	if a.Physical() != start.UnixMilli() || a.Logical() != 0 {
		t.Fatalf("first Now = %d/%d", a.Physical(), a.Logical())
	}
	b := c.Now()
	if b != a+1 {
		t.Fatalf("same millisecond: want logical increment, got %v after %v", b, a)
	}
	m.t = start.Add(-time.Hour) // the wall clock steps back
	if d := c.Now(); d <= b {
		t.Fatalf("clock went backwards with the wall clock: %v after %v", d, b)
	}
	m.t = start.Add(time.Second)
	if e := c.Now(); e.Physical() != start.Add(time.Second).UnixMilli() || e.Logical() != 0 {
		t.Fatalf("did not catch up with physical time: %d/%d", e.Physical(), e.Logical())
	}
}

func TestClockLogicalOverflowCarries(t *testing.T) {
	start := time.UnixMilli(1000)
	c, _ := newTestClock(t, start, 0)
	c.Observe(NewTimestamp(1000, 0xffff))
	got := c.Now()
	if got.Physical() != 1001 || got.Logical() != 0 {
		t.Fatalf("overflow: got %d/%d, want 1001/0", got.Physical(), got.Logical())
	}
	// At the very top of the range the clock saturates instead of wrapping.
	c.Observe(Timestamp(1<<64 - 1))
	if got := c.Now(); got != Timestamp(1<<64-1) {
		t.Fatalf("saturation: got %v", got)
	}
}

func TestClockUpdate(t *testing.T) {
	now := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	c, _ := newTestClock(t, now, time.Minute)
	remote := NewTimestamp(now.Add(30*time.Second).UnixMilli(), 5)
	got, err := c.Update(remote)
	if err != nil {
		t.Fatal(err)
	}
	if got != remote+1 {
		t.Fatalf("Update = %v, want remote+1 = %v", got, remote+1)
	}
	if n := c.Now(); n <= remote {
		t.Fatalf("Now after Update = %v, not after remote %v", n, remote)
	}

	before := c.Last()
	future := NewTimestamp(now.Add(2*time.Minute).UnixMilli(), 0)
	_, err = c.Update(future)
	var skew *SkewError
	if !errors.As(err, &skew) || !errors.Is(err, ErrClockSkew) {
		t.Fatalf("far-future remote: err = %v, want *SkewError", err)
	}
	if skew.Remote != future || skew.MaxOffset != time.Minute {
		t.Fatalf("SkewError fields: %+v", skew)
	}
	if c.Last() != before {
		t.Fatalf("a refused update moved the clock")
	}
	if err := c.Check(future); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("Check(future) = %v", err)
	}

	// Exactly at the limit: the last millisecond allowed, all but its final
	// logical value.
	limit := NewTimestamp(now.Add(time.Minute).UnixMilli(), 0xfffe)
	if _, err := c.Update(limit); err != nil {
		t.Fatalf("remote at the limit refused: %v", err)
	}
	if _, err := c.Update(limit + 1); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("remote one past the limit accepted")
	}
}

func TestClockFromThePastCatchesUp(t *testing.T) {
	// A device without a real-time clock boots in 1970.
	c, m := newTestClock(t, time.UnixMilli(5000), time.Minute)
	cloudTime := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	cloud := NewTimestamp(cloudTime.UnixMilli(), 3)
	if _, err := c.Update(cloud); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("uncorrected clock in 1970 accepted the present: %v", err)
	}
	// Its local writes still make progress.
	a := c.Now()
	m.t = m.t.Add(time.Millisecond)
	if b := c.Now(); b <= a {
		t.Fatalf("no progress: %v then %v", a, b)
	}
	// The link handshake learns the upstream's time and corrects the clock.
	c.SetCorrection(cloudTime.Sub(m.t))
	if c.Correction() != cloudTime.Sub(m.t) {
		t.Fatalf("Correction() = %v", c.Correction())
	}
	if got := c.Physical(); !got.Equal(cloudTime) {
		t.Fatalf("corrected physical = %v, want %v", got, cloudTime)
	}
	if _, err := c.Update(cloud); err != nil {
		t.Fatalf("a timestamp from the present refused by a clock in the past: %v", err)
	}
	if n := c.Now(); n <= cloud {
		t.Fatalf("local write after seeing the cloud is not newer: %v <= %v", n, cloud)
	}
	// Later writes carry the present, not 1970 plus a counter.
	m.t = m.t.Add(10 * time.Second)
	if n := c.Now(); n.Physical() != cloudTime.Add(10*time.Second).UnixMilli() {
		t.Fatalf("corrected Now = %v, want physical %d", n.Time(), cloudTime.Add(10*time.Second).UnixMilli())
	}
}

func TestNewClockValidates(t *testing.T) {
	if _, err := NewClock(ClockConfig{}); err == nil {
		t.Fatal("missing Physical accepted")
	}
	if _, err := NewClock(ClockConfig{Physical: time.Now, MaxOffset: -time.Second}); err == nil {
		t.Fatal("negative MaxOffset accepted")
	}
	c, err := NewClock(ClockConfig{Physical: time.Now})
	if err != nil || c.MaxOffset() != DefaultMaxOffset {
		t.Fatalf("default MaxOffset: %v %v", c.MaxOffset(), err)
	}
}

// TestClockProperties drives a clock through random physical steps (also
// backwards), local events and remote timestamps, and checks that every
// issued timestamp is greater than everything issued or accepted before,
// and that no accepted remote is more than MaxOffset ahead.
func TestClockProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		maxOffset := time.Duration(rapid.Int64Range(0, 120_000).Draw(t, "maxOffsetMs")) * time.Millisecond
		m := &manualClock{t: time.UnixMilli(rapid.Int64Range(0, 1<<47).Draw(t, "start"))}
		c, err := NewClock(ClockConfig{Physical: m.now, MaxOffset: maxOffset})
		if err != nil {
			t.Fatal(err)
		}
		offsetMs := c.MaxOffset().Milliseconds()
		var high Timestamp // greatest timestamp issued or accepted
		steps := rapid.IntRange(1, 200).Draw(t, "steps")
		for range steps {
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0:
				m.t = m.t.Add(time.Duration(rapid.Int64Range(-5000, 5000).Draw(t, "dt")) * time.Millisecond)
			case 1:
				ts := c.Now()
				if ts <= high {
					t.Fatalf("Now = %v not greater than %v", ts, high)
				}
				high = ts
			case 2:
				pt := NewTimestamp(m.t.UnixMilli(), 0)
				delta := rapid.Int64Range(-200_000, 200_000).Draw(t, "remoteDelta")
				remote := NewTimestamp(pt.Physical()+delta, uint16(rapid.Uint32Range(0, 0xffff).Draw(t, "remoteLogical")))
				if remote == 0 {
					continue
				}
				ts, err := c.Update(remote)
				if err != nil {
					if !errors.Is(err, ErrClockSkew) {
						t.Fatalf("unexpected error %v", err)
					}
					if remote.Physical() <= pt.Physical()+offsetMs && remote.Logical() < 0xffff {
						t.Fatalf("remote %v within the offset was refused", remote)
					}
					continue
				}
				if remote.Physical() > pt.Physical()+offsetMs {
					t.Fatalf("accepted remote %v is more than %v ahead of physical %d", remote, maxOffset, pt.Physical())
				}
				if ts <= high || ts <= remote {
					t.Fatalf("Update = %v not greater than %v and remote %v", ts, high, remote)
				}
				high = ts
			case 3:
				if c.Last() != high && high != 0 {
					t.Fatalf("Last = %v, want %v", c.Last(), high)
				}
			}
		}
	})
}
