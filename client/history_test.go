package client_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/store"
)

// historySeed returns the test's random seed, printed (SIOT_SEED repeats
// one).
func historySeed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("SIOT_SEED"); v != "" {
		var err error
		if s, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (set SIOT_SEED to repeat)", s)
	return s
}

// histStart is where the test histories start: a window boundary.
var histStart = time.UnixMilli(472_222 * history.WindowMs).UTC()

// writeHistory gives node's point "temp" n samples, one every 500-700
// ms from histStart, from two origins, values in quarters (exact sums), a
// tombstone and a text now and then, straight into the server's store.
// It returns them in (time, origin) order.
func writeHistory(t *testing.T, s *testServer, rng *rand.Rand, node uuid.UUID, n int) []client.Sample {
	t.Helper()
	origin := func() uuid.UUID {
		var u uuid.UUID
		binary.BigEndian.PutUint64(u[:8], rng.Uint64())
		binary.BigEndian.PutUint64(u[8:], rng.Uint64())
		return u
	}
	a, b := origin(), origin()
	if slices.Compare(a[:], b[:]) > 0 {
		a, b = b, a
	}
	ss := make([]client.Sample, 0, n)
	ms := histStart.UnixMilli()
	for len(ss) < n {
		ms += 500 + rng.Int64N(200)
		smp := client.Sample{Time: crdt.NewTimestamp(ms, 0), Origin: a, Value: float64(rng.IntN(200)-50) / 4}
		switch rng.IntN(100) {
		case 0:
			smp.Tombstone = true
		case 1:
			smp.Value, smp.Text = 0, "offline"
		case 2:
			ss = append(ss, smp)
			smp.Origin, smp.Value = b, 1
		}
		ss = append(ss, smp)
	}
	ss = ss[:n]
	reg := crdt.Register{Node: node, Type: "temp", Key: crdt.DefaultKey}
	for i := 0; i < len(ss); i += 10_000 {
		if _, err := s.st.MergeHistory([]store.RegisterHistory{{Reg: reg, Samples: ss[i:min(i+10_000, len(ss))]}}); err != nil {
			t.Fatal(err)
		}
	}
	return ss
}

func between(ss []client.Sample, from, to time.Time) []client.Sample {
	var out []client.Sample
	for _, s := range ss {
		at := s.Time.Time()
		if (from.IsZero() || !at.Before(from)) && (to.IsZero() || at.Before(to)) {
			out = append(out, s)
		}
	}
	return out
}

// TestHistory reads a register's 60,000 samples (two pages) and spans of
// them: each sample once, in order, as the store holds it; and a loop
// that breaks stops reading.
func TestHistory(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	node, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	ss := writeHistory(t, s, rand.New(rand.NewPCG(historySeed(t), 1)), node, 60_000)
	for _, span := range []client.HistoryOptions{
		{},
		{From: histStart.Add(time.Hour + 1500*time.Microsecond), To: histStart.Add(3*time.Hour + time.Minute)},
		{From: histStart.Add(8 * time.Hour)},
		{To: histStart.Add(10 * time.Second)},
		{From: histStart.Add(time.Hour), To: histStart.Add(time.Hour)},
	} {
		want := between(ss, span.From, span.To)
		var got []client.Sample
		for smp, err := range cl.History(ctx, node, "temp", "", span) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, smp)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%v to %v: %d samples, want %d", span.From, span.To, len(got), len(want))
		}
	}
	n := 0
	for _, err := range cl.History(ctx, node, "temp", "0", client.HistoryOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 10 {
			break
		}
	}
}

// bruteSummaries summarizes ss per step the naive way.
func bruteSummaries(ss []client.Sample, from time.Time, step time.Duration) []client.Summary {
	var out []client.Summary
	for _, s := range between(ss, from, time.Time{}) {
		if s.Tombstone {
			continue
		}
		start := from.Add(s.Time.Time().Sub(from) / step * step)
		if len(out) == 0 || !out[len(out)-1].Start.Equal(start) {
			out = append(out, client.Summary{Start: start, Min: s.Value, Max: s.Value})
		}
		o := &out[len(out)-1]
		o.Count++
		o.Min, o.Max, o.Sum = min(o.Min, s.Value), max(o.Max, s.Value), o.Sum+s.Value
		o.Mean = o.Sum / float64(o.Count)
		o.Last, o.LastTime = s.Value, s.Time
	}
	return out
}

// TestHistorySummaries: per-step summaries equal the brute force's,
// across pages of steps (8,192 a page: 1 s steps over 12,000 samples need
// two).
func TestHistorySummaries(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	node, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	ss := writeHistory(t, s, rand.New(rand.NewPCG(historySeed(t), 2)), node, 12_000)
	for _, o := range []client.HistoryOptions{
		{From: histStart, Step: time.Second},
		{From: histStart.Add(1234 * time.Millisecond), Step: 13 * time.Minute},
		{From: histStart, Step: time.Hour},
	} {
		want := bruteSummaries(ss, o.From, o.Step)
		var got []client.Summary
		for m, err := range cl.HistorySummaries(ctx, node, "temp", "", o) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}
		if !slices.EqualFunc(got, want, func(a, b client.Summary) bool {
			return a.Start.Equal(b.Start) && a.Count == b.Count && a.Min == b.Min && a.Max == b.Max && a.Sum == b.Sum &&
				a.Mean == b.Mean && a.Last == b.Last && a.LastTime == b.LastTime
		}) {
			t.Fatalf("step %v: %d steps, want %d", o.Step, len(got), len(want))
		}
	}
}

// TestHistoryErrors: each error is of its kind, a malformed read refused
// before anything is sent.
func TestHistoryErrors(t *testing.T) {
	s := startServer(t)
	admin := s.dial()
	ctx := context.Background()
	site, _, err := admin.Node.Add(ctx, client.NewNode{Type: "site"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Set(ctx, client.Point{Node: site, Type: "temp", Value: 1}); err != nil {
		t.Fatal(err)
	}
	dev, creds := provisionDevice(t, admin, s.root)
	if _, err := admin.Set(ctx, client.Point{Node: dev, Type: "temp", Value: 2}); err != nil {
		t.Fatal(err)
	}
	device := s.dial(client.WithCreds(creds))
	first := func(seq func(func(client.Sample, error) bool)) error {
		for _, err := range seq {
			return err
		}
		return nil
	}
	now := time.Now()
	for name, c := range map[string]struct {
		cl   *client.Client
		node uuid.UUID
		typ  string
		key  string
		o    client.HistoryOptions
		want error
	}{
		"no node":           {admin, uuid.Nil, "temp", "", client.HistoryOptions{}, client.ErrInvalid},
		"a bad type":        {admin, site, "te mp", "", client.HistoryOptions{}, client.ErrInvalid},
		"a long key":        {admin, site, "temp", strings.Repeat("k", crdt.MaxKeyLen+1), client.HistoryOptions{}, client.ErrInvalid},
		"an edge":           {admin, site, crdt.TypeEdge, "", client.HistoryOptions{}, client.ErrInvalid},
		"from after to":     {admin, site, "temp", "", client.HistoryOptions{From: now, To: now.Add(-time.Hour)}, client.ErrInvalid},
		"to before 1970":    {admin, site, "temp", "", client.HistoryOptions{To: time.Unix(-5, 0)}, client.ErrInvalid},
		"a step":            {admin, site, "temp", "", client.HistoryOptions{Step: time.Minute}, client.ErrInvalid},
		"no history kept":   {admin, site, crdt.TypeEmail, "", client.HistoryOptions{}, client.ErrInvalid},
		"an unknown node":   {admin, uuid.New(), "temp", "", client.HistoryOptions{}, client.ErrNotFound},
		"outside its scope": {device, site, "temp", "", client.HistoryOptions{}, client.ErrPermission},
		"a secret":          {device, dev, crdt.TypeAuthKey, "", client.HistoryOptions{}, client.ErrPermission},
	} {
		if err := first(c.cl.History(ctx, c.node, c.typ, c.key, c.o)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// The device reads its own history.
	var got []client.Sample
	for smp, err := range device.History(ctx, dev, "temp", "", client.HistoryOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, smp)
	}
	if len(got) != 1 || got[0].Value != 2 {
		t.Fatalf("the device's own history: %+v", got)
	}
	for _, step := range []time.Duration{0, -time.Second, time.Microsecond, 1500 * time.Microsecond} {
		for _, err := range admin.HistorySummaries(ctx, site, "temp", "", client.HistoryOptions{Step: step}) {
			if !errors.Is(err, client.ErrInvalid) {
				t.Errorf("step %v: %v, want ErrInvalid", step, err)
			}
			break
		}
	}
}

// TestHistoryServerStops: a server that stops between two pages ends the
// read with ErrUnavailable, after the first page's samples.
func TestHistoryServerStops(t *testing.T) {
	s := startServer(t)
	cl := s.dial(client.WithoutReconnect())
	ctx := context.Background()
	node, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	ss := writeHistory(t, s, rand.New(rand.NewPCG(historySeed(t), 3)), node, 55_000)
	n := 0
	var last error
	for _, err := range cl.History(ctx, node, "temp", "", client.HistoryOptions{}) {
		if err != nil {
			last = err
			break
		}
		if n++; n == 1 {
			s.stop()
		}
	}
	if !errors.Is(last, client.ErrUnavailable) || n >= len(ss) || n == 0 {
		t.Fatalf("after %d of %d samples: %v, want ErrUnavailable", n, len(ss), last)
	}
	t.Logf("%d samples, then: %v", n, last)
}
