package crdt

import (
	"math/rand/v2"
	"testing"
)

func randKey(r *rand.Rand) (k [16]byte) {
	for i := range k {
		k[i] = byte(r.Uint32())
	}
	return k
}

// TestSketchFindsSmallDifferences checks decoding against the naive set
// difference: two sets sharing most keys, differing by a few on each side.
func TestSketchFindsSmallDifferences(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	decoded, tried := 0, 0
	for trial := range 2000 {
		common := r.IntN(200)
		da, db := r.IntN(3), r.IntN(3)
		a, b := NewSketch(12), NewSketch(12)
		for range common {
			k := randKey(r)
			a.Add(k)
			b.Add(k)
		}
		want := map[[16]byte]int{}
		for range da {
			k := randKey(r)
			a.Add(k)
			want[k] = 1
		}
		for range db {
			k := randKey(r)
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
		if len(plus)+len(minus) != len(want) {
			t.Fatalf("trial %d: decoded %d+%d keys, want %d", trial, len(plus), len(minus), len(want))
		}
		for _, k := range plus {
			if want[k] != 1 {
				t.Fatalf("trial %d: %x decoded as only in a", trial, k)
			}
		}
		for _, k := range minus {
			if want[k] != -1 {
				t.Fatalf("trial %d: %x decoded as only in b", trial, k)
			}
		}
	}
	// Up to four differing keys in twelve cells decode nearly always.
	if decoded < tried*95/100 {
		t.Fatalf("decoded %d of %d", decoded, tried)
	}
}

func TestSketchTooManyFailsCleanly(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	a, b := NewSketch(6), NewSketch(6)
	for range 40 {
		a.Add(randKey(r))
	}
	_ = a.Subtract(b)
	if _, _, ok := a.Decode(); ok {
		t.Fatal("40 keys decoded from 6 cells")
	}
}

func TestSketchEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	s := NewSketch(9)
	for range 3 {
		s.Add(randKey(r))
	}
	b := s.AppendBinary(nil)
	if len(b) != 9*sketchCellLen {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := DecodeSketch(b)
	if err != nil || len(got.cells) != 9 || got.cells[4] != s.cells[4] {
		t.Fatalf("decode: %v", err)
	}
	for _, bad := range [][]byte{nil, b[:21], b[:44], make([]byte, (MaxSketchCells+3)*sketchCellLen)} {
		if _, err := DecodeSketch(bad); err == nil {
			t.Errorf("DecodeSketch accepted %d bytes", len(bad))
		}
	}
}

func FuzzDecodeSketch(f *testing.F) {
	f.Add(NewSketch(9).AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSketch(b)
		if err != nil {
			return
		}
		s.Decode() // never panics, always ends
	})
}
