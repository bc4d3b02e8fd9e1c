package store

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// pfxLink keys hold link records: what replication remembers of each link
// it knows (when the remote was last seen, whether it was connected), so
// an operator sees which edges are offline and since when, also after a
// restart. Like marks they are local: not points, not replicated, not
// exported.
const pfxLink = 'l'

// Limits of a link record.
const (
	MaxLinkName   = 200  // longest link record name
	MaxLinkRecord = 1024 // largest link record value
)

func linkKey(name string, data []byte) ([]byte, error) {
	if name == "" || len(name) > MaxLinkName {
		return nil, fmt.Errorf("%w: link record name of %d bytes", ErrInvalid, len(name))
	}
	if len(data) > MaxLinkRecord {
		return nil, fmt.Errorf("%w: link record %q of %d bytes, limit %d", ErrInvalid, name, len(data), MaxLinkRecord)
	}
	return append([]byte{pfxLink}, name...), nil
}

// SetLinkRecords writes link records, by name, atomically and durably,
// each replacing the one its name had: the store holds one record per
// name, so it holds as many as the caller has link identities. The values
// are the caller's (at most MaxLinkRecord bytes each); the store keeps
// copies. It refuses the whole batch with ErrInvalid for an empty or long
// name or a large value, and with ErrDiskFull below the free-space floor,
// like SetMarks.
func (s *Store) SetLinkRecords(recs map[string][]byte) error {
	keys := make(map[string][]byte, len(recs))
	for name, data := range recs {
		k, err := linkKey(name, data)
		if err != nil {
			return err
		}
		keys[name] = k
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := s.checkSpace(); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		for name, data := range recs {
			if err := txn.Set(keys[name], append([]byte(nil), data...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set link records: %w", err)
	}
	return nil
}

// LinkRecords calls fn with every link record, by name. The value is
// valid only during the call (copy it to keep it). An error from fn stops
// the scan and is returned.
func (s *Store) LinkRecords(fn func(name string, data []byte) error) error {
	err := s.view(func(txn *badger.Txn) error {
		return eachKey(txn, pfxLink, func(k, v []byte) error { return fn(string(k[1:]), v) })
	})
	if err != nil {
		return fmt.Errorf("store: link records: %w", err)
	}
	return nil
}
