package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// flipTableBit flips one bit in the data blocks of the largest table in
// dir and returns the table's name.
func flipTableBit(t *testing.T, dir string) string {
	t.Helper()
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(ssts) == 0 {
		t.Fatalf("no table in %s: %v", dir, err)
	}
	var path string
	var b []byte
	for _, p := range ssts {
		c, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(c) > len(b) {
			path, b = p, c
		}
	}
	// The footer: checksum length, checksum, index length; the index
	// comes before it, the data blocks before the index.
	n := len(b)
	end := n - 4 - int(binary.BigEndian.Uint32(b[n-4:])) - 4
	dataEnd := end - int(binary.BigEndian.Uint32(b[end:]))
	b[dataEnd/2] ^= 0x04
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return filepath.Base(path)
}

// TestE2ECorruptEdgeRecoversFromCloud follows "Recovery" in
// docs/operations.md: a bit flips in a table of a stopped edge; siot verify
// names the file and exits 1, and siot serve refuses to start on it; the
// directory is moved aside and the edge started again with the same device
// credential on an empty one; repair brings its subtree back from the
// cloud, as the cloud holds it. The writes the edge held that never reached
// the cloud are lost, as the documentation says.
func TestE2ECorruptEdgeRecoversFromCloud(t *testing.T) {
	e2eBinary(t)
	cloud := newProc(t, "cloud")
	cloud.start()
	creds := filepath.Join(t.TempDir(), "edge.creds") // kept outside the data directory
	mustSiot(t, "", "device", "add", "--server", cloud.url, "--out", creds)
	edge := newProc(t, "edge", "--upstream", cloud.url, "--creds", creds)
	edge.start()
	waitLinks(t, edge, cloud.url)

	recs, ids := sensors(edge.id, 30, 4, 10)
	edge.importRecords(recs)
	fromCloud := keyedSetpoints(ids[:10], "c", 500)
	cloud.importRecords(fromCloud)
	want := waitSame(t, "the cloud holds the edge's subtree",
		func() string { return edge.export("") }, func() string { return cloud.export(edge.id) })
	requireAll(t, "edge", want, append(recs, fromCloud...))

	// Writes at the edge while the cloud is down never reach it.
	if code, _ := cloud.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("cloud exit %d", code)
	}
	unsynced := keyedSetpoints(ids[:5], "unsynced", 900)
	edge.importRecords(unsynced)
	if code, _ := edge.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("edge exit %d", code)
	}

	table := flipTableBit(t, edge.data)
	_, stderr, err := siot("", "verify", "--data", edge.data)
	if err == nil || !strings.Contains(stderr, table) {
		t.Fatalf("siot verify on a flipped bit: err %v, stderr %q; want exit 1 naming %s", err, stderr, table)
	}
	if err := edge.startOnce(); err == nil || !strings.Contains(err.Error(), table) {
		t.Fatalf("siot serve on a flipped bit: %v; want a refusal naming %s", err, table)
	}

	// Recovery: move the directory aside, start again with the same
	// credential; repair brings the subtree back from the cloud.
	if err := os.Rename(edge.data, edge.data+".corrupt"); err != nil {
		t.Fatal(err)
	}
	cloud.start()
	edge.start()
	waitLinks(t, edge, cloud.url)
	got := waitSame(t, "the recovered edge holds the cloud's data again",
		func() string { return edge.export("") }, func() string { return cloud.export(edge.id) })
	if got != want {
		t.Fatalf("recovered edge differs from the cloud's copy before the damage: %s", diffSummary(want, got))
	}
	if n, _ := missing(got, unsynced); n != len(unsynced) {
		t.Fatalf("%d of %d writes that never reached the cloud came back", len(unsynced)-n, len(unsynced))
	}
	if code, _ := edge.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("edge exit %d", code)
	}
	if out := mustSiot(t, "", "verify", "--data", edge.data); !strings.Contains(out, ": ok: ") {
		t.Fatalf("siot verify after recovery: %q", out)
	}
}
