package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

var (
	wireSeed        = flag.Uint64("wire.seed", 0, "seed of the random wire tests (0: pick one and log it)")
	wireUpdateSeeds = flag.Bool("wire.update-seeds", false, "rewrite the fuzz seed corpora under testdata/fuzz")
)

func wireRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *wireSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -wire.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// TestWireContract pins the numbers other builds rely on.
func TestWireContract(t *testing.T) {
	if Version != 1 {
		t.Errorf("Version = %d: changing it breaks every deployed peer", Version)
	}
	for typ, want := range map[MsgType]uint8{MsgInvalid: 0, MsgPoints: 1, MsgError: 2} {
		if uint8(typ) != want {
			t.Errorf("%v = %d, want %d (the enum is append-only)", typ, typ, want)
		}
	}
	for typ, want := range map[MsgType]string{MsgPoints: "points", MsgError: "error", MsgInvalid: "type(0)", 200: "type(200)"} {
		if got := typ.String(); got != want {
			t.Errorf("MsgType(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
	if got := AppendFrameHeader([]byte("x"), MsgError); !bytes.Equal(got, []byte{'x', Version, 2}) {
		t.Errorf("AppendFrameHeader = % x", got)
	}
}

func TestParseFrameRefusesOtherVersions(t *testing.T) {
	for _, v := range []byte{0, 2, 3, 0x7f, 0xff} {
		msg := []byte{v, byte(MsgPoints), 0x90}
		typ, body, err := ParseFrame(msg, 0)
		if !errors.Is(err, ErrVersion) {
			t.Errorf("version %d: err = %v, want ErrVersion", v, err)
		}
		if typ != MsgInvalid || body != nil {
			t.Errorf("version %d: got %v, % x with the error", v, typ, body)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprint(v)) {
			t.Errorf("version %d: error %q does not name the version", v, err)
		}
		if _, err := DecodePoints(msg, 0); !errors.Is(err, ErrVersion) {
			t.Errorf("DecodePoints, version %d: err = %v, want ErrVersion", v, err)
		}
	}
}

func TestParseFrameRefusesUnknownTypes(t *testing.T) {
	for _, typ := range []byte{byte(MsgInvalid), byte(msgTypeEnd), byte(msgTypeEnd) + 1, 0x80, 0xff} {
		msg := []byte{Version, typ, 0x90}
		got, body, err := ParseFrame(msg, 0)
		if !errors.Is(err, ErrUnknownType) {
			t.Errorf("type %d: err = %v, want ErrUnknownType", typ, err)
		}
		if got != MsgInvalid || body != nil {
			t.Errorf("type %d: got %v, % x with the error", typ, got, body)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprint(typ)) {
			t.Errorf("type %d: error %q does not name the type", typ, err)
		}
	}
}

func TestParseFrameShorterThanHeader(t *testing.T) {
	for _, msg := range [][]byte{nil, {}, {Version}} {
		if _, _, err := ParseFrame(msg, 0); !errors.Is(err, crdt.ErrMalformed) {
			t.Errorf("ParseFrame(% x) = %v, want ErrMalformed", msg, err)
		}
	}
}

// TestParseFrameHeaderOnly: a header with no body is a frame with an empty
// body; for MsgPoints the empty body is then not a batch.
func TestParseFrameHeaderOnly(t *testing.T) {
	for _, typ := range []MsgType{MsgPoints, MsgError} {
		msg := AppendFrameHeader(nil, typ)
		got, body, err := ParseFrame(msg, 0)
		if err != nil || got != typ || len(body) != 0 {
			t.Errorf("ParseFrame(% x) = %v, % x, %v; want %v, empty body", msg, got, body, err, typ)
		}
	}
	if _, err := DecodePoints(AppendFrameHeader(nil, MsgPoints), 0); !errors.Is(err, crdt.ErrMalformed) {
		t.Errorf("DecodePoints(header only) = %v, want ErrMalformed", err)
	}
}

func TestParseFrameBodyAliasesMessage(t *testing.T) {
	msg := EncodePoints([]crdt.Point{wireSamplePoint()})
	typ, body, err := ParseFrame(msg, 0)
	if err != nil || typ != MsgPoints {
		t.Fatalf("ParseFrame = %v, %v", typ, err)
	}
	if len(body) != len(msg)-2 || &body[0] != &msg[2] {
		t.Fatalf("body does not alias msg[2:]")
	}
}

func TestDecodePointsRefusesOtherTypes(t *testing.T) {
	msg := AppendFrameHeader(nil, MsgError)
	msg = append(msg, 0xa2, 'n', 'o')
	if _, err := DecodePoints(msg, 0); !errors.Is(err, ErrUnknownType) || !strings.Contains(err.Error(), "error") {
		t.Errorf("DecodePoints(error frame) = %v, want ErrUnknownType naming the type", err)
	}
}

// TestDecodePointsPassesBatchErrors checks that errors of the body keep
// their crdt sentinels and the index of the bad point.
func TestDecodePointsPassesBatchErrors(t *testing.T) {
	p := wireSamplePoint()
	bad := p
	bad.Text = "\xff"
	msg := EncodePoints([]crdt.Point{p, p, bad})
	_, err := DecodePoints(msg, 0)
	if !errors.Is(err, crdt.ErrInvalidPoint) || !strings.Contains(err.Error(), "point 2") || !strings.Contains(err.Error(), "text") {
		t.Errorf("err = %v, want ErrInvalidPoint naming point 2 and its text", err)
	}
	msg = append(EncodePoints([]crdt.Point{p}), 0xc0)
	if _, err := DecodePoints(msg, 0); !errors.Is(err, crdt.ErrMalformed) {
		t.Errorf("trailing byte: err = %v, want ErrMalformed", err)
	}
}

// TestFrameSizeLimit checks that an oversized frame is refused as
// ErrTooLarge before its header is read: the garbage below has a bad
// version too, and the size wins.
func TestFrameSizeLimit(t *testing.T) {
	for _, limit := range []int{0, 1, 2, 100, crdt.MaxMessageSize, 2 * crdt.MaxMessageSize} {
		eff := limit
		if eff <= 0 {
			eff = crdt.MaxMessageSize
		}
		over := bytes.Repeat([]byte{0xc1}, eff+1)
		if _, _, err := ParseFrame(over, limit); !errors.Is(err, crdt.ErrTooLarge) || errors.Is(err, ErrVersion) {
			t.Errorf("ParseFrame(%d bytes, limit %d) = %v, want ErrTooLarge only", len(over), limit, err)
		}
		if _, err := DecodePoints(over, limit); !errors.Is(err, crdt.ErrTooLarge) {
			t.Errorf("DecodePoints(%d bytes, limit %d) = %v, want ErrTooLarge", len(over), limit, err)
		}
		if eff >= 2 {
			if _, _, err := ParseFrame(over[:eff], limit); !errors.Is(err, ErrVersion) {
				t.Errorf("ParseFrame(%d bytes, limit %d) = %v, want ErrVersion (at the limit)", eff, limit, err)
			}
		}
	}
	msg := EncodePoints(wireSensorPoints(200))
	if _, err := DecodePoints(msg, len(msg)); err != nil {
		t.Errorf("frame of %d bytes at its own size: %v", len(msg), err)
	}
	if _, err := DecodePoints(msg, len(msg)-1); !errors.Is(err, crdt.ErrTooLarge) {
		t.Errorf("frame of %d bytes, limit one less: %v, want ErrTooLarge", len(msg), err)
	}
}

func wireSamplePoint() crdt.Point {
	return crdt.Point{
		Node:   uuid.MustParse("00010203-0405-0607-0809-0a0b0c0d0e0f"),
		Type:   "t",
		Key:    crdt.DefaultKey,
		Value:  23.5,
		Text:   "hi",
		Time:   0x0102,
		Origin: uuid.MustParse("f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff"),
	}
}

func wireSensorPoints(n int) []crdt.Point {
	pts := make([]crdt.Point, n)
	for i := range pts {
		pts[i] = wireSamplePoint()
		pts[i].Type = []string{"temperature", "humidity", "pressure"}[i%3]
		pts[i].Value = float64(float32(20 + 0.25*float64(i%50)))
		pts[i].Text = ""
		pts[i].Time = crdt.NewTimestamp(1_700_000_000_000+100*int64(i), 0)
	}
	return pts
}

// wirePoints returns n random valid points (not normalized: blank keys and
// negative zeros occur) sharing a few IDs, with values, texts and times
// at the edges of the encoding.
func wirePoints(r *rand.Rand, n int) []crdt.Point {
	var ids []uuid.UUID
	id := func() uuid.UUID {
		if len(ids) > 0 && r.IntN(3) != 0 {
			return ids[r.IntN(len(ids))]
		}
		var u uuid.UUID
		binary.BigEndian.PutUint64(u[:8], r.Uint64())
		binary.BigEndian.PutUint64(u[8:], r.Uint64()|1)
		ids = append(ids, u)
		return u
	}
	values := []float64{0, math.Copysign(0, -1), 23, -1, 23.5, 0.1, 1e300, -9.2e18, -(1 << 63), 1 << 63,
		math.MaxFloat64, math.SmallestNonzeroFloat64}
	texts := []string{"", "", "hi", "héllo ☃ 𝄞", "\x00\n\t", strings.Repeat("é", crdt.MaxTextLen/2)}
	keys := []string{"", crdt.DefaultKey, "a", strings.Repeat("~", crdt.MaxKeyLen)}
	types := []string{"temp", crdt.TypeNodeType, strings.Repeat("T", crdt.MaxTypeLen), "a.b-c_d"}
	pts := make([]crdt.Point, n)
	for i := range pts {
		p := crdt.Point{Node: id(), Origin: id(), Tombstone: r.IntN(3) == 0}
		switch r.IntN(4) {
		case 0:
			p.Value = values[r.IntN(len(values))]
		case 1:
			p.Value = float64(int64(r.Uint64()))
		case 2:
			p.Value = float64(float32(r.NormFloat64()))
		default:
			p.Value = r.NormFloat64() * 1e10
		}
		p.Text = texts[r.IntN(len(texts))]
		if len(p.Text) == crdt.MaxTextLen && r.IntN(8) != 0 {
			p.Text = "x" // keep most batches small
		}
		p.Key = keys[r.IntN(len(keys))]
		p.Type = types[r.IntN(len(types))]
		if r.IntN(2) == 0 {
			for p.Parent == uuid.Nil || p.Parent == p.Node {
				p.Parent = id()
			}
			if r.IntN(2) == 0 {
				p.Type = crdt.TypeEdge
			}
		}
		switch r.IntN(4) {
		case 0:
			p.Time = math.MaxUint64
		case 1:
			p.Time = 1
		default:
			p.Time = crdt.Timestamp(r.Uint64() | 1)
		}
		pts[i] = p
	}
	return pts
}

func TestPointsFrameRoundTrip(t *testing.T) {
	r := wireRand(t)
	for i := 0; i < 300; i++ {
		n := r.IntN(30)
		if i < 2 {
			n = i
		}
		in := wirePoints(r, n)
		want := make([]crdt.Point, len(in))
		for j := range in {
			want[j] = in[j]
			want[j].Normalize()
			if err := want[j].Validate(); err != nil {
				t.Fatalf("generator made an invalid point: %v", err)
			}
		}
		msg := EncodePoints(in)
		if msg[0] != Version || MsgType(msg[1]) != MsgPoints {
			t.Fatalf("header % x", msg[:2])
		}
		got, err := DecodePoints(msg, len(msg))
		if err != nil {
			t.Fatalf("frame %d of %d points: %v", i, n, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("frame %d: round trip\n got %+v\nwant %+v", i, got, want)
		}
		if len(msg) <= crdt.MaxMessageSize {
			if _, err := DecodePoints(msg, 0); err != nil {
				t.Fatalf("frame %d, default limit: %v", i, err)
			}
		}
	}
}

// FuzzParseFrame checks that ParseFrame never panics, refuses only with its
// documented errors, and that an accepted frame has a known type, this
// build's version, and its body is the rest of the message.
func FuzzParseFrame(f *testing.F) {
	for _, s := range wireFrameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		typ, body, err := ParseFrame(msg, 0)
		if err != nil {
			if !errors.Is(err, ErrVersion) && !errors.Is(err, ErrUnknownType) &&
				!errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, crdt.ErrTooLarge) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if msg[0] != Version || typ != MsgType(msg[1]) || !typ.known() {
			t.Fatalf("accepted header % x as %v", msg[:2], typ)
		}
		if !bytes.Equal(body, msg[2:]) {
			t.Fatalf("body % x, want % x", body, msg[2:])
		}
		if again := AppendFrameHeader(nil, typ); !bytes.Equal(append(again, body...), msg) {
			t.Fatalf("re-framing gives % x", again)
		}
	})
}

// FuzzDecodePoints checks that DecodePoints never panics, returns no more
// points than the frame has bytes, and that the points it accepts survive
// EncodePoints and DecodePoints unchanged, in the same bytes.
func FuzzDecodePoints(f *testing.F) {
	for _, s := range wireFrameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		pts, err := DecodePoints(msg, 0)
		if err != nil {
			if !errors.Is(err, ErrVersion) && !errors.Is(err, ErrUnknownType) && !errors.Is(err, crdt.ErrMalformed) &&
				!errors.Is(err, crdt.ErrTooLarge) && !errors.Is(err, crdt.ErrInvalidPoint) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if len(pts) > len(msg) {
			t.Fatalf("%d points from %d bytes", len(pts), len(msg))
		}
		enc := EncodePoints(pts)
		pts2, err := DecodePoints(enc, len(enc))
		if err != nil {
			t.Fatalf("re-encoded frame refused: %v", err)
		}
		if !slices.Equal(pts2, pts) {
			t.Fatalf("round trip\n got %+v\nwant %+v", pts2, pts)
		}
		if enc2 := EncodePoints(pts2); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding not canonical")
		}
	})
}

func wireFrameSeeds() [][]byte {
	hdr := AppendFrameHeader(nil, MsgPoints)
	with := func(body ...byte) []byte { return append(slices.Clone(hdr), body...) }
	p := wireSamplePoint()
	edge := p
	edge.Parent, edge.Type, edge.Tombstone = uuid.MustParse("11111111-1111-1111-1111-111111111111"), crdt.TypeEdge, true
	bad := p
	bad.Value = math.Inf(1)
	return [][]byte{
		{},
		{Version},
		hdr,
		AppendFrameHeader(nil, MsgError),
		append(AppendFrameHeader(nil, MsgError), 0xa2, 'n', 'o'),
		{0, byte(MsgPoints), 0x90},
		{2, byte(MsgPoints), 0x90},
		{Version, 0, 0x90},
		{Version, 3, 0x90},
		EncodePoints(nil),
		EncodePoints([]crdt.Point{p, edge}),
		EncodePoints(wireSensorPoints(5)),
		EncodePoints([]crdt.Point{p, bad}),
		with(0x93, 0xc4, 0x00, 0x90, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x99, 0x00),
		with(0x93, 0xc6, 0xff, 0xff, 0xff, 0xff),
		with(0x93, 0xc4, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xa1, 't', 0x90),
		with(bytes.Repeat([]byte{0x91}, 100)...),
	}
}

// TestWriteFuzzSeeds rewrites the seed corpora under testdata/fuzz when run
// with -wire.update-seeds; go test runs those files as regular tests.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*wireUpdateSeeds {
		t.Skip("run with -wire.update-seeds to rewrite testdata/fuzz")
	}
	for _, target := range []string{"FuzzParseFrame", "FuzzDecodePoints"} {
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
		for i, s := range wireFrameSeeds() {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
