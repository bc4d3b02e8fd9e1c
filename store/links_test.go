package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/siot-io/siot/crdt"
)

// DiskUsage measures the directory: it is not 0 (Badger's Size is, with
// its metrics off), it keeps its figure for DiskUsageEvery however often
// it is asked, and after a large write it grows.
func TestDiskUsageMeasuresTheDirectoryAndCaches(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	now := time.Unix(1_800_000_000, 0)
	s.du.now = func() time.Time { return now }
	first := s.DiskUsage()
	if first <= 0 {
		t.Fatalf("DiskUsage of a new store = %d, want > 0", first)
	}
	var pts []crdt.Point
	for i := range 2000 {
		p := pt(i, "blob", 1, crdt.Timestamp(1000+i))
		p.Text = strings.Repeat("x", 4096)
		pts = append(pts, p)
	}
	for i := 0; i < len(pts); i += 200 {
		mustApply(t, s, pts[i:i+200]...)
	}
	if got := s.DiskUsage(); got != first {
		t.Fatalf("DiskUsage within the period = %d, want the cached %d", got, first)
	}
	now = now.Add(DiskUsageEvery)
	if got := s.DiskUsage(); got < first+4<<20 {
		t.Fatalf("DiskUsage after 8 MB of writes = %d, want at least %d", got, first+4<<20)
	}
}

// Link records are kept by name, one each, across a reopen, and bounded.
func TestLinkRecordsPersistOnePerName(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	for _, recs := range []map[string][]byte{{"edge/a": []byte("1"), "edge/b": []byte("2")}, {"edge/a": []byte("3")}} {
		if err := s.SetLinkRecords(recs); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetLinkRecords(map[string][]byte{"edge/b": []byte("9"), "": []byte("x")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty name: %v, want ErrInvalid", err)
	}
	if err := s.SetLinkRecords(map[string][]byte{"edge/b": []byte("9"), "edge/c": make([]byte, MaxLinkRecord+1)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("large record: %v, want ErrInvalid", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	got := map[string]string{}
	if err := s.LinkRecords(func(name string, data []byte) error {
		got[name] = string(data)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["edge/a"] != "3" || got["edge/b"] != "2" {
		t.Fatalf("link records after reopen: %v", got)
	}
	mustVerify(t, s)
}
