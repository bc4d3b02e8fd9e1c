package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// ErrMismatch is wrapped by the error Verify returns when a maintained
// index or digest differs from its recomputation.
var ErrMismatch = errors.New("store: verify mismatch")

// Verify recomputes every index and digest from the registers alone and
// compares them with what the store maintains: the HLC index, the edge
// states and their active flags (by the tree rules), the node digests, the
// subtree digests and the child buckets, and the registers' histories
// (each window's count and digest from its samples, the nodes' window
// sums from the windows). It returns nil when everything
// matches, or an error wrapping ErrMismatch that lists up to 20 mismatches.
//
// Verify reads one snapshot and holds the whole tree's summary in memory
// (about 100 bytes per node and edge, not per point); it is for tests and
// for an operator's check, not for the write path.
func (s *Store) Verify() error {
	_, err := s.VerifyCount(context.Background())
	return err
}

// VerifySummary counts what VerifyCount read.
type VerifySummary struct {
	Registers int // registers (winning points), tombstones included
	Nodes     int // nodes with points or edges
	Edges     int // edges with points
	Problems  int // mismatches found; the error lists the first 20
}

// VerifyCount is Verify that also counts what it read, and stops with
// ctx's error when ctx is done (a server shutting down while an operator's
// check runs). The summary is filled as far as the check went when it
// returns an error.
func (s *Store) VerifyCount(ctx context.Context) (VerifySummary, error) {
	var sum VerifySummary
	var problems []string
	report := func(format string, args ...any) {
		sum.Problems++
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var maxSeq uint64
	err := s.view(func(txn *badger.Txn) error {
		own := make(map[uuid.UUID]crdt.Digest)
		edges := make(map[crdt.Edge]*edgeState)
		feed := make(map[string]bool)
		maxSeq = 0

		// Registers: digests, edge registers, expected change-feed keys.
		sum = VerifySummary{}
		err := scanRegisters(txn, []byte{pfxPoint}, nil, func(p *crdt.Point, seq uint64) error {
			if sum.Registers%4096 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			sum.Registers++
			if err := p.Validate(); err != nil {
				report("register %v/%v/%s/%s holds an invalid point: %v", p.Node, p.Parent, p.Type, p.Key, err)
			}
			d := crdt.PointDigest(p)
			if seq == 0 {
				report("register %v/%v/%s/%s has no change number", p.Node, p.Parent, p.Type, p.Key)
			}
			maxSeq = max(maxSeq, seq)
			feed[string(seqKey(seq, p))] = true
			if p.IsEdge() {
				e := crdt.Edge{Parent: p.Parent, Child: p.Node}
				st := edges[e]
				if st == nil {
					st = &edgeState{}
					edges[e] = st
				}
				st.digest = st.digest.Add(d)
				if p.Type == crdt.TypeEdge {
					r := crdt.EdgeRegisterOf(p)
					st.hasReg, st.tombstone, st.moved, st.place, st.time, st.origin = true, r.Tombstone, r.Moved, r.Place, r.Time, r.Origin
				}
			} else {
				own[p.Node] = own[p.Node].Add(d)
			}
			return nil
		})
		if err != nil {
			return err
		}

		// The change feed holds exactly one key per register.
		if err := eachKeyCtx(ctx, txn, pfxSeq, func(k, _ []byte) error {
			if !feed[string(k)] {
				report("change feed key %x names no current winner", k)
			}
			delete(feed, string(k))
			return nil
		}); err != nil {
			return err
		}
		for k := range feed {
			report("change feed lacks key %x", k)
		}

		// Expected active edges: live, except in the regions above cycles.
		expected := expectedTree(edges)

		// Stored edge states and their mirrors.
		stored := make(map[crdt.Edge]edgeState)
		if err := eachKeyCtx(ctx, txn, pfxChild, func(k, v []byte) error {
			var e crdt.Edge
			copy(e.Parent[:], k[1:17])
			copy(e.Child[:], k[17:33])
			st, err := decodeEdgeState(v)
			if err != nil {
				return err
			}
			stored[e] = st
			return nil
		}); err != nil {
			return err
		}
		for e, want := range edges {
			got, ok := stored[e]
			if !ok {
				report("edge %v→%v has points but no edge record", e.Parent, e.Child)
				continue
			}
			w := *want
			w.active = expected[e].Active
			if got != w {
				report("edge %v→%v: stored %+v, recomputed %+v", e.Parent, e.Child, got, w)
			}
		}
		for e := range stored {
			if edges[e] == nil {
				report("edge record %v→%v has no points", e.Parent, e.Child)
			}
		}
		if err := eachKeyCtx(ctx, txn, pfxParent, func(k, v []byte) error {
			var e crdt.Edge
			copy(e.Child[:], k[1:17])
			copy(e.Parent[:], k[17:33])
			st, ok := stored[e]
			if !ok {
				report("parent index %v→%v has no edge record", e.Parent, e.Child)
				return nil
			}
			if len(v) != 1 || (v[0] == 1) != st.active {
				report("parent index %v→%v disagrees with the edge record", e.Parent, e.Child)
			}
			delete(stored, e)
			return nil
		}); err != nil {
			return err
		}
		for e := range stored {
			report("edge %v→%v missing from the parent index", e.Parent, e.Child)
		}
		irregular := make(map[crdt.Edge]bool)
		if err := eachKeyCtx(ctx, txn, pfxIrregular, func(k, _ []byte) error {
			var e crdt.Edge
			copy(e.Parent[:], k[1:17])
			copy(e.Child[:], k[17:33])
			irregular[e] = true
			return nil
		}); err != nil {
			return err
		}
		for e := range edges {
			if want := expected[e].Irregular; irregular[e] != want {
				report("edge %v→%v: irregular mark %v, want %v", e.Parent, e.Child, irregular[e], want)
			}
		}

		// Subtree digests and buckets, bottom-up over the expected tree.
		kids := make(map[uuid.UUID][]crdt.Edge)
		nodes := make(map[uuid.UUID]bool)
		for n := range own {
			nodes[n] = true
		}
		for e := range edges {
			kids[e.Parent] = append(kids[e.Parent], e)
			nodes[e.Parent], nodes[e.Child] = true, true
		}
		sub := make(map[uuid.UUID]crdt.Digest)
		buckets := make(map[bucketID]crdt.Digest)
		var compute func(n uuid.UUID) crdt.Digest
		compute = func(n uuid.UUID) crdt.Digest {
			if d, ok := sub[n]; ok {
				return d
			}
			d := own[n]
			for _, e := range kids[n] {
				c := edges[e].digest
				if expected[e].Active {
					c = c.Add(compute(e.Child))
				}
				id := bucketID{parent: n, bucket: e.Child[0]}
				buckets[id] = buckets[id].Add(c)
				d = d.Add(c)
			}
			sub[n] = d
			return d
		}
		for n := range nodes {
			compute(n)
		}
		sum.Nodes, sum.Edges = len(nodes), len(edges)
		seen := make(map[uuid.UUID]bool)
		if err := eachKeyCtx(ctx, txn, pfxNode, func(k, v []byte) error {
			var n uuid.UUID
			copy(n[:], k[1:17])
			m, err := decodeNodeMeta(v)
			if err != nil {
				return err
			}
			seen[n] = true
			if m.own != own[n] || m.sub != sub[n] {
				report("node %v: stored own %v sub %v, recomputed own %v sub %v", n, m.own, m.sub, own[n], sub[n])
			}
			return nil
		}); err != nil {
			return err
		}
		for n := range nodes {
			if !seen[n] && (!own[n].IsZero() || !sub[n].IsZero()) {
				report("node %v: no digest record, recomputed sub %v", n, sub[n])
			}
		}
		if err := eachKeyCtx(ctx, txn, pfxBucket, func(k, v []byte) error {
			var id bucketID
			copy(id.parent[:], k[1:17])
			id.bucket = k[17]
			d, err := decodeDigest(v)
			if err != nil {
				return err
			}
			if want := buckets[id]; d != want {
				report("bucket %v/%02x: stored %v, recomputed %v", id.parent, id.bucket, d, want)
			}
			delete(buckets, id)
			return nil
		}); err != nil {
			return err
		}
		for id, d := range buckets {
			if !d.IsZero() {
				report("bucket %v/%02x missing, recomputed %v", id.parent, id.bucket, d)
			}
		}
		return verifyHistory(ctx, txn, report)
	})
	if err != nil {
		return sum, fmt.Errorf("store: verify: %w", err)
	}
	// Read after the snapshot, so it is at least every number in it.
	if last := s.LastSeq(); maxSeq > last {
		report("a register has change number %d, last assigned %d", maxSeq, last)
	}
	if sum.Problems > 0 {
		return sum, fmt.Errorf("%w: %d problem(s)%s:\n  %s", ErrMismatch, sum.Problems, firstOf(sum.Problems, len(problems)), joinLines(problems))
	}
	return sum, nil
}

func firstOf(total, listed int) string {
	if total > listed {
		return fmt.Sprintf(", the first %d", listed)
	}
	return ""
}

// expectedTree applies the tree rules of placements to a full set of
// edge states: crdt.DecidePlacements over every edge register, what
// regional resolution must match (an edge with no decision is inactive
// and regular).
func expectedTree(edges map[crdt.Edge]*edgeState) map[crdt.Edge]crdt.Decision {
	regs := make([]crdt.EdgeRegister, 0, len(edges))
	for e, st := range edges {
		if reg, ok := st.register(e); ok {
			regs = append(regs, reg)
		}
	}
	return crdt.DecidePlacements(regs)
}

func eachKey(txn *badger.Txn, pfx byte, fn func(k, v []byte) error) error {
	return eachKeyCtx(context.Background(), txn, pfx, fn)
}

// eachKeyCtx calls fn with each key of prefix pfx and its value, in order,
// and stops with ctx's error when ctx is done.
func eachKeyCtx(ctx context.Context, txn *badger.Txn, pfx byte, fn func(k, v []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte{pfx}
	it := txn.NewIterator(opts)
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		k := it.Item().KeyCopy(nil)
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func joinLines(ss []string) string {
	var b bytes.Buffer
	for i, s := range ss {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// VerifyTables checks the checksums of every table the store holds now,
// block by block (Badger's DB.VerifyChecksum, which holds a reference on
// each table while it reads it: safe while the store serves). A damaged
// table is an error wrapping ErrCorrupt that names it.
func (s *Store) VerifyTables() (err error) {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	defer func() {
		if r := recover(); r != nil {
			err = s.inDir(readPanic(r))
		}
	}()
	if err := s.db.VerifyChecksum(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.cfg.Dir, err)
	}
	return nil
}
