package store

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// Reads for routing changes to link scopes without walking the store for
// each change: the active tree in one scan, the edges whose active state
// differs from their register, changes by number, and a node's registers
// with the numbers of the changes that wrote them.

// ActiveEdges calls fn for every active edge of the tree (child below
// parent), in child order: the live tree as the store resolved it.
func (s *Store) ActiveEdges(fn func(child, parent uuid.UUID) error) error {
	return s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{pfxParent}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != 33 {
				return fmt.Errorf("%w: parent key of %d bytes", errCorrupt, len(k))
			}
			active, err := parentFlag(item)
			if err != nil {
				return err
			}
			if !active {
				continue
			}
			var child, parent uuid.UUID
			copy(child[:], k[1:17])
			copy(parent[:], k[17:33])
			if err := fn(child, parent); err != nil {
				return err
			}
		}
		return nil
	})
}

// parentFlag decodes a parent-index value: whether the edge is active.
func parentFlag(item *badger.Item) (active bool, err error) {
	err = item.Value(func(v []byte) error {
		if len(v) != 1 {
			return fmt.Errorf("%w: parent flag of %d bytes", errCorrupt, len(v))
		}
		active = v[0] == 1
		return nil
	})
	return active, err
}

// IrregularEdges returns the edges whose active state the register does
// not explain by itself (crdt.Decision.Irregular: a live edge turned off
// to break a cycle or superseded by a later move of its placement, a
// tombstone turned on by a fallback, an edge into a node left with no
// place): few or none. An edge
// whose active state flips without its register changing enters or leaves
// this set, so a reader that follows the feed and this set sees every
// change of the active tree.
func (s *Store) IrregularEdges() ([]crdt.Edge, error) {
	var out []crdt.Edge
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{pfxIrregular}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 33 {
				return fmt.Errorf("%w: irregular key of %d bytes", errCorrupt, len(k))
			}
			var e crdt.Edge
			copy(e.Parent[:], k[1:17])
			copy(e.Child[:], k[17:33])
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// IrregularGen counts the commits that changed the set IrregularEdges
// returns, since the store opened: a reader that saw a count need not read
// the set again until it changes. Apply raises it before it returns; a
// reader of the feed may see the commit's changes a moment before.
func (s *Store) IrregularGen() uint64 { return s.irregularGen.Load() }

// FeedAt calls fn for the changes numbered seqs (ascending), as Feed
// reports them, in one consistent snapshot. A number the feed no longer
// holds (its register changed again since: the later change has a number
// of its own) is skipped. fn must not retain c; ErrStop ends the read.
func (s *Store) FeedAt(seqs []uint64, fn func(c *Change) error) error {
	if len(seqs) == 0 {
		return nil
	}
	return s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{pfxSeq}
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		start := []byte{pfxSeq, 0, 0, 0, 0, 0, 0, 0, 0}
		var c Change
		for _, seq := range seqs {
			putBE64(start[1:], seq)
			it.Seek(start)
			if !it.Valid() {
				return nil
			}
			if err := changeIdentity(it.Item(), &c); err != nil {
				return err
			}
			if c.Seq != seq {
				continue
			}
			if err := changeRegister(txn, &c); err != nil {
				return err
			}
			if err := fn(&c); err != nil {
				return err
			}
		}
		return nil
	})
}

// ScanNodeSince calls fn for the registers of node n (in ScanNode order,
// after register after when not nil) whose winner arrived after local
// change number since, as the feed reports them: with the change's number
// and the link it came from. A reader that holds a node as of change
// since gets what it lacks, and can leave out what came from the remote
// it sends to. fn must not retain c; ErrStop ends the scan.
func (s *Store) ScanNodeSince(n uuid.UUID, after *crdt.Register, since uint64, fn func(c *Change) error) error {
	prefix := append([]byte{pfxPoint}, n[:]...)
	return s.view(func(txn *badger.Txn) error {
		var c Change
		return scanRegisters(txn, prefix, keyAfter(after), func(p *crdt.Point, seq uint64) error {
			if seq <= since {
				return nil
			}
			c = Change{Seq: seq, Point: *p}
			item, err := txn.Get(seqKey(seq, p))
			if err != nil {
				return fmt.Errorf("%w: register %v/%s has no change %d: %v", errCorrupt, p.Node, p.Type, seq, err)
			}
			if err := item.Value(func(v []byte) error {
				if len(v) == 16 {
					copy(c.Source[:], v)
				}
				return nil
			}); err != nil {
				return err
			}
			return fn(&c)
		})
	})
}

// EdgeSeq returns the number of the change that wrote the edge register
// child→parent (its TypeEdge point), or false when there is none.
func (s *Store) EdgeSeq(child, parent uuid.UUID) (uint64, bool, error) {
	prefix := append([]byte{pfxPoint}, child[:]...)
	prefix = append(prefix, parent[:]...)
	prefix = append(prefix, crdt.TypeEdge...)
	prefix = append(prefix, 0)
	var seq uint64
	found := false
	err := s.view(func(txn *badger.Txn) error {
		return scanRegisters(txn, prefix, nil, func(_ *crdt.Point, n uint64) error {
			seq, found = max(seq, n), true
			return nil
		})
	})
	return seq, found, err
}
