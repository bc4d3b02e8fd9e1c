package store

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"siot/crdt"
)

// ChildDigest is one edge below a node with the digests a repair compares.
type ChildDigest struct {
	ID     uuid.UUID
	Active bool        // part of the live tree
	Edge   crdt.Digest // the sum of the edge's points
	Sub    crdt.Digest // the child's subtree digest (zero when unknown)
}

// ChildDigests calls fn for the children of parent after child after
// (uuid.Nil: from the first), in child ID order: all of them when bucket
// is negative, else those whose ID starts with byte bucket (the children
// Buckets sums). It reads one consistent snapshot; returning ErrStop ends
// it without error.
func (s *Store) ChildDigests(parent uuid.UUID, bucket int, after uuid.UUID, fn func(ChildDigest) error) error {
	prefix := append([]byte{pfxChild}, parent[:]...)
	if bucket >= 0 {
		if bucket > 255 {
			return fmt.Errorf("%w: bucket %d", ErrInvalid, bucket)
		}
		prefix = append(prefix, byte(bucket))
	}
	start := prefix
	if after != uuid.Nil {
		start = append(edgeKey(pfxChild, parent, after), 0)
	}
	return s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			var c ChildDigest
			copy(c.ID[:], it.Item().Key()[17:33])
			if err := it.Item().Value(func(v []byte) error {
				st, err := decodeEdgeState(v)
				c.Active, c.Edge = st.active, st.digest
				return err
			}); err != nil {
				return err
			}
			item, err := txn.Get(nodeKey(c.ID))
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
			case err != nil:
				return err
			default:
				if err := item.Value(func(v []byte) error {
					m, err := decodeNodeMeta(v)
					c.Sub = m.sub
					return err
				}); err != nil {
					return err
				}
			}
			if err := fn(c); err != nil {
				return err
			}
		}
		return nil
	})
}
