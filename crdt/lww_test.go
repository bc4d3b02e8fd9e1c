package crdt

import (
	"math"
	"testing"

	"github.com/google/uuid"
	"pgregory.net/rapid"
)

// genWrite draws a write to one fixed register, from small domains so that
// ties on time and origin (and on everything) are common.
func genWrite(t *rapid.T, label string) Point {
	origins := []uuid.UUID{
		uuid.MustParse("00000000-0000-0000-0000-000000000001"),
		uuid.MustParse("00000000-0000-0000-0000-000000000002"),
		uuid.MustParse("ffffffff-0000-0000-0000-000000000000"),
	}
	p := Point{
		Node:      uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
		Type:      "temp",
		Key:       "0",
		Value:     rapid.SampledFrom([]float64{0, 1, -1, 2.5, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64}).Draw(t, label+"value"),
		Text:      rapid.SampledFrom([]string{"", "a", "b", "ab"}).Draw(t, label+"text"),
		Tombstone: rapid.Bool().Draw(t, label+"tomb"),
		Time:      Timestamp(rapid.Uint64Range(1, 4).Draw(t, label+"time")),
		Origin:    rapid.SampledFrom(origins).Draw(t, label+"origin"),
	}
	return p
}

func merge(ws ...Point) Point {
	cur := ws[0]
	for _, w := range ws[1:] {
		cur, _ = Merge(cur, w)
	}
	return cur
}

func TestMergeLaws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := genWrite(t, "a"), genWrite(t, "b"), genWrite(t, "c")
		if merge(a, b) != merge(b, a) {
			t.Fatalf("not commutative: %+v %+v", a, b)
		}
		if merge(merge(a, b), c) != merge(a, merge(b, c)) {
			t.Fatalf("not associative: %+v %+v %+v", a, b, c)
		}
		if merge(a, a) != a {
			t.Fatalf("not idempotent: %+v", a)
		}
		if _, changed := Merge(a, a); changed {
			t.Fatalf("merging a write with itself reported a change")
		}
		// Compare is antisymmetric and zero only for identical payloads.
		if Compare(&a, &b) != -Compare(&b, &a) {
			t.Fatalf("Compare not antisymmetric")
		}
		if (Compare(&a, &b) == 0) != (a == b) {
			t.Fatalf("Compare zero for different writes: %+v %+v", a, b)
		}
	})
}

func TestMergeAnyPermutation(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 12).Draw(t, "n")
		ws := make([]Point, n)
		for i := range ws {
			ws[i] = genWrite(t, "w")
		}
		want := merge(ws...)
		perm := rapid.Permutation(ws).Draw(t, "perm")
		// Deliver with duplicates too: at-least-once delivery.
		dup := rapid.IntRange(0, n-1).Draw(t, "dup")
		perm = append(perm, ws[dup])
		if got := merge(perm...); got != want {
			t.Fatalf("permutation changed the winner: %+v vs %+v", got, want)
		}
		// The winner is one of the writes and beats every one of them.
		for i := range ws {
			if Compare(&want, &ws[i]) < 0 {
				t.Fatalf("winner %+v loses to %+v", want, ws[i])
			}
		}
	})
}

func TestCompareOrder(t *testing.T) {
	base := Point{Node: uuid.New(), Type: "t", Key: "0", Time: 10, Origin: uuid.MustParse("00000000-0000-0000-0000-000000000005")}
	later := base
	later.Time = 11
	bigOrigin := base
	bigOrigin.Origin = uuid.MustParse("00000000-0000-0000-0000-000000000006")
	tomb := base
	tomb.Tombstone = true
	bigValue := base
	bigValue.Value = 1
	negValue := base
	negValue.Value = -1
	text := base
	text.Text = "x"
	cases := []struct {
		name          string
		winner, loser Point
	}{
		{"later time wins", later, bigOrigin},
		{"greater origin wins on equal time", bigOrigin, tomb},
		{"tombstone wins a full tie", tomb, bigValue},
		{"greater value wins", bigValue, base},
		{"zero beats negative", base, negValue},
		{"greater text wins", text, base},
	}
	for _, c := range cases {
		if Compare(&c.winner, &c.loser) <= 0 || Compare(&c.loser, &c.winner) >= 0 {
			t.Errorf("%s: order wrong", c.name)
		}
		if got, changed := Merge(c.loser, c.winner); got != c.winner || !changed {
			t.Errorf("%s: Merge kept the loser", c.name)
		}
		if got, changed := Merge(c.winner, c.loser); got != c.winner || changed {
			t.Errorf("%s: Merge replaced the winner", c.name)
		}
	}
}
