package history

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// randomSet returns a sorted set of samples drawn from a small key space,
// so that sets overlap; conflicting content for a key comes from vary.
func randomSet(rng *rand.Rand, origins []uuid.UUID, vary bool) []Sample {
	n := rng.IntN(60)
	in := make([]Sample, 0, n)
	for range n {
		ms := int64(1_780_000_000_000) + rng.Int64N(40)*900_000 // some windows, repeated times
		s := Sample{Time: crdt.NewTimestamp(ms, 0), Origin: origins[rng.IntN(len(origins))], Value: float64(ms % 1000)}
		if vary && rng.IntN(5) == 0 {
			s.Value += 1
			s.Tombstone = rng.IntN(2) == 0
		}
		in = append(in, s)
	}
	slices.SortFunc(in, func(a, b Sample) int { return a.compare(&b) })
	// One sample a key, the first: a set as Decode returns it.
	return slices.CompactFunc(in, func(a, b Sample) bool { return a.compare(&b) == 0 })
}

// TestMergeIsAUnion: merge is commutative, associative and idempotent,
// sorted and without a key twice, and holds every key of both sides,
// also when faulty replicas disagree on a key's content.
func TestMergeIsAUnion(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	origins := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for range 2000 {
		a, b, c := randomSet(rng, origins, true), randomSet(rng, origins, true), randomSet(rng, origins, true)
		ab, ba := Merge(a, b), Merge(b, a)
		if !slices.Equal(ab, ba) {
			t.Fatal("merge is not commutative")
		}
		if !slices.Equal(Merge(ab, c), Merge(a, Merge(b, c))) {
			t.Fatal("merge is not associative")
		}
		if !slices.Equal(Merge(ab, ab), ab) || !slices.Equal(Merge(a, nil), a) {
			t.Fatal("merge is not idempotent")
		}
		for i := 1; i < len(ab); i++ {
			if ab[i-1].compare(&ab[i]) >= 0 {
				t.Fatalf("merged set out of order at %d", i)
			}
		}
		keys := map[[2]any]bool{}
		for _, s := range append(slices.Clone(a), b...) {
			keys[[2]any{s.Time, s.Origin}] = true
		}
		if len(keys) != len(ab) {
			t.Fatalf("%d samples merged from %d keys", len(ab), len(keys))
		}
	}
}

// TestDigestIsThePoints: a history's digest is the sum of its samples'
// point digests, so the current value's sample and the register's point
// count the same, and disjoint sets add.
func TestDigestIsThePoints(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	r := crdt.Register{Node: uuid.New(), Type: "temp", Key: "0"}
	origins := []uuid.UUID{uuid.New()}
	a := randomSet(rng, origins, false)
	var want crdt.Digest
	for i := range a {
		p := Point(r, &a[i])
		if FromPoint(&p) != a[i] {
			t.Fatalf("sample %d: FromPoint(Point) differs", i)
		}
		want = want.Add(crdt.PointDigest(&p))
	}
	if got := Digest(r, a); got != want {
		t.Fatalf("digest %v, want %v", got, want)
	}
	ws := Windows(a)
	var sum crdt.Digest
	var back []Sample
	for _, w := range ws {
		for _, s := range w {
			if WindowOf(s.Time) != WindowOf(w[0].Time) {
				t.Fatal("a run holds two windows")
			}
		}
		sum = sum.Add(Digest(r, w))
		back = append(back, w...)
	}
	if sum != want || !slices.Equal(back, a) {
		t.Fatal("the windows do not add up to the set")
	}
	for i := 1; i < len(ws); i++ {
		if WindowOf(ws[i-1][0].Time) >= WindowOf(ws[i][0].Time) {
			t.Fatal("windows out of order")
		}
	}
}
