package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// pfxMark keys hold marks: small named counters that replication keeps
// beside the data, such as how far a link's remote side has acknowledged
// this store's change feed.
const pfxMark = 'k'

// MaxMarkName is the longest mark name accepted.
const MaxMarkName = 200

func markKey(name string) ([]byte, error) {
	if name == "" || len(name) > MaxMarkName {
		return nil, fmt.Errorf("%w: mark name of %d bytes", ErrInvalid, len(name))
	}
	return append([]byte{pfxMark}, name...), nil
}

// Mark returns the value of the named mark, or 0 when it was never set.
func (s *Store) Mark(name string) (uint64, error) {
	k, err := markKey(name)
	if err != nil {
		return 0, err
	}
	var v uint64
	err = s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b) != 8 {
				return fmt.Errorf("%w: mark %q of %d bytes", errCorrupt, name, len(b))
			}
			v = binary.BigEndian.Uint64(b)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store: mark %q: %w", name, err)
	}
	return v, nil
}

// SetMarks writes marks atomically and durably (with SyncWrites). It does
// not take the writer lock's place in the change feed: marks are not
// points, carry no change number and are not replicated. It refuses with
// ErrDiskFull below the free-space floor, like Apply.
func (s *Store) SetMarks(marks map[string]uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := s.checkSpace(); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		for name, v := range marks {
			k, err := markKey(name)
			if err != nil {
				return err
			}
			if err := txn.Set(k, binary.BigEndian.AppendUint64(nil, v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set marks: %w", err)
	}
	return nil
}
