package store

import (
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DiskUsageEvery is how long DiskUsage keeps a figure before it measures
// the directory again: a scrape storm walks it at most once per period.
const DiskUsageEvery = 2 * time.Second

// diskUsage caches the last measure of the store's directory.
type diskUsage struct {
	mu    sync.Mutex
	now   func() time.Time // time.Now unless a test sets it
	at    time.Time        // when bytes was measured; zero: never
	bytes int64
}

// DiskUsage returns the bytes the store's files take on disk: every file
// under its directory (LSM tables, value logs, manifest), counted by the
// blocks allocated to it, so a value log Badger preallocates counts what it
// holds, not its nominal size. The figure is measured by walking the
// directory at most once every DiskUsageEvery; calls in between return the
// last one, so it lags writes by that much. Badger's own Size, which this
// replaces, stays 0 with Badger's metrics off. An in-memory store reports
// Badger's figure. Safe for concurrent use; a caller may wait for another's
// walk.
func (s *Store) DiskUsage() int64 {
	if s.cfg.InMemory {
		lsm, vlog := s.db.Size()
		return lsm + vlog
	}
	d := &s.du
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now
	if d.now != nil {
		now = d.now
	}
	t := now()
	if !d.at.IsZero() && t.Sub(d.at) < DiskUsageEvery && t.Sub(d.at) >= 0 {
		return d.bytes
	}
	d.bytes, d.at = dirBytes(s.cfg.Dir), t
	return d.bytes
}

// dirBytes sums the disk space of the regular files under dir. Files that
// vanish during the walk (Badger deletes compacted tables) are skipped, and
// so is the ballast (BallastName): it holds no data.
func dirBytes(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() || e.Name() == BallastName || e.Name() == BallastName+".tmp" {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += fi.Size()
		}
		return nil
	})
	return total
}

// SpaceOK returns nil while writes are accepted, and the error Apply
// would refuse them with (wrapping ErrDiskFull) while free space under the
// directory is below the floor (Config.MinFreeBytes). It costs one statfs.
func (s *Store) SpaceOK() error { return s.checkSpace() }
