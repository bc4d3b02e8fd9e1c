package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

func TestHistoryStepsRoundTrip(t *testing.T) {
	b := wireHistorySteps()
	if len(b) != 2*HistoryStepLen {
		t.Fatalf("%d bytes for 2 steps", len(b))
	}
	steps, err := DecodeHistorySteps(b)
	if err != nil {
		t.Fatal(err)
	}
	var again []byte
	for i := range steps {
		again = AppendHistoryStep(again, &steps[i])
	}
	if !bytes.Equal(again, b) || steps[1].Min != -3 || steps[0].Count != 2 || steps[0].LastTime != crdt.NewTimestamp(1_700_000_001_000, 0) {
		t.Fatalf("round trip: %+v", steps)
	}
	if s, err := DecodeHistorySteps(nil); err != nil || len(s) != 0 {
		t.Fatalf("no steps: %v %v", s, err)
	}
	// A sum that overflowed is a sum.
	inf := AppendHistoryStep(nil, &HistoryStep{Start: 0, Count: 2, Min: math.MaxFloat64, Max: math.MaxFloat64, Sum: math.Inf(1), Last: math.MaxFloat64})
	if _, err := DecodeHistorySteps(inf); err != nil {
		t.Fatalf("an overflowed sum: %v", err)
	}
}

func TestDecodeHistoryStepsRefuses(t *testing.T) {
	ok := HistoryStep{Start: 60_000, Count: 1, Min: 1, Max: 2, Sum: 3, Last: 2}
	step := func(f func(s *HistoryStep)) []byte {
		s := ok
		f(&s)
		return AppendHistoryStep(nil, &s)
	}
	for name, b := range map[string][]byte{
		"short":            wireHistorySteps()[:HistoryStepLen+1],
		"negative start":   step(func(s *HistoryStep) { s.Start = -1 }),
		"no sample":        step(func(s *HistoryStep) { s.Count = 0 }),
		"NaN min":          step(func(s *HistoryStep) { s.Min = math.NaN() }),
		"infinite max":     step(func(s *HistoryStep) { s.Max = math.Inf(1) }),
		"min above max":    step(func(s *HistoryStep) { s.Min = 5 }),
		"last above max":   step(func(s *HistoryStep) { s.Last = 9 }),
		"starts repeated":  append(step(func(*HistoryStep) {}), step(func(*HistoryStep) {})...),
		"starts backwards": append(step(func(*HistoryStep) {}), step(func(s *HistoryStep) { s.Start = 0 })...),
		"too many":         make([]byte, (MaxHistorySteps+1)*HistoryStepLen),
	} {
		if _, err := DecodeHistorySteps(b); !errors.Is(err, crdt.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// A block that declares more samples than a page holds is refused before
// it is decoded: a 1 MiB reply could otherwise make the decoder allocate
// some 50 MB of samples.
func TestDecodeHistorySamplesBound(t *testing.T) {
	ss, err := DecodeHistorySamples(wireHistoryBlock(), 0)
	if err != nil || len(ss) != 3 || ss[2].Text != "off" || !ss[2].Tombstone {
		t.Fatalf("%+v %v", ss, err)
	}
	if _, err := DecodeHistorySamples(wireHistoryBlock(), 2); !errors.Is(err, crdt.ErrMalformed) {
		t.Fatalf("3 samples with a limit of 2: %v", err)
	}
	huge := binary.AppendUvarint([]byte{1}, history.MaxBlockSamples)
	huge = append(huge, make([]byte, 1<<20-len(huge)-100)...)
	if _, err := DecodeHistorySamples(huge, 0); !errors.Is(err, crdt.ErrMalformed) {
		t.Fatalf("a block declaring %d samples: %v", history.MaxBlockSamples, err)
	}
	if ss, err := DecodeHistorySamples(nil, 0); err != nil || ss != nil {
		t.Fatalf("empty: %v %v", ss, err)
	}
	if _, err := DecodeHistorySamples([]byte{9}, 0); !errors.Is(err, history.ErrMalformed) {
		t.Fatalf("a bad block: %v", err)
	}
}

func TestHistoryCursors(t *testing.T) {
	o := uuid.MustParse("f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff")
	c := AppendSampleCursor(nil, crdt.NewTimestamp(1_700_000_000_000, 3), o)
	if tm, origin, err := ParseSampleCursor(c); err != nil || tm != crdt.NewTimestamp(1_700_000_000_000, 3) || origin != o {
		t.Fatalf("sample cursor: %v %v %v", tm, origin, err)
	}
	if start, err := ParseStepCursor(AppendStepCursor(nil, 1_700_000_060_000)); err != nil || start != 1_700_000_060_000 {
		t.Fatalf("step cursor: %v %v", start, err)
	}
	if _, _, err := ParseSampleCursor(c[:8]); err == nil {
		t.Error("a step cursor taken for a sample's")
	}
	if _, err := ParseStepCursor(c); err == nil {
		t.Error("a sample cursor taken for a step's")
	}
}

// FuzzDecodeHistoryPage checks that a page, its steps and its samples
// decode without panicking, and that steps that decode encode back to the
// same bytes.
func FuzzDecodeHistoryPage(f *testing.F) {
	for _, v := range msgSamples() {
		if p, ok := v.(HistoryPage); ok {
			msg, err := Encode(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(msg)
		}
	}
	f.Add([]byte{Version, byte(MsgHistoryPage), 0x80})
	f.Fuzz(func(t *testing.T, msg []byte) {
		var p HistoryPage
		if err := Decode(msg, 0, &p); err != nil {
			return
		}
		if steps, err := DecodeHistorySteps(p.Steps); err == nil {
			var again []byte
			for i := range steps {
				again = AppendHistoryStep(again, &steps[i])
			}
			if !bytes.Equal(again, p.Steps) {
				t.Fatalf("steps re-encode to % x, were % x", again, p.Steps)
			}
		} else if !errors.Is(err, crdt.ErrMalformed) {
			t.Fatalf("steps: undocumented error %v", err)
		}
		if ss, err := DecodeHistorySamples(p.Samples, 0); err == nil && len(ss) > MaxHistorySamples {
			t.Fatalf("%d samples decoded, limit %d", len(ss), MaxHistorySamples)
		} else if err != nil && !errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, history.ErrMalformed) {
			t.Fatalf("samples: undocumented error %v", err)
		}
	})
}
