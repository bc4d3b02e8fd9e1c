package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

// Outcome says what Apply did with one point of a batch.
type Outcome uint8

const (
	// Applied: the point won its register and is now held.
	Applied Outcome = iota + 1
	// Stale: the register already held this write or a newer one; nothing
	// changed.
	Stale
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Stale:
		return "stale"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Result reports what a batch changed.
type Result struct {
	// Outcomes has one entry per point of the batch, in order.
	Outcomes []Outcome
	// Changes holds the points that won their register, normalized, in
	// batch order: the change feed. The caller owns the slice.
	Changes []crdt.Point
	// FirstSeq is the local change number of Changes[0]; Changes[i] is
	// change FirstSeq+i. Change numbers are assigned in commit order, so
	// ChangesSince(FirstSeq-1) starts with this batch's changes (those not
	// yet overwritten). Zero when nothing changed.
	FirstSeq uint64
	// HistoryAdded counts the samples the batch added to the registers'
	// histories: every point HistoryRecorded takes, applied or not,
	// unless its sample was held already.
	HistoryAdded uint64
}

// ErrBatchTooLarge is returned when a batch does not fit in one Badger
// transaction; split it and retry. Nothing of it is written.
var ErrBatchTooLarge = errors.New("store: batch too large for one transaction")

// Apply merges a batch of points into their registers, atomically: either
// every point is merged and the batch is durable (with SyncWrites) when
// Apply returns, or nothing is written and the error says why.
//
// Every point must be stamped (Time and Origin) and valid; Apply normalizes a
// copy of each and refuses the whole batch, naming the first invalid point's
// index, with an error wrapping ErrInvalid. It refuses writes with
// ErrDiskFull when free space is below the floor, ErrBatchTooLarge when the
// batch does not fit in one transaction, and ErrClosed after Close.
//
// Digests, indexes and the tree's active edges are updated in the same
// transaction. Apply calls are serialized; readers are never blocked.
func (s *Store) Apply(pts []crdt.Point) (Result, error) {
	return s.ApplyWith(ApplyOptions{}, pts)
}

// ApplyOptions qualifies a batch for ApplyWith.
type ApplyOptions struct {
	// Source is the instance the batch was received from (uuid.Nil for a
	// local write). The change feed records it for every change, so a link
	// never sends a change back where it came from.
	Source uuid.UUID
	// Marks are set in the same transaction as the points (see SetMarks),
	// so a receiver's "received up to" position is exact after a crash.
	Marks map[string]uint64
}

// ApplyWith is Apply with a source and marks. A batch with no points but
// with marks commits the marks alone.
//
// A panic while reading (Badger's decoders on a table damaged after Open
// checked it) is returned as an error wrapping ErrCorrupt; nothing of the
// batch is written.
func (s *Store) ApplyWith(opts ApplyOptions, pts []crdt.Point) (res Result, err error) {
	var marks [][2][]byte
	for name, v := range opts.Marks {
		k, err := markKey(name)
		if err != nil {
			return Result{}, err
		}
		marks = append(marks, [2][]byte{k, binary.BigEndian.AppendUint64(nil, v)})
	}
	batchPts := make([]crdt.Point, len(pts))
	for i := range pts {
		p := pts[i]
		p.Normalize()
		if err := p.Validate(); err != nil {
			return Result{}, fmt.Errorf("%w: point %d: %w", ErrInvalid, i, err)
		}
		batchPts[i] = p
	}
	if err := s.enter(); err != nil {
		return Result{}, err
	}
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			res, err = Result{}, s.inDir(readPanic(r))
		}
	}()
	if err := s.checkSpace(); err != nil {
		return Result{}, err
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	b := newBatch(txn, s.seq.Load(), s.cache)
	if opts.Source != uuid.Nil {
		b.source = opts.Source[:]
	}
	if err := b.prefetch(s.db, batchPts); err != nil {
		return Result{}, s.inDir(err)
	}
	res, err = b.apply(batchPts)
	if err != nil {
		return Result{}, err
	}
	late := int64(math.MaxInt64)
	if !s.cfg.noHistory {
		if res.HistoryAdded, late, err = b.recordHistory(batchPts, res.Outcomes, s.lateBefore()); err != nil {
			return Result{}, b.txnErr(err)
		}
	}
	for _, m := range marks {
		if err := txn.Set(m[0], m[1]); err != nil {
			return Result{}, b.txnErr(err)
		}
	}
	oldMax := s.MaxTime()
	maxTime := oldMax
	for i := range res.Changes {
		maxTime = max(maxTime, res.Changes[i].Time)
	}
	if maxTime != oldMax {
		if err := txn.Set(keyMaxTime, binary.BigEndian.AppendUint64(nil, uint64(maxTime))); err != nil {
			return Result{}, b.txnErr(err)
		}
	}
	if err := b.flush(); err != nil {
		return Result{}, err
	}
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return Result{}, fmt.Errorf("%w (%d points)", ErrBatchTooLarge, len(pts))
		}
		return Result{}, fmt.Errorf("store: commit: %w", err)
	}
	s.maxTime.Store(uint64(maxTime))
	s.seq.Store(b.seq)
	if late != math.MaxInt64 {
		s.late.add(late)
	}
	if b.irregularChanged {
		s.irregularGen.Add(1)
	}
	b.remember()
	return res, nil
}

// batch is the working state of one Apply: everything it read, changed or
// will write, so each key is read and written at most once. Nothing is
// written into the transaction before flush: Badger sorts a transaction's
// pending writes every time an iterator is opened on it, so writing early
// would make each index scan of the batch cost O(batch log batch).
type batch struct {
	txn    *badger.Txn
	seq    uint64 // the last change number assigned
	source []byte // the change feed value: the source instance, or nil
	cache  *writeCache

	regs      map[string]*regState // point key → the register's state
	pointRegs []*regState          // the register of each point of the batch
	regPool   []regState           // backing store of regs
	arena     []byte               // backing store of keys and values
	nodes     map[uuid.UUID]*nodeMeta
	nodeDirty map[uuid.UUID]bool
	edges     map[crdt.Edge]*edgeState // nil entry: no such edge
	edgeDirty map[crdt.Edge]bool
	parents   map[uuid.UUID][]uuid.UUID // every parent with an edge state
	linkFlags map[crdt.Edge]bool        // committed active flag of the edges in parents
	buckets   map[bucketID]*crdt.Digest

	ownDelta  map[uuid.UUID]crdt.Digest
	edgeDelta map[crdt.Edge]crdt.Digest
	regEdges  map[crdt.Edge]bool // edges whose TypeEdge register changed

	irregular map[crdt.Edge]bool // 'i' keys to set (true) or delete (false)
	// irregularChanged: the batch adds or removes an irregular edge.
	irregularChanged bool
}

type bucketID struct {
	parent uuid.UUID
	bucket byte
}

// regState is one register as the batch sees it.
type regState struct {
	key    []byte      // its point key
	old    *crdt.Point // the committed winner; nil: the register was empty
	oldDig crdt.Digest // old's digest, when hasDig
	hasDig bool
	oldSeq uint64      // old's change number
	cur    *crdt.Point // the winner so far: old until a point of the batch wins
	seq    uint64      // cur's change number when the batch changed it; 0: unchanged
	digest crdt.Digest // cur's digest, once apply changed it
}

func newBatch(txn *badger.Txn, seq uint64, cache *writeCache) *batch {
	return &batch{
		txn:       txn,
		seq:       seq,
		cache:     cache,
		regs:      make(map[string]*regState),
		nodes:     make(map[uuid.UUID]*nodeMeta),
		nodeDirty: make(map[uuid.UUID]bool),
		edges:     make(map[crdt.Edge]*edgeState),
		edgeDirty: make(map[crdt.Edge]bool),
		parents:   make(map[uuid.UUID][]uuid.UUID),
		linkFlags: make(map[crdt.Edge]bool),
		buckets:   make(map[bucketID]*crdt.Digest),
		ownDelta:  make(map[uuid.UUID]crdt.Digest),
		edgeDelta: make(map[crdt.Edge]crdt.Digest),
		regEdges:  make(map[crdt.Edge]bool),
		irregular: make(map[crdt.Edge]bool),
	}
}

func (b *batch) apply(pts []crdt.Point) (Result, error) {
	res := Result{Outcomes: make([]Outcome, len(pts)), Changes: make([]crdt.Point, 0, len(pts))}
	for i := range pts {
		p := &pts[i]
		r := b.pointRegs[i]
		if r.cur != nil && crdt.Compare(p, r.cur) <= 0 {
			res.Outcomes[i] = Stale
			continue
		}
		res.Outcomes[i] = Applied
		b.seq++
		if res.FirstSeq == 0 {
			res.FirstSeq = b.seq
		}
		r.cur, r.seq = p, b.seq
		res.Changes = append(res.Changes, *p)
		if p.IsEdge() {
			e := crdt.Edge{Parent: p.Parent, Child: p.Node}
			st, err := b.edge(e, true)
			if err != nil {
				return Result{}, err
			}
			if p.Type == crdt.TypeEdge {
				r := crdt.EdgeRegisterOf(p)
				st.hasReg, st.tombstone, st.moved, st.place, st.time, st.origin = true, r.Tombstone, r.Moved, r.Place, r.Time, r.Origin
				b.regEdges[e] = true
			}
			b.edgeDirty[e] = true
		}
	}
	// Each changed register adds digest(final winner) − digest(committed
	// winner) to its node or edge: the sum of the per-point deltas, with one
	// SHA-256 per register instead of one per point (a batch often carries
	// several readings of one sensor). The sums commute, so map order is
	// fine.
	for _, r := range b.regs {
		if r.seq == 0 {
			continue
		}
		r.digest = crdt.PointDigest(r.cur)
		delta := r.digest
		if r.old != nil {
			if !r.hasDig {
				r.oldDig, r.hasDig = crdt.PointDigest(r.old), true
			}
			delta = delta.Sub(r.oldDig)
		}
		if p := r.cur; p.IsEdge() {
			e := crdt.Edge{Parent: p.Parent, Child: p.Node}
			b.edgeDelta[e] = b.edgeDelta[e].Add(delta)
		} else {
			b.ownDelta[p.Node] = b.ownDelta[p.Node].Add(delta)
		}
	}
	changes, err := b.resolveTree()
	if err != nil {
		return Result{}, err
	}
	if err := b.updateDigests(changes); err != nil {
		return Result{}, err
	}
	return res, nil
}

// recordHistory adds the batch's points to their registers' histories.
// A point that lost to its register's winner is still a value the
// register took, unless it is that winner (a write received again),
// which was recorded when it won.
func (b *batch) recordHistory(pts []crdt.Point, outcomes []Outcome, lateBefore int64) (added uint64, late int64, err error) {
	var hw *histWriter
	off := map[crdt.Register]bool{} // historyOff registers looked up
	for i := range pts {
		p := &pts[i]
		if !HistoryRecorded(p) {
			continue
		}
		cfg := crdt.Register{Node: p.Node, Type: crdt.TypeHistoryOff, Key: p.Type}
		isOff, seen := off[cfg]
		if !seen {
			var err error
			if isOff, err = b.historyOff(cfg); err != nil {
				return 0, 0, err
			}
			off[cfg] = isOff
		}
		if isOff {
			continue
		}
		if outcomes[i] == Stale {
			if r := b.pointRegs[i]; r.old != nil && r.old.Time == p.Time && r.old.Origin == p.Origin {
				continue
			}
		}
		if hw == nil {
			hw = newHistWriter(b.txn, lateBefore)
		}
		// The register's winner of the batch goes out with the change
		// feed; any other value it took in the batch only by a round.
		r := b.pointRegs[i]
		pushed := r.seq != 0 && r.cur.Time == p.Time && r.cur.Origin == p.Origin
		hw.add(p.Register(), history.FromPoint(p), !pushed)
	}
	if hw == nil {
		return 0, math.MaxInt64, nil
	}
	if err := hw.flush(); err != nil {
		return 0, 0, err
	}
	return hw.added, hw.lowest, nil
}

// historyOff reports whether the TypeHistoryOff register cfg, as the
// batch leaves it, turns its type's history off.
func (b *batch) historyOff(cfg crdt.Register) (bool, error) {
	p := crdt.Point{Node: cfg.Node, Type: cfg.Type, Key: cfg.Key}
	if p.Key == "" {
		return false, nil
	}
	k := pointKey(&p)
	if r, ok := b.regs[string(k)]; ok {
		return r.cur != nil && !r.cur.Tombstone && r.cur.Value != 0, nil
	}
	item, err := b.txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: read %s: %w", crdt.TypeHistoryOff, err)
	}
	err = item.Value(func(v []byte) error {
		_, err := decodeRegister(v, &p)
		return err
	})
	return err == nil && !p.Tombstone && p.Value != 0, err
}

func (b *batch) txnErr(err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return ErrBatchTooLarge
	}
	return fmt.Errorf("store: write: %w", err)
}

// alloc returns n bytes from the batch's arena: keys and values live
// until the commit, and one allocation serves many of them.
func (b *batch) alloc(n int) []byte {
	if len(b.arena)+n > cap(b.arena) {
		b.arena = make([]byte, 0, max(n, 64<<10))
	}
	off := len(b.arena)
	b.arena = b.arena[:off+n]
	return b.arena[off : off+n : off+n]
}

// regKey returns p's point key, in the arena.
func (b *batch) regKey(p *crdt.Point) []byte {
	k := b.alloc(1 + 32 + len(p.Type) + 1 + len(p.Key))
	return appendRegKey(append(k[:0], pfxPoint), p.Node, p.Parent, p.Type, p.Key)
}

// newReg adds the register at key k, not read yet, to the batch.
func (b *batch) newReg(k []byte) *regState {
	if len(b.regPool) == cap(b.regPool) {
		b.regPool = make([]regState, 0, 256)
	}
	b.regPool = append(b.regPool, regState{key: k})
	r := &b.regPool[len(b.regPool)-1]
	b.regs[string(k)] = r
	return r
}

// readRegister reads the committed winner of register r, whose identity is
// p's, into r.
func readRegister(txn *badger.Txn, r *regState, p *crdt.Point) error {
	item, err := txn.Get(r.key)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("store: read register: %w", err)
	}
	old := &crdt.Point{Node: p.Node, Parent: p.Parent, Type: p.Type, Key: p.Key}
	if err := item.Value(func(v []byte) (err error) { r.oldSeq, err = decodeRegister(v, old); return err }); err != nil {
		return err
	}
	r.old, r.cur = old, old
	return nil
}

// prefetchMin is the number of registers from which prefetch reads with
// two goroutines.
const prefetchMin = 256

// prefetch reads the committed winner of every register the batch writes,
// from the write cache when it remembers the register. Each other read is
// a Badger lookup (a skiplist search per memtable, a bloom filter per
// table, and for a register that exists a block search in every level
// that holds a version of it): the largest part of a batch's work outside
// Badger's own write path. With more than one CPU and a large batch, a
// second goroutine does half of the lookups in a read-only transaction: it
// sees the same registers as the batch's transaction, because registers
// are only written by Apply, which holds the writer lock. The goroutine
// ends before prefetch returns.
func (b *batch) prefetch(db *badger.DB, pts []crdt.Point) error {
	b.regPool = make([]regState, 0, len(pts))
	b.pointRegs = make([]*regState, len(pts))
	type job struct {
		r *regState
		p *crdt.Point
	}
	jobs := make([]job, 0, len(pts))
	for i := range pts {
		p := &pts[i]
		k := b.regKey(p)
		if r, ok := b.regs[string(k)]; ok {
			b.pointRegs[i] = r
			continue
		}
		r := b.newReg(k)
		b.pointRegs[i] = r
		if c, ok := b.cache.regs[string(k)]; ok {
			old := &crdt.Point{Node: p.Node, Parent: p.Parent, Type: p.Type, Key: p.Key,
				Value: c.value, Text: c.text, Tombstone: c.tombstone, Time: c.time, Origin: c.origin}
			r.old, r.cur, r.oldSeq, r.oldDig, r.hasDig = old, old, c.seq, c.digest, true
			continue
		}
		jobs = append(jobs, job{r, p})
	}
	read := func(txn *badger.Txn, jobs []job) error {
		for _, j := range jobs {
			if err := readRegister(txn, j.r, j.p); err != nil {
				return err
			}
		}
		return nil
	}
	if len(jobs) < prefetchMin || runtime.GOMAXPROCS(0) < 2 {
		return read(b.txn, jobs)
	}
	half := len(jobs) / 2
	rtxn := db.NewTransaction(false)
	defer rtxn.Discard()
	var wg sync.WaitGroup
	var err2 error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if r := recover(); r != nil {
				err2 = readPanic(r)
			}
		}()
		err2 = read(rtxn, jobs[half:])
	}()
	// A panic in this half must not unwind past rtxn's Discard while the
	// other half still reads with it: it is an error, after the wait.
	var err1 error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err1 = readPanic(r)
			}
		}()
		err1 = read(b.txn, jobs[:half])
	}()
	wg.Wait()
	return errors.Join(err1, err2)
}

// edge returns the state of edge e, creating it when create is set and it
// does not exist yet (nil otherwise).
func (b *batch) edge(e crdt.Edge, create bool) (*edgeState, error) {
	st, ok := b.edges[e]
	if !ok {
		item, err := b.txn.Get(edgeKey(pfxChild, e.Parent, e.Child))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return nil, fmt.Errorf("store: read edge: %w", err)
		default:
			var s edgeState
			if err := item.Value(func(v []byte) (err error) { s, err = decodeEdgeState(v); return err }); err != nil {
				return nil, err
			}
			st = &s
		}
		b.edges[e] = st
	}
	if st == nil && create {
		st = &edgeState{}
		b.edges[e] = st
		b.edgeDirty[e] = true
		ps, err := b.allParents(e.Child)
		if err != nil {
			return nil, err
		}
		b.parents[e.Child] = append(slices.Clip(ps), e.Parent)
	}
	return st, nil
}

// allParents returns every parent that has an edge state with n, whatever
// the state, and records the committed active flag of each edge in
// linkFlags. The store's write cache answers for nodes it remembers;
// otherwise the 'u' index is scanned.
func (b *batch) allParents(n uuid.UUID) ([]uuid.UUID, error) {
	if ps, ok := b.parents[n]; ok {
		return ps, nil
	}
	var ps []uuid.UUID
	if links, ok := b.cache.links[n]; ok {
		ps = make([]uuid.UUID, len(links))
		for i, l := range links {
			ps[i] = l.parent
			b.linkFlags[crdt.Edge{Parent: l.parent, Child: n}] = l.active
		}
		b.parents[n] = ps
		return ps, nil
	}
	prefix := make([]byte, 17)
	prefix[0] = pfxParent
	copy(prefix[1:], n[:])
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = prefix
	it := b.txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) != 33 {
			return nil, fmt.Errorf("%w: parent key of %d bytes", errCorrupt, len(k))
		}
		var p uuid.UUID
		copy(p[:], k[17:33])
		active, err := parentFlag(item)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
		b.linkFlags[crdt.Edge{Parent: p, Child: n}] = active
	}
	b.parents[n] = ps
	return ps, nil
}

// activeParents returns n's parents over active edges, as the batch's edge
// states say now; overlay, when non-nil, overrides the active flags.
func (b *batch) activeParents(n uuid.UUID, overlay map[crdt.Edge]bool) ([]uuid.UUID, error) {
	ps, err := b.allParents(n)
	if err != nil {
		return nil, err
	}
	var out []uuid.UUID
	for _, p := range ps {
		e := crdt.Edge{Parent: p, Child: n}
		if a, ok := overlay[e]; ok {
			if a {
				out = append(out, p)
			}
			continue
		}
		if st, ok := b.edges[e]; ok {
			// Loaded or changed by the batch: its state is current.
			if st != nil && st.active {
				out = append(out, p)
			}
			continue
		}
		if b.linkFlags[e] {
			out = append(out, p)
		}
	}
	return out, nil
}

func (b *batch) meta(n uuid.UUID) (*nodeMeta, error) {
	if m, ok := b.nodes[n]; ok {
		return m, nil
	}
	if m, ok := b.cache.nodes[n]; ok {
		b.nodes[n] = &m
		return &m, nil
	}
	m := &nodeMeta{}
	item, err := b.txn.Get(nodeKey(n))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("store: read node: %w", err)
	default:
		if err := item.Value(func(v []byte) (err error) { *m, err = decodeNodeMeta(v); return err }); err != nil {
			return nil, err
		}
	}
	b.nodes[n] = m
	return m, nil
}

func (b *batch) bucket(parent uuid.UUID, child uuid.UUID) (*crdt.Digest, error) {
	id := bucketID{parent: parent, bucket: child[0]}
	if d, ok := b.buckets[id]; ok {
		return d, nil
	}
	if d, ok := b.cache.buckets[id]; ok {
		b.buckets[id] = &d
		return &d, nil
	}
	d := &crdt.Digest{}
	item, err := b.txn.Get(bucketKey(parent, child[0]))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("store: read bucket: %w", err)
	default:
		if err := item.Value(func(v []byte) (err error) { *d, err = decodeDigest(v); return err }); err != nil {
			return nil, err
		}
	}
	b.buckets[id] = d
	return d, nil
}

// resolveTree decides the new active state of the edges into every node
// whose edge registers changed, by the tree rules of placements
// (crdt.ResolveRegion), seeded also by the nodes of the irregular edges
// (crdt.Decision: withdrawn from a cycle, fallen back, rescued, a move
// superseded by a later one, or into a node left with no place) and
// widened to the cycles through them. It returns the edges whose
// active state flips, with the new state; it does not apply them. The
// cost is the registers of those nodes and their ancestors, never the
// whole tree.
func (b *batch) resolveTree() (map[crdt.Edge]bool, error) {
	if len(b.regEdges) == 0 {
		return nil, nil
	}
	irregular, err := b.loadIrregular()
	if err != nil {
		return nil, err
	}
	seeds := make([]uuid.UUID, 0, len(b.regEdges)+len(irregular))
	for e := range b.regEdges {
		seeds = append(seeds, e.Child)
	}
	for _, e := range irregular {
		seeds = append(seeds, e.Child)
	}
	final, err := crdt.ResolveRegion(batchRegion{b}, seeds)
	if err != nil {
		return nil, err
	}
	changes := make(map[crdt.Edge]bool)
	for e, d := range final {
		st, err := b.edge(e, false)
		if err != nil {
			return nil, err
		}
		if st == nil {
			continue
		}
		if st.active != d.Active {
			changes[e] = d.Active
		}
		b.irregular[e] = d.Irregular
	}
	was := make(map[crdt.Edge]bool, len(irregular))
	for _, e := range irregular {
		was[e] = true
	}
	for e, irr := range b.irregular {
		if irr != was[e] {
			b.irregularChanged = true
		}
	}
	return changes, nil
}

// batchRegion is the store's tree as the batch sees it, for
// crdt.ResolveRegion: registers as the batch left them, active states as
// they were committed before it.
type batchRegion struct{ b *batch }

func (r batchRegion) Into(child uuid.UUID) ([]crdt.EdgeRegister, error) {
	ps, err := r.b.allParents(child)
	if err != nil {
		return nil, err
	}
	out := make([]crdt.EdgeRegister, 0, len(ps))
	for _, p := range ps {
		e := crdt.Edge{Parent: p, Child: child}
		st, err := r.b.edge(e, false)
		if err != nil {
			return nil, err
		}
		if st == nil {
			continue
		}
		if reg, ok := st.register(e); ok {
			out = append(out, reg)
		}
	}
	return out, nil
}

func (r batchRegion) ActiveParents(child uuid.UUID) ([]uuid.UUID, error) {
	return r.b.activeParents(child, nil)
}

func compareEdge(a, b crdt.Edge) int {
	if c := bytes.Compare(a.Parent[:], b.Parent[:]); c != 0 {
		return c
	}
	return bytes.Compare(a.Child[:], b.Child[:])
}

// loadIrregular returns the edges whose active state differs from their
// register: the traces of broken cycles. There are few or none.
func (b *batch) loadIrregular() ([]crdt.Edge, error) {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte{pfxIrregular}
	it := b.txn.NewIterator(opts)
	defer it.Close()
	var out []crdt.Edge
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		if len(k) != 33 {
			return nil, fmt.Errorf("%w: irregular key of %d bytes", errCorrupt, len(k))
		}
		var e crdt.Edge
		copy(e.Parent[:], k[1:17])
		copy(e.Child[:], k[17:33])
		out = append(out, e)
	}
	return out, nil
}

// updateDigests applies the batch's digest deltas and the active-state
// changes, keeping sub(n) = own(n) + Σ edge(n→c) + Σ active sub(c) true at
// every step: first the edges that turn off (with the old subtree digests),
// then the point deltas, then the edges that turn on (with the new ones).
func (b *batch) updateDigests(changes map[crdt.Edge]bool) error {
	var offs, ons []crdt.Edge
	for e, a := range changes {
		if a {
			ons = append(ons, e)
		} else {
			offs = append(offs, e)
		}
	}
	slices.SortFunc(offs, compareEdge)
	slices.SortFunc(ons, compareEdge)
	for _, e := range offs {
		st, _ := b.edge(e, false)
		st.active = false
		b.edgeDirty[e] = true
		m, err := b.meta(e.Child)
		if err != nil {
			return err
		}
		if err := b.addBelow(e.Parent, e.Child, crdt.Digest{}.Sub(m.sub)); err != nil {
			return err
		}
	}
	for n, d := range b.ownDelta {
		m, err := b.meta(n)
		if err != nil {
			return err
		}
		m.own = m.own.Add(d)
		if err := b.addSub(n, d); err != nil {
			return err
		}
	}
	for e, d := range b.edgeDelta {
		st, _ := b.edge(e, false)
		st.digest = st.digest.Add(d)
		if err := b.addBelow(e.Parent, e.Child, d); err != nil {
			return err
		}
	}
	for _, e := range ons {
		st, _ := b.edge(e, false)
		st.active = true
		b.edgeDirty[e] = true
		m, err := b.meta(e.Child)
		if err != nil {
			return err
		}
		if err := b.addBelow(e.Parent, e.Child, m.sub); err != nil {
			return err
		}
	}
	return nil
}

// addBelow adds d to parent's subtree digest on behalf of child: to the
// child's bucket of parent, then to parent's sub and upwards.
func (b *batch) addBelow(parent, child uuid.UUID, d crdt.Digest) error {
	bd, err := b.bucket(parent, child)
	if err != nil {
		return err
	}
	*bd = bd.Add(d)
	return b.addSub(parent, d)
}

// addSub adds d to sub(n) and, through every active parent, to every
// ancestor's: once per path, as the digest definition counts them.
func (b *batch) addSub(n uuid.UUID, d crdt.Digest) error {
	m, err := b.meta(n)
	if err != nil {
		return err
	}
	m.sub = m.sub.Add(d)
	b.nodeDirty[n] = true
	ps, err := b.activeParents(n, nil)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if err := b.addBelow(p, n, d); err != nil {
			return err
		}
	}
	return nil
}

// flush writes every changed record into the transaction.
func (b *batch) flush() error {
	set := func(k, v []byte) error {
		if err := b.txn.Set(k, v); err != nil {
			return b.txnErr(err)
		}
		return nil
	}
	del := func(k []byte) error {
		if err := b.txn.Delete(k); err != nil {
			return b.txnErr(err)
		}
		return nil
	}
	for _, r := range b.regs {
		if r.seq == 0 {
			continue
		}
		if r.oldSeq != 0 {
			if err := del(b.seqKey(r.oldSeq, r.key)); err != nil {
				return err
			}
		}
		v := appendRegister(b.alloc(regHeader + len(r.cur.Text))[:0], r.cur, r.seq)
		if err := set(r.key, v); err != nil {
			return err
		}
		if err := set(b.seqKey(r.seq, r.key), b.source); err != nil {
			return err
		}
	}
	for n := range b.nodeDirty {
		m := b.nodes[n]
		var err error
		if m.own.IsZero() && m.sub.IsZero() {
			err = del(nodeKey(n))
		} else {
			err = set(nodeKey(n), m.encode())
		}
		if err != nil {
			return err
		}
	}
	for e := range b.edgeDirty {
		st := b.edges[e]
		if err := set(edgeKey(pfxChild, e.Parent, e.Child), st.encode()); err != nil {
			return err
		}
		flag := []byte{0}
		if st.active {
			flag[0] = 1
		}
		if err := set(edgeKey(pfxParent, e.Child, e.Parent), flag); err != nil {
			return err
		}
	}
	for id, d := range b.buckets {
		var err error
		if d.IsZero() {
			err = del(bucketKey(id.parent, id.bucket))
		} else {
			v := d.Bytes()
			err = set(bucketKey(id.parent, id.bucket), v[:])
		}
		if err != nil {
			return err
		}
	}
	for e, irregular := range b.irregular {
		var err error
		if irregular {
			err = set(edgeKey(pfxIrregular, e.Parent, e.Child), nil)
		} else {
			err = del(edgeKey(pfxIrregular, e.Parent, e.Child))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// seqKey returns the change-feed key of the register at point key k under
// change number seq, in the arena.
func (b *batch) seqKey(seq uint64, k []byte) []byte {
	sk := b.alloc(9 + len(k) - 1)
	sk[0] = pfxSeq
	binary.BigEndian.PutUint64(sk[1:], seq)
	copy(sk[9:], k[1:])
	return sk
}

// remember records, after a successful commit, what the batch read or
// wrote of the tree (parent links, node digests, bucket digests) in the
// store's write cache, as committed.
func (b *batch) remember() {
	c := b.cache
	for n, ps := range b.parents {
		links := make([]parentLink, len(ps))
		for i, p := range ps {
			e := crdt.Edge{Parent: p, Child: n}
			links[i].parent = p
			if st, ok := b.edges[e]; ok && st != nil {
				links[i].active = st.active
			} else {
				links[i].active = b.linkFlags[e]
			}
		}
		c.makeRoom()
		c.links[n] = links
	}
	// An edge can change without its child's links being walked: forget
	// those children rather than keep a stale flag.
	for e := range b.edgeDirty {
		if _, ok := b.parents[e.Child]; !ok {
			delete(c.links, e.Child)
		}
	}
	for n, m := range b.nodes {
		c.makeRoom()
		c.nodes[n] = *m
	}
	for k, r := range b.regs {
		if r.cur == nil || len(r.cur.Text) > maxCachedText {
			// Too long to remember: forget what the cache holds of the
			// register (an earlier winner with a short text), or the next
			// batch would take that stale winner for the committed one.
			delete(c.regs, k)
			continue
		}
		seq, d := r.seq, r.digest
		if seq == 0 { // unchanged: the committed winner
			if !r.hasDig {
				r.oldDig, r.hasDig = crdt.PointDigest(r.old), true
			}
			seq, d = r.oldSeq, r.oldDig
		}
		c.makeRoomReg()
		p := r.cur
		c.regs[k] = cachedReg{time: p.Time, origin: p.Origin, value: p.Value, text: p.Text,
			tombstone: p.Tombstone, seq: seq, digest: d}
	}
	for id, d := range b.buckets {
		c.makeRoom()
		c.buckets[id] = *d
	}
}

// writeCache is the writer's memory, between batches, of the small tree
// records every write walks: each node's parent links (the 'u' index: every
// parent with an edge state, and whether the edge is active), node digests
// ('n') and bucket digests ('b'). A write updates the digests on every
// path from its node to the root, so consecutive batches read the same few
// thousand records again and again; a map lookup costs far less than a
// Badger read (up to one skiplist search per memtable and a bloom filter
// per table) or an index scan. Only the writer uses it, under Store.mu, and
// it is updated only after a commit succeeds, so it never holds what was
// not committed (a failed batch leaves it as it was). It holds at most max
// records, about 100 bytes each; when full it forgets arbitrary ones,
// which are read again from Badger when needed.
type writeCache struct {
	max     int
	links   map[uuid.UUID][]parentLink
	nodes   map[uuid.UUID]nodeMeta
	buckets map[bucketID]crdt.Digest

	// Registers: the winners most recently read or written (point key →
	// winner), so a sensor that reports again does not cost a Badger
	// lookup. At most maxRegs, each with at most maxCachedText of text
	// (about 160 bytes an entry with the key and the map's share).
	maxRegs int
	regs    map[string]cachedReg
}

// cachedReg is a register's winner without its identity (the key holds
// it), its change number and its digest.
type cachedReg struct {
	time      crdt.Timestamp
	origin    uuid.UUID
	value     float64
	text      string
	tombstone bool
	seq       uint64
	digest    crdt.Digest
}

// maxCachedText is the longest text of a register the write cache keeps;
// a batch that leaves a longer winner makes the cache forget the register.
const maxCachedText = 256

type parentLink struct {
	parent uuid.UUID
	active bool
}

func newWriteCache(max, maxRegs int) *writeCache {
	return &writeCache{
		max:     max,
		links:   make(map[uuid.UUID][]parentLink),
		nodes:   make(map[uuid.UUID]nodeMeta),
		buckets: make(map[bucketID]crdt.Digest),
		maxRegs: maxRegs,
		regs:    make(map[string]cachedReg),
	}
}

func (c *writeCache) len() int { return len(c.links) + len(c.nodes) + len(c.buckets) }

// makeRoom makes room for one more record: when the cache is full it
// forgets an eighth of each kind, in map order (arbitrary), so eviction is
// amortized O(1) per insert.
func (c *writeCache) makeRoom() {
	if c.len() < c.max {
		return
	}
	evict(c.links)
	evict(c.nodes)
	evict(c.buckets)
}

// makeRoomReg makes room for one more register, like makeRoom.
func (c *writeCache) makeRoomReg() {
	if len(c.regs) >= c.maxRegs {
		evict(c.regs)
	}
}

func evict[K comparable, V any](m map[K]V) {
	drop := len(m)/8 + 1
	for k := range m {
		delete(m, k)
		if drop--; drop == 0 {
			return
		}
	}
}
