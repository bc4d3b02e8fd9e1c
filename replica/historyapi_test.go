package replica

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// histBase is the start of the test histories: a window boundary.
const histBase = 472_222 * history.WindowMs

// histUUID returns a version-4 UUID drawn from rng.
func histUUID(rng *rand.Rand) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[:8], rng.Uint64())
	binary.BigEndian.PutUint64(u[8:], rng.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// histSeries returns about n samples over hours hours from histBase: a
// 1 Hz-ish series with jitter, from two origins that sometimes write in
// the same millisecond, with values in quarters (so that sums are exact
// whatever the order of the additions), and a few texts and tombstones.
func histSeries(rng *rand.Rand, hours int) []history.Sample {
	a, b := histUUID(rng), histUUID(rng)
	var ss []history.Sample
	for t := int64(histBase); t < histBase+int64(hours)*history.WindowMs; t += 900 + rng.Int64N(200) {
		s := history.Sample{Time: crdt.NewTimestamp(t, uint16(rng.IntN(2))), Origin: a, Value: float64(rng.IntN(400)-100) / 4}
		switch rng.IntN(200) {
		case 0:
			s.Value, s.Text = 0, fmt.Sprintf("mode %d", rng.IntN(3))
		case 1:
			s.Tombstone = true
		case 2:
			o := s
			o.Origin, o.Value = b, float64(rng.IntN(40))
			ss = append(ss, o)
		}
		ss = append(ss, s)
	}
	slices.SortFunc(ss, func(x, y history.Sample) int {
		if c := cmp.Compare(x.Time, y.Time); c != 0 {
			return c
		}
		return slices.Compare(x.Origin[:], y.Origin[:])
	})
	return ss
}

// histNode starts a server holding a node under its root with the
// history ss of its point "temp", the first windows compacted.
func histNode(t *testing.T, ss []history.Sample) (*node, crdt.Register) {
	t.Helper()
	n := startNode(t, "server", nodeOpts{})
	id := uuid.New()
	n.write(edgePt(n.root, id))
	reg := crdt.Register{Node: id, Type: "temp", Key: crdt.DefaultKey}
	for i := 0; i < len(ss); i += 5000 {
		if _, err := n.st.MergeHistory([]store.RegisterHistory{{Reg: reg, Samples: ss[i:min(i+5000, len(ss))]}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.st.CompactHistory(context.Background(), history.WindowOf(ss[0].Time)+2); err != nil {
		t.Fatal(err)
	}
	return n, reg
}

// readSamples reads every page of req, checking each against max.
func readSamples(t *testing.T, n *node, req transport.HistoryRequest) ([]history.Sample, int) {
	t.Helper()
	var out []history.Sample
	pages := 0
	for {
		page, err := n.rep.HistoryPage(req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if !page.Known || len(page.Steps) != 0 || len(page.Samples) > DefaultPageBytes {
			t.Fatalf("page %d: known %v, %d step bytes, %d sample bytes", pages, page.Known, len(page.Steps), len(page.Samples))
		}
		ss, err := transport.DecodeHistorySamples(page.Samples, 0)
		if err != nil {
			t.Fatal(err)
		}
		if req.Max > 0 && len(ss) > req.Max {
			t.Fatalf("page %d: %d samples, asked for %d", pages, len(ss), req.Max)
		}
		out = append(out, ss...)
		if !page.More {
			return out, pages
		}
		if len(ss) == 0 {
			t.Fatalf("page %d: more to come, and no sample", pages)
		}
		req.After = page.Next
	}
}

func inSpan(ss []history.Sample, from, to int64) []history.Sample {
	var out []history.Sample
	for _, s := range ss {
		if t := s.Time.Physical(); t >= from && (to == 0 || t < to) {
			out = append(out, s)
		}
	}
	return out
}

// TestHistoryPageSamples reads three hours of a register's history in
// pages, for several spans: every sample of the span once, in order, as
// stored.
func TestHistoryPageSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x68697374))
	ss := histSeries(rng, 3)
	n, reg := histNode(t, ss)
	for _, span := range [][2]int64{
		{0, 0},
		{histBase + 1234, histBase + 2*history.WindowMs + 777},
		{histBase + history.WindowMs + 1, 0},
		{0, histBase + 5000},
		{histBase + 500, histBase + 500},
		{histBase + 10*history.WindowMs, 0},
	} {
		want := inSpan(ss, span[0], span[1])
		for _, max := range []int{0, 997, 1} {
			if max == 1 && len(want) > 50 {
				continue
			}
			req := transport.HistoryRequest{Node: reg.Node, Type: reg.Type, From: span[0], To: span[1], Max: max}
			got, pages := readSamples(t, n, req)
			if !slices.Equal(got, want) {
				t.Fatalf("span %v, max %d: %d samples in %d pages, want %d", span, max, len(got), pages, len(want))
			}
			if max > 0 && len(want) > max && pages < len(want)/max {
				t.Errorf("span %v, max %d: %d pages for %d samples", span, max, pages, len(want))
			}
		}
	}
	// A node the server does not have is not known.
	if page, err := n.rep.HistoryPage(transport.HistoryRequest{Node: uuid.New(), Type: "temp"}); err != nil || page.Known || len(page.Samples) != 0 {
		t.Fatalf("a stranger's history: %+v %v", page, err)
	}
	// Another register of the node has no history.
	if got, _ := readSamples(t, n, transport.HistoryRequest{Node: reg.Node, Type: "humidity"}); len(got) != 0 {
		t.Fatalf("humidity: %d samples", len(got))
	}
}

// bruteSteps summarizes ss per step as the API promises, the naive way.
func bruteSteps(ss []history.Sample, from, to, step int64) []transport.HistoryStep {
	var out []transport.HistoryStep
	for _, s := range inSpan(ss, from, to) {
		if s.Tombstone {
			continue
		}
		start := from + (s.Time.Physical()-from)/step*step
		if len(out) == 0 || out[len(out)-1].Start != start {
			out = append(out, transport.HistoryStep{Start: start, Min: s.Value, Max: s.Value})
		}
		o := &out[len(out)-1]
		o.Count++
		o.Min, o.Max, o.Sum = min(o.Min, s.Value), max(o.Max, s.Value), o.Sum+s.Value
		o.Last, o.LastTime = s.Value, s.Time
	}
	return out
}

// TestHistoryPageSteps: per-step summaries, in pages, equal the brute
// force's, for steps shorter and longer than a slice, aligned or not.
func TestHistoryPageSteps(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x73746570))
	ss := histSeries(rng, 3)
	n, reg := histNode(t, ss)
	for _, c := range []struct{ from, to, step int64 }{
		{0, 0, 60_000},
		{histBase, 0, 7_000},
		{histBase + 1234, histBase + 2*history.WindowMs + 777, 13 * 60_000},
		{histBase, 0, store.SliceMs},
		{histBase + 1, 0, history.WindowMs},
		{0, 0, 1 << 40},
		{histBase + 100, histBase + 100_000, 1},
	} {
		want := bruteSteps(ss, c.from, c.to, c.step)
		for _, max := range []int{0, 7} {
			req := transport.HistoryRequest{Node: reg.Node, Type: reg.Type, From: c.from, To: c.to, Step: c.step, Max: max}
			var got []transport.HistoryStep
			pages := 0
			for {
				page, err := n.rep.HistoryPage(req)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				steps, err := transport.DecodeHistorySteps(page.Steps)
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Samples) != 0 || max > 0 && len(steps) > max {
					t.Fatalf("%+v: a page of %d steps and %d sample bytes", c, len(steps), len(page.Samples))
				}
				got = append(got, steps...)
				if !page.More {
					break
				}
				req.After = page.Next
			}
			if !slices.Equal(got, want) {
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Fatalf("%+v max %d: %d steps in %d pages, want %d; first difference at %d", c, max, len(got), pages, len(want), i)
			}
		}
	}
}

// TestHistoryPageBounds: a page's block stays within DefaultPageBytes
// when the samples do not compress (an origin each, random values) or
// carry long texts, and the pages still hold every sample once.
func TestHistoryPageBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x626f756e))
	var ss []history.Sample
	for i := range 40_000 {
		ss = append(ss, history.Sample{Time: crdt.NewTimestamp(histBase+int64(i)*50+rng.Int64N(40), 0), Origin: histUUID(rng), Value: rng.NormFloat64()})
	}
	for i := range 12 {
		ss = append(ss, history.Sample{Time: crdt.NewTimestamp(histBase+history.WindowMs+int64(i), 0), Origin: ss[0].Origin,
			Text: strings.Repeat(string(rune('a'+i)), crdt.MaxTextLen)})
	}
	n, reg := histNode(t, ss)
	got, pages := readSamples(t, n, transport.HistoryRequest{Node: reg.Node, Type: reg.Type})
	if !slices.Equal(got, ss) {
		t.Fatalf("%d samples in %d pages, want %d", len(got), pages, len(ss))
	}
	t.Logf("%d samples in %d pages", len(got), pages)
	// 40,000 origins are 640 KB alone: the first page is cut; the texts
	// take at least 2 pages.
	if pages < 4 {
		t.Fatalf("%d pages", pages)
	}
}

// TestHistoryPageRefuses: every malformed request is refused with
// ErrInvalidRequest, and a register without history with a reason.
func TestHistoryPageRefuses(t *testing.T) {
	n := startNode(t, "server", nodeOpts{})
	id := uuid.New()
	n.write(edgePt(n.root, id), valPt(id, "temp", 1))
	ok := transport.HistoryRequest{Node: id, Type: "temp"}
	with := func(f func(r *transport.HistoryRequest)) transport.HistoryRequest {
		r := ok
		f(&r)
		return r
	}
	for name, req := range map[string]transport.HistoryRequest{
		"no node":            with(func(r *transport.HistoryRequest) { r.Node = uuid.Nil }),
		"no type":            with(func(r *transport.HistoryRequest) { r.Type = "" }),
		"a bad type":         with(func(r *transport.HistoryRequest) { r.Type = "te mp" }),
		"a type too long":    with(func(r *transport.HistoryRequest) { r.Type = strings.Repeat("t", crdt.MaxTypeLen+1) }),
		"a key too long":     with(func(r *transport.HistoryRequest) { r.Key = strings.Repeat("k", crdt.MaxKeyLen+1) }),
		"a key with a space": with(func(r *transport.HistoryRequest) { r.Key = "a b" }),
		"from after to":      with(func(r *transport.HistoryRequest) { r.From, r.To = 2000, 1000 }),
		"before 1970":        with(func(r *transport.HistoryRequest) { r.From = -1 }),
		"to before 1970":     with(func(r *transport.HistoryRequest) { r.To = -5 }),
		"a negative step":    with(func(r *transport.HistoryRequest) { r.Step = -60_000 }),
		"a short cursor":     with(func(r *transport.HistoryRequest) { r.After = []byte{1, 2, 3} }),
		"a step's cursor":    with(func(r *transport.HistoryRequest) { r.After = transport.AppendStepCursor(nil, 0) }),
		"a sample's cursor":  with(func(r *transport.HistoryRequest) { r.Step, r.After = 1000, make([]byte, transport.SampleCursorLen) }),
		"a misaligned cursor": with(func(r *transport.HistoryRequest) {
			r.From, r.Step, r.After = 10, 1000, transport.AppendStepCursor(nil, 1000)
		}),
		"a cursor before": with(func(r *transport.HistoryRequest) {
			r.From, r.Step, r.After = 5000, 1000, transport.AppendStepCursor(nil, 0)
		}),
		"an edge's history":  with(func(r *transport.HistoryRequest) { r.Type = crdt.TypeEdge }),
		"an email's history": with(func(r *transport.HistoryRequest) { r.Type = crdt.TypeEmail }),
		"a password's":       with(func(r *transport.HistoryRequest) { r.Type = crdt.TypePassword }),
	} {
		if _, err := n.rep.HistoryPage(req); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: %v, want ErrInvalidRequest", name, err)
		}
	}
	if _, err := n.rep.HistoryPage(with(func(r *transport.HistoryRequest) { r.Type = crdt.TypeEmail })); err == nil || !strings.Contains(err.Error(), "no history is kept of email points") {
		t.Errorf("email: %v", err)
	}
	// A key is the default key when blank; a span may be empty.
	for _, req := range []transport.HistoryRequest{ok, with(func(r *transport.HistoryRequest) { r.Key = crdt.DefaultKey }),
		with(func(r *transport.HistoryRequest) { r.From, r.To = 1000, 1000 })} {
		if _, err := n.rep.HistoryPage(req); err != nil {
			t.Errorf("%+v: %v", req, err)
		}
	}
}
