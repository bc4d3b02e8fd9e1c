package rules

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

var testRuleID = uuid.MustParse("0b7e3f4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b")

// rp is a point of the test rule node.
func rp(typ, key, text string, value float64) crdt.Point {
	return crdt.Point{Node: testRuleID, Type: typ, Key: key, Text: text, Value: value}
}

func names[T any](xs []T, name func(T) string) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, name(x))
	}
	return out
}

func condNames(cs []Condition) []string {
	return names(cs, func(c Condition) string { return c.Name })
}

func actNames(as []Action) []string {
	return names(as, func(a Action) string { return a.Name })
}

// TestFromPoints reads a rule of every part, from points in several
// orders.
func TestFromPoints(t *testing.T) {
	pts := []crdt.Point{
		rp("description", "0", "Too hot", 0),
		rp(TypeCondition, "b", "temp > 30", 0),
		rp(TypeCondition, "a", "schedule Mon-Fri 08:00-18:00", 0),
		rp(TypeCondition, "c", "door changed", 0),
		rp(TypeCondition, "d", "door changed within 5m", 0),
		rp(TypeAction, "z", "notify hot", 0),
		rp(TypeAction, "y", "set fan 1", 0),
		rp(TypeActionClear, "2", "set fan 0", 0),
		rp(TypeActionClear, "1", `notify "cool again"`, 0),
		rp(TypeMatch, "0", "any", 0),
		rp(TypeMinActive, "0", "", 2.5),
		rp(TypePacing, "0", "", 90),
		rp(TypeDisabled, "0", "", 1),
		// Not the rule's: state, other types, edges.
		rp(TypeState, testNode, "", 1),
		rp(TypeFired, testNode, "", 1e12),
		rp(TypeError, "b", "old", 0),
		rp("temp", "0", "", 3),
		rp(crdt.TypeNodeType, "0", NodeTypeRule, 0),
		{Node: testRuleID, Parent: testNodeID, Type: crdt.TypeEdge, Key: "0", Value: 1},
		{Node: testRuleID, Parent: testNodeID, Type: TypeCondition, Key: "e", Text: "temp >"},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		r := FromPoints(testRuleID, pts)
		if r.ID != testRuleID || r.Description != "Too hot" || !r.Any || r.MinActive != 2500*time.Millisecond || r.Pacing != 90*time.Second || !r.Disabled {
			t.Fatalf("FromPoints = %+v", r)
		}
		if got := condNames(r.Conditions); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
			t.Errorf("conditions %v, want a b c d", got)
		}
		if got := actNames(r.Actions); !slices.Equal(got, []string{"y", "z"}) {
			t.Errorf("actions %v, want y z", got)
		}
		if got := actNames(r.Clear); !slices.Equal(got, []string{"1", "2"}) {
			t.Errorf("clear actions %v, want 1 2", got)
		}
		if len(r.Errors) != 0 {
			t.Errorf("errors %v", r.Errors)
		}
		if c := r.Conditions[1]; c.Kind != KindCompare || c.Type != "temp" || c.Value != 30 {
			t.Errorf("condition b %+v", c)
		}
		// changed without within: the rule's pacing, whatever the
		// order of the points.
		if f := r.Conditions[2].For; f != 90*time.Second {
			t.Errorf("changed without within: for %v, want the pacing", f)
		}
		if f := r.Conditions[3].For; f != 5*time.Minute {
			t.Errorf("changed within 5m: for %v", f)
		}
		if a := r.Clear[0]; !a.Notify || a.Message != "cool again" {
			t.Errorf("clear action 1 %+v", a)
		}
		if !r.Valid() {
			t.Error("not valid")
		}
		rng.Shuffle(len(pts), func(i, j int) { pts[i], pts[j] = pts[j], pts[i] })
	}
}

func TestFromPointsDefaults(t *testing.T) {
	r := FromPoints(testRuleID, []crdt.Point{rp(TypeCondition, "1", "temp changed", 0)})
	if r.Pacing != 60*time.Second || r.MinActive != 0 || r.Any || r.Disabled || r.Description != "" {
		t.Fatalf("FromPoints = %+v; want the defaults", r)
	}
	if f := r.Conditions[0].For; f != DefaultPacing {
		t.Errorf("changed: for %v, want %v", f, DefaultPacing)
	}
	if r.Errors == nil || len(r.Errors) != 0 || r.Actions != nil || r.Clear != nil {
		t.Errorf("FromPoints = %+v; want an empty error map and no actions", r)
	}
	empty := FromPoints(testRuleID, nil)
	if empty.Valid() || empty.Conditions != nil || empty.Pacing != DefaultPacing {
		t.Errorf("FromPoints(no points) = %+v", empty)
	}
}

// TestFromPointsTiming: minActive and pacing in seconds, clamped to 0 and
// ten years; disabled is any value but 0.
func TestFromPointsTiming(t *testing.T) {
	most := 10 * 365 * 24 * time.Hour
	for _, tc := range []struct {
		v    float64
		want time.Duration
	}{
		{0, 0},
		{90, 90 * time.Second},
		{0.25, 250 * time.Millisecond},
		{-5, 0},
		{math.NaN(), 0},
		{math.Inf(-1), 0},
		{math.Inf(1), most},
		{1e300, most},
		{most.Seconds(), most},
		{most.Seconds() - 1, most - time.Second},
	} {
		r := FromPoints(testRuleID, []crdt.Point{rp(TypePacing, "0", "", tc.v), rp(TypeMinActive, "0", "", tc.v)})
		if r.Pacing != tc.want || r.MinActive != tc.want {
			t.Errorf("pacing and minActive %v: %v and %v, want %v", tc.v, r.Pacing, r.MinActive, tc.want)
		}
	}
	for _, tc := range []struct {
		v    float64
		want bool
	}{{0, false}, {1, true}, {-1, true}, {0.5, true}} {
		if r := FromPoints(testRuleID, []crdt.Point{rp(TypeDisabled, "0", "", tc.v)}); r.Disabled != tc.want {
			t.Errorf("disabled %v: %t", tc.v, r.Disabled)
		}
	}
	// A pacing of 0 makes changed last the least Holds allows.
	r := FromPoints(testRuleID, []crdt.Point{rp(TypePacing, "0", "", 0), rp(TypeCondition, "1", "door changed", 0)})
	if f := r.Conditions[0].For; f != 0 {
		t.Errorf("changed with no pacing: for %v", f)
	}
}

func TestFromPointsMatch(t *testing.T) {
	for _, tc := range []struct {
		text string
		any  bool
		err  string
	}{
		{"any", true, ""},
		{"all", false, ""},
		{"", false, ""},
		{"some", false, `match "some": want all or any`},
		{"ANY", false, `match "ANY": want all or any`},
	} {
		r := FromPoints(testRuleID, []crdt.Point{rp(TypeCondition, "1", "offline", 0), rp(TypeMatch, "0", tc.text, 0)})
		if r.Any != tc.any || r.Errors[TypeMatch] != tc.err {
			t.Errorf("match %q: any %t, errors %v; want %t, %q", tc.text, r.Any, r.Errors, tc.any, tc.err)
		}
	}
}

// TestFromPointsErrors: a bad condition is kept (and makes the rule
// invalid), a bad action is dropped; each is reported by name;
// tombstones are not read at all.
func TestFromPointsErrors(t *testing.T) {
	pts := []crdt.Point{
		rp(TypeCondition, "ok", "temp > 1", 0),
		rp(TypeCondition, "bad", "temp >", 0),
		rp(TypeAction, "good", "set fan 1", 0),
		rp(TypeAction, "evil", `set password "x"`, 0),
		rp(TypeActionClear, "odd", "blink", 0),
	}
	r := FromPoints(testRuleID, pts)
	if r.Valid() {
		t.Error("a rule with a bad condition is valid")
	}
	if got := condNames(r.Conditions); !slices.Equal(got, []string{"bad", "ok"}) {
		t.Errorf("conditions %v, want bad ok", got)
	}
	if got := actNames(r.Actions); !slices.Equal(got, []string{"good"}) {
		t.Errorf("actions %v, want good", got)
	}
	if len(r.Clear) != 0 {
		t.Errorf("clear actions %+v, want none", r.Clear)
	}
	for name, part := range map[string]string{"condition.bad": "want POINT > VALUE", "action.evil": "may not write password", "actionClear.odd": "want set ... or notify"} {
		if !strings.Contains(r.Errors[name], part) {
			t.Errorf("error of %s: %q, want %q in it", name, r.Errors[name], part)
		}
	}
	if len(r.Errors) != 3 {
		t.Errorf("errors %v, want 3", r.Errors)
	}

	// Broken actions alone leave the rule valid.
	r = FromPoints(testRuleID, append(pts[:1:1], pts[2:]...))
	if !r.Valid() || len(r.Errors) != 2 {
		t.Errorf("with broken actions only: valid %t, errors %v", r.Valid(), r.Errors)
	}

	// Tombstoned points are not read: neither their errors nor their
	// settings count.
	var tombs []crdt.Point
	for _, p := range append(slices.Clone(pts),
		rp(TypeMatch, "0", "some", 0), rp(TypePacing, "0", "", 5), rp(TypeDisabled, "0", "", 1), rp("description", "0", "gone", 0)) {
		p.Tombstone = true
		tombs = append(tombs, p)
	}
	r = FromPoints(testRuleID, append(tombs, rp(TypeCondition, "live", "offline", 0)))
	if len(r.Errors) != 0 || !slices.Equal(condNames(r.Conditions), []string{"live"}) || len(r.Actions)+len(r.Clear) != 0 ||
		r.Pacing != DefaultPacing || r.Disabled || r.Description != "" || !r.Valid() {
		t.Errorf("FromPoints with tombstones = %+v", r)
	}
}

// TestFromPointsLimits: more than MaxConditions conditions or MaxActions
// actions are reported; the conditions past the limit are dropped and the
// rule is not valid, the actions are all dropped.
func TestFromPointsLimits(t *testing.T) {
	conds := func(n int) []crdt.Point {
		var pts []crdt.Point
		for i := range n {
			pts = append(pts, rp(TypeCondition, fmt.Sprintf("c%02d", n-1-i), "offline", 0))
		}
		return pts
	}
	r := FromPoints(testRuleID, conds(MaxConditions))
	if !r.Valid() || len(r.Conditions) != MaxConditions || len(r.Errors) != 0 {
		t.Errorf("%d conditions: valid %t, %d kept, errors %v", MaxConditions, r.Valid(), len(r.Conditions), r.Errors)
	}
	r = FromPoints(testRuleID, conds(MaxConditions+1))
	if r.Valid() || len(r.Conditions) != MaxConditions || r.Conditions[0].Name != "c00" || r.Conditions[MaxConditions-1].Name != "c15" ||
		r.Errors[TypeCondition] != "17 conditions: at most 16" {
		t.Errorf("%d conditions: valid %t, kept %v, errors %v", MaxConditions+1, r.Valid(), condNames(r.Conditions), r.Errors)
	}

	acts := func(then, clear int) []crdt.Point {
		pts := conds(1)
		for i := range then {
			pts = append(pts, rp(TypeAction, fmt.Sprint(i), "notify", 0))
		}
		for i := range clear {
			pts = append(pts, rp(TypeActionClear, fmt.Sprint(i), "notify", 0))
		}
		return pts
	}
	r = FromPoints(testRuleID, acts(9, 7))
	if len(r.Actions) != 9 || len(r.Clear) != 7 || len(r.Errors) != 0 || !r.Valid() {
		t.Errorf("%d actions: %d and %d kept, errors %v", MaxActions, len(r.Actions), len(r.Clear), r.Errors)
	}
	for _, n := range [][2]int{{9, 8}, {17, 0}, {0, 17}} {
		r = FromPoints(testRuleID, acts(n[0], n[1]))
		if r.Actions != nil || r.Clear != nil || r.Errors[TypeAction] != "17 actions: at most 16" || !r.Valid() {
			t.Errorf("%d+%d actions: %d and %d kept, errors %v, valid %t", n[0], n[1], len(r.Actions), len(r.Clear), r.Errors, r.Valid())
		}
	}
}

func TestRuleTypesAndPerNode(t *testing.T) {
	for _, tc := range []struct {
		conds   []string
		types   []string
		perNode bool
	}{
		{nil, nil, false},
		{[]string{"schedule daily 08:00-09:00"}, nil, false},
		{[]string{"temp > 1"}, []string{"temp"}, true},
		{[]string{"offline"}, []string{TypeOnline}, true},
		{[]string{"on " + testNode + " temp > 1"}, []string{"temp"}, false},
		{[]string{"on " + testNode + " offline", "schedule daily 08:00-09:00"}, []string{TypeOnline}, false},
		{[]string{"on sensor temp > 1"}, []string{"temp"}, true},
		{[]string{"on " + testNode + " temp > 1", "door changed"}, []string{"temp", "door"}, true},
		// By condition name, each type once.
		{[]string{"temp > 1", "door == \"open\"", "temp.out < 0", "schedule daily 08:00-09:00", "door unchanged 1h", "offline"},
			[]string{"temp", "door", TypeOnline}, true},
	} {
		var pts []crdt.Point
		for i, c := range tc.conds {
			pts = append(pts, rp(TypeCondition, fmt.Sprint(i), c, 0))
		}
		r := FromPoints(testRuleID, pts)
		if len(r.Errors) != 0 {
			t.Fatalf("%q: %v", tc.conds, r.Errors)
		}
		if got := r.Types(); !slices.Equal(got, tc.types) {
			t.Errorf("%q: Types() = %q, want %q", tc.conds, got, tc.types)
		}
		if got := r.PerNode(); got != tc.perNode {
			t.Errorf("%q: PerNode() = %t, want %t", tc.conds, got, tc.perNode)
		}
	}
	for cond, want := range map[string]bool{
		"temp > 1":                    true,
		"on sensor temp > 1":          true,
		"on " + testNode + " offline": false,
		"schedule daily 08:00-09:00":  false,
		"offline":                     true,
	} {
		c := mustCondition(t, cond)
		if got := c.PerNode(); got != want {
			t.Errorf("%q.PerNode() = %t, want %t", cond, got, want)
		}
	}
}

func TestValid(t *testing.T) {
	ok := Condition{Name: "a", Kind: KindOffline}
	for _, tc := range []struct {
		r    Rule
		want bool
	}{
		{Rule{}, false},
		{Rule{Errors: map[string]string{}}, false},
		{Rule{Conditions: []Condition{ok}}, true},
		{Rule{Conditions: []Condition{ok}, Errors: map[string]string{"b": "bad action"}}, true},
		{Rule{Conditions: []Condition{ok}, Errors: map[string]string{TypeMatch: "bad match"}}, true},
		{Rule{Conditions: []Condition{ok, {Name: "b"}}, Errors: map[string]string{"condition.b": "bad"}}, false},
		{Rule{Conditions: []Condition{ok, {Name: "b"}}, Errors: map[string]string{"action.b": "bad"}}, true},
		{Rule{Conditions: []Condition{ok}, Errors: map[string]string{TypeCondition: "17 conditions: at most 16"}}, false},
	} {
		if got := tc.r.Valid(); got != tc.want {
			t.Errorf("%+v.Valid() = %t, want %t", tc.r, got, tc.want)
		}
	}
}

func TestIsRuleType(t *testing.T) {
	for _, typ := range []string{TypeCondition, TypeMatch, TypeAction, TypeActionClear, TypeMinActive, TypePacing, TypeDisabled, "description"} {
		if !IsRuleType(typ) {
			t.Errorf("IsRuleType(%q) = false", typ)
		}
	}
	for _, typ := range []string{TypeState, TypeFired, TypeError, TypeDelivery, TypeDeliveryStatus, crdt.TypeNodeType, crdt.TypeEdge, "temp", ""} {
		if IsRuleType(typ) {
			t.Errorf("IsRuleType(%q) = true", typ)
		}
	}
}

// TestFromPointsParses: each condition in a rule is what ParseCondition
// makes of it, named, and a changed without within lasts the pacing.
func TestFromPointsParses(t *testing.T) {
	for from := 0; from < len(goodConditions); from += MaxConditions {
		chunk := goodConditions[from:min(from+MaxConditions, len(goodConditions))]
		pts := []crdt.Point{rp(TypePacing, "0", "", 7)}
		for i, tc := range chunk {
			pts = append(pts, rp(TypeCondition, fmt.Sprintf("%03d", from+i), tc.in, 0))
		}
		r := FromPoints(testRuleID, pts)
		if len(r.Errors) != 0 || len(r.Conditions) != len(chunk) || !r.Valid() {
			t.Fatalf("conditions %d to %d: %d read, errors %v", from, from+len(chunk)-1, len(r.Conditions), r.Errors)
		}
		for i, c := range r.Conditions {
			want := chunk[i].want
			want.Name = fmt.Sprintf("%03d", from+i)
			if want.Kind == KindChanged && want.For == 0 {
				want.For = 7 * time.Second
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("condition %s (%q) = %+v, want %+v", c.Name, chunk[i].in, c, want)
			}
		}
	}
}
