package rules

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/siot-io/siot/crdt"
)

// t0 is the time the evaluation tests count from.
var t0 = time.Date(2024, 3, 4, 12, 0, 0, 0, time.UTC)

// pointAt is a point written at t0+ago*(-1).
func pointAt(value float64, text string, ago time.Duration) *crdt.Point {
	return &crdt.Point{Type: "temp", Key: "0", Value: value, Text: text, Time: crdt.NewTimestamp(t0.Add(-ago).UnixMilli(), 0)}
}

func tombstoned(p *crdt.Point) *crdt.Point { p.Tombstone = true; return p }

func mustCondition(t *testing.T, s string) *Condition {
	t.Helper()
	c, err := ParseCondition(s)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestHolds(t *testing.T) {
	never := time.Time{}
	for _, tc := range []struct {
		cond  string
		r     Reading
		holds bool
		next  time.Time
	}{
		// Compare, each op on each side.
		{"temp > 20", Reading{Point: pointAt(21, "", time.Minute)}, true, never},
		{"temp > 20", Reading{Point: pointAt(20, "", time.Minute)}, false, never},
		{"temp >= 20", Reading{Point: pointAt(20, "", time.Minute)}, true, never},
		{"temp >= 20", Reading{Point: pointAt(19.99, "", time.Minute)}, false, never},
		{"temp < 20", Reading{Point: pointAt(19.99, "", time.Minute)}, true, never},
		{"temp < 20", Reading{Point: pointAt(20, "", time.Minute)}, false, never},
		{"temp <= 20", Reading{Point: pointAt(20, "", time.Minute)}, true, never},
		{"temp <= 20", Reading{Point: pointAt(20.01, "", time.Minute)}, false, never},
		{"temp == 20", Reading{Point: pointAt(20, "", time.Minute)}, true, never},
		{"temp == 20", Reading{Point: pointAt(21, "", time.Minute)}, false, never},
		{"temp != 20", Reading{Point: pointAt(21, "", time.Minute)}, true, never},
		{"temp != 20", Reading{Point: pointAt(20, "", time.Minute)}, false, never},
		{"temp == 0", Reading{Point: pointAt(0, "on", time.Minute)}, true, never}, // a text point's value
		// Text.
		{`temp == "on"`, Reading{Point: pointAt(0, "on", time.Minute)}, true, never},
		{`temp == "on"`, Reading{Point: pointAt(0, "off", time.Minute)}, false, never},
		{`temp == "on"`, Reading{Point: pointAt(0, "On", time.Minute)}, false, never},
		{`temp != "on"`, Reading{Point: pointAt(0, "off", time.Minute)}, true, never},
		{`temp != "on"`, Reading{Point: pointAt(0, "on", time.Minute)}, false, never},
		{`temp == ""`, Reading{Point: pointAt(5, "", time.Minute)}, true, never},
		{`temp != ""`, Reading{Point: pointAt(5, "", time.Minute)}, false, never},
		// A missing or deleted point compares to nothing, either way.
		{"temp < 20", Reading{}, false, never},
		{"temp != 20", Reading{}, false, never},
		{`temp != "on"`, Reading{}, false, never},
		{`temp == ""`, Reading{}, false, never},
		{"temp < 20", Reading{Point: tombstoned(pointAt(0, "", time.Minute))}, false, never},
		{`temp != "on"`, Reading{Point: tombstoned(pointAt(0, "", time.Minute))}, false, never},
		{"temp < 20", Reading{Point: pointAt(0, "", time.Minute), ChangedAt: t0}, true, never},
		// Changed: only a change seen (ChangedAt set), for For (at least
		// a second), then again when it ends.
		{"temp changed within 1m", Reading{Point: pointAt(1, "", 0)}, false, never},
		{"temp changed within 1m", Reading{Point: pointAt(1, "", time.Second), ChangedAt: t0.Add(-10 * time.Second)}, true, t0.Add(50 * time.Second)},
		{"temp changed within 1m", Reading{Point: pointAt(1, "", time.Second), ChangedAt: t0.Add(-time.Minute + time.Millisecond)}, true, t0.Add(time.Millisecond)},
		{"temp changed within 1m", Reading{Point: pointAt(1, "", time.Second), ChangedAt: t0.Add(-time.Minute)}, false, never},
		{"temp changed within 1m", Reading{Point: pointAt(1, "", time.Second), ChangedAt: t0.Add(-time.Hour)}, false, never},
		{"temp changed within 0s", Reading{Point: pointAt(1, "", 0), ChangedAt: t0}, true, t0.Add(time.Second)},
		{"temp changed", Reading{Point: pointAt(1, "", 0), ChangedAt: t0.Add(-time.Millisecond)}, true, t0.Add(time.Second - time.Millisecond)},
		{"temp changed within 1m", Reading{ChangedAt: t0.Add(-time.Second)}, true, t0.Add(59 * time.Second)},                                                 // deleted
		{"temp changed within 1m", Reading{Point: tombstoned(pointAt(1, "", time.Second)), ChangedAt: t0.Add(-time.Second)}, true, t0.Add(59 * time.Second)}, // deleted
		// Unchanged: from ChangedAt, else the point's time.
		{"temp unchanged 5m", Reading{Point: pointAt(1, "", time.Hour), ChangedAt: t0.Add(-6 * time.Minute)}, true, never},
		{"temp unchanged 5m", Reading{Point: pointAt(1, "", time.Hour), ChangedAt: t0.Add(-5 * time.Minute)}, true, never},
		{"temp unchanged 5m", Reading{Point: pointAt(1, "", time.Hour), ChangedAt: t0.Add(-time.Minute)}, false, t0.Add(4 * time.Minute)},
		{"temp unchanged 5m", Reading{Point: pointAt(1, "", 10*time.Minute)}, true, never},
		{"temp unchanged 5m", Reading{Point: pointAt(1, "", time.Minute)}, false, t0.Add(4 * time.Minute)},
		{"temp unchanged 5m", Reading{}, false, never},
		{"temp unchanged 5m", Reading{ChangedAt: t0.Add(-time.Hour)}, false, never},
		{"temp unchanged 5m", Reading{Point: tombstoned(pointAt(1, "", time.Hour))}, false, never},
		// Offline: a live online point of 0.
		{"offline", Reading{Point: pointAt(0, "", time.Minute)}, true, never},
		{"offline", Reading{Point: pointAt(1, "", time.Minute)}, false, never},
		{"offline", Reading{Point: pointAt(0.5, "", time.Minute)}, false, never},
		{"offline", Reading{}, false, never},
		{"offline", Reading{Point: tombstoned(pointAt(0, "", time.Minute))}, false, never},
		// Schedule: the time alone.
		{"schedule Mon 11:00-13:00", Reading{}, true, t0.Add(time.Hour)},
		{"schedule Mon 11:00-13:00", Reading{Point: pointAt(0, "", 0)}, true, t0.Add(time.Hour)},
		{"schedule Tue 11:00-13:00", Reading{}, false, t0.Add(23 * time.Hour)},
		{"schedule daily 00:00-00:00", Reading{}, true, never},
	} {
		c := mustCondition(t, tc.cond)
		holds, next := c.Holds(tc.r, t0)
		if holds != tc.holds || !next.Equal(tc.next) {
			p := "no point"
			if tc.r.Point != nil {
				p = fmt.Sprintf("%+v", *tc.r.Point)
			}
			t.Errorf("%q.Holds(%s, changed %v) = %t, %v; want %t, %v", tc.cond, p, tc.r.ChangedAt, holds, next, tc.holds, tc.next)
		}
	}
	var unknown Condition // no kind
	if holds, next := unknown.Holds(Reading{Point: pointAt(0, "", 0)}, t0); holds || !next.IsZero() {
		t.Errorf("a condition of no kind holds: %t, %v", holds, next)
	}
}

// stepCall is one call of Step in a sequence, its offsets from t0, and
// what it must return.
type stepCall struct {
	holds      bool
	since, now time.Duration
	sinceZero  bool

	active, changed bool
	wake            time.Duration // -1: none
	holding         time.Duration // -1: zero
}

func TestStep(t *testing.T) {
	const no = -1
	s := time.Second
	for _, tc := range []struct {
		name              string
		minActive, pacing time.Duration
		in                Instance
		calls             []stepCall
	}{
		{"active after MinActive", 10 * s, 60 * s, Instance{}, []stepCall{
			{holds: true, since: 0, now: 0, wake: 10 * s, holding: 0},
			{holds: true, since: 0, now: 5 * s, wake: 10 * s, holding: 0},
			{holds: true, since: 0, now: 10 * s, active: true, changed: true, wake: no, holding: 0},
			{holds: true, since: 0, now: 20 * s, active: true, wake: no, holding: 0},
		}},
		{"active at once without MinActive", 0, 60 * s, Instance{}, []stepCall{
			{holds: true, since: 0, now: 0, active: true, changed: true, wake: no, holding: 0},
		}},
		{"since before now counts", 10 * s, 60 * s, Instance{}, []stepCall{
			{holds: true, since: -20 * s, now: 0, active: true, changed: true, wake: no, holding: -20 * s},
		}},
		{"since in the future is now", 10 * s, 60 * s, Instance{}, []stepCall{
			{holds: true, since: time.Hour, now: 0, wake: 10 * s, holding: 0},
			{holds: true, since: time.Hour, now: 10 * s, active: true, changed: true, wake: no, holding: 0},
		}},
		{"zero since is now", 10 * s, 60 * s, Instance{}, []stepCall{
			{holds: true, sinceZero: true, now: 3 * s, wake: 13 * s, holding: 3 * s},
		}},
		{"holding is kept while it holds", 10 * s, 60 * s, Instance{}, []stepCall{
			{holds: true, since: 0, now: 0, wake: 10 * s, holding: 0},
			{holds: true, since: 4 * s, now: 4 * s, wake: 10 * s, holding: 0},
		}},
		{"holding resets when it stops", 10 * s, 60 * s, Instance{}, []stepCall{
			{holds: true, since: 0, now: 0, wake: 10 * s, holding: 0},
			{holds: false, now: 5 * s, wake: no, holding: no},
			{holds: true, since: 7 * s, now: 7 * s, wake: 17 * s, holding: 7 * s},
			{holds: true, since: 7 * s, now: 10 * s, wake: 17 * s, holding: 7 * s},
			{holds: true, since: 7 * s, now: 17 * s, active: true, changed: true, wake: no, holding: 7 * s},
		}},
		{"inactive at once", 10 * s, 60 * s, Instance{Active: true, Changed: t0.Add(-2 * time.Minute)}, []stepCall{
			{holds: false, now: 0, changed: true, wake: no, holding: no},
			{holds: false, now: 1 * s, wake: no, holding: no},
		}},
		{"pacing holds the clearing", 10 * s, 60 * s, Instance{}, []stepCall{
			{holds: true, since: -10 * s, now: 0, active: true, changed: true, wake: no, holding: -10 * s},
			{holds: false, now: 10 * s, active: true, wake: 60 * s, holding: no},
			{holds: false, now: 59 * s, active: true, wake: 60 * s, holding: no},
			{holds: false, now: 60 * s, changed: true, wake: no, holding: no},
		}},
		{"a flap within pacing moves nothing", 0, 60 * s, Instance{}, []stepCall{
			{holds: true, since: 0, now: 0, active: true, changed: true, wake: no, holding: 0},
			{holds: false, now: 10 * s, active: true, wake: 60 * s, holding: no},
			{holds: true, since: 20 * s, now: 20 * s, active: true, wake: no, holding: 20 * s},
		}},
		{"pacing holds the activation", 0, 60 * s, Instance{Changed: t0}, []stepCall{
			{holds: true, since: s, now: s, wake: 60 * s, holding: s},
			{holds: true, since: s, now: 60 * s, active: true, changed: true, wake: no, holding: s},
		}},
		{"MinActive later than pacing", 10 * s, 60 * s, Instance{Changed: t0}, []stepCall{
			{holds: true, since: 55 * s, now: 55 * s, wake: 65 * s, holding: 55 * s},
			{holds: true, since: 55 * s, now: 60 * s, wake: 65 * s, holding: 55 * s},
			{holds: true, since: 55 * s, now: 65 * s, active: true, changed: true, wake: no, holding: 55 * s},
		}},
		{"pacing later than MinActive", 10 * s, 60 * s, Instance{Changed: t0}, []stepCall{
			{holds: true, since: 5 * s, now: 5 * s, wake: 60 * s, holding: 5 * s},
			{holds: true, since: 5 * s, now: 60 * s, active: true, changed: true, wake: no, holding: 5 * s},
		}},
		{"no pacing", 0, 0, Instance{}, []stepCall{
			{holds: true, since: 0, now: 0, active: true, changed: true, wake: no, holding: 0},
			{holds: false, now: 0, changed: true, wake: no, holding: no},
			{holds: true, since: 0, now: 0, active: true, changed: true, wake: no, holding: 0},
		}},
		{"active, still holding", 10 * s, 60 * s, Instance{Active: true, Changed: t0}, []stepCall{
			{holds: true, since: 0, now: 0, active: true, wake: no, holding: 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Rule{MinActive: tc.minActive, Pacing: tc.pacing}
			in := tc.in
			for i, c := range tc.calls {
				since := t0.Add(c.since)
				if c.sinceZero {
					since = time.Time{}
				}
				now := t0.Add(c.now)
				prev := in
				out, changed, wake := Step(r, in, c.holds, since, now)
				wantWake, wantHolding := time.Time{}, time.Time{}
				if c.wake != no {
					wantWake = t0.Add(c.wake)
				}
				if c.holding != no {
					wantHolding = t0.Add(c.holding)
				}
				wantChanged := prev.Changed
				if c.changed {
					wantChanged = now
				}
				if out.Active != c.active || changed != c.changed || !wake.Equal(wantWake) || !out.Holding.Equal(wantHolding) || !out.Changed.Equal(wantChanged) {
					t.Fatalf("call %d: Step(%+v, holds %t since %v, now %v) = %+v, %t, %v; want active %t changed %t (at %v) wake %v holding %v",
						i, prev, c.holds, c.since, c.now, out, changed, wake, c.active, c.changed, wantChanged, wantWake, wantHolding)
				}
				in = out
			}
		})
	}
}

// TestStepProperty feeds Step random sequences of holding and not, time
// advancing by random steps, calling it again at each wake it asks for,
// and checks that two changes are at least Pacing apart, that every
// activation follows MinActive of unbroken holding, that a due change is
// never left without a wake, and that at a wake nothing new the change
// happens.
func TestStepProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 0x57e9))
	s := time.Second
	for run := range 300 {
		r := &Rule{MinActive: time.Duration(rng.IntN(4)) * 5 * s, Pacing: time.Duration(rng.IntN(4)) * 20 * s}
		var (
			in                     Instance
			holds                  bool
			since, now, wake, last time.Time // since: holding since (truth); last: the last change
			lastCall               = t0
		)
		now = t0
		step := func(at time.Time, atWake bool) {
			out, changed, w := Step(r, in, holds, since, at)
			if atWake && !changed {
				t.Fatalf("run %d (%+v): at wake %v, holding %t, Step(%+v) changed nothing: %+v, next wake %v", run, r, at, holds, in, out, w)
			}
			if changed {
				if out.Active != holds || !out.Changed.Equal(at) {
					t.Fatalf("run %d: changed to %+v at %v, holding %t", run, out, at, holds)
				}
				if !last.IsZero() && at.Sub(last) < r.Pacing {
					t.Fatalf("run %d (%+v): changes at %v and %v, less than pacing apart", run, r, last, at)
				}
				if out.Active && at.Sub(since) < r.MinActive {
					t.Fatalf("run %d (%+v): active at %v, holding since %v only", run, r, at, since)
				}
				last = at
			}
			if out.Active != holds && (w.IsZero() || !w.After(at)) {
				t.Fatalf("run %d (%+v): %+v at %v while holding %t, and wake %v", run, r, out, at, holds, w)
			}
			if out.Active == holds && !w.IsZero() {
				t.Fatalf("run %d: settled %+v, and wake %v", run, out, w)
			}
			in, wake, lastCall = out, w, at
		}
		for range 40 {
			next := now.Add(time.Duration(rng.IntN(50)) * s / 2)
			for !wake.IsZero() && !wake.After(next) {
				step(wake, true)
			}
			now = next
			h := rng.IntN(2) == 0
			if h && !holds {
				// It began to hold at some point since the last call.
				since = lastCall.Add(time.Duration(rng.Int64N(int64(now.Sub(lastCall)) + 1)))
			}
			holds = h
			step(now, false)
		}
	}
}

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		msg   string
		value *crdt.Point
		want  string
	}{
		{"", nil, "Too hot: Kitchen active"},
		{"", &crdt.Point{Value: 21.5}, "Too hot: Kitchen active"},
		{"{node} is {value} ({rule}, {status})", &crdt.Point{Value: 21.5}, "Kitchen is 21.5 (Too hot, active)"},
		{"{value}", &crdt.Point{Value: 1e21}, "1e+21"},
		{"{value}", &crdt.Point{Value: -0.000001}, "-1e-06"},
		{"{value}", &crdt.Point{Value: 3}, "3"},
		{"{value}", &crdt.Point{Value: 3, Text: "open"}, "open"},
		{"[{value}]", nil, "[]"},
		{"{node}{node} {other} {Node}", nil, "KitchenKitchen {other} {Node}"},
		{"no placeholders", nil, "no placeholders"},
	} {
		if got := Render(tc.msg, "Too hot", "Kitchen", "active", tc.value); got != tc.want {
			t.Errorf("Render(%q, %+v) = %q, want %q", tc.msg, tc.value, got, tc.want)
		}
	}
	// A placeholder in what is filled in stays as it is.
	if got := Render("{rule} {node}", "{node}", "N", "", nil); got != "{node} N" {
		t.Errorf("Render replaces inside a replacement: %q", got)
	}
}
