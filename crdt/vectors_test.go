package crdt_test

// Language-neutral test vectors for the crdt rules, under testdata/crdt/
// (schemas in testdata/crdt/README.md). The cases are defined in the tables
// below; `go test ./crdt -run Vector -update` computes their expected
// outputs from the code and rewrites the JSON files. Without -update each
// test reads its file, recomputes every case from the inputs in the file and
// fails naming the case that disagrees, then checks that the file is what
// the tables would generate (so a table edit without -update is caught).
//
// Every identifier here starts with vec so that this file cannot collide
// with other test files of the package.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// vecUpdate reports whether -update was given. The flag is shared with any
// other golden test of the test binary that defines it first.
var vecUpdate = vecUpdateFlag()

func vecUpdateFlag() func() bool {
	if f := flag.Lookup("update"); f != nil {
		return func() bool { return f.Value.String() == "true" }
	}
	p := flag.Bool("update", false, "rewrite golden files under testdata/ from the code")
	return func() bool { return *p }
}

const vecDir = "../testdata/crdt"

// vecFile is the shape of every vector file.
type vecFile[C any] struct {
	Description string `json:"description"`
	Cases       []C    `json:"cases"`
}

// vecSpec describes one vector file: its inputs (table) and how to compute
// the expected outputs of a case from its inputs.
type vecSpec[C any] struct {
	file        string
	description string
	table       []C
	name        func(*C) string
	// compute overwrites every output field of c from its input fields. It
	// returns an error when the inputs are invalid or when an invariant the
	// vector relies on does not hold (for example order independence).
	compute func(c *C) error
}

func vecGenerate[C any](s vecSpec[C]) ([]byte, error) {
	f := vecFile[C]{Description: s.description, Cases: make([]C, len(s.table))}
	for i := range s.table {
		c := s.table[i]
		if err := s.compute(&c); err != nil {
			return nil, fmt.Errorf("%s: table case %q: %w", s.file, s.name(&c), err)
		}
		f.Cases[i] = c
	}
	return vecMarshal(f)
}

func vecMarshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// vecRun regenerates the file when -update is given, then checks every case
// of the file against the code. It returns the cases read.
func vecRun[C any](t *testing.T, s vecSpec[C]) []C {
	t.Helper()
	path := filepath.Join(vecDir, s.file)
	if vecUpdate() {
		data, err := vecGenerate(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(vecDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./crdt -run Vector -update creates it)", err)
	}
	var f vecFile[C]
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if f.Description == "" || len(f.Cases) == 0 {
		t.Fatalf("%s: want a description and at least one case", path)
	}
	seen := make(map[string]bool)
	for i := range f.Cases {
		want := &f.Cases[i]
		name := s.name(want)
		if name == "" {
			t.Errorf("%s: case %d has no name", s.file, i)
		}
		if seen[name] {
			t.Errorf("%s: two cases named %q", s.file, name)
		}
		seen[name] = true
		got := *want
		if err := s.compute(&got); err != nil {
			t.Errorf("%s: case %q: %v", s.file, name, err)
			continue
		}
		if d := vecDiff(got, *want); d != "" {
			t.Errorf("%s: case %q: the code disagrees with the file:%s", s.file, name, d)
		}
	}
	if !t.Failed() {
		gen, err := vecGenerate(s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gen, data) {
			t.Errorf("%s is not what the tables in crdt/vectors_test.go generate; run go test ./crdt -run Vector -update", path)
		}
	}
	return f.Cases
}

// vecDiff lists the top-level JSON fields in which got and want differ.
func vecDiff(got, want any) string {
	g, err1 := json.Marshal(got)
	w, err2 := json.Marshal(want)
	if err1 != nil || err2 != nil {
		return fmt.Sprintf("\n\tmarshal: %v %v", err1, err2)
	}
	if bytes.Equal(g, w) {
		return ""
	}
	var gm, wm map[string]json.RawMessage
	if err := json.Unmarshal(g, &gm); err != nil {
		return "\n\t" + err.Error()
	}
	if err := json.Unmarshal(w, &wm); err != nil {
		return "\n\t" + err.Error()
	}
	var keys []string
	for k := range gm {
		keys = append(keys, k)
	}
	for k := range wm {
		if _, ok := gm[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		if !bytes.Equal(gm[k], wm[k]) {
			fmt.Fprintf(&b, "\n\t%s: code gives %s, file says %s", k, vecOrAbsent(gm[k]), vecOrAbsent(wm[k]))
		}
	}
	return b.String()
}

func vecOrAbsent(m json.RawMessage) string {
	if m == nil {
		return "(absent)"
	}
	return string(m)
}

// vecPermutations returns every permutation of 0..n-1 when there are at
// most 24, else 24 fixed ones: the identity, the reverse and 22 seeded
// shuffles.
func vecPermutations(n int) [][]int {
	ident := make([]int, n)
	for i := range ident {
		ident[i] = i
	}
	if n <= 4 {
		var out [][]int
		var rec func(prefix, rest []int)
		rec = func(prefix, rest []int) {
			if len(rest) == 0 {
				out = append(out, slices.Clone(prefix))
				return
			}
			for i := range rest {
				next := slices.Concat(rest[:i], rest[i+1:])
				rec(append(prefix, rest[i]), next)
			}
		}
		rec(nil, ident)
		return out
	}
	out := [][]int{ident, slices.Clone(ident)}
	slices.Reverse(out[1])
	rng := rand.New(rand.NewPCG(uint64(n), 0x5107))
	for len(out) < 24 {
		p := slices.Clone(ident)
		rng.Shuffle(n, func(i, j int) { p[i], p[j] = p[j], p[i] })
		out = append(out, p)
	}
	return out
}

// ---------------------------------------------------------------------------
// Shared vocabulary.

// vecPoint is a point in the public record style (docs/design.md, "The data model"). Every
// field is written out; parent is omitted for node points.
type vecPoint struct {
	Node      string  `json:"node"`
	Parent    string  `json:"parent,omitempty"`
	Type      string  `json:"type"`
	Key       string  `json:"key"`
	Value     float64 `json:"value"`
	Text      string  `json:"text"`
	Tombstone bool    `json:"tombstone"`
	HLC       string  `json:"hlc"`
	Origin    string  `json:"origin"`
}

// vecID parses a UUID that a vector must spell canonically (lowercase).
func vecID(field, s string) (id [16]byte, err error) {
	u, err := crdt.ParseID(s)
	if err != nil {
		return id, fmt.Errorf("%s: %w", field, err)
	}
	if u.String() != s {
		return id, fmt.Errorf("%s: %q is not in canonical lowercase form", field, s)
	}
	return u, nil
}

func vecTime(field, s string) (crdt.Timestamp, error) {
	ts, err := crdt.ParseTimestamp(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return ts, nil
}

// point converts v and checks that it is a valid, normalized point.
func (v vecPoint) point() (crdt.Point, error) {
	var p crdt.Point
	var err error
	if p.Node, err = vecID("node", v.Node); err != nil {
		return p, err
	}
	if v.Parent != "" {
		if p.Parent, err = vecID("parent", v.Parent); err != nil {
			return p, err
		}
	}
	p.Type, p.Key, p.Value, p.Text, p.Tombstone = v.Type, v.Key, v.Value, v.Text, v.Tombstone
	if p.Time, err = vecTime("hlc", v.HLC); err != nil {
		return p, err
	}
	if p.Origin, err = vecID("origin", v.Origin); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	return p, nil
}

func vecHex(b []byte) string { return hex.EncodeToString(b) }

// vecTS is the decimal form of the timestamp (ms, logical).
func vecTS(ms int64, logical uint16) string { return crdt.NewTimestamp(ms, logical).String() }

// 2026-01-01T00:00:00Z in milliseconds: the "now" of most vectors.
var vecT2026 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// IDs of the point, digest and merge vectors.
const (
	vecNode    = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	vecNode2   = "7d444840-9dc0-11d1-b245-5ffdce74fad2"
	vecParent  = "9b2f8c6e-1d4a-4e7b-8c3d-5a6f7e8d9c0b"
	vecOrigin  = "c0ffee00-1234-4abc-8def-0123456789ab"
	vecOrigin2 = "0badcafe-0000-4000-8000-000000000001"
)

// ---------------------------------------------------------------------------
// points.json

type vecPointCase struct {
	Name        string   `json:"name"`
	Note        string   `json:"note,omitempty"`
	Point       vecPoint `json:"point"`
	Encoding    string   `json:"encoding"`
	DigestInput string   `json:"digestInput"`
	Digest      string   `json:"digest"`
}

func vecNodePoint(typ, key string, value float64, text string) vecPoint {
	return vecPoint{Node: vecNode, Type: typ, Key: key, Value: value, Text: text, HLC: vecTS(vecT2026+123, 7), Origin: vecOrigin}
}

func vecEdgePoint(typ string, value float64, text string, tombstone bool) vecPoint {
	p := vecNodePoint(typ, "0", value, text)
	p.Parent = vecParent
	p.Tombstone = tombstone
	return p
}

func vecPointTable() []vecPointCase {
	tomb := vecNodePoint("temperature", "0", 0, "")
	tomb.Tombstone = true
	maxHLC := vecNodePoint("count", "0", 1, "")
	maxHLC.HLC = "18446744073709551615"
	minHLC := vecNodePoint("count", "0", 1, "")
	minHLC.HLC = "1"
	other := vecNodePoint("temperature", "0", 19.5, "")
	other.Node, other.Origin = vecNode2, vecOrigin2
	return []vecPointCase{
		{Name: "sensor reading", Note: "21.37 is not exact in float32: value encodes as float64 (0xcb)",
			Point: vecNodePoint("temperature", "0", 21.37, "")},
		{Name: "integral value, positive fixint", Note: "integral values encode as msgpack integers in the shortest form: 42 is 0x2a",
			Point: vecNodePoint("count", "0", 42, "")},
		{Name: "zero value", Note: "0 encodes as 0x00",
			Point: vecNodePoint("count", "0", 0, "")},
		{Name: "integral value, uint8", Note: "200 is 0xcc 0xc8: non-negative integers use the unsigned forms",
			Point: vecNodePoint("count", "0", 200, "")},
		{Name: "integral value, uint16", Point: vecNodePoint("count", "0", 65535, "")},
		{Name: "integral value, uint32", Point: vecNodePoint("count", "0", 70000, "")},
		{Name: "integral value, uint64", Note: "1e18 is integral and below 2^63: uint64 (0xcf)",
			Point: vecNodePoint("count", "0", 1e18, "")},
		{Name: "integral value 2^63, beyond int64", Note: "integral but not below 2^63, so not an integer; exact in float32, so float32 (0xca 5f000000)",
			Point: vecNodePoint("count", "0", 9223372036854775808, "")},
		{Name: "negative value, negative fixint", Note: "-5 is 0xfb",
			Point: vecNodePoint("offset", "0", -5, "")},
		{Name: "negative value, int8", Note: "-40 is 0xd0 0xd8: negative integers use the signed forms",
			Point: vecNodePoint("temperature", "0", -40, "")},
		{Name: "negative value, int16", Point: vecNodePoint("offset", "0", -1000, "")},
		{Name: "negative value, int32", Point: vecNodePoint("offset", "0", -100000, "")},
		{Name: "negative value, int64", Point: vecNodePoint("offset", "0", -3000000000, "")},
		{Name: "negative value, float32", Note: "-12.75 is exact in float32",
			Point: vecNodePoint("temperature", "0", -12.75, "")},
		{Name: "float32-exact value", Note: "23.5 is exact in float32: 0xca 41bc0000",
			Point: vecNodePoint("temperature", "0", 23.5, "")},
		{Name: "non-float32 value", Note: "0.1 is not exact in float32: 0xcb 3fb999999999999a",
			Point: vecNodePoint("temperature", "0", 0.1, "")},
		{Name: "large value", Note: "1e300 is integral but far beyond int64, and overflows float32: float64",
			Point: vecNodePoint("energy", "0", 1e300, "")},
		{Name: "text with non-ASCII UTF-8", Note: "text is UTF-8: 32 bytes, so str8 (0xd9 20)",
			Point: vecNodePoint("label", "0", 0, "Température °C — 温度 🌡")},
		{Name: "short text", Note: "under 32 bytes: fixstr",
			Point: vecNodePoint("nodeType", "0", 0, "device")},
		{Name: "long text", Note: "300 bytes: str16 (0xda 012c)",
			Point: vecNodePoint("description", "0", 0, strings.Repeat("siot ", 60))},
		{Name: "empty text", Point: vecNodePoint("description", "0", 0, "")},
		{Name: "tombstone", Point: tomb},
		{Name: "edge point", Note: "node is the child, parent the parent; parent encodes as bin8 instead of nil",
			Point: vecEdgePoint("edge", 0, "", false)},
		{Name: "deleted edge", Point: vecEdgePoint("edge", 0, "", true)},
		{Name: "edge attribute point", Note: "points other than \"edge\" can belong to an edge too",
			Point: vecEdgePoint("role", 0, "admin", false)},
		{Name: "key other than 0", Note: "a map entry: key is any printable ASCII without space",
			Point: vecNodePoint("config", "sensor:temp", 5, "")},
		{Name: "array key", Point: vecNodePoint("channel", "3", 1.25, "")},
		{Name: "max hlc", Note: "hlc 2^64-1 encodes as uint64 (0xcf ffffffffffffffff)", Point: maxHLC},
		{Name: "min hlc", Note: "hlc 1 encodes as positive fixint 0x01", Point: minHLC},
		{Name: "other node and origin", Point: other},
	}
}

func vecPointCompute(c *vecPointCase) error {
	p, err := c.Point.point()
	if err != nil {
		return err
	}
	enc := crdt.AppendPoint(nil, &p)
	in := crdt.AppendDigestInput(nil, &p)
	d := crdt.PointDigest(&p)
	c.Encoding, c.DigestInput, c.Digest = vecHex(enc), vecHex(in), d.String()

	// The digest is the first 16 bytes of SHA-256 of the digest input.
	if sum := sha256.Sum256(in); vecHex(sum[:16]) != c.Digest {
		return fmt.Errorf("PointDigest %s is not the first 16 bytes of SHA-256(digest input) %x", c.Digest, sum[:16])
	}
	// The canonical encoding decodes back to the point.
	back, err := crdt.DecodePoint(enc)
	if err != nil {
		return fmt.Errorf("DecodePoint(encoding): %w", err)
	}
	if back != p {
		return fmt.Errorf("DecodePoint(encoding) = %+v, want %+v", back, p)
	}
	return nil
}

func TestVectorPoints(t *testing.T) {
	vecRun(t, vecSpec[vecPointCase]{
		file: "points.json",
		description: "Canonical encoding (crdt.AppendPoint, msgpack), digest input (crdt.AppendDigestInput) " +
			"and digest (crdt.PointDigest: first 16 bytes of SHA-256 of the digest input) of single points. " +
			"See README.md.",
		table:   vecPointTable(),
		name:    func(c *vecPointCase) string { return c.Name },
		compute: vecPointCompute,
	})
}

// ---------------------------------------------------------------------------
// digests.json

type vecDigestCase struct {
	Name   string     `json:"name"`
	Note   string     `json:"note,omitempty"`
	Add    []vecPoint `json:"add"`
	Sub    []vecPoint `json:"sub,omitempty"`
	AddRaw []string   `json:"addRaw,omitempty"`
	SubRaw []string   `json:"subRaw,omitempty"`
	SameAs string     `json:"sameAs,omitempty"`
	Digest string     `json:"digest"`
}

func vecDigestTable() []vecDigestCase {
	p1 := vecNodePoint("temperature", "0", 21.5, "")
	p2 := vecNodePoint("humidity", "0", 40, "")
	p3 := vecEdgePoint("edge", 0, "", false)
	p2b := p2
	p2b.Value, p2b.HLC = 41, vecTS(vecT2026+5000, 0)
	none := []vecPoint{}
	return []vecDigestCase{
		{Name: "empty set", Note: "the digest of the empty set is zero", Add: none},
		{Name: "one point", Note: "equals the point's own digest", Add: []vecPoint{p1}},
		{Name: "two points", Add: []vecPoint{p1, p2}},
		{Name: "three points", Add: []vecPoint{p1, p2, p3}},
		{Name: "three points, other order", Note: "the sum does not depend on order", Add: []vecPoint{p3, p1, p2}, SameAs: "three points"},
		{Name: "same point twice", Note: "a point counted twice (a node reachable by two paths) adds twice: 2·d mod 2^128, never zero as XOR would give",
			Add: []vecPoint{p1, p1}},
		{Name: "first and third", Add: []vecPoint{p1, p3}},
		{Name: "removal", Note: "sum of three minus one equals the sum of the other two",
			Add: []vecPoint{p1, p2, p3}, Sub: []vecPoint{p2}, SameAs: "first and third"},
		{Name: "first and replaced second", Add: []vecPoint{p1, p2b}},
		{Name: "register update", Note: "a store replacing the winner of a register subtracts the old write and adds the new one",
			Add: []vecPoint{p1, p2, p2b}, Sub: []vecPoint{p2}, SameAs: "first and replaced second"},
		{Name: "carry from the low half", Note: "raw 128-bit arithmetic: big-endian hex, sum modulo 2^128",
			Add: none, AddRaw: []string{"0000000000000000ffffffffffffffff", "00000000000000000000000000000001"}},
		{Name: "wrap around 2^128", Add: none, AddRaw: []string{"ffffffffffffffffffffffffffffffff", "00000000000000000000000000000001"}},
		{Name: "large sum wraps", Add: none, AddRaw: []string{"80000000000000008000000000000000", "80000000000000008000000000000001"}},
		{Name: "borrow below zero", Add: none, SubRaw: []string{"00000000000000000000000000000001"}},
		{Name: "borrow across halves", Add: none, AddRaw: []string{"00000000000000010000000000000000"}, SubRaw: []string{"00000000000000000000000000000001"}},
	}
}

func vecDigestCompute(c *vecDigestCase) error {
	var sum crdt.Digest
	for i, terms := range [][]vecPoint{c.Add, c.Sub} {
		for _, v := range terms {
			p, err := v.point()
			if err != nil {
				return err
			}
			if i == 0 {
				sum = sum.Add(crdt.PointDigest(&p))
			} else {
				sum = sum.Sub(crdt.PointDigest(&p))
			}
		}
	}
	for i, terms := range [][]string{c.AddRaw, c.SubRaw} {
		for _, s := range terms {
			d, err := crdt.ParseDigest(s)
			if err != nil {
				return err
			}
			if i == 0 {
				sum = sum.Add(d)
			} else {
				sum = sum.Sub(d)
			}
		}
	}
	c.Digest = sum.String()
	if back, err := crdt.ParseDigest(c.Digest); err != nil || back != sum {
		return fmt.Errorf("ParseDigest(%s) = %v, %v", c.Digest, back, err)
	}
	return nil
}

func TestVectorDigests(t *testing.T) {
	cases := vecRun(t, vecSpec[vecDigestCase]{
		file: "digests.json",
		description: "Combined digests: the sum modulo 2^128 (crdt.Digest.Add/Sub) of the point digests of add, " +
			"minus those of sub, plus raw digests addRaw, minus subRaw. See README.md.",
		table:   vecDigestTable(),
		name:    func(c *vecDigestCase) string { return c.Name },
		compute: vecDigestCompute,
	})
	byName := make(map[string]string)
	for _, c := range cases {
		byName[c.Name] = c.Digest
	}
	for _, c := range cases {
		if c.SameAs != "" {
			if other, ok := byName[c.SameAs]; !ok || other != c.Digest {
				t.Errorf("digests.json: case %q: digest %s, but case %q (sameAs) has %q", c.Name, c.Digest, c.SameAs, other)
			}
		}
		if len(c.Add) > 0 && len(c.Sub)+len(c.SubRaw) == 0 && c.Digest == strings.Repeat("0", 32) {
			t.Errorf("digests.json: case %q: a non-empty set of points has the zero digest (cancelled out)", c.Name)
		}
	}
}

// ---------------------------------------------------------------------------
// merge.json

type vecRegister struct {
	Node   string `json:"node"`
	Parent string `json:"parent,omitempty"`
	Type   string `json:"type"`
	Key    string `json:"key"`
}

type vecWrite struct {
	Value     float64 `json:"value"`
	Text      string  `json:"text"`
	Tombstone bool    `json:"tombstone"`
	HLC       string  `json:"hlc"`
	Origin    string  `json:"origin"`
}

type vecMergeCase struct {
	Name        string      `json:"name"`
	Note        string      `json:"note,omitempty"`
	Register    vecRegister `json:"register"`
	Writes      []vecWrite  `json:"writes"`
	Winner      int         `json:"winner"`
	WinnerWrite vecWrite    `json:"winnerWrite"`
}

func (r vecRegister) point(w vecWrite) (crdt.Point, error) {
	v := vecPoint{Node: r.Node, Parent: r.Parent, Type: r.Type, Key: r.Key,
		Value: w.Value, Text: w.Text, Tombstone: w.Tombstone, HLC: w.HLC, Origin: w.Origin}
	return v.point()
}

func vecMergeTable() []vecMergeCase {
	reg := vecRegister{Node: vecNode, Type: "temperature", Key: "0"}
	t0 := vecTS(vecT2026, 0)
	const (
		oLow   = "00000000-0000-0000-0000-000000000001"
		oHigh  = "ffffffff-ffff-ffff-ffff-fffffffffffe"
		o7f    = "7fffffff-ffff-ffff-ffff-ffffffffffff"
		o80    = "80000000-0000-0000-0000-000000000000"
		oLast1 = "c0ffee00-1234-4abc-8def-0123456789aa"
		oLast2 = "c0ffee00-1234-4abc-8def-0123456789ab"
	)
	w := func(hlc, origin string, value float64, text string, tomb bool) vecWrite {
		return vecWrite{Value: value, Text: text, Tombstone: tomb, HLC: hlc, Origin: origin}
	}
	big := uint64(crdt.NewTimestamp(vecT2026, 0))
	return []vecMergeCase{
		{Name: "single write", Register: reg, Writes: []vecWrite{w(t0, vecOrigin, 21, "", false)}},
		{Name: "later hlc wins", Note: "hlc decides before origin, tombstone, value and text",
			Register: reg, Writes: []vecWrite{
				w(vecTS(vecT2026+1, 0), oHigh, 30, "z", false),
				w(vecTS(vecT2026+3, 0), oLow, 10, "", false),
				w(vecTS(vecT2026+2, 0), o80, 0, "", true),
			}},
		{Name: "later hlc wins by logical counter", Register: reg, Writes: []vecWrite{
			w(vecTS(vecT2026, 2), oHigh, 99, "", false),
			w(vecTS(vecT2026, 3), oLow, 1, "", false),
		}},
		{Name: "newer tombstone deletes", Register: reg, Writes: []vecWrite{
			w(vecTS(vecT2026, 0), vecOrigin, 21, "", false),
			w(vecTS(vecT2026+1000, 0), vecOrigin2, 0, "", true),
		}},
		{Name: "newer value re-creates after a tombstone", Register: reg, Writes: []vecWrite{
			w(vecTS(vecT2026, 0), vecOrigin, 0, "", true),
			w(vecTS(vecT2026+1000, 0), vecOrigin2, 22, "", false),
		}},
		{Name: "hlc compares as an integer, not as a decimal string", Note: "\"100000\" > \"99999\" numerically, not lexically",
			Register: reg, Writes: []vecWrite{
				w("99999", oHigh, 1, "", false),
				w("100000", oLow, 2, "", false),
			}},
		{Name: "hlc above 2^53 differing by one", Note: "these hlcs round to the same float64: compare them as 64-bit integers (BigInt), or the origin would wrongly decide",
			Register: reg, Writes: []vecWrite{
				w(strconv.FormatUint(big+1, 10), oLow, 1, "", false),
				w(strconv.FormatUint(big, 10), oHigh, 2, "", false),
			}},
		{Name: "hlc above 2^63 compares unsigned", Register: reg, Writes: []vecWrite{
			w("9223372036854775807", oHigh, 1, "", false),
			w("9223372036854775808", oLow, 2, "", false),
		}},
		{Name: "equal hlc, greater origin wins", Note: "origin compares as 16 bytes, unsigned, lexicographically (the same as comparing the canonical lowercase strings)",
			Register: reg, Writes: []vecWrite{
				w(t0, o80, 1, "", false),
				w(t0, oLow, 3, "", true),
				w(t0, o7f, 2, "z", false),
			}},
		{Name: "equal hlc, origins differ in the last byte", Register: reg, Writes: []vecWrite{
			w(t0, oLast2, 1, "", false),
			w(t0, oLast1, 2, "", false),
		}},
		{Name: "full tie: tombstone beats value", Note: "same hlc and origin (a correct writer never does this): a deletion beats a value",
			Register: reg, Writes: []vecWrite{
				w(t0, vecOrigin, 99, "zzz", false),
				w(t0, vecOrigin, 0, "", true),
			}},
		{Name: "full tie: greater value wins", Register: reg, Writes: []vecWrite{
			w(t0, vecOrigin, 1.5, "", false),
			w(t0, vecOrigin, 2.5, "", false),
			w(t0, vecOrigin, -3, "", false),
		}},
		{Name: "full tie: negative values in total order", Note: "-0.5 > -1 > -2",
			Register: reg, Writes: []vecWrite{
				w(t0, vecOrigin, -2, "", false),
				w(t0, vecOrigin, -0.5, "", false),
				w(t0, vecOrigin, -1, "", false),
			}},
		{Name: "full tie: two tombstones, value decides", Register: reg, Writes: []vecWrite{
			w(t0, vecOrigin, 7, "", true),
			w(t0, vecOrigin, 8, "", true),
			w(t0, vecOrigin, 100, "", false),
		}},
		{Name: "full tie: value decides before text", Register: reg, Writes: []vecWrite{
			w(t0, vecOrigin, 1, "zzz", false),
			w(t0, vecOrigin, 2, "aaa", false),
		}},
		{Name: "full tie: greater text wins", Register: reg, Writes: []vecWrite{
			w(t0, vecOrigin, 0, "abc", false),
			w(t0, vecOrigin, 0, "abd", false),
			w(t0, vecOrigin, 0, "ab", false),
			w(t0, vecOrigin, 0, "", false),
		}},
		{Name: "full tie: text compares as UTF-8 bytes, not UTF-16", Note: "U+1F600 (f0 9f 98 80) > U+FF21 (ef bc a1) bytewise; JavaScript's < on strings (UTF-16 units d83d < ff21) says the opposite",
			Register: reg, Writes: []vecWrite{
				w(t0, vecOrigin, 0, "\uff21", false),
				w(t0, vecOrigin, 0, "😀", false),
			}},
		{Name: "duplicate write", Note: "merging a write again changes nothing; winner is the lowest index holding the winning write",
			Register: reg, Writes: []vecWrite{
				w(vecTS(vecT2026+10, 0), vecOrigin, 5, "", false),
				w(vecTS(vecT2026, 0), vecOrigin2, 6, "", false),
				w(vecTS(vecT2026+10, 0), vecOrigin, 5, "", false),
			}},
		{Name: "duplicate write only", Register: reg, Writes: []vecWrite{
			w(t0, vecOrigin, 5, "x", false),
			w(t0, vecOrigin, 5, "x", false),
		}},
		{Name: "edge register", Note: "an edge point's register: a later tombstone deletes the edge",
			Register: vecRegister{Node: vecNode, Parent: vecParent, Type: "edge", Key: "0"}, Writes: []vecWrite{
				w(vecTS(vecT2026, 0), vecOrigin, 0, "", false),
				w(vecTS(vecT2026+1, 0), vecOrigin, 0, "", true),
			}},
	}
}

func vecMergeCompute(c *vecMergeCase) error {
	if len(c.Writes) == 0 {
		return errors.New("no writes")
	}
	pts := make([]crdt.Point, len(c.Writes))
	for i, w := range c.Writes {
		p, err := c.Register.point(w)
		if err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
		pts[i] = p
	}
	var winner crdt.Point
	for n, perm := range vecPermutations(len(pts)) {
		cur := pts[perm[0]]
		for _, i := range perm[1:] {
			cur, _ = crdt.Merge(cur, pts[i])
		}
		if n == 0 {
			winner = cur
		} else if cur != winner {
			return fmt.Errorf("folding the writes in order %v gives %+v, in order %v %+v", perm, cur, vecPermutations(len(pts))[0], winner)
		}
	}
	c.Winner = slices.Index(pts, winner)
	c.WinnerWrite = c.Writes[c.Winner]
	// The winner absorbs every write; every other write loses to it.
	for i := range pts {
		if got, changed := crdt.Merge(winner, pts[i]); changed || got != winner {
			return fmt.Errorf("Merge(winner, write %d) = %+v, %v; want the winner unchanged", i, got, changed)
		}
		if pts[i] != winner {
			if got, changed := crdt.Merge(pts[i], winner); !changed || got != winner {
				return fmt.Errorf("Merge(write %d, winner) = %+v, %v; want the winner, changed", i, got, changed)
			}
		}
	}
	return nil
}

func TestVectorMerge(t *testing.T) {
	vecRun(t, vecSpec[vecMergeCase]{
		file: "merge.json",
		description: "Last-writer-wins merge (crdt.Compare, crdt.Merge): the winner of a register's writes, whatever " +
			"the order they are merged in. winner is the lowest index of a write equal to the winning one. See README.md.",
		table:   vecMergeTable(),
		name:    func(c *vecMergeCase) string { return c.Name },
		compute: vecMergeCompute,
	})
}

// ---------------------------------------------------------------------------
// hlc.json

type vecHLCCase struct {
	Name        string `json:"name"`
	Note        string `json:"note,omitempty"`
	Op          string `json:"op"`
	Last        string `json:"last,omitempty"`
	PhysicalMs  *int64 `json:"physicalMs,omitempty"`
	MaxOffsetMs *int64 `json:"maxOffsetMs,omitempty"`
	// CorrectionMs is the correction set with Clock.SetCorrection; absent
	// means zero.
	CorrectionMs int64   `json:"correctionMs,omitempty"`
	Remote       string  `json:"remote,omitempty"`
	Input        *string `json:"input,omitempty"`
	Result       string  `json:"result,omitempty"`
	Error        string  `json:"error,omitempty"`
	LastAfter    string  `json:"lastAfter,omitempty"`
}

func vecHLCTable() []vecHLCCase {
	T := vecT2026
	y2040 := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	clock := func(name, note, op, last string, physical, maxOffset int64, remote string) vecHLCCase {
		return vecHLCCase{Name: name, Note: note, Op: op, Last: last, PhysicalMs: &physical, MaxOffsetMs: &maxOffset, Remote: remote}
	}
	corrected := func(c vecHLCCase, correctionMs int64) vecHLCCase {
		c.CorrectionMs = correctionMs
		return c
	}
	parse := func(name, input string) vecHLCCase {
		return vecHLCCase{Name: name, Op: "parse", Input: &input}
	}
	const max = "18446744073709551615"
	const m = 60000
	return []vecHLCCase{
		clock("now: fresh clock", "a clock that has seen nothing returns physical<<16", "now", "0", T, m, ""),
		clock("now: physical ahead of last", "physical wins: (T+1000, 0)", "now", vecTS(T, 5), T+1000, m, ""),
		clock("now: physical in the same millisecond as last", "last+1: (T, 6)", "now", vecTS(T, 5), T, m, ""),
		clock("now: physical behind last", "the logical counter increments: (T, 6)", "now", vecTS(T, 5), T-1000, m, ""),
		clock("now: logical counter overflow", "last is (T, 0xffff), physical behind: last+1 carries into the next millisecond, (T+1, 0)",
			"now", vecTS(T, 0xffff), T-5, m, ""),
		clock("now: end of the range", "at 2^64-1 the clock stops advancing", "now", max, T, m, ""),
		clock("now: physical before the epoch", "negative physical time clamps to 0; a fresh clock then returns 1 (last+1)", "now", "0", -5000, m, ""),
		clock("now: 1970 device that has observed a 2026 timestamp", "a device whose physical clock is in 1970 keeps issuing last+1",
			"now", vecTS(T, 3), 1000, m, ""),
		clock("update: remote behind, physical wins", "", "update", vecTS(T, 5), T+1000, m, vecTS(T-3000, 9)),
		clock("update: remote behind, last+1 wins", "", "update", vecTS(T, 5), T-1000, m, vecTS(T, 2)),
		clock("update: remote equal to last", "", "update", vecTS(T, 5), T, m, vecTS(T, 5)),
		clock("update: fresh clock, remote behind physical", "", "update", "0", T, m, vecTS(T-1000, 0)),
		clock("update: remote ahead within the offset", "remote+1: (T+30000, 8)", "update", vecTS(T, 5), T, m, vecTS(T+30000, 7)),
		clock("update: remote exactly at the limit", "(T+maxOffset, 0xfffe) is the greatest remote accepted: remote+1 still fits in that millisecond",
			"update", vecTS(T, 5), T, m, vecTS(T+m, 0xfffe)),
		clock("update: remote at the limit millisecond, logical 0", "", "update", vecTS(T, 5), T, m, vecTS(T+m, 0)),
		clock("update: remote one past the limit", "(T+maxOffset, 0xffff) is refused: remote+1 would not fit in the last allowed millisecond; the clock is unchanged",
			"update", vecTS(T, 5), T, m, vecTS(T+m, 0xffff)),
		clock("update: remote one millisecond past the limit", "", "update", vecTS(T, 5), T, m, vecTS(T+m+1, 0)),
		clock("update: small max offset, at the limit", "", "update", "0", T, 1000, vecTS(T+1000, 0xfffe)),
		clock("update: small max offset, past the limit", "", "update", "0", T, 1000, vecTS(T+1001, 0)),
		clock("update: remote logical counter overflow", "remote is (T, 0xffff), physical behind: remote+1 carries into (T+1, 0)",
			"update", vecTS(T, 0), T-5, m, vecTS(T, 0xffff)),
		clock("update: 1970 device without correction refuses a 2026 timestamp",
			"the skew check is against the corrected physical time; until the link sets a correction, a device whose clock is in 1970 refuses the present",
			"update", "0", 1000, m, vecTS(T, 0)),
		clock("update: 1970 device with a 2026 last, without correction",
			"refused although only 10 ms ahead of the clock's own last: the reference is physical time, not last",
			"update", vecTS(T, 3), 1000, m, vecTS(T+10, 0)),
		corrected(clock("update: 1970 device with a correction accepts a 2026 timestamp",
			"the upstream said it was T+5 when the device read 1000: correction T+5-1000. The remote is accepted and the clock jumps forward to the corrected physical time (T+5, 0)",
			"update", "0", 1000, m, vecTS(T, 3)), T+5-1000),
		corrected(clock("now: 1970 device with a correction stamps the present", "physical 1000 + correction = T: (T, 0)",
			"now", "0", 1000, m, ""), T-1000),
		corrected(clock("now: 2040 device corrected back", "a negative correction: physical 2040 + correction = T: (T, 0)",
			"now", "0", y2040, m, ""), T-y2040),
		corrected(clock("now: corrected clock behind last", "a correction never moves the clock backwards: last+1",
			"now", vecTS(y2040, 0), y2040, m, ""), T-y2040),
		corrected(clock("update: corrected clock refuses what the raw clock would accept",
			"physical 2040 corrected back to T: a remote in 2040 is now far in the future", "update", vecTS(T, 0), y2040, m, vecTS(y2040, 0)), T-y2040),
		clock("update: remote in 2040 refused, clock unchanged", "a device with a broken clock must not win every merge; lastAfter equals last",
			"update", vecTS(T, 3), T+10, m, vecTS(y2040, 0)),
		clock("update: physical near the end of the range", "when physical+maxOffset reaches MaxPhysical (2^48-1) every remote below 2^64-1 is accepted",
			"update", "0", crdt.MaxPhysical-10, m, "18446744073709551614"),
		clock("update: remote 2^64-1 refused", "", "update", "0", crdt.MaxPhysical-10, m, max),
		parse("parse: zero", "0"),
		parse("parse: one", "1"),
		parse("parse: typical", vecTS(T, 7)),
		parse("parse: max", max),
		parse("parse: empty", ""),
		parse("parse: leading zero", "01"),
		parse("parse: double zero", "00"),
		parse("parse: plus sign", "+1"),
		parse("parse: minus sign", "-1"),
		parse("parse: leading space", " 1"),
		parse("parse: trailing space", "1 "),
		parse("parse: non-digit", "12a"),
		parse("parse: exponent", "1e5"),
		parse("parse: decimal point", "1.0"),
		parse("parse: hex", "0x10"),
		parse("parse: non-ASCII digit", "１"),
		parse("parse: 2^64 overflows", "18446744073709551616"),
		parse("parse: 20 nines overflow", "99999999999999999999"),
		parse("parse: 21 digits", "100000000000000000000"),
	}
}

func vecHLCCompute(c *vecHLCCase) error {
	c.Result, c.Error, c.LastAfter = "", "", ""
	switch c.Op {
	case "parse":
		if c.Input == nil || c.Last != "" || c.PhysicalMs != nil || c.MaxOffsetMs != nil || c.CorrectionMs != 0 || c.Remote != "" {
			return errors.New("a parse case has input and nothing else")
		}
		ts, err := crdt.ParseTimestamp(*c.Input)
		if err != nil {
			c.Error = "invalid"
			return nil
		}
		if ts.String() != *c.Input {
			return fmt.Errorf("ParseTimestamp(%q).String() = %q", *c.Input, ts.String())
		}
		c.Result = ts.String()
		return nil
	case "now", "update":
	default:
		return fmt.Errorf("unknown op %q", c.Op)
	}
	if c.Input != nil || c.PhysicalMs == nil || c.MaxOffsetMs == nil || *c.MaxOffsetMs <= 0 {
		return errors.New("a clock case has last, physicalMs and a positive maxOffsetMs, and no input")
	}
	if (c.Op == "update") != (c.Remote != "") {
		return errors.New("remote is given for update and only for update")
	}
	physical, maxOffset, correction := *c.PhysicalMs, *c.MaxOffsetMs, c.CorrectionMs
	for _, v := range []int64{physical, maxOffset, correction, physical + correction} {
		if v <= -(1<<53) || v >= 1<<53 {
			return errors.New("physicalMs, maxOffsetMs and correctionMs must be exact in a JavaScript number")
		}
	}
	last, err := vecTime("last", c.Last)
	if err != nil {
		return err
	}
	clock, err := crdt.NewClock(crdt.ClockConfig{
		Physical:  func() time.Time { return time.UnixMilli(physical) },
		MaxOffset: time.Duration(maxOffset) * time.Millisecond,
	})
	if err != nil {
		return err
	}
	clock.SetCorrection(time.Duration(correction) * time.Millisecond)
	clock.Observe(last)
	if clock.Last() != last {
		return fmt.Errorf("after Observe(%s), Last() = %s", last, clock.Last())
	}
	if c.Op == "now" {
		c.Result = clock.Now().String()
	} else {
		remote, err := vecTime("remote", c.Remote)
		if err != nil {
			return err
		}
		checkErr := clock.Check(remote)
		ok := crdt.SkewOK(remote, crdt.NewTimestamp(physical+correction, 0), maxOffset)
		ts, err := clock.Update(remote)
		switch {
		case errors.Is(err, crdt.ErrClockSkew):
			c.Error = "skew"
		case err != nil:
			return fmt.Errorf("Update: %w", err)
		default:
			c.Result = ts.String()
		}
		if (checkErr == nil) != (err == nil) || ok != (err == nil) {
			return fmt.Errorf("Check says %v and SkewOK %v, but Update says %v", checkErr, ok, err)
		}
	}
	c.LastAfter = clock.Last().String()
	return nil
}

func TestVectorHLC(t *testing.T) {
	vecRun(t, vecSpec[vecHLCCase]{
		file: "hlc.json",
		description: "Hybrid logical clock (crdt.Clock): a clock that has observed last, with physical time physicalMs, " +
			"max offset maxOffsetMs and correction correctionMs, performs op now or update(remote); and crdt.ParseTimestamp (op parse). See README.md.",
		table:   vecHLCTable(),
		name:    func(c *vecHLCCase) string { return c.Name },
		compute: vecHLCCompute,
	})
}

// ---------------------------------------------------------------------------
// tree.json

type vecEdgeReg struct {
	Parent    string `json:"parent"`
	Child     string `json:"child"`
	Tombstone bool   `json:"tombstone"`
	Moved     bool   `json:"moved"`
	Place     string `json:"place,omitempty"`
	HLC       string `json:"hlc"`
	Origin    string `json:"origin"`
}

type vecEdge struct {
	Parent string `json:"parent"`
	Child  string `json:"child"`
}

type vecTreeCase struct {
	Name      string       `json:"name"`
	Note      string       `json:"note,omitempty"`
	Registers []vecEdgeReg `json:"registers"`
	Live      []vecEdge    `json:"live"`
}

// vecN names the readable IDs of the tree vectors: R (root) is …01, A to F
// are …0a to …0f, origins O1 to O3 are …e1 to …e3.
func vecN(name string) string {
	suffix := map[string]string{"R": "01", "A": "0a", "B": "0b", "C": "0c", "D": "0d", "E": "0e", "F": "0f",
		"O1": "e1", "O2": "e2", "O3": "e3"}[name]
	if suffix == "" {
		panic("vecN: unknown name " + name)
	}
	return "00000000-0000-0000-0000-0000000000" + suffix
}

// vecE is an edge register parent→child. kind is "live", "moved" (the
// tombstone a move writes on the edge it takes the child away from, value
// crdt.EdgeMoved) or "deleted" (a deletion tombstone).
func vecE(parent, child, kind string, hlc uint64, origin string) vecEdgeReg {
	if kind != "live" && kind != "moved" && kind != "deleted" {
		panic("vecE: unknown kind " + kind)
	}
	return vecEdgeReg{Parent: vecN(parent), Child: vecN(child), Tombstone: kind != "live", Moved: kind == "moved",
		HLC: strconv.FormatUint(hlc, 10), Origin: vecN(origin)}
}

// vecPl is the id of the placement a plain edge parent→child written at
// hlc starts.
func vecPl(parent string, hlc uint64) string {
	return crdt.PlaceID(uuid.MustParse(vecN(parent)), crdt.Timestamp(hlc))
}

// vecMv is a move of child from one parent to another in the placement
// format: the new edge (value 1) and the moved-away tombstone, both naming
// place.
func vecMv(child, from, to, place string, hlc uint64, origin string) []vecEdgeReg {
	in := vecE(to, child, "live", hlc, origin)
	in.Moved, in.Place = true, place
	away := vecE(from, child, "moved", hlc, origin)
	away.Place = place
	return []vecEdgeReg{in, away}
}

// vecDel is a deletion of child from parent that names the placement it
// ends.
func vecDel(child, from, place string, hlc uint64, origin string) vecEdgeReg {
	d := vecE(from, child, "deleted", hlc, origin)
	d.Place = place
	return d
}

func vecTreeTable() []vecTreeCase {
	const live, moved, deleted = "live", "moved", "deleted"
	big := uint64(crdt.NewTimestamp(vecT2026, 0))
	base := func(children ...string) []vecEdgeReg {
		var regs []vecEdgeReg
		for i, c := range children {
			regs = append(regs, vecE("R", c, live, uint64(1+i), "O1"))
		}
		return regs
	}
	with := func(a []vecEdgeReg, b ...vecEdgeReg) []vecEdgeReg { return slices.Concat(a, b) }
	// A 2-cycle between E and F under R, unrelated to anything else.
	unrelatedCycle := []vecEdgeReg{
		vecE("R", "E", live, 5, "O1"), vecE("R", "F", live, 6, "O1"),
		vecE("F", "E", live, 30, "O1"), vecE("R", "E", moved, 30, "O1"),
		vecE("E", "F", live, 31, "O2"), vecE("R", "F", moved, 31, "O2"),
	}
	return []vecTreeCase{
		{Name: "plain tree", Registers: []vecEdgeReg{
			vecE("R", "A", live, 1, "O1"), vecE("R", "B", live, 2, "O1"), vecE("A", "C", live, 3, "O1"), vecE("A", "D", live, 4, "O1"),
		}},
		{Name: "deleted edge",
			Note: "two writes to R→B are merged by LWW: the later deletion wins. Nothing is pruned: B→C stays live although B has no live parent",
			Registers: []vecEdgeReg{
				vecE("R", "A", live, 1, "O1"), vecE("R", "B", live, 2, "O1"), vecE("B", "C", live, 3, "O1"), vecE("R", "B", deleted, 5, "O2"),
			}},
		{Name: "deleted then re-created", Note: "the latest write to R→A is live", Registers: []vecEdgeReg{
			vecE("R", "A", live, 1, "O1"), vecE("R", "A", deleted, 2, "O1"), vecE("R", "A", live, 3, "O2"),
		}},
		{Name: "tombstone beats live on a full tie", Note: "same hlc and origin on one edge: the tombstone wins (LWW rule 3)", Registers: []vecEdgeReg{
			vecE("R", "B", live, 1, "O1"), vecE("R", "A", live, 5, "O1"), vecE("R", "A", deleted, 5, "O1"),
		}},
		{Name: "self-loop ignored", Note: "an edge from a node to itself is never valid and is ignored", Registers: []vecEdgeReg{
			vecE("R", "A", live, 1, "O1"), vecE("A", "A", live, 2, "O1"),
		}},
		{Name: "DAG: node with two parents", Note: "C sits under both A and B; both edges are live", Registers: with(base("A", "B"),
			vecE("A", "C", live, 3, "O1"), vecE("B", "C", live, 4, "O1"),
		)},
		{Name: "single move", Note: "move C from A to B: live B→C and the moved tombstone of A→C, with the same hlc and origin",
			Registers: with(base("A", "B"), vecE("A", "C", live, 3, "O1"),
				vecE("B", "C", live, 10, "O1"), vecE("A", "C", moved, 10, "O1"),
			)},
		{Name: "sequential moves", Note: "C moved from A to B, later from B to D: only D→C is live",
			Registers: with(base("A", "B", "D"), vecE("A", "C", live, 4, "O1"),
				vecE("B", "C", live, 10, "O1"), vecE("A", "C", moved, 10, "O1"),
				vecE("D", "C", live, 20, "O1"), vecE("B", "C", moved, 20, "O1"),
			)},
		{Name: "2-cycle, move of B is greater",
			Note: "concurrently A moved under B (hlc 10) and B under A (hlc 11): the greater move (B under A) is undone: A→B inactive, B falls back to its paired tombstone R→B",
			Registers: with(base("A", "B"),
				vecE("B", "A", live, 10, "O1"), vecE("R", "A", moved, 10, "O1"),
				vecE("A", "B", live, 11, "O2"), vecE("R", "B", moved, 11, "O2"),
			)},
		{Name: "2-cycle, move of A is greater",
			Note: "as above with the hlcs swapped: the move of A under B is undone: B→A inactive, A falls back to R→A",
			Registers: with(base("A", "B"),
				vecE("B", "A", live, 11, "O1"), vecE("R", "A", moved, 11, "O1"),
				vecE("A", "B", live, 10, "O2"), vecE("R", "B", moved, 10, "O2"),
			)},
		{Name: "2-cycle, equal hlc, greater origin undone",
			Note: "both moves at hlc 10: the move by O2 (B under A) has the greater origin and is undone",
			Registers: with(base("A", "B"),
				vecE("B", "A", live, 10, "O1"), vecE("R", "A", moved, 10, "O1"),
				vecE("A", "B", live, 10, "O2"), vecE("R", "B", moved, 10, "O2"),
			)},
		{Name: "2-cycle, hlcs above 2^53 differing by one",
			Note: "the move of A under B has hlc H+1 and the smaller origin: it is the greater move and is undone. Comparing hlcs as float64 would tie them and undo the other move",
			Registers: with(base("A", "B"),
				vecE("B", "A", live, big+1, "O1"), vecE("R", "A", moved, big+1, "O1"),
				vecE("A", "B", live, big, "O2"), vecE("R", "B", moved, big, "O2"),
			)},
		{Name: "3-cycle",
			Note: "concurrently A under B (10), B under C (11), C under A (12): the cycle A→C→B→A undoes the greatest move (C under A) and C falls back under R; result R→C→B→A",
			Registers: with(base("A", "B", "C"),
				vecE("B", "A", live, 10, "O1"), vecE("R", "A", moved, 10, "O1"),
				vecE("C", "B", live, 11, "O2"), vecE("R", "B", moved, 11, "O2"),
				vecE("A", "C", live, 12, "O3"), vecE("R", "C", moved, 12, "O3"),
			)},
		{Name: "two independent cycles",
			Note: "the cycles {A,B} and {C,D} are each resolved: in each the greater move is undone",
			Registers: with(base("A", "B", "C", "D"),
				vecE("B", "A", live, 10, "O1"), vecE("R", "A", moved, 10, "O1"),
				vecE("A", "B", live, 11, "O2"), vecE("R", "B", moved, 11, "O2"),
				vecE("D", "C", live, 12, "O1"), vecE("R", "C", moved, 12, "O1"),
				vecE("C", "D", live, 13, "O2"), vecE("R", "D", moved, 13, "O2"),
			)},
		{Name: "cycle made by a plain add",
			Note: "B→A added (a second parent, no paired tombstone) while A→B exists: B→A is the greatest edge on the cycle and simply goes inactive",
			Registers: []vecEdgeReg{
				vecE("R", "A", live, 1, "O1"), vecE("A", "B", live, 2, "O1"), vecE("B", "A", live, 10, "O2"),
			}},
		{Name: "concurrent moves of one node to two parents",
			Note: "moves written before placements (no text): D moved from C to A (hlc 10) and concurrently from C to B (hlc 11). A→D and B→D are plain edges, " +
				"placements of their own, so D ends under both. The same moves in the placement format end D under B only (case \"placements: concurrent moves out of one parent\")",
			Registers: with(base("A", "B", "C"), vecE("C", "D", live, 4, "O1"),
				vecE("A", "D", live, 10, "O1"), vecE("C", "D", moved, 10, "O1"),
				vecE("B", "D", live, 11, "O2"), vecE("C", "D", moved, 11, "O2"),
			)},
		{Name: "moved node's old edge re-created by a newer write",
			Note: "C moved from A to B (10), then A→C written live again (20): C is under both",
			Registers: with(base("A", "B"), vecE("A", "C", live, 3, "O1"),
				vecE("B", "C", live, 10, "O1"), vecE("A", "C", moved, 10, "O1"),
				vecE("A", "C", live, 20, "O2"),
			)},
		{Name: "undone move whose old edge was re-created",
			Note: "C moved from A to B (12) and concurrently B under C (11) form a cycle; A→C was re-created live (20). " +
				"The move of C (12) is undone; C is still reachable under A, so nothing needs bringing back",
			Registers: with(base("A", "B"), vecE("A", "C", live, 3, "O1"),
				vecE("B", "C", live, 12, "O1"), vecE("A", "C", moved, 12, "O1"),
				vecE("C", "B", live, 11, "O2"), vecE("R", "B", moved, 11, "O2"),
				vecE("A", "C", live, 20, "O3"),
			)},
		{Name: "undo brings back only the moved node",
			Note: "one operation (10, O1) moved A under B and deleted D from R. Undoing the move (cycle with B under A at 9) puts A back under R; D stays deleted",
			Registers: with(base("A", "B", "D"),
				vecE("B", "A", live, 10, "O1"), vecE("R", "A", moved, 10, "O1"), vecE("R", "D", deleted, 10, "O1"),
				vecE("A", "B", live, 9, "O2"), vecE("R", "B", moved, 9, "O2"),
			)},
		{Name: "undone move of a node with two parents",
			Note: "D was under A and B and moved under C (10), tombstoning both; concurrently C moved under D (9). The move of D is undone and restores " +
				"every parent edge it took away: D is under A and B again",
			Registers: with(base("A", "B", "C"), vecE("A", "D", live, 4, "O1"), vecE("B", "D", live, 5, "O1"),
				vecE("C", "D", live, 10, "O1"), vecE("A", "D", moved, 10, "O1"), vecE("B", "D", moved, 10, "O1"),
				vecE("D", "C", live, 9, "O2"), vecE("R", "C", moved, 9, "O2"),
			)},
		{Name: "undoing the second of two sequential moves",
			Note: "C moved A→B (10) then B→D (20); concurrently D moved under C (15). Undoing the move at 20 puts C back by its paired tombstone B→C: where it was before that move",
			Registers: with(base("A", "B", "D"), vecE("A", "C", live, 4, "O1"),
				vecE("B", "C", live, 10, "O1"), vecE("A", "C", moved, 10, "O1"),
				vecE("D", "C", live, 20, "O1"), vecE("B", "C", moved, 20, "O1"),
				vecE("C", "D", live, 15, "O2"), vecE("R", "D", moved, 15, "O2"),
			)},
		{Name: "moved into a concurrently deleted node",
			Note: "C moved from A into B (10) while B was deleted (11): C stays under B, hidden with it; undeleting B shows both again",
			Registers: with(base("A", "B"), vecE("A", "C", live, 3, "O1"),
				vecE("B", "C", live, 10, "O1"), vecE("A", "C", moved, 10, "O1"),
				vecE("R", "B", deleted, 11, "O2"),
			)},
		{Name: "moved into a concurrently deleted node, with an unrelated cycle",
			Note: "the same registers plus an unrelated cycle E↔F: the result for C is the same (locality); the cycle is broken on its own",
			Registers: with(base("A", "B"), slices.Concat([]vecEdgeReg{vecE("A", "C", live, 3, "O1"),
				vecE("B", "C", live, 10, "O1"), vecE("A", "C", moved, 10, "O1"),
				vecE("R", "B", deleted, 11, "O2"),
			}, unrelatedCycle)...)},
		{Name: "re-stamped move edge",
			Note: "A moved under B (10) and B→A was later written live again (40); concurrently B moved under A (30). Both edges on the cycle can fall back outside it; " +
				"B→A (40) is the greater and is withdrawn: A falls back to the older move's tombstone R→A, and B stays under A",
			Registers: with(base("A", "B"),
				vecE("B", "A", live, 10, "O1"), vecE("R", "A", moved, 10, "O1"),
				vecE("B", "A", live, 40, "O1"),
				vecE("A", "B", live, 30, "O2"), vecE("R", "B", moved, 30, "O2"),
			)},
		{Name: "bringing back re-adds an undone edge",
			Note: "inconsistent input (C under A, yet A moved under C at 20): the 3-cycle A→B→C→A is broken where the child falls back to a place that closes no cycle " +
				"(B to R→B); result R→B→C→A",
			Registers: []vecEdgeReg{
				vecE("R", "A", live, 1, "O1"), vecE("A", "C", live, 2, "O1"), vecE("R", "B", live, 3, "O1"),
				vecE("B", "C", live, 30, "O1"), vecE("A", "C", moved, 30, "O1"),
				vecE("C", "A", live, 20, "O2"), vecE("R", "A", moved, 20, "O2"),
				vecE("A", "B", live, 25, "O3"), vecE("R", "B", moved, 25, "O3"),
			}},
		{Name: "cycles with no root",
			Note: "inconsistent input in which every node has a register into it: the cycles are broken and nothing reaches the nodes, as there is no root",
			Registers: []vecEdgeReg{
				vecE("C", "B", live, 50, "O1"), vecE("A", "B", moved, 50, "O1"),
				vecE("D", "A", live, 60, "O2"), vecE("B", "A", moved, 60, "O2"),
				vecE("B", "C", live, 10, "O3"), vecE("A", "D", live, 10, "O3"),
			}},
		{Name: "placements: concurrent moves out of one parent",
			Note:      "the scenario of issue 18: C under R (hlc 3); one replica moves it to A (10), another to B (11), each naming its placement R/3. The later move wins: C is under B only, A→C is live but inactive",
			Registers: with(base("A", "B", "C"), slices.Concat(vecMv("C", "R", "A", vecPl("R", 3), 10, "O1"), vecMv("C", "R", "B", vecPl("R", 3), 11, "O2"))...)},
		{Name: "placements: a chain of moves against a concurrent one",
			Note: "C moved R→A (10) then A→D (30) on one replica, R→B (20) on another, all of placement R/4: the latest operation (30) wins, as in Kleppmann's order",
			Registers: with(base("A", "B", "D", "C"), slices.Concat(vecMv("C", "R", "A", vecPl("R", 4), 10, "O1"),
				vecMv("C", "A", "D", vecPl("R", 4), 30, "O1"), vecMv("C", "R", "B", vecPl("R", 4), 20, "O2"))...)},
		{Name: "placements: a mirror is a placement of its own",
			Note: "C under R (3) and mirrored under A (5). Concurrently one replica moves the R placement to B (10), another the A placement to D (11): C ends under B and D",
			Registers: with(base("A", "B", "C", "D"), slices.Concat([]vecEdgeReg{vecE("A", "C", live, 5, "O1")},
				vecMv("C", "R", "B", vecPl("R", 3), 10, "O1"), vecMv("C", "A", "D", vecPl("A", 5), 11, "O2"))...)},
		{Name: "placements: a delete, then a later concurrent move",
			Note: "C under R (2); deleted by one replica (10, naming R/2), moved to A by another (11): the later operation wins, C is under A",
			Registers: with(base("A", "C"), slices.Concat([]vecEdgeReg{vecDel("C", "R", vecPl("R", 2), 10, "O1")},
				vecMv("C", "R", "A", vecPl("R", 2), 11, "O2"))...)},
		{Name: "placements: a move, then a later concurrent delete",
			Note: "as above with the times swapped: the delete (11) is the later operation, C is deleted; A→C is live but inactive",
			Registers: with(base("A", "C"), slices.Concat([]vecEdgeReg{vecDel("C", "R", vecPl("R", 2), 11, "O1")},
				vecMv("C", "R", "A", vecPl("R", 2), 10, "O2"))...)},
		{Name: "placements: moved into a deleted node, with an unrelated cycle",
			Note: "C moved from A into B (10) while B was deleted (11), plus an unrelated cycle E↔F: C stays under B, hidden with it; the cycle elsewhere changes nothing for C (locality)",
			Registers: with(base("A", "B"), slices.Concat([]vecEdgeReg{vecE("A", "C", live, 3, "O1")},
				vecMv("C", "A", "B", vecPl("A", 3), 10, "O1"),
				[]vecEdgeReg{vecDel("B", "R", vecPl("R", 2), 11, "O2")}, unrelatedCycle)...)},
		{Name: "placements: an undone merging move restores every parent",
			Note: "D under A (4) and B (5) moved under C (10) in one operation that merges both placements; concurrently C moved under D (9). The move of D is undone and D goes back under both A and B",
			Registers: with(base("A", "B", "C"), []vecEdgeReg{
				vecE("A", "D", live, 4, "O1"), vecE("B", "D", live, 5, "O1"),
				{Parent: vecN("C"), Child: vecN("D"), Moved: true, Place: vecPl("A", 4) + "," + vecPl("B", 5), HLC: "10", Origin: vecN("O1")},
				{Parent: vecN("A"), Child: vecN("D"), Tombstone: true, Moved: true, Place: vecPl("A", 4), HLC: "10", Origin: vecN("O1")},
				{Parent: vecN("B"), Child: vecN("D"), Tombstone: true, Moved: true, Place: vecPl("B", 5), HLC: "10", Origin: vecN("O1")},
				vecMv("C", "R", "D", vecPl("R", 3), 9, "O2")[0], vecMv("C", "R", "D", vecPl("R", 3), 9, "O2")[1],
			}...)},
		{Name: "placements: a text that is not a placement list",
			Note: "hostile text on a moved edge: it names no placement, so the edge is plain and the move is of the older kind (C under both A and B)",
			Registers: with(base("A", "B", "C"), []vecEdgeReg{
				{Parent: vecN("A"), Child: vecN("C"), Moved: true, Place: "not a placement", HLC: "10", Origin: vecN("O1")},
				{Parent: vecN("R"), Child: vecN("C"), Tombstone: true, Moved: true, Place: vecPl("R", 3), HLC: "10", Origin: vecN("O1")},
				vecMv("C", "R", "B", vecPl("R", 3), 11, "O2")[0],
			}...)},
		{Name: "equal hlc and origin on a cycle",
			Note: "hostile input: two edges of one cycle share hlc and origin; rank then compares parent bytes, so B→A is undone and A falls back to R→A",
			Registers: with(base("A", "B"),
				vecE("A", "B", live, 10, "O1"), vecE("B", "A", live, 10, "O1"),
				vecE("R", "A", moved, 10, "O1"), vecE("R", "B", moved, 10, "O1"),
			)},
	}
}

func vecTreeCompute(c *vecTreeCase) error {
	regs := make([]crdt.EdgeRegister, len(c.Registers))
	for i, r := range c.Registers {
		var err error
		reg := &regs[i]
		if reg.Parent, err = vecID("parent", r.Parent); err != nil {
			return fmt.Errorf("register %d: %w", i, err)
		}
		if reg.Child, err = vecID("child", r.Child); err != nil {
			return fmt.Errorf("register %d: %w", i, err)
		}
		if reg.Time, err = vecTime("hlc", r.HLC); err != nil {
			return fmt.Errorf("register %d: %w", i, err)
		}
		if reg.Origin, err = vecID("origin", r.Origin); err != nil {
			return fmt.Errorf("register %d: %w", i, err)
		}
		reg.Tombstone, reg.Moved, reg.Place = r.Tombstone, r.Moved, r.Place
	}
	var want []crdt.Edge
	perms := vecPermutations(len(regs))
	for n, perm := range perms {
		in := make([]crdt.EdgeRegister, len(regs))
		for i, j := range perm {
			in[i] = regs[j]
		}
		got := crdt.ResolvePlacements(in)
		if n == 0 {
			want = got
		} else if !slices.Equal(got, want) {
			return fmt.Errorf("registers in order %v give %v, in order %v %v", perm, got, perms[0], want)
		}
	}
	c.Live = make([]vecEdge, len(want))
	for i, e := range want {
		c.Live[i] = vecEdge{Parent: e.Parent.String(), Child: e.Child.String()}
	}
	return nil
}

func TestVectorTree(t *testing.T) {
	vecRun(t, vecSpec[vecTreeCase]{
		file: "tree.json",
		description: "Tree rules of placements (crdt.ResolvePlacements; docs/design.md): edge registers (the edge point of parent→child) to the active edges, " +
			"sorted by parent bytes then child bytes, whatever the order of the registers. IDs: R (root) …01, A to F …0a to …0f, " +
			"origins O1 to O3 …e1 to …e3 (all 00000000-0000-0000-0000-0000000000xx). See README.md.",
		table:   vecTreeTable(),
		name:    func(c *vecTreeCase) string { return c.Name },
		compute: vecTreeCompute,
	})
}

// ---------------------------------------------------------------------------
// ids.json

type vecIDCase struct {
	Name  string `json:"name"`
	Note  string `json:"note,omitempty"`
	Input string `json:"input"`
	ID    string `json:"id,omitempty"`
	Hex   string `json:"hex,omitempty"`
	Error string `json:"error,omitempty"`
}

func vecIDTable() []vecIDCase {
	const u = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	id := func(name, input, note string) vecIDCase { return vecIDCase{Name: name, Input: input, Note: note} }
	return []vecIDCase{
		id("canonical lowercase", u, ""),
		id("uppercase", strings.ToUpper(u), "accepted; String() gives lowercase"),
		id("mixed case", "6BA7b810-9DAD-11d1-80B4-00c04FD430C8", ""),
		id("any version", "00000000-0000-0000-0000-00000000000a", "version and variant bits are not checked: any 16 bytes but zero are an ID"),
		id("all ones", "ffffffff-ffff-ffff-ffff-ffffffffffff", ""),
		id("nil UUID", "00000000-0000-0000-0000-000000000000", "the nil UUID is not an ID"),
		id("urn form", "urn:uuid:"+u, "only the 36-character form is accepted"),
		id("brace form", "{"+u+"}", ""),
		id("no hyphens", strings.ReplaceAll(u, "-", ""), ""),
		id("empty", "", ""),
		id("one digit short", u[:35], ""),
		id("one digit long", u+"0", ""),
		id("non-hex digit", "6ba7b810-9dad-11d1-80b4-00c04fd430cg", ""),
		id("hyphen misplaced", "6ba7b8109-dad-11d1-80b4-00c04fd430c8", "36 characters but the hyphens are not at 8, 13, 18, 23"),
		id("underscores", strings.ReplaceAll(u, "-", "_"), ""),
		id("leading space", " "+u[:35], ""),
		id("trailing newline", u+"\n", ""),
	}
}

func vecIDCompute(c *vecIDCase) error {
	c.ID, c.Hex, c.Error = "", "", ""
	id, err := crdt.ParseID(c.Input)
	if err != nil {
		c.Error = "invalid"
		return nil
	}
	c.ID, c.Hex = id.String(), vecHex(id[:])
	return nil
}

func TestVectorIDs(t *testing.T) {
	vecRun(t, vecSpec[vecIDCase]{
		file:        "ids.json",
		description: "Node and origin IDs (crdt.ParseID): accepted inputs with their canonical form and 16 bytes, rejected inputs. See README.md.",
		table:       vecIDTable(),
		name:        func(c *vecIDCase) string { return c.Name },
		compute:     vecIDCompute,
	})
}

// TestVectorFloatRoundTrip guards an assumption of the vector files: JSON
// numbers round-trip float64 exactly (encoding/json writes the shortest
// representation).
func TestVectorFloatRoundTrip(t *testing.T) {
	for _, f := range []float64{21.37, 0.1, 1e300, -12.75, 9223372036854775808, 1e18, -0.5} {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		var back float64
		if err := json.Unmarshal(b, &back); err != nil || math.Float64bits(back) != math.Float64bits(f) {
			t.Errorf("%v: JSON %s reads back as %v (%v)", f, b, back, err)
		}
	}
}

// vecSketchCase is one case of sketches.json: a set of point keys (from
// points) in a sketch of Cells cells, its encoding, and what decoding it
// minus a second sketch (of Minus) gives.
type vecSketchCase struct {
	Name   string          `json:"name"`
	Note   string          `json:"note,omitempty"`
	Cells  int             `json:"cells"`
	Points []vecSketchPt   `json:"points"`
	Minus  []vecSketchPt   `json:"minus,omitempty"`
	Keys   []string        `json:"keys"`   // output: each point's key
	Sketch string          `json:"sketch"` // output: the encoding of the sketch of Points
	Decode *vecSketchDecod `json:"decode"` // output: (Points) − (Minus), decoded
}

type vecSketchPt struct {
	Node   string `json:"node"`
	Type   string `json:"type"`
	Key    string `json:"key"`
	HLC    string `json:"hlc"`
	Origin string `json:"origin"`
}

type vecSketchDecod struct {
	OK    bool     `json:"ok"`
	Plus  []string `json:"plus"`  // sorted
	Minus []string `json:"minus"` // sorted
}

func vecSketchTable() []vecSketchCase {
	const n1, n2 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
	const o1, o2 = "00000000-0000-0000-0000-000000000001", "00000000-0000-4000-8000-00000000aaaa"
	pt := func(node, typ, key, hlc, origin string) vecSketchPt {
		return vecSketchPt{Node: node, Type: typ, Key: key, HLC: hlc, Origin: origin}
	}
	a := pt(n1, "temp", "0", "81985529216486895", o1)
	b := pt(n1, "temp", "1", "81985529216486896", o1)
	c := pt(n2, "description", "0", "81985529216486897", o2)
	a2 := pt(n1, "temp", "0", "81985529216486999", o2) // a later version of a's register
	return []vecSketchCase{
		{Name: "one key", Cells: 3, Points: []vecSketchPt{a},
			Note: "with 3 cells each part has one cell: the key lands in all three"},
		{Name: "equal sets cancel", Cells: 9, Points: []vecSketchPt{a, b, c}, Minus: []vecSketchPt{c, b, a}},
		{Name: "one register, two versions", Cells: 12, Points: []vecSketchPt{a2, b, c}, Minus: []vecSketchPt{a, b, c},
			Note: "the two versions of temp/0 decode one on each side: same node and register tags, the HLCs tell which wins"},
		{Name: "one side only", Cells: 12, Points: []vecSketchPt{a, b}, Minus: []vecSketchPt{a, b, c}},
		{Name: "too many for the table", Cells: 3, Points: []vecSketchPt{a, b, c}, Minus: []vecSketchPt{a2},
			Note: "four keys in three cells do not decode"},
	}
}

func vecSketchOf(pts []vecSketchPt, cells int) (*crdt.Sketch, []string, error) {
	sk := crdt.NewSketch(cells, crdt.PointKeyLen)
	var keys []string
	for _, v := range pts {
		node, err := crdt.ParseID(v.Node)
		if err != nil {
			return nil, nil, err
		}
		origin, err := crdt.ParseID(v.Origin)
		if err != nil {
			return nil, nil, err
		}
		t, err := strconv.ParseUint(v.HLC, 10, 64)
		if err != nil {
			return nil, nil, err
		}
		p := crdt.Point{Node: node, Type: v.Type, Key: v.Key, Time: crdt.Timestamp(t), Origin: origin}
		k := crdt.PointKey(&p)
		sk.Add(k)
		keys = append(keys, vecHex(k[:crdt.PointKeyLen]))
	}
	return sk, keys, nil
}

func vecSketchCompute(c *vecSketchCase) error {
	sk, keys, err := vecSketchOf(c.Points, c.Cells)
	if err != nil {
		return err
	}
	c.Keys, c.Sketch = keys, vecHex(sk.AppendBinary(nil))
	minus, _, err := vecSketchOf(c.Minus, c.Cells)
	if err != nil {
		return err
	}
	if err := sk.Subtract(minus); err != nil {
		return err
	}
	plus, min, ok := sk.Decode()
	d := &vecSketchDecod{OK: ok, Plus: []string{}, Minus: []string{}}
	if ok {
		for _, k := range plus {
			d.Plus = append(d.Plus, vecHex(k[:crdt.PointKeyLen]))
		}
		for _, k := range min {
			d.Minus = append(d.Minus, vecHex(k[:crdt.PointKeyLen]))
		}
		sort.Strings(d.Plus)
		sort.Strings(d.Minus)
	}
	c.Decode = d
	return nil
}

func TestVectorSketches(t *testing.T) {
	vecRun(t, vecSpec[vecSketchCase]{
		file: "sketches.json",
		description: "Repair sketches (crdt.Sketch with crdt.PointKey keys): each point's 20-byte key, the encoding of the sketch of a set, " +
			"and the keys on each side of two sets' difference when it decodes. See README.md and docs/protocol.md.",
		table:   vecSketchTable(),
		name:    func(c *vecSketchCase) string { return c.Name },
		compute: vecSketchCompute,
	})
}
