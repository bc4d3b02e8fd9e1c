package crdt

import (
	"bytes"
	"math"
	"strings"
)

// Compare orders two writes to the same register. It returns a positive
// number when a beats b, a negative one when b beats a, and zero only when
// the writes are identical in every payload field.
//
// The order, from most to least significant:
//  1. Time (the HLC): the later write wins.
//  2. Origin, as 16 bytes compared lexicographically: the greater wins.
//  3. Tombstone: on a full tie a deletion beats a value.
//  4. Value, by IEEE-754 total order (Points are normalized, so -0 and NaN
//     never occur): the greater wins.
//  5. Text, compared bytewise: the greater wins.
//
// Steps 3 to 5 only decide between two different writes that claim the same
// time and origin, which a correct writer never produces; they exist so that
// even then every replica keeps the same winner. Because Compare is a total
// order on the payload, the merge it defines (keep the greatest) is
// commutative, associative and idempotent.
//
// Compare ignores the identity fields (Node, Parent, Type, Key): the caller
// compares writes to one register.
func Compare(a, b *Point) int {
	switch {
	case a.Time > b.Time:
		return 1
	case a.Time < b.Time:
		return -1
	}
	if c := bytes.Compare(a.Origin[:], b.Origin[:]); c != 0 {
		return c
	}
	if a.Tombstone != b.Tombstone {
		if a.Tombstone {
			return 1
		}
		return -1
	}
	if ka, kb := totalOrderKey(a.Value), totalOrderKey(b.Value); ka != kb {
		if ka > kb {
			return 1
		}
		return -1
	}
	return strings.Compare(a.Text, b.Text)
}

// totalOrderKey maps a float64 to a uint64 whose unsigned order is the
// IEEE-754 total order of the floats.
func totalOrderKey(f float64) uint64 {
	b := math.Float64bits(f)
	if b>>63 == 1 {
		return ^b
	}
	return b | 1<<63
}

// Merge returns the winner of the register holding cur after in arrives, and
// whether it differs from cur (a stale or duplicate write changes nothing).
// cur and in must be writes to the same register.
func Merge(cur, in Point) (Point, bool) {
	if Compare(&in, &cur) > 0 {
		return in, true
	}
	return cur, false
}
