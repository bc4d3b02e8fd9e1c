package store

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

// t0 is a whole window's start, in ms.
const t0 = int64(1_780_000_000_000) / history.WindowMs * history.WindowMs

func reading(node int, key string, v float64, ms int64) crdt.Point {
	return crdt.Point{Node: id(node), Type: "temp", Key: key, Value: v, Time: crdt.NewTimestamp(ms, 0), Origin: origin}
}

func allHistory(t testing.TB, s *Store, reg crdt.Register) []history.Sample {
	t.Helper()
	var out []history.Sample
	if err := s.History(HistoryQuery{Reg: reg}, nil, func(x *history.Sample) error {
		out = append(out, *x)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func tempReg(node int, key string) crdt.Register {
	return crdt.Register{Node: id(node), Type: "temp", Key: key}
}

func TestHistoryRecordsEveryWrite(t *testing.T) {
	s := openTest(t, "")
	reg := tempReg(1, "0")
	mustApply(t, s, reading(1, "0", 20, t0+1000))
	mustApply(t, s, reading(1, "0", 21, t0+2000), reading(1, "0", 22, t0+3000)) // superseded in its own batch
	res := mustApply(t, s, reading(1, "0", 19, t0+500))                         // late: loses the register
	if res.Outcomes[0] != Stale || res.HistoryAdded != 1 {
		t.Fatalf("late write: %v, %d added; want stale, 1 added", res.Outcomes[0], res.HistoryAdded)
	}
	if res := mustApply(t, s, reading(1, "0", 22, t0+3000)); res.HistoryAdded != 0 {
		t.Fatalf("the winner received again added %d samples", res.HistoryAdded)
	}
	if res := mustApply(t, s, reading(1, "0", 21, t0+2000)); res.HistoryAdded != 0 {
		t.Fatalf("a held sample received again added %d samples", res.HistoryAdded)
	}
	// Credentials and edges have no history.
	pw := crdt.Point{Node: id(1), Type: crdt.TypePassword, Key: "0", Text: "hash", Time: crdt.NewTimestamp(t0+4000, 0), Origin: origin}
	if res := mustApply(t, s, pw, edgePt(0, 1, false, crdt.NewTimestamp(t0+4000, 0))); res.HistoryAdded != 0 {
		t.Fatalf("password and edge added %d samples", res.HistoryAdded)
	}
	got := allHistory(t, s, reg)
	var vals []float64
	for _, x := range got {
		vals = append(vals, x.Value)
	}
	if !slices.Equal(vals, []float64{19, 20, 21, 22}) {
		t.Fatalf("history %v, want [19 20 21 22]", vals)
	}
	sums, err := s.HistoryNodeSums(id(1), 0, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 1 || sums[0].Count != 4 || sums[0].Digest != history.Digest(reg, got) {
		t.Fatalf("node sums %+v, want one window of 4 with the samples' digest", sums)
	}
	if cur := mustGet(t, s, pt(1, "temp", 0, 0)); cur.Value != 22 {
		t.Fatalf("register holds %v, want 22: history must not change it", cur.Value)
	}
}

func mustGet(t testing.TB, s *Store, p crdt.Point) crdt.Point {
	t.Helper()
	got, ok, err := s.Get(p.Register())
	if err != nil || !ok {
		t.Fatalf("get %v: %v %v", p.Register(), ok, err)
	}
	return got
}

// liveSeries applies n readings of register key of node 1, one a second
// from t0, each in its own batch, as a sensor does.
func liveSeries(t testing.TB, s *Store, key string, n int, rng *rand.Rand) {
	t.Helper()
	v := 20.0
	for i := range n {
		v = math.Round((v+rng.NormFloat64()*0.05)*100) / 100
		mustApply(t, s, reading(1, key, v, t0+int64(i)*1000+rng.Int64N(5)))
	}
}

func TestHistoryAppendsThenCompacts(t *testing.T) {
	s := openTest(t, t.TempDir())
	rng := rand.New(rand.NewPCG(1, 2))
	liveSeries(t, s, "a", 4000, rng) // the first window, and some of the next
	reg := tempReg(1, "a")
	before := allHistory(t, s, reg)
	if len(before) != 4000 {
		t.Fatalf("%d samples, want 4000", len(before))
	}
	st, err := s.HistoryStats(0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Samples != 4000 || st.Windows != 2 || st.Segments == 0 || st.Segments >= 2*compactSegs {
		t.Fatalf("stats %+v: want 4000 samples in 2 windows, some segments, fewer than %d", st, 2*compactSegs)
	}
	sums, _ := s.HistoryNodeSums(id(1), 0, math.MaxInt64)
	n, err := s.CompactHistory(context.Background(), history.WindowOf(crdt.NewTimestamp(t0, 0))+1)
	if err != nil || n != 1 {
		t.Fatalf("compacted %d windows (%v), want the closed one", n, err)
	}
	st2, _ := s.HistoryStats(0)
	if st2.Samples != 4000 || st2.Segments >= st.Segments || st2.Bytes >= st.Bytes {
		t.Fatalf("after compaction %+v, before %+v", st2, st)
	}
	if after := allHistory(t, s, reg); !slices.Equal(after, before) {
		t.Fatal("compaction changed the samples")
	}
	if sums2, _ := s.HistoryNodeSums(id(1), 0, math.MaxInt64); !slices.Equal(sums, sums2) {
		t.Fatalf("compaction changed the sums: %v, then %v", sums, sums2)
	}
	// Reopen: everything is on disk.
	dir := s.cfg.Dir
	s.Close()
	s = openTest(t, dir)
	if after := allHistory(t, s, reg); !slices.Equal(after, before) {
		t.Fatal("the history changed across a reopen")
	}
	if bytesPer := float64(st2.Bytes) / 3600; st2.Segments == 0 && bytesPer > 3 {
		t.Fatalf("%.2f bytes a sample", bytesPer)
	}
}

func TestHistoryMergeIsAUnion(t *testing.T) {
	a, b := openTest(t, ""), openTest(t, "")
	rng := rand.New(rand.NewPCG(3, 4))
	var pts []crdt.Point
	for i := range 3000 {
		pts = append(pts, reading(1+i%3, "0", float64(rng.IntN(100)), t0+int64(rng.IntN(3*history.WindowMs))))
	}
	// Each store gets two thirds, overlapping, in a different order.
	for _, p := range pts[:2000] {
		mustApply(t, a, p)
	}
	rng.Shuffle(len(pts), func(i, j int) { pts[i], pts[j] = pts[j], pts[i] })
	mustApply(t, b, pts[1000:]...)
	exchange := func(from, to *Store) {
		t.Helper()
		for node := 1; node <= 3; node++ {
			sums, err := from.HistoryNodeSums(id(node), 0, math.MaxInt64)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range sums {
				regs, err := from.HistoryOfNode(id(node), w.Window)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := to.MergeHistory(regs); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	exchange(a, b)
	exchange(b, a)
	for node := 1; node <= 3; node++ {
		sa, _ := a.HistoryNodeSums(id(node), 0, math.MaxInt64)
		sb, _ := b.HistoryNodeSums(id(node), 0, math.MaxInt64)
		if len(sa) != 3 || !slices.Equal(sa, sb) {
			t.Fatalf("node %d: sums differ or not 3 windows:\n%v\n%v", node, sa, sb)
		}
		ha, hb := allHistory(t, a, tempReg(node, "0")), allHistory(t, b, tempReg(node, "0"))
		if !slices.Equal(ha, hb) {
			t.Fatalf("node %d: samples differ", node)
		}
	}
	wa, _ := a.HistoryWindows(0, math.MaxInt64)
	wb, _ := b.HistoryWindows(0, math.MaxInt64)
	var total uint64
	for _, w := range wa {
		total += w.Count
	}
	if !slices.Equal(wa, wb) || total == 0 || total > 3000 {
		t.Fatalf("windows differ or wrong total %d:\n%v\n%v", total, wa, wb)
	}
	// Merging again adds nothing.
	regs, _ := a.HistoryOfNode(id(1), wa[0].Window)
	if n, err := b.MergeHistory(regs); n != 0 || err != nil {
		t.Fatalf("merging held samples again added %d (%v)", n, err)
	}
}

func TestMergeHistoryRefuses(t *testing.T) {
	s := openTest(t, "")
	good := history.Sample{Time: crdt.NewTimestamp(t0, 0), Origin: origin, Value: 1}
	cases := map[string]RegisterHistory{
		"credential": {Reg: crdt.Register{Node: id(1), Type: crdt.TypePassword, Key: "0"}, Samples: []history.Sample{good}},
		"bad type":   {Reg: crdt.Register{Node: id(1), Type: "a b", Key: "0"}, Samples: []history.Sample{good}},
		"no origin":  {Reg: tempReg(1, "0"), Samples: []history.Sample{{Time: good.Time, Value: 1}}},
		"no time":    {Reg: tempReg(1, "0"), Samples: []history.Sample{{Origin: origin, Value: 1}}},
		"nan":        {Reg: tempReg(1, "0"), Samples: []history.Sample{{Time: good.Time, Origin: origin, Value: math.NaN()}}},
		"edge":       {Reg: crdt.Register{Node: id(1), Parent: id(0), Type: crdt.TypeEdge, Key: "0"}, Samples: []history.Sample{good}},
	}
	for name, bad := range cases {
		ok := RegisterHistory{Reg: tempReg(2, "0"), Samples: []history.Sample{good}}
		if _, err := s.MergeHistory([]RegisterHistory{ok, bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if got := allHistory(t, s, tempReg(2, "0")); len(got) != 0 {
		t.Fatalf("a refused batch wrote %d samples", len(got))
	}
}

// TestHistorySummaries checks the per-step summaries against the samples,
// for compacted windows (stored slice summaries) and segments, with steps
// that cut slices anywhere.
func TestHistorySummaries(t *testing.T) {
	s := openTest(t, "")
	rng := rand.New(rand.NewPCG(5, 6))
	liveSeries(t, s, "a", 9000, rng)
	if _, err := s.CompactHistory(context.Background(), history.WindowOf(crdt.NewTimestamp(t0, 0))+1); err != nil {
		t.Fatal(err)
	}
	reg := tempReg(1, "a")
	all := allHistory(t, s, reg)
	for range 50 {
		from := t0 + rng.Int64N(9000_000) - 1000_000
		to := from + 1 + rng.Int64N(9000_000)
		step := 1 + rng.Int64N(to-from)
		if rng.IntN(3) == 0 {
			step = int64(SliceMs * (1 + rng.IntN(24)))
		}
		want := map[int64]*Summary{}
		for i := range all {
			ms := all[i].Time.Physical()
			if ms < from || ms >= to {
				continue
			}
			k := from + (ms-from)/step*step
			if want[k] == nil {
				want[k] = &Summary{}
			}
			want[k].Add(&all[i])
		}
		got := 0
		q := HistoryQuery{Reg: reg, From: from, To: to}
		last := int64(math.MinInt64)
		if err := s.HistorySummaries(q, step, func(start int64, m *Summary) error {
			got++
			w := want[start]
			if start <= last || w == nil || w.Count != m.Count || w.Min != m.Min || w.Max != m.Max || w.Last != m.Last || w.LastTime != m.LastTime || math.Abs(w.Sum-m.Sum) > 1e-6*math.Abs(w.Sum) {
				t.Fatalf("from %d to %d step %d: step %d is %+v, want %+v", from, to, step, start, m, w)
			}
			last = start
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if got != len(want) {
			t.Fatalf("from %d to %d step %d: %d steps, want %d", from, to, step, got, len(want))
		}
	}
}

func TestHistoryPages(t *testing.T) {
	s := openTest(t, "")
	rng := rand.New(rand.NewPCG(7, 8))
	liveSeries(t, s, "a", 500, rng)
	reg := tempReg(1, "a")
	all := allHistory(t, s, reg)
	var got []history.Sample
	var after *history.Sample
	for {
		var page []history.Sample
		err := s.History(HistoryQuery{Reg: reg, From: t0 + 100_000}, after, func(x *history.Sample) error {
			page = append(page, *x)
			if len(page) == 37 {
				return ErrStop
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = &page[len(page)-1]
	}
	want := slices.DeleteFunc(slices.Clone(all), func(x history.Sample) bool { return x.Time.Physical() < t0+100_000 })
	if !slices.Equal(got, want) {
		t.Fatalf("paged %d samples, want %d", len(got), len(want))
	}
}

// TestTrimHistoryIsDeterministic: two stores holding the same samples,
// written in a different order and compacted differently, trimmed with
// the same cutoffs, hold the same history; registers stay.
func TestTrimHistoryIsDeterministic(t *testing.T) {
	a, b := openTest(t, ""), openTest(t, "")
	rng := rand.New(rand.NewPCG(9, 10))
	var pts []crdt.Point
	for i := range 4000 {
		typ := "temp"
		if i%4 == 0 {
			typ = "vibration"
		}
		pts = append(pts, crdt.Point{Node: id(1 + i%5), Type: typ, Key: "0", Value: float64(rng.IntN(1000)) / 10,
			Time: crdt.NewTimestamp(t0+int64(i)*3_000, 0), Origin: origin})
	}
	for _, p := range pts {
		mustApply(t, a, p)
	}
	rng.Shuffle(len(pts), func(i, j int) { pts[i], pts[j] = pts[j], pts[i] })
	for i := 0; i < len(pts); i += 500 {
		mustApply(t, b, pts[i:i+500]...)
	}
	if _, err := a.CompactHistory(context.Background(), math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	w0 := history.WindowOf(crdt.NewTimestamp(t0, 0))
	cutoff := func(typ string) int64 {
		if typ == "vibration" {
			return w0 + 3 // keeps less
		}
		return w0 + 1
	}
	var dropped [2]TrimStats
	for i, s := range []*Store{a, b} {
		st, err := s.TrimHistory(context.Background(), cutoff, w0+3)
		if err != nil {
			t.Fatal(err)
		}
		dropped[i] = st
	}
	if dropped[0] != dropped[1] || dropped[0].Samples == 0 || dropped[0].Last != w0+2 {
		t.Fatalf("dropped %+v and %+v; want the same, through window %d", dropped[0], dropped[1], w0+2)
	}
	wa, _ := a.HistoryWindows(0, math.MaxInt64)
	wb, _ := b.HistoryWindows(0, math.MaxInt64)
	if !slices.Equal(wa, wb) || wa[0].Window != w0+1 {
		t.Fatalf("windows after the trim differ or start wrong:\n%v\n%v", wa, wb)
	}
	for n := 1; n <= 5; n++ {
		for _, typ := range []string{"temp", "vibration"} {
			reg := crdt.Register{Node: id(n), Type: typ, Key: "0"}
			ha, hb := allHistory(t, a, reg), allHistory(t, b, reg)
			if !slices.Equal(ha, hb) {
				t.Fatalf("%v: samples differ after the trim", reg)
			}
			for _, x := range ha {
				if history.WindowOf(x.Time) < cutoff(typ) {
					t.Fatalf("%v: a sample of window %d survived cutoff %d", reg, history.WindowOf(x.Time), cutoff(typ))
				}
			}
			if len(ha) == 0 {
				t.Fatalf("%v: everything trimmed", reg)
			}
			if _, ok, _ := a.Get(reg); !ok {
				t.Fatalf("%v: the register was dropped", reg)
			}
		}
		sa, _ := a.HistoryNodeSums(id(n), 0, math.MaxInt64)
		var want crdt.Digest
		var count uint64
		for _, typ := range []string{"temp", "vibration"} {
			reg := crdt.Register{Node: id(n), Type: typ, Key: "0"}
			ss := allHistory(t, a, reg)
			want = want.Add(history.Digest(reg, ss))
			count += uint64(len(ss))
		}
		var got crdt.Digest
		var gotN uint64
		for _, w := range sa {
			got, gotN = got.Add(w.Digest), gotN+w.Count
		}
		if got != want || gotN != count {
			t.Fatalf("node %d: sums %v/%d after the trim, samples say %v/%d", n, got, gotN, want, count)
		}
	}
	if o, ok, _ := a.OldestHistoryWindow(); !ok || o != w0+1 {
		t.Fatalf("oldest window %d %v, want %d", o, ok, w0+1)
	}
	// The budget counts closed windows once compacted: the same bytes on
	// both, whatever their segments were.
	end := w0 + 10
	if _, err := b.CompactHistory(context.Background(), end); err != nil {
		t.Fatal(err)
	}
	sa, _ := a.HistoryStats(end)
	sb, _ := b.HistoryStats(end)
	if sa.BytesBefore != sb.BytesBefore || sa.BytesBefore == 0 || sa.Samples != sb.Samples {
		t.Fatalf("closed windows: %+v and %+v, want the same bytes", sa, sb)
	}
}

// TestHistoryOff: a node's historyOff point for a type stops the
// recording of that type on that node, from the batch that sets it on;
// other types and nodes go on; turning it off again resumes.
func TestHistoryOff(t *testing.T) {
	s := openTest(t, "")
	off := func(node int, v float64, ms int64) crdt.Point {
		return crdt.Point{Node: id(node), Type: crdt.TypeHistoryOff, Key: "setpoint", Value: v, Time: crdt.NewTimestamp(ms, 0), Origin: origin}
	}
	set := func(node int, v float64, ms int64) crdt.Point {
		return crdt.Point{Node: id(node), Type: "setpoint", Key: "0", Value: v, Time: crdt.NewTimestamp(ms, 1), Origin: origin}
	}
	mustApply(t, s, set(1, 1, t0+1000))
	mustApply(t, s, off(1, 1, t0+2000), set(1, 2, t0+2000)) // in the same batch
	mustApply(t, s, set(1, 3, t0+3000), set(2, 3, t0+3000), reading(1, "0", 20, t0+3000))
	mustApply(t, s, off(1, 0, t0+4000))
	mustApply(t, s, set(1, 5, t0+5000))
	var vals []float64
	for _, x := range allHistory(t, s, crdt.Register{Node: id(1), Type: "setpoint", Key: "0"}) {
		vals = append(vals, x.Value)
	}
	if !slices.Equal(vals, []float64{1, 5}) {
		t.Fatalf("node 1 setpoint history %v, want [1 5]", vals)
	}
	if n := len(allHistory(t, s, crdt.Register{Node: id(2), Type: "setpoint", Key: "0"})); n != 1 {
		t.Fatalf("node 2's setpoint has %d samples, want 1", n)
	}
	if n := len(allHistory(t, s, tempReg(1, "0"))); n != 1 {
		t.Fatalf("node 1's temp has %d samples, want 1", n)
	}
	if got := mustGet(t, s, set(1, 0, 0)); got.Value != 5 {
		t.Fatalf("the register holds %v, want 5", got.Value)
	}
}

// TestVerifyChecksHistory: Verify passes on a history of appends,
// compactions, merges and trims, and names a lost segment and a wrong
// node sum.
func TestVerifyChecksHistory(t *testing.T) {
	s := openTest(t, "")
	rng := rand.New(rand.NewPCG(11, 12))
	liveSeries(t, s, "a", 5000, rng)
	if _, err := s.CompactHistory(context.Background(), history.WindowOf(crdt.NewTimestamp(t0, 0))+1); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, reading(1, "a", 1, t0+500)) // a late sample: merged
	w0 := history.WindowOf(crdt.NewTimestamp(t0, 0))
	if _, err := s.TrimHistory(context.Background(), func(string) int64 { return w0 }, w0); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	reg := tempReg(1, "a")
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(histSegKey(&reg, w0+1, 0)) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "segment") {
		t.Fatalf("a lost segment: %v", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(histNodeKey(id(1), w0), histSum{count: 3}.encode())
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "node index") {
		t.Fatalf("a wrong node sum: %v", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(histTotalKey(w0+1), histSum{count: 5}.encode())
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "history total of window") {
		t.Fatalf("a wrong window total: %v", err)
	}
}

// FuzzHistHead: a head decodes or is refused as corrupt, never a panic;
// what decodes encodes to a head that decodes to itself.
func FuzzHistHead(f *testing.F) {
	sums := make([]Summary, SliceCount)
	sums[3] = Summary{Count: 2, Min: 1, Max: 2, Sum: 3, Last: 2, LastTime: 77}
	for _, h := range []histHead{
		{count: 1, maxKey: history.Sample{Time: 5, Origin: origin}, inline: []byte{12, 0, 1}, sums: sums},
		{count: 9, segs: 3, block: true},
		{count: 2, segs: 1, inline: []byte{1, 2, 3}},
	} {
		f.Add(h.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHistHead(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not wrap errCorrupt", err)
			}
			return
		}
		again := h.encode()
		h2, err := decodeHistHead(again)
		if err != nil {
			t.Fatalf("%x decodes, encodes as %x, which does not decode: %v", b, again, err)
		}
		if third := h2.encode(); !slices.Equal(third, again) {
			t.Fatalf("%x encodes as %x, then as %x", b, again, third)
		}
	})
}
