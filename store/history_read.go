package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

// RegisterHistory is samples of one register.
type RegisterHistory struct {
	Reg     crdt.Register
	Samples []history.Sample
}

// MergeHistory adds samples received from a peer to the histories, as a
// union, atomically and durably (with SyncWrites), and returns how many
// were new. Each sample must make a valid point of its register, one
// HistoryRecorded takes; otherwise nothing is written and the error wraps
// ErrInvalid. It refuses like Apply below the free-space floor and after
// Close.
func (s *Store) MergeHistory(regs []RegisterHistory) (added uint64, err error) {
	for i := range regs {
		r := &regs[i]
		for j := range r.Samples {
			p := history.Point(r.Reg, &r.Samples[j])
			p.Normalize()
			if err := p.Validate(); err != nil {
				return 0, fmt.Errorf("%w: history of %v %s.%s, sample %d: %w", ErrInvalid, r.Reg.Node, r.Reg.Type, r.Reg.Key, j, err)
			}
			if !HistoryRecorded(&p) {
				return 0, fmt.Errorf("%w: %s points have no history", ErrInvalid, r.Reg.Type)
			}
			if p.Key != r.Reg.Key || p.Value != r.Samples[j].Value {
				return 0, fmt.Errorf("%w: history of %v %s: not in normal form (key %q, value %v)", ErrInvalid, r.Reg.Node, r.Reg.Type, r.Reg.Key, r.Samples[j].Value)
			}
		}
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			added, err = 0, s.inDir(readPanic(r))
		}
	}()
	if err := s.checkSpace(); err != nil {
		return 0, err
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	hw := newHistWriter(txn, s.lateBefore())
	for i := range regs {
		for j := range regs[i].Samples {
			hw.add(regs[i].Reg, regs[i].Samples[j], true)
		}
	}
	if err := hw.flush(); err != nil {
		return 0, s.histErr(err)
	}
	if err := txn.Commit(); err != nil {
		return 0, s.histErr(err)
	}
	if hw.lowest != math.MaxInt64 {
		s.late.add(hw.lowest)
	}
	return hw.added, nil
}

func (s *Store) histErr(err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return ErrBatchTooLarge
	}
	if errors.Is(err, ErrInvalid) || errors.Is(err, errCorrupt) {
		return err
	}
	return fmt.Errorf("store: history: %w", err)
}

// lateBefore returns the window before which a new sample is late: the
// one before the window of the greatest time held.
func (s *Store) lateBefore() int64 { return history.WindowOf(s.MaxTime()) - 1 }

// HistoryQuery selects a span of one register's history: samples with
// From ≤ physical ms < To. To 0 means no end.
type HistoryQuery struct {
	Reg      crdt.Register
	From, To int64
}

func (q *HistoryQuery) to() int64 {
	if q.To <= 0 {
		return math.MaxInt64
	}
	return q.To
}

// History calls fn with each sample of the span, in (time, origin) order,
// from a consistent snapshot. after, when not nil, starts after that key
// (a page's last sample). Returning ErrStop from fn ends the scan without
// error.
func (s *Store) History(q HistoryQuery, after *history.Sample, fn func(*history.Sample) error) error {
	if q.Reg.Key == "" {
		q.Reg.Key = crdt.DefaultKey
	}
	err := s.view(func(txn *badger.Txn) error {
		return eachHistWindow(txn, &q, func(w int64, h *histHead, block func(keep func(int) bool) ([]history.Sample, error)) error {
			from, to := q.From, q.to()
			keep := func(sl int) bool {
				start := w*history.WindowMs + int64(sl)*SliceMs
				return start+SliceMs > from && start < to
			}
			ss, err := block(keep)
			if err != nil {
				return err
			}
			for i := range ss {
				t := ss[i].Time.Physical()
				if t < from || t >= to || after != nil && compareSample(&ss[i], after) <= 0 {
					continue
				}
				if err := fn(&ss[i]); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// HistorySummaries calls fn with the summary of each step of the span, in
// order: step i covers From+i·step ≤ ms < From+(i+1)·step (the last one
// ends at To). Steps without numeric samples are skipped. Whole slices of
// compacted windows come from their stored summaries; only a slice a step
// boundary cuts is decoded.
func (s *Store) HistorySummaries(q HistoryQuery, step int64, fn func(start int64, m *Summary) error) error {
	if step <= 0 {
		return fmt.Errorf("%w: step %d ms", ErrInvalid, step)
	}
	if q.Reg.Key == "" {
		q.Reg.Key = crdt.DefaultKey
	}
	to := q.to()
	cur, curStart := Summary{}, int64(math.MinInt64)
	emit := func() error {
		if cur.Count == 0 {
			return nil
		}
		err := fn(curStart, &cur)
		cur = Summary{}
		return err
	}
	stepOf := func(t int64) int64 { return q.From + (t-q.From)/step*step }
	addTo := func(start int64, m *Summary) error {
		if start != curStart {
			if err := emit(); err != nil {
				return err
			}
			curStart = start
		}
		cur.Merge(m)
		return nil
	}
	err := s.view(func(txn *badger.Txn) error {
		return eachHistWindow(txn, &q, func(w int64, h *histHead, block func(keep func(int) bool) ([]history.Sample, error)) error {
			// A slice is whole when the span and one step hold all of it.
			whole := func(sl int) bool {
				a := w*history.WindowMs + int64(sl)*SliceMs
				b := a + SliceMs - 1
				return h.sums != nil && a >= q.From && b < to && stepOf(a) == stepOf(b)
			}
			ss, err := block(func(sl int) bool {
				a := w*history.WindowMs + int64(sl)*SliceMs
				return !whole(sl) && a+SliceMs > q.From && a < to
			})
			if err != nil {
				return err
			}
			i := 0
			for sl := 0; sl < SliceCount; sl++ {
				a := w*history.WindowMs + int64(sl)*SliceMs
				if whole(sl) {
					if h.sums[sl].Count > 0 {
						if err := addTo(stepOf(a), &h.sums[sl]); err != nil {
							return err
						}
					}
					continue
				}
				for ; i < len(ss) && ss[i].Time.Physical() < a+SliceMs; i++ {
					t := ss[i].Time.Physical()
					if t < q.From || t >= to || ss[i].Tombstone {
						continue
					}
					var m Summary
					m.Add(&ss[i])
					if err := addTo(stepOf(t), &m); err != nil {
						return err
					}
				}
			}
			return nil
		})
	})
	if err == nil {
		err = emit()
	}
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// eachHistWindow calls fn for each window of q's register that overlaps
// the span, in order, with its head and a function that returns its
// samples: those of the compacted block's slices keep takes (all of them
// when keep is nil), then every segment's.
//
// It walks the register's keys with one iterator: a window's head, its
// block right after it, then its segments. The block's value is read
// from the iterator's item only when fn asks for it.
func eachHistWindow(txn *badger.Txn, q *HistoryQuery, fn func(w int64, h *histHead, block func(keep func(int) bool) ([]history.Sample, error)) error) error {
	reg := append([]byte{pfxHist}, appendHistReg(nil, &q.Reg)...)
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = reg
	it := txn.NewIterator(opts)
	defer it.Close()
	fromW := max(q.From, 0) / history.WindowMs
	toW := (q.to() - 1) / history.WindowMs
	seek := binary.BigEndian.AppendUint64(bytes.Clone(reg), uint64(fromW))
	// parse returns the window and kind of the iterator's key.
	parse := func() (int64, byte, error) {
		k := it.Item().Key()
		if len(k) < len(reg)+9 {
			return 0, 0, fmt.Errorf("%w: history key of %d bytes", errCorrupt, len(k))
		}
		return int64(binary.BigEndian.Uint64(k[len(reg):])), k[len(reg)+8], nil
	}
	for it.Seek(seek); it.Valid(); {
		w, kind, err := parse()
		if err != nil {
			return err
		}
		if w > toW {
			return nil
		}
		if kind != histKindHead {
			return fmt.Errorf("%w: history window %d without a head", errCorrupt, w)
		}
		var h histHead
		if err := it.Item().Value(func(v []byte) (err error) { h, err = decodeHistHead(v); return err }); err != nil {
			return err
		}
		it.Next()
		// The block, when the head says there is one, is the next key.
		var blockItem *badger.Item
		if h.block && it.Valid() {
			if bw, bk, err := parse(); err == nil && bw == w && bk == histKindBlock {
				blockItem = it.Item()
			}
		}
		r := q.Reg
		block := func(keep func(int) bool) ([]history.Sample, error) {
			var out []history.Sample
			if h.inline != nil {
				var err error
				if out, err = decodeSlices(out, h.inline, keep); err != nil {
					return nil, err
				}
			}
			if h.block {
				if blockItem == nil {
					return nil, fmt.Errorf("store: read history block: %w", badger.ErrKeyNotFound)
				}
				if err := blockItem.Value(func(v []byte) (err error) { out, err = decodeSlices(out, v, keep); return err }); err != nil {
					return nil, err
				}
			}
			if h.segs > 0 {
				hh := h
				hh.block, hh.inline = false, nil
				seg, err := readHistWindow(txn, &r, w, &hh)
				if err != nil {
					return nil, err
				}
				out = append(out, seg...)
			}
			return out, nil
		}
		if err := fn(w, &h, block); err != nil {
			return err
		}
		if blockItem != nil {
			it.Next()
		}
		// Past the window's segments (or anything else of it) to the
		// next window's head.
		if it.Valid() {
			if nw, _, err := parse(); err != nil || nw == w {
				it.Seek(binary.BigEndian.AppendUint64(bytes.Clone(reg), uint64(w+1)))
			}
		}
	}
	return nil
}

// WindowSum is the digest and sample count of a node's history in one
// window (or of every node's, in HistoryWindowSums).
type WindowSum struct {
	Node   uuid.UUID
	Window int64
	Digest crdt.Digest
	Count  uint64
}

// HistoryNodeSums returns node's window sums from window from through to,
// in window order.
func (s *Store) HistoryNodeSums(node uuid.UUID, from, to int64) ([]WindowSum, error) {
	var out []WindowSum
	pfx := append([]byte{pfxHistNode}, node[:]...)
	err := s.view(func(txn *badger.Txn) error {
		return eachHistSum(txn, pfx, histNodeKey(node, max(from, 0)), func(k []byte, sum histSum) bool {
			w := int64(binary.BigEndian.Uint64(k[len(pfx):]))
			if w > to {
				return false
			}
			out = append(out, WindowSum{Node: node, Window: w, Digest: sum.digest, Count: sum.count})
			return true
		})
	})
	return out, err
}

// HistoryWindowSums returns every node's sum in window w, in node order.
func (s *Store) HistoryWindowSums(w int64) ([]WindowSum, error) {
	var out []WindowSum
	pfx := binary.BigEndian.AppendUint64([]byte{pfxHistWindow}, uint64(w))
	err := s.view(func(txn *badger.Txn) error {
		return eachHistSum(txn, pfx, pfx, func(k []byte, sum histSum) bool {
			var n uuid.UUID
			copy(n[:], k[len(pfx):])
			out = append(out, WindowSum{Node: n, Window: w, Digest: sum.digest, Count: sum.count})
			return true
		})
	})
	return out, err
}

// HistoryWindows returns the windows in which any node has history, from
// window from through to, in order, with the sum of every node's digests
// and counts in each (Node is uuid.Nil): one record a window, whatever
// the number of nodes.
func (s *Store) HistoryWindows(from, to int64) ([]WindowSum, error) {
	var out []WindowSum
	pfx := []byte{pfxHistTotal}
	err := s.view(func(txn *badger.Txn) error {
		return eachHistSum(txn, pfx, histTotalKey(max(from, 0)), func(k []byte, sum histSum) bool {
			w := int64(binary.BigEndian.Uint64(k[1:]))
			if w > to {
				return false
			}
			out = append(out, WindowSum{Window: w, Digest: sum.digest, Count: sum.count})
			return true
		})
	})
	return out, err
}

func eachHistSum(txn *badger.Txn, pfx, seek []byte, fn func(k []byte, s histSum) bool) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = pfx
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(seek); it.Valid(); it.Next() {
		var sum histSum
		if err := it.Item().Value(func(v []byte) (err error) { sum, err = decodeHistSum(v); return err }); err != nil {
			return err
		}
		if !fn(it.Item().Key(), sum) {
			return nil
		}
	}
	return nil
}

// HistoryOfNode returns every register's samples of node in window w.
func (s *Store) HistoryOfNode(node uuid.UUID, w int64) ([]RegisterHistory, error) {
	var out []RegisterHistory
	pfx := append([]byte{pfxHist}, node[:]...)
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = pfx
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(pfx); it.Valid(); {
			k := it.Item().KeyCopy(nil)
			reg, n, err := parseHistReg(k[1:])
			if err != nil {
				return err
			}
			h, ok, err := readHistHead(txn, &reg, w)
			if err != nil {
				return err
			}
			if ok {
				ss, err := readHistWindow(txn, &reg, w, &h)
				if err != nil {
					return err
				}
				out = append(out, RegisterHistory{Reg: reg, Samples: ss})
			}
			// The next register: past every window of this one.
			next := append(k[:1+n:1+n], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
			it.Seek(next)
		}
		return nil
	})
	return out, err
}

// CompactHistory merges the segments of every window before window
// before into its block, a bounded number of windows a transaction, and
// returns how many windows it compacted. Queries read segments too, so
// compaction changes no answer: it makes closed windows smaller on disk
// and faster to read.
func (s *Store) CompactHistory(ctx context.Context, before int64) (int, error) {
	done := 0
	for {
		n, more, err := s.compactSome(before, 256)
		done += n
		if err != nil || !more {
			return done, err
		}
		if err := ctx.Err(); err != nil {
			return done, err
		}
	}
}

func (s *Store) compactSome(before int64, limit int) (n int, more bool, err error) {
	if err := s.enter(); err != nil {
		return 0, false, err
	}
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			n, more, err = 0, false, s.inDir(readPanic(r))
		}
	}()
	if err := s.checkSpace(); err != nil {
		return 0, false, err
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	type job struct {
		reg crdt.Register
		w   int64
	}
	var jobs []job
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte{pfxHistDirty}
	it := txn.NewIterator(opts)
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		reg, l, err := parseHistReg(k[1:])
		if err != nil || len(k) != 1+l+8 {
			it.Close()
			return 0, false, fmt.Errorf("%w: history dirty key", errCorrupt)
		}
		w := int64(binary.BigEndian.Uint64(k[1+l:]))
		if w >= before {
			continue
		}
		if len(jobs) == limit {
			more = true
			break
		}
		jobs = append(jobs, job{reg, w})
	}
	it.Close()
	for i := range jobs {
		j := &jobs[i]
		h, ok, err := readHistHead(txn, &j.reg, j.w)
		if err != nil {
			return 0, false, err
		}
		if !ok {
			if err := txn.Delete(histDirtyKey(&j.reg, j.w)); err != nil {
				return 0, false, err
			}
			continue
		}
		ss, err := readHistWindow(txn, &j.reg, j.w, &h)
		if err != nil {
			return 0, false, err
		}
		if err := writeHistCompacted(txn, &j.reg, j.w, &h, true, ss, h.digest); err != nil {
			return 0, false, s.histErr(err)
		}
	}
	if len(jobs) == 0 {
		return 0, false, nil
	}
	if err := txn.Commit(); err != nil {
		return 0, false, s.histErr(err)
	}
	return len(jobs), more, nil
}

// HistoryStats describes the history the store holds.
type HistoryStats struct {
	Samples   uint64 // samples held
	Registers int    // registers with any history
	Windows   int    // register windows
	Bytes     uint64 // the encoded samples: blocks and segments
	Segments  int    // segments not yet compacted
	// BytesBefore is Bytes of the windows before the one HistoryStats
	// was given: closed windows, all compacted after CompactHistory, so
	// two replicas with the same samples there count the same.
	BytesBefore uint64
}

// HistoryStats walks the history and returns its figures. BytesBefore
// counts the windows before window before.
func (s *Store) HistoryStats(before int64) (HistoryStats, error) {
	var st HistoryStats
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{pfxHist}
		it := txn.NewIterator(opts)
		defer it.Close()
		var lastReg []byte
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			_, l, err := parseHistReg(k[1:])
			if err != nil || len(k) < 1+l+9 {
				return fmt.Errorf("%w: history key", errCorrupt)
			}
			if !bytes.Equal(lastReg, k[:1+l]) {
				st.Registers++
				lastReg = append(lastReg[:0], k[:1+l]...)
			}
			var n uint64
			switch k[1+l+8] {
			case histKindHead:
				st.Windows++
				if err := item.Value(func(v []byte) error {
					h, err := decodeHistHead(v)
					st.Samples += h.count
					n = uint64(len(h.inline))
					return err
				}); err != nil {
					return err
				}
			case histKindBlock:
				n = uint64(item.ValueSize())
			case histKindSeg:
				n = uint64(item.ValueSize())
				st.Segments++
			}
			st.Bytes += n
			if int64(binary.BigEndian.Uint64(k[1+l:])) < before {
				st.BytesBefore += n
			}
		}
		return nil
	})
	return st, err
}

// TrimStats says what TrimHistory dropped.
type TrimStats struct {
	Samples uint64 // samples dropped
	Windows int    // register windows dropped
	// Last is the latest window it dropped anything from (-1: none).
	Last int64
}

// TrimHistory drops, from every register's history, the windows before
// the cutoff its type has (cutoff returns a window number; the windows
// below it go), in transactions of at most 1,024 register windows, and
// returns what it dropped. Registers are never touched. The outcome
// depends on the cutoffs and the history held alone, so two replicas
// with the same samples and cutoffs end with the same history.
func (s *Store) TrimHistory(ctx context.Context, cutoff func(typ string) int64, maxCutoff int64) (TrimStats, error) {
	total := TrimStats{Last: -1}
	var cursor []byte
	for {
		st, next, err := s.trimSome(cutoff, maxCutoff, cursor, 1024)
		more := next != nil
		cursor = next
		total.Samples += st.Samples
		total.Windows += st.Windows
		total.Last = max(total.Last, st.Last)
		if err != nil || !more {
			return total, err
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// trimSome visits up to limit node windows of the window-first index
// after cursor (from the start when nil) and drops those of their
// register windows TrimHistory drops; next is where to go on from (nil:
// done).
func (s *Store) trimSome(cutoff func(string) int64, maxCutoff int64, cursor []byte, limit int) (st TrimStats, next []byte, err error) {
	st.Last = -1
	more := false
	if err := s.enter(); err != nil {
		return st, nil, err
	}
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			st, next, err = TrimStats{Last: -1}, nil, s.inDir(readPanic(r))
		}
	}()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	type job struct {
		reg crdt.Register
		w   int64
	}
	var jobs []job
	// The window-first index lists each node with history in a window,
	// oldest first: only what goes is visited, and the registers of a
	// node it keeps.
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte{pfxHistWindow}
	it := txn.NewIterator(opts)
	var nodes []WindowSum
	if cursor == nil {
		it.Rewind()
	} else {
		it.Seek(append(cursor, 0))
	}
	for ; it.Valid(); it.Next() {
		k := it.Item().Key()
		if len(k) != 1+8+16 {
			it.Close()
			return st, nil, fmt.Errorf("%w: history window key of %d bytes", errCorrupt, len(k))
		}
		w := int64(binary.BigEndian.Uint64(k[1:]))
		if w >= maxCutoff {
			break
		}
		var n uuid.UUID
		copy(n[:], k[9:])
		nodes = append(nodes, WindowSum{Node: n, Window: w})
		if len(nodes) >= limit {
			more, next = true, it.Item().KeyCopy(nil)
			break
		}
	}
	it.Close()
	if !more {
		next = nil
	}
	for _, nw := range nodes {
		regs, err := nodeRegisters(txn, nw.Node)
		if err != nil {
			return st, nil, err
		}
		for _, r := range regs {
			if nw.Window < cutoff(r.Type) {
				jobs = append(jobs, job{r, nw.Window})
			}
		}
	}
	if len(jobs) == 0 {
		return st, next, nil
	}
	sums := map[WindowSum]WindowSum{} // (node, window) → what goes
	for _, j := range jobs {
		h, ok, err := readHistHead(txn, &j.reg, j.w)
		if err != nil {
			return st, nil, err
		}
		if !ok {
			continue
		}
		if err := deleteHistWindow(txn, &j.reg, j.w, &h); err != nil {
			return st, nil, s.histErr(err)
		}
		k := WindowSum{Node: j.reg.Node, Window: j.w}
		g := sums[k]
		g.Digest, g.Count = g.Digest.Add(h.digest), g.Count+h.count
		sums[k] = g
		st.Samples += h.count
		st.Windows++
		st.Last = max(st.Last, j.w)
	}
	hw := newHistWriter(txn, 0)
	totals := map[int64]histDelta{}
	for k, g := range sums {
		d, n := crdt.Digest{}.Sub(g.Digest), -int64(g.Count)
		if err := hw.addSum(k.Node, k.Window, d, n); err != nil {
			return st, nil, s.histErr(err)
		}
		t := totals[k.Window]
		t.d, t.n = t.d.Add(d), t.n+n
		totals[k.Window] = t
	}
	if err := hw.addTotals(totals); err != nil {
		return st, nil, s.histErr(err)
	}
	if err := txn.Commit(); err != nil {
		return st, nil, s.histErr(err)
	}
	return st, next, nil
}

// nodeRegisters lists the registers of node with any history.
func nodeRegisters(txn *badger.Txn, node uuid.UUID) ([]crdt.Register, error) {
	var out []crdt.Register
	pfx := append([]byte{pfxHist}, node[:]...)
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = pfx
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(pfx); it.Valid(); {
		k := it.Item().KeyCopy(nil)
		reg, n, err := parseHistReg(k[1:])
		if err != nil {
			return nil, err
		}
		out = append(out, reg)
		it.Seek(append(k[:1+n:1+n], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
	}
	return out, nil
}

// deleteHistWindow deletes every record of r's window w, whose head is h.
func deleteHistWindow(txn *badger.Txn, r *crdt.Register, w int64, h *histHead) error {
	for n := 0; n < h.segs; n++ {
		if err := txn.Delete(histSegKey(r, w, n)); err != nil {
			return err
		}
	}
	if h.segs > 0 {
		if err := txn.Delete(histDirtyKey(r, w)); err != nil {
			return err
		}
	}
	if h.block {
		if err := txn.Delete(histKey(r, w, histKindBlock)); err != nil {
			return err
		}
	}
	// An inline block goes with the head.
	return txn.Delete(histKey(r, w, histKindHead))
}

// OldestHistoryWindow returns the oldest window any node has history in;
// ok is false when there is none.
func (s *Store) OldestHistoryWindow() (w int64, ok bool, err error) {
	err = s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{pfxHistWindow}
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Rewind()
		if it.Valid() {
			k := it.Item().Key()
			if len(k) != 1+8+16 {
				return fmt.Errorf("%w: history window key of %d bytes", errCorrupt, len(k))
			}
			w, ok = int64(binary.BigEndian.Uint64(k[1:])), true
		}
		return nil
	})
	return w, ok, err
}
