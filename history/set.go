package history

import (
	"slices"

	"github.com/siot-io/siot/crdt"
)

// WindowMs is the span of physical time one window of a register's
// history covers: an hour. Windows are what the store compacts into
// blocks and what digest repair compares.
const WindowMs = 3_600_000

// WindowOf returns the window of time t: its physical ms divided by
// WindowMs.
func WindowOf(t crdt.Timestamp) int64 { return t.Physical() / WindowMs }

// Point returns sample s of register r as the point it was written as.
func Point(r crdt.Register, s *Sample) crdt.Point {
	return crdt.Point{Node: r.Node, Parent: r.Parent, Type: r.Type, Key: r.Key,
		Value: s.Value, Text: s.Text, Tombstone: s.Tombstone, Time: s.Time, Origin: s.Origin}
}

// FromPoint returns the sample a point adds to its register's history.
func FromPoint(p *crdt.Point) Sample {
	return Sample{Time: p.Time, Origin: p.Origin, Value: p.Value, Text: p.Text, Tombstone: p.Tombstone}
}

// Digest returns the digest of register r's samples: the sum of their
// points' digests (crdt.PointDigest), so a sample counts as the point it
// was, and a window's digest is comparable on every replica whatever
// blocks hold it.
func Digest(r crdt.Register, samples []Sample) crdt.Digest {
	var d crdt.Digest
	for i := range samples {
		p := Point(r, &samples[i])
		d = d.Add(crdt.PointDigest(&p))
	}
	return d
}

// Merge returns the union of two sample sets, each sorted by (time,
// origin) with no key twice (as Decode returns them), sorted the same
// way. A key is one write, so both sides should agree on its content;
// when a faulty replica says otherwise, the content the LWW order ranks
// higher (crdt.Compare: tombstone, then value, then text) is kept, so
// every replica ends with the same set whatever the order of merges.
// Merge is commutative, associative and idempotent. It allocates a new
// slice; a and b are not changed.
func Merge(a, b []Sample) []Sample {
	out := make([]Sample, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := a[i].compare(&b[j]); {
		case c < 0:
			out = append(out, a[i])
			i++
		case c > 0:
			out = append(out, b[j])
			j++
		default:
			out = append(out, higher(&a[i], &b[j]))
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// higher returns whichever of two samples of one key the LWW order ranks
// higher.
func higher(a, b *Sample) Sample {
	pa := Point(crdt.Register{}, a)
	pb := Point(crdt.Register{}, b)
	if crdt.Compare(&pb, &pa) > 0 {
		return *b
	}
	return *a
}

// Windows splits sorted samples into runs of one window each, in order.
func Windows(samples []Sample) [][]Sample {
	var out [][]Sample
	for len(samples) > 0 {
		w := WindowOf(samples[0].Time)
		n, _ := slices.BinarySearchFunc(samples, w+1, func(s Sample, w int64) int {
			if WindowOf(s.Time) < w {
				return -1
			}
			return 1
		})
		out = append(out, samples[:n:n])
		samples = samples[n:]
	}
	return out
}
