package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// ChildDigest is one edge below a node with the digests a repair compares.
type ChildDigest struct {
	ID     uuid.UUID
	Active bool        // part of the live tree
	Edge   crdt.Digest // the sum of the edge's points
	Own    crdt.Digest // the child's own points' digest (zero when unknown)
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
		metas := newMetaReader(txn)
		defer metas.close()
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
			m, err := metas.get(c.ID)
			if err != nil {
				return err
			}
			c.Own, c.Sub = m.own, m.sub
			if err := fn(c); err != nil {
				return err
			}
		}
		return nil
	})
}

// metaReader reads node records in ascending ID order with one iterator:
// it steps to a nearby record and seeks to a distant one, which costs far
// less than a lookup each when the IDs are dense (a node's children are
// most of the nodes under a big parent).
type metaReader struct {
	it      *badger.Iterator
	key     []byte
	started bool
}

func newMetaReader(txn *badger.Txn) *metaReader {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte{pfxNode}
	opts.PrefetchValues = false
	return &metaReader{it: txn.NewIterator(opts), key: make([]byte, 17)}
}

func (m *metaReader) close() { m.it.Close() }

// get returns node id's record, zero when it has none. Calls must come in
// ascending ID order.
func (m *metaReader) get(id uuid.UUID) (nodeMeta, error) {
	m.key[0] = pfxNode
	copy(m.key[1:], id[:])
	if !m.started {
		m.it.Seek(m.key)
		m.started = true
	}
	for steps := 0; m.it.Valid() && bytes.Compare(m.it.Item().Key(), m.key) < 0; steps++ {
		if steps == 8 {
			m.it.Seek(m.key)
			break
		}
		m.it.Next()
	}
	if !m.it.Valid() || !bytes.Equal(m.it.Item().Key(), m.key) {
		return nodeMeta{}, nil
	}
	var nm nodeMeta
	err := m.it.Item().Value(func(v []byte) (err error) { nm, err = decodeNodeMeta(v); return err })
	return nm, err
}

// ScanNodesPoints calls fn for the node points (not edge points) of each
// node of nodes in turn, with the node's index, sorted by type and key
// within a node. It reads one consistent snapshot with one iterator, so
// scanning many small nodes costs far less than a ScanNode each.
// Returning ErrSkip from fn moves on to the next node; ErrStop ends the
// scan without error.
func (s *Store) ScanNodesPoints(nodes []uuid.UUID, fn func(i int, p *crdt.Point) error) error {
	return s.scanNodes(nodes, func(i int, item *badger.Item) error {
		var p crdt.Point
		if err := parseRegKey(item.Key()[1:], &p); err != nil {
			return err
		}
		if err := item.Value(func(v []byte) error { _, err := decodeRegister(v, &p); return err }); err != nil {
			return err
		}
		return fn(i, &p)
	})
}

// Version is what ScanNodesVersions reports of a register: enough to tell
// versions apart without decoding values.
type Version struct {
	Node    uuid.UUID
	TypeKey []byte // type 0x00 key; valid only during the callback
	Time    crdt.Timestamp
	Origin  uuid.UUID
}

// ScanNodesVersions is ScanNodesPoints reporting versions, not points: it
// allocates nothing per register.
func (s *Store) ScanNodesVersions(nodes []uuid.UUID, fn func(i int, v *Version) error) error {
	var v Version
	return s.scanNodes(nodes, func(i int, item *badger.Item) error {
		v.Node = nodes[i]
		v.TypeKey = item.Key()[33:]
		if err := item.Value(func(b []byte) error {
			if len(b) < regHeader {
				return fmt.Errorf("%w: register value of %d bytes", errCorrupt, len(b))
			}
			v.Time = crdt.Timestamp(binary.BigEndian.Uint64(b[1:]))
			copy(v.Origin[:], b[9:25])
			return nil
		}); err != nil {
			return err
		}
		return fn(i, &v)
	})
}

// scanNodes calls fn for the register item of each node point of each
// node of nodes in turn, in one snapshot with one iterator; ErrSkip from
// fn moves on to the next node.
func (s *Store) scanNodes(nodes []uuid.UUID, fn func(i int, item *badger.Item) error) error {
	return s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false // values are read in place
		it := txn.NewIterator(opts)
		defer it.Close()
		prefix := make([]byte, 0, 33)
	nodes:
		for i, n := range nodes {
			prefix = append(append(append(prefix[:0], pfxPoint), n[:]...), uuid.Nil[:]...)
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				switch err := fn(i, it.Item()); {
				case errors.Is(err, ErrSkip):
					continue nodes
				case err != nil:
					return err
				}
			}
		}
		return nil
	})
}
