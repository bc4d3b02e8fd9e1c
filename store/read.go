package store

import (
	"bytes"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// ErrStop can be returned by a scan callback to end the scan early; the
// scan then returns nil.
var ErrStop = errors.New("store: stop scan")

// ErrSkip can be returned by a ScanNodesPoints callback to skip the rest
// of the current node.
var ErrSkip = errors.New("store: skip node")

// Each read runs in its own read-only transaction: a consistent snapshot,
// concurrent with writes. Callbacks receive points that the caller owns;
// they must not call Apply (the snapshot would hold old versions alive for
// the whole scan, which is allowed but wasteful). A callback error other
// than ErrStop ends the scan and is returned wrapped.

// errReadPanic is wrapped by readPanic's errors, which name no file yet.
var errReadPanic = errors.New("a read failed")

// readPanic is the error for a panic recovered from a read: one raised
// inside Badger, decoding a table it cannot read. Any other panic (one of
// a caller's callbacks, or of this package) is a bug, not damage, and
// readPanic raises it again rather than report the data directory
// corrupt. It must be called by the deferred function that recovered r,
// while the frames that panicked are still on the stack.
func readPanic(r any) error {
	if !fromBadger(debug.Stack()) {
		panic(r)
	}
	return fmt.Errorf("%w: %w (%s)", ErrCorrupt, errReadPanic, panicText(r))
}

// fromBadger reports whether a goroutine's stack, taken in a deferred
// function while it panics, panicked in Badger's code: the first function
// below the panic, past the runtime's own (a bounds check), is Badger's.
func fromBadger(stack []byte) bool {
	_, below, ok := bytes.Cut(stack, []byte("\npanic("))
	if !ok {
		return false
	}
	for _, line := range bytes.Split(below, []byte("\n"))[1:] {
		if len(line) == 0 || line[0] == '\t' || bytes.HasPrefix(line, []byte("runtime.")) {
			continue // a file:line, or a frame of the runtime
		}
		return bytes.HasPrefix(line, []byte("github.com/dgraph-io/badger/"))
	}
	return false
}

// damageCache keeps what the last search for a damaged table found, so
// that reads failing on one damaged block, however many, cost one search
// (a read of every table) a minute, not one each.
type damageCache struct {
	mu    sync.Mutex // held during a search: callers meanwhile wait for it
	at    time.Time  // when the last search ended; zero: never
	found error
}

// damageReuse is how long a search's result stands.
const damageReuse = time.Minute

// find returns what search finds, or what the last search found when it
// ended less than damageReuse ago.
func (c *damageCache) find(search func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= damageReuse {
		c.found, c.at = search(), time.Now()
	}
	return c.found
}

// inDir completes an error of readPanic: it looks for the damaged table
// (findDamage) and names it, or else names the data directory and says how
// to find the file offline. It returns other errors as they are.
func (s *Store) inDir(err error) error {
	if err == nil || !errors.Is(err, errReadPanic) {
		return err
	}
	if s.cfg.InMemory {
		return fmt.Errorf("store: in memory: %w", err)
	}
	if found := s.damage.find(func() error { return findDamage(s.cfg.Dir, s.cfg.badgerOptions()) }); found != nil {
		return fmt.Errorf("%w; %w", found, err)
	}
	return fmt.Errorf("store: %s: %w: no damaged table found now; stop the server and run siot verify --data %s",
		s.cfg.Dir, err, s.cfg.Dir)
}

// view runs fn in a read-only transaction. A panic while reading
// (Badger's decoders on a table damaged after Open checked it) is returned
// as an error wrapping ErrCorrupt that names the damaged table (inDir).
func (s *Store) view(fn func(txn *badger.Txn) error) (err error) {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	defer func() {
		if r := recover(); r != nil {
			err = s.inDir(readPanic(r))
		}
	}()
	err = s.db.View(fn)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// Get returns the winner of one register, or false when it holds nothing.
func (s *Store) Get(r crdt.Register) (crdt.Point, bool, error) {
	p := crdt.Point{Node: r.Node, Parent: r.Parent, Type: r.Type, Key: r.Key}
	if p.Key == "" {
		p.Key = crdt.DefaultKey
	}
	found := false
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(pointKey(&p))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(func(v []byte) error { _, err := decodeRegister(v, &p); return err })
	})
	if err != nil {
		return crdt.Point{}, false, fmt.Errorf("store: get: %w", err)
	}
	return p, found, nil
}

// scanPoints calls fn for every register whose key starts with prefix,
// beginning at the first key >= start (or prefix when start is nil), in key
// order.
func scanPoints(txn *badger.Txn, prefix, start []byte, fn func(*crdt.Point) error) error {
	return scanRegisters(txn, prefix, start, func(p *crdt.Point, _ uint64) error { return fn(p) })
}

// scanRegisters is scanPoints that also reports each winner's change number.
func scanRegisters(txn *badger.Txn, prefix, start []byte, fn func(*crdt.Point, uint64) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchSize = 64
	it := txn.NewIterator(opts)
	defer it.Close()
	if start == nil {
		start = prefix
	}
	for it.Seek(start); it.Valid(); it.Next() {
		item := it.Item()
		var p crdt.Point
		if err := parseRegKey(item.Key()[1:], &p); err != nil {
			return err
		}
		var seq uint64
		if err := item.Value(func(v []byte) (err error) { seq, err = decodeRegister(v, &p); return err }); err != nil {
			return err
		}
		if err := fn(&p, seq); err != nil {
			return err
		}
	}
	return nil
}

// ScanAll calls fn for every register in the store, tombstones included,
// sorted by node, parent, type and key (the order of `siot export`). It
// streams: memory does not grow with the store.
func (s *Store) ScanAll(fn func(*crdt.Point) error) error {
	return s.view(func(txn *badger.Txn) error {
		return scanPoints(txn, []byte{pfxPoint}, nil, fn)
	})
}

// ScanNode calls fn for every point of node n: its node points, then the
// points of the edges above it (where n is the child), sorted by parent,
// type and key.
func (s *Store) ScanNode(n uuid.UUID, fn func(*crdt.Point) error) error {
	prefix := append([]byte{pfxPoint}, n[:]...)
	return s.view(func(txn *badger.Txn) error { return scanPoints(txn, prefix, nil, fn) })
}

// PageNode returns up to limit node points of n (not edge points), sorted by
// type and key, starting after the point (afterType, afterKey); pass empty
// strings for the first page. more reports whether points remain. Use it
// to serve a node with millions of points in bounded replies.
func (s *Store) PageNode(n uuid.UUID, afterType, afterKey string, limit int) (pts []crdt.Point, more bool, err error) {
	if limit <= 0 {
		return nil, false, errors.New("store: PageNode: limit must be positive")
	}
	prefix := make([]byte, 0, 33)
	prefix = append(prefix, pfxPoint)
	prefix = append(prefix, n[:]...)
	prefix = append(prefix, uuid.Nil[:]...)
	var start []byte
	if afterType != "" {
		start = appendRegKey([]byte{pfxPoint}, n, uuid.Nil, afterType, afterKey)
		start = append(start, 0) // just past it
	}
	err = s.view(func(txn *badger.Txn) error {
		return scanPoints(txn, prefix, start, func(p *crdt.Point) error {
			if len(pts) == limit {
				more = true
				return ErrStop
			}
			pts = append(pts, *p)
			return nil
		})
	})
	return pts, more, err
}

// Change is one entry of the change feed.
type Change struct {
	// Seq is the local change number under which the point arrived.
	Seq uint64
	// Source is the instance the change was received from (ApplyOptions),
	// uuid.Nil for a local write.
	Source uuid.UUID
	// Point is the register's current winner.
	Point crdt.Point
}

// ChangesSince calls fn for every register whose winner arrived after local
// change number after, in arrival order, with that change number. It is
// Feed without the source.
func (s *Store) ChangesSince(after uint64, fn func(seq uint64, p *crdt.Point) error) error {
	return s.Feed(after, func(c *Change) error { return fn(c.Seq, &c.Point) })
}

// Feed calls fn for every register whose winner arrived after local change
// number after, in arrival order. A register changed several times is
// reported once, at its latest change. Replication resumes a link with it:
// a peer that holds everything up to change n needs Feed(n), whatever the
// HLCs of the points (a point written days ago by a device that was offline
// arrives with an old HLC but a new change number). The cost is the number
// of changes, not the size of the store. fn must not retain c; returning
// ErrStop ends the scan without error. The scan reads one consistent
// snapshot.
func (s *Store) Feed(after uint64, fn func(c *Change) error) error {
	return s.FeedWhere(after, nil, fn)
}

// FeedWhere is Feed for the changes keep accepts. keep sees each change
// before its register is read: its number, its source and the register's
// identity (the point's Node, Parent, Type and Key; nothing else is set).
// fn gets only the changes keep kept, whole. Reading a register is a
// lookup per change: a reader that drops most changes by their identity
// (a link whose scope is one device's subtree) skips it. keep and fn must
// not retain c; either may return ErrStop. A nil keep keeps everything.
func (s *Store) FeedWhere(after uint64, keep func(c *Change) (bool, error), fn func(c *Change) error) error {
	if after == 1<<64-1 {
		return nil
	}
	start := []byte{pfxSeq, 0, 0, 0, 0, 0, 0, 0, 0}
	putBE64(start[1:], after+1)
	return s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{pfxSeq}
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		var c Change
		for it.Seek(start); it.Valid(); it.Next() {
			if err := changeIdentity(it.Item(), &c); err != nil {
				return err
			}
			if keep != nil {
				ok, err := keep(&c)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
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

// changeIdentity sets c from a change-feed item: its number, its source
// and the identity of its register (the point's value is not read).
func changeIdentity(item *badger.Item, c *Change) error {
	k := item.Key()
	if len(k) < 1+8+34 {
		return fmt.Errorf("%w: change key of %d bytes", errCorrupt, len(k))
	}
	*c = Change{Seq: beUint64(k[1:9])}
	if err := item.Value(func(v []byte) error {
		switch len(v) {
		case 0:
		case 16:
			copy(c.Source[:], v)
		default:
			return fmt.Errorf("%w: change %d source of %d bytes", errCorrupt, c.Seq, len(v))
		}
		return nil
	}); err != nil {
		return err
	}
	return parseRegKey(k[9:], &c.Point)
}

// changeRegister reads the winner of c's register into c.Point.
func changeRegister(txn *badger.Txn, c *Change) error {
	reg, err := txn.Get(pointKey(&c.Point))
	if err != nil {
		return fmt.Errorf("%w: change %d names a missing register: %v", errCorrupt, c.Seq, err)
	}
	return reg.Value(func(v []byte) error { _, err := decodeRegister(v, &c.Point); return err })
}

// Child is one edge below a node, as Children reports it.
type Child struct {
	ID     uuid.UUID
	Active bool // part of the live tree
}

// Children calls fn for every child that has an edge with parent, live or
// not, in child ID order.
func (s *Store) Children(parent uuid.UUID, fn func(Child) error) error {
	return s.scanEdges(pfxChild, parent, func(v []byte) (bool, error) {
		st, err := decodeEdgeState(v)
		return st.active, err
	}, fn)
}

// Parents calls fn for every parent that has an edge with child, live or
// not, in parent ID order.
func (s *Store) Parents(child uuid.UUID, fn func(Child) error) error {
	return s.scanEdges(pfxParent, child, func(v []byte) (bool, error) {
		if len(v) != 1 {
			return false, fmt.Errorf("%w: parent flag of %d bytes", errCorrupt, len(v))
		}
		return v[0] == 1, nil
	}, fn)
}

// scanEdges walks the edge index pfx under node n: each key names the other
// end of an edge, active decodes the edge's state from its value.
func (s *Store) scanEdges(pfx byte, n uuid.UUID, active func([]byte) (bool, error), fn func(Child) error) error {
	prefix := append([]byte{pfx}, n[:]...)
	return s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var c Child
			copy(c.ID[:], it.Item().Key()[17:33])
			err := it.Item().Value(func(v []byte) (err error) {
				c.Active, err = active(v)
				return err
			})
			if err != nil {
				return err
			}
			if err := fn(c); err != nil {
				return err
			}
		}
		return nil
	})
}

// Descendants calls fn for root and every node below it over active edges,
// each once (a node reachable by two paths is reported once), in depth-first
// order. The walk always ends: active edges never form a cycle, and visited
// nodes are remembered (16 bytes each).
func (s *Store) Descendants(root uuid.UUID, fn func(uuid.UUID) error) error {
	return s.view(func(txn *badger.Txn) error {
		seen := map[uuid.UUID]bool{root: true}
		stack := []uuid.UUID{root}
		opts := badger.DefaultIteratorOptions
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if err := fn(n); err != nil {
				return err
			}
			opts.Prefix = append([]byte{pfxChild}, n[:]...)
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid(); it.Next() {
				var c uuid.UUID
				copy(c[:], it.Item().Key()[17:33])
				var active bool
				err := it.Item().Value(func(v []byte) error {
					st, err := decodeEdgeState(v)
					active = st.active
					return err
				})
				if err != nil {
					it.Close()
					return err
				}
				if active && !seen[c] {
					seen[c] = true
					stack = append(stack, c)
				}
			}
			it.Close()
		}
		return nil
	})
}

// Digests is what the store knows of one node's digests.
type Digests struct {
	Own crdt.Digest // the node's own points
	Sub crdt.Digest // its subtree: own points, edges below, active descendants
}

// NodeDigest returns node n's digests in O(1). A node the store knows
// nothing about has zero digests.
func (s *Store) NodeDigest(n uuid.UUID) (Digests, error) {
	var d Digests
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(nodeKey(n))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			m, err := decodeNodeMeta(v)
			d = Digests{Own: m.own, Sub: m.sub}
			return err
		})
	})
	return d, err
}

// Buckets calls fn for each non-empty child bucket of parent (children c
// with c[0] == bucket), with its digest: the sum over those children of the
// edge's digest plus, for active edges, the child's subtree digest.
func (s *Store) Buckets(parent uuid.UUID, fn func(bucket byte, d crdt.Digest) error) error {
	prefix := append([]byte{pfxBucket}, parent[:]...)
	return s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			var d crdt.Digest
			if err := it.Item().Value(func(v []byte) (err error) { d, err = decodeDigest(v); return err }); err != nil {
				return err
			}
			if err := fn(k[17], d); err != nil {
				return err
			}
		}
		return nil
	})
}

func putBE64(b []byte, v uint64) {
	_ = b[7]
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}
