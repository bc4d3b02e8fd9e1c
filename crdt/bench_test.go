package crdt

import (
	"fmt"
	"testing"

	"github.com/google/uuid"
)

// sensorBatch returns n typical numeric sensor points from one device: five
// types, key "0", float32-exact values, readings 100 ms apart.
func sensorBatch(n int) []Point {
	node, origin := uuid.New(), uuid.New()
	types := []string{"temp", "humidity", "voltage", "current", "rssi"}
	pts := make([]Point, n)
	for i := range pts {
		pts[i] = Point{Node: node, Type: types[i%len(types)], Key: "0", Value: 20 + float64(i%40)/4,
			Time: NewTimestamp(1_800_000_000_000+int64(i)*100, 0), Origin: origin}
	}
	return pts
}

func BenchmarkEncodePoint(b *testing.B) {
	p := sensorBatch(1)[0]
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPoint(buf[:0], &p)
	}
	b.ReportMetric(float64(len(buf)), "bytes/point")
}

func BenchmarkDecodePoint(b *testing.B) {
	p := sensorBatch(1)[0]
	enc := AppendPoint(nil, &p)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodePoint(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeBatch1000(b *testing.B) {
	pts := sensorBatch(1000)
	var enc []byte
	b.ReportAllocs()
	for b.Loop() {
		enc = AppendBatch(enc[:0], pts)
	}
	b.ReportMetric(float64(len(enc))/1000, "bytes/point")
}

func BenchmarkDecodeBatch1000(b *testing.B) {
	enc := AppendBatch(nil, sensorBatch(1000))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeBatch(enc, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMerge(b *testing.B) {
	pts := sensorBatch(2)
	cur, in := pts[0], pts[1]
	in.Type = cur.Type
	b.ReportAllocs()
	for b.Loop() {
		cur, _ = Merge(cur, in)
	}
	_ = cur
}

// BenchmarkDigestUpdate is the O(1) incremental update: remove the old
// point's digest from a set digest and add the new one's.
func BenchmarkDigestUpdate(b *testing.B) {
	pts := sensorBatch(2)
	dOld, dNew := PointDigest(&pts[0]), PointDigest(&pts[1])
	var set Digest
	b.ReportAllocs()
	for b.Loop() {
		set = set.Sub(dOld).Add(dNew)
	}
	_ = set
}

// BenchmarkPointDigest hashes one point (SHA-256 of its digest input), the
// other cost of a write's digest maintenance.
func BenchmarkPointDigest(b *testing.B) {
	for _, textLen := range []int{0, 1000} {
		b.Run(fmt.Sprintf("text%d", textLen), func(b *testing.B) {
			p := sensorBatch(1)[0]
			p.Text = string(make([]byte, textLen))
			b.ReportAllocs()
			var d Digest
			for b.Loop() {
				d = PointDigest(&p)
			}
			_ = d
		})
	}
}

func BenchmarkResolvePlacementsTree1000(b *testing.B) {
	regs := make([]EdgeRegister, 1000)
	for i := range regs {
		regs[i] = EdgeRegister{Parent: nodeID(i / 10), Child: nodeID(i + 1), Time: Timestamp(i + 1), Origin: originID(0)}
	}
	b.ReportAllocs()
	for b.Loop() {
		ResolvePlacements(regs)
	}
}
