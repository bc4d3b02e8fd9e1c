package crdt

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// wireMsg builds msgpack by hand, one value at a time, with the shortest
// forms (it drives the same encoder the codec uses). Tests use it to write
// well-formed messages that break a rule of the wire format.
type wireMsg struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

func newWireMsg() *wireMsg {
	m := &wireMsg{}
	m.enc = msgpack.NewEncoder(&m.buf)
	return m
}

func (m *wireMsg) arr(n int) *wireMsg     { _ = m.enc.EncodeArrayLen(n); return m }
func (m *wireMsg) bin(b []byte) *wireMsg  { _ = m.enc.EncodeBytes(b); return m }
func (m *wireMsg) str(s string) *wireMsg  { _ = m.enc.EncodeString(s); return m }
func (m *wireMsg) uint(u uint64) *wireMsg { _ = m.enc.EncodeUint(u); return m }
func (m *wireMsg) int(i int64) *wireMsg   { _ = m.enc.EncodeInt(i); return m }
func (m *wireMsg) f32(f float32) *wireMsg { _ = m.enc.EncodeFloat32(f); return m }
func (m *wireMsg) f64(f float64) *wireMsg { _ = m.enc.EncodeFloat64(f); return m }
func (m *wireMsg) nil() *wireMsg          { _ = m.enc.EncodeNil(); return m }
func (m *wireMsg) bool(b bool) *wireMsg   { _ = m.enc.EncodeBool(b); return m }
func (m *wireMsg) raw(b ...byte) *wireMsg { m.buf.Write(b); return m }
func (m *wireMsg) rawAll(bs ...[]byte) *wireMsg {
	for _, b := range bs {
		m.buf.Write(b)
	}
	return m
}
func (m *wireMsg) bytes() []byte { return bytes.Clone(m.buf.Bytes()) }

// nested returns n fixarray(1) headers around the value v.
func nested(n int, v ...byte) []byte {
	return append(bytes.Repeat([]byte{0x91}, n), v...)
}

// hostileMsgpack lists inputs CheckMsgpack must refuse. They are also seeds
// of FuzzCheckMsgpack.
func hostileMsgpack() []struct {
	name string
	in   []byte
} {
	return []struct {
		name string
		in   []byte
	}{
		{"empty input", []byte{}},
		{"array32 of 2^32-1, nothing after", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}},
		{"array32 of 2^32-1, a few values after", []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03}},
		{"array32 of 2^31", []byte{0xdd, 0x80, 0x00, 0x00, 0x00, 0x01}},
		{"array16 of 65535", []byte{0xdc, 0xff, 0xff, 0x01}},
		{"fixarray of 15 with 14 values", append([]byte{0x9f}, make([]byte, 14)...)},
		{"map32 of 2^32-1, nothing after", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}},
		{"map32 of 2^31", []byte{0xdf, 0x80, 0x00, 0x00, 0x00, 0x01, 0x02}},
		{"map16 of 65535", []byte{0xde, 0xff, 0xff, 0x01, 0x02}},
		{"fixmap with a key and no value", []byte{0x81, 0x01}},
		{"map of n needs 2n values", []byte{0x82, 0x01, 0x02, 0x03}},
		{"str32 of 4 GiB", []byte{0xdb, 0xff, 0xff, 0xff, 0xff}},
		{"str32 of 2^31", []byte{0xdb, 0x80, 0x00, 0x00, 0x00, 'a'}},
		{"bin32 of 4 GiB", []byte{0xc6, 0xff, 0xff, 0xff, 0xff}},
		{"bin32 of 4 GiB - 2 in an array", []byte{0x93, 0xc6, 0xff, 0xff, 0xff, 0xfe, 0x91, 0x91, 0x91}},
		{"ext32 of 4 GiB", []byte{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"ext32 of 2^31 in an array", []byte{0x92, 0xc9, 0x80, 0x00, 0x00, 0x00, 0x01, 0x02}},
		{"str16 truncated", []byte{0xda, 0x00, 0x05, 'a', 'b'}},
		{"str8 truncated", []byte{0xd9, 0x03, 'a'}},
		{"str8 without length", []byte{0xd9}},
		{"bin16 with half a length", []byte{0xc5, 0x00}},
		{"bin32 with 3 bytes of length", []byte{0xc6, 0x00, 0x00, 0x00}},
		{"fixstr truncated", []byte{0xa5, 'a', 'b'}},
		{"ext8 without its type byte", []byte{0xc7, 0x00}},
		{"ext16 truncated", []byte{0xc8, 0x00, 0x04, 0x01, 0x00}},
		{"fixext16 truncated", []byte{0xd8, 0x01, 0x00, 0x00, 0x00}},
		{"fixext1 without data", []byte{0xd4, 0x01}},
		{"uint8 truncated", []byte{0xcc}},
		{"uint16 truncated", []byte{0xcd, 0x00}},
		{"uint32 truncated", []byte{0xce, 0x00, 0x00, 0x00}},
		{"uint64 truncated", []byte{0xcf, 0, 0, 0, 0, 0, 0, 0}},
		{"int8 truncated", []byte{0xd0}},
		{"int16 truncated", []byte{0xd1, 0x00}},
		{"int32 truncated", []byte{0xd2, 0x00, 0x00}},
		{"int64 truncated", []byte{0xd3, 0, 0, 0, 0, 0, 0}},
		{"float32 truncated", []byte{0xca, 0x41, 0xbc, 0x00}},
		{"float64 truncated", []byte{0xcb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99}},
		{"reserved 0xc1", []byte{0xc1}},
		{"reserved 0xc1 in an array", []byte{0x92, 0x01, 0xc1}},
		{"trailing byte after a fixint", []byte{0x01, 0x02}},
		{"trailing byte after an empty array", []byte{0x90, 0x00}},
		{"two nils", []byte{0xc0, 0xc0}},
		{"100 nested fixarrays", nested(100, 0x01)},
		{"MaxDepth+1 nested fixarrays", nested(MaxDepth+1, 0x01)},
		{"MaxDepth+1 nested fixmaps", append(bytes.Repeat([]byte{0x81, 0x01}, MaxDepth+1), 0x01)},
		{"array32 of 2^32-1 nested in an array", []byte{0x91, 0xdd, 0xff, 0xff, 0xff, 0xff}},
		{"batch whose points array declares 2^32-1", []byte{0x93, 0xc4, 0x00, 0x90, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x99, 0x00}},
	}
}

// validMsgpack lists inputs CheckMsgpack must accept.
func validMsgpack() []struct {
	name string
	in   []byte
} {
	f64 := newWireMsg().f64(0.1).bytes()
	return []struct {
		name string
		in   []byte
	}{
		{"positive fixint", []byte{0x7f}},
		{"negative fixint", []byte{0xe0}},
		{"nil", []byte{0xc0}},
		{"false", []byte{0xc2}},
		{"true", []byte{0xc3}},
		{"empty fixstr", []byte{0xa0}},
		{"fixstr", []byte{0xa3, 'a', 'b', 'c'}},
		{"empty str8", []byte{0xd9, 0x00}},
		{"str16", append([]byte{0xda, 0x01, 0x00}, make([]byte, 256)...)},
		{"str32", []byte{0xdb, 0x00, 0x00, 0x00, 0x01, 'x'}},
		{"empty bin8", []byte{0xc4, 0x00}},
		{"bin32", []byte{0xc6, 0x00, 0x00, 0x00, 0x02, 0x01, 0x02}},
		{"empty array", []byte{0x90}},
		{"empty array32", []byte{0xdd, 0x00, 0x00, 0x00, 0x00}},
		{"empty map", []byte{0x80}},
		{"fixmap", []byte{0x81, 0xa1, 'k', 0x01}},
		{"map16", []byte{0xde, 0x00, 0x01, 0x01, 0x02}},
		{"array16", []byte{0xdc, 0x00, 0x02, 0x01, 0x02}},
		{"uint64", []byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"int64", []byte{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}},
		{"float32", []byte{0xca, 0x41, 0xbc, 0x00, 0x00}},
		{"float64", f64},
		{"fixext1", []byte{0xd4, 0x05, 0x01}},
		{"fixext16", append([]byte{0xd8, 0x05}, make([]byte, 16)...)},
		{"empty ext8", []byte{0xc7, 0x00, 0x05}},
		{"ext32", []byte{0xc9, 0x00, 0x00, 0x00, 0x01, 0x05, 0xff}},
		{"MaxDepth nested fixarrays", nested(MaxDepth, 0x01)},
		{"MaxDepth nested fixmaps", append(bytes.Repeat([]byte{0x81, 0x01}, MaxDepth), 0x01)},
		{"deep empty arrays do not nest", append(nested(MaxDepth-1), 0x90)},
		{"siblings at MaxDepth", append(nested(MaxDepth-2, 0x92), 0x91, 0x01, 0x91, 0x02)},
		{"point", AppendPoint(nil, wireSamplePoint())},
		{"batch", AppendBatch(nil, []Point{*wireSamplePoint(), *wireSamplePoint()})},
	}
}

func TestCheckMsgpackRefusesHostileInput(t *testing.T) {
	for _, tc := range hostileMsgpack() {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckMsgpack(tc.in, MaxDepth)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("CheckMsgpack(% x) = %v, want an error wrapping ErrMalformed", wireHead(tc.in), err)
			}
		})
	}
}

func TestCheckMsgpackAcceptsValidInput(t *testing.T) {
	for _, tc := range validMsgpack() {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckMsgpack(tc.in, MaxDepth); err != nil {
				t.Fatalf("CheckMsgpack(% x) = %v, want nil", wireHead(tc.in), err)
			}
		})
	}
}

// TestCheckMsgpackDepth pins the meaning of maxDepth: a value nested in d
// arrays or maps is accepted when d <= maxDepth. Empty containers hold no
// values and do not count. A maxDepth below zero acts as zero (scalars
// only), and a maxDepth above MaxDepth is clamped to MaxDepth,
// so that the walk never needs more than its fixed-size stack.
func TestCheckMsgpackDepth(t *testing.T) {
	for _, maxDepth := range []int{-1, 0, 1, 2, 3, MaxDepth - 1, MaxDepth} {
		for d := 0; d <= MaxDepth+1; d++ {
			err := CheckMsgpack(nested(d, 0x01), maxDepth)
			if ok := d <= max(maxDepth, 0); ok != (err == nil) {
				t.Errorf("maxDepth %d, %d nested arrays: err = %v, want ok=%v", maxDepth, d, err, ok)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("maxDepth %d, %d nested arrays: %v does not wrap ErrMalformed", maxDepth, d, err)
			}
		}
		if err := CheckMsgpack([]byte{0x90}, maxDepth); err != nil {
			t.Errorf("maxDepth %d: empty array refused: %v", maxDepth, err)
		}
	}
	if err := CheckMsgpack(nested(MaxDepth+1, 0x01), 1000); !errors.Is(err, ErrMalformed) {
		t.Errorf("maxDepth 1000, %d nested arrays: err = %v, want the MaxDepth clamp", MaxDepth+1, err)
	}
	if err := CheckMsgpack(nested(MaxDepth, 0x01), 1000); err != nil {
		t.Errorf("maxDepth 1000, %d nested arrays: %v", MaxDepth, err)
	}
}

// TestCheckMsgpackErrorsSayWhere checks that a few refusals explain
// themselves.
func TestCheckMsgpackErrorsSayWhere(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte{0xc1}, "0xc1"},
		{[]byte{0x01, 0x02}, "trailing"},
		{nested(100, 0x01), "nested deeper"},
		{[]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, "4294967295"},
		{[]byte{}, "truncated"},
	} {
		err := CheckMsgpack(tc.in, MaxDepth)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckMsgpack(% x) = %v, want it to mention %q", tc.in, err, tc.want)
		}
	}
}

// TestCheckMsgpackDoesNotAllocate holds CheckMsgpack to its doc comment on
// valid input, including a deep and a large message.
func TestCheckMsgpackDoesNotAllocate(t *testing.T) {
	inputs := [][]byte{
		nested(MaxDepth, 0x01),
		AppendPoint(nil, wireSamplePoint()),
		AppendBatch(nil, wireSensorBatch(1000)),
	}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { _ = CheckMsgpack(in, MaxDepth) }); n != 0 {
			t.Errorf("CheckMsgpack(% x...) allocates %v times, want 0", wireHead(in), n)
		}
	}
}

// TestCheckMsgpackAgreesWithMsgpack checks that every accepted seed is one
// value to the msgpack library too, ending exactly at the end of the input.
func TestCheckMsgpackAgreesWithMsgpack(t *testing.T) {
	for _, tc := range validMsgpack() {
		wireCheckAgainstLibrary(t, tc.in)
	}
}

func wireCheckAgainstLibrary(t *testing.T, b []byte) {
	t.Helper()
	raw, err := msgpack.NewDecoder(bytes.NewReader(b)).DecodeRaw()
	if err != nil {
		t.Fatalf("CheckMsgpack accepts % x but msgpack cannot skip it: %v", wireHead(b), err)
	}
	if !bytes.Equal(raw, b) {
		t.Fatalf("CheckMsgpack accepts % x as one value but msgpack reads % x", wireHead(b), wireHead(raw))
	}
}

// FuzzCheckMsgpack checks that CheckMsgpack never panics, refuses only with
// ErrMalformed, and that what it accepts is exactly one msgpack value: the
// msgpack library reads it back byte for byte, no strict prefix is accepted
// (msgpack is prefix-free) and no extension of it either.
func FuzzCheckMsgpack(f *testing.F) {
	for _, s := range wireCheckMsgpackSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := CheckMsgpack(b, MaxDepth)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(b) == 0 {
			t.Fatal("empty input accepted")
		}
		if CheckMsgpack(b[:len(b)-1], MaxDepth) == nil {
			t.Fatal("a strict prefix of an accepted value is accepted too")
		}
		if CheckMsgpack(append(b[:len(b):len(b)], 0xc0), MaxDepth) == nil {
			t.Fatal("trailing byte accepted")
		}
		wireCheckAgainstLibrary(t, b)
	})
}

func wireCheckMsgpackSeeds() [][]byte {
	var seeds [][]byte
	for _, tc := range hostileMsgpack() {
		seeds = append(seeds, tc.in)
	}
	for _, tc := range validMsgpack() {
		seeds = append(seeds, tc.in)
	}
	return seeds
}

// wireHead returns at most the first 32 bytes of b, for messages.
func wireHead(b []byte) []byte {
	return b[:min(len(b), 32)]
}

// TestWireMsgBuilder pins the helper the other wire tests rely on.
func TestWireMsgBuilder(t *testing.T) {
	got := newWireMsg().arr(3).uint(5).int(-1).str("a").bytes()
	if want := []byte{0x93, 0x05, 0xff, 0xa1, 'a'}; !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	got = newWireMsg().f64(math.Inf(1)).bool(true).nil().bin([]byte{1}).f32(1).raw(0x01).bytes()
	want := []byte{0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0, 0xc3, 0xc0, 0xc4, 0x01, 0x01, 0xca, 0x3f, 0x80, 0, 0, 0x01}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}
