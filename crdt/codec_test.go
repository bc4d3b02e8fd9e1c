package crdt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"
)

var (
	wireSeed        = flag.Uint64("wire.seed", 0, "seed of the random wire tests (0: pick one and log it)")
	wireUpdateSeeds = flag.Bool("wire.update-seeds", false, "rewrite the fuzz seed corpora under testdata/fuzz")
)

// wireRand returns a generator seeded from -wire.seed, or from the clock,
// and logs the seed so that a failure can be replayed.
func wireRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *wireSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -wire.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// wireGen makes random valid points, before normalization: keys may be
// blank and values negative zero.
type wireGen struct {
	r   *rand.Rand
	ids []uuid.UUID // IDs handed out so far, reused so batches share them
}

func (g *wireGen) newID() uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[:8], g.r.Uint64())
	binary.BigEndian.PutUint64(u[8:], g.r.Uint64()|1) // never nil
	return u
}

func (g *wireGen) id() uuid.UUID {
	if len(g.ids) > 0 && g.r.IntN(4) != 0 {
		return g.ids[g.r.IntN(len(g.ids))]
	}
	u := g.newID()
	g.ids = append(g.ids, u)
	return u
}

const wireTypeChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"

func (g *wireGen) typ(edge bool) string {
	if edge && g.r.IntN(3) == 0 {
		return TypeEdge
	}
	if g.r.IntN(3) == 0 {
		return []string{"temp", "value", TypeNodeType, "description", "x"}[g.r.IntN(5)]
	}
	b := make([]byte, 1+g.r.IntN(MaxTypeLen))
	for i := range b {
		b[i] = wireTypeChars[g.r.IntN(len(wireTypeChars))]
	}
	if string(b) == TypeEdge {
		return "edgy"
	}
	return string(b)
}

func (g *wireGen) key() string {
	switch g.r.IntN(4) {
	case 0:
		return "" // normalizes to DefaultKey
	case 1:
		return DefaultKey
	}
	b := make([]byte, 1+g.r.IntN(MaxKeyLen))
	for i := range b {
		b[i] = byte(0x21 + g.r.IntN(0x7e-0x21+1))
	}
	return string(b)
}

// wireSpecialValues are values at the edges of the value encoding.
var wireSpecialValues = []float64{
	0, math.Copysign(0, -1), 1, -1, 23, 23.5, 0.1, -0.1, 127, 128, -32, -33,
	255, 256, 65535, 65536, 1 << 32, -(1 << 31) - 1,
	1e300, -1e300, -9.2e18, 9.2e18,
	1 << 53, 1<<53 + 2, // integral floats beyond 2^53
	math.MaxInt64,                  // rounds to 2^63: just outside int64
	math.Nextafter(1<<63, 0),       // largest float below 2^63: int64
	-(1 << 63),                     // smallest int64
	math.Nextafter(-(1 << 63), -2), // just below int64
	1 << 64,
	math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64,
	math.MaxFloat32, math.SmallestNonzeroFloat32, 0.5, 1e-300,
}

func (g *wireGen) value() float64 {
	switch g.r.IntN(9) {
	case 0:
		return wireSpecialValues[g.r.IntN(len(wireSpecialValues))]
	case 1:
		return float64(g.r.IntN(256) - 128)
	case 2:
		return float64(int64(g.r.Uint64())) // integral, the whole int64 range
	case 3:
		return float64(float32(g.r.NormFloat64() * 1000)) // float32-exact
	case 4:
		return g.r.NormFloat64() * math.Pow(10, float64(g.r.IntN(80)-40))
	case 5:
		return -g.r.ExpFloat64()
	}
	for {
		if v := math.Float64frombits(g.r.Uint64()); !math.IsNaN(v) && !math.IsInf(v, 0) {
			return v
		}
	}
}

func (g *wireGen) text(big bool) string {
	if big {
		if g.r.IntN(2) == 0 {
			return strings.Repeat("x", MaxTextLen)
		}
		return strings.Repeat("é", MaxTextLen/2) // multi-byte, exactly MaxTextLen bytes
	}
	switch g.r.IntN(6) {
	case 0, 1:
		return ""
	case 2:
		return "héllo ☃ 𝄞\x00\n"
	case 3:
		var b []byte
		for n := g.r.IntN(20); n > 0; n-- {
			r := rune(g.r.IntN(utf8.MaxRune + 1))
			if !utf8.ValidRune(r) {
				r = utf8.RuneError
			}
			b = utf8.AppendRune(b, r)
		}
		return string(b)
	}
	b := make([]byte, g.r.IntN(300))
	for i := range b {
		b[i] = byte(0x20 + g.r.IntN(0x5f))
	}
	return string(b)
}

func (g *wireGen) time() Timestamp {
	switch g.r.IntN(6) {
	case 0:
		return 1
	case 1:
		return math.MaxUint64
	case 2:
		return 1 << 63
	}
	if t := Timestamp(g.r.Uint64()); t != 0 {
		return t
	}
	return 1
}

func (g *wireGen) point(bigText bool) Point {
	p := Point{
		Node:      g.id(),
		Key:       g.key(),
		Value:     g.value(),
		Text:      g.text(bigText),
		Tombstone: g.r.IntN(4) == 0,
		Time:      g.time(),
		Origin:    g.id(),
	}
	edge := g.r.IntN(2) == 0
	for edge && (p.Parent == uuid.Nil || p.Parent == p.Node) {
		p.Parent = g.id()
	}
	p.Type = g.typ(edge)
	return p
}

// batch returns n points sharing a small pool of IDs. Times are either
// random over the whole uint64 range (so deltas wrap) or increasing.
func (g *wireGen) batch(n int) []Point {
	g.ids = g.ids[:0]
	pts := make([]Point, n)
	increasing := g.r.IntN(2) == 0
	t := g.time()
	for i := range pts {
		pts[i] = g.point(g.r.IntN(64) == 0)
		if increasing {
			t += Timestamp(g.r.IntN(1 << 24))
			if t == 0 {
				t = 1
			}
			pts[i].Time = t
		}
	}
	return pts
}

func wireNormalized(t *testing.T, p Point) Point {
	t.Helper()
	p.Normalize()
	if err := p.Validate(); err != nil {
		t.Fatalf("generator made an invalid point %+v: %v", p, err)
	}
	return p
}

func TestPointRoundTrip(t *testing.T) {
	g := &wireGen{r: wireRand(t)}
	for i := 0; i < 3000; i++ {
		if i%100 == 0 {
			g.ids = g.ids[:0]
		}
		in := g.point(g.r.IntN(32) == 0)
		want := wireNormalized(t, in)
		// in may have a blank key or a negative zero value: decoding
		// normalizes, so what comes back is want.
		prefix := []byte("xyz")
		b := AppendPoint(prefix[:len(prefix):len(prefix)], &in)
		if !bytes.Equal(b[:3], prefix) {
			t.Fatalf("AppendPoint overwrote dst: % x", b[:3])
		}
		got, err := DecodePoint(b[3:])
		if err != nil {
			t.Fatalf("point %d %+v: %v", i, want, err)
		}
		if got != want || math.Float64bits(got.Value) != math.Float64bits(want.Value) {
			t.Fatalf("point %d: round trip\n got %+v\nwant %+v", i, got, want)
		}
		if canon := AppendPoint(nil, &want); !bytes.Equal(AppendPoint(nil, &got), canon) {
			t.Fatalf("point %d: encoding is not deterministic", i)
		}
	}
}

func TestBatchRoundTrip(t *testing.T) {
	g := &wireGen{r: wireRand(t)}
	for i := 0; i < 400; i++ {
		n := g.r.IntN(40)
		if i < 2 {
			n = i // the empty batch and a single point
		}
		in := g.batch(n)
		want := make([]Point, len(in))
		for j := range in {
			want[j] = wireNormalized(t, in[j])
		}
		b := AppendBatch([]byte("xyz"), in)[3:]
		got, err := DecodeBatch(b, len(b))
		if err != nil {
			t.Fatalf("batch %d of %d points: %v", i, n, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("batch %d: round trip\n got %+v\nwant %+v", i, got, want)
		}
		if len(b) <= MaxMessageSize {
			if _, err := DecodeBatch(b, 0); err != nil {
				t.Fatalf("batch %d with the default limit: %v", i, err)
			}
		}
		if !bytes.Equal(AppendBatch(nil, got), AppendBatch(nil, want)) {
			t.Fatalf("batch %d: encoding is not deterministic", i)
		}
	}
}

// TestBatchTimeDeltasWrap covers times whose differences overflow int64 in
// both directions.
func TestBatchTimeDeltasWrap(t *testing.T) {
	p := *wireSamplePoint()
	times := []Timestamp{math.MaxUint64, 1, math.MaxUint64, 1 << 63, 1<<63 - 1, 1<<63 + 1, 1, 2, 1}
	in := make([]Point, len(times))
	for i, ts := range times {
		in[i] = p
		in[i].Time = ts
	}
	b := AppendBatch(nil, in)
	got, err := DecodeBatch(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, in) {
		t.Fatalf("got %+v\nwant %+v", got, in)
	}
}

// wireSamplePoint returns a fixed valid node point.
func wireSamplePoint() *Point {
	return &Point{
		Node:   uuid.MustParse("00010203-0405-0607-0809-0a0b0c0d0e0f"),
		Type:   "t",
		Key:    DefaultKey,
		Value:  23.5,
		Text:   "hi",
		Time:   0x0102,
		Origin: uuid.MustParse("f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff"),
	}
}

func wireHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPointGolden pins the canonical encoding of one point: the wire format
// is a contract, and a change here breaks every deployed peer.
func TestPointGolden(t *testing.T) {
	want := wireHex(t, `
		99
		c4 10 000102030405060708090a0b0c0d0e0f
		c0
		a1 74
		a1 30
		ca 41bc0000
		a2 6869
		c2
		cd 0102
		c4 10 f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff`)
	got := AppendPoint(nil, wireSamplePoint())
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendPoint\n got % x\nwant % x", got, want)
	}
	p, err := DecodePoint(want)
	if err != nil || p != *wireSamplePoint() {
		t.Fatalf("DecodePoint = %+v, %v", p, err)
	}
}

// TestBatchGolden pins the batch encoding: shared ID and string tables,
// parent as 1 + index, time as a wrapping delta.
func TestBatchGolden(t *testing.T) {
	n := uuid.MustParse("00010203-0405-0607-0809-0a0b0c0d0e0f")
	o := uuid.MustParse("f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff")
	par := uuid.MustParse("a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf")
	in := []Point{
		{Node: n, Type: "t", Key: "0", Value: -1, Time: 1000, Origin: o},
		{Node: n, Parent: par, Type: TypeEdge, Key: "0", Tombstone: true, Time: 999, Origin: o},
	}
	want := wireHex(t, `
		93
		c4 30 000102030405060708090a0b0c0d0e0f f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff a0a1a2a3a4a5a6a7a8a9aaabacadaeaf
		93 a1 74 a1 30 a4 65646765
		92
		99 00 00 00 01 ff a0 c2 cd 03e8 01
		99 00 03 02 01 00 a0 c3 ff 01`)
	got := AppendBatch(nil, in)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendBatch\n got % x\nwant % x", got, want)
	}
	pts, err := DecodeBatch(want, 0)
	if err != nil || !slices.Equal(pts, in) {
		t.Fatalf("DecodeBatch = %+v, %v", pts, err)
	}
}

func wireValueBytes(v float64) []byte {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	encodeValue(enc, v)
	return buf.Bytes()
}

// TestValueEncodingIsCanonical checks the exact bytes of values: integral
// values as the shortest integer, else float32 when exact, else float64.
func TestValueEncodingIsCanonical(t *testing.T) {
	f64 := func(v float64) string { return fmt.Sprintf("cb%016x", math.Float64bits(v)) }
	i64 := func(v int64) string { return fmt.Sprintf("d3%016x", uint64(v)) }
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "00"},
		{math.Copysign(0, -1), "00"},
		{1, "01"},
		{23, "17"},
		{127, "7f"},
		{128, "cc80"},
		{255, "ccff"},
		{256, "cd0100"},
		{65536, "ce00010000"},
		{1 << 32, "cf0000000100000000"},
		{-1, "ff"},
		{-32, "e0"},
		{-33, "d0df"},
		{-129, "d1ff7f"},
		{-(1 << 31) - 1, "d3ffffffff7fffffff"},
		{-9.2e18, i64(-9.2e18)},
		{-(1 << 63), "d38000000000000000"},
		{math.Nextafter(1<<63, 0), "cf7ffffffffffffc00"},
		{1 << 63, "ca5f000000"}, // integral but outside int64: float32 is exact
		{1 << 64, "ca5f800000"},
		{23.5, "ca41bc0000"},
		{0.5, "ca3f000000"},
		{-0.25, "cabe800000"},
		{0.1, "cb3fb999999999999a"},
		{1e300, f64(1e300)},
		{-1e300, f64(-1e300)},
		{math.MaxFloat64, "cb7fefffffffffffff"},
		{math.SmallestNonzeroFloat64, "cb0000000000000001"},
	} {
		want, _ := hex.DecodeString(tc.want)
		if got := wireValueBytes(tc.v); !bytes.Equal(got, want) {
			t.Errorf("value %v: got % x, want % x", tc.v, got, want)
		}
		// and the value comes back bit for bit (negative zero as zero)
		p := *wireSamplePoint()
		p.Value = tc.v
		got, err := DecodePoint(AppendPoint(nil, &p))
		wantV := tc.v
		if wantV == 0 {
			wantV = 0
		}
		if err != nil || math.Float64bits(got.Value) != math.Float64bits(wantV) {
			t.Errorf("value %v: decoded %v, %v", tc.v, got.Value, err)
		}
	}
}

// TestDecodeValueAcceptsAnyNumber checks that a peer may send any msgpack
// number for value, including uint64 beyond int64.
func TestDecodeValueAcceptsAnyNumber(t *testing.T) {
	for _, tc := range []struct {
		enc  []byte
		want float64
	}{
		{[]byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, math.MaxUint64},
		{[]byte{0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0}, 1 << 63},
		{[]byte{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, -(1 << 63)},
		{[]byte{0xd0, 0x01}, 1},
		{[]byte{0xcb, 0x40, 0x37, 0, 0, 0, 0, 0, 0}, 23}, // non-canonical float64 23
		{[]byte{0xca, 0x80, 0, 0, 0}, 0},                 // float32 -0 normalizes to 0
	} {
		f := wirePointFields()
		f[4] = tc.enc
		p, err := DecodePoint(wireEncodeFields(f))
		if err != nil || math.Float64bits(p.Value) != math.Float64bits(tc.want) {
			t.Errorf("value % x: got %v, %v; want %v", tc.enc, p.Value, err, tc.want)
		}
	}
}

// wirePointFields returns the nine encoded fields of wireSamplePoint, for
// tests to break one at a time.
func wirePointFields() [pointFields][]byte {
	p := wireSamplePoint()
	return [pointFields][]byte{
		newWireMsg().bin(p.Node[:]).bytes(),
		newWireMsg().nil().bytes(),
		newWireMsg().str(p.Type).bytes(),
		newWireMsg().str(p.Key).bytes(),
		newWireMsg().f32(float32(p.Value)).bytes(),
		newWireMsg().str(p.Text).bytes(),
		newWireMsg().bool(p.Tombstone).bytes(),
		newWireMsg().uint(uint64(p.Time)).bytes(),
		newWireMsg().bin(p.Origin[:]).bytes(),
	}
}

func wireEncodeFields(f [pointFields][]byte) []byte {
	return newWireMsg().arr(pointFields).rawAll(f[:]...).bytes()
}

// wireInvalidCase is well-formed msgpack that must be refused with an error
// wrapping want (and ErrTooLarge too when large is set) whose text contains
// every string of mention.
type wireInvalidCase struct {
	name    string
	in      []byte
	want    error
	large   bool
	mention []string
}

func (tc wireInvalidCase) check(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("% x accepted", wireHead(tc.in))
	}
	if !errors.Is(err, tc.want) {
		t.Fatalf("error %q does not wrap %v", err, tc.want)
	}
	if other := map[error]error{ErrMalformed: ErrInvalidPoint, ErrInvalidPoint: ErrMalformed}[tc.want]; errors.Is(err, other) {
		t.Fatalf("error %q wraps %v too", err, other)
	}
	if errors.Is(err, ErrTooLarge) != tc.large {
		t.Fatalf("error %q: ErrTooLarge is %v, want %v", err, !tc.large, tc.large)
	}
	for _, m := range tc.mention {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("error %q does not mention %q", err, m)
		}
	}
}

func wireBadText() string { return "ok\xff\xfe" }

func TestDecodePointRefusesInvalidPoints(t *testing.T) {
	pt := func(edit func(f *[pointFields][]byte)) []byte {
		f := wirePointFields()
		edit(&f)
		return wireEncodeFields(f)
	}
	m := newWireMsg
	id := func(s string) []byte { u := uuid.MustParse(s); return m().bin(u[:]).bytes() }
	other := id("11111111-1111-1111-1111-111111111111")
	f := wirePointFields()
	cases := []wireInvalidCase{
		{name: "array of 8", in: m().arr(8).rawAll(f[:8]...).bytes(), want: ErrMalformed, mention: []string{"point:", "array of 8"}},
		{name: "array of 10", in: m().arr(10).rawAll(f[:]...).nil().bytes(), want: ErrMalformed, mention: []string{"point:", "array of 10"}},
		{name: "map instead of array", in: m().raw(0x81).rawAll(f[0], f[1]).bytes(), want: ErrMalformed, mention: []string{"point:"}},
		{name: "node of 15 bytes", in: pt(func(f *[9][]byte) { f[0] = m().bin(make([]byte, 15)).bytes() }), want: ErrMalformed, mention: []string{"node:", "15 bytes"}},
		{name: "node of 17 bytes", in: pt(func(f *[9][]byte) { f[0] = m().bin(make([]byte, 17)).bytes() }), want: ErrMalformed, mention: []string{"node:", "17 bytes"}},
		{name: "node missing", in: pt(func(f *[9][]byte) { f[0] = m().nil().bytes() }), want: ErrMalformed, mention: []string{"node:"}},
		{name: "node an integer", in: pt(func(f *[9][]byte) { f[0] = m().uint(7).bytes() }), want: ErrMalformed, mention: []string{"node:"}},
		{name: "nil node", in: pt(func(f *[9][]byte) { f[0] = m().bin(make([]byte, 16)).bytes() }), want: ErrInvalidPoint, mention: []string{"node:"}},
		{name: "parent of 15 bytes", in: pt(func(f *[9][]byte) { f[1] = m().bin(make([]byte, 15)).bytes() }), want: ErrMalformed, mention: []string{"parent:", "15 bytes"}},
		{name: "parent is node", in: pt(func(f *[9][]byte) { f[1] = f[0] }), want: ErrInvalidPoint, mention: []string{"parent:"}},
		{name: "type with a space", in: pt(func(f *[9][]byte) { f[2] = m().str("a b").bytes() }), want: ErrInvalidPoint, mention: []string{"type:"}},
		{name: "type empty", in: pt(func(f *[9][]byte) { f[2] = m().str("").bytes() }), want: ErrInvalidPoint, mention: []string{"type:"}},
		{name: "type too long", in: pt(func(f *[9][]byte) { f[2] = m().str(strings.Repeat("t", MaxTypeLen+1)).bytes() }), want: ErrInvalidPoint, large: true, mention: []string{"type:"}},
		{name: "type an integer", in: pt(func(f *[9][]byte) { f[2] = m().uint(1).bytes() }), want: ErrMalformed, mention: []string{"type:"}},
		{name: "edge without parent", in: pt(func(f *[9][]byte) { f[2] = m().str(TypeEdge).bytes() }), want: ErrInvalidPoint, mention: []string{"type:"}},
		{name: "key too long", in: pt(func(f *[9][]byte) { f[3] = m().str(strings.Repeat("k", MaxKeyLen+1)).bytes() }), want: ErrInvalidPoint, large: true, mention: []string{"key:"}},
		{name: "key with a space", in: pt(func(f *[9][]byte) { f[3] = m().str("a b").bytes() }), want: ErrInvalidPoint, mention: []string{"key:"}},
		{name: "NaN value", in: pt(func(f *[9][]byte) { f[4] = m().f64(math.NaN()).bytes() }), want: ErrInvalidPoint, mention: []string{"value:"}},
		{name: "NaN value, other payload", in: pt(func(f *[9][]byte) { f[4] = m().raw(0xcb, 0xff, 0xf8, 0, 0, 0, 0, 0, 1).bytes() }), want: ErrInvalidPoint, mention: []string{"value:"}},
		{name: "float32 NaN value", in: pt(func(f *[9][]byte) { f[4] = m().raw(0xca, 0x7f, 0xc0, 0, 0).bytes() }), want: ErrInvalidPoint, mention: []string{"value:"}},
		{name: "+Inf value", in: pt(func(f *[9][]byte) { f[4] = m().f64(math.Inf(1)).bytes() }), want: ErrInvalidPoint, mention: []string{"value:"}},
		{name: "float32 -Inf value", in: pt(func(f *[9][]byte) { f[4] = m().f32(float32(math.Inf(-1))).bytes() }), want: ErrInvalidPoint, mention: []string{"value:"}},
		{name: "value a string", in: pt(func(f *[9][]byte) { f[4] = m().str("1").bytes() }), want: ErrMalformed, mention: []string{"value:"}},
		{name: "value nil", in: pt(func(f *[9][]byte) { f[4] = m().nil().bytes() }), want: ErrMalformed, mention: []string{"value:"}},
		{name: "text not UTF-8", in: pt(func(f *[9][]byte) { f[5] = m().str(wireBadText()).bytes() }), want: ErrInvalidPoint, mention: []string{"text:", "UTF-8"}},
		{name: "text over MaxTextLen", in: pt(func(f *[9][]byte) { f[5] = m().str(strings.Repeat("x", MaxTextLen+1)).bytes() }), want: ErrInvalidPoint, large: true, mention: []string{"text:"}},
		{name: "text an integer", in: pt(func(f *[9][]byte) { f[5] = m().uint(1).bytes() }), want: ErrMalformed, mention: []string{"text:"}},
		{name: "tombstone an integer", in: pt(func(f *[9][]byte) { f[6] = m().uint(1).bytes() }), want: ErrMalformed, mention: []string{"tombstone:"}},
		{name: "zero time", in: pt(func(f *[9][]byte) { f[7] = m().uint(0).bytes() }), want: ErrInvalidPoint, mention: []string{"time:"}},
		{name: "negative time", in: pt(func(f *[9][]byte) { f[7] = m().int(-1).bytes() }), want: ErrMalformed, mention: []string{"time:"}},
		{name: "float time", in: pt(func(f *[9][]byte) { f[7] = m().f64(1.5).bytes() }), want: ErrMalformed, mention: []string{"time:"}},
		{name: "nil origin", in: pt(func(f *[9][]byte) { f[8] = m().bin(make([]byte, 16)).bytes() }), want: ErrInvalidPoint, mention: []string{"origin:"}},
		{name: "origin of 15 bytes", in: pt(func(f *[9][]byte) { f[8] = m().bin(make([]byte, 15)).bytes() }), want: ErrMalformed, mention: []string{"origin:"}},
		{name: "origin missing", in: pt(func(f *[9][]byte) { f[8] = m().nil().bytes() }), want: ErrMalformed, mention: []string{"origin:"}},
		{name: "edge point that is fine", in: pt(func(f *[9][]byte) { f[1] = other }), want: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodePoint(tc.in)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("valid control case refused: %v", err)
				}
				return
			}
			tc.check(t, err)
		})
	}
}

// wireBatchParts is a batch built by hand: the ID table, the strings table
// and each point's nine fields, all already encoded. The raw fields, when
// set, replace a part of the batch with arbitrary bytes.
type wireBatchParts struct {
	ids       []uuid.UUID
	strs      []string
	points    [][pointFields][]byte
	batchLen  int         // array length of the batch; 0 means batchFields
	pointLen  map[int]int // array length of point i, with its first fields
	rawIDs    []byte
	rawStrs   []byte
	rawPoints []byte
}

func (b wireBatchParts) encode() []byte {
	n := b.batchLen
	if n == 0 {
		n = batchFields
	}
	m := newWireMsg().arr(n)
	if b.rawIDs != nil {
		m.raw(b.rawIDs...)
	} else {
		var ids []byte
		for _, u := range b.ids {
			ids = append(ids, u[:]...)
		}
		m.bin(ids)
	}
	if n == 1 {
		return m.bytes()
	}
	if b.rawStrs != nil {
		m.raw(b.rawStrs...)
	} else {
		m.arr(len(b.strs))
		for _, s := range b.strs {
			m.str(s)
		}
	}
	if n == 2 {
		return m.bytes()
	}
	if b.rawPoints != nil {
		m.raw(b.rawPoints...)
	} else {
		m.arr(len(b.points))
		for i, f := range b.points {
			k, ok := b.pointLen[i]
			if !ok {
				k = pointFields
			}
			m.arr(k).rawAll(f[:min(k, pointFields)]...)
			for j := pointFields; j < k; j++ {
				m.nil()
			}
		}
	}
	for i := 3; i < n; i++ {
		m.nil()
	}
	return m.bytes()
}

// wireBaseBatch returns a valid batch of three points whose last point the
// cases below break. ids: 0 node A, 1 node B, 2 origin, 3 the nil UUID.
// strs: 0 "temp", 1 "0", 2 "edge", 3 "bad type", 4 a key too long.
func wireBaseBatch() wireBatchParts {
	m := newWireMsg
	u := func(v uint64) []byte { return m().uint(v).bytes() }
	return wireBatchParts{
		ids: []uuid.UUID{
			uuid.MustParse("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a"),
			uuid.MustParse("0b0b0b0b-0b0b-0b0b-0b0b-0b0b0b0b0b0b"),
			uuid.MustParse("f0f0f0f0-f0f0-f0f0-f0f0-f0f0f0f0f0f0"),
			uuid.Nil,
		},
		strs: []string{"temp", "0", TypeEdge, "bad type", strings.Repeat("k", MaxKeyLen+1)},
		points: [][pointFields][]byte{
			{u(0), u(0), u(0), u(1), m().f32(1.5).bytes(), m().str("").bytes(), m().bool(false).bytes(), u(1000), u(2)},
			{u(1), u(1), u(2), u(1), u(0), m().str("").bytes(), m().bool(false).bytes(), u(1), u(2)},
			{u(0), u(0), u(0), u(1), u(2), m().str("ok").bytes(), m().bool(true).bytes(), u(1), u(2)},
		},
	}
}

// wireHostilePointCount returns a batch whose points array declares n
// points but holds n one-byte values: well-formed msgpack that CheckMsgpack
// accepts, with n far more points than the bytes could encode.
func wireHostilePointCount(n int) []byte {
	id := uuid.MustParse("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a")
	m := newWireMsg().arr(batchFields).bin(id[:]).arr(1).str("t").arr(n)
	return m.raw(make([]byte, n)...).bytes()
}

func TestDecodeBatchRefusesInvalidPoints(t *testing.T) {
	m := newWireMsg
	u := func(v uint64) []byte { return m().uint(v).bytes() }
	p2 := func(field int, enc []byte) []byte {
		b := wireBaseBatch()
		b.points[2][field] = enc
		return b.encode()
	}
	with := func(edit func(b *wireBatchParts)) []byte {
		b := wireBaseBatch()
		edit(&b)
		return b.encode()
	}
	in := func(field string) []string { return []string{"point 2", field + ":"} }
	cases := []wireInvalidCase{
		{name: "batch of 2", in: with(func(b *wireBatchParts) { b.batchLen = 2 }), want: ErrMalformed, mention: []string{"batch:", "array of 2"}},
		{name: "batch of 4", in: with(func(b *wireBatchParts) { b.batchLen = 4 }), want: ErrMalformed, mention: []string{"batch:", "array of 4"}},
		{name: "batch a map", in: append([]byte{0x81}, with(func(b *wireBatchParts) { b.batchLen = 2 })[1:]...), want: ErrMalformed, mention: []string{"batch:"}},
		{name: "point of 8 fields", in: with(func(b *wireBatchParts) { b.pointLen = map[int]int{2: 8} }), want: ErrMalformed, mention: append(in("point"), "array of 8")},
		{name: "point of 10 fields", in: with(func(b *wireBatchParts) { b.pointLen = map[int]int{2: 10} }), want: ErrMalformed, mention: append(in("point"), "array of 10")},
		{name: "node index out of range", in: p2(0, u(4)), want: ErrMalformed, mention: append(in("node"), "out of range")},
		{name: "node index huge", in: p2(0, m().uint(math.MaxUint64).bytes()), want: ErrMalformed, mention: in("node")},
		{name: "node index negative", in: p2(0, m().int(-1).bytes()), want: ErrMalformed, mention: in("node")},
		{name: "node index a UUID", in: p2(0, m().bin(make([]byte, 16)).bytes()), want: ErrMalformed, mention: in("node")},
		{name: "parent index out of range", in: p2(1, u(5)), want: ErrMalformed, mention: append(in("parent"), "out of range")},
		{name: "type index out of range", in: p2(2, u(5)), want: ErrMalformed, mention: append(in("type"), "out of range")},
		{name: "key index out of range", in: p2(3, u(99)), want: ErrMalformed, mention: append(in("key"), "out of range")},
		{name: "origin index out of range", in: p2(8, u(4)), want: ErrMalformed, mention: append(in("origin"), "out of range")},
		{name: "nil node", in: p2(0, u(3)), want: ErrInvalidPoint, mention: in("node")},
		{name: "node is parent", in: p2(1, u(1)), want: ErrInvalidPoint, mention: in("parent")},
		{name: "type with a space", in: p2(2, u(3)), want: ErrInvalidPoint, mention: in("type")},
		{name: "edge without parent", in: p2(2, u(2)), want: ErrInvalidPoint, mention: in("type")},
		{name: "key too long", in: p2(3, u(4)), want: ErrInvalidPoint, large: true, mention: in("key")},
		{name: "NaN value", in: p2(4, m().f64(math.NaN()).bytes()), want: ErrInvalidPoint, mention: in("value")},
		{name: "+Inf value", in: p2(4, m().f64(math.Inf(1)).bytes()), want: ErrInvalidPoint, mention: in("value")},
		{name: "float32 -Inf value", in: p2(4, m().f32(float32(math.Inf(-1))).bytes()), want: ErrInvalidPoint, mention: in("value")},
		{name: "value a string", in: p2(4, m().str("1").bytes()), want: ErrMalformed, mention: in("value")},
		{name: "text not UTF-8", in: p2(5, m().str(wireBadText()).bytes()), want: ErrInvalidPoint, mention: in("text")},
		{name: "text over MaxTextLen", in: p2(5, m().str(strings.Repeat("é", MaxTextLen/2)+"x").bytes()), want: ErrInvalidPoint, large: true, mention: in("text")},
		{name: "text an integer", in: p2(5, u(1)), want: ErrMalformed, mention: in("text")},
		{name: "tombstone a string", in: p2(6, m().str("true").bytes()), want: ErrMalformed, mention: in("tombstone")},
		{name: "time wraps to zero", in: p2(7, m().int(-1001).bytes()), want: ErrInvalidPoint, mention: in("time")},
		{name: "time a float", in: p2(7, m().f32(1).bytes()), want: ErrMalformed, mention: in("time")},
		{name: "nil origin", in: p2(8, u(3)), want: ErrInvalidPoint, mention: in("origin")},
		{name: "ids of 15 bytes", in: with(func(b *wireBatchParts) { b.rawIDs = m().bin(make([]byte, 15)).bytes() }), want: ErrMalformed, mention: []string{"ids:"}},
		{name: "ids an integer", in: with(func(b *wireBatchParts) { b.rawIDs = u(1) }), want: ErrMalformed, mention: []string{"ids:"}},
		{name: "strings a map", in: with(func(b *wireBatchParts) { b.rawStrs = []byte{0x80} }), want: ErrMalformed, mention: []string{"strings:"}},
		{name: "string an integer", in: with(func(b *wireBatchParts) { b.rawStrs = m().arr(2).str("t").uint(1).bytes() }), want: ErrMalformed, mention: []string{"strings:"}},
		{name: "points an integer", in: with(func(b *wireBatchParts) { b.rawPoints = u(1) }), want: ErrMalformed, mention: []string{"points:"}},
		{name: "points declared beyond the bytes", in: wireHostilePointCount(1 << 16), want: ErrMalformed, mention: []string{"points:", "65536 declared"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckMsgpack(tc.in, MaxDepth); err != nil {
				t.Fatalf("test input is not well-formed msgpack: %v", err)
			}
			_, err := DecodeBatch(tc.in, 0)
			tc.check(t, err)
		})
	}
	want := []Point{
		{Node: uuid.MustParse("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a"), Type: "temp", Key: "0", Value: 1.5, Time: 1000, Origin: uuid.MustParse("f0f0f0f0-f0f0-f0f0-f0f0-f0f0f0f0f0f0")},
		{Node: uuid.MustParse("0b0b0b0b-0b0b-0b0b-0b0b-0b0b0b0b0b0b"), Parent: uuid.MustParse("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a"), Type: "edge", Key: "0", Time: 1001, Origin: uuid.MustParse("f0f0f0f0-f0f0-f0f0-f0f0-f0f0f0f0f0f0")},
		{Node: uuid.MustParse("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a"), Type: "temp", Key: "0", Value: 2, Text: "ok", Tombstone: true, Time: 1002, Origin: uuid.MustParse("f0f0f0f0-f0f0-f0f0-f0f0-f0f0f0f0f0f0")},
	}
	if got, err := DecodeBatch(wireBaseBatch().encode(), 0); err != nil || !slices.Equal(got, want) {
		t.Fatalf("the base batch: got %+v, %v", got, err)
	}
}

// wireSensorBatch returns n readings of one device: five types, the default
// key, float32-exact values, one origin, 100 ms apart.
func wireSensorBatch(n int) []Point {
	node := uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	origin := uuid.MustParse("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
	types := []string{"temperature", "humidity", "pressure", "voltage", "current"}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli()
	pts := make([]Point, n)
	for i := range pts {
		pts[i] = Point{
			Node:   node,
			Type:   types[i%len(types)],
			Key:    DefaultKey,
			Value:  float64(float32(20 + 0.37*float64(i%97))),
			Time:   NewTimestamp(start+100*int64(i), 0),
			Origin: origin,
		}
	}
	return pts
}

// TestSensorBatchSize holds the batch encoding to its purpose: a device's
// readings cost few bytes each. Each point is about 18 bytes: array header,
// four one-byte indexes, a float32 (5), an empty text, the tombstone, a
// 100 ms time delta as uint32 (5) and the origin index.
func TestSensorBatchSize(t *testing.T) {
	pts := wireSensorBatch(1000)
	b := AppendBatch(nil, pts)
	perPoint := float64(len(b)) / float64(len(pts))
	t.Logf("sensor batch: %d points in %d bytes, %.2f bytes a point", len(pts), len(b), perPoint)
	if perPoint > 40 {
		t.Fatalf("%.2f bytes a point, want at most 40", perPoint)
	}
	got, err := DecodeBatch(b, 0)
	if err != nil || !slices.Equal(got, pts) {
		t.Fatalf("round trip: %v", err)
	}
}

// wireAllocated returns the fewest heap bytes one call of f allocated over a
// few runs (each after a GC, which also empties the decoder pool, so the
// figure includes the pool's own allocations).
func wireAllocated(f func()) uint64 {
	// The least of five runs: anything else in the process that allocates
	// meanwhile (the runtime, the race detector) only ever adds to a run.
	least := uint64(math.MaxUint64)
	for range 5 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// wireAllocBound is what a decoder may allocate for n input bytes, however
// hostile: a small multiple of the input plus a fixed overhead (the pooled
// msgpack decoder, error values).
func wireAllocBound(n int) uint64 { return 64*uint64(n) + 64<<10 }

// wireHostileMessages are inputs under the size limit that declare far more
// than they hold. The first group is refused by CheckMsgpack; the last ones
// are well-formed msgpack that the batch decoder itself must bound.
func wireHostileBatches() []struct {
	name string
	in   []byte
} {
	id := bytes.Repeat([]byte{0x0a}, 16)
	// A valid minimal point: node 0, no parent, type 0, key 0, value 0,
	// text "", false, time delta 1, origin 0: ten bytes.
	minPoint := []byte{0x99, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0xc2, 0x01, 0x00}
	manyPoints := func(n int, last []byte) []byte {
		m := newWireMsg().arr(batchFields).bin(id).arr(1).str("t").arr(n)
		for i := 0; i < n-1; i++ {
			m.raw(minPoint...)
		}
		return m.raw(last...).bytes()
	}
	badLast := bytes.Clone(minPoint)
	badLast[1] = 0x05 // node index out of range
	oneByteStrings := newWireMsg().arr(batchFields).bin(id).arr(1 << 16).raw(bytes.Repeat([]byte{0x01}, 1<<16)...).arr(0).bytes()
	return []struct {
		name string
		in   []byte
	}{
		{"points array32 of 2^32-1", append([]byte{0x93, 0xc4, 0x10}, append(id, 0x90, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x99, 0x00, 0x00)...)},
		{"points array16 of 65535", append([]byte{0x93, 0xc4, 0x10}, append(id, 0x90, 0xdc, 0xff, 0xff, 0x99, 0x00, 0x00)...)},
		{"ids bin32 of 4 GiB", append([]byte{0x93, 0xc6, 0xff, 0xff, 0xff, 0xff}, id...)},
		{"strings array32 of 2^32-1", []byte{0x93, 0xc4, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xa1, 't', 0x90}},
		{"text str32 of 4 GiB", append(manyPoints(1, minPoint[:6]), 0xdb, 0xff, 0xff, 0xff, 0xff, 0x00)},
		{"points nested beyond MaxDepth", append([]byte{0x93, 0xc4, 0x00, 0x90}, nested(1<<16, 0x01)...)},
		{"points declared beyond the bytes (CheckMsgpack passes)", wireHostilePointCount(1 << 16)},
		{"65536 one-byte strings (CheckMsgpack passes)", oneByteStrings},
		{"100000 minimal points, the last invalid (CheckMsgpack passes)", manyPoints(100_000, badLast)},
	}
}

// TestDecodeBatchAllocationIsBounded proves the design's bounded decoding:
// whatever lengths a message declares, DecodeBatch allocates at most
// wireAllocBound(len(b)) and refuses it with ErrMalformed. The worst cases
// are the last two, which CheckMsgpack cannot refuse: a strings table of
// one-byte values (16 bytes of string header per input byte) and many
// minimal points (a 120-byte Point per 10 input bytes).
func TestDecodeBatchAllocationIsBounded(t *testing.T) {
	for _, tc := range wireHostileBatches() {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := wireAllocated(func() { _, err = DecodeBatch(tc.in, 0) })
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			t.Logf("%d input bytes, %d bytes allocated (%.1fx)", len(tc.in), n, float64(n)/float64(len(tc.in)))
			if bound := wireAllocBound(len(tc.in)); n > bound {
				t.Fatalf("%d bytes allocated for %d input bytes, bound %d", n, len(tc.in), bound)
			}
		})
	}
}

func TestDecodePointAllocationIsBounded(t *testing.T) {
	f := wirePointFields()
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"node bin32 of 4 GiB", []byte{0x99, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00}},
		{"text str32 of 4 GiB", newWireMsg().arr(pointFields).rawAll(f[:5]...).raw(0xdb, 0xff, 0xff, 0xff, 0xff, 0x00).bytes()},
		{"type str32 of 2^31", newWireMsg().arr(pointFields).rawAll(f[:2]...).raw(0xdb, 0x80, 0x00, 0x00, 0x00, 0x00).bytes()},
		{"point array32 of 2^32-1", []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc4, 0x10}},
		{"map32 of 2^32-1", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"ext32 of 4 GiB as node", []byte{0x99, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"deep nesting", nested(1<<16, 0x01)},
		{"node as a 64 KiB bin", newWireMsg().arr(pointFields).bin(make([]byte, 64<<10)).rawAll(f[1:]...).bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := wireAllocated(func() { _, err = DecodePoint(tc.in) })
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			t.Logf("%d input bytes, %d bytes allocated", len(tc.in), n)
			if bound := wireAllocBound(len(tc.in)); n > bound {
				t.Fatalf("%d bytes allocated for %d input bytes, bound %d", n, len(tc.in), bound)
			}
		})
	}
}

// TestDecodeBatchAllocationValid bounds what decoding a valid batch costs.
// The result holds one Point per point (unsafe.Sizeof(Point{}) = 120 bytes
// on 64-bit) and the ID table twice (the bytes, then the UUIDs); texts and
// table strings are copied once. A dense sensor point is 18 encoded bytes,
// so the bound is the Point slice, plus 4x the encoded size for the tables,
// texts and rounding to size classes, plus 8 KiB for the pooled decoder.
//
// Measured (amd64, go1.26): the 1,000-point sensor batch (18,047 bytes)
// allocates 123,576 bytes, 6.85x its encoded size, of which 120,000 is the
// Point slice; random mixed batches (long texts and keys) allocate 1.15x to
// 1.4x. The hostile worst cases of TestDecodeBatchAllocationIsBounded
// measure 16.0x (one-byte strings) and 12.0x (minimal points).
func TestDecodeBatchAllocationValid(t *testing.T) {
	g := &wireGen{r: wireRand(t)}
	batches := map[string][]Point{"sensor": wireSensorBatch(1000)}
	for i := range 3 {
		pts := g.batch(1000)
		for j := range pts {
			pts[j].Normalize()
		}
		batches[fmt.Sprintf("random %d", i)] = pts
	}
	for name, pts := range batches {
		b := AppendBatch(nil, pts)
		var err error
		n := wireAllocated(func() { _, err = DecodeBatch(b, len(b)) })
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		bound := uint64(len(pts))*uint64(unsafe.Sizeof(Point{})) + 4*uint64(len(b)) + 8<<10
		t.Logf("%s: %d points, %d bytes encoded, %d bytes allocated: %.2fx the encoding (bound %d)",
			name, len(pts), len(b), n, float64(n)/float64(len(b)), bound)
		if n > bound {
			t.Errorf("%s: %d bytes allocated, bound %d", name, n, bound)
		}
	}
}

// TestSizeLimits checks that oversized input is refused as ErrTooLarge
// before anything is read: the garbage below would otherwise be
// ErrMalformed, and refusing it allocates next to nothing.
func TestSizeLimits(t *testing.T) {
	for _, limit := range []int{0, 1, 100, 4096, MaxMessageSize, 2 * MaxMessageSize} {
		eff := limit
		if eff <= 0 {
			eff = MaxMessageSize
		}
		over := bytes.Repeat([]byte{0xc1}, eff+1)
		var err error
		n := wireAllocated(func() { _, err = DecodeBatch(over, limit) })
		if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeBatch(%d bytes, limit %d) = %v, want ErrTooLarge only", len(over), limit, err)
		}
		if n > 1<<10 {
			t.Errorf("refusing %d bytes allocated %d bytes", len(over), n)
		}
		if _, err := DecodeBatch(over[:eff], limit); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeBatch(%d bytes, limit %d) = %v, want ErrMalformed (at the limit)", eff, limit, err)
		}
	}

	over := bytes.Repeat([]byte{0xc1}, MaxMessageSize+1)
	var err error
	n := wireAllocated(func() { _, err = DecodePoint(over) })
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) {
		t.Errorf("DecodePoint(%d bytes) = %v, want ErrTooLarge only", len(over), err)
	}
	if n > 1<<10 {
		t.Errorf("refusing %d bytes allocated %d bytes", len(over), n)
	}

	// A valid batch of exactly the limit decodes; one byte less refuses it.
	b := AppendBatch(nil, wireSensorBatch(100))
	if _, err := DecodeBatch(b, len(b)); err != nil {
		t.Errorf("batch of %d bytes at a limit of %d: %v", len(b), len(b), err)
	}
	if _, err := DecodeBatch(b, len(b)-1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("batch of %d bytes at a limit of %d: %v, want ErrTooLarge", len(b), len(b)-1, err)
	}
}

// FuzzDecodePoint checks that DecodePoint never panics, refuses only with
// its documented errors, and that what it accepts is valid and survives a
// round trip: encode, decode, get the same point and the same bytes.
func FuzzDecodePoint(f *testing.F) {
	for _, s := range wireDecodePointSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePoint(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalidPoint) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decoded an invalid point %+v: %v", p, err)
		}
		enc := AppendPoint(nil, &p)
		p2, err := DecodePoint(enc)
		if err != nil {
			t.Fatalf("re-encoded point % x refused: %v", enc, err)
		}
		if p2 != p {
			t.Fatalf("round trip\n got %+v\nwant %+v", p2, p)
		}
		if enc2 := AppendPoint(nil, &p2); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding not canonical: % x then % x", enc, enc2)
		}
	})
}

// FuzzDecodeBatch checks that DecodeBatch never panics, refuses only with
// its documented errors, returns no more points than the input has bytes,
// and that what it accepts survives a round trip.
func FuzzDecodeBatch(f *testing.F) {
	for _, s := range wireDecodeBatchSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pts, err := DecodeBatch(b, 0)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalidPoint) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if len(pts)*minPointBytes > len(b) {
			t.Fatalf("%d points from %d bytes", len(pts), len(b))
		}
		for i := range pts {
			if err := pts[i].Validate(); err != nil {
				t.Fatalf("point %d invalid: %v", i, err)
			}
		}
		enc := AppendBatch(nil, pts)
		pts2, err := DecodeBatch(enc, len(enc))
		if err != nil {
			t.Fatalf("re-encoded batch refused: %v", err)
		}
		if !slices.Equal(pts2, pts) {
			t.Fatalf("round trip\n got %+v\nwant %+v", pts2, pts)
		}
		if enc2 := AppendBatch(nil, pts2); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding not canonical: % x then % x", enc, enc2)
		}
	})
}

func wireDecodePointSeeds() [][]byte {
	f := wirePointFields()
	p := wireSamplePoint()
	edge := *p
	edge.Parent = uuid.MustParse("11111111-1111-1111-1111-111111111111")
	edge.Type, edge.Text, edge.Tombstone, edge.Value, edge.Time = TypeEdge, "", true, -9.2e18, math.MaxUint64
	seeds := [][]byte{
		AppendPoint(nil, p),
		AppendPoint(nil, &edge),
		newWireMsg().arr(pointFields).rawAll(f[:4]...).f64(0.1).rawAll(f[5:]...).bytes(),
		newWireMsg().arr(pointFields).rawAll(f[:4]...).f64(math.NaN()).rawAll(f[5:]...).bytes(),
		newWireMsg().arr(pointFields).rawAll(f[:7]...).uint(0).rawAll(f[8:]...).bytes(),
		newWireMsg().arr(8).rawAll(f[:8]...).bytes(),
		{0x99, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00},
		newWireMsg().arr(pointFields).rawAll(f[:5]...).raw(0xdb, 0xff, 0xff, 0xff, 0xff, 0x00).bytes(),
		{0xdd, 0xff, 0xff, 0xff, 0xff},
		nested(100, 0x01),
	}
	return seeds
}

func wireDecodeBatchSeeds() [][]byte {
	seeds := [][]byte{
		AppendBatch(nil, nil),
		AppendBatch(nil, []Point{*wireSamplePoint()}),
		AppendBatch(nil, wireSensorBatch(10)),
		wireBaseBatch().encode(),
		wireHostilePointCount(64),
		{0x93, 0xc6, 0xff, 0xff, 0xff, 0xff},
		{0x93, 0xc4, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xa1, 't', 0x90},
		{0x93, 0xc4, 0x00, 0x90, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x99, 0x00},
		nested(100, 0x01),
	}
	b := wireBaseBatch()
	b.points[2][0] = newWireMsg().uint(4).bytes() // node index out of range
	seeds = append(seeds, b.encode())
	b = wireBaseBatch()
	b.points[2][7] = newWireMsg().int(-1001).bytes() // time wraps to zero
	seeds = append(seeds, b.encode())
	pts := wireSensorBatch(3)
	pts[1].Time, pts[2].Time = math.MaxUint64, 1 // deltas that wrap
	pts[2].Parent, pts[2].Type = uuid.MustParse("11111111-1111-1111-1111-111111111111"), TypeEdge
	return append(seeds, AppendBatch(nil, pts))
}

// TestWriteFuzzSeeds rewrites the seed corpora under testdata/fuzz when run
// with -wire.update-seeds; go test runs those files as regular tests.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*wireUpdateSeeds {
		t.Skip("run with -wire.update-seeds to rewrite testdata/fuzz")
	}
	// FuzzCheckMsgpack gets a handful of its in-code seeds as files.
	keep := map[string]bool{
		"empty input": true, "array32 of 2^32-1, nothing after": true, "map32 of 2^32-1, nothing after": true,
		"str32 of 4 GiB": true, "bin32 of 4 GiB": true, "ext32 of 4 GiB": true, "100 nested fixarrays": true,
		"float64 truncated": true, "reserved 0xc1": true, "trailing byte after a fixint": true,
		"fixmap": true, "ext32": true, "MaxDepth nested fixarrays": true, "point": true, "batch": true,
	}
	var seeds [][]byte
	for _, tc := range append(hostileMsgpack(), validMsgpack()...) {
		if keep[tc.name] {
			seeds = append(seeds, tc.in)
		}
	}
	if len(seeds) != len(keep) {
		t.Fatalf("%d of the %d named seeds found", len(seeds), len(keep))
	}
	wireWriteSeeds(t, "FuzzCheckMsgpack", seeds)
	wireWriteSeeds(t, "FuzzDecodePoint", wireDecodePointSeeds())
	wireWriteSeeds(t, "FuzzDecodeBatch", wireDecodeBatchSeeds())
}

func wireWriteSeeds(t *testing.T, target string, seeds [][]byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		name := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEmptyBatchIsEmptyBin(t *testing.T) {
	got := AppendBatch(nil, nil)
	if want := []byte{0x93, 0xc4, 0x00, 0x90, 0x90}; !bytes.Equal(got, want) {
		t.Fatalf("empty batch = % x, want % x", got, want)
	}
	pts, err := DecodeBatch(got, 0)
	if err != nil || len(pts) != 0 {
		t.Fatalf("decode empty batch: %v, %d points", err, len(pts))
	}
}

func TestDecodeBatchUnstamped(t *testing.T) {
	p := Point{Node: uuid.MustParse("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a"), Type: "temp", Key: "0", Value: 1}
	b := AppendBatch(nil, []Point{p})
	if _, err := DecodeBatch(b, 0); !errors.Is(err, ErrInvalidPoint) {
		t.Fatalf("unstamped point accepted by DecodeBatch: %v", err)
	}
	pts, err := DecodeBatchUnstamped(b, 0)
	if err != nil || len(pts) != 1 || pts[0] != p {
		t.Fatalf("DecodeBatchUnstamped = %v, %v", pts, err)
	}
	p.Type = "bad type"
	if _, err := DecodeBatchUnstamped(AppendBatch(nil, []Point{p}), 0); !errors.Is(err, ErrInvalidPoint) {
		t.Fatalf("invalid unstamped point accepted: %v", err)
	}
}
