package replica

import (
	"context"
	"math"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// History upkeep: every HistoryUpkeepInterval the replica compacts the
// windows that have closed, drops the history its retention (points of
// type crdt.TypeHistoryKeep on its root) no longer keeps, and holds the
// history to its disk budget (crdt.TypeHistoryMaxBytes). Retention and
// budget are this instance's own: they trim nothing elsewhere.
//
// An instance with upstreams keeps a window until every upstream has
// acknowledged it (a history round compared it equal, or made it so),
// then for its retention; the budget alone may drop an unacknowledged
// window, which is counted and logged.

// defaultEdgeKeepDays is how long an instance with upstreams keeps
// acknowledged history when its root has no TypeHistoryKeep "*" point.
const defaultEdgeKeepDays = 7

// defaultEdgeHistoryBytes is the history budget of an instance with
// upstreams and no crdt.TypeHistoryMaxBytes point.
const defaultEdgeHistoryBytes = 1 << 30

// markTrimmed names the mark that holds one past the latest window
// retention or the budget dropped anything from: history rounds compare
// no window before it (histSyncer.round, answerHistory).
const markTrimmed = "hist:trimmed"

// historyConfig is what the root's points say of the history.
type historyConfig struct {
	keepDays map[string]float64 // by point type; "*" for the rest
	maxBytes int64              // 0: no budget
}

func (r *Replica) historyConfig() (historyConfig, error) {
	c := historyConfig{keepDays: map[string]float64{}}
	if len(r.cfg.Upstreams) > 0 {
		c.maxBytes = defaultEdgeHistoryBytes
	}
	err := r.st.ScanNodesPoints([]uuid.UUID{r.st.Root()}, func(_ int, p *crdt.Point) error {
		if p.Tombstone || math.IsNaN(p.Value) {
			return nil
		}
		switch p.Type {
		case crdt.TypeHistoryKeep:
			if p.Value >= 0 {
				c.keepDays[p.Key] = p.Value
			}
		case crdt.TypeHistoryMaxBytes:
			if p.Value > 0 {
				c.maxBytes = int64(min(p.Value, math.MaxInt64/2))
			}
		}
		return nil
	})
	return c, err
}

// keepFrom returns the first window this instance keeps by its retention
// for every type ("*", or an edge's default), at time now: 0 when it
// keeps everything.
func (r *Replica) keepFrom(now time.Time) (int64, error) {
	cfg, err := r.historyConfig()
	if err != nil {
		return 0, err
	}
	days, ok := cfg.keepDays["*"]
	if !ok && len(r.cfg.Upstreams) > 0 {
		days, ok = defaultEdgeKeepDays, true
	}
	if !ok {
		return 0, nil
	}
	return max(history.WindowOf(crdt.NewTimestamp(now.Add(-time.Duration(days*24*float64(time.Hour))).UnixMilli(), 0)), 0), nil
}

// HistoryUpkeep says what one pass of the upkeep did.
type HistoryUpkeep struct {
	Compacted int
	Trimmed   store.TrimStats // by retention
	// Budget: dropped to hold the budget; Unacked of them were not yet
	// acknowledged upstream (lost, unless another replica holds them).
	Budget  store.TrimStats
	Unacked uint64
}

// upkeepHistory runs one pass of the history upkeep at time now.
func (r *Replica) upkeepHistory(ctx context.Context, now time.Time) (HistoryUpkeep, error) {
	var u HistoryUpkeep
	nowW := history.WindowOf(crdt.NewTimestamp(now.UnixMilli(), 0))
	var err error
	if u.Compacted, err = r.st.CompactHistory(ctx, nowW); err != nil {
		return u, err
	}
	cfg, err := r.historyConfig()
	if err != nil {
		return u, err
	}
	acked := int64(math.MaxInt64) // windows before it are acknowledged
	for _, d := range r.dialers {
		if d.role != transport.RoleEdge {
			continue
		}
		acked = min(acked, d.histAck.before(r.st))
	}
	cut := func(days float64) int64 {
		if days*24*float64(time.Hour) > float64(now.UnixMilli())*float64(time.Millisecond) {
			return 0
		}
		return min(history.WindowOf(crdt.NewTimestamp(now.Add(-time.Duration(days*24*float64(time.Hour))).UnixMilli(), 0)), acked)
	}
	def, hasDef := cfg.keepDays["*"]
	if !hasDef && len(r.cfg.Upstreams) > 0 {
		def, hasDef = defaultEdgeKeepDays, true
	}
	cutoff := func(typ string) int64 {
		if d, ok := cfg.keepDays[typ]; ok {
			return cut(d)
		}
		if hasDef {
			return cut(def)
		}
		return 0
	}
	maxCut := int64(0)
	for _, d := range cfg.keepDays {
		maxCut = max(maxCut, cut(d))
	}
	if hasDef {
		maxCut = max(maxCut, cut(def))
	}
	if maxCut > 0 {
		if u.Trimmed, err = r.st.TrimHistory(ctx, cutoff, maxCut); err != nil {
			return u, err
		}
	}
	last := u.Trimmed.Last
	if cfg.maxBytes > 0 {
		for {
			// The closed windows only: compacted above, they count the
			// same on every replica holding the same samples, so the
			// budget drops the same windows everywhere.
			st, err := r.st.HistoryStats(nowW)
			if err != nil {
				return u, err
			}
			if int64(st.BytesBefore) <= cfg.maxBytes {
				break
			}
			w, ok, err := r.st.OldestHistoryWindow()
			if err != nil || !ok || w >= nowW {
				// Never the window being written: the budget is too
				// small for one hour of history.
				break
			}
			t, err := r.st.TrimHistory(ctx, func(string) int64 { return w + 1 }, w+1)
			if err != nil {
				return u, err
			}
			u.Budget.Samples += t.Samples
			u.Budget.Windows += t.Windows
			u.Budget.Last = max(u.Budget.Last, t.Last)
			if w >= acked {
				u.Unacked += t.Samples
			}
			if t.Windows == 0 {
				break
			}
		}
		last = max(last, u.Budget.Last)
	}
	if last >= 0 {
		old, err := r.st.Mark(markTrimmed)
		if err != nil {
			return u, err
		}
		if uint64(last+1) > old {
			if err := r.st.SetMarks(map[string]uint64{markTrimmed: uint64(last + 1)}); err != nil {
				return u, err
			}
		}
	}
	r.metrics.historyDropped(u.Trimmed.Samples+u.Budget.Samples-u.Unacked, u.Unacked)
	if u.Unacked > 0 && r.histLostLogged.CompareAndSwap(false, true) {
		r.log.Error("history over its disk budget: dropped history not yet acknowledged upstream (logged once; siot_history_dropped_total counts every loss)",
			"samples", u.Unacked, "budget_bytes", cfg.maxBytes)
	}
	return u, nil
}

// historyLoop runs the history upkeep at start and then every
// HistoryUpkeepInterval until ctx ends.
func (r *Replica) historyLoop(ctx context.Context) {
	if r.cfg.noHistoryUpkeep {
		return
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		u, err := r.upkeepHistory(ctx, r.clock.Physical())
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.log.Warn("history upkeep", "err", err)
		case u.Trimmed.Windows+u.Budget.Windows > 0:
			r.log.Info("history upkeep", "compacted", u.Compacted, "retention_dropped", u.Trimmed.Samples,
				"budget_dropped", u.Budget.Samples, "unacknowledged_dropped", u.Unacked)
		}
		t.Reset(r.cfg.HistoryUpkeepInterval)
	}
}
