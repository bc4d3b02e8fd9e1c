package store

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// TestChildDigestsMatchNodeDigests checks the one-iterator read of child
// digests against a lookup per child: every child, a bucket, a cursor,
// inactive edges and children with no points of their own.
func TestChildDigestsMatchNodeDigests(t *testing.T) {
	s := openTest(t, t.TempDir())
	var pts []crdt.Point
	ts := crdt.Timestamp(1 << 20)
	for c := 1; c <= 300; c++ {
		ts++
		pts = append(pts, edgePt(0, c, c%7 == 0, ts)) // every 7th deleted
		if c%3 != 0 {                                 // every 3rd has no points
			pts = append(pts, pt(c, "temp", float64(c), ts))
		}
		if c%5 == 0 { // and some have children
			pts = append(pts, edgePt(c, 1000+c, false, ts), pt(1000+c, "temp", 1, ts))
		}
	}
	mustApply(t, s, pts...)
	check := func(bucket int, after uuid.UUID) int {
		t.Helper()
		n, last := 0, uuid.Nil
		err := s.ChildDigests(id(0), bucket, after, func(c ChildDigest) error {
			if bytes.Compare(c.ID[:], last[:]) <= 0 || (after != uuid.Nil && bytes.Compare(c.ID[:], after[:]) <= 0) {
				t.Fatalf("child %v out of order", c.ID)
			}
			if bucket >= 0 && int(c.ID[0]) != bucket {
				t.Fatalf("child %v outside bucket %d", c.ID, bucket)
			}
			last = c.ID
			d, err := s.NodeDigest(c.ID)
			if err != nil {
				t.Fatal(err)
			}
			if c.Own != d.Own || c.Sub != d.Sub {
				t.Fatalf("child %v: own %v sub %v, NodeDigest %+v", c.ID, c.Own, c.Sub, d)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := check(-1, uuid.Nil); n != 300 {
		t.Fatalf("%d children, want 300", n)
	}
	if n := check(-1, id(150)); n == 0 || n >= 300 {
		t.Fatalf("%d children after a cursor", n)
	}
	total := 0
	for b := range 256 {
		total += check(b, uuid.Nil)
	}
	if total != 300 {
		t.Fatalf("buckets hold %d children, want 300", total)
	}
}

// TestScanNodesPointsAndVersions checks the many-node scans against a
// ScanNode each, and ErrSkip and ErrStop.
func TestScanNodesPointsAndVersions(t *testing.T) {
	s := openTest(t, "")
	var pts []crdt.Point
	for c := 1; c <= 20; c++ {
		pts = append(pts, edgePt(0, c, false, 10))
		for k := range c {
			p := pt(c, "temp", float64(k), crdt.Timestamp(100+k))
			p.Key = string(rune('a' + k))
			pts = append(pts, p)
		}
	}
	mustApply(t, s, pts...)
	nodes := []uuid.UUID{id(3), id(20), id(99), id(7)} // id(99) has nothing
	var want []crdt.Point
	for _, n := range nodes {
		if err := s.ScanNode(n, func(p *crdt.Point) error {
			if !p.IsEdge() {
				want = append(want, *p)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	var got []crdt.Point
	if err := s.ScanNodesPoints(nodes, func(i int, p *crdt.Point) error {
		if p.Node != nodes[i] {
			t.Fatalf("point of %v reported for node %d", p.Node, i)
		}
		got = append(got, *p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(got) != 3+20+7 {
		t.Fatalf("%d points, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("point %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	k := 0
	if err := s.ScanNodesVersions(nodes, func(i int, v *Version) error {
		w := want[k]
		k++
		tk := append(append([]byte(w.Type), 0), w.Key...)
		if v.Node != w.Node || !bytes.Equal(v.TypeKey, tk) || v.Time != w.Time || v.Origin != w.Origin {
			t.Fatalf("version %d: %+v, want %+v", k, v, w)
		}
		return nil
	}); err != nil || k != len(want) {
		t.Fatalf("versions: %v, %d of %d", err, k, len(want))
	}
	perNode := map[int]int{}
	if err := s.ScanNodesPoints(nodes, func(i int, p *crdt.Point) error {
		if perNode[i]++; perNode[i] == 2 {
			return ErrSkip
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if perNode[0] != 2 || perNode[1] != 2 || perNode[3] != 2 {
		t.Fatalf("ErrSkip: %v", perNode)
	}
	n := 0
	if err := s.ScanNodesVersions(nodes, func(int, *Version) error { n++; return ErrStop }); err != nil || n != 1 {
		t.Fatalf("ErrStop: %v after %d", err, n)
	}
	boom := errors.New("boom")
	if err := s.ScanNodesPoints(nodes, func(int, *crdt.Point) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("callback error: %v", err)
	}
}
