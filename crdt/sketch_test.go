package crdt

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
)

func randKey(r *rand.Rand, keyLen int) (k SketchKey) {
	for i := range keyLen {
		k[i] = byte(r.Uint32())
	}
	return k
}

// checkDecoded compares a decoded difference with the naive one.
func checkDecoded(t *testing.T, what string, plus, minus []SketchKey, want map[SketchKey]int) {
	t.Helper()
	if len(plus)+len(minus) != len(want) {
		t.Fatalf("%s: decoded %d+%d keys, want %d", what, len(plus), len(minus), len(want))
	}
	for _, k := range plus {
		if want[k] != 1 {
			t.Fatalf("%s: %x decoded as only in a", what, k)
		}
	}
	for _, k := range minus {
		if want[k] != -1 {
			t.Fatalf("%s: %x decoded as only in b", what, k)
		}
	}
}

// TestSketchFindsSmallDifferences checks decoding against the naive set
// difference: two sets sharing most keys, differing by a few on each side.
func TestSketchFindsSmallDifferences(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	decoded, tried := 0, 0
	for trial := range 2000 {
		keyLen := []int{16, 20}[trial%2]
		common := r.IntN(200)
		da, db := r.IntN(3), r.IntN(3)
		a, b := NewSketch(12, keyLen), NewSketch(12, keyLen)
		for range common {
			k := randKey(r, keyLen)
			a.Add(k)
			b.Add(k)
		}
		want := map[SketchKey]int{}
		for range da {
			k := randKey(r, keyLen)
			a.Add(k)
			want[k] = 1
		}
		for range db {
			k := randKey(r, keyLen)
			b.Add(k)
			want[k] = -1
		}
		if err := a.Subtract(b); err != nil {
			t.Fatal(err)
		}
		plus, minus, ok := a.Decode()
		tried++
		if !ok {
			continue // too many for this size: the caller falls back
		}
		decoded++
		checkDecoded(t, "small", plus, minus, want)
	}
	// Up to four differing keys in twelve cells decode nearly always.
	if decoded < tried*95/100 {
		t.Fatalf("decoded %d of %d", decoded, tried)
	}
}

// TestSketchLargeDifferences decodes thousands of differing point keys
// from a table of 1.5 cells per key, the load repair sizes for. The keys
// are real PointKeys, whose HLC bytes are nearly equal: cells must still
// spread.
func TestSketchLargeDifferences(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	origin := uuid.New()
	failed := 0
	const trials = 20
	for range trials {
		d := 500 + r.IntN(2000)
		a, b := NewSketch(d*3/2+30, PointKeyLen), NewSketch(d*3/2+30, PointKeyLen)
		want := map[SketchKey]int{}
		base := Timestamp(1_800_000_000_000 << 16)
		for i := range 20_000 {
			p := Point{Node: uuid.New(), Type: "reading", Key: "0", Time: base + Timestamp(i), Origin: origin}
			k := PointKey(&p)
			switch {
			case i < d/2:
				a.Add(k)
				want[k] = 1
			case i < d:
				b.Add(k)
				want[k] = -1
			default:
				a.Add(k)
				b.Add(k)
			}
		}
		_ = a.Subtract(b)
		plus, minus, ok := a.Decode()
		if !ok {
			failed++
			continue
		}
		checkDecoded(t, "large", plus, minus, want)
	}
	if failed > 1 {
		t.Fatalf("%d of %d large sketches failed to decode at 1.5 cells per key", failed, trials)
	}
}

func TestSketchTooManyFailsCleanly(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	a, b := NewSketch(6, 16), NewSketch(6, 16)
	for range 40 {
		a.Add(randKey(r, 16))
	}
	_ = a.Subtract(b)
	if _, _, ok := a.Decode(); ok {
		t.Fatal("40 keys decoded from 6 cells")
	}
	if err := a.Subtract(NewSketch(6, 20)); err == nil {
		t.Fatal("subtracted sketches of different key lengths")
	}
}

func TestSketchEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, keyLen := range []int{16, 20} {
		s := NewSketch(9, keyLen)
		for range 3 {
			s.Add(randKey(r, keyLen))
		}
		b := s.AppendBinary(nil)
		if len(b) != 9*SketchCellLen(keyLen) || s.EncodedLen() != len(b) {
			t.Fatalf("%d bytes", len(b))
		}
		got, err := DecodeSketch(b, keyLen)
		if err != nil || len(got.cells) != 9 || got.cells[4] != s.cells[4] {
			t.Fatalf("decode: %v", err)
		}
		if !bytes.Equal(got.AppendBinary(nil), b) {
			t.Fatal("re-encoding differs")
		}
		cl := SketchCellLen(keyLen)
		for _, bad := range [][]byte{nil, b[:cl-1], b[:2*cl], make([]byte, (MaxSketchCells+3)*cl)} {
			if _, err := DecodeSketch(bad, keyLen); err == nil {
				t.Errorf("DecodeSketch accepted %d bytes", len(bad))
			}
		}
	}
	if _, err := DecodeSketch(make([]byte, 3*25), 21); err == nil {
		t.Error("DecodeSketch accepted a key length of 21")
	}
}

// TestPointKeyVector pins PointKey and its tags: another implementation
// (the browser's) must compute the same bytes.
func TestPointKeyVector(t *testing.T) {
	p := Point{Node: uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), Type: "temp", Key: "0",
		Time: Timestamp(0x0123456789abcdef), Origin: uuid.MustParse("00000000-0000-0000-0000-000000000001")}
	k := PointKey(&p)
	n, reg, tm, o := PointKeyParts(&k)
	if n != NodeTag(p.Node) || reg != uint32(RegisterHash("temp", "0")>>32) || tm != p.Time || o != NodeTag(p.Origin) {
		t.Fatalf("parts %x %x %x %x", n, reg, tm, o)
	}
	if Mix64(1) != 0x5692161d100b05e5 {
		t.Fatalf("Mix64(1) = %#x", Mix64(1))
	}
	if got := NodeTag(p.Node); got != NodeTag(p.Node) || got == NodeTag(p.Origin) {
		t.Fatal("NodeTag is not a function of the ID")
	}
}

func FuzzDecodeSketch(f *testing.F) {
	f.Add(NewSketch(9, 16).AppendBinary(nil), false)
	f.Add(NewSketch(9, 20).AppendBinary(nil), true)
	f.Fuzz(func(t *testing.T, b []byte, long bool) {
		keyLen := 16
		if long {
			keyLen = 20
		}
		s, err := DecodeSketch(b, keyLen)
		if err != nil {
			return
		}
		s.Decode() // never panics, always ends
	})
}
