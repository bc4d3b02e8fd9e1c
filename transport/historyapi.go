package transport

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

// The history request of the local API: one page of one register's
// history, raw or summarized per step (docs/protocol.md, "Local API").

// Limits of a HistoryPage.
const (
	// MaxHistorySamples bounds the samples of one page. A page of
	// regular sensor readings (1-2 bytes a sample) is then under 100 KB,
	// and a year of 1 Hz readings 631 pages.
	MaxHistorySamples = 50_000
	// MaxHistorySteps bounds the steps of one page: HistoryStepLen bytes
	// each, 448 KiB.
	MaxHistorySteps = 8192
)

// HistoryRequest asks for one page of the history of node Node's point
// Type.Key (NameHistory; Key empty: crdt.DefaultKey). Only node points
// have a history. The span is the samples whose physical time (ms since
// the Unix epoch) is in [From, To); To 0 has no end.
//
// With Step 0 the page holds the samples themselves, in (time, origin)
// order, after the cursor After (empty: from From). With Step > 0 (ms)
// it holds the summaries of the steps [From+i·Step, From+(i+1)·Step) that
// have a numeric sample (tombstones are not counted), in order, from the
// step the cursor After names (empty: the first). Max bounds the samples
// (at most MaxHistorySamples) or steps (at most MaxHistorySteps) of the
// page; 0 is the limit.
type HistoryRequest struct {
	Node  uuid.UUID `msgpack:"node"`
	Type  string    `msgpack:"type"`
	Key   string    `msgpack:"key"`
	From  int64     `msgpack:"from"`
	To    int64     `msgpack:"to"`
	Step  int64     `msgpack:"step,omitempty"`
	After []byte    `msgpack:"after"`
	Max   int       `msgpack:"max,omitempty"`
}

// HistoryPage answers a HistoryRequest. Known says the node is the
// server's root or holds a point or an edge there (as NodePage.Known;
// always true on a page after the first). Samples is a history block
// (history.Encode) of the page's samples, empty when there are none;
// Steps holds one HistoryStepLen-byte record per step (AppendHistoryStep).
// More says another page follows: ask again with After = Next.
type HistoryPage struct {
	Known   bool   `msgpack:"known"`
	Samples []byte `msgpack:"smp"`
	Steps   []byte `msgpack:"steps"`
	Next    []byte `msgpack:"next"`
	More    bool   `msgpack:"more"`
}

// HistoryStep summarizes the numeric samples (tombstones aside) of one
// step: their count, least, greatest and sum (the mean is Sum/Count), and
// the value and time of the latest.
type HistoryStep struct {
	// Start is the step's start, ms since the Unix epoch.
	Start    int64
	Count    uint64
	Min, Max float64
	Sum      float64
	Last     float64
	LastTime crdt.Timestamp
}

// HistoryStepLen is the size of one record of HistoryPage.Steps: start,
// count, min, max, sum, last and the last's HLC, 8 bytes each, big-endian
// (the numbers as IEEE-754 bits).
const HistoryStepLen = 7 * 8

// AppendHistoryStep appends the record of s to dst.
func AppendHistoryStep(dst []byte, s *HistoryStep) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.Start))
	dst = binary.BigEndian.AppendUint64(dst, s.Count)
	for _, v := range [...]float64{s.Min, s.Max, s.Sum, s.Last} {
		dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(v))
	}
	return binary.BigEndian.AppendUint64(dst, uint64(s.LastTime))
}

// DecodeHistorySteps decodes HistoryPage.Steps. It refuses, with an error
// wrapping crdt.ErrMalformed, a length that is not a multiple of
// HistoryStepLen, more than MaxHistorySteps records, and a record no
// server writes: a negative start, starts not increasing, a count of 0, a
// min, max or last that is NaN or infinite, min above max or last outside
// them. (Sum may overflow: values near the limits of float64 add up to an
// infinity, or a NaN when both signs do.)
func DecodeHistorySteps(b []byte) ([]HistoryStep, error) {
	if len(b)%HistoryStepLen != 0 {
		return nil, fmt.Errorf("history steps: %w: %d bytes, not a multiple of %d", crdt.ErrMalformed, len(b), HistoryStepLen)
	}
	n := len(b) / HistoryStepLen
	if n > MaxHistorySteps {
		return nil, fmt.Errorf("history steps: %w: %d steps, limit %d", crdt.ErrMalformed, n, MaxHistorySteps)
	}
	out := make([]HistoryStep, n)
	for i := range out {
		r := b[i*HistoryStepLen:]
		u := func(j int) uint64 { return binary.BigEndian.Uint64(r[8*j:]) }
		f := func(j int) float64 { return math.Float64frombits(u(j)) }
		s := HistoryStep{Start: int64(u(0)), Count: u(1), Min: f(2), Max: f(3), Sum: f(4), Last: f(5), LastTime: crdt.Timestamp(u(6))}
		switch {
		case s.Start < 0 || i > 0 && s.Start <= out[i-1].Start:
			return nil, fmt.Errorf("history step %d: %w: start %d out of order", i, crdt.ErrMalformed, s.Start)
		case s.Count == 0:
			return nil, fmt.Errorf("history step %d: %w: no sample", i, crdt.ErrMalformed)
		case !finite(s.Min) || !finite(s.Max) || !finite(s.Last):
			return nil, fmt.Errorf("history step %d: %w: a number that is not finite", i, crdt.ErrMalformed)
		case s.Min > s.Max || s.Last < s.Min || s.Last > s.Max:
			return nil, fmt.Errorf("history step %d: %w: min %v, max %v, last %v", i, crdt.ErrMalformed, s.Min, s.Max, s.Last)
		}
		out[i] = s
	}
	return out, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// DecodeHistorySamples decodes HistoryPage.Samples (empty: no sample). It
// refuses a block that declares more than limit samples
// (MaxHistorySamples when limit <= 0) before decoding it, so a reply cannot make the decoder
// allocate beyond what a page holds; other errors are history.Decode's
// (history.ErrMalformed).
func DecodeHistorySamples(b []byte, limit int) ([]history.Sample, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if limit <= 0 || limit > MaxHistorySamples {
		limit = MaxHistorySamples
	}
	if len(b) > 1 {
		if n, k := binary.Uvarint(b[1:]); k > 0 && n > uint64(limit) {
			return nil, fmt.Errorf("history samples: %w: %d samples, limit %d", crdt.ErrMalformed, n, limit)
		}
	}
	return history.Decode(b)
}

// Cursors of HistoryPage.Next: a sample's key (its HLC, 8 bytes
// big-endian, and its origin, 16 bytes) for samples; the start of the
// next step (ms, 8 bytes big-endian) for steps.
const (
	SampleCursorLen = 8 + 16
	StepCursorLen   = 8
)

// AppendSampleCursor appends the cursor after the sample of key (t,
// origin).
func AppendSampleCursor(dst []byte, t crdt.Timestamp, origin uuid.UUID) []byte {
	return append(binary.BigEndian.AppendUint64(dst, uint64(t)), origin[:]...)
}

// ParseSampleCursor parses a cursor of AppendSampleCursor.
func ParseSampleCursor(b []byte) (crdt.Timestamp, uuid.UUID, error) {
	if len(b) != SampleCursorLen {
		return 0, uuid.Nil, fmt.Errorf("history cursor of %d bytes, want %d", len(b), SampleCursorLen)
	}
	return crdt.Timestamp(binary.BigEndian.Uint64(b)), uuid.UUID(b[8:]), nil
}

// AppendStepCursor appends the cursor of the step that starts at start.
func AppendStepCursor(dst []byte, start int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(start))
}

// ParseStepCursor parses a cursor of AppendStepCursor.
func ParseStepCursor(b []byte) (int64, error) {
	if len(b) != StepCursorLen {
		return 0, fmt.Errorf("history step cursor of %d bytes, want %d", len(b), StepCursorLen)
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}
