// Package record is the point record: one point as a JSON object, the
// format of siot import and export, of the JSON API on NATS, and of the
// client library's streams.
//
//	{"node":UUID, "parent":UUID (edge points only), "type":string,
//	 "key":string, "value":number, "text":string, "tombstone":bool,
//	 "hlc":string, "origin":string}
//
// Parse reads and validates one record; Append writes one. Both are pure.
package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// Record is one point in the JSON Lines format of import and export.
// Export writes the fields in this order, "parent" only for edge points
// and "text" only when not empty, so two replicas holding the same state
// print the same bytes.
type Record struct {
	Node      string   `json:"node"`
	Parent    string   `json:"parent,omitempty"`
	Type      string   `json:"type"`
	Key       string   `json:"key"`
	Value     *float64 `json:"value,omitempty"` // nil: get and watch show a text point
	Text      string   `json:"text,omitempty"`
	Tombstone bool     `json:"tombstone"`
	HLC       string   `json:"hlc,omitempty"`
	Origin    string   `json:"origin,omitempty"`
}

// From returns the record of a stamped point.
func From(p *crdt.Point) Record {
	v := p.Value
	r := Record{Node: p.Node.String(), Type: p.Type, Key: p.Key, Value: &v, Text: p.Text,
		Tombstone: p.Tombstone, HLC: p.Time.String(), Origin: p.Origin.String()}
	if p.Parent != uuid.Nil {
		r.Parent = p.Parent.String()
	}
	return r
}

// IsText reports whether node point p holds a text rather than a value: a
// text that is not empty, with the value 0 that set and import give it.
// (An empty text is not told apart from the value 0.) An edge point is
// never one: its text and value are the placement and state of the edge.
func IsText(p *crdt.Point) bool { return !p.IsEdge() && p.Text != "" && p.Value == 0 }

// Shown is the record of p as get and watch show it: a text point
// without its "value" 0, so that it reads as text (import takes it back
// as the same point).
func Shown(p *crdt.Point) Record {
	r := From(p)
	if IsText(p) {
		r.Value = nil
	}
	return r
}

// Append appends p as one export line (with its newline).
func Append(dst []byte, p *crdt.Point) []byte {
	r := From(p)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(&r) // cannot fail: strings and a finite number
	return append(dst, buf.Bytes()...)
}

// Parse parses and validates one import line. A missing key is "0",
// a missing value 0; a missing hlc or origin leaves the point unstamped
// for the server to stamp. Unknown fields are refused, so a typo is not
// silently dropped.
func Parse(line []byte) (crdt.Point, error) {
	// encoding/json turns invalid UTF-8 and lone surrogate escapes into
	// U+FFFD without a word: check the raw line so they are refused.
	if err := checkUTF8(line); err != nil {
		return crdt.Point{}, err
	}
	var r Record
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return crdt.Point{}, fmt.Errorf("not a point record: %v", err)
	}
	if dec.More() {
		return crdt.Point{}, errors.New("more than one JSON value on the line")
	}
	var p crdt.Point
	var err error
	if r.Node == "" {
		return p, errors.New(`"node" is missing`)
	}
	if p.Node, err = crdt.ParseID(r.Node); err != nil {
		return p, fmt.Errorf(`"node": %v`, err)
	}
	if r.Parent != "" {
		if p.Parent, err = crdt.ParseID(r.Parent); err != nil {
			return p, fmt.Errorf(`"parent": %v`, err)
		}
	}
	p.Type, p.Key, p.Text, p.Tombstone = r.Type, r.Key, r.Text, r.Tombstone
	if r.Value != nil {
		p.Value = *r.Value
	}
	if r.HLC != "" {
		if p.Time, err = crdt.ParseTimestamp(r.HLC); err != nil {
			return p, fmt.Errorf(`"hlc": %v`, err)
		}
	}
	if r.Origin != "" {
		if p.Origin, err = crdt.ParseID(r.Origin); err != nil {
			return p, fmt.Errorf(`"origin": %v`, err)
		}
	}
	p.Normalize()
	if err := p.ValidateUnstamped(); err != nil {
		return p, err
	}
	if math.IsInf(p.Value, 0) {
		return p, errors.New(`"value" out of range`)
	}
	return p, nil
}

// checkUTF8 refuses a line that is not valid UTF-8 or that has a \u escape
// of a lone UTF-16 surrogate (a high one not followed by a low one, or a
// low one alone): decoded, both would be U+FFFD, a text other than the
// one in the file. It names the byte offset of the first such sequence.
func checkUTF8(line []byte) error {
	if !utf8.Valid(line) {
		for i := 0; i < len(line); {
			r, size := utf8.DecodeRune(line[i:])
			if r == utf8.RuneError && size <= 1 {
				return fmt.Errorf("not valid UTF-8 at byte %d (0x%02x)", i+1, line[i])
			}
			i += size
		}
	}
	// A backslash only appears in JSON inside strings, as the start of
	// an escape: walk the escapes.
	for i := 0; i < len(line); i++ {
		if line[i] != '\\' {
			continue
		}
		if i+1 >= len(line) || line[i+1] != 'u' {
			i++ // a two-character escape such as \\ or \"
			continue
		}
		r, ok := hexEscape(line, i)
		if !ok {
			continue // malformed: the JSON decoder refuses it
		}
		switch {
		case utf16.IsSurrogate(r) && r < 0xdc00:
			lo, ok := hexEscape(line, i+6)
			if !ok || lo < 0xdc00 || lo > 0xdfff {
				return fmt.Errorf("lone UTF-16 surrogate %s at byte %d (not followed by a low surrogate): not a character", line[i:i+6], i+1)
			}
			i += 11
		case utf16.IsSurrogate(r):
			return fmt.Errorf("lone UTF-16 surrogate %s at byte %d (not preceded by a high surrogate): not a character", line[i:i+6], i+1)
		default:
			i += 5
		}
	}
	return nil
}

// hexEscape returns the code unit of the \uXXXX escape at line[i:].
func hexEscape(line []byte, i int) (rune, bool) {
	if i+6 > len(line) || line[i] != '\\' || line[i+1] != 'u' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(line[i+2:i+6]), 16, 16)
	if err != nil {
		return 0, false
	}
	return rune(v), true
}
