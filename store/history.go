package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

// The history of the registers (package history) is kept beside them:
//
//	h reg w 0       the window's head (histHead): count, digest, greatest
//	                key, segments, and the per-slice summaries when the
//	                window is compacted
//	h reg w 1       the compacted block: SliceCount independently decoded
//	                blocks, one per slice of the window (SliceMs)
//	h reg w 2 n(4)  segment n: the samples one write appended after the
//	                greatest key (history.Encode)
//	w node w        the node's history digest in window w (histSum)
//	v w node        the same, window first (a full scope's rounds)
//	t w             the sum of every node's in window w (histSum)
//	x reg w         the window has segments to compact
//
// reg is node(16) | u8 len | type | u8 len | key: only node points have a
// history (edges are the tree, not readings). w is the window number
// (history.WindowOf) as 8 bytes big endian.
//
// A write that only adds samples after the window's greatest key (a live
// sensor) appends a segment and updates the head; any other write (a
// resent sample, a repair's block) merges the window and rewrites it
// compacted. A window with compactSegs segments, or one that CompactHistory
// finds closed, is compacted: its segments merged into the block.
const (
	pfxHist       = 'h'
	pfxHistNode   = 'w'
	pfxHistWindow = 'v'
	pfxHistDirty  = 'x'
	pfxHistTotal  = 't'

	histKindHead  = 0
	histKindBlock = 1
	histKindSeg   = 2
)

// SliceMs is the span of a slice: the part of a window a compacted block
// decodes on its own, and the unit of its stored summaries. A query's
// step boundary costs the decoding of one slice.
const SliceMs = 300_000

// SliceCount is the number of slices in a window.
const SliceCount = history.WindowMs / SliceMs

// inlineBlockMax is the largest compacted block kept in its window's head
// rather than as a record of its own: a sparse register's window (a
// reading a minute takes about 150 bytes) costs one record, not two.
const inlineBlockMax = 512

// compactSegs is the number of segments at which a window is compacted.
const compactSegs = 64

// HistoryRecorded reports whether writes of point p are recorded in its
// register's history: node points of every type but the tree's own
// (nodeType stays: a node's type changing is worth a history) and
// credentials, whose past values are secrets as much as their current
// ones.
func HistoryRecorded(p *crdt.Point) bool {
	if p.IsEdge() {
		return false
	}
	return !crdt.IsCredential(p.Type) && p.Type != crdt.TypeRole
}

func appendHistReg(dst []byte, r *crdt.Register) []byte {
	dst = append(dst, r.Node[:]...)
	dst = append(dst, byte(len(r.Type)))
	dst = append(dst, r.Type...)
	dst = append(dst, byte(len(r.Key)))
	return append(dst, r.Key...)
}

// parseHistReg parses a reg at the start of b and returns it and its
// length.
func parseHistReg(b []byte) (crdt.Register, int, error) {
	var r crdt.Register
	if len(b) < 16+1 {
		return r, 0, fmt.Errorf("%w: history key of %d bytes", errCorrupt, len(b))
	}
	copy(r.Node[:], b)
	p := 16
	lt := int(b[p])
	p++
	if len(b) < p+lt+1 {
		return r, 0, fmt.Errorf("%w: history key type", errCorrupt)
	}
	r.Type = string(b[p : p+lt])
	p += lt
	lk := int(b[p])
	p++
	if len(b) < p+lk {
		return r, 0, fmt.Errorf("%w: history key key", errCorrupt)
	}
	r.Key = string(b[p : p+lk])
	return r, p + lk, nil
}

func histKey(r *crdt.Register, w int64, kind byte) []byte {
	k := make([]byte, 0, 1+16+2+len(r.Type)+len(r.Key)+8+1+4)
	k = append(k, pfxHist)
	k = appendHistReg(k, r)
	k = binary.BigEndian.AppendUint64(k, uint64(w))
	return append(k, kind)
}

func histSegKey(r *crdt.Register, w int64, n int) []byte {
	return binary.BigEndian.AppendUint32(histKey(r, w, histKindSeg), uint32(n))
}

func histDirtyKey(r *crdt.Register, w int64) []byte {
	k := append([]byte{pfxHistDirty}, appendHistReg(nil, r)...)
	return binary.BigEndian.AppendUint64(k, uint64(w))
}

func histNodeKey(n uuid.UUID, w int64) []byte {
	k := append([]byte{pfxHistNode}, n[:]...)
	return binary.BigEndian.AppendUint64(k, uint64(w))
}

func histTotalKey(w int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pfxHistTotal}, uint64(w))
}

func histWindowKey(w int64, n uuid.UUID) []byte {
	k := binary.BigEndian.AppendUint64([]byte{pfxHistWindow}, uint64(w))
	return append(k, n[:]...)
}

// Summary aggregates the numeric samples of a span: those that are not
// tombstones. Count 0 leaves the rest zero.
type Summary struct {
	Count    int
	Min, Max float64
	Sum      float64
	Last     float64        // the value of the latest sample
	LastTime crdt.Timestamp // ... and its time
}

// Add adds sample s to the summary; samples must come in time order.
func (m *Summary) Add(s *history.Sample) {
	if s.Tombstone {
		return
	}
	if m.Count == 0 || s.Value < m.Min {
		m.Min = s.Value
	}
	if m.Count == 0 || s.Value > m.Max {
		m.Max = s.Value
	}
	m.Count++
	m.Sum += s.Value
	m.Last, m.LastTime = s.Value, s.Time
}

// Merge adds o, which covers a later span, to m.
func (m *Summary) Merge(o *Summary) {
	if o.Count == 0 {
		return
	}
	if m.Count == 0 {
		*m = *o
		return
	}
	m.Min, m.Max = math.Min(m.Min, o.Min), math.Max(m.Max, o.Max)
	m.Count += o.Count
	m.Sum += o.Sum
	if o.LastTime >= m.LastTime {
		m.Last, m.LastTime = o.Last, o.LastTime
	}
}

// histHead is the head record of one register's window.
type histHead struct {
	count  uint64
	digest crdt.Digest
	maxKey history.Sample // Time and Origin of the greatest sample
	segs   int            // segment records 0..segs-1
	block  bool           // a compacted block exists as a record of its own
	inline []byte         // ... or the compacted block, kept in the head (small windows)
	// sums are the slices' summaries, when every sample is in the block
	// (segs == 0); nil otherwise.
	sums []Summary
}

const histHeadVersion = 1

func (h *histHead) encode() []byte {
	v := make([]byte, 0, 64+len(h.sums)*4+len(h.inline))
	v = append(v, histHeadVersion)
	v = binary.AppendUvarint(v, h.count)
	d := h.digest.Bytes()
	v = append(v, d[:]...)
	v = binary.BigEndian.AppendUint64(v, uint64(h.maxKey.Time))
	v = append(v, h.maxKey.Origin[:]...)
	v = binary.AppendUvarint(v, uint64(h.segs))
	var f byte
	if h.block {
		f |= 1
	}
	if h.sums != nil {
		f |= 2
	}
	if h.inline != nil {
		f |= 4
	}
	v = append(v, f)
	if h.sums != nil {
		// A bitmap of the slices with samples, then theirs.
		var bits uint16
		for i := range h.sums {
			if h.sums[i].Count > 0 {
				bits |= 1 << i
			}
		}
		v = binary.BigEndian.AppendUint16(v, bits)
		for i := range h.sums {
			m := &h.sums[i]
			if m.Count == 0 {
				continue
			}
			v = binary.AppendUvarint(v, uint64(m.Count))
			for _, x := range [...]float64{m.Min, m.Max, m.Sum, m.Last} {
				v = binary.BigEndian.AppendUint64(v, math.Float64bits(x))
			}
			v = binary.BigEndian.AppendUint64(v, uint64(m.LastTime))
		}
	}
	if h.inline != nil {
		v = binary.AppendUvarint(v, uint64(len(h.inline)))
		v = append(v, h.inline...)
	}
	return v
}

func decodeHistHead(v []byte) (histHead, error) {
	var h histHead
	bad := func(what string) (histHead, error) {
		return histHead{}, fmt.Errorf("%w: history head: %s", errCorrupt, what)
	}
	if len(v) < 1 || v[0] != histHeadVersion {
		return bad("version")
	}
	p := 1
	n, k := binary.Uvarint(v[p:])
	if k <= 0 {
		return bad("count")
	}
	h.count, p = n, p+k
	if len(v) < p+16+8+16 {
		return bad("length")
	}
	var d [16]byte
	copy(d[:], v[p:])
	h.digest = crdt.DigestFromBytes(d)
	p += 16
	h.maxKey.Time = crdt.Timestamp(binary.BigEndian.Uint64(v[p:]))
	p += 8
	copy(h.maxKey.Origin[:], v[p:])
	p += 16
	n, k = binary.Uvarint(v[p:])
	if k <= 0 || n > 1<<20 {
		return bad("segments")
	}
	h.segs, p = int(n), p+k
	if len(v) < p+1 {
		return bad("flags")
	}
	f := v[p]
	p++
	if f&^7 != 0 {
		return bad("flags")
	}
	h.block = f&1 != 0
	if f&2 != 0 {
		h.sums = make([]Summary, SliceCount)
		if len(v) < p+2 {
			return bad("summary bitmap")
		}
		bits := binary.BigEndian.Uint16(v[p:])
		p += 2
		if bits>>SliceCount != 0 {
			return bad("summary bitmap")
		}
		for i := range h.sums {
			m := &h.sums[i]
			if bits&(1<<i) == 0 {
				continue
			}
			n, k := binary.Uvarint(v[p:])
			if k <= 0 || n == 0 || n > history.MaxBlockSamples {
				return bad("summary")
			}
			m.Count, p = int(n), p+k
			if len(v) < p+40 {
				return bad("summary length")
			}
			xs := [4]*float64{&m.Min, &m.Max, &m.Sum, &m.Last}
			for _, x := range xs {
				*x = math.Float64frombits(binary.BigEndian.Uint64(v[p:]))
				p += 8
			}
			m.LastTime = crdt.Timestamp(binary.BigEndian.Uint64(v[p:]))
			p += 8
		}
	}
	if f&4 != 0 {
		n, k := binary.Uvarint(v[p:])
		if k <= 0 || n > uint64(len(v)-p-k) || h.block {
			return bad("inline block")
		}
		p += k
		h.inline = bytes.Clone(v[p : p+int(n)])
		p += int(n)
	}
	if p != len(v) {
		return bad("trailing bytes")
	}
	return h, nil
}

// sliceOf returns the slice of window w that time t falls in.
func sliceOf(t crdt.Timestamp) int {
	return int(t.Physical() % history.WindowMs / SliceMs)
}

// encodeHistBlock encodes a window's samples as its compacted block and
// returns it with the slices' summaries.
func encodeHistBlock(samples []history.Sample) ([]byte, []Summary, error) {
	sums := make([]Summary, SliceCount)
	var parts [SliceCount][]history.Sample
	for i := 0; i < len(samples); {
		sl := sliceOf(samples[i].Time)
		j := i
		for j < len(samples) && sliceOf(samples[j].Time) == sl {
			sums[sl].Add(&samples[j])
			j++
		}
		parts[sl] = samples[i:j]
		i = j
	}
	var encs [SliceCount][]byte
	size := 0
	for i, p := range parts {
		if len(p) == 0 {
			continue
		}
		b, err := history.Encode(p)
		if err != nil {
			return nil, nil, err
		}
		encs[i] = b
		size += len(b) + 3
	}
	out := make([]byte, 0, size+1)
	out = append(out, SliceCount)
	for _, b := range encs {
		out = binary.AppendUvarint(out, uint64(len(b)))
	}
	for _, b := range encs {
		out = append(out, b...)
	}
	return out, sums, nil
}

// histBlockSlices splits a compacted block into its slices' encodings
// (empty for a slice without samples).
func histBlockSlices(b []byte) ([SliceCount][]byte, error) {
	var out [SliceCount][]byte
	if len(b) < 1 || b[0] != SliceCount {
		return out, fmt.Errorf("%w: history block header", errCorrupt)
	}
	p := 1
	var lens [SliceCount]int
	for i := range lens {
		n, k := binary.Uvarint(b[p:])
		if k <= 0 || n > uint64(len(b)) {
			return out, fmt.Errorf("%w: history block slice length", errCorrupt)
		}
		lens[i], p = int(n), p+k
	}
	for i, n := range lens {
		if len(b)-p < n {
			return out, fmt.Errorf("%w: history block truncated", errCorrupt)
		}
		out[i] = b[p : p+n : p+n]
		p += n
	}
	if p != len(b) {
		return out, fmt.Errorf("%w: history block trailing bytes", errCorrupt)
	}
	return out, nil
}

// decodeSlices decodes the slices of a compacted block that keep says to,
// in order, appending their samples to dst.
func decodeSlices(dst []history.Sample, b []byte, keep func(slice int) bool) ([]history.Sample, error) {
	parts, err := histBlockSlices(b)
	if err != nil {
		return dst, err
	}
	for i, p := range parts {
		if len(p) == 0 || keep != nil && !keep(i) {
			continue
		}
		ss, err := history.Decode(p)
		if err != nil {
			return dst, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		dst = append(dst, ss...)
	}
	return dst, nil
}

// histSum is a node's history in one window: the digest and count of its
// samples.
type histSum struct {
	digest crdt.Digest
	count  uint64
}

func (s histSum) encode() []byte {
	d := s.digest.Bytes()
	return binary.AppendUvarint(d[:], s.count)
}

func decodeHistSum(v []byte) (histSum, error) {
	if len(v) < 17 {
		return histSum{}, fmt.Errorf("%w: history digest of %d bytes", errCorrupt, len(v))
	}
	var d [16]byte
	copy(d[:], v)
	n, k := binary.Uvarint(v[16:])
	if k <= 0 || 16+k != len(v) {
		return histSum{}, fmt.Errorf("%w: history digest count", errCorrupt)
	}
	return histSum{digest: crdt.DigestFromBytes(d), count: n}, nil
}

// histWriter adds samples to the history inside one write transaction.
// Its work is grouped by register and window; flush writes it.
type histWriter struct {
	txn    *badger.Txn
	groups map[histGroupKey]*histGroup
	order  []histGroupKey
	added  uint64 // samples new to the store, once flushed
	// lateBefore: a window before it is late (lateLog); lowest is the
	// lowest late window that got new samples (math.MaxInt64: none).
	lateBefore, lowest int64
}

type histGroupKey struct {
	reg crdt.Register
	w   int64
}

type histGroup struct {
	samples []history.Sample
	sorted  bool
	// unpushed: one of the samples is not a point the change feed will
	// carry (it lost its register, or came by MergeHistory).
	unpushed bool
}

func newHistWriter(txn *badger.Txn, lateBefore int64) *histWriter {
	return &histWriter{txn: txn, groups: make(map[histGroupKey]*histGroup), lateBefore: lateBefore, lowest: math.MaxInt64}
}

// lateLog remembers the late writes of history: new samples in a window
// before the one before the store's greatest time, which a link's rounds
// since its mark would not compare, and new samples no push will carry
// (a value its register lost, a round's merge), which rounds must carry
// soon rather than when their hour closes. It is kept in memory, since
// Open: links run a full round at the start of each session.
type lateLog struct {
	mu      sync.Mutex
	gen     uint64 // late writes so far
	entries []lateEntry
	lost    uint64 // entries with gen ≤ lost were dropped (too many)
}

type lateEntry struct {
	gen uint64
	w   int64
}

const maxLateEntries = 4096

func (l *lateLog) add(w int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen++
	if len(l.entries) == maxLateEntries {
		l.lost = l.entries[0].gen
		l.entries = append(l.entries[:0], l.entries[1:]...)
	}
	l.entries = append(l.entries, lateEntry{l.gen, w})
}

// LateHistoryGen returns the count of late history writes since Open: a
// window that got new samples long after its time (a backlog replayed, a
// peer's repair). A link whose rounds compare from a mark checks them
// with LateHistoryLow.
func (s *Store) LateHistoryGen() uint64 {
	s.late.mu.Lock()
	defer s.late.mu.Unlock()
	return s.late.gen
}

// LateHistoryLow returns the lowest window of the late writes after
// generation gen: math.MaxInt64 when there were none, -1 when they are no
// longer known (compare every window).
func (s *Store) LateHistoryLow(gen uint64) int64 {
	s.late.mu.Lock()
	defer s.late.mu.Unlock()
	if gen < s.late.lost {
		return -1
	}
	low := int64(math.MaxInt64)
	for _, e := range s.late.entries {
		if e.gen > gen {
			low = min(low, e.w)
		}
	}
	return low
}

// add queues sample s of register r.
// add queues sample s of register r; unpushed says no push will carry it
// as a point.
func (hw *histWriter) add(r crdt.Register, s history.Sample, unpushed bool) {
	k := histGroupKey{reg: r, w: history.WindowOf(s.Time)}
	g := hw.groups[k]
	if g == nil {
		g = &histGroup{sorted: true}
		hw.groups[k] = g
		hw.order = append(hw.order, k)
	}
	g.unpushed = g.unpushed || unpushed
	if n := len(g.samples); n > 0 && compareSample(&g.samples[n-1], &s) >= 0 {
		g.sorted = false
	}
	g.samples = append(g.samples, s)
}

func compareSample(a, b *history.Sample) int {
	if a.Time != b.Time {
		if a.Time < b.Time {
			return -1
		}
		return 1
	}
	return slices.Compare(a.Origin[:], b.Origin[:])
}

// normalize sorts samples by key and keeps one sample a key (the one the
// LWW order ranks higher, as history.Merge does).
func normalizeSamples(ss []history.Sample) []history.Sample {
	slices.SortStableFunc(ss, func(a, b history.Sample) int { return compareSample(&a, &b) })
	out := ss[:0]
	for i := range ss {
		if n := len(out); n > 0 && compareSample(&out[n-1], &ss[i]) == 0 {
			m := history.Merge(out[n-1:], ss[i:i+1])
			out[n-1] = m[0]
			continue
		}
		out = append(out, ss[i])
	}
	return out
}

// flush writes every queued group: new samples appended or merged, heads
// and digests updated.
func (hw *histWriter) flush() error {
	sums := make(map[uuid.UUID]map[int64]crdt.Digest)
	counts := make(map[uuid.UUID]map[int64]int64)
	for _, k := range hw.order {
		g := hw.groups[k]
		if !g.sorted {
			g.samples = normalizeSamples(g.samples)
		}
		dd, dn, err := hw.write(&k.reg, k.w, g.samples)
		if err != nil {
			return err
		}
		if dn == 0 && dd.IsZero() {
			continue
		}
		if sums[k.reg.Node] == nil {
			sums[k.reg.Node] = make(map[int64]crdt.Digest)
			counts[k.reg.Node] = make(map[int64]int64)
		}
		sums[k.reg.Node][k.w] = sums[k.reg.Node][k.w].Add(dd)
		counts[k.reg.Node][k.w] += dn
		if dn > 0 {
			hw.added += uint64(dn)
			if k.w < hw.lateBefore || g.unpushed {
				hw.lowest = min(hw.lowest, k.w)
			}
		}
	}
	totals := map[int64]histDelta{}
	for n, ws := range sums {
		for w, d := range ws {
			if err := hw.addSum(n, w, d, counts[n][w]); err != nil {
				return err
			}
			t := totals[w]
			t.d, t.n = t.d.Add(d), t.n+counts[n][w]
			totals[w] = t
		}
	}
	return hw.addTotals(totals)
}

// histDelta is a change of a sum: a digest and a count to add.
type histDelta struct {
	d crdt.Digest
	n int64
}

// addTotals adds each window's delta to its total (the t keys).
func (hw *histWriter) addTotals(totals map[int64]histDelta) error {
	for w, t := range totals {
		if err := hw.addTo(histTotalKey(w), t.d, t.n, nil); err != nil {
			return err
		}
	}
	return nil
}

// addSum adds digest d and count n to node's sum in window w, in both
// indexes.
func (hw *histWriter) addSum(node uuid.UUID, w int64, d crdt.Digest, n int64) error {
	return hw.addTo(histNodeKey(node, w), d, n, histWindowKey(w, node))
}

// addTo adds digest d and count n to the sum at key k, and writes the
// result at also too when it is set; a sum that comes to nothing is
// deleted.
func (hw *histWriter) addTo(k []byte, d crdt.Digest, n int64, also []byte) error {
	var cur histSum
	item, err := hw.txn.Get(k)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("store: read history digest: %w", err)
	default:
		if err := item.Value(func(v []byte) (err error) { cur, err = decodeHistSum(v); return err }); err != nil {
			return err
		}
	}
	cur.digest = cur.digest.Add(d)
	cur.count = uint64(int64(cur.count) + n)
	if cur.count == 0 && cur.digest.IsZero() {
		if err := hw.txn.Delete(k); err != nil {
			return err
		}
		if also != nil {
			return hw.txn.Delete(also)
		}
		return nil
	}
	v := cur.encode()
	if err := hw.txn.Set(k, v); err != nil {
		return err
	}
	if also != nil {
		return hw.txn.Set(also, v)
	}
	return nil
}

// readHead reads the head of r's window w; ok is false when the window
// holds nothing.
func readHistHead(txn *badger.Txn, r *crdt.Register, w int64) (h histHead, ok bool, err error) {
	item, err := txn.Get(histKey(r, w, histKindHead))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("store: read history head: %w", err)
	}
	err = item.Value(func(v []byte) (err error) { h, err = decodeHistHead(v); return err })
	return h, err == nil, err
}

// readWindow returns every sample of r's window w, in key order.
func readHistWindow(txn *badger.Txn, r *crdt.Register, w int64, h *histHead) ([]history.Sample, error) {
	var out []history.Sample
	if h.inline != nil {
		var err error
		if out, err = decodeSlices(out, h.inline, nil); err != nil {
			return nil, err
		}
	}
	if h.block {
		item, err := txn.Get(histKey(r, w, histKindBlock))
		if err != nil {
			return nil, fmt.Errorf("store: read history block: %w", err)
		}
		if err := item.Value(func(v []byte) (err error) { out, err = decodeSlices(out, v, nil); return err }); err != nil {
			return nil, err
		}
	}
	for n := 0; n < h.segs; n++ {
		item, err := txn.Get(histSegKey(r, w, n))
		if err != nil {
			return nil, fmt.Errorf("store: read history segment: %w", err)
		}
		var seg []history.Sample
		if err := item.Value(func(v []byte) (err error) {
			seg, err = history.Decode(v)
			if err != nil {
				err = fmt.Errorf("%w: %w", errCorrupt, err)
			}
			return err
		}); err != nil {
			return nil, err
		}
		// Segments only ever append after the greatest key, so they
		// follow the block and each other in order.
		out = append(out, seg...)
	}
	return out, nil
}

// write adds samples (sorted, one per key) to r's window w and returns the
// change of the window's digest and count.
func (hw *histWriter) write(r *crdt.Register, w int64, samples []history.Sample) (crdt.Digest, int64, error) {
	h, ok, err := readHistHead(hw.txn, r, w)
	if err != nil {
		return crdt.Digest{}, 0, err
	}
	if ok && h.count > 0 && compareSample(&samples[0], &h.maxKey) > 0 && h.segs+1 < compactSegs {
		// Appended after everything held: a segment.
		b, err := history.Encode(samples)
		if err != nil {
			return crdt.Digest{}, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if err := hw.txn.Set(histSegKey(r, w, h.segs), b); err != nil {
			return crdt.Digest{}, 0, err
		}
		if h.segs == 0 {
			if err := hw.txn.Set(histDirtyKey(r, w), nil); err != nil {
				return crdt.Digest{}, 0, err
			}
		}
		d := history.Digest(*r, samples)
		h.segs++
		h.count += uint64(len(samples))
		h.digest = h.digest.Add(d)
		h.maxKey = samples[len(samples)-1]
		h.sums = nil
		if err := hw.txn.Set(histKey(r, w, histKindHead), h.encode()); err != nil {
			return crdt.Digest{}, 0, err
		}
		return d, int64(len(samples)), nil
	}
	var old []history.Sample
	if ok {
		if old, err = readHistWindow(hw.txn, r, w, &h); err != nil {
			return crdt.Digest{}, 0, err
		}
	}
	merged, delta, changed := mergeDelta(r, old, samples)
	if !changed {
		return crdt.Digest{}, 0, nil // nothing new
	}
	if err := writeHistCompacted(hw.txn, r, w, &h, ok, merged, h.digest.Add(delta)); err != nil {
		return crdt.Digest{}, 0, err
	}
	return delta, int64(len(merged)) - int64(h.count), nil
}

// mergeDelta returns the union of old and in (history.Merge), the change
// of the digest from old's, and whether anything changed. Only the
// samples the merge adds or replaces are hashed: a window rewritten for a
// few new samples costs their hashes, not the window's.
func mergeDelta(r *crdt.Register, old, in []history.Sample) (merged []history.Sample, delta crdt.Digest, changed bool) {
	if len(old) == 0 {
		return in, history.Digest(*r, in), len(in) > 0
	}
	merged = history.Merge(old, in)
	digest := func(s *history.Sample) crdt.Digest {
		p := history.Point(*r, s)
		return crdt.PointDigest(&p)
	}
	i := 0
	for j := range merged {
		if i < len(old) && compareSample(&old[i], &merged[j]) == 0 {
			if old[i] != merged[j] {
				delta = delta.Add(digest(&merged[j])).Sub(digest(&old[i]))
				changed = true
			}
			i++
			continue
		}
		delta = delta.Add(digest(&merged[j]))
		changed = true
	}
	return merged, delta, changed
}

// writeHistCompacted replaces r's window w, whose head was old (when
// existed), with the block of samples, whose digest is d.
func writeHistCompacted(txn *badger.Txn, r *crdt.Register, w int64, old *histHead, existed bool, samples []history.Sample, d crdt.Digest) error {
	block, sums, err := encodeHistBlock(samples)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if existed {
		for n := 0; n < old.segs; n++ {
			if err := txn.Delete(histSegKey(r, w, n)); err != nil {
				return err
			}
		}
		if old.segs > 0 {
			if err := txn.Delete(histDirtyKey(r, w)); err != nil {
				return err
			}
		}
	}
	h := histHead{count: uint64(len(samples)), digest: d, maxKey: samples[len(samples)-1], sums: sums}
	h.maxKey.Value, h.maxKey.Text, h.maxKey.Tombstone = 0, "", false
	if len(block) <= inlineBlockMax {
		h.inline = block
		if existed && old.block {
			if err := txn.Delete(histKey(r, w, histKindBlock)); err != nil {
				return err
			}
		}
	} else {
		h.block = true
		if err := txn.Set(histKey(r, w, histKindBlock), block); err != nil {
			return err
		}
	}
	return txn.Set(histKey(r, w, histKindHead), h.encode())
}
