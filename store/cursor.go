package store

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// RegisterKey returns an opaque cursor naming register r, for ScanFrom and
// for a client to hand back (an export page's Next).
func RegisterKey(r crdt.Register) []byte {
	if r.Key == "" {
		r.Key = crdt.DefaultKey
	}
	return appendRegKey(nil, r.Node, r.Parent, r.Type, r.Key)
}

// ParseRegisterKey parses a cursor made by RegisterKey. It comes from a
// client, so it is checked: ErrInvalid wraps any defect.
func ParseRegisterKey(b []byte) (crdt.Register, error) {
	if len(b) > 32+crdt.MaxTypeLen+1+crdt.MaxKeyLen {
		return crdt.Register{}, fmt.Errorf("%w: cursor of %d bytes", ErrInvalid, len(b))
	}
	var p crdt.Point
	if err := parseRegKey(b, &p); err != nil {
		return crdt.Register{}, fmt.Errorf("%w: cursor: %v", ErrInvalid, err)
	}
	return p.Register(), nil
}

// ScanFrom calls fn for every register after the register after (from the
// first when nil), in export order (node, parent, type, key), tombstones
// included. It streams one consistent snapshot; fn must not retain p;
// returning ErrStop ends the scan without error.
func (s *Store) ScanFrom(after *crdt.Register, fn func(p *crdt.Point) error) error {
	return s.view(func(txn *badger.Txn) error {
		return scanPoints(txn, []byte{pfxPoint}, keyAfter(after), fn)
	})
}

// keyAfter returns the first point key after register r's (nil for nil).
func keyAfter(r *crdt.Register) []byte {
	if r == nil {
		return nil
	}
	k := append([]byte{pfxPoint}, RegisterKey(*r)...)
	return append(k, 0)
}

// ScanNodeFrom is ScanNode starting after register after (from the node's
// first point when nil): a node with millions of points can be read in
// bounded steps, resuming where the previous step stopped.
func (s *Store) ScanNodeFrom(n uuid.UUID, after *crdt.Register, fn func(p *crdt.Point) error) error {
	prefix := append([]byte{pfxPoint}, n[:]...)
	return s.view(func(txn *badger.Txn) error {
		return scanPoints(txn, prefix, keyAfter(after), fn)
	})
}
