package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	// ErrDiskFull is returned by Apply when free space under the data
	// directory is below Config.MinFreeBytes. Nothing of the batch is
	// written. Writes succeed again once space is freed.
	ErrDiskFull = errors.New("store: free disk space below the configured floor")
	// ErrClosed is returned by calls on a closed Store.
	ErrClosed = errors.New("store: closed")
	// ErrInvalid wraps a batch refused because one of its points is invalid;
	// the error names the point's index and wraps its crdt error.
	ErrInvalid = errors.New("store: invalid point in batch")
	// ErrRootMismatch is returned by Open when Config.Root names a root
	// other than the one already in the data directory.
	ErrRootMismatch = errors.New("store: data directory holds another root")
	// ErrLocked is returned by Open when another process (a running
	// server) holds the data directory's lock.
	ErrLocked = errors.New("store: data directory in use by another process")
)

// Profile selects Badger's memory settings. BENCHMARKS.md gives the
// throughput and footprint each one is measured at.
type Profile int

const (
	// ProfileCloud is for a server holding millions of points: 32 MiB
	// memtables (two), Snappy-compressed tables with a 16 MiB block cache
	// and a 16 MiB index cache. Measured: a process holding 1,000,000
	// points peaks at 245-262 MiB of RSS with MemoryLimit applied (about
	// 500 MiB without), 55 bytes on disk per point. The largest batch Apply takes is about 4.8 MB of keys and
	// values (roughly 16,000 points); larger ones get ErrBatchTooLarge.
	ProfileCloud Profile = iota
	// ProfileEdge keeps a device small: one 4 MiB memtable, uncompressed
	// tables read straight from their memory map (no block cache, no
	// decompression garbage), indexes in memory, small tables and levels.
	// Measured: a process holding 10,000 points peaks at 30-35 MiB of RSS
	// with MemoryLimit applied (about 50 MiB without). The largest batch Apply takes is about 600 KB of keys and
	// values (roughly 1,000 points of distinct registers, with their
	// history). It is the default for edge roles (an
	// instance with upstreams and no peers).
	ProfileEdge
)

// MemoryLimit returns the Go soft memory limit (runtime/debug
// SetMemoryLimit) that a process whose memory is mostly this store's
// should set for profile p, unless the operator set GOMEMLIMIT. Badger's
// memtables and table builders are large, short-lived heap buffers; with
// no limit the collector lets the heap grow to twice what is live (GOGC
// 100), which roughly doubles the resident set. The price is collector
// CPU: the cloud benchmark wrote a million points about 25% slower under
// its limit. The store never sets it itself: the limit is process-wide,
// so the program decides.
func (p Profile) MemoryLimit() int64 {
	if p == ProfileEdge {
		return 24 << 20
	}
	return 176 << 20
}

// Config configures Open. The zero value is not usable: start from
// DefaultConfig.
type Config struct {
	// Dir is the data directory. Empty with InMemory set keeps everything in
	// memory (tests).
	Dir      string
	InMemory bool
	// Root is the root node's ID to create on first open; uuid.Nil
	// generates one. On later opens it must be nil or match.
	Root uuid.UUID
	// Profile selects memory settings.
	Profile Profile
	// SyncWrites makes every committed batch durable (fsync) before Apply
	// returns. It is on by default: a write is acknowledged only once it is
	// on disk. Turning it off is for benchmarks and throwaway replicas.
	SyncWrites bool
	// MinFreeBytes is the free-space floor under Dir below which Apply
	// refuses writes with ErrDiskFull. Badger dies with SIGBUS when the disk
	// fills up mid-write instead of returning an error, so the store stops
	// well before that. A floor below FloorBytes (what Badger needs to
	// write its next files), 0 included, is raised to it at Open, with a
	// warning in the log.
	MinFreeBytes uint64
	// NoBallast skips the ballast file (BallastName): for tests and
	// throwaway replicas.
	NoBallast bool
	// FreeSpace reports the bytes available under a directory. Nil uses
	// statfs(2). Tests inject their own.
	FreeSpace func(dir string) (uint64, error)
	// Logger receives Badger's warnings and errors. Nil discards them.
	Logger *slog.Logger

	// noBlockChecks turns off Badger's checksum verification of each
	// table block it reads (BenchmarkChecksums measures both).
	noBlockChecks bool
	// noCompactions runs no compactor: for tests that damage a table while
	// the store is open, where a compaction over it panics in Badger's own
	// goroutine, which nothing can recover (the next Open names the file).
	noCompactions bool
	// skipFileCheck skips checkFiles at Open (BenchmarkChecksums).
	skipFileCheck bool
	// noHistory records no history: BenchmarkHistoryIngest's baseline,
	// the same Apply without it.
	noHistory bool
}

// DefaultConfig returns a durable cloud-profile configuration for dir.
func DefaultConfig(dir string) Config {
	return Config{Dir: dir, SyncWrites: true, MinFreeBytes: 256 << 20, Profile: ProfileCloud}
}

func (c *Config) validate() error {
	if c.Dir == "" && !c.InMemory {
		return errors.New("store: Config.Dir is required unless InMemory is set")
	}
	if c.Profile != ProfileCloud && c.Profile != ProfileEdge {
		return fmt.Errorf("store: unknown profile %d", c.Profile)
	}
	return nil
}

// BallastName is the ballast file Open keeps in the data directory: a
// file of FloorBytes that holds nothing. When the disk is full (filled by
// something else, or the store was given no room) an operator deletes it
// to free room to restart and recover; Open creates it again once there
// is room for it above the floor.
const BallastName = "ballast"

// FloorBytes returns the least free space the store keeps under Dir, from
// its Badger options: the log of the next memtable (created at twice the
// memtable size), the table that memtable is flushed to, one level-base's
// worth of tables per compactor (a compaction writes its new tables before
// it deletes the old ones) and one value-log file. 36 MiB for ProfileEdge,
// 180 MiB for ProfileCloud. It is also the ballast's size.
func (c *Config) FloorBytes() uint64 {
	opt := c.badgerOptions()
	return uint64(3*opt.MemTableSize + int64(opt.NumCompactors)*opt.BaseLevelSize + opt.ValueLogFileSize)
}

func (c *Config) badgerOptions() badger.Options {
	opt := badger.DefaultOptions(c.Dir)
	if c.InMemory {
		opt = badger.DefaultOptions("").WithInMemory(true)
	}
	opt = opt.WithSyncWrites(c.SyncWrites).
		WithLogger(badgerLogger{c.Logger}).
		WithMetricsEnabled(false).
		WithDetectConflicts(false). // one writer at a time (Store.mu)
		// Every register value (at most 41 bytes + 64 KiB of text) stays
		// in the LSM tree, never in the value log: the store never runs
		// value-log GC, and compaction reclaims overwritten registers.
		// Must stay below Badger's batch limit, 15% of MemTableSize.
		WithValueThreshold(128 << 10).
		// Two compactors: the machines are small (the cloud benchmark
		// box has 2 cores) and writes must not starve.
		WithNumCompactors(2).
		// A block whose checksum fails is never decoded: Badger skips
		// it (it reads as absent) instead of serving what a flipped bit
		// made of it.
		WithChecksumVerificationMode(options.OnBlockRead)
	if c.noBlockChecks {
		opt = opt.WithChecksumVerificationMode(options.NoVerification)
	}
	if c.noCompactions {
		opt = opt.WithNumCompactors(0)
	}
	// All levels use tables of the base size: a table builder holds its
	// whole table in memory (and Badger pools up to 8 builders), so small
	// tables keep compaction's memory small.
	opt.TableSizeMultiplier = 1
	switch c.Profile {
	case ProfileEdge:
		opt = opt.
			// One 4 MiB memtable (Badger still queues one being flushed):
			// a memtable is a preallocated arena plus a memory-mapped
			// write-ahead log of twice its size. Badger caps a
			// transaction at 15% of it (630 KB, 6,553 entries); 4 MiB is
			// the smallest that takes any 1,000-point batch, 2,000 of
			// overwritten registers (TestProfileBatchLimits).
			WithMemTableSize(4 << 20).
			WithNumMemtables(1).
			WithNumLevelZeroTables(2).
			WithNumLevelZeroTablesStall(8).
			WithBaseTableSize(1 << 20).
			WithBaseLevelSize(4 << 20).
			// No compression, so no block cache: blocks are read in place
			// from the mapped tables (pages the kernel can drop), instead
			// of being decompressed into fresh heap buffers. An edge holds
			// few points; the disk cost is small.
			WithCompression(options.None).
			WithBlockCacheSize(0).
			// Indexes and bloom filters stay in memory: a few hundred KB
			// for an edge's tables, and no cache overhead.
			WithIndexCacheSize(0).
			WithValueLogFileSize(16 << 20).
			WithNumGoroutines(2)
	default:
		opt = opt.
			// Two 32 MiB memtables: the arenas and builders that come
			// with a memtable dominate the heap, and larger memtables
			// did not ingest measurably faster on the benchmark machine.
			// 32 MiB caps a transaction at about 4.8 MB (about 16,000
			// points), what replication pushes in one batch.
			WithMemTableSize(32 << 20).
			WithNumMemtables(2).
			WithBaseTableSize(2 << 20).
			// Snappy (the default) needs a block cache for decompressed
			// blocks; 16 MiB holds the hot ones (recent registers are
			// mostly still in the memtables).
			WithBlockCacheSize(16 << 20).
			// Indexes and bloom filters of all tables, bounded: a million
			// points need a few MiB.
			WithIndexCacheSize(16 << 20).
			// Every write reads its register first, and most are new or
			// not in the memtables: a bloom false positive costs a block
			// read and decompression. 0.1% instead of 1% costs 50% more
			// filter memory (a few MiB) and measured 5-8% more ingest.
			WithBloomFalsePositive(0.001).
			WithValueLogFileSize(64 << 20)
	}
	return opt
}

// writeCacheRecords is how many tree records (parent links, node and
// bucket digests; about 100 bytes each) the writer remembers between
// batches.
func (c *Config) writeCacheRecords() int {
	if c.Profile == ProfileEdge {
		return 10_000
	}
	return 200_000
}

// writeCacheRegisters is how many registers (about 160 bytes each) the
// writer remembers between batches: a sensor that reports again is
// merged without a Badger lookup.
func (c *Config) writeCacheRegisters() int {
	if c.Profile == ProfileEdge {
		return 2048
	}
	return 32768
}

// Store is a replica's durable register store. It is safe for concurrent
// use: Apply calls are serialized (one writer at a time), reads run
// concurrently with each other and with writes, each on a consistent
// snapshot.
type Store struct {
	cfg      Config
	db       *badger.DB
	checked  FileCheck // what Open checked
	damage   damageCache
	root     uuid.UUID
	instance uuid.UUID
	maxTime  atomic.Uint64 // the greatest HLC held

	// life guards closed: every operation holds it shared while it uses
	// db, and Close takes it exclusively, so Close waits for running calls
	// and nothing touches a closed database.
	life   sync.RWMutex
	closed bool

	mu  sync.Mutex    // serializes writers
	seq atomic.Uint64 // the last change number assigned; written under mu
	// irregularGen counts the commits that changed the set of irregular
	// edges (IrregularEdges).
	irregularGen atomic.Uint64
	cache        *writeCache // the writer's tree records; used under mu
	late         lateLog     // late history writes since Open
	du           diskUsage   // DiskUsage's cached figure
}

// Open opens or creates the store in cfg.Dir. On first open it creates the
// root node's ID (cfg.Root or a random one) and this instance's ID.
func Open(cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.FreeSpace == nil {
		cfg.FreeSpace = statfsFree
	}
	if floor := cfg.FloorBytes(); !cfg.InMemory && cfg.MinFreeBytes < floor {
		if cfg.Logger != nil {
			cfg.Logger.Warn("free-space floor raised to what the store needs to write its next files",
				"configured", cfg.MinFreeBytes, "floor", floor)
		}
		cfg.MinFreeBytes = floor
	}
	var checked FileCheck
	if !cfg.InMemory {
		if err := removeEmptyLogs(cfg.Dir); err != nil {
			return nil, err
		}
		if err := lockFree(cfg.Dir); err != nil {
			return nil, err
		}
		if !cfg.skipFileCheck {
			var err error
			if checked, err = checkFiles(cfg.Dir, cfg.badgerOptions()); err != nil {
				return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
			}
		}
	}
	db, err := badger.Open(cfg.badgerOptions())
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("%w: %s (a running server?)", ErrLocked, cfg.Dir)
		}
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	s := &Store{cfg: cfg, db: db, checked: checked, cache: newWriteCache(cfg.writeCacheRecords(), cfg.writeCacheRegisters())}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	if !cfg.InMemory && !cfg.NoBallast {
		if err := s.keepBallast(); err != nil {
			db.Close()
			return nil, err
		}
	}
	return s, nil
}

// Checked returns what Open checked: every table the MANIFEST lists, its
// index and block checksums verified (nothing for a new or in-memory
// store).
func (s *Store) Checked() FileCheck { return s.checked }

// MinFreeBytes returns the free-space floor in force: Config.MinFreeBytes
// or FloorBytes, whichever is greater.
func (s *Store) MinFreeBytes() uint64 { return s.cfg.MinFreeBytes }

// keepBallast creates the ballast file when it is missing and there is
// room for it above the floor; it logs a warning when there is not.
func (s *Store) keepBallast() error {
	path := filepath.Join(s.cfg.Dir, BallastName)
	size := s.cfg.FloorBytes()
	if fi, err := os.Stat(path); err == nil && fi.Size() == int64(size) {
		return nil
	}
	free, err := s.cfg.FreeSpace(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("store: free space of %s: %w", s.cfg.Dir, err)
	}
	if free < s.cfg.MinFreeBytes+size {
		if s.cfg.Logger != nil {
			s.cfg.Logger.Warn("no room for the ballast file: it is created once the disk has room",
				"path", path, "size", size, "free", free, "floor", s.cfg.MinFreeBytes)
		}
		return nil
	}
	if err := writeBallast(path, int64(size)); err != nil {
		return fmt.Errorf("store: ballast %s: %w", path, err)
	}
	return nil
}

// writeBallast allocates a file of size bytes at path (blocks reserved,
// not a sparse file), through a temporary name so that a crash leaves no
// short ballast.
func writeBallast(path string, size int64) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err = allocate(f, size); err != nil {
		// A file system without fallocate: write zeros.
		zeros := make([]byte, 1<<20)
		for off := int64(0); err == nil && off < size; off += int64(len(zeros)) {
			_, err = f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off)
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (s *Store) init() error {
	return s.db.Update(func(txn *badger.Txn) error {
		if err := checkFormat(txn); err != nil {
			return err
		}
		root, err := getOrCreateID(txn, keyRoot, s.cfg.Root)
		if err != nil {
			return fmt.Errorf("store: root: %w", err)
		}
		if s.cfg.Root != uuid.Nil && root != s.cfg.Root {
			return fmt.Errorf("%w: %s, not %s", ErrRootMismatch, root, s.cfg.Root)
		}
		inst, err := getOrCreateID(txn, keyInstance, uuid.Nil)
		if err != nil {
			return fmt.Errorf("store: instance: %w", err)
		}
		s.root, s.instance = root, inst
		item, err := txn.Get(keyMaxTime)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("store: read max time: %w", err)
		default:
			if err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("%w: max time of %d bytes", errCorrupt, len(v))
				}
				s.maxTime.Store(beUint64(v))
				return nil
			}); err != nil {
				return err
			}
		}
		// The last change number: the last key of the change feed (the
		// latest change is always still a winner).
		opts := badger.DefaultIteratorOptions
		opts.Reverse, opts.PrefetchValues = true, false
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Seek([]byte{pfxSeq, 0xff})
		if it.ValidForPrefix([]byte{pfxSeq}) {
			k := it.Item().Key()
			if len(k) < 9 {
				return fmt.Errorf("%w: change key of %d bytes", errCorrupt, len(k))
			}
			s.seq.Store(beUint64(k[1:9]))
		}
		return nil
	})
}

func checkFormat(txn *badger.Txn) error {
	item, err := txn.Get(keyFormat)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return txn.Set(keyFormat, []byte{formatVersion})
	}
	if err != nil {
		return fmt.Errorf("store: read format: %w", err)
	}
	return item.Value(func(v []byte) error {
		if len(v) != 1 || v[0] != formatVersion {
			return fmt.Errorf("store: data format %v, this build reads %d", v, formatVersion)
		}
		return nil
	})
}

func getOrCreateID(txn *badger.Txn, key []byte, want uuid.UUID) (uuid.UUID, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		id := want
		if id == uuid.Nil {
			id = uuid.New()
		}
		return id, txn.Set(key, id[:])
	}
	if err != nil {
		return uuid.Nil, err
	}
	var id uuid.UUID
	err = item.Value(func(v []byte) error {
		if len(v) != 16 {
			return fmt.Errorf("%w: id of %d bytes", errCorrupt, len(v))
		}
		copy(id[:], v)
		return nil
	})
	return id, err
}

// Root returns the root node's ID.
func (s *Store) Root() uuid.UUID { return s.root }

// Instance returns this instance's ID, the origin of its own writes.
func (s *Store) Instance() uuid.UUID { return s.instance }

// MaxTime returns the greatest HLC of any point held. A replica seeds its
// clock with it on start (crdt.Clock.Observe).
func (s *Store) MaxTime() crdt.Timestamp {
	return crdt.Timestamp(s.maxTime.Load())
}

// LastSeq returns the change number of the latest committed change (0 for
// an empty store). ChangesSince(LastSeq()) reports only later changes.
func (s *Store) LastSeq() uint64 { return s.seq.Load() }

// enter marks the start of an operation on the database; it fails with
// ErrClosed after Close. Every successful enter is paired with s.leave.
func (s *Store) enter() error {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) leave() { s.life.RUnlock() }

// Close flushes and closes the store. It waits for running calls (an
// Apply, a scan) to return; callers stop long scans first by returning an
// error from their callback.
func (s *Store) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// checkSpace refuses writes when free space is below the floor.
func (s *Store) checkSpace() error {
	if s.cfg.InMemory {
		return nil
	}
	free, err := s.cfg.FreeSpace(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("store: free space of %s: %w", s.cfg.Dir, err)
	}
	if free < s.cfg.MinFreeBytes {
		return fmt.Errorf("%w: %d bytes free under %s, floor %d", ErrDiskFull, free, s.cfg.Dir, s.cfg.MinFreeBytes)
	}
	return nil
}

func statfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func beUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// badgerLogger sends Badger's warnings and errors to slog; its info and
// debug chatter is dropped.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	if b.l != nil {
		b.l.Error(fmt.Sprintf(f, a...), "component", "badger")
	}
}

func (b badgerLogger) Warningf(f string, a ...any) {
	if b.l != nil {
		b.l.Warn(fmt.Sprintf(f, a...), "component", "badger")
	}
}
func (b badgerLogger) Infof(string, ...any)  {}
func (b badgerLogger) Debugf(string, ...any) {}

var _ io.Closer = (*Store)(nil)

// removeEmptyLogs deletes the empty memtable and value-log files that a
// crash can leave in dir. Badger creates each such file and sizes it in the
// next system call; killed in between, it leaves an empty file that its next
// Open refuses with "Create a new file" (dgraph-io/badger#2207). An empty
// file holds not even a header, so nothing refers to it.
func removeEmptyLogs(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || (!strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog")) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("store: open %s: %w", dir, err)
		}
		if fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("store: open %s: %w", dir, err)
			}
		}
	}
	return nil
}
