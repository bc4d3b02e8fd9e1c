package transport

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/siot-io/siot/crdt"
)

// repairPartialOnError would allow a decoder to return a partial value
// with its error; the decoders return nil with every error.
const repairPartialOnError = false

// repairCursorMax is the longest cursor (ListQuery.After, Listing.After,
// Listing.Next) the repair decoders accept.
const repairCursorMax = crdt.MaxTypeLen + crdt.MaxKeyLen + 64

// Test values: distinct, deterministic, every byte in use.

func rid(i int) uuid.UUID {
	var u uuid.UUID
	for j := range u {
		u[j] = byte(i*31 + j*7 + 1)
	}
	return u
}

func rdig(i int) crdt.Digest {
	return crdt.Digest{Hi: uint64(i+1) * 0x9e3779b97f4a7c15, Lo: ^uint64(i) * 0xbf58476d1ce4e5b9}
}

func rshort(i int) ShortDigest { return Short(rdig(i)) }

// rcursor returns a cursor of n bytes, all values present.
func rcursor(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seed + i*13)
	}
	return b
}

// rchildren returns n children; from 2 on, active and inactive ones
// occur.
func rchildren(seed, n int) []ChildSum {
	out := make([]ChildSum, n)
	for i := range out {
		out[i] = ChildSum{
			ID: rid(seed + i), Active: i%3 != 0,
			Edge: rshort(seed + i), Own: rshort(-seed - i), Below: rshort(5000 + seed + i),
		}
	}
	return out
}

// rflags returns n ChildFlags records: record i has the flags of the low
// 4 bits of i (bit 0 edge, 1 own, 2 below, 3 aggregated), so from 16 on
// every combination occurs; tags are distinct and use every byte, but
// with seed 0 the first is 0, and the second is always 2^64-1.
func rflags(seed, n int) []ChildFlags {
	out := make([]ChildFlags, n)
	for i := range out {
		out[i] = ChildFlags{
			Tag:  uint64(seed+i) * 0x9e3779b97f4a7c15,
			Edge: i&1 != 0, Own: i&2 != 0, Below: i&4 != 0, Aggregated: i&8 != 0,
		}
	}
	if n > 1 {
		out[1].Tag = 1<<64 - 1
	}
	return out
}

// rkey returns a sketch key of keyLen bytes, the rest zero.
func rkey(seed, keyLen int) crdt.SketchKey {
	var k crdt.SketchKey
	for j := range keyLen {
		k[j] = byte(seed*29 + j*5 + 1)
	}
	return k
}

// rsketch returns the encoding of a sketch of cells cells of keyLen-byte
// keys holding n keys.
func rsketch(seed, cells, keyLen, n int) []byte {
	s := crdt.NewSketch(cells, keyLen)
	for i := range n {
		s.Add(rkey(seed+i, keyLen))
	}
	return s.AppendBinary(nil)
}

// raggregate returns the encoding of a sketch of cells cells of pts'
// PointKeys, as a reply's Aggregate.
func raggregate(pts []crdt.Point, cells int) []byte {
	s := crdt.NewSketch(cells, crdt.PointKeyLen)
	for i := range pts {
		s.Add(crdt.PointKey(&pts[i]))
	}
	return s.AppendBinary(nil)
}

// rbuckets returns a child bucket set, every byte value distinct.
func rbuckets(seed int) (b [32]byte) {
	for i := range b {
		b[i] = byte(seed + i*37)
	}
	return b
}

// allBuckets is the set of every child bucket.
var allBuckets = [32]byte{
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
}

// repairRequestSample returns a request with every list non-empty: full
// and extreme digests, every density the decoder accepts at its ends,
// cursors and sketches absent, short and at the limit, salts of 0, 2^32-1
// and with every byte distinct, multi-byte varints (a cursor over 127
// bytes, 300 hashes, a sketch of 189 bytes, 200 tags).
func repairRequestSample() *RepairRequest {
	hashes := make([]uint64, 300)
	for i := range hashes {
		hashes[i] = uint64(i) * 0xff51afd7ed558ccd
	}
	hashes[1] = 1<<64 - 1
	tags := make([]uint32, 200)
	for i := range tags {
		tags[i] = uint32(i) * 0x9e3779b9
	}
	tags[1] = 1<<32 - 1
	return &RepairRequest{
		Root: rid(1),
		Compare: []NodeSub{
			{Node: rid(2), Sub: rdig(2), Own: rdig(-2), Density: 1}, {Node: rid(3), Sub: rdig(3)}, {Node: rid(4), Own: rdig(4), Density: 2},
			{Node: uuid.Max, Sub: crdt.Digest{Hi: 1<<64 - 1, Lo: 1<<64 - 1}, Own: crdt.Digest{Hi: 1<<64 - 1, Lo: 1<<64 - 1}, Density: MaxDensity},
			{Node: uuid.Nil},
		},
		List: []ListQuery{
			{Node: rid(4)}, {Node: rid(5), After: rcursor(5, 40)},
			{Node: rid(6), After: rcursor(6, repairCursorMax)}, {Node: rid(7), After: []byte{0}},
			{Node: rid(8), After: rcursor(8, 200)},
		},
		Buckets: []BucketQuery{{Node: rid(9)}, {Node: rid(10), Bucket: 0x7f}, {Node: rid(11), Bucket: 0xff}},
		Fetch: []FetchQuery{
			{Node: rid(12), Hashes: hashes}, {Node: rid(13)},
			{Node: rid(14), Hashes: []uint64{RegisterHash("temperature", "value")}},
		},
		Edges: []EdgeQuery{{Child: rid(15), Parent: rid(16)}, {Child: rid(17), Parent: uuid.Nil}},
		ChildSketch: []ChildSketchQuery{
			{Node: rid(18), Buckets: rbuckets(18), Salt: 0x01234567, Sketch: rsketch(18, 9, 16, 4)},
			{Node: rid(19)},
			{Node: uuid.Max, Buckets: allBuckets, Salt: 1<<32 - 1, Sketch: rsketch(19, 3, 16, 1)},
			{Node: uuid.Nil, Buckets: [32]byte{0: 1}, Sketch: []byte{0}},
			{Node: rid(22), Salt: 0x80},
		},
		TagFetch: []TagFetch{
			{Node: rid(20), Tags: tags}, {Node: rid(21)},
			{Node: uuid.Max, Tags: []uint32{uint32(RegisterHash("temperature", "value") >> 32)}},
		},
	}
}

// repairReplySample returns a reply with every list non-empty: summaries
// with children, with buckets and with neither, below-equal, each of them
// aggregated or not; child diffs OK with each combination of children
// both sides hold (every combination of their flags), children only the
// answerer holds and missing tags, OK and empty, not OK; listings with
// and without More, Next and After; a crdt batch and an aggregate sketch;
// counts needing every int width.
func repairReplySample() *RepairReply {
	buckets := make([]BucketSum, 256)
	for i := range buckets {
		buckets[i] = BucketSum{Bucket: byte(i), Digest: rshort(1000 + i)}
	}
	entries := make([]ListEntry, 200)
	for i := range entries {
		entries[i] = ListEntry{Hash: uint64(i) * 0xc4ceb9fe1a85ec53, Digest: rshort(2000 + i)}
	}
	entries[0].Hash = 1<<64 - 1
	missing := make([]uint64, 130)
	for i := range missing {
		missing[i] = uint64(i) * 0x94d049bb133111eb
	}
	missing[1] = 1<<64 - 1
	return &RepairReply{
		Summaries: []Summary{
			{Node: rid(20), Own: rdig(20), Children: rchildren(100, 5)},
			{Node: rid(21), Own: rdig(21), Many: true, Buckets: buckets},
			{Node: rid(22), Own: rdig(22), Many: true, Buckets: buckets[7:9], Aggregated: true},
			{Node: rid(23)},
			{Node: rid(24), Own: rdig(24), Many: true},
			{Node: rid(25), Own: rdig(25), Children: rchildren(200, 130)},
			{Node: rid(26), Own: rdig(26), BelowEqual: true},
			{Node: rid(27), Own: rdig(27), BelowEqual: true, Aggregated: true},
			{Node: rid(28), Own: rdig(28), Children: rchildren(250, 2), Aggregated: true},
			{Node: uuid.Max, Aggregated: true},
			{Node: uuid.Nil, Many: true, Aggregated: true},
		},
		Listings: []Listing{
			{Node: rid(30), Entries: entries, More: true, Next: rcursor(30, 100)},
			{Node: rid(31), Entries: entries[5:6], After: rcursor(31, repairCursorMax)},
			{Node: rid(32), Entries: entries[:3], More: true, Next: rcursor(32, repairCursorMax), After: rcursor(33, 1)},
			{Node: rid(33)},
			{Node: rid(34), More: true, Next: []byte{0}},
		},
		Buckets: []BucketChildren{
			{Node: rid(40), Bucket: 0x12, Children: rchildren(300, 4)},
			{Node: rid(41), Bucket: 0xff},
			{Node: rid(42), Children: rchildren(400, 1)},
		},
		ChildDiffs: []ChildDiff{
			{Node: rid(50), OK: true, Both: rflags(0, 16), Children: rchildren(500, 4), Missing: missing},
			{Node: rid(51)},
			{Node: rid(52), OK: true},
			{Node: rid(53), OK: true, Children: rchildren(600, 130)},
			{Node: rid(54), OK: true, Missing: []uint64{0}},
			{Node: uuid.Max},
			{Node: rid(55), OK: true, Both: rflags(700, 130)},
			{Node: rid(56), OK: true, Both: rflags(900, 1), Children: rchildren(900, 1)},
			{Node: rid(57), OK: true, Both: rflags(950, 2), Missing: missing[:2]},
		},
		Points:    crdt.AppendBatch(nil, wireSensorPoints(5)),
		Answered:  [ansKinds]int{4, 5, 300, 70_000, 1 << 40, 200, 1 << 62},
		Aggregate: raggregate(wireSensorPoints(5), 6),
	}
}

// repairRequests returns requests to round-trip: the full sample, the
// empty one, and each kind of query alone.
func repairRequests() []*RepairRequest {
	full := repairRequestSample()
	return []*RepairRequest{
		full, {}, {Root: rid(1)}, {Root: uuid.Max},
		{Compare: full.Compare}, {List: full.List}, {Buckets: full.Buckets}, {Fetch: full.Fetch}, {Edges: full.Edges},
		{ChildSketch: full.ChildSketch}, {TagFetch: full.TagFetch},
		{Compare: full.Compare[:1]}, {List: full.List[:1]}, {Fetch: full.Fetch[1:2]},
		{ChildSketch: full.ChildSketch[1:2]}, {ChildSketch: full.ChildSketch[4:]}, {TagFetch: full.TagFetch[1:2]},
	}
}

// repairReplies returns replies to round-trip, like repairRequests.
func repairReplies() []*RepairReply {
	full := repairReplySample()
	return []*RepairReply{
		full, {}, {Answered: full.Answered}, {Answered: [ansKinds]int{1 << 62, 0, 0, 0, 0, 0, 1}},
		{Summaries: full.Summaries}, {Listings: full.Listings}, {Buckets: full.Buckets}, {Points: full.Points},
		{ChildDiffs: full.ChildDiffs}, {Aggregate: full.Aggregate},
		{Summaries: full.Summaries[3:4]}, {Summaries: full.Summaries[6:7]}, {Listings: full.Listings[3:4]},
		{Buckets: full.Buckets[1:2]}, {ChildDiffs: full.ChildDiffs[1:2]}, {ChildDiffs: full.ChildDiffs[2:3]},
		{ChildDiffs: full.ChildDiffs[6:7]}, {ChildDiffs: full.ChildDiffs[7:9]},
		{Summaries: full.Summaries[7:8], Aggregate: []byte{0}},
	}
}

func mustEncodeRequest(tb testing.TB, r *RepairRequest) []byte {
	tb.Helper()
	msg, err := EncodeRepairRequest(r)
	if err != nil {
		tb.Fatalf("EncodeRepairRequest: %v", err)
	}
	return msg
}

func mustEncodeReply(tb testing.TB, r *RepairReply) []byte {
	tb.Helper()
	msg, err := EncodeRepairReply(r)
	if err != nil {
		tb.Fatalf("EncodeRepairReply: %v", err)
	}
	return msg
}

// TestRepairRoundTrip encodes every sample request and reply, checks the
// frame header, decodes it back to an equal value and re-encodes it to the
// same bytes. The decoded value does not alias the frame.
func TestRepairRoundTrip(t *testing.T) {
	for i, req := range repairRequests() {
		msg := mustEncodeRequest(t, req)
		if msg[0] != Version || MsgType(msg[1]) != MsgRepair {
			t.Fatalf("request %d: header % x", i, msg[:2])
		}
		got, err := DecodeRepairRequest(msg, len(msg))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, req) {
			t.Fatalf("request %d: round trip\n got %+v\nwant %+v", i, got, req)
		}
		if again := mustEncodeRequest(t, got); !bytes.Equal(again, msg) {
			t.Fatalf("request %d: re-encoding differs\n got % x\nwant % x", i, again, msg)
		}
		clear(msg)
		if !reflect.DeepEqual(got, req) {
			t.Fatalf("request %d: the decoded value changed with the frame", i)
		}
	}
	for i, rep := range repairReplies() {
		msg := mustEncodeReply(t, rep)
		if msg[0] != Version || MsgType(msg[1]) != MsgRepairReply {
			t.Fatalf("reply %d: header % x", i, msg[:2])
		}
		got, err := DecodeRepairReply(msg, len(msg))
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, rep) {
			t.Fatalf("reply %d: round trip\n got %+v\nwant %+v", i, got, rep)
		}
		if again := mustEncodeReply(t, got); !bytes.Equal(again, msg) {
			t.Fatalf("reply %d: re-encoding differs\n got % x\nwant % x", i, again, msg)
		}
		clear(msg)
		if !reflect.DeepEqual(got, rep) {
			t.Fatalf("reply %d: the decoded value changed with the frame", i)
		}
	}
	if pts, err := crdt.DecodeBatch(repairReplySample().Points, 0); err != nil || len(pts) != 5 {
		t.Fatalf("sample points: %d, %v", len(pts), err)
	}
	if sk, err := crdt.DecodeSketch(repairReplySample().Aggregate, crdt.PointKeyLen); err != nil || sk.Cells() != 6 {
		t.Fatalf("sample aggregate: %v", err)
	}
	for i, c := range repairRequestSample().ChildSketch[:3] {
		if c.Sketch == nil {
			continue
		}
		if _, err := crdt.DecodeSketch(c.Sketch, 16); err != nil {
			t.Fatalf("sample child sketch %d: %v", i, err)
		}
	}
}

// TestRepairEncodingNormalizes documents what a round trip does not
// keep: empty lists, cursors, sketches and aggregates come back nil; a
// Summary keeps only the list its kind selects (none when BelowEqual, which
// wins over Many), and a ChildDiff that is not OK carries nothing (no
// Both, Children or Missing).
func TestRepairEncodingNormalizes(t *testing.T) {
	req := &RepairRequest{
		Compare: []NodeSub{}, List: []ListQuery{{Node: rid(1), After: []byte{}}},
		Fetch: []FetchQuery{{Node: rid(2), Hashes: []uint64{}}}, Edges: []EdgeQuery{},
		ChildSketch: []ChildSketchQuery{{Node: rid(3), Buckets: allBuckets, Salt: 9, Sketch: []byte{}}},
		TagFetch:    []TagFetch{{Node: rid(4), Tags: []uint32{}}},
	}
	gotReq, err := DecodeRepairRequest(mustEncodeRequest(t, req), 0)
	want := &RepairRequest{
		List: []ListQuery{{Node: rid(1)}}, Fetch: []FetchQuery{{Node: rid(2)}},
		ChildSketch: []ChildSketchQuery{{Node: rid(3), Buckets: allBuckets, Salt: 9}}, TagFetch: []TagFetch{{Node: rid(4)}},
	}
	if err != nil || !reflect.DeepEqual(gotReq, want) {
		t.Errorf("request with empty lists: %+v, %v; want %+v", gotReq, err, want)
	}
	if got, err := DecodeRepairRequest(mustEncodeRequest(t, &RepairRequest{ChildSketch: []ChildSketchQuery{}, TagFetch: []TagFetch{}}), 0); err != nil || !reflect.DeepEqual(got, &RepairRequest{}) {
		t.Errorf("request with empty child sketch and tag fetch lists: %+v, %v", got, err)
	}
	rep := &RepairReply{
		Summaries: []Summary{
			{Node: rid(3), Children: []ChildSum{}, Buckets: []BucketSum{{Bucket: 1}}},
			{Node: rid(4), Many: true, Children: rchildren(5, 2), Buckets: []BucketSum{}},
			{Node: rid(8), Own: rdig(8), BelowEqual: true, Many: true, Children: rchildren(9, 2), Buckets: []BucketSum{{Bucket: 2}}},
			{Node: rid(10), BelowEqual: true, Aggregated: true, Children: rchildren(11, 1)},
		},
		Listings: []Listing{{Node: rid(6), Entries: []ListEntry{}, Next: []byte{}, After: []byte{}}},
		Buckets:  []BucketChildren{{Node: rid(7), Children: []ChildSum{}}},
		ChildDiffs: []ChildDiff{
			{Node: rid(12), Both: rflags(12, 3), Children: rchildren(13, 2), Missing: []uint64{1, 2}},
			{Node: rid(14), OK: true, Both: []ChildFlags{}, Children: []ChildSum{}, Missing: []uint64{}},
			{Node: rid(15), Both: rflags(15, 1)},
		},
		Points:    []byte{},
		Aggregate: []byte{},
	}
	gotRep, err := DecodeRepairReply(mustEncodeReply(t, rep), 0)
	wantRep := &RepairReply{
		Summaries: []Summary{
			{Node: rid(3)}, {Node: rid(4), Many: true},
			{Node: rid(8), Own: rdig(8), BelowEqual: true}, {Node: rid(10), BelowEqual: true, Aggregated: true},
		},
		Listings:   []Listing{{Node: rid(6)}},
		Buckets:    []BucketChildren{{Node: rid(7)}},
		ChildDiffs: []ChildDiff{{Node: rid(12)}, {Node: rid(14), OK: true}, {Node: rid(15)}},
	}
	if err != nil || !reflect.DeepEqual(gotRep, wantRep) {
		t.Errorf("reply with empty and contradictory lists: %+v, %v; want %+v", gotRep, err, wantRep)
	}
	if got, err := DecodeRepairReply(mustEncodeReply(t, &RepairReply{ChildDiffs: []ChildDiff{}, Aggregate: []byte{}}), 0); err != nil || !reflect.DeepEqual(got, &RepairReply{}) {
		t.Errorf("reply with empty child diffs and aggregate: %+v, %v", got, err)
	}
}

// cat concatenates byte strings.
func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

func ub(u uuid.UUID) []byte   { return u[:] }
func db(d crdt.Digest) []byte { b := d.Bytes(); return b[:] }
func sb(s ShortDigest) []byte { return s[:] }
func uvb(n uint64) []byte     { return binary.AppendUvarint(nil, n) }
func be64(n uint64) []byte    { return binary.BigEndian.AppendUint64(nil, n) }
func be32(n uint32) []byte    { return binary.BigEndian.AppendUint32(nil, n) }

// childRec is a ChildSum record by hand: id, active (0 or 1), edge, own,
// below.
func childRec(c ChildSum) []byte {
	active := byte(0)
	if c.Active {
		active = 1
	}
	return cat(ub(c.ID), []byte{active}, sb(c.Edge), sb(c.Own), sb(c.Below))
}

// flagsRec is a ChildFlags record by hand: tag 8 big-endian, flags (bit 0
// edge, 1 own, 2 below, 3 aggregated).
func flagsRec(c ChildFlags) []byte {
	flags := byte(0)
	for i, set := range []bool{c.Edge, c.Own, c.Below, c.Aggregated} {
		if set {
			flags |= 1 << i
		}
	}
	return cat(be64(c.Tag), []byte{flags})
}

// TestRepairWireLayout pins the wire format: the msgpack keys of both
// bodies and the byte layout of every record, written here by hand from
// the layout (uuids 16 bytes, digests 16 bytes big-endian, short digests
// their first 8, flag and kind bytes, lengths and counts uvarints, hashes,
// child tags and missing tags 8 bytes big-endian, salts and register tags
// 4), and the query kinds indexing the answered counts.
func TestRepairWireLayout(t *testing.T) {
	d := rdig(9)
	if s := Short(d); !bytes.Equal(s[:], db(d)[:8]) {
		t.Errorf("Short(%v) = % x, want the first 8 bytes", d, s)
	}
	sum := sha256.Sum256([]byte("temperature\x00value"))
	if got, want := RegisterHash("temperature", "value"), binary.BigEndian.Uint64(sum[:8]); got != want {
		t.Errorf("RegisterHash = %#x, want %#x", got, want)
	}
	// The answered counts are an append-only enum on the wire.
	if got, want := []int{AnsCompare, AnsList, AnsBuckets, AnsFetch, AnsEdges, AnsChildSketch, AnsTagFetch, ansKinds}, []int{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(got, want) {
		t.Errorf("query kinds %v, want %v", got, want)
	}
	if MaxDensity != 64 {
		t.Errorf("MaxDensity = %d, want 64", MaxDensity)
	}

	sk := []byte("sketch")
	req := &RepairRequest{
		Root:    rid(1),
		Compare: []NodeSub{{Node: rid(2), Sub: rdig(2), Own: rdig(-2), Density: MaxDensity}, {Node: rid(9), Sub: rdig(9)}},
		List:    []ListQuery{{Node: rid(3), After: []byte("xy")}, {Node: rid(4)}},
		Buckets: []BucketQuery{{Node: rid(5), Bucket: 7}},
		Fetch:   []FetchQuery{{Node: rid(6), Hashes: []uint64{1, 1<<64 - 2}}},
		Edges:   []EdgeQuery{{Child: rid(7), Parent: rid(8)}},
		ChildSketch: []ChildSketchQuery{
			{Node: rid(10), Buckets: [32]byte{0: 0x01, 15: 0x80, 31: 0xc0}, Salt: 0x01020304, Sketch: sk}, {Node: rid(11)},
			{Node: rid(12), Salt: 1<<32 - 2},
		},
		TagFetch: []TagFetch{{Node: rid(12), Tags: []uint32{1, 1<<32 - 2}}, {Node: rid(13)}},
	}
	var rw map[string]any
	if err := msgpack.Unmarshal(mustEncodeRequest(t, req)[headerLen:], &rw); err != nil {
		t.Fatal(err)
	}
	bset := make([]byte, 32)
	bset[0], bset[15], bset[31] = 0x01, 0x80, 0xc0
	wantReq := map[string]any{
		"root":  ub(rid(1)),
		"cmp":   cat(ub(rid(2)), db(rdig(2)), db(rdig(-2)), []byte{64}, ub(rid(9)), db(rdig(9)), db(crdt.Digest{}), []byte{0}),
		"list":  cat(ub(rid(3)), []byte{2, 'x', 'y'}, ub(rid(4)), []byte{0}),
		"bkt":   cat(ub(rid(5)), []byte{7}),
		"fetch": cat(ub(rid(6)), []byte{2}, be64(1), be64(1<<64-2)),
		"edges": cat(ub(rid(7)), ub(rid(8))),
		"csk": cat(ub(rid(10)), bset, []byte{1, 2, 3, 4}, []byte{6}, sk, ub(rid(11)), make([]byte, 32), []byte{0, 0, 0, 0}, []byte{0},
			ub(rid(12)), make([]byte, 32), []byte{0xff, 0xff, 0xff, 0xfe}, []byte{0}),
		"ftag": cat(ub(rid(12)), []byte{2}, []byte{0, 0, 0, 1}, []byte{0xff, 0xff, 0xff, 0xfe}, ub(rid(13)), []byte{0}),
	}
	if !reflect.DeepEqual(rw, wantReq) {
		t.Errorf("request body\n got %x\nwant %x", rw, wantReq)
	}

	c1 := ChildSum{ID: rid(11), Active: true, Edge: rshort(11), Own: rshort(12), Below: rshort(13)}
	c2 := ChildSum{ID: rid(13), Edge: rshort(13)}
	c3 := ChildSum{ID: rid(17), Own: rshort(17)}
	c4 := ChildSum{ID: rid(18), Active: true, Below: rshort(18)}
	f1 := ChildFlags{Tag: 0x0102030405060708, Edge: true}
	f2 := ChildFlags{Tag: 1<<64 - 1, Own: true, Aggregated: true}
	f3 := ChildFlags{Below: true}
	f4 := ChildFlags{Tag: 1, Edge: true, Own: true, Below: true, Aggregated: true}
	f5 := ChildFlags{Tag: 1 << 63}
	rep := &RepairReply{
		Summaries: []Summary{
			{Node: rid(10), Own: rdig(10), Children: []ChildSum{c1, c2}},
			{Node: rid(14), Own: rdig(14), Many: true, Buckets: []BucketSum{{Bucket: 3, Digest: rshort(3)}}},
			{Node: rid(19), Own: rdig(19), BelowEqual: true},
			{Node: rid(20), Own: rdig(20), Children: []ChildSum{c3}, Aggregated: true},
			{Node: rid(21), Own: rdig(21), Many: true, Buckets: []BucketSum{{Bucket: 0xff, Digest: rshort(4)}}, Aggregated: true},
			{Node: rid(22), Own: rdig(22), BelowEqual: true, Aggregated: true},
		},
		Listings: []Listing{{Node: rid(15), After: []byte("a"), More: true, Next: []byte("bc"), Entries: []ListEntry{{Hash: 5, Digest: rshort(5)}}}},
		Buckets:  []BucketChildren{{Node: rid(16), Bucket: 9, Children: []ChildSum{c2}}},
		ChildDiffs: []ChildDiff{
			{Node: rid(23), OK: true, Both: []ChildFlags{f1, f2, f3}, Children: []ChildSum{c4, c1}, Missing: []uint64{7, 1<<64 - 1}},
			{Node: rid(24)},
			{Node: rid(25), OK: true},
			{Node: rid(26), OK: true, Both: []ChildFlags{f4, f5}},
		},
		Points:    []byte{0x90},
		Answered:  [ansKinds]int{1, 2, 3, 4, 5, 6, 7},
		Aggregate: []byte("agg"),
	}
	var pw map[string]any
	if err := msgpack.Unmarshal(mustEncodeReply(t, rep)[headerLen:], &pw); err != nil {
		t.Fatal(err)
	}
	wantRep := map[string]any{
		"sums": cat(ub(rid(10)), db(rdig(10)), []byte{0, 2}, childRec(c1), childRec(c2),
			ub(rid(14)), db(rdig(14)), []byte{1, 1, 3}, sb(rshort(3)),
			ub(rid(19)), db(rdig(19)), []byte{2},
			ub(rid(20)), db(rdig(20)), []byte{4, 1}, childRec(c3),
			ub(rid(21)), db(rdig(21)), []byte{5, 1, 0xff}, sb(rshort(4)),
			ub(rid(22)), db(rdig(22)), []byte{6}),
		"lists": cat(ub(rid(15)), []byte{1, 'a', 1, 2, 'b', 'c', 1}, be64(5), sb(rshort(5))),
		"bkts":  cat(ub(rid(16)), []byte{9, 1}, childRec(c2)),
		"cdiff": cat(ub(rid(23)), []byte{1},
			[]byte{3, 1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0x04},
			[]byte{2}, childRec(c4), childRec(c1), []byte{2}, be64(7), be64(1<<64-1),
			ub(rid(24)), []byte{0},
			ub(rid(25)), []byte{1, 0, 0, 0},
			ub(rid(26)), []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0x0f, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x00, 0, 0}),
		"pts":  []byte{0x90},
		"agg":  []byte("agg"),
		"done": []any{int8(1), int8(2), int8(3), int8(4), int8(5), int8(6), int8(7)},
	}
	if !reflect.DeepEqual(pw, wantRep) {
		t.Errorf("reply body\n got %#v\nwant %#v", pw, wantRep)
	}
	// The child records byte by byte: 41 bytes, the active byte at 16,
	// then edge, own and below.
	for _, tc := range []struct {
		c      ChildSum
		active byte
	}{{c1, 1}, {c2, 0}, {c3, 0}, {c4, 1}} {
		got := childRec(tc.c)
		if len(got) != 41 || !bytes.Equal(got[:16], ub(tc.c.ID)) || got[16] != tc.active || !bytes.Equal(got[17:25], sb(tc.c.Edge)) ||
			!bytes.Equal(got[25:33], sb(tc.c.Own)) || !bytes.Equal(got[33:], sb(tc.c.Below)) {
			t.Errorf("child record % x", got)
		}
	}
	// The ChildFlags records byte by byte: 9 bytes, the tag big-endian,
	// then the flags (1 edge, 2 own, 4 below, 8 aggregated).
	for _, tc := range []struct {
		c    ChildFlags
		want []byte
	}{
		{f1, []byte{1, 2, 3, 4, 5, 6, 7, 8, 1}},
		{f2, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a}},
		{f3, []byte{0, 0, 0, 0, 0, 0, 0, 0, 4}},
		{f4, []byte{0, 0, 0, 0, 0, 0, 0, 1, 0x0f}},
		{f5, []byte{0x80, 0, 0, 0, 0, 0, 0, 0, 0}},
		{ChildFlags{Tag: 0xfedcba9876543210, Own: true, Below: true}, []byte{0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10, 6}},
	} {
		if got := flagsRec(tc.c); !bytes.Equal(got, tc.want) {
			t.Errorf("flags record of %+v: % x, want % x", tc.c, got, tc.want)
		}
	}

	// The empty messages: a root, and the seven counts.
	for _, tc := range []struct {
		msg  []byte
		keys []string
	}{
		{mustEncodeRequest(t, &RepairRequest{}), []string{"root"}},
		{mustEncodeRequest(t, repairRequestSample()), []string{"bkt", "cmp", "csk", "edges", "fetch", "ftag", "list", "root"}},
		{mustEncodeReply(t, &RepairReply{}), []string{"done"}},
		{mustEncodeReply(t, repairReplySample()), []string{"agg", "bkts", "cdiff", "done", "lists", "pts", "sums"}},
	} {
		var m map[string]any
		if err := msgpack.Unmarshal(tc.msg[headerLen:], &m); err != nil {
			t.Fatal(err)
		}
		if got := sortedKeys(m); !slices.Equal(got, tc.keys) {
			t.Errorf("%s keys = %q, want %q", MsgType(tc.msg[1]), got, tc.keys)
		}
	}
	var m map[string]any
	if err := msgpack.Unmarshal(mustEncodeReply(t, &RepairReply{})[headerLen:], &m); err != nil || !reflect.DeepEqual(m["done"], []any{int8(0), int8(0), int8(0), int8(0), int8(0), int8(0), int8(0)}) {
		t.Errorf("empty reply body %#v, %v", m, err)
	}
}

// repairFrame is a hand-made repair frame.
type repairFrame struct {
	name  string
	msg   []byte
	reply bool // a MsgRepairReply, else a MsgRepair
	ok    bool // valid, else refused as crdt.ErrMalformed
}

func reqWireFrame(w repairRequestWire) []byte {
	b, err := encodeWire(MsgRepair, &w)
	if err != nil {
		panic(err)
	}
	return b
}

// replyWireFrame encodes w, with seven zero counts unless it has some.
func replyWireFrame(w repairReplyWire) []byte {
	if w.Answered == nil {
		w.Answered = make([]int, ansKinds)
	}
	b, err := encodeWire(MsgRepairReply, &w)
	if err != nil {
		panic(err)
	}
	return b
}

// repairHostile lists repair frames under the size limit that lie about
// their records or counts, or carry a flag, kind or density the format
// does not have. The decoders must refuse each with crdt.ErrMalformed.
func repairHostile() []repairFrame {
	u1, u2 := ub(rid(1)), ub(rid(2))
	d := db(rdig(1))
	c := childRec(ChildSum{ID: rid(3), Active: true, Edge: rshort(3), Own: rshort(4), Below: rshort(5)})
	badChild := func(flag byte) []byte { b := slices.Clone(c); b[16] = flag; return b }
	cur := func(n int) []byte { return cat(uvb(uint64(n)), make([]byte, n)) }
	overflow := bytes.Repeat([]byte{0xff}, 10) // a uvarint over 64 bits
	b32 := make([]byte, 32)                    // an empty child bucket set
	salt := []byte{0xde, 0xad, 0xbe, 0xef}     // a child sketch salt
	cmp := cat(u1, d, d, []byte{0})            // a valid compare record
	f := flagsRec(ChildFlags{Tag: 7, Own: true, Aggregated: true})
	badFlags := func(flags byte) []byte { b := slices.Clone(f); b[8] = flags; return b }
	req := func(name string, w repairRequestWire) repairFrame {
		return repairFrame{"request " + name, reqWireFrame(w), false, false}
	}
	rep := func(name string, w repairReplyWire) repairFrame {
		return repairFrame{"reply " + name, replyWireFrame(w), true, false}
	}
	raw := func(name string, m mp) repairFrame {
		return repairFrame{"reply " + name, m.frame(MsgRepairReply), true, false}
	}
	done := func(m mp) mp { return m.str("done").fixarr(7).raw(0, 0, 0, 0, 0, 0, 0) }
	return []repairFrame{
		{"request header only", AppendFrameHeader(nil, MsgRepair), false, false},
		{"reply header only", AppendFrameHeader(nil, MsgRepairReply), true, false},
		{"request body an int", mp{}.raw(0x07).frame(MsgRepair), false, false},
		{"request root of 3 bytes", mp{}.fixmap(1).str("root").bin([]byte{1, 2, 3}).frame(MsgRepair), false, false},
		{"request cmp an int", mp{}.fixmap(1).str("cmp").raw(0x07).frame(MsgRepair), false, false},
		{"request cmp a bin32 of 1 GiB", mp{}.fixmap(1).str("cmp").bin32(1<<30).raw(1, 2, 3).frame(MsgRepair), false, false},
		{"request csk an int", mp{}.fixmap(1).str("csk").raw(0x07).frame(MsgRepair), false, false},
		{"request ftag a string of 4 bytes", mp{}.fixmap(1).str("ftag").str("tags").frame(MsgRepair), false, false},
		req("compare: a third of a record", repairRequestWire{Compare: cat(u1, d[:15])}),
		req("compare: two thirds of a record", repairRequestWire{Compare: cat(u1, d)}),
		req("compare: no density", repairRequestWire{Compare: cat(u1, d, d)}),
		req("compare: a record and a half", repairRequestWire{Compare: cat(cmp, u2, d[:8])}),
		req("compare: density 65", repairRequestWire{Compare: cat(u1, d, d, []byte{MaxDensity + 1})}),
		req("compare: density 0x80", repairRequestWire{Compare: cat(u1, d, d, []byte{0x80})}),
		req("compare: density 0xff", repairRequestWire{Compare: cat(u1, d, d, []byte{0xff})}),
		req("compare: second density 65", repairRequestWire{Compare: cat(cmp, u2, d, d, []byte{65})}),
		req("compare: the old format, a sketch", repairRequestWire{Compare: cat(u1, d, d, uvb(3), []byte("abc"))}),
		req("list: no cursor length", repairRequestWire{List: u1}),
		req("list: cursor longer than its bytes", repairRequestWire{List: cat(u1, uvb(5), []byte("ab"))}),
		req("list: cursor of 257 bytes", repairRequestWire{List: cat(u1, cur(repairCursorMax+1))}),
		req("list: cursor of 64 KiB", repairRequestWire{List: cat(u1, cur(64<<10))}),
		req("list: cursor length 2^64-1", repairRequestWire{List: cat(u1, uvb(1<<64-1), make([]byte, 32))}),
		req("list: cursor length overflows", repairRequestWire{List: cat(u1, overflow, []byte{1})}),
		req("list: cursor length cut", repairRequestWire{List: cat(u1, []byte{0x80})}),
		req("list: second record cut", repairRequestWire{List: cat(u1, []byte{0}, u2[:8])}),
		req("buckets: no bucket byte", repairRequestWire{Buckets: u1}),
		req("buckets: two and a bit", repairRequestWire{Buckets: cat(u1, []byte{1}, u2, []byte{2}, u1[:1])}),
		req("fetch: no count", repairRequestWire{Fetch: u1}),
		req("fetch: count 2, one hash", repairRequestWire{Fetch: cat(u1, uvb(2), be64(1))}),
		req("fetch: count 129 in 1 KiB", repairRequestWire{Fetch: cat(u1, uvb(129), make([]byte, 1024))}),
		req("fetch: count 2^32", repairRequestWire{Fetch: cat(u1, uvb(1<<32), be64(1))}),
		req("fetch: count 2^64-1", repairRequestWire{Fetch: cat(u1, uvb(1<<64-1), be64(1))}),
		req("fetch: count overflows", repairRequestWire{Fetch: cat(u1, overflow, []byte{1}, be64(1))}),
		req("fetch: hash cut", repairRequestWire{Fetch: cat(u1, uvb(1), be64(1)[:7])}),
		req("edges: child without parent", repairRequestWire{Edges: u1}),
		req("edges: 47 bytes", repairRequestWire{Edges: cat(u1, u2, u1[:15])}),
		req("edges: valid, then a byte", repairRequestWire{Edges: cat(u1, u2, []byte{0})}),
		req("child sketch: node cut", repairRequestWire{ChildSketch: u1[:15]}),
		req("child sketch: no buckets", repairRequestWire{ChildSketch: u1}),
		req("child sketch: buckets cut", repairRequestWire{ChildSketch: cat(u1, b32[:31])}),
		req("child sketch: no salt", repairRequestWire{ChildSketch: cat(u1, b32)}),
		req("child sketch: salt cut to 1 byte", repairRequestWire{ChildSketch: cat(u1, b32, salt[:1])}),
		req("child sketch: salt cut to 2 bytes", repairRequestWire{ChildSketch: cat(u1, b32, salt[:2])}),
		req("child sketch: salt cut to 3 bytes", repairRequestWire{ChildSketch: cat(u1, b32, salt[:3])}),
		req("child sketch: the old format, an empty sketch", repairRequestWire{ChildSketch: cat(u1, b32, []byte{0})}),
		req("child sketch: the old format, a sketch of 3 bytes", repairRequestWire{ChildSketch: cat(u1, b32, []byte{3}, []byte("abc"))}),
		req("child sketch: the old format, two empty sketches", repairRequestWire{ChildSketch: cat(u1, b32, []byte{0}, u2, b32, []byte{0})}),
		req("child sketch: no sketch length", repairRequestWire{ChildSketch: cat(u1, b32, salt)}),
		req("child sketch: sketch longer than its bytes", repairRequestWire{ChildSketch: cat(u1, b32, salt, uvb(5), []byte("ab"))}),
		req("child sketch: sketch length 2^64-1", repairRequestWire{ChildSketch: cat(u1, b32, salt, uvb(1<<64-1), make([]byte, 32))}),
		req("child sketch: sketch length overflows", repairRequestWire{ChildSketch: cat(u1, b32, salt, overflow, []byte{1})}),
		req("child sketch: sketch length cut", repairRequestWire{ChildSketch: cat(u1, b32, salt, []byte{0x80})}),
		req("child sketch: sketch length over the limit", repairRequestWire{ChildSketch: cat(u1, b32, salt, uvb(uint64(maxChildSketchBytes+1)), make([]byte, 64))}),
		req("child sketch: second record cut", repairRequestWire{ChildSketch: cat(u1, b32, salt, []byte{1, 9}, u2, b32[:5])}),
		req("child sketch: second record cut in the salt", repairRequestWire{ChildSketch: cat(u1, b32, salt, []byte{1, 9}, u2, b32, salt[:2])}),
		req("child sketch: second record without salt", repairRequestWire{ChildSketch: cat(u1, b32, salt, []byte{0}, u2, b32, []byte{0})}),
		req("child sketch: valid, then a byte", repairRequestWire{ChildSketch: cat(u1, b32, salt, []byte{0}, []byte{0})}),
		req("tag fetch: node cut", repairRequestWire{TagFetch: u1[:8]}),
		req("tag fetch: no count", repairRequestWire{TagFetch: u1}),
		req("tag fetch: count 2, one tag", repairRequestWire{TagFetch: cat(u1, uvb(2), be32(1))}),
		req("tag fetch: count 3 in 11 bytes", repairRequestWire{TagFetch: cat(u1, uvb(3), make([]byte, 11))}),
		req("tag fetch: count 257 in 1 KiB", repairRequestWire{TagFetch: cat(u1, uvb(257), make([]byte, 1024))}),
		req("tag fetch: count 2^32", repairRequestWire{TagFetch: cat(u1, uvb(1<<32), be32(1))}),
		req("tag fetch: count 2^64-1", repairRequestWire{TagFetch: cat(u1, uvb(1<<64-1), be32(1))}),
		req("tag fetch: count overflows", repairRequestWire{TagFetch: cat(u1, overflow, []byte{1}, be32(1))}),
		req("tag fetch: tag cut", repairRequestWire{TagFetch: cat(u1, uvb(1), be32(1)[:3])}),
		req("tag fetch: valid, then a byte", repairRequestWire{TagFetch: cat(u1, uvb(1), be32(1), []byte{0})}),
		req("compare valid, list bad", repairRequestWire{Compare: cmp, List: cat(u1, uvb(1))}),
		req("edges bad after valid lists", repairRequestWire{Compare: cmp, Fetch: cat(u1, uvb(0)), Edges: u1}),
		req("tag fetch bad after valid lists", repairRequestWire{Compare: cmp, ChildSketch: cat(u1, b32, salt, []byte{0}), TagFetch: cat(u1, uvb(1))}),
		req("child sketch bad after valid lists", repairRequestWire{Edges: cat(u1, u2), ChildSketch: cat(u1, b32, salt), TagFetch: cat(u1, uvb(0))}),
		req("child sketch salt cut after valid lists", repairRequestWire{Compare: cmp, ChildSketch: cat(u1, b32, salt[:3]), TagFetch: cat(u1, uvb(0))}),

		raw("body a string", mp{}.str("done")),
		raw("answered missing", mp{}.fixmap(0)),
		raw("answered nil", mp{}.fixmap(1).str("done").raw(0xc0)),
		raw("answered of 2^64-1", mp{}.fixmap(1).str("done").fixarr(7).raw(0, 0, 0, 0, 0, 0, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)),
		raw("answered of int64 min", mp{}.fixmap(1).str("done").fixarr(7).raw(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
		raw("answered strings", mp{}.fixmap(1).str("done").fixarr(7).str("1").str("2").str("3").str("4").str("5").str("6").str("7")),
		raw("answered floats", mp{}.fixmap(1).str("done").fixarr(7).raw(0xca, 0x3f, 0x80, 0, 0, 0, 0, 0, 0, 0, 0)),
		raw("answered a map", mp{}.fixmap(1).str("done").fixmap(1).str("a").raw(1)),
		raw("answered array32 of 2^32-1", mp{}.fixmap(1).str("done").arr32(1<<32-1).raw(0, 0, 0, 0, 0, 0, 0)),
		raw("sums an int", done(mp{}.fixmap(2).str("sums").raw(0x01))),
		raw("cdiff an int", done(mp{}.fixmap(2).str("cdiff").raw(0x01))),
		raw("agg an array", done(mp{}.fixmap(2).str("agg").fixarr(1).raw(0x01))),
		rep("answered empty", repairReplyWire{Answered: []int{}}),
		rep("answered 5 counts, the old format", repairReplyWire{Answered: []int{1, 2, 3, 4, 5}}),
		rep("answered 6 counts", repairReplyWire{Answered: []int{1, 2, 3, 4, 5, 6}}),
		rep("answered 8 counts", repairReplyWire{Answered: []int{1, 2, 3, 4, 5, 6, 7, 8}}),
		rep("answered negative", repairReplyWire{Answered: []int{0, 0, -1, 0, 0, 0, 0}}),
		rep("answered last negative", repairReplyWire{Answered: []int{0, 0, 0, 0, 0, 0, -1}}),
		rep("answered most negative", repairReplyWire{Answered: []int{-1 << 63, 0, 0, 0, 0, 0, 0}}),
		rep("summaries: own digest cut", repairReplyWire{Summaries: cat(u1, d[:8])}),
		rep("summaries: no kind", repairReplyWire{Summaries: cat(u1, d)}),
		rep("summaries: kind 3, many and below-equal", repairReplyWire{Summaries: cat(u1, d, []byte{3, 0})}),
		rep("summaries: kind 7", repairReplyWire{Summaries: cat(u1, d, []byte{7, 0})}),
		rep("summaries: kind 8", repairReplyWire{Summaries: cat(u1, d, []byte{8, 0})}),
		rep("summaries: kind 0x84", repairReplyWire{Summaries: cat(u1, d, []byte{0x84, 0})}),
		rep("summaries: kind 0xff", repairReplyWire{Summaries: cat(u1, d, []byte{0xff, 0})}),
		rep("summaries: below-equal, then a count", repairReplyWire{Summaries: cat(u1, d, []byte{2, 0})}),
		rep("summaries: aggregated below-equal, then a count", repairReplyWire{Summaries: cat(u1, d, []byte{6, 0})}),
		rep("summaries: no count", repairReplyWire{Summaries: cat(u1, d, []byte{0})}),
		rep("summaries: aggregated, no count", repairReplyWire{Summaries: cat(u1, d, []byte{4})}),
		rep("summaries: aggregated many, no count", repairReplyWire{Summaries: cat(u1, d, []byte{5})}),
		rep("summaries: child flag 2, the old aggregated", repairReplyWire{Summaries: cat(u1, d, []byte{0, 1}, badChild(2))}),
		rep("summaries: child flag 3, the old active aggregated", repairReplyWire{Summaries: cat(u1, d, []byte{4, 1}, badChild(3))}),
		rep("summaries: child flag 4", repairReplyWire{Summaries: cat(u1, d, []byte{0, 1}, badChild(4))}),
		rep("summaries: child flag 0x80", repairReplyWire{Summaries: cat(u1, d, []byte{4, 1}, badChild(0x80))}),
		rep("summaries: child flag 0xff", repairReplyWire{Summaries: cat(u1, d, []byte{0, 2}, c, badChild(0xff))}),
		rep("summaries: 2 children, 1 present", repairReplyWire{Summaries: cat(u1, d, []byte{0, 2}, c)}),
		rep("summaries: 2 children in 81 bytes", repairReplyWire{Summaries: cat(u1, d, []byte{0, 2}, c, c[:40])}),
		rep("summaries: 2^40 children", repairReplyWire{Summaries: cat(u1, d, []byte{0}, uvb(1<<40), c)}),
		rep("summaries: child cut", repairReplyWire{Summaries: cat(u1, d, []byte{0, 1}, c[:40])}),
		rep("summaries: the old 33-byte child", repairReplyWire{Summaries: cat(u1, d, []byte{0, 1}, c[:33])}),
		rep("summaries: 3 buckets, 2 present", repairReplyWire{Summaries: cat(u1, d, []byte{1, 3}, make([]byte, 18))}),
		rep("summaries: 2^63 buckets", repairReplyWire{Summaries: cat(u1, d, []byte{1}, uvb(1<<63), make([]byte, 9))}),
		rep("summaries: count overflows", repairReplyWire{Summaries: cat(u1, d, []byte{1}, overflow, []byte{1})}),
		rep("summaries: valid, then a byte", repairReplyWire{Summaries: cat(u1, d, []byte{1, 0}, []byte{0})}),
		rep("listings: no after", repairReplyWire{Listings: u1}),
		rep("listings: no more flag", repairReplyWire{Listings: cat(u1, uvb(0))}),
		rep("listings: more flag 2", repairReplyWire{Listings: cat(u1, uvb(0), []byte{2}, uvb(0), uvb(0))}),
		rep("listings: more flag 0x80", repairReplyWire{Listings: cat(u1, uvb(0), []byte{0x80}, uvb(0), uvb(0))}),
		rep("listings: after of 257 bytes", repairReplyWire{Listings: cat(u1, cur(repairCursorMax+1), []byte{0}, uvb(0), uvb(0))}),
		rep("listings: next of 257 bytes", repairReplyWire{Listings: cat(u1, uvb(0), []byte{1}, cur(repairCursorMax+1), uvb(0))}),
		rep("listings: next length 2^64-1", repairReplyWire{Listings: cat(u1, uvb(0), []byte{1}, uvb(1<<64-1), uvb(0))}),
		rep("listings: next cut", repairReplyWire{Listings: cat(u1, uvb(0), []byte{1}, uvb(10), []byte("abc"))}),
		rep("listings: no entry count", repairReplyWire{Listings: cat(u1, uvb(0), []byte{0}, uvb(0))}),
		rep("listings: 2 entries, 1 present", repairReplyWire{Listings: cat(u1, uvb(0), []byte{0}, uvb(0), uvb(2), make([]byte, 16))}),
		rep("listings: 2^62 entries", repairReplyWire{Listings: cat(u1, uvb(0), []byte{0}, uvb(0), uvb(1<<62), make([]byte, 16))}),
		rep("listings: entry cut", repairReplyWire{Listings: cat(u1, uvb(0), []byte{0}, uvb(0), uvb(1), make([]byte, 15))}),
		rep("buckets: no bucket byte", repairReplyWire{Buckets: u1}),
		rep("buckets: no count", repairReplyWire{Buckets: cat(u1, []byte{5})}),
		rep("buckets: child flag 2, the old aggregated", repairReplyWire{Buckets: cat(u1, []byte{5, 1}, badChild(2))}),
		rep("buckets: child flag 3", repairReplyWire{Buckets: cat(u1, []byte{5, 2}, c, badChild(3))}),
		rep("buckets: child flag 4", repairReplyWire{Buckets: cat(u1, []byte{5, 1}, badChild(4))}),
		rep("buckets: child flag 0xfc", repairReplyWire{Buckets: cat(u1, []byte{5, 2}, c, badChild(0xfc))}),
		rep("buckets: 2 children, 1 present", repairReplyWire{Buckets: cat(u1, []byte{5, 2}, c)}),
		rep("buckets: 2^32 children", repairReplyWire{Buckets: cat(u1, []byte{5}, uvb(1<<32), c)}),
		rep("buckets: child cut", repairReplyWire{Buckets: cat(u1, []byte{5, 1}, c[:17])}),
		rep("child diffs: node cut", repairReplyWire{ChildDiffs: u1[:15]}),
		rep("child diffs: no ok byte", repairReplyWire{ChildDiffs: u1}),
		rep("child diffs: ok 2", repairReplyWire{ChildDiffs: cat(u1, []byte{2})}),
		rep("child diffs: ok 2 with an OK body", repairReplyWire{ChildDiffs: cat(u1, []byte{2, 0, 0, 0})}),
		rep("child diffs: ok 0x80", repairReplyWire{ChildDiffs: cat(u1, []byte{0x80, 0, 0, 0})}),
		rep("child diffs: ok 0xff", repairReplyWire{ChildDiffs: cat(u1, []byte{0xff})}),
		rep("child diffs: second ok 2", repairReplyWire{ChildDiffs: cat(u1, []byte{0}, u2, []byte{2})}),
		rep("child diffs: not OK with a body", repairReplyWire{ChildDiffs: cat(u1, []byte{0, 0, 0, 0})}),
		rep("child diffs: not OK with both", repairReplyWire{ChildDiffs: cat(u1, []byte{0, 1}, f, []byte{0, 0})}),
		rep("child diffs: not OK with children", repairReplyWire{ChildDiffs: cat(u1, []byte{0, 1}, c, []byte{0})}),
		rep("child diffs: not OK with children after an empty both", repairReplyWire{ChildDiffs: cat(u1, []byte{0, 0, 1}, c, []byte{0})}),
		rep("child diffs: OK, no both count", repairReplyWire{ChildDiffs: cat(u1, []byte{1})}),
		rep("child diffs: OK, no child count", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0})}),
		rep("child diffs: OK, no missing count", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0})}),
		rep("child diffs: OK, both, no child count", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, f)}),
		rep("child diffs: OK, both, no missing count", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, f, []byte{0})}),
		rep("child diffs: OK, children, no missing count", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 1}, c)}),
		rep("child diffs: the old format, a child", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, c, []byte{0})}),
		rep("child diffs: the old format, a missing tag", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 1}, be64(7))}),
		rep("child diffs: the old format, two empty", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0}, u2, []byte{1, 0, 0})}),
		rep("child diffs: both flags 0x10", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, badFlags(0x10), []byte{0, 0})}),
		rep("child diffs: both flags 0x1f", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, badFlags(0x1f), []byte{0, 0})}),
		rep("child diffs: both flags 0x20", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, badFlags(0x20), []byte{0, 0})}),
		rep("child diffs: both flags 0x40", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, badFlags(0x40), []byte{0, 0})}),
		rep("child diffs: both flags 0x80", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, badFlags(0x80), []byte{0, 0})}),
		rep("child diffs: both flags 0xff", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, badFlags(0xff), []byte{0, 0})}),
		rep("child diffs: second both flags 0xf0", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 2}, f, badFlags(0xf0), []byte{0, 0})}),
		rep("child diffs: both flags 0x10 in a second diff", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, f, []byte{0, 0}, u2, []byte{1, 1}, badFlags(0x10), []byte{0, 0})}),
		rep("child diffs: 2 both, 1 present", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 2}, f, []byte{0, 0})}),
		rep("child diffs: 2 both in 17 bytes", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 2}, f, make([]byte, 8))}),
		rep("child diffs: 2 both, no counts after", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 2}, f, f)}),
		rep("child diffs: 3 both in 26 bytes", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 3}, f, f, make([]byte, 8))}),
		rep("child diffs: 1 both, none present", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1, 0, 0})}),
		rep("child diffs: 2^40 both", repairReplyWire{ChildDiffs: cat(u1, []byte{1}, uvb(1<<40), f, []byte{0, 0})}),
		rep("child diffs: both count 2^64-1", repairReplyWire{ChildDiffs: cat(u1, []byte{1}, uvb(1<<64-1), f, []byte{0, 0})}),
		rep("child diffs: both count overflows", repairReplyWire{ChildDiffs: cat(u1, []byte{1}, overflow, f, []byte{0, 0})}),
		rep("child diffs: both count cut", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0x80})}),
		rep("child diffs: both record cut", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, f[:8])}),
		rep("child diffs: both record without flags", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, f[:8], []byte{0})}),
		rep("child diffs: both record of 8 bytes, then counts", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, f[:8], []byte{0, 0})}),
		rep("child diffs: child flag 2, the old aggregated", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 1}, badChild(2), []byte{0})}),
		rep("child diffs: child flag 3", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 1}, badChild(3), []byte{0})}),
		rep("child diffs: child flag 4", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 1}, badChild(4), []byte{0})}),
		rep("child diffs: child flag 0xff", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, f, []byte{2}, c, badChild(0xff), []byte{0})}),
		rep("child diffs: 2 children, 1 present", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 2}, c, []byte{0})}),
		rep("child diffs: 2 children in 81 bytes", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 2}, c, make([]byte, 40))}),
		rep("child diffs: 2^40 children", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0}, uvb(1<<40), c, []byte{0})}),
		rep("child diffs: child count overflows", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0}, overflow, c, []byte{0})}),
		rep("child diffs: child cut", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 1}, c[:40])}),
		rep("child diffs: 2 missing, 1 present", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0, 2}, be64(1))}),
		rep("child diffs: 2 missing in 15 bytes", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0, 2}, make([]byte, 15))}),
		rep("child diffs: 2^61 missing", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0}, uvb(1<<61), be64(1))}),
		rep("child diffs: missing count 2^64-1", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0}, uvb(1<<64-1), be64(1))}),
		rep("child diffs: missing count overflows", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0}, overflow, be64(1))}),
		rep("child diffs: missing tag cut", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0, 1}, be64(1)[:7])}),
		rep("child diffs: valid, then a byte", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 0, 0, 0}, []byte{0})}),
		rep("child diffs: valid with both, then a byte", repairReplyWire{ChildDiffs: cat(u1, []byte{1, 1}, f, []byte{0, 0}, []byte{0})}),
		rep("bad summary after valid lists", repairReplyWire{Listings: cat(u1, uvb(0), []byte{0}, uvb(0), uvb(0)), Summaries: cat(u1, d, []byte{3})}),
		rep("bad child diff after valid lists", repairReplyWire{
			Summaries: cat(u1, d, []byte{2}), Buckets: cat(u1, []byte{5, 1}, c), Aggregate: []byte{1},
			ChildDiffs: cat(u1, []byte{1, 0, 0, 0}, u2, []byte{3}),
		}),
		rep("bad both flags after valid lists", repairReplyWire{
			Summaries: cat(u1, d, []byte{2}), Listings: cat(u1, uvb(0), []byte{0}, uvb(0), uvb(0)),
			ChildDiffs: cat(u1, []byte{0}, u2, []byte{1, 1}, badFlags(0x40), []byte{0, 0}),
		}),
		rep("bad listing after valid child diffs", repairReplyWire{ChildDiffs: cat(u1, []byte{0}), Listings: cat(u1, uvb(0), []byte{2})}),
	}
}

// decodeRepairFrame decodes msg as a request or a reply.
func decodeRepairFrame(msg []byte, limit int, reply bool) (any, error) {
	if reply {
		r, err := DecodeRepairReply(msg, limit)
		if r == nil {
			return nil, err
		}
		return r, err
	}
	r, err := DecodeRepairRequest(msg, limit)
	if r == nil {
		return nil, err
	}
	return r, err
}

// TestRepairDecodeRefusesHostile: each lying frame is refused as
// crdt.ErrMalformed, not as anything else, and without a value.
func TestRepairDecodeRefusesHostile(t *testing.T) {
	for _, tc := range repairHostile() {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.msg) > crdt.MaxMessageSize {
				t.Fatalf("test frame of %d bytes", len(tc.msg))
			}
			v, err := decodeRepairFrame(tc.msg, 0, tc.reply)
			if !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if errors.Is(err, crdt.ErrTooLarge) || errors.Is(err, ErrUnknownType) || errors.Is(err, ErrVersion) || IsRemote(err) {
				t.Fatalf("err = %v, want ErrMalformed only", err)
			}
			if v != nil && !repairPartialOnError {
				t.Fatalf("returned %+v with its error", v)
			}
		})
	}
}

// TestRepairCursorLimit: a cursor of repairCursorMax bytes is read in
// each of its three places, one byte more is refused. The limit holds the
// longest register key a store makes (node, parent, type, 0, key).
func TestRepairCursorLimit(t *testing.T) {
	if longest := 16 + 16 + crdt.MaxTypeLen + 1 + crdt.MaxKeyLen; repairCursorMax < longest {
		t.Fatalf("cursor limit %d is below the longest register key, %d bytes", repairCursorMax, longest)
	}
	for _, n := range []int{repairCursorMax, repairCursorMax + 1} {
		c := rcursor(n, n)
		frames := []repairFrame{
			{"list after", mustEncodeRequest(t, &RepairRequest{List: []ListQuery{{Node: rid(1), After: c}}}), false, false},
			{"listing after", mustEncodeReply(t, &RepairReply{Listings: []Listing{{Node: rid(1), After: c}}}), true, false},
			{"listing next", mustEncodeReply(t, &RepairReply{Listings: []Listing{{Node: rid(1), More: true, Next: c}}}), true, false},
		}
		for _, f := range frames {
			_, err := decodeRepairFrame(f.msg, 0, f.reply)
			switch {
			case n <= repairCursorMax && err != nil:
				t.Errorf("%s of %d bytes: %v", f.name, n, err)
			case n > repairCursorMax && !errors.Is(err, crdt.ErrMalformed):
				t.Errorf("%s of %d bytes: %v, want ErrMalformed", f.name, n, err)
			}
		}
	}
}

// TestRepairDecodeFrames checks what the frame says before the body: type,
// version, size and error frames.
func TestRepairDecodeFrames(t *testing.T) {
	reqMsg := mustEncodeRequest(t, repairRequestSample())
	repMsg := mustEncodeReply(t, repairReplySample())
	hello, _ := Encode(msgSamples()[0])
	others := [][]byte{
		hello, EncodePoints(wireSensorPoints(2)),
		{Version, byte(msgTypeEnd), 0x80}, {Version, 0xff, 0x80}, {Version, byte(MsgInvalid), 0x80},
	}
	for _, tc := range []struct {
		name  string
		msg   []byte
		reply bool
	}{
		{"request frame as a reply", reqMsg, true},
		{"reply frame as a request", repMsg, false},
		{"empty request frame as a reply", mustEncodeRequest(t, &RepairRequest{}), true},
		{"empty reply frame as a request", mustEncodeReply(t, &RepairReply{}), false},
	} {
		if v, err := decodeRepairFrame(tc.msg, 0, tc.reply); !errors.Is(err, ErrUnknownType) || v != nil {
			t.Errorf("%s: %v, %v; want ErrUnknownType", tc.name, v, err)
		}
	}
	for i, msg := range others {
		for _, reply := range []bool{false, true} {
			if _, err := decodeRepairFrame(msg, 0, reply); !errors.Is(err, ErrUnknownType) {
				t.Errorf("frame %d of type %d (reply %v): %v, want ErrUnknownType", i, msg[1], reply, err)
			}
		}
	}
	// Decode into a message of Encode refuses a repair frame by type, and
	// the repair messages are not values Encode or Decode take.
	for _, msg := range [][]byte{reqMsg, repMsg} {
		if err := Decode(msg, 0, &Hello{}); !errors.Is(err, ErrUnknownType) {
			t.Errorf("%s frame into *Hello: %v, want ErrUnknownType", MsgType(msg[1]), err)
		}
	}
	for _, v := range []any{&RepairRequest{}, &RepairReply{}, RepairRequest{}} {
		if _, err := Encode(v); err == nil {
			t.Errorf("Encode(%T) succeeded", v)
		}
		if err := Decode(reqMsg, 0, v); err == nil || !strings.Contains(err.Error(), "not a message") {
			t.Errorf("Decode into %T: %v, want a not-a-message error", v, err)
		}
	}

	for _, f := range []repairFrame{{"request", reqMsg, false, true}, {"reply", repMsg, true, true}} {
		for _, ver := range []byte{0, Version + 1, 0xff} {
			bad := slices.Clone(f.msg)
			bad[0] = ver
			if _, err := decodeRepairFrame(bad, 0, f.reply); !errors.Is(err, ErrVersion) {
				t.Errorf("%s of version %d: %v, want ErrVersion", f.name, ver, err)
			}
		}
		if _, err := decodeRepairFrame(f.msg, len(f.msg)-1, f.reply); !errors.Is(err, crdt.ErrTooLarge) {
			t.Errorf("%s of %d bytes, limit one less: %v, want ErrTooLarge", f.name, len(f.msg), err)
		}
		if _, err := decodeRepairFrame(f.msg, len(f.msg), f.reply); err != nil {
			t.Errorf("%s of %d bytes at its own size: %v", f.name, len(f.msg), err)
		}
		// A MsgError frame is the remote's error, whichever was expected.
		v, err := decodeRepairFrame(EncodeError(errors.New("no such node")), 0, f.reply)
		var re *RemoteError
		if !errors.As(err, &re) || re.Msg != "no such node" || v != nil {
			t.Errorf("error frame as a %s: %v, %v", f.name, v, err)
		}
	}

	// The default limit is crdt.MaxMessageSize: a reply of exactly that
	// size is read, one byte more is refused before anything else.
	probe := mustEncodeReply(t, &RepairReply{Points: make([]byte, 1<<16)})
	body := crdt.MaxMessageSize - (len(probe) - 1<<16)
	atLimit := mustEncodeReply(t, &RepairReply{Points: make([]byte, body)})
	if len(atLimit) != crdt.MaxMessageSize {
		t.Fatalf("test frame is %d bytes, want %d", len(atLimit), crdt.MaxMessageSize)
	}
	if _, err := DecodeRepairReply(atLimit, 0); err != nil {
		t.Errorf("reply of crdt.MaxMessageSize, default limit: %v", err)
	}
	over := mustEncodeReply(t, &RepairReply{Points: make([]byte, body+1)})
	if _, err := DecodeRepairReply(over, -1); !errors.Is(err, crdt.ErrTooLarge) {
		t.Errorf("reply of crdt.MaxMessageSize+1, default limit: %v, want ErrTooLarge", err)
	}
	garbage := bytes.Repeat([]byte{0xc1}, crdt.MaxMessageSize+1)
	for _, reply := range []bool{false, true} {
		_, err := decodeRepairFrame(garbage, 0, reply)
		if !errors.Is(err, crdt.ErrTooLarge) || errors.Is(err, crdt.ErrMalformed) || errors.Is(err, ErrVersion) {
			t.Errorf("oversized garbage (reply %v): %v, want ErrTooLarge only", reply, err)
		}
	}
}

// TestRepairDecodeRefusesTruncated: every strict prefix of every valid
// frame, and every valid frame with a byte appended, is refused as
// crdt.ErrMalformed.
func TestRepairDecodeRefusesTruncated(t *testing.T) {
	var frames []repairFrame
	for _, r := range repairRequests() {
		frames = append(frames, repairFrame{"request", mustEncodeRequest(t, r), false, true})
	}
	for _, r := range repairReplies() {
		frames = append(frames, repairFrame{"reply", mustEncodeReply(t, r), true, true})
	}
	for i, f := range frames {
		for n := range len(f.msg) {
			if _, err := decodeRepairFrame(f.msg[:n], 0, f.reply); !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("%s %d cut to %d of %d bytes: %v, want ErrMalformed", f.name, i, n, len(f.msg), err)
			}
		}
		if _, err := decodeRepairFrame(append(slices.Clone(f.msg), 0xc0), 0, f.reply); !errors.Is(err, crdt.ErrMalformed) {
			t.Fatalf("%s %d with a trailing byte: %v, want ErrMalformed", f.name, i, err)
		}
	}
}

// TestRepairRecordTruncation cuts each record bin of the full samples
// (inside a well-formed msgpack body) at every length: the decoder refuses
// the cut as crdt.ErrMalformed unless it falls between two records, and
// then reads exactly the records before it.
func TestRepairRecordTruncation(t *testing.T) {
	checkRecordCuts(t, MsgRepair, repairRequestSample(), []string{"Compare", "List", "Buckets", "Fetch", "Edges", "ChildSketch", "TagFetch"},
		func(w *repairRequestWire) ([]byte, error) { return encodeWire(MsgRepair, w) },
		DecodeRepairRequest, EncodeRepairRequest)
	checkRecordCuts(t, MsgRepairReply, repairReplySample(), []string{"Summaries", "Listings", "Buckets", "ChildDiffs"},
		func(w *repairReplyWire) ([]byte, error) { return encodeWire(MsgRepairReply, w) },
		DecodeRepairReply, EncodeRepairReply)
}

// checkRecordCuts implements TestRepairRecordTruncation for one message
// type: each named field is a []byte in the wire form W and a list of
// records in V.
func checkRecordCuts[W, V any](t *testing.T, typ MsgType, v *V, fields []string,
	encodeW func(*W) ([]byte, error), decode func([]byte, int) (*V, error), encode func(*V) ([]byte, error),
) {
	t.Helper()
	wireOf := func(msg []byte) W {
		var w W
		if err := msgpack.Unmarshal(msg[headerLen:], &w); err != nil {
			t.Fatalf("%s body: %v", typ, err)
		}
		return w
	}
	full := wireOf(must(encode(v)))
	for _, field := range fields {
		bin := reflect.ValueOf(full).FieldByName(field).Bytes()
		records := reflect.ValueOf(*v).FieldByName(field)
		accepted := 0
		for n := range len(bin) {
			cut := full
			reflect.ValueOf(&cut).Elem().FieldByName(field).SetBytes(bin[:n])
			got, err := decode(must(encodeW(&cut)), 0)
			if err != nil {
				if !errors.Is(err, crdt.ErrMalformed) {
					t.Fatalf("%s %s cut to %d of %d bytes: %v, want ErrMalformed", typ, field, n, len(bin), err)
				}
				continue
			}
			accepted++
			k := reflect.ValueOf(*got).FieldByName(field).Len()
			want := *v
			prefix := reflect.Zero(records.Type())
			if k > 0 {
				prefix = records.Slice(0, k)
			}
			reflect.ValueOf(&want).Elem().FieldByName(field).Set(prefix)
			if k >= records.Len() || !reflect.DeepEqual(*got, want) {
				t.Fatalf("%s %s cut to %d of %d bytes: read %d records, not the first %d of %d", typ, field, n, len(bin), k, k, records.Len())
			}
			if back := reflect.ValueOf(wireOf(must(encode(got)))).FieldByName(field).Bytes(); !bytes.Equal(back, bin[:n]) {
				t.Fatalf("%s %s cut to %d of %d bytes: accepted a cut inside record %d", typ, field, n, len(bin), k)
			}
		}
		if accepted != records.Len() {
			t.Fatalf("%s %s: %d cuts accepted, want one per record boundary, %d", typ, field, accepted, records.Len())
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// repairDense returns frames of nearly crdt.MaxMessageSize packed with the
// smallest records of each kind, the input that makes the decoders
// allocate most per byte; each also with one byte more, which costs the
// same allocations and then fails on an incomplete record.
func repairDense() []repairFrame {
	const size = crdt.MaxMessageSize - 64
	fill := func(rec []byte) []byte { return bytes.Repeat(rec, size/len(rec)) }
	u := ub(rid(1))
	d := db(rdig(1))
	minChild := childRec(ChildSum{ID: rid(2)})
	hashes := (size - 32) / 8
	tags := (size - 32) / 4
	missing := (size - 32) / 8
	minFlags := flagsRec(ChildFlags{})
	both := (size - 32) / len(minFlags)
	children := (size - 64) / len(minChild)
	entries := (size - 64) / 16
	b32 := make([]byte, 32)
	salt := be32(0x5a17)
	type dense struct {
		name  string
		reply bool
		field string // of the wire form
		bin   []byte
	}
	var frames []repairFrame
	for _, c := range []dense{
		{"compares", false, "Compare", fill(cat(u, d, d, []byte{0}))},
		{"lists", false, "List", fill(cat(u, []byte{0}))},
		{"buckets", false, "Buckets", fill(cat(u, []byte{1}))},
		{"fetches", false, "Fetch", fill(cat(u, []byte{0}))},
		{"fetch of most hashes", false, "Fetch", cat(u, uvb(uint64(hashes)), make([]byte, 8*hashes))},
		{"edges", false, "Edges", fill(cat(u, u))},
		{"child sketches", false, "ChildSketch", fill(cat(u, b32, salt, []byte{0}))},
		{"child sketches of 1 byte", false, "ChildSketch", fill(cat(u, b32, salt, []byte{1, 0}))},
		{"tag fetches", false, "TagFetch", fill(cat(u, []byte{0}))},
		{"tag fetches of one tag", false, "TagFetch", fill(cat(u, []byte{1}, be32(7)))},
		{"tag fetch of most tags", false, "TagFetch", cat(u, uvb(uint64(tags)), make([]byte, 4*tags))},
		{"summaries", true, "Summaries", fill(cat(u, d, []byte{0, 0}))},
		{"summary of most children", true, "Summaries", cat(u, d, []byte{0}, uvb(uint64(children)), bytes.Repeat(minChild, children))},
		{"summaries of one bucket", true, "Summaries", fill(cat(u, d, []byte{1, 1, 0}, make([]byte, 8)))},
		{"summaries below-equal", true, "Summaries", fill(cat(u, d, []byte{6}))},
		{"summaries of one child", true, "Summaries", fill(cat(u, d, []byte{4, 1}, minChild))},
		{"listings", true, "Listings", fill(cat(u, []byte{0, 0, 0, 0}))},
		{"listing of most entries", true, "Listings", cat(u, []byte{0, 0, 0}, uvb(uint64(entries)), make([]byte, 16*entries))},
		{"listings with cursors", true, "Listings", fill(cat(u, []byte{1, 'a', 1, 1, 'b', 0}))},
		{"bucket listings", true, "Buckets", fill(cat(u, []byte{1, 0}))},
		{"bucket of most children", true, "Buckets", cat(u, []byte{1}, uvb(uint64(children)), bytes.Repeat(minChild, children))},
		{"child diffs not OK", true, "ChildDiffs", fill(cat(u, []byte{0}))},
		{"child diffs OK and empty", true, "ChildDiffs", fill(cat(u, []byte{1, 0, 0, 0}))},
		{"child diffs of one both", true, "ChildDiffs", fill(cat(u, []byte{1, 1}, minFlags, []byte{0, 0}))},
		{"child diffs of one missing", true, "ChildDiffs", fill(cat(u, []byte{1, 0, 0, 1}, be64(9)))},
		{"child diff of most both", true, "ChildDiffs", cat(u, []byte{1}, uvb(uint64(both)), bytes.Repeat(minFlags, both), []byte{0, 0})},
		{"child diff of most children", true, "ChildDiffs", cat(u, []byte{1, 0}, uvb(uint64(children)), bytes.Repeat(minChild, children), []byte{0})},
		{"child diff of most missing", true, "ChildDiffs", cat(u, []byte{1, 0, 0}, uvb(uint64(missing)), make([]byte, 8*missing))},
	} {
		for _, extra := range [][]byte{nil, {0xff}} {
			bin := cat(c.bin, extra)
			f := repairFrame{name: "request " + c.name, reply: c.reply, ok: extra == nil}
			if c.reply {
				var w repairReplyWire
				reflect.ValueOf(&w).Elem().FieldByName(c.field).SetBytes(bin)
				f.name, f.msg = "reply "+c.name, replyWireFrame(w)
			} else {
				var w repairRequestWire
				reflect.ValueOf(&w).Elem().FieldByName(c.field).SetBytes(bin)
				f.msg = reqWireFrame(w)
			}
			if extra != nil {
				f.name += ", a byte more"
			}
			frames = append(frames, f)
		}
	}
	// An aggregate is not parsed: any bytes up to the frame limit.
	frames = append(frames, repairFrame{name: "reply aggregate", reply: true, ok: true,
		msg: replyWireFrame(repairReplyWire{Aggregate: make([]byte, size)})})
	// Child sketches of the largest size accepted, and of a byte more.
	for _, n := range []int{maxChildSketchBytes, maxChildSketchBytes + 1} {
		rec := cat(u, b32, salt, uvb(uint64(n)), make([]byte, n))
		frames = append(frames, repairFrame{
			name: fmt.Sprintf("request two child sketches of %d bytes", n), ok: n <= maxChildSketchBytes,
			msg: reqWireFrame(repairRequestWire{ChildSketch: cat(rec, rec)}),
		})
	}
	return append(frames, repairFrame{name: "reply answered of 1M counts", reply: true,
		msg: mp{}.fixmap(1).str("done").arr32(size).raw(make([]byte, size)...).frame(MsgRepairReply)})
}

// TestRepairDecodeAllocationIsBounded: decoding n bytes of repair frame,
// however hostile, allocates at most msgAllocBound(n), the bound of every
// other message. The dense frames are the worst case per input byte.
func TestRepairDecodeAllocationIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocation of 1 MiB frames")
	}
	frames := append(repairHostile(), repairDense()...)
	for _, f := range frames {
		t.Run(f.name, func(t *testing.T) {
			if len(f.msg) > crdt.MaxMessageSize {
				t.Fatalf("test frame of %d bytes", len(f.msg))
			}
			var err error
			n := msgAllocated(func() { _, err = decodeRepairFrame(f.msg, 0, f.reply) })
			t.Logf("%d input bytes, %d bytes allocated (%.1fx), err %v", len(f.msg), n, float64(n)/float64(len(f.msg)), err)
			if f.ok && err != nil || !f.ok && !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("err = %v, want ok %v", err, f.ok)
			}
			if bound := msgAllocBound(len(f.msg)); n > bound {
				t.Fatalf("%d bytes allocated for %d input bytes, bound %d", n, len(f.msg), bound)
			}
		})
	}
}

// TestRepairCountsRefusedBeforeAllocating: a record count the bytes left
// cannot hold (at the smallest size of its records) is refused before any
// record is allocated, however many bytes do follow; decoding such a
// frame of nearly crdt.MaxMessageSize allocates little beyond the copy of
// its body. The count is one more than the bytes hold, so a check at any
// smaller record size would let the decoder allocate the records.
func TestRepairCountsRefusedBeforeAllocating(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocation of 1 MiB frames")
	}
	const size = crdt.MaxMessageSize - 64
	u, d := ub(rid(1)), db(rdig(1))
	flags := flagsRec(ChildFlags{Tag: 1})
	for _, tc := range []struct {
		name   string
		reply  bool
		field  string // of the wire form
		prefix []byte // before the count
		min    int    // the smallest record counted
		after  []byte // after the records
	}{
		{"fetch hashes", false, "Fetch", u, 8, nil},
		{"tag fetch tags", false, "TagFetch", u, 4, nil},
		{"summary children", true, "Summaries", cat(u, d, []byte{0}), childRecordLen, nil},
		{"summary buckets", true, "Summaries", cat(u, d, []byte{1}), 9, nil},
		{"listing entries", true, "Listings", cat(u, []byte{0, 0, 0}), 16, nil},
		{"bucket children", true, "Buckets", cat(u, []byte{1}), childRecordLen, nil},
		{"child diff both", true, "ChildDiffs", cat(u, []byte{1}), 9, []byte{0, 0}},
		{"child diff both after one", true, "ChildDiffs", cat(u, []byte{1, 1}, flags, []byte{0, 0}, u, []byte{1}), 9, []byte{0, 0}},
		{"child diff children", true, "ChildDiffs", cat(u, []byte{1, 1}, flags), childRecordLen, []byte{0}},
		{"child diff missing", true, "ChildDiffs", cat(u, []byte{1, 0, 0}), 8, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			left := size - len(tc.prefix) - 3 // the bytes after the count, a 3-byte uvarint
			n := left/tc.min + 1
			cnt := uvb(uint64(n))
			if len(cnt) != 3 || n > left {
				t.Fatalf("count %d for %d bytes", n, left)
			}
			bin := cat(tc.prefix, cnt, make([]byte, left-len(tc.after)), tc.after)
			var msg []byte
			if tc.reply {
				var w repairReplyWire
				reflect.ValueOf(&w).Elem().FieldByName(tc.field).SetBytes(bin)
				msg = replyWireFrame(w)
			} else {
				var w repairRequestWire
				reflect.ValueOf(&w).Elem().FieldByName(tc.field).SetBytes(bin)
				msg = reqWireFrame(w)
			}
			var err error
			a := msgAllocated(func() { _, err = decodeRepairFrame(msg, 0, tc.reply) })
			t.Logf("count %d, %d input bytes, %d bytes allocated (%.2fx), err %v", n, len(msg), a, float64(a)/float64(len(msg)), err)
			if !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if bound := uint64(len(msg)) + uint64(len(msg))/4 + 64<<10; a > bound {
				t.Fatalf("%d bytes allocated for %d input bytes refused at a count, bound %d", a, len(msg), bound)
			}
		})
	}
}

// TestRepairSubject: a session's repair subject is under its dialer's
// prefix and distinct from the others.
func TestRepairSubject(t *testing.T) {
	id := NewSessionID()
	dialer := Identity{Kind: KindAdmin}
	s, err := Subjects(dialer, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.Repair != "siot.admin.local.link."+id+".repair" {
		t.Errorf("repair subject %q", s.Repair)
	}
	for _, o := range []string{s.Start, s.Up, s.Down, s.Ping, Subject(dialer, NameHello), Subject(dialer, NameStatus),
		Subject(dialer, NameImport), Subject(dialer, NameExport)} {
		if o == s.Repair {
			t.Errorf("repair subject %q collides", o)
		}
	}
}

// repairSeeds returns valid repair frames and hostile ones, for the fuzz
// targets.
func repairSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, r := range repairRequests() {
		out = append(out, mustEncodeRequest(tb, r))
	}
	for _, r := range repairReplies() {
		out = append(out, mustEncodeReply(tb, r))
	}
	for _, f := range repairHostile() {
		out = append(out, f.msg)
	}
	return out
}

// checkRepairErr fails t unless err is nil or one of the errors the repair
// decoders document.
func checkRepairErr(t *testing.T, msg []byte, v any, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if !reflect.ValueOf(v).IsNil() && !repairPartialOnError {
		t.Fatalf("%T returned with error %v", v, err)
	}
	var re *RemoteError
	if errors.As(err, &re) {
		if len(msg) < headerLen || MsgType(msg[1]) != MsgError {
			t.Fatalf("RemoteError %q from a frame of type % x", re.Msg, msg[:min(len(msg), 2)])
		}
		return
	}
	if !errors.Is(err, ErrVersion) && !errors.Is(err, ErrUnknownType) &&
		!errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, crdt.ErrTooLarge) {
		t.Fatalf("%T: undocumented error %v", v, err)
	}
}

// FuzzRepairDecode feeds arbitrary frames to DecodeRepairRequest and
// DecodeRepairReply. They never panic, refuse only with their documented
// errors, accept only frames of their own type, and what they accept
// re-encodes into a frame that decodes to an equal value and encodes to
// the same bytes again.
func FuzzRepairDecode(f *testing.F) {
	for _, s := range repairSeeds(f) {
		f.Add(s)
	}
	f.Add(EncodeError(errors.New("busy")))
	f.Add(must(Encode(Ping{})))
	f.Fuzz(func(t *testing.T, msg []byte) {
		req, err := DecodeRepairRequest(msg, 0)
		checkRepairErr(t, msg, req, err)
		if err == nil {
			if msg[0] != Version || MsgType(msg[1]) != MsgRepair {
				t.Fatalf("accepted a frame with header % x as a request", msg[:2])
			}
			enc := mustEncodeRequest(t, req)
			req2, err := DecodeRepairRequest(enc, len(enc))
			if err != nil {
				t.Fatalf("re-encoded request refused: %v\n%+v", err, req)
			}
			if !reflect.DeepEqual(req2, req) {
				t.Fatalf("request round trip\n got %+v\nwant %+v", req2, req)
			}
			if again := mustEncodeRequest(t, req2); !bytes.Equal(again, enc) {
				t.Fatalf("request encoding not stable\n got % x\nwant % x", again, enc)
			}
		}
		rep, err := DecodeRepairReply(msg, 0)
		checkRepairErr(t, msg, rep, err)
		if err == nil {
			if msg[0] != Version || MsgType(msg[1]) != MsgRepairReply {
				t.Fatalf("accepted a frame with header % x as a reply", msg[:2])
			}
			enc := mustEncodeReply(t, rep)
			rep2, err := DecodeRepairReply(enc, len(enc))
			if err != nil {
				t.Fatalf("re-encoded reply refused: %v\n%+v", err, rep)
			}
			if !reflect.DeepEqual(rep2, rep) {
				t.Fatalf("reply round trip\n got %+v\nwant %+v", rep2, rep)
			}
			if again := mustEncodeReply(t, rep2); !bytes.Equal(again, enc) {
				t.Fatalf("reply encoding not stable\n got % x\nwant % x", again, enc)
			}
		}
		if len(msg) >= headerLen && req != nil && rep != nil {
			t.Fatalf("frame of type %s accepted as both", MsgType(msg[1]))
		}
	})
}

// TestRepairChildSketchAndAggregate carries a salted child sketch
// (16-byte keys) in a request and the ChildDiff made from it, with an
// aggregate (crdt.PointKeyLen keys), in a reply, and checks that what
// arrives decodes to sketches that, subtracted from the other side's,
// list exactly the keys that differ. Then the size limits: a child sketch
// is at most maxChildSketchBytes, the largest a crdt.Sketch of 16-byte
// keys encodes to; an aggregate is bounded by the frame only, and the
// largest crdt.Sketch of PointKeys fits one.
func TestRepairChildSketchAndAggregate(t *testing.T) {
	// Children: the asker has 0..19; the answerer lacks 3, has 99, and its
	// child 5 has other own points, its child 8 another edge and below.
	// A child key here is a salted 8-byte tag of the ID, then 2 bytes of
	// the edge digest, 3 of own and 3 of below, as the answerer needs to
	// tell what differs (docs/protocol.md gives the real key).
	type child struct {
		id               uuid.UUID
		edge, own, below ShortDigest
	}
	tagOf := func(id uuid.UUID, salt uint32) uint64 {
		h := sha256.Sum256(cat(be32(salt), ub(id)))
		return binary.BigEndian.Uint64(h[:8])
	}
	childKey := func(c child, salt uint32) crdt.SketchKey {
		var k crdt.SketchKey
		copy(k[:], cat(be64(tagOf(c.id, salt)), c.edge[:2], c.own[:3], c.below[:3]))
		return k
	}
	mk := func(i int) child { return child{rid(i), rshort(i), rshort(100 + i), rshort(200 + i)} }
	var askers, answerers []child
	for i := range 20 {
		askers = append(askers, mk(i))
		switch c := mk(i); i {
		case 3:
		case 5:
			c.own = rshort(-5)
			answerers = append(answerers, c)
		case 8:
			c.edge, c.below = rshort(-8), rshort(-208)
			answerers = append(answerers, c)
		default:
			answerers = append(answerers, c)
		}
	}
	answerers = append(answerers, mk(99))
	const salt = 0xc0ffee01
	asker := crdt.NewSketch(24, 16)
	for _, c := range askers {
		asker.Add(childKey(c, salt))
	}
	req := &RepairRequest{Root: rid(1), ChildSketch: []ChildSketchQuery{
		{Node: rid(2), Buckets: [32]byte{0: 1, 31: 0x80}, Salt: salt, Sketch: asker.AppendBinary(nil)},
	}}
	msg := mustEncodeRequest(t, req)
	got, err := DecodeRepairRequest(msg, 0)
	if err != nil || !reflect.DeepEqual(got, req) {
		t.Fatalf("request: %v\n got %+v\nwant %+v", err, got, req)
	}
	q := got.ChildSketch[0]
	if tagOf(rid(3), q.Salt) == tagOf(rid(3), q.Salt+1) {
		t.Fatal("the test's child tags ignore the salt")
	}
	// The answerer keys its children with the asker's salt, subtracts and
	// sorts the difference into Both, Children and Missing.
	sk, err := crdt.DecodeSketch(q.Sketch, 16)
	if err != nil {
		t.Fatal(err)
	}
	answerer := crdt.NewSketch(sk.Cells(), 16)
	for _, c := range answerers {
		answerer.Add(childKey(c, q.Salt))
	}
	if err := answerer.Subtract(sk); err != nil {
		t.Fatal(err)
	}
	plus, minus, ok := answerer.Decode()
	if !ok || len(plus) != 3 || len(minus) != 3 {
		t.Fatalf("child sketch difference: %x, %x, %v", plus, minus, ok)
	}
	diff := ChildDiff{Node: q.Node, OK: true}
	theirs := map[uint64]crdt.SketchKey{}
	for _, k := range minus {
		theirs[binary.BigEndian.Uint64(k[:8])] = k
	}
	for _, k := range plus {
		tag := binary.BigEndian.Uint64(k[:8])
		tk, both := theirs[tag]
		if !both {
			for _, c := range answerers {
				if tagOf(c.id, q.Salt) == tag {
					diff.Children = append(diff.Children, ChildSum{ID: c.id, Active: true, Edge: c.edge, Own: c.own, Below: c.below})
				}
			}
			continue
		}
		delete(theirs, tag)
		f := ChildFlags{Tag: tag, Edge: !bytes.Equal(k[8:10], tk[8:10]), Own: !bytes.Equal(k[10:13], tk[10:13]), Below: !bytes.Equal(k[13:16], tk[13:16])}
		f.Aggregated = f.Own
		diff.Both = append(diff.Both, f)
	}
	for tag := range theirs {
		diff.Missing = append(diff.Missing, tag)
	}
	slices.SortFunc(diff.Both, func(a, b ChildFlags) int { return cmp.Compare(a.Tag, b.Tag) })
	wantBoth := []ChildFlags{
		{Tag: tagOf(rid(5), salt), Own: true, Aggregated: true},
		{Tag: tagOf(rid(8), salt), Edge: true, Below: true},
	}
	slices.SortFunc(wantBoth, func(a, b ChildFlags) int { return cmp.Compare(a.Tag, b.Tag) })
	if want := []ChildSum{{ID: rid(99), Active: true, Edge: rshort(99), Own: rshort(199), Below: rshort(299)}}; !reflect.DeepEqual(diff.Both, wantBoth) ||
		!reflect.DeepEqual(diff.Children, want) || !slices.Equal(diff.Missing, []uint64{tagOf(rid(3), salt)}) {
		t.Fatalf("child diff %+v\nwant both %+v, children %+v, missing %x", diff, wantBoth, want, tagOf(rid(3), salt))
	}

	// Points: the answerer aggregates a node's and a child's points (the
	// child's marked in the ChildDiff), one of each newer than the
	// asker's version; the asker sketches the same nodes.
	pts := wireSensorPoints(6)
	pts[4].Node, pts[5].Node = rid(5), rid(5)
	mine := slices.Clone(pts)
	mine[2].Time = pts[2].Time - 1
	mine[5].Time = pts[5].Time - 1
	cells := 12
	rep := &RepairReply{
		Summaries: []Summary{
			{Node: pts[0].Node, Own: rdig(1), BelowEqual: true, Aggregated: true},
		},
		ChildDiffs: []ChildDiff{diff},
		Answered:   [ansKinds]int{AnsCompare: 1, AnsChildSketch: 1},
		Aggregate:  raggregate(pts, cells),
	}
	rmsg := mustEncodeReply(t, rep)
	gr, err := DecodeRepairReply(rmsg, 0)
	if err != nil || !reflect.DeepEqual(gr, rep) {
		t.Fatalf("reply: %v\n got %+v\nwant %+v", err, gr, rep)
	}
	agg, err := crdt.DecodeSketch(gr.Aggregate, crdt.PointKeyLen)
	if err != nil {
		t.Fatal(err)
	}
	own, err := crdt.DecodeSketch(raggregate(mine, cells), crdt.PointKeyLen)
	if err != nil {
		t.Fatal(err)
	}
	if err := agg.Subtract(own); err != nil {
		t.Fatal(err)
	}
	plus, minus, ok = agg.Decode()
	sortKeys := func(ks []crdt.SketchKey) []crdt.SketchKey {
		slices.SortFunc(ks, func(a, b crdt.SketchKey) int { return bytes.Compare(a[:], b[:]) })
		return ks
	}
	wantPlus := sortKeys([]crdt.SketchKey{crdt.PointKey(&pts[2]), crdt.PointKey(&pts[5])})
	wantMinus := sortKeys([]crdt.SketchKey{crdt.PointKey(&mine[2]), crdt.PointKey(&mine[5])})
	if !ok || !slices.Equal(sortKeys(plus), wantPlus) || !slices.Equal(sortKeys(minus), wantMinus) {
		t.Fatalf("aggregate difference: %x, %x, %v", plus, minus, ok)
	}

	// The child sketch limit is the largest sketch of 16-byte keys, which
	// a request carries twice over, with room to spare.
	if maxChildSketchBytes != crdt.MaxSketchCells*(1+16+4) {
		t.Fatalf("maxChildSketchBytes = %d, want %d cells of 21 bytes", maxChildSketchBytes, crdt.MaxSketchCells)
	}
	largest := crdt.NewSketch(crdt.MaxSketchCells+100, 16).AppendBinary(nil)
	if len(largest) != maxChildSketchBytes {
		t.Fatalf("the largest child sketch is %d bytes, the limit %d", len(largest), maxChildSketchBytes)
	}
	for _, n := range []int{maxChildSketchBytes - 1, maxChildSketchBytes, maxChildSketchBytes + 1, 2 * maxChildSketchBytes} {
		big := &RepairRequest{Root: rid(1), ChildSketch: []ChildSketchQuery{
			{Node: rid(2), Salt: uint32(n), Sketch: rcursor(n, n)}, {Node: rid(3), Salt: 1<<32 - 1, Sketch: largest},
		}}
		msg := mustEncodeRequest(t, big)
		if len(msg) > crdt.MaxMessageSize {
			t.Fatalf("request with a child sketch of %d bytes is %d bytes", n, len(msg))
		}
		got, err := DecodeRepairRequest(msg, 0)
		switch {
		case n <= maxChildSketchBytes && (err != nil || !reflect.DeepEqual(got, big)):
			t.Errorf("child sketch of %d bytes: %v", n, err)
		case n > maxChildSketchBytes && (!errors.Is(err, crdt.ErrMalformed) || got != nil):
			t.Errorf("child sketch of %d bytes: %v, want ErrMalformed", n, err)
		}
	}
	// The limit holds on the second query too.
	over := &RepairRequest{ChildSketch: []ChildSketchQuery{{Node: rid(2)}, {Node: rid(3), Salt: 7, Sketch: make([]byte, maxChildSketchBytes+1)}}}
	if _, err := DecodeRepairRequest(mustEncodeRequest(t, over), 0); !errors.Is(err, crdt.ErrMalformed) {
		t.Errorf("second child sketch over the limit: %v, want ErrMalformed", err)
	}

	// The largest aggregate fits a reply, with a full summary list.
	bigAgg := crdt.NewSketch(crdt.MaxSketchCells, crdt.PointKeyLen).AppendBinary(nil)
	full := repairReplySample()
	full.Aggregate = bigAgg
	if msg := mustEncodeReply(t, full); len(msg) > crdt.MaxMessageSize {
		t.Errorf("reply with the largest aggregate is %d bytes", len(msg))
	} else if got, err := DecodeRepairReply(msg, 0); err != nil || !bytes.Equal(got.Aggregate, bigAgg) {
		t.Errorf("reply with the largest aggregate: %v", err)
	}
}

// TestRepairFlagBytes tries every value of each flag, kind and density
// byte (density, child active, ChildFlags flags, summary kind, child diff
// ok): the decoders accept exactly the values the format defines and
// refuse the others as crdt.ErrMalformed.
func TestRepairFlagBytes(t *testing.T) {
	u, d := ub(rid(1)), db(rdig(1))
	child := childRec(ChildSum{ID: rid(2), Edge: rshort(2), Own: rshort(3), Below: rshort(4)})
	for v := range 256 {
		b := byte(v)

		// Density: 0 to MaxDensity.
		req, err := DecodeRepairRequest(reqWireFrame(repairRequestWire{Compare: cat(u, d, d, []byte{b})}), 0)
		if v <= MaxDensity {
			want := []NodeSub{{Node: rid(1), Sub: rdig(1), Own: rdig(1), Density: b}}
			if err != nil || !reflect.DeepEqual(req.Compare, want) {
				t.Errorf("density %d: %v", v, err)
			}
		} else if !errors.Is(err, crdt.ErrMalformed) {
			t.Errorf("density %d: %v, want ErrMalformed", v, err)
		}

		// Child flag: 0 inactive, 1 active, in each list of children
		// (also after a ChildFlags record in a ChildDiff).
		c := slices.Clone(child)
		c[16] = b
		want := ChildSum{ID: rid(2), Edge: rshort(2), Own: rshort(3), Below: rshort(4), Active: v == 1}
		for _, w := range []repairReplyWire{
			{Summaries: cat(u, d, []byte{0, 1}, c)},
			{Summaries: cat(u, d, []byte{4, 2}, child, c)},
			{Buckets: cat(u, []byte{0, 1}, c)},
			{ChildDiffs: cat(u, []byte{1, 0, 1}, c, []byte{0})},
			{ChildDiffs: cat(u, []byte{1, 1}, flagsRec(ChildFlags{Tag: 1, Own: true}), []byte{1}, c, []byte{0})},
		} {
			rep, err := DecodeRepairReply(replyWireFrame(w), 0)
			if v > 1 {
				if !errors.Is(err, crdt.ErrMalformed) {
					t.Errorf("child flag %#x: %v, want ErrMalformed", v, err)
				}
				continue
			}
			var got []ChildSum
			if err == nil {
				switch {
				case len(rep.Summaries) == 1:
					got = rep.Summaries[0].Children
				case len(rep.Buckets) == 1:
					got = rep.Buckets[0].Children
				case len(rep.ChildDiffs) == 1:
					got = rep.ChildDiffs[0].Children
				}
			}
			if len(got) > 0 {
				got = got[len(got)-1:] // the child after a valid one
			}
			if err != nil || !slices.Equal(got, []ChildSum{want}) {
				t.Errorf("child flag %#x: %+v, %v", v, got, err)
			}
		}

		// ChildFlags flags: 1 edge, 2 own, 4 below, 8 aggregated; any
		// other bit is refused, in the first record of Both or after a
		// valid one, with children and missing tags after it or not.
		fl := flagsRec(ChildFlags{Tag: 0x0102030405060708})
		fl[8] = b
		wantF := ChildFlags{Tag: 0x0102030405060708, Edge: v&1 != 0, Own: v&2 != 0, Below: v&4 != 0, Aggregated: v&8 != 0}
		valid := flagsRec(ChildFlags{Tag: 1<<64 - 1, Below: true})
		for _, tc := range []struct {
			body []byte
			want ChildDiff
		}{
			{cat(u, []byte{1, 1}, fl, []byte{0, 0}), ChildDiff{Node: rid(1), OK: true, Both: []ChildFlags{wantF}}},
			{cat(u, []byte{1, 2}, valid, fl, []byte{1}, child, []byte{1}, be64(3)), ChildDiff{
				Node: rid(1), OK: true, Both: []ChildFlags{{Tag: 1<<64 - 1, Below: true}, wantF},
				Children: []ChildSum{{ID: rid(2), Edge: rshort(2), Own: rshort(3), Below: rshort(4)}}, Missing: []uint64{3},
			}},
		} {
			rep, err := DecodeRepairReply(replyWireFrame(repairReplyWire{ChildDiffs: tc.body}), 0)
			if v > 15 {
				if !errors.Is(err, crdt.ErrMalformed) || rep != nil {
					t.Errorf("child diff flags %#x: %v, want ErrMalformed", v, err)
				}
				continue
			}
			if err != nil || !reflect.DeepEqual(rep.ChildDiffs, []ChildDiff{tc.want}) {
				t.Errorf("child diff flags %#x: %+v, %v", v, rep, err)
			}
			if err == nil {
				if again := mustEncodeReply(t, rep); !bytes.Equal(again, replyWireFrame(repairReplyWire{ChildDiffs: tc.body})) {
					t.Errorf("child diff flags %#x: re-encoding differs", v)
				}
			}
		}

		// Summary kind: 0 children, 1 buckets, 2 below-equal, each
		// optionally | 4 aggregated. Both lists are empty here, so a count
		// follows unless the kind is below-equal; a refused kind is
		// refused with a count after it and without.
		withCount, without := cat(u, d, []byte{b}, uvb(0)), cat(u, d, []byte{b})
		switch v {
		case 0, 1, 2, 4, 5, 6:
			body := withCount
			if v&^4 == 2 {
				body = without
			}
			rep, err := DecodeRepairReply(replyWireFrame(repairReplyWire{Summaries: body}), 0)
			want := []Summary{{Node: rid(1), Own: rdig(1), Many: v&^4 == 1, BelowEqual: v&^4 == 2, Aggregated: v&4 != 0}}
			if err != nil || !reflect.DeepEqual(rep.Summaries, want) {
				t.Errorf("summary kind %d: %v", v, err)
			}
		default:
			for _, body := range [][]byte{withCount, without} {
				if _, err := DecodeRepairReply(replyWireFrame(repairReplyWire{Summaries: body}), 0); !errors.Is(err, crdt.ErrMalformed) {
					t.Errorf("summary kind %#x (% x): %v, want ErrMalformed", v, body[32:], err)
				}
			}
		}

		// Child diff ok: 0 (nothing follows) or 1 (three counts follow);
		// any other value is refused with either after it.
		withCounts, without := cat(u, []byte{b}, uvb(0), uvb(0), uvb(0)), cat(u, []byte{b})
		switch v {
		case 0, 1:
			body := withCounts
			if v == 0 {
				body = without
			}
			rep, err := DecodeRepairReply(replyWireFrame(repairReplyWire{ChildDiffs: body}), 0)
			if want := []ChildDiff{{Node: rid(1), OK: v == 1}}; err != nil || !reflect.DeepEqual(rep.ChildDiffs, want) {
				t.Errorf("child diff ok %d: %v", v, err)
			}
			// An OK diff with two counts, the old layout, lacks one.
			if _, err := DecodeRepairReply(replyWireFrame(repairReplyWire{ChildDiffs: cat(u, []byte{b}, uvb(0), uvb(0))}), 0); v == 1 && !errors.Is(err, crdt.ErrMalformed) {
				t.Errorf("child diff ok 1 with two counts: %v, want ErrMalformed", err)
			}
		default:
			for _, body := range [][]byte{withCounts, without} {
				if _, err := DecodeRepairReply(replyWireFrame(repairReplyWire{ChildDiffs: body}), 0); !errors.Is(err, crdt.ErrMalformed) {
					t.Errorf("child diff ok %#x (% x): %v, want ErrMalformed", v, body[16:], err)
				}
			}
		}
	}
}

// TestRepairEncodesWhatItRefuses: the encoders do not check limits; a
// density over MaxDensity encodes as its byte and the decoder refuses it,
// like a cursor or child sketch over its limit. Callers keep to the
// limits.
func TestRepairEncodesWhatItRefuses(t *testing.T) {
	msg := mustEncodeRequest(t, &RepairRequest{Compare: []NodeSub{{Node: rid(1), Density: MaxDensity + 1}}})
	var w repairRequestWire
	if err := msgpack.Unmarshal(msg[headerLen:], &w); err != nil || !bytes.Equal(w.Compare, cat(ub(rid(1)), make([]byte, 32), []byte{65})) {
		t.Fatalf("compare of density 65 encodes as % x, %v", w.Compare, err)
	}
	if _, err := DecodeRepairRequest(msg, 0); !errors.Is(err, crdt.ErrMalformed) {
		t.Errorf("density 65: %v, want ErrMalformed", err)
	}
}
