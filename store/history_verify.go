package store

import (
	"context"
	"encoding/binary"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/history"
)

// verifyHistory recomputes every history window's count, digest and
// greatest key from its samples, and every node's window sums (both
// indexes) from the heads, and reports what differs.
func verifyHistory(ctx context.Context, txn *badger.Txn, report func(format string, args ...any)) error {
	type nw struct {
		n uuid.UUID
		w int64
	}
	sums := map[nw]histSum{}
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte{pfxHist}
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := it.Item().Key()
		reg, l, err := parseHistReg(k[1:])
		if err != nil || len(k) < 1+l+9 {
			report("history key %x does not parse", k)
			continue
		}
		if k[1+l+8] != histKindHead {
			continue
		}
		w := int64(binary.BigEndian.Uint64(k[1+l:]))
		var h histHead
		if err := it.Item().Value(func(v []byte) (err error) { h, err = decodeHistHead(v); return err }); err != nil {
			report("history %v %s.%s window %d: %v", reg.Node, reg.Type, reg.Key, w, err)
			continue
		}
		ss, err := readHistWindow(txn, &reg, w, &h)
		if err != nil {
			report("history %v %s.%s window %d: %v", reg.Node, reg.Type, reg.Key, w, err)
			continue
		}
		sorted := slices.IsSortedFunc(ss, func(a, b history.Sample) int { return compareSample(&a, &b) })
		inWindow := len(ss) > 0 && history.WindowOf(ss[0].Time) == w && history.WindowOf(ss[len(ss)-1].Time) == w
		d := history.Digest(reg, ss)
		switch {
		case !sorted || !inWindow:
			report("history %v %s.%s window %d: samples out of order or outside the window", reg.Node, reg.Type, reg.Key, w)
		case uint64(len(ss)) != h.count || d != h.digest:
			report("history %v %s.%s window %d: head says %d samples %v, the blocks hold %d %v", reg.Node, reg.Type, reg.Key, w, h.count, h.digest, len(ss), d)
		case compareSample(&ss[len(ss)-1], &h.maxKey) != 0:
			report("history %v %s.%s window %d: greatest key %v, the blocks end at %v", reg.Node, reg.Type, reg.Key, w, h.maxKey.Time, ss[len(ss)-1].Time)
		}
		if h.segs > 0 {
			if _, err := txn.Get(histDirtyKey(&reg, w)); err != nil {
				report("history %v %s.%s window %d: %d segments, not marked for compaction", reg.Node, reg.Type, reg.Key, w, h.segs)
			}
		}
		s := sums[nw{reg.Node, w}]
		s.digest, s.count = s.digest.Add(d), s.count+uint64(len(ss))
		sums[nw{reg.Node, w}] = s
	}
	it.Close()
	totals := map[int64]histSum{}
	for x, s := range sums {
		t := totals[x.w]
		t.digest, t.count = t.digest.Add(s.digest), t.count+s.count
		totals[x.w] = t
	}
	seenTotal := map[int64]bool{}
	if err := eachKeyCtx(ctx, txn, pfxHistTotal, func(k, v []byte) error {
		if len(k) != 9 {
			report("history total key %x", k)
			return nil
		}
		w := int64(binary.BigEndian.Uint64(k[1:]))
		seenTotal[w] = true
		got, err := decodeHistSum(v)
		if err != nil {
			report("history total of window %d: %v", w, err)
			return nil
		}
		if want := totals[w]; got != want {
			report("history total of window %d: %d samples %v, the heads say %d %v", w, got.count, got.digest, want.count, want.digest)
		}
		return nil
	}); err != nil {
		return err
	}
	for w := range totals {
		if !seenTotal[w] {
			report("history total of window %d missing", w)
		}
	}
	for _, index := range []struct {
		pfx  byte
		name string
		key  func(k []byte) nw
	}{
		{pfxHistNode, "node", func(k []byte) (x nw) {
			copy(x.n[:], k[1:17])
			x.w = int64(binary.BigEndian.Uint64(k[17:]))
			return x
		}},
		{pfxHistWindow, "window", func(k []byte) (x nw) {
			x.w = int64(binary.BigEndian.Uint64(k[1:]))
			copy(x.n[:], k[9:25])
			return x
		}},
	} {
		seen := map[nw]bool{}
		if err := eachKeyCtx(ctx, txn, index.pfx, func(k, v []byte) error {
			if len(k) != 25 {
				report("history %s index key %x", index.name, k)
				return nil
			}
			x := index.key(k)
			seen[x] = true
			got, err := decodeHistSum(v)
			if err != nil {
				report("history %s index %v window %d: %v", index.name, x.n, x.w, err)
				return nil
			}
			if want := sums[x]; got != want {
				report("history %s index %v window %d: %d samples %v, the heads say %d %v", index.name, x.n, x.w, got.count, got.digest, want.count, want.digest)
			}
			return nil
		}); err != nil {
			return err
		}
		for x := range sums {
			if !seen[x] {
				report("history %s index: %v window %d missing", index.name, x.n, x.w)
			}
		}
	}
	return nil
}
