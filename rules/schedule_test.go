package rules

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// testSeed returns the seed of a randomized test, and logs it: SIOT_SEED
// when set, or the clock. A failure is repeated by setting SIOT_SEED to
// the logged seed.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("SIOT_SEED"); v != "" {
		var err error
		if s, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SIOT_SEED: %v", err)
		}
	}
	t.Logf("seed %d (set SIOT_SEED to repeat)", s)
	return s
}

// mustSchedule parses the words after "schedule".
func mustSchedule(t *testing.T, s string) *Schedule {
	t.Helper()
	c, err := ParseCondition("schedule " + s)
	if err != nil {
		t.Fatal(err)
	}
	return &c.Sched
}

// at is a wall time in zone (UTC when empty), "2006-01-02 15:04" or with
// seconds; its weekday, when given, is checked so that a table says what
// it means.
func at(t *testing.T, zone, s string, day ...time.Weekday) time.Time {
	t.Helper()
	loc := time.UTC
	if zone != "" {
		var err error
		if loc, err = time.LoadLocation(zone); err != nil {
			t.Fatal(err)
		}
	}
	layout := "2006-01-02 15:04"
	if len(s) > len(layout) {
		layout += ":05"
	}
	tm, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		t.Fatal(err)
	}
	if len(day) > 0 && tm.Weekday() != day[0] {
		t.Fatalf("%s is a %v, not a %v", s, tm.Weekday(), day[0])
	}
	return tm
}

func TestScheduleIn(t *testing.T) {
	for _, tc := range []struct {
		sched, zone, at string
		day             time.Weekday
		in              bool
	}{
		{"Mon-Fri 08:00-18:00", "", "2024-03-04 07:59", time.Monday, false},
		{"Mon-Fri 08:00-18:00", "", "2024-03-04 08:00", time.Monday, true},
		{"Mon-Fri 08:00-18:00", "", "2024-03-04 17:59:59", time.Monday, true},
		{"Mon-Fri 08:00-18:00", "", "2024-03-04 18:00", time.Monday, false},
		{"Mon-Fri 08:00-18:00", "", "2024-03-08 12:00", time.Friday, true},
		{"Mon-Fri 08:00-18:00", "", "2024-03-09 12:00", time.Saturday, false},
		{"Mon-Fri 08:00-18:00", "", "2024-03-10 12:00", time.Sunday, false},
		{"Fri-Mon 12:00-13:00", "", "2024-03-10 12:30", time.Sunday, true},
		{"Fri-Mon 12:00-13:00", "", "2024-03-05 12:30", time.Tuesday, false},
		// Over midnight: the range belongs to the day it starts on.
		{"Fri 22:00-06:00", "", "2024-03-08 21:59", time.Friday, false},
		{"Fri 22:00-06:00", "", "2024-03-08 22:00", time.Friday, true},
		{"Fri 22:00-06:00", "", "2024-03-08 23:00", time.Friday, true},
		{"Fri 22:00-06:00", "", "2024-03-09 00:00", time.Saturday, true},
		{"Fri 22:00-06:00", "", "2024-03-09 03:00", time.Saturday, true},
		{"Fri 22:00-06:00", "", "2024-03-09 05:59", time.Saturday, true},
		{"Fri 22:00-06:00", "", "2024-03-09 06:00", time.Saturday, false},
		{"Fri 22:00-06:00", "", "2024-03-09 23:00", time.Saturday, false},
		{"Fri 22:00-06:00", "", "2024-03-08 03:00", time.Friday, false}, // Thursday's night
		{"Fri 22:00-06:00", "", "2024-03-07 23:00", time.Thursday, false},
		{"Thu,Fri 22:00-06:00", "", "2024-03-08 03:00", time.Friday, true},
		{"Sat 23:59-00:01", "", "2024-03-09 23:59:30", time.Saturday, true},
		{"Sat 23:59-00:01", "", "2024-03-10 00:00:59", time.Sunday, true},
		{"Sat 23:59-00:01", "", "2024-03-10 00:01", time.Sunday, false},
		// Start == End: the whole of each day.
		{"Sun 08:00-08:00", "", "2024-03-10 00:00", time.Sunday, true},
		{"Sun 08:00-08:00", "", "2024-03-10 07:59", time.Sunday, true},
		{"Sun 08:00-08:00", "", "2024-03-10 23:59:59", time.Sunday, true},
		{"Sun 08:00-08:00", "", "2024-03-11 00:00", time.Monday, false},
		{"Sun 08:00-08:00", "", "2024-03-09 23:59", time.Saturday, false},
		{"daily 00:00-24:00", "", "2024-03-09 23:59", time.Saturday, true},
		{"Sat 10:00-24:00", "", "2024-03-09 23:59", time.Saturday, true},
		{"Sat 10:00-24:00", "", "2024-03-10 00:00", time.Sunday, false},
		// In the schedule's zone, whatever the instant's.
		{"daily 08:00-09:00 Europe/Berlin", "", "2024-01-15 07:30", time.Monday, true},  // 08:30 CET
		{"daily 08:00-09:00 Europe/Berlin", "", "2024-07-15 07:30", time.Monday, false}, // 09:30 CEST
		{"daily 08:00-09:00 Europe/Berlin", "", "2024-07-15 06:30", time.Monday, true},  // 08:30 CEST
		{"daily 08:00-09:00 Europe/Berlin", "America/New_York", "2024-07-15 02:30", time.Monday, true},
		{"Mon 23:00-01:00 Asia/Kathmandu", "", "2024-03-04 17:15", time.Monday, true},  // 23:00 NPT
		{"Mon 23:00-01:00 Asia/Kathmandu", "", "2024-03-04 17:14", time.Monday, false}, // 22:59 NPT
		{"Mon 23:00-01:00 Asia/Kathmandu", "", "2024-03-04 19:14", time.Monday, true},  // Tue 00:59 NPT
		{"Mon 23:00-01:00 Asia/Kathmandu", "", "2024-03-04 19:15", time.Monday, false}, // Tue 01:00 NPT
	} {
		s := mustSchedule(t, tc.sched)
		tm := at(t, tc.zone, tc.at, tc.day)
		if got := s.In(tm); got != tc.in {
			t.Errorf("%q.In(%s %s) = %t, want %t", tc.sched, tc.at, tc.zone, got, tc.in)
		}
	}
	var none Schedule // no zone: never
	if none.In(time.Now()) || !none.Next(time.Now()).IsZero() {
		t.Error("a zero Schedule is in, or changes")
	}
}

func TestScheduleNext(t *testing.T) {
	for _, tc := range []struct {
		sched, from, want string // want "": never
	}{
		{"Mon-Fri 08:00-18:00", "2024-03-04 10:00", "2024-03-04 18:00"},
		{"Mon-Fri 08:00-18:00", "2024-03-04 08:00", "2024-03-04 18:00"}, // after t, not at it
		{"Mon-Fri 08:00-18:00", "2024-03-04 07:59:59", "2024-03-04 08:00"},
		{"Mon-Fri 08:00-18:00", "2024-03-08 18:00", "2024-03-11 08:00"},
		{"Mon-Fri 08:00-18:00", "2024-03-09 12:00", "2024-03-11 08:00"},
		{"Mon 08:00-18:00", "2024-03-04 18:00", "2024-03-11 08:00"},
		{"Fri 22:00-06:00", "2024-03-08 12:00", "2024-03-08 22:00"},
		{"Fri 22:00-06:00", "2024-03-08 23:00", "2024-03-09 06:00"},
		{"Fri 22:00-06:00", "2024-03-09 03:00", "2024-03-09 06:00"},
		{"Fri 22:00-06:00", "2024-03-09 06:00", "2024-03-15 22:00"},
		{"Fri,Sat 22:00-06:00", "2024-03-09 03:00", "2024-03-09 06:00"},
		{"daily 22:00-06:00", "2024-03-09 03:00", "2024-03-09 06:00"},
		{"Sun 08:00-08:00", "2024-03-09 12:00", "2024-03-10 00:00"},
		{"Sun 08:00-08:00", "2024-03-10 12:00", "2024-03-11 00:00"},
		{"Sat,Sun 00:00-00:00", "2024-03-09 12:00", "2024-03-11 00:00"},
		{"Sat 10:00-24:00", "2024-03-09 12:00", "2024-03-10 00:00"},
		{"daily 00:00-00:00", "2024-03-09 12:00", ""},
		{"daily 13:00-13:00", "2024-03-09 12:00", ""},
		{"daily 00:00-24:00", "2024-03-09 12:00", ""},
		{"Sun-Sat 00:00-24:00", "2024-03-09 12:00", ""},
	} {
		s := mustSchedule(t, tc.sched)
		from := at(t, "", tc.from)
		got := s.Next(from)
		var want time.Time
		if tc.want != "" {
			want = at(t, "", tc.want)
		}
		if !got.Equal(want) {
			t.Errorf("%q.Next(%s) = %v, want %v", tc.sched, tc.from, got, want)
		}
		if !got.IsZero() {
			checkBoundary(t, s, from, got)
		}
	}
}

// checkBoundary checks that In is the same from t until just before n,
// and changes at n.
func checkBoundary(t *testing.T, s *Schedule, from, n time.Time) {
	t.Helper()
	if s.In(n) == s.In(from) || s.In(n.Add(-time.Nanosecond)) != s.In(from) {
		t.Errorf("%v: In(%v) = %t, In just before = %t, In(%v) = %t: %v is no boundary",
			s, from, s.In(from), s.In(n.Add(-time.Nanosecond)), n, s.In(n), n)
	}
}

// TestScheduleDST walks the two daylight saving changes of 2024 in
// Europe/Berlin (the last Sundays of March and October, at 01:00 UTC)
// boundary by boundary: each Next is a real instant where In flips.
func TestScheduleDST(t *testing.T) {
	for _, tc := range []struct {
		name, sched, from string
		want              []string // UTC, in order
	}{
		// 02:30 does not exist on 31 March: the range starts when the
		// clock jumps to 03:00 CEST.
		{"spring, start skipped", "daily 02:30-05:00 Europe/Berlin", "2024-03-30 12:00",
			[]string{"2024-03-31 01:00", "2024-03-31 03:00", "2024-04-01 00:30"}},
		{"spring, in over the jump", "daily 01:30-04:00 Europe/Berlin", "2024-03-30 12:00",
			[]string{"2024-03-31 00:30", "2024-03-31 02:00", "2024-03-31 23:30"}},
		{"spring, end skipped", "daily 01:00-02:30 Europe/Berlin", "2024-03-30 12:00",
			[]string{"2024-03-31 00:00", "2024-03-31 01:00", "2024-03-31 23:00"}},
		{"spring, all of it skipped", "Sun 02:00-03:00 Europe/Berlin", "2024-03-30 12:00",
			[]string{"2024-04-07 00:00", "2024-04-07 01:00"}},
		{"spring, office hours", "Mon-Fri 08:00-18:00 Europe/Berlin", "2024-03-29 12:00",
			[]string{"2024-03-29 17:00", "2024-04-01 06:00", "2024-04-01 16:00"}},
		{"spring, all day", "Sun 00:00-00:00 Europe/Berlin", "2024-03-30 12:00",
			[]string{"2024-03-30 23:00", "2024-03-31 22:00"}},
		// 02:00-03:00 happens twice on 27 October: the wall clock
		// reads 02:30 at 00:30 and at 01:30 UTC, and 02:00 again at
		// 01:00 UTC, before the range starts.
		{"autumn, start repeated", "daily 02:30-05:00 Europe/Berlin", "2024-10-26 12:00",
			[]string{"2024-10-27 00:30", "2024-10-27 01:00", "2024-10-27 01:30", "2024-10-27 04:00", "2024-10-28 01:30"}},
		{"autumn, end repeated", "daily 01:00-02:30 Europe/Berlin", "2024-10-26 12:00",
			[]string{"2024-10-26 23:00", "2024-10-27 00:30", "2024-10-27 01:00", "2024-10-27 01:30", "2024-10-28 00:00"}},
		{"autumn, over the hour", "Sun 01:30-04:00 Europe/Berlin", "2024-10-26 12:00",
			[]string{"2024-10-26 23:30", "2024-10-27 03:00", "2024-11-03 00:30"}},
		{"autumn, all day", "Sun 00:00-00:00 Europe/Berlin", "2024-10-26 12:00",
			[]string{"2024-10-26 22:00", "2024-10-27 23:00"}},
		{"autumn, overnight", "Sat 22:00-06:00 Europe/Berlin", "2024-10-26 12:00",
			[]string{"2024-10-26 20:00", "2024-10-27 05:00", "2024-11-02 21:00"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSchedule(t, tc.sched)
			from := at(t, "", tc.from)
			for _, w := range tc.want {
				want := at(t, "", w)
				got := s.Next(from)
				if !got.Equal(want) {
					t.Fatalf("%q.Next(%v) = %v, want %v", tc.sched, from, got.UTC(), want)
				}
				checkBoundary(t, s, from, got)
				from = got
			}
		})
	}
}

// scheduleTimeline is In of a schedule at each minute from a start: In
// holds one value through each minute in the zones below (their offsets
// are whole minutes).
type scheduleTimeline struct {
	start time.Time
	in    []bool
}

func newTimeline(s *Schedule, start time.Time, d time.Duration) scheduleTimeline {
	tl := scheduleTimeline{start: start, in: make([]bool, int(d/time.Minute))}
	for i := range tl.in {
		tl.in[i] = s.In(start.Add(time.Duration(i) * time.Minute))
	}
	return tl
}

// next is the first minute after t at which In differs from In(t),
// scanning at most 15 days; zero when there is none.
func (tl scheduleTimeline) next(t time.Time) time.Time {
	i := int(t.Sub(tl.start) / time.Minute)
	now := tl.in[i]
	for j := i + 1; j < len(tl.in) && j <= i+15*24*60; j++ {
		if tl.in[j] != now {
			return tl.start.Add(time.Duration(j) * time.Minute)
		}
	}
	return time.Time{}
}

// TestScheduleNextBruteForce checks Next against a minute-by-minute scan
// from random times over fifteen days (a weekly range that a daylight
// saving change skips comes back after more than a week), for schedules of every shape in zones
// with and without daylight saving (Lord Howe moves by 30 minutes), the
// draws packed around the changes of 2024.
func TestScheduleNextBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 0x5c4ed))
	scheds := []string{
		"Mon-Fri 08:00-18:00",
		"Fri 22:00-06:00",
		"Sun 08:00-08:00",
		"daily 00:00-00:00",
		"Sat-Mon 23:59-00:01",
		"Wed 00:00-24:00",
		"daily 02:30-05:00 Europe/Berlin",
		"Sun 02:00-03:00 Europe/Berlin",
		"Sat 23:00-02:30 Europe/Berlin",
		"Sun 02:15-02:15 Europe/Berlin",
		"Mon,Wed 12:00-12:00 America/New_York",
		"daily 01:30-02:15 America/New_York",
		"Fri-Sun 01:45-02:15 Australia/Lord_Howe",
		"Tue 23:00-01:00 Asia/Kathmandu",
	}
	windows := []struct{ from, to string }{
		{"2024-03-05 00:00", "2024-03-15 00:00"}, // New York's spring change
		{"2024-03-25 00:00", "2024-04-10 00:00"}, // Berlin's and Lord Howe's
		{"2024-10-01 00:00", "2024-10-10 00:00"}, // Lord Howe's spring
		{"2024-10-20 00:00", "2024-11-05 00:00"}, // Berlin's and New York's autumn
	}
	const draws = 60
	for _, sc := range scheds {
		s := mustSchedule(t, sc)
		for _, w := range windows {
			from, to := at(t, "", w.from), at(t, "", w.to)
			tl := newTimeline(s, from, to.Sub(from)+16*24*time.Hour)
			for range draws {
				tm := from.Add(time.Duration(rng.Int64N(int64(to.Sub(from)))))
				if rng.IntN(4) == 0 {
					tm = tm.Truncate(time.Minute) // on a minute, maybe a boundary
				}
				got, want := s.Next(tm), tl.next(tm)
				if !got.Equal(want) {
					t.Fatalf("%q.Next(%v) = %v, want %v (the scan)", sc, tm, got.UTC(), want)
				}
			}
		}
	}
}
