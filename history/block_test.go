package history

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// series returns n samples of a sensor read every periodMs with up to
// jitterMs of jitter, a random walk of values rounded to 0.01, from one
// origin.
func series(rng *rand.Rand, n int, periodMs, jitterMs int64) []Sample {
	origin := uuid.New()
	t := int64(1_780_000_000_000)
	v := 20.0
	out := make([]Sample, n)
	for i := range out {
		j := int64(0)
		if jitterMs > 0 {
			j = rng.Int64N(2*jitterMs+1) - jitterMs
		}
		v = math.Round((v+rng.NormFloat64()*0.05)*100) / 100
		out[i] = Sample{Time: crdt.NewTimestamp(t+int64(i)*periodMs+j, 0), Origin: origin, Value: v}
	}
	return out
}

func roundTrip(t *testing.T, in []Sample) []byte {
	t.Helper()
	want := slices.Clone(in)
	b, err := Encode(in)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	slices.SortFunc(want, func(a, b Sample) int { return a.compare(&b) })
	want = slices.CompactFunc(want, func(a, b Sample) bool { return a.compare(&b) == 0 })
	if len(got) != len(want) {
		t.Fatalf("%d samples back, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] && !(got[i].Value == want[i].Value && math.Signbit(got[i].Value) == math.Signbit(want[i].Value) && got[i].Time == want[i].Time && got[i].Origin == want[i].Origin && got[i].Text == want[i].Text && got[i].Tombstone == want[i].Tombstone) {
			t.Fatalf("sample %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	return b
}

// TestRoundTrip: any set of samples comes back as it went in, sorted:
// several origins, texts, tombstones, logical counters, jumps of any
// size in time, any float.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	origins := []uuid.UUID{uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	floats := []float64{0, 1, -1, 0.1, 1e300, -1e-300, math.MaxFloat64, math.SmallestNonzeroFloat64, 21.5, 21.5}
	texts := []string{"", "", "", "on", "off", "ü例", strings.Repeat("x", 300)}
	for round := range 300 {
		n := 1 + rng.IntN(200)
		in := make([]Sample, n)
		ms := rng.Int64N(crdt.MaxPhysical)
		for i := range in {
			switch rng.IntN(6) {
			case 0:
				ms = rng.Int64N(crdt.MaxPhysical + 1) // a jump anywhere, back or forth
			case 1:
				ms += rng.Int64N(100_000)
			default:
				ms += 1000 + rng.Int64N(5) - 2
			}
			ms = min(max(ms, 0), crdt.MaxPhysical)
			logical := uint16(0)
			if rng.IntN(4) == 0 {
				logical = uint16(rng.IntN(1 << 16))
			}
			v := floats[rng.IntN(len(floats))]
			if rng.IntN(2) == 0 {
				v = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10))
			}
			in[i] = Sample{Time: crdt.NewTimestamp(ms, logical), Origin: origins[rng.IntN(1+round%len(origins))], Value: v,
				Text: texts[rng.IntN(len(texts))], Tombstone: rng.IntN(10) == 0}
		}
		// A duplicate of a sample is the same write: kept once.
		in = append(in, in[rng.IntN(n)])
		roundTrip(t, in)
	}
}

// TestDecimalValues: values that are decimals of up to 15 places are
// coded as integers and come back to the bit; the others, raw.
func TestDecimalValues(t *testing.T) {
	o := uuid.New()
	tenth := 0.1 // a variable: 0.1 + 0.2 of constants is exactly 0.3
	for _, c := range []struct {
		values []float64
		form   byte
	}{
		{[]float64{21.37, 21.38, -0.05, 0, 1e12, -3}, 2},
		{[]float64{1, 2, 3, -9007199254740991}, 0},
		{[]float64{tenth + 0.2, 1}, rawValues}, // 0.30000000000000004
		{[]float64{1e-15, 2e-15}, 15},
		{[]float64{9007199254740992}, rawValues}, // 2^53: beyond the integers
		{[]float64{123.456789012345}, 12},
	} {
		in := make([]Sample, len(c.values))
		for i, v := range c.values {
			in[i] = Sample{Time: crdt.NewTimestamp(int64(1000*(i+1)), 0), Origin: o, Value: v}
		}
		b := roundTrip(t, in)
		if form := b[1+1+1+16]; form != c.form {
			t.Errorf("%v: form %d, want %d", c.values, form, c.form)
		}
	}
}

// TestEncodeRefuses: what a block cannot hold is refused before writing.
func TestEncodeRefuses(t *testing.T) {
	o := uuid.New()
	at := crdt.NewTimestamp(1000, 0)
	for name, in := range map[string][]Sample{
		"empty":       nil,
		"NaN":         {{Time: at, Origin: o, Value: math.NaN()}},
		"infinite":    {{Time: at, Origin: o, Value: math.Inf(-1)}},
		"long text":   {{Time: at, Origin: o, Text: strings.Repeat("x", MaxTextLen+1)}},
		"not UTF-8":   {{Time: at, Origin: o, Text: "\xff"}},
		"conflicting": {{Time: at, Origin: o, Value: 1}, {Time: at, Origin: o, Value: 2}},
	} {
		if _, err := Encode(in); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

// TestDecodeRefuses: damaged blocks are refused with ErrMalformed, and a
// count larger than the bytes hold allocates nothing first.
func TestDecodeRefuses(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	good, err := Encode(series(rng, 100, 1000, 3))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":            {},
		"version":          append([]byte{2}, good[1:]...),
		"truncated":        good[:len(good)-3],
		"trailing":         append(slices.Clone(good), 0),
		"huge count":       append([]byte{1, 0xff, 0xff, 0xff, 0x7f, 1}, good[3:]...),
		"no origins":       {1, 1, 0},
		"too many origins": {1, 1, 2},
	}
	for name, b := range cases {
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	// Every single-bit flip is refused or decodes to a valid block.
	for i := 0; i < len(good)*8; i++ {
		b := slices.Clone(good)
		b[i/8] ^= 1 << (i % 8)
		if s, err := Decode(b); err == nil {
			if _, err := Encode(s); err != nil {
				t.Fatalf("flip %d: decoded to samples Encode refuses: %v", i, err)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("flip %d: %v", i, err)
		}
	}
}

// TestCompactRegularSeries: a 1 Hz sensor with a few ms of jitter and
// slowly changing values costs a few bytes a sample; with no jitter, less.
func TestCompactRegularSeries(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		jitter int64
		max    float64
	}{{0, 1.4}, {3, 2.1}} {
		b := roundTrip(t, series(rng, 3600, 1000, c.jitter))
		per := float64(len(b)) / 3600
		t.Logf("jitter %d ms: %.2f bytes a sample", c.jitter, per)
		if per > c.max {
			t.Errorf("jitter %d ms: %.2f bytes a sample, want ≤ %.1f", c.jitter, per, c.max)
		}
	}
}

func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 2, 3, 50} {
		b, _ := Encode(series(rng, n, 1000, 2))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v", err)
			}
			return
		}
		// What decodes encodes again, and to the same samples.
		again, err := Encode(slices.Clone(s))
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		s2, err := Decode(again)
		if err != nil || !slices.Equal(s, s2) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	in := series(rand.New(rand.NewPCG(9, 10)), 86_400, 1000, 3)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		out, err := Encode(slices.Clone(in))
		if err != nil {
			b.Fatal(err)
		}
		size = len(out)
	}
	b.ReportMetric(float64(size)/float64(len(in)), "B/sample")
	b.ReportMetric(float64(len(in))*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkDecode(b *testing.B) {
	in, err := Encode(series(rand.New(rand.NewPCG(9, 10)), 86_400, 1000, 3))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(86_400*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}
