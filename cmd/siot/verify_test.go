package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// verifyFixture writes a store of n points under one node in a fresh
// directory and closes it.
func verifyFixture(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	cfg := store.DefaultConfig(dir)
	cfg.Profile, cfg.NoBallast, cfg.SyncWrites = store.ProfileEdge, true, false
	s, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	node, origin := uuid.MustParse("6ba7b810-9dad-41d1-80b4-00c04fd430c8"), uuid.MustParse("00000000-0000-4000-8000-00000000aaaa")
	pts := []crdt.Point{{Node: node, Parent: s.Root(), Type: crdt.TypeEdge, Key: "0", Time: 1, Origin: origin}}
	for i := range n {
		pts = append(pts, crdt.Point{Node: node, Type: "temp", Key: fmt.Sprint(i), Value: float64(i), Time: crdt.Timestamp(2 + i), Origin: origin})
	}
	if _, err := s.Apply(pts); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func verifyJSON(t *testing.T, out string) verifyReport {
	t.Helper()
	var r verifyReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("verify --json printed %q: %v", out, err)
	}
	return r
}

// TestVerifyCommand: siot verify exits 0 with counts on a sound store, and
// 1 naming what is wrong on a flipped bit in a table, on a digest that no
// longer matches, on a directory a server holds and on a directory with
// no store.
func TestVerifyCommand(t *testing.T) {
	dir := verifyFixture(t, 500)
	out, _, err := run(t, "verify", "--data", dir)
	if err != nil || !strings.Contains(out, "ok: 1 tables") || !strings.Contains(out, "501 registers, 2 nodes, 1 edges") {
		t.Fatalf("sound store: %q %v", out, err)
	}
	out, _, err = run(t, "verify", "--data", dir, "--json")
	if r := verifyJSON(t, out); err != nil || !r.OK || r.Registers != 501 || r.Tables != 1 || r.TableBytes == 0 || r.Problems != 0 {
		t.Fatalf("sound store, --json: %+v %v", r, err)
	}

	t.Run("flipped bit", func(t *testing.T) {
		dir := verifyFixture(t, 500)
		ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
		if len(ssts) != 1 {
			t.Fatalf("%d tables", len(ssts))
		}
		b, err := os.ReadFile(ssts[0])
		if err != nil {
			t.Fatal(err)
		}
		b[100] ^= 0x10 // in the first data block
		if err := os.WriteFile(ssts[0], b, 0o600); err != nil {
			t.Fatal(err)
		}
		out, _, err := run(t, "verify", "--data", dir)
		if err == nil || !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(ssts[0])) || strings.Contains(out, "ok") {
			t.Fatalf("flipped bit: %q %v; want an error naming %s", out, err, filepath.Base(ssts[0]))
		}
		out, _, err = run(t, "verify", "--data", dir, "--json")
		if r := verifyJSON(t, out); err == nil || r.OK || !strings.Contains(r.Error, filepath.Base(ssts[0])) {
			t.Fatalf("flipped bit, --json: %+v %v", r, err)
		}
	})

	t.Run("digest mismatch", func(t *testing.T) {
		dir := verifyFixture(t, 50)
		deleteOneDigest(t, dir)
		out, _, err := run(t, "verify", "--data", dir, "--json")
		r := verifyJSON(t, out)
		if err == nil || !errors.Is(err, store.ErrMismatch) || r.OK || r.Problems == 0 || !strings.Contains(r.Error, "no digest record") {
			t.Fatalf("mismatch: %+v %v", r, err)
		}
	})

	t.Run("running server", func(t *testing.T) {
		dir := verifyFixture(t, 10)
		cfg := store.DefaultConfig(dir)
		cfg.NoBallast = true
		s, err := store.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, _, err := run(t, "verify", "--data", dir)
		if err == nil || !strings.Contains(err.Error(), "in use by a running server: stop it first") {
			t.Fatalf("locked: %q %v", out, err)
		}
	})

	t.Run("no store", func(t *testing.T) {
		empty := t.TempDir()
		for _, d := range []string{empty, filepath.Join(empty, "missing")} {
			if _, _, err := run(t, "verify", "--data", d); err == nil || !strings.Contains(err.Error(), "no store in") {
				t.Fatalf("%s: %v", d, err)
			}
		}
		if ents, _ := os.ReadDir(empty); len(ents) != 0 {
			t.Fatalf("verify wrote into an empty directory: %v", ents)
		}
	})
}

// deleteOneDigest deletes one node's digest record from the stopped store
// in dir, behind the store's back.
func deleteOneDigest(t *testing.T, dir string) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'n'}})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return errors.New("no node record")
		}
		return txn.Delete(it.Item().KeyCopy(nil))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestVerifyOnline: siot verify --online asks a running server to check
// its own store: ok with counts on a sound one, exit 1 naming the mismatch
// on a store whose digest record was deleted before the server started,
// refused for a device's credentials, and a usage error with --data.
func TestVerifyOnline(t *testing.T) {
	srv := serve(t, "--data", verifyFixture(t, 200), "--listen", "127.0.0.1:0", "--http", "")
	out, _, err := run(t, "verify", "--online", "--server", srv.nats)
	if err != nil || !strings.Contains(out, "ok: table checksums verified; 201 registers") {
		t.Fatalf("sound store: %q %v", out, err)
	}
	out, _, err = run(t, "verify", "--online", "--server", srv.nats, "--json")
	if r := verifyJSON(t, out); err != nil || !r.OK || r.Registers != 201 || r.Server != srv.nats || r.Problems != 0 {
		t.Fatalf("sound store, --json: %+v %v", r, err)
	}

	dev := filepath.Join(t.TempDir(), "dev.creds")
	if _, _, err := run(t, "device", "add", "--server", srv.nats, "--out", dev); err != nil {
		t.Fatal(err)
	}
	if _, _, err = run(t, "verify", "--online", "--server", srv.nats, "--creds", dev); err == nil || !strings.Contains(err.Error(), "verify: permission denied") {
		t.Fatalf("a device verified the server's store: %v", err)
	}

	var ue *UsageError
	if _, _, err = run(t, "verify", "--online", "--data", t.TempDir(), "--server", srv.nats); !errors.As(err, &ue) {
		t.Fatalf("--online with --data: %v", err)
	}

	dir := verifyFixture(t, 50)
	deleteOneDigest(t, dir)
	bad := serve(t, "--data", dir, "--listen", "127.0.0.1:0", "--http", "")
	out, _, err = run(t, "verify", "--online", "--server", bad.nats, "--json")
	if r := verifyJSON(t, out); err == nil || r.OK || r.Problems == 0 || !strings.Contains(r.Error, "no digest record") || !strings.Contains(err.Error(), "found") {
		t.Fatalf("mismatch online: %+v %v", r, err)
	}
}
