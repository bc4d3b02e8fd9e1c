package rules

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

const (
	testNode    = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	testNodeUp  = "6BA7B810-9DAD-11D1-80B4-00C04FD430C8"
	testNilNode = "00000000-0000-0000-0000-000000000000"
)

var testNodeID = uuid.MustParse(testNode)

// goodConditions are conditions of every form but schedule (see
// TestParseConditionSchedule) and what they parse to.
var goodConditions = []struct {
	in   string
	want Condition
}{
	{`temp > 20`, Condition{Kind: KindCompare, Type: "temp", Key: "0", Op: ">", Value: 20}},
	{`temp >= 20`, Condition{Kind: KindCompare, Type: "temp", Key: "0", Op: ">=", Value: 20}},
	{`temp < -3.5`, Condition{Kind: KindCompare, Type: "temp", Key: "0", Op: "<", Value: -3.5}},
	{`temp <= 1e3`, Condition{Kind: KindCompare, Type: "temp", Key: "0", Op: "<=", Value: 1000}},
	{`temp == 0`, Condition{Kind: KindCompare, Type: "temp", Key: "0", Op: "==", Value: 0}},
	{`temp != 1`, Condition{Kind: KindCompare, Type: "temp", Key: "0", Op: "!=", Value: 1}},
	{`temp.inside > 2`, Condition{Kind: KindCompare, Type: "temp", Key: "inside", Op: ">", Value: 2}},
	{`temp.a.b > 2`, Condition{Kind: KindCompare, Type: "temp", Key: "a.b", Op: ">", Value: 2}},
	{"\t temp   >\t20  ", Condition{Kind: KindCompare, Type: "temp", Key: "0", Op: ">", Value: 20}},
	{`mode == "auto"`, Condition{Kind: KindCompare, Type: "mode", Key: "0", Op: "==", Text: "auto", IsText: true}},
	{`mode != "auto  mode"`, Condition{Kind: KindCompare, Type: "mode", Key: "0", Op: "!=", Text: "auto  mode", IsText: true}},
	{`mode == ""`, Condition{Kind: KindCompare, Type: "mode", Key: "0", Op: "==", IsText: true}},
	{`mode == "20"`, Condition{Kind: KindCompare, Type: "mode", Key: "0", Op: "==", Text: "20", IsText: true}},
	{`mode == "say \"hi\" \\ ok"`, Condition{Kind: KindCompare, Type: "mode", Key: "0", Op: "==", Text: `say "hi" \ ok`, IsText: true}},
	{`mode == "a\b"`, Condition{Kind: KindCompare, Type: "mode", Key: "0", Op: "==", Text: `ab`, IsText: true}},
	{`mode == "été à Ålesund"`, Condition{Kind: KindCompare, Type: "mode", Key: "0", Op: "==", Text: "été à Ålesund", IsText: true}},
	{`door changed`, Condition{Kind: KindChanged, Type: "door", Key: "0"}},
	{`door.back changed within 5m`, Condition{Kind: KindChanged, Type: "door", Key: "back", For: 5 * time.Minute}},
	{`door changed within 1d`, Condition{Kind: KindChanged, Type: "door", Key: "0", For: 24 * time.Hour}},
	{`door unchanged 2h`, Condition{Kind: KindUnchanged, Type: "door", Key: "0", For: 2 * time.Hour}},
	{`door unchanged 500ms`, Condition{Kind: KindUnchanged, Type: "door", Key: "0", For: 500 * time.Millisecond}},
	{`offline`, Condition{Kind: KindOffline, Type: TypeOnline, Key: "0"}},
	{`on ` + testNode + ` offline`, Condition{Kind: KindOffline, Node: testNodeID, Type: TypeOnline, Key: "0"}},
	{`on sensor offline`, Condition{Kind: KindOffline, NodeType: "sensor", Type: TypeOnline, Key: "0"}},
	{`on ` + testNode + ` temp > 3`, Condition{Kind: KindCompare, Node: testNodeID, Type: "temp", Key: "0", Op: ">", Value: 3}},
	{`on ` + testNodeUp + ` temp > 3`, Condition{Kind: KindCompare, Node: testNodeID, Type: "temp", Key: "0", Op: ">", Value: 3}},
	{`on sensor temp > 3`, Condition{Kind: KindCompare, NodeType: "sensor", Type: "temp", Key: "0", Op: ">", Value: 3}},
	{`on sensor_2.x mode == "on"`, Condition{Kind: KindCompare, NodeType: "sensor_2.x", Type: "mode", Key: "0", Op: "==", Text: "on", IsText: true}},
	{`on sensor door changed within 30s`, Condition{Kind: KindChanged, NodeType: "sensor", Type: "door", Key: "0", For: 30 * time.Second}},
	{`on ` + testNode + ` door unchanged 1d`, Condition{Kind: KindUnchanged, Node: testNodeID, Type: "door", Key: "0", For: 24 * time.Hour}},
	// 32 hex digits are a node type: a node ID has one spelling.
	{`on 6ba7b8109dad11d180b400c04fd430c8 temp > 3`, Condition{Kind: KindCompare, NodeType: "6ba7b8109dad11d180b400c04fd430c8", Type: "temp", Key: "0", Op: ">", Value: 3}},
}

func TestParseCondition(t *testing.T) {
	for _, tc := range goodConditions {
		got, err := ParseCondition(tc.in)
		if err != nil {
			t.Errorf("ParseCondition(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCondition(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// TestParseConditionLength: MaxExpressionLen bytes parse, one more do
// not.
func TestParseConditionLength(t *testing.T) {
	prefix := `mode == "`
	text := strings.Repeat("x", MaxExpressionLen-len(prefix)-1)
	c, err := ParseCondition(prefix + text + `"`)
	if err != nil || c.Text != text {
		t.Fatalf("%d bytes: %q, %v; want the text", MaxExpressionLen, c.Text, err)
	}
	if _, err := ParseCondition(prefix + text + `x"`); err == nil || !strings.Contains(err.Error(), "at most 1024") {
		t.Fatalf("%d bytes: err %v, want at most 1024", MaxExpressionLen+1, err)
	}
}

func TestParseConditionSchedule(t *testing.T) {
	all := [7]bool{true, true, true, true, true, true, true}
	//                     Sun    Mon    Tue    Wed    Thu    Fri    Sat
	weekdays := [7]bool{false, true, true, true, true, true, false}
	for _, tc := range []struct {
		in         string
		days       [7]bool
		start, end int
		zone       string
	}{
		{"schedule Mon-Fri 08:00-18:00", weekdays, 8 * 60, 18 * 60, "UTC"},
		{"schedule mon-FRI 08:00-18:00 UTC", weekdays, 8 * 60, 18 * 60, "UTC"},
		{"schedule daily 22:00-06:00 Europe/Berlin", all, 22 * 60, 6 * 60, "Europe/Berlin"},
		{"schedule DAILY 00:00-00:00", all, 0, 0, "UTC"},
		{"schedule * 07:30-07:30", all, 7*60 + 30, 7*60 + 30, "UTC"},
		{"schedule Sun 9:05-10:00", [7]bool{true}, 9*60 + 5, 10 * 60, "UTC"},
		{"schedule Mon,Wed,Sat-Sun 07:30-07:45 America/New_York", [7]bool{true, true, false, true, false, false, true}, 7*60 + 30, 7*60 + 45, "America/New_York"},
		{"schedule Fri-Mon 00:00-24:00", [7]bool{true, true, false, false, false, true, true}, 0, 24 * 60, "UTC"},
		{"schedule Sat-Sat 23:59-00:01", [7]bool{false, false, false, false, false, false, true}, 23*60 + 59, 1, "UTC"},
		{"schedule Tue-Mon 12:00-13:00", all, 12 * 60, 13 * 60, "UTC"},
		{"schedule Mon,Mon 12:00-13:00", [7]bool{false, true}, 12 * 60, 13 * 60, "UTC"},
		{"  schedule   Fri   22:00-06:00   Asia/Kathmandu ", [7]bool{5: true}, 22 * 60, 6 * 60, "Asia/Kathmandu"},
	} {
		c, err := ParseCondition(tc.in)
		if err != nil {
			t.Errorf("ParseCondition(%q): %v", tc.in, err)
			continue
		}
		s := c.Sched
		if c.Kind != KindSchedule || c.Type != "" || c.Node != uuid.Nil || c.NodeType != "" {
			t.Errorf("ParseCondition(%q) = %+v, want a bare schedule", tc.in, c)
		}
		if s.Days != tc.days || s.Start != tc.start || s.End != tc.end || s.ZoneName != tc.zone || s.Zone == nil || s.Zone.String() != tc.zone {
			t.Errorf("ParseCondition(%q): schedule %v %d-%d %q (%v), want %v %d-%d %q",
				tc.in, s.Days, s.Start, s.End, s.ZoneName, s.Zone, tc.days, tc.start, tc.end, tc.zone)
		}
		// String writes it back as ParseSchedule reads it.
		back, err := ParseSchedule(strings.Fields(s.String()))
		if err != nil || back.Days != s.Days || back.Start != s.Start || back.End != s.End || back.ZoneName != s.ZoneName {
			t.Errorf("%q: String %q parses to %+v, %v", tc.in, s.String(), back, err)
		}
	}
}

// badConditions are conditions ParseCondition refuses, each with a part of
// the error it must give.
var badConditions = []struct{ in, err string }{
	{"", "empty"},
	{" \t ", "empty"},
	{`mode == "auto`, "unterminated quote"},
	{`mode == "auto\"`, "unterminated quote"},
	{`"`, "unterminated quote"},
	{strings.Repeat("a", MaxExpressionLen+1), "1025 bytes: at most 1024"},
	{`temp > NaN`, "want a finite number"},
	{`temp > nan`, "want a finite number"},
	{`temp > Inf`, "want a finite number"},
	{`temp > -Inf`, "want a finite number"},
	{`temp > +infinity`, "want a finite number"},
	{`temp > 1e999`, "want a finite number"},
	{`temp > abc`, `value "abc"`},
	{`temp > 0x1p-2x`, "want a finite number"},
	{`mode > "auto"`, "text compares only with == or !="},
	{`mode >= "auto"`, "text compares only with == or !="},
	{`mode < ""`, "text compares only with == or !="},
	{`mode <= "a"`, "text compares only with == or !="},
	{`temp > 3 4`, "want POINT > VALUE"},
	{`mode == "a" "b"`, "want POINT == VALUE"},
	{`mode == "a"b`, "want POINT == VALUE"},
	{`temp >`, "want POINT > VALUE"},
	{`temp`, "want POINT OP VALUE"},
	{`temp ~ 3`, `"~": want > >= < <= == != changed or unchanged`},
	{`temp => 3`, `"=>": want`},
	{`temp! > 3`, `point "temp!"`},
	{`.key > 3`, `point ".key"`},
	{`temp.ключ > 3`, `point "temp.ключ"`},
	{strings.Repeat("t", 300) + ` > 3`, "point"},
	{`door unchanged 0s`, "unchanged for no time"},
	{`door unchanged 0d`, "unchanged for no time"},
	{`door unchanged 0`, "unchanged for no time"},
	{`door unchanged`, "want POINT unchanged DURATION"},
	{`door unchanged 5m 6m`, "want POINT unchanged DURATION"},
	{`door unchanged -5m`, `duration "-5m"`},
	{`door unchanged soon`, `duration "soon"`},
	{`door changed 5m`, "want POINT changed [within DURATION]"},
	{`door changed within`, "want POINT changed [within DURATION]"},
	{`door changed during 5m`, "want POINT changed [within DURATION]"},
	{`door changed within 5m 6m`, "want POINT changed [within DURATION]"},
	{`door changed within -1d`, `duration "-1d"`},
	{`door changed within 5`, `duration "5"`},
	{`on`, "on what?"},
	{`on sensor`, "want POINT OP VALUE"},
	{`on bad!type temp > 1`, `on "bad!type": neither a node ID nor a node type`},
	{`on sensor-x temp > 1`, `on "sensor-x": neither a node ID nor a node type`},
	{`on ` + testNilNode + ` temp > 1`, "neither a node ID nor a node type"},
	{`on urn:uuid:` + testNode + ` temp > 1`, "neither a node ID nor a node type"},
	{`on {` + testNode + `} temp > 1`, "neither a node ID nor a node type"},
	{`on sensor schedule daily 08:00-09:00`, "want"},
	{`offline now`, `"now": want`},
	{`schedule`, "want schedule DAYS HH:MM-HH:MM [ZONE]"},
	{`schedule daily`, "want schedule DAYS HH:MM-HH:MM [ZONE]"},
	{`schedule daily 08:00-09:00 UTC extra`, "want schedule DAYS HH:MM-HH:MM [ZONE]"},
	{`schedule daily 08:00-09:00 Mars/Olympus_Mons`, `time zone "Mars/Olympus_Mons": unknown`},
	{`schedule daily 08:00-09:00 Local`, `time zone "Local": unknown`},
	{`schedule daily 08:00-09:00 ../../etc/passwd`, "unknown"},
	{`schedule daily 08:00-09:00 ""`, "unknown"},
	{`schedule Moon 08:00-09:00`, `day "moon"`},
	{`schedule Mon-Funday 08:00-09:00`, `day "funday"`},
	{`schedule Mon, 08:00-09:00`, `day ""`},
	{`schedule Mon-Tue-Wed 08:00-09:00`, `day "tue-wed"`},
	{`schedule weekdays 08:00-09:00`, `day "weekdays"`},
	{`schedule daily 08:00`, `times "08:00": want HH:MM-HH:MM`},
	{`schedule daily 0800-0900`, `time "0800"`},
	{`schedule daily 08:00-`, `time ""`},
	{`schedule daily 25:00-26:00`, `time "25:00"`},
	{`schedule daily 08:00-24:01`, `time "24:01"`},
	{`schedule daily 08:60-09:00`, `time "08:60"`},
	{`schedule daily -1:00-09:00`, `time ""`},
	{`schedule daily 08:00-09:00-10:00`, `time "09:00-10:00"`},
	{`schedule daily 8h-9h`, `time "8h"`},
}

func TestParseConditionErrors(t *testing.T) {
	for _, tc := range badConditions {
		c, err := ParseCondition(tc.in)
		if err == nil {
			t.Errorf("ParseCondition(%q) = %+v, want an error with %q", tc.in, c, tc.err)
			continue
		}
		if !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseCondition(%q): %q, want %q in it", tc.in, err, tc.err)
		}
	}
}

var goodActions = []struct {
	in   string
	want Action
}{
	{`set alarm 1`, Action{Type: "alarm", Key: "0", Value: 1}},
	{`set alarm.siren -0.5`, Action{Type: "alarm", Key: "siren", Value: -0.5}},
	{`set ` + testNode + ` alarm 1`, Action{Node: testNodeID, Type: "alarm", Key: "0", Value: 1}},
	{`set ` + testNodeUp + ` alarm.x 2`, Action{Node: testNodeID, Type: "alarm", Key: "x", Value: 2}},
	{`set mode "auto  mode"`, Action{Type: "mode", Key: "0", Text: "auto  mode", IsText: true}},
	{`set ` + testNode + ` mode ""`, Action{Node: testNodeID, Type: "mode", Key: "0", IsText: true}},
	{`set mode "1"`, Action{Type: "mode", Key: "0", Text: "1", IsText: true}},
	{`set online 0`, Action{Type: "online", Key: "0"}},
	{`notify`, Action{Notify: true}},
	{`notify ""`, Action{Notify: true}},
	{`notify hot`, Action{Notify: true, Message: "hot"}},
	{`notify  it  is hot	in {node} `, Action{Notify: true, Message: "it is hot in {node}"}},
	{`notify "{node}:  {status}"`, Action{Notify: true, Message: "{node}:  {status}"}},
	{`notify "{node}  is" hot`, Action{Notify: true, Message: "{node}  is hot"}},
	{`notify "say \"hi\""`, Action{Notify: true, Message: `say "hi"`}},
	{`notify a"b`, Action{Notify: true, Message: `a"b`}},
	{`notify voilà à bientôt, Ålesund`, Action{Notify: true, Message: "voilà à bientôt, Ålesund"}},
	{"notify a\u00a0b", Action{Notify: true, Message: "a b"}}, // NBSP is a space
	{`notify set alarm 1`, Action{Notify: true, Message: "set alarm 1"}},
}

func TestParseAction(t *testing.T) {
	for _, tc := range goodActions {
		got, err := ParseAction(tc.in)
		if err != nil {
			t.Errorf("ParseAction(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseAction(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

var badActions = []struct{ in, err string }{
	{``, "empty"},
	{`   `, "empty"},
	{`blink`, "want set ... or notify ..."},
	{`Notify hot`, "want set ... or notify ..."},
	{`"notify" hot`, "want set ... or notify ..."},
	{`notify "hot`, "unterminated quote"},
	{`notify ` + strings.Repeat("a", MaxExpressionLen), "at most 1024"},
	{`set`, "want set [NODE] TYPE[.KEY] VALUE"},
	{`set alarm`, "want set [NODE] TYPE[.KEY] VALUE"},
	{`set ` + testNode + ` alarm 1 2`, "want set [NODE] TYPE[.KEY] VALUE"},
	{`set alarm 1 2`, `invalid ID "alarm"`},
	{`set ` + testNilNode + ` alarm 1`, "the nil UUID is not an ID"},
	{`set {` + testNode + `} alarm 1`, "invalid ID"},
	{`set alarm NaN`, "want a finite number"},
	{`set alarm -Inf`, "want a finite number"},
	{`set alarm on`, `value "on"`},
	{`set al!arm 1`, `point "al!arm"`},
	{`set alarm.ü 1`, `point "alarm.ü"`},
	{`set authKey 1`, "a rule may not write authKey points"},
	{`set password "x"`, "a rule may not write password points"},
	{`set email "a@b.c"`, "a rule may not write email points"},
	{`set smtpPassword "x"`, "a rule may not write smtpPassword points"},
	{`set notifyWebhookSecret "x"`, "a rule may not write notifyWebhookSecret points"},
	{`set ` + testNode + ` password.2 "x"`, "a rule may not write password points"},
	{`set edge 1`, "a rule may not write edge points"},
	{`set role "admin"`, "a rule may not write role points"},
	{`set nodeType "rule"`, "a rule may not write nodeType points"},
	{`set ` + testNode + ` nodeType.0 "user"`, "a rule may not write nodeType points"},
}

func TestParseActionErrors(t *testing.T) {
	for _, tc := range badActions {
		a, err := ParseAction(tc.in)
		if err == nil {
			t.Errorf("ParseAction(%q) = %+v, want an error with %q", tc.in, a, tc.err)
			continue
		}
		if !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseAction(%q): %q, want %q in it", tc.in, err, tc.err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"1d", 24 * time.Hour},
		{"0d", 0},
		{"3650d", 3650 * 24 * time.Hour},
		{"15m", 15 * time.Minute},
		{"500ms", 500 * time.Millisecond},
		{"2h30m", 150 * time.Minute},
		{"1.5h", 90 * time.Minute},
		{"0", 0},
		{"0s", 0},
	} {
		if got, err := ParseDuration(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "d", "-1d", "3651d", "1.5d", "1e3d", "xd", "-5m", "-1ns", "5", "1w", "soon", "15 m", "99999999999h"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		} else if !strings.Contains(err.Error(), "duration") {
			t.Errorf("ParseDuration(%q): %q, want it to name the duration", in, err)
		}
	}
}

func TestParsePoint(t *testing.T) {
	for _, tc := range []struct{ in, typ, key string }{
		{"temp", "temp", "0"},
		{"temp.", "temp", "0"},
		{"temp.in", "temp", "in"},
		{"temp.in.side", "temp", "in.side"},
		{"temp.a=b", "temp", "a=b"},
	} {
		if typ, key, err := ParsePoint(tc.in); err != nil || typ != tc.typ || key != tc.key {
			t.Errorf("ParsePoint(%q) = %q, %q, %v; want %q, %q", tc.in, typ, key, err, tc.typ, tc.key)
		}
	}
	for _, in := range []string{"", ".x", "te mp", "temp.a b", "tämp", "temp.\x7f"} {
		if typ, key, err := ParsePoint(in); err == nil {
			t.Errorf("ParsePoint(%q) = %q, %q; want an error", in, typ, key)
		}
	}
}

// FuzzParseCondition: ParseCondition never panics, and a condition it
// accepts is consistent: each kind has the fields it needs and no others,
// names are valid, numbers finite, a schedule writes back to itself, and
// judging it does not panic either.
func FuzzParseCondition(f *testing.F) {
	for _, tc := range goodConditions {
		f.Add(tc.in)
	}
	for _, tc := range badConditions {
		f.Add(tc.in)
	}
	f.Add("schedule Fri-Mon 22:00-06:00 Europe/Berlin")
	f.Add("schedule daily 00:00-24:00")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCondition(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseCondition(%q): an empty error", s)
			}
			return
		}
		if len(s) > MaxExpressionLen {
			t.Fatalf("ParseCondition accepted %d bytes", len(s))
		}
		if c.Node != uuid.Nil && c.NodeType != "" {
			t.Fatalf("ParseCondition(%q) = %+v: both a node and a node type", s, c)
		}
		if c.NodeType != "" && crdt.CheckType(c.NodeType) != nil {
			t.Fatalf("ParseCondition(%q): node type %q", s, c.NodeType)
		}
		if c.Kind == KindSchedule {
			sc := c.Sched
			if c.Type != "" || c.Key != "" || c.Node != uuid.Nil || c.NodeType != "" || c.Op != "" || c.IsText || c.For != 0 {
				t.Fatalf("ParseCondition(%q) = %+v: a schedule with other fields", s, c)
			}
			if sc.Zone == nil || sc.ZoneName == "" || sc.Start < 0 || sc.Start > 24*60 || sc.End < 0 || sc.End > 24*60 || !slices.Contains(sc.Days[:], true) {
				t.Fatalf("ParseCondition(%q): schedule %+v", s, sc)
			}
			back, err := ParseSchedule(strings.Fields(sc.String()))
			if err != nil || back.Days != sc.Days || back.Start != sc.Start || back.End != sc.End || back.ZoneName != sc.ZoneName {
				t.Fatalf("ParseCondition(%q): String %q parses to %+v, %v", s, sc.String(), back, err)
			}
		} else {
			if err := crdt.CheckType(c.Type); err != nil {
				t.Fatalf("ParseCondition(%q): type %q: %v", s, c.Type, err)
			}
			if err := crdt.CheckKey(c.Key); err != nil {
				t.Fatalf("ParseCondition(%q): key %q: %v", s, c.Key, err)
			}
		}
		switch c.Kind {
		case KindCompare:
			if !slices.Contains([]string{">", ">=", "<", "<=", "==", "!="}, c.Op) || c.For != 0 {
				t.Fatalf("ParseCondition(%q) = %+v: a compare without an op", s, c)
			}
			if c.IsText && c.Op != "==" && c.Op != "!=" || !c.IsText && c.Text != "" || c.IsText && c.Value != 0 {
				t.Fatalf("ParseCondition(%q) = %+v: text and number mixed", s, c)
			}
			if math.IsNaN(c.Value) || math.IsInf(c.Value, 0) {
				t.Fatalf("ParseCondition(%q): value %v", s, c.Value)
			}
			if utf8.ValidString(s) && !utf8.ValidString(c.Text) {
				t.Fatalf("ParseCondition(%q): text %q is not UTF-8", s, c.Text)
			}
		case KindChanged, KindUnchanged:
			if c.Op != "" || c.IsText || c.For < 0 || c.Kind == KindUnchanged && c.For == 0 {
				t.Fatalf("ParseCondition(%q) = %+v", s, c)
			}
		case KindOffline:
			if c.Type != TypeOnline || c.Key != crdt.DefaultKey || c.Op != "" || c.For != 0 {
				t.Fatalf("ParseCondition(%q) = %+v", s, c)
			}
		case KindSchedule:
		default:
			t.Fatalf("ParseCondition(%q) = %+v: kind %d", s, c, c.Kind)
		}
		now := time.Date(2024, 10, 27, 0, 59, 30, 0, time.UTC)
		p := &crdt.Point{Type: c.Type, Key: c.Key, Text: c.Text, Value: c.Value, Time: crdt.NewTimestamp(now.Add(-time.Minute).UnixMilli(), 0)}
		for _, r := range []Reading{{}, {Point: p}, {Point: p, ChangedAt: now.Add(-time.Hour)}} {
			if _, next := c.Holds(r, now); !next.IsZero() && !next.After(now) {
				t.Fatalf("ParseCondition(%q): Holds says it changes at %v, not after %v", s, next, now)
			}
		}
	})
}

// FuzzParseAction: ParseAction never panics, and an action it accepts is
// either a notify with a message only or a set of a point a rule may
// write, with a valid type and key and a finite number or a text; text
// from UTF-8 stays UTF-8.
func FuzzParseAction(f *testing.F) {
	for _, tc := range goodActions {
		f.Add(tc.in)
	}
	for _, tc := range badActions {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAction(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseAction(%q): an empty error", s)
			}
			return
		}
		if len(s) > MaxExpressionLen {
			t.Fatalf("ParseAction accepted %d bytes", len(s))
		}
		if utf8.ValidString(s) && (!utf8.ValidString(a.Message) || !utf8.ValidString(a.Text)) {
			t.Fatalf("ParseAction(%q) = %+v: not UTF-8", s, a)
		}
		if a.Notify {
			if a.Type != "" || a.Key != "" || a.Node != uuid.Nil || a.IsText || a.Text != "" || a.Value != 0 {
				t.Fatalf("ParseAction(%q) = %+v: a notify with set fields", s, a)
			}
			return
		}
		if a.Message != "" {
			t.Fatalf("ParseAction(%q) = %+v: a set with a message", s, a)
		}
		if crdt.CheckType(a.Type) != nil || crdt.CheckKey(a.Key) != nil {
			t.Fatalf("ParseAction(%q) = %+v: bad type or key", s, a)
		}
		if crdt.IsCredential(a.Type) || a.Type == crdt.TypeEdge || a.Type == crdt.TypeRole || a.Type == crdt.TypeNodeType {
			t.Fatalf("ParseAction(%q) = %+v: writes a %s point", s, a, a.Type)
		}
		if math.IsNaN(a.Value) || math.IsInf(a.Value, 0) || a.IsText && a.Value != 0 || !a.IsText && a.Text != "" {
			t.Fatalf("ParseAction(%q) = %+v: bad value", s, a)
		}
	})
}

// TestParseActionNotifyQuotes: a notify action's message is its text
// without the quotes around it, with its spacing when quoted whole.
func TestParseActionNotifyQuotes(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{`notify "{node} is offline"`, "{node} is offline"},
		{`notify "two  spaces"`, "two  spaces"},
		{`notify {node} is offline`, "{node} is offline"},
		{`notify "{node}" is "very hot"`, "{node} is very hot"},
		{`notify it's 5"`, `it's 5"`},
		{`notify`, ""},
	} {
		a, err := ParseAction(tc.text)
		if err != nil || !a.Notify || a.Message != tc.want {
			t.Errorf("ParseAction(%q) = message %q, notify %v, %v; want %q", tc.text, a.Message, a.Notify, err, tc.want)
		}
	}
}
