package record_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
)

// TestParseRefusesInvalidUTF8: a text that is not valid UTF-8, or holds
// an escaped lone surrogate, is refused naming where; valid escapes
// decode to their characters.
func TestParseRefusesInvalidUTF8(t *testing.T) {
	n := uuid.NewString()
	rec := func(text string) string { return `{"node":"` + n + `","type":"t","text":"` + text + `"}` }
	for _, c := range []struct{ text, want string }{
		{"a\xffb", "not valid UTF-8 at byte"},
		{"\xc3", "not valid UTF-8"},
		{`\ud800`, `lone UTF-16 surrogate \ud800`},
		{`x\uDBFFy`, `lone UTF-16 surrogate \uDBFF`},
		{`\udc00`, `lone UTF-16 surrogate \udc00`},
		{`\ud83d\u0041`, `lone UTF-16 surrogate \ud83d`},
		{`\\\ud800`, `lone UTF-16 surrogate`},
	} {
		if _, err := record.Parse([]byte(rec(c.text))); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("text %q: err = %v, want %q", c.text, err, c.want)
		}
	}
	for text, want := range map[string]string{
		`\ud83d\ude00`: "\U0001F600", `\\ud800`: `\ud800`, "\uFFFD": "\uFFFD", `\ufffd`: "\uFFFD",
		`é \u00e9 \"`: `é é "`,
	} {
		p, err := record.Parse([]byte(rec(text)))
		if err != nil || p.Text != want {
			t.Errorf("text %q: %q, %v; want %q", text, p.Text, err, want)
		}
	}

}

// TestAppendParseRoundTrip: a stamped point written by Append parses back
// to the same point, and Shown leaves out the value of a text point.
func TestAppendParseRoundTrip(t *testing.T) {
	node, parent, origin := uuid.New(), uuid.New(), uuid.New()
	for _, p := range []crdt.Point{
		{Node: node, Type: "temp", Key: "0", Value: 21.5, Time: 1 << 20, Origin: origin},
		{Node: node, Type: "mode", Key: "a.b", Text: "auto <&>", Time: 2 << 20, Origin: origin},
		{Node: node, Parent: parent, Type: crdt.TypeEdge, Key: "0", Tombstone: true, Value: 1, Time: 3 << 20, Origin: origin},
	} {
		line := record.Append(nil, &p)
		if !strings.HasSuffix(string(line), "}\n") || strings.Contains(string(line), `\u003c`) {
			t.Fatalf("line %q: want one JSON object and a newline, without HTML escapes", line)
		}
		got, err := record.Parse(line)
		if err != nil || got != p {
			t.Fatalf("round trip of %+v: %+v, %v", p, got, err)
		}
	}
	text := crdt.Point{Node: node, Type: "mode", Key: "0", Text: "auto"}
	if r := record.Shown(&text); r.Value != nil {
		t.Fatalf("Shown of a text point has value %v", *r.Value)
	}
	for line, want := range map[string]string{
		`{"node":"` + n(node) + `","type":"t","valeu":1}`: "unknown field",
		`{"type":"t"}`: `"node" is missing`,
		`{"node":"` + n(node) + `","type":"t"} {}`:            "more than one JSON value",
		`{"node":"` + n(node) + `","type":"t","value":1e999}`: "value",
	} {
		if _, err := record.Parse([]byte(line)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", line, err, want)
		}
	}
}

func n(id uuid.UUID) string { return id.String() }

// FuzzParse: any line either parses to a valid point that Append writes
// back to a line parsing to the same point, or is refused with an error;
// never a panic.
func FuzzParse(f *testing.F) {
	id := uuid.New().String()
	for _, s := range []string{
		`{"node":"` + id + `","type":"temp","value":1}`,
		`{"node":"` + id + `","parent":"` + id + `","type":"edge","tombstone":true,"hlc":"1234","origin":"` + id + `"}`,
		`{"node":"` + id + `","type":"t","text":"\ud83d\ude00 \\ \" é"}`,
		`{"node":"x"}`, `[]`, `{"node":"` + id + `","type":"t","text":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		p, err := record.Parse(line)
		if err != nil {
			return
		}
		if p.Time == 0 || p.Origin == uuid.Nil {
			p.Time, p.Origin = 1, uuid.New() // Append writes stamped points
		}
		back, err := record.Parse(record.Append(nil, &p))
		if err != nil || back != p {
			t.Fatalf("%q: parsed %+v, written and parsed again %+v, %v", line, p, back, err)
		}
	})
}
