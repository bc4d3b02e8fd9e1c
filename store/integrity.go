package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// ErrCorrupt is wrapped by the error Open, the reads, Apply and Verify
// return when a file of the data directory is damaged (a checksum that
// does not match, a truncated file, a structure Badger cannot decode).
// Open's error names the file; a read or Apply that fails on damage done
// after Open names the damaged table when a check of the live tables finds
// it (findDamage), else the data directory (siot verify, offline, finds
// the file). Nothing read from a damaged file is served; the remedy is to
// restore the directory from a backup or re-sync it from upstream
// (docs/operations.md, "Recovery").
var ErrCorrupt = errors.New("store: data directory corrupt")

// checkFiles checks the files Badger reads at open, before Badger does:
// Badger trusts them, and on a damaged one it serves wrong data (a table
// whose block checksum fails is dropped with a log line, a flipped bit in
// a data block is decoded as it is) or panics in a goroutine of its own,
// where no caller can recover. checkFiles replays the MANIFEST and reads
// every table it lists in full, verifying the checksums of the index and
// of every block; a panic of Badger's decoders on a damaged file is
// recovered here and reported as an error naming the file. It costs one
// read of every table at open (BENCHMARKS.md, "Checksums").
//
// The value log needs no such check: every value stays in the LSM tree
// (Config's value threshold is above the largest register), so the value
// log holds only its header, which Badger checks itself. The memtable
// logs' entries carry checksums Badger verifies when it replays them; it
// stops at the first bad one, as at the torn end a crash leaves, so a
// flipped bit there loses the later writes of that log (never more than
// one memtable's worth) rather than serving them wrong.
//
// It checks nothing in a directory Badger has not created yet.
func checkFiles(dir string, opt badger.Options) (FileCheck, error) {
	var c FileCheck
	path := filepath.Join(dir, badger.ManifestFilename)
	tables, err := readManifest(path, opt)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	ids := make([]uint64, 0, len(tables))
	for id := range tables {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		n, err := checkTable(table.NewFilename(id, dir), tables[id], opt)
		if err != nil {
			return c, err
		}
		c.Tables++
		c.Bytes += n
	}
	return c, nil
}

// FileCheck counts what Open checked: the tables listed in the MANIFEST
// and their bytes.
type FileCheck struct {
	Tables int
	Bytes  int64
}

// readManifest replays the MANIFEST at path and returns the tables it
// lists with their compression.
func readManifest(path string, opt badger.Options) (tables map[uint64]options.CompressionType, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	defer recoverCorrupt(path, &err)
	m, end, err := badger.ReplayManifestFile(f, opt.ExternalMagicVersion, opt)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("store: stat %s: %w", path, err)
	}
	// Badger deletes the tables the MANIFEST does not list, and cuts off
	// a partial record at its end. A crash leaves such tables (written,
	// not yet listed) only while their data is still elsewhere: in a
	// memtable log, which a crash always leaves (Badger removes the last
	// one on a clean close), or in the tables a compaction was merging.
	// Unlisted tables with no memtable log, or after a partial record,
	// mean a MANIFEST that lost its end: refuse rather than let Badger
	// delete data.
	dir := filepath.Dir(path)
	if orphans := orphanTables(dir, m.Tables); len(orphans) > 0 && (end < fi.Size() || !hasMemtableLog(dir)) {
		return nil, fmt.Errorf("%w: %s: tables %v are not listed in it (%d of %d bytes hold whole records): the MANIFEST lost its end",
			ErrCorrupt, path, orphans, end, fi.Size())
	}
	tables = make(map[uint64]options.CompressionType, len(m.Tables))
	for id, t := range m.Tables {
		tables[id] = t.Compression
	}
	return tables, nil
}

// orphanTables returns the names of the table files in dir that listed
// does not hold.
func orphanTables(dir string, listed map[uint64]badger.TableManifest) []string {
	names, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	var orphans []string
	for _, n := range names {
		id, ok := table.ParseFileID(n)
		if _, in := listed[id]; ok && !in {
			orphans = append(orphans, filepath.Base(n))
		}
	}
	return orphans
}

// hasMemtableLog reports whether dir holds a memtable log (a .mem file
// that is not empty).
func hasMemtableLog(dir string) bool {
	names, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	for _, n := range names {
		if fi, err := os.Stat(n); err == nil && fi.Size() > 0 {
			return true
		}
	}
	return false
}

// checkTable opens the table at path read-only and verifies the checksums
// of its index and of every block. It returns the table's size.
func checkTable(path string, c options.CompressionType, opt badger.Options) (size int64, err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("%w: %s: listed in the MANIFEST but missing", ErrCorrupt, path)
		}
		return 0, fmt.Errorf("store: open %s: %w", path, err)
	}
	size = int64(len(mf.Data))
	// OpenTable closes the file on some of its errors, not all; close it
	// here whatever happened (a second close fails harmlessly).
	defer func() {
		_ = z.Munmap(mf.Data)
		_ = mf.Fd.Close()
	}()
	defer recoverCorrupt(path, &err)
	t, err := table.OpenTable(mf, table.Options{
		ChkMode:     options.NoVerification, // VerifyChecksum below checks every block once
		Compression: c,
		BlockSize:   opt.BlockSize,
		TableSize:   uint64(opt.BaseTableSize),
	})
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	if err := t.VerifyChecksum(); err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return size, nil
}

// recoverCorrupt turns a panic of Badger's decoders, reading the file at
// path, into an error naming it. Use it deferred, directly in the function
// that reads only that file.
func recoverCorrupt(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %s: cannot be decoded (%s)", ErrCorrupt, path, panicText(r))
	}
}

// panicText is one short line for a panic of Badger's decoders: its
// first line, or what a multi-line dump of the table's bytes means.
func panicText(r any) string {
	s := strings.TrimSpace(fmt.Sprint(r))
	if strings.Contains(s, "Recovering from initIndex crash") {
		return "its footer, index or last block is damaged"
	}
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// lockFree returns ErrLocked when another process holds the lock Badger
// takes on dir (a running server), so that nothing reads files that
// process may be rewriting. The lock is released again: Badger takes it
// in Open.
func lockFree(dir string) error {
	f, err := os.Open(filepath.Join(dir, "LOCK"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open %s: %w", dir, err)
	}
	defer f.Close()
	if err := flockTry(f); err != nil {
		return fmt.Errorf("%w: %s (a running server?)", ErrLocked, dir)
	}
	return nil
}

// findDamage looks for the damaged table of an open store, after a read
// failed: it replays the MANIFEST and checks each table it lists as
// checkTable does, but reading each file into memory rather than mapping
// it, because Badger may truncate and delete a table it merged away at any
// moment (a mapped read of it would crash the process; a read that comes
// up short is only skipped). It returns the first damage found, or nil.
// It costs one read of every table; it runs only after a failure.
func findDamage(dir string, opt badger.Options) error {
	path := filepath.Join(dir, badger.ManifestFilename)
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	m, _, err := func() (m badger.Manifest, end int64, err error) {
		defer recoverCorrupt(path, &err)
		return badger.ReplayManifestFile(f, opt.ExternalMagicVersion, opt)
	}()
	f.Close()
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	ids := make([]uint64, 0, len(m.Tables))
	for id := range m.Tables {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		name := table.NewFilename(id, dir)
		data, err := os.ReadFile(name)
		if err != nil || len(data) == 0 {
			continue // deleted or truncated by a compaction meanwhile
		}
		if err := checkTableData(name, id, data, m.Tables[id].Compression, opt); err != nil {
			// A compaction may have cut the file while it was read: only a
			// file still of the size read is reported.
			if st, serr := os.Stat(name); serr != nil || st.Size() != int64(len(data)) {
				continue
			}
			return err
		}
	}
	return nil
}

// checkTableData is checkTable over a table read into memory.
func checkTableData(path string, id uint64, data []byte, c options.CompressionType, opt badger.Options) (err error) {
	defer recoverCorrupt(path, &err)
	t, err := table.OpenInMemoryTable(data, id, &table.Options{
		ChkMode:     options.NoVerification,
		Compression: c,
		BlockSize:   opt.BlockSize,
		TableSize:   uint64(opt.BaseTableSize),
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	if err := t.VerifyChecksum(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return nil
}
