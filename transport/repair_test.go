package transport

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"

	"siot/crdt"
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

func rchildren(seed, n int) []ChildSum {
	out := make([]ChildSum, n)
	for i := range out {
		out[i] = ChildSum{ID: rid(seed + i), Active: i%3 != 0, Edge: rshort(seed + i), Sub: rshort(-seed - i)}
	}
	return out
}

// repairRequestSample returns a request with every list non-empty: full
// and extreme digests, cursors absent, short and at the limit, multi-byte
// varints (a cursor over 127 bytes, 300 hashes).
func repairRequestSample() *RepairRequest {
	hashes := make([]uint64, 300)
	for i := range hashes {
		hashes[i] = uint64(i) * 0xff51afd7ed558ccd
	}
	hashes[1] = 1<<64 - 1
	return &RepairRequest{
		Root: rid(1),
		Compare: []NodeSub{
			{Node: rid(2), Sub: rdig(2), Own: rdig(-2)}, {Node: rid(3), Sub: rdig(3)}, {Node: rid(4), Own: rdig(4)},
			{Node: uuid.Max, Sub: crdt.Digest{Hi: 1<<64 - 1, Lo: 1<<64 - 1}, Own: crdt.Digest{Hi: 1<<64 - 1, Lo: 1<<64 - 1}},
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
	}
}

// repairReplySample returns a reply with every list non-empty: summaries
// with children, with buckets and with neither; listings with and without
// More, Next and After; a crdt batch; counts needing every int width.
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
	return &RepairReply{
		Summaries: []Summary{
			{Node: rid(20), Own: rdig(20), Children: rchildren(100, 5)},
			{Node: rid(21), Own: rdig(21), Many: true, Buckets: buckets},
			{Node: rid(22), Own: rdig(22), Many: true, Buckets: buckets[7:9]},
			{Node: rid(23)},
			{Node: rid(24), Own: rdig(24), Many: true},
			{Node: rid(25), Own: rdig(25), Children: rchildren(200, 130)},
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
		Points:   crdt.AppendBatch(nil, wireSensorPoints(5)),
		Answered: [5]int{4, 5, 300, 70_000, 1 << 40},
	}
}

// repairRequests returns requests to round-trip: the full sample, the
// empty one, and each kind of query alone.
func repairRequests() []*RepairRequest {
	full := repairRequestSample()
	return []*RepairRequest{
		full, {}, {Root: rid(1)}, {Root: uuid.Max},
		{Compare: full.Compare}, {List: full.List}, {Buckets: full.Buckets}, {Fetch: full.Fetch}, {Edges: full.Edges},
		{Compare: full.Compare[:1]}, {List: full.List[:1]}, {Fetch: full.Fetch[1:2]},
	}
}

// repairReplies returns replies to round-trip, like repairRequests.
func repairReplies() []*RepairReply {
	full := repairReplySample()
	return []*RepairReply{
		full, {}, {Answered: full.Answered}, {Answered: [5]int{1 << 62, 0, 0, 0, 1}},
		{Summaries: full.Summaries}, {Listings: full.Listings}, {Buckets: full.Buckets}, {Points: full.Points},
		{Summaries: full.Summaries[3:4]}, {Listings: full.Listings[3:4]}, {Buckets: full.Buckets[1:2]},
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
}

// TestRepairEncodingNormalizes documents what a round trip does not
// keep: empty lists and cursors come back nil, and a Summary keeps only
// the list its Many flag selects.
func TestRepairEncodingNormalizes(t *testing.T) {
	req := &RepairRequest{
		Compare: []NodeSub{}, List: []ListQuery{{Node: rid(1), After: []byte{}}},
		Fetch: []FetchQuery{{Node: rid(2), Hashes: []uint64{}}}, Edges: []EdgeQuery{},
	}
	gotReq, err := DecodeRepairRequest(mustEncodeRequest(t, req), 0)
	want := &RepairRequest{List: []ListQuery{{Node: rid(1)}}, Fetch: []FetchQuery{{Node: rid(2)}}}
	if err != nil || !reflect.DeepEqual(gotReq, want) {
		t.Errorf("request with empty lists: %+v, %v; want %+v", gotReq, err, want)
	}
	rep := &RepairReply{
		Summaries: []Summary{
			{Node: rid(3), Children: []ChildSum{}, Buckets: []BucketSum{{Bucket: 1}}},
			{Node: rid(4), Many: true, Children: rchildren(5, 2), Buckets: []BucketSum{}},
		},
		Listings: []Listing{{Node: rid(6), Entries: []ListEntry{}, Next: []byte{}, After: []byte{}}},
		Buckets:  []BucketChildren{{Node: rid(7), Children: []ChildSum{}}},
		Points:   []byte{},
	}
	gotRep, err := DecodeRepairReply(mustEncodeReply(t, rep), 0)
	wantRep := &RepairReply{
		Summaries: []Summary{{Node: rid(3)}, {Node: rid(4), Many: true}},
		Listings:  []Listing{{Node: rid(6)}},
		Buckets:   []BucketChildren{{Node: rid(7)}},
	}
	if err != nil || !reflect.DeepEqual(gotRep, wantRep) {
		t.Errorf("reply with empty and contradictory lists: %+v, %v; want %+v", gotRep, err, wantRep)
	}
}

// cat concatenates byte strings.
func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

func ub(u uuid.UUID) []byte   { return u[:] }
func db(d crdt.Digest) []byte { b := d.Bytes(); return b[:] }
func sb(s ShortDigest) []byte { return s[:] }
func uvb(n uint64) []byte     { return binary.AppendUvarint(nil, n) }
func be64(n uint64) []byte    { return binary.BigEndian.AppendUint64(nil, n) }
func childRec(c ChildSum) []byte {
	return cat(ub(c.ID), []byte{flagByte(c.Active)}, sb(c.Edge), sb(c.Sub))
}

func flagByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// TestRepairWireLayout pins the wire format: the msgpack keys of both
// bodies and the byte layout of every record, written here by hand from
// the layout (uuids 16 bytes, digests 16 bytes big-endian, short digests
// their first 8, flags one byte 0 or 1, lengths and counts uvarints,
// hashes 8 bytes big-endian).
func TestRepairWireLayout(t *testing.T) {
	d := rdig(9)
	if s := Short(d); !bytes.Equal(s[:], db(d)[:8]) {
		t.Errorf("Short(%v) = % x, want the first 8 bytes", d, s)
	}
	sum := sha256.Sum256([]byte("temperature\x00value"))
	if got, want := RegisterHash("temperature", "value"), binary.BigEndian.Uint64(sum[:8]); got != want {
		t.Errorf("RegisterHash = %#x, want %#x", got, want)
	}

	req := &RepairRequest{
		Root:    rid(1),
		Compare: []NodeSub{{Node: rid(2), Sub: rdig(2), Own: rdig(-2)}},
		List:    []ListQuery{{Node: rid(3), After: []byte("xy")}, {Node: rid(4)}},
		Buckets: []BucketQuery{{Node: rid(5), Bucket: 7}},
		Fetch:   []FetchQuery{{Node: rid(6), Hashes: []uint64{1, 1<<64 - 2}}},
		Edges:   []EdgeQuery{{Child: rid(7), Parent: rid(8)}},
	}
	var rw map[string]any
	if err := msgpack.Unmarshal(mustEncodeRequest(t, req)[headerLen:], &rw); err != nil {
		t.Fatal(err)
	}
	wantReq := map[string]any{
		"root":  ub(rid(1)),
		"cmp":   cat(ub(rid(2)), db(rdig(2)), db(rdig(-2)), []byte{0}),
		"list":  cat(ub(rid(3)), []byte{2, 'x', 'y'}, ub(rid(4)), []byte{0}),
		"bkt":   cat(ub(rid(5)), []byte{7}),
		"fetch": cat(ub(rid(6)), []byte{2}, be64(1), be64(1<<64-2)),
		"edges": cat(ub(rid(7)), ub(rid(8))),
	}
	if !reflect.DeepEqual(rw, wantReq) {
		t.Errorf("request body\n got %x\nwant %x", rw, wantReq)
	}

	c1, c2 := ChildSum{ID: rid(11), Active: true, Edge: rshort(11), Sub: rshort(12)}, ChildSum{ID: rid(13), Edge: rshort(13)}
	rep := &RepairReply{
		Summaries: []Summary{
			{Node: rid(10), Own: rdig(10), Children: []ChildSum{c1, c2}},
			{Node: rid(14), Own: rdig(14), Many: true, Buckets: []BucketSum{{Bucket: 3, Digest: rshort(3)}}},
		},
		Listings: []Listing{{Node: rid(15), After: []byte("a"), More: true, Next: []byte("bc"), Entries: []ListEntry{{Hash: 5, Digest: rshort(5)}}}},
		Buckets:  []BucketChildren{{Node: rid(16), Bucket: 9, Children: []ChildSum{c2}}},
		Points:   []byte{0x90},
		Answered: [5]int{1, 2, 3, 4, 5},
	}
	var pw map[string]any
	if err := msgpack.Unmarshal(mustEncodeReply(t, rep)[headerLen:], &pw); err != nil {
		t.Fatal(err)
	}
	wantRep := map[string]any{
		"sums": cat(ub(rid(10)), db(rdig(10)), []byte{0, 2}, childRec(c1), childRec(c2),
			ub(rid(14)), db(rdig(14)), []byte{1, 1, 3}, sb(rshort(3))),
		"lists": cat(ub(rid(15)), []byte{1, 'a', 1, 2, 'b', 'c', 1}, be64(5), sb(rshort(5))),
		"bkts":  cat(ub(rid(16)), []byte{9, 1}, childRec(c2)),
		"pts":   []byte{0x90},
		"done":  []any{int8(1), int8(2), int8(3), int8(4), int8(5)},
	}
	if !reflect.DeepEqual(pw, wantRep) {
		t.Errorf("reply body\n got %#v\nwant %#v", pw, wantRep)
	}
	if got := childRec(c1); len(got) != 33 || got[16] != 1 {
		t.Errorf("child record % x", got)
	}

	// The empty messages: a root, and the five counts.
	for _, tc := range []struct {
		msg  []byte
		keys []string
	}{
		{mustEncodeRequest(t, &RepairRequest{}), []string{"root"}},
		{mustEncodeRequest(t, repairRequestSample()), []string{"bkt", "cmp", "edges", "fetch", "list", "root"}},
		{mustEncodeReply(t, &RepairReply{}), []string{"done"}},
		{mustEncodeReply(t, repairReplySample()), []string{"bkts", "done", "lists", "pts", "sums"}},
	} {
		var m map[string]any
		if err := msgpack.Unmarshal(tc.msg[headerLen:], &m); err != nil {
			t.Fatal(err)
		}
		if got := sortedKeys(m); !slices.Equal(got, tc.keys) {
			t.Errorf("%s keys = %q, want %q", MsgType(tc.msg[1]), got, tc.keys)
		}
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

// replyWireFrame encodes w, with five zero counts unless it has some.
func replyWireFrame(w repairReplyWire) []byte {
	if w.Answered == nil {
		w.Answered = make([]int, 5)
	}
	b, err := encodeWire(MsgRepairReply, &w)
	if err != nil {
		panic(err)
	}
	return b
}

// repairHostile lists repair frames under the size limit that lie about
// their records or counts. The decoders must refuse each with
// crdt.ErrMalformed.
func repairHostile() []repairFrame {
	u1, u2 := ub(rid(1)), ub(rid(2))
	d := db(rdig(1))
	c := childRec(ChildSum{ID: rid(3), Active: true, Edge: rshort(3), Sub: rshort(4)})
	badChild := func(flag byte) []byte { b := slices.Clone(c); b[16] = flag; return b }
	cur := func(n int) []byte { return cat(uvb(uint64(n)), make([]byte, n)) }
	overflow := bytes.Repeat([]byte{0xff}, 10) // a uvarint over 64 bits
	req := func(name string, w repairRequestWire) repairFrame {
		return repairFrame{"request " + name, reqWireFrame(w), false, false}
	}
	rep := func(name string, w repairReplyWire) repairFrame {
		return repairFrame{"reply " + name, replyWireFrame(w), true, false}
	}
	raw := func(name string, m mp) repairFrame {
		return repairFrame{"reply " + name, m.frame(MsgRepairReply), true, false}
	}
	done := func(m mp) mp { return m.str("done").fixarr(5).raw(0, 0, 0, 0, 0) }
	return []repairFrame{
		{"request header only", AppendFrameHeader(nil, MsgRepair), false, false},
		{"reply header only", AppendFrameHeader(nil, MsgRepairReply), true, false},
		{"request body an int", mp{}.raw(0x07).frame(MsgRepair), false, false},
		{"request root of 3 bytes", mp{}.fixmap(1).str("root").bin([]byte{1, 2, 3}).frame(MsgRepair), false, false},
		{"request cmp an int", mp{}.fixmap(1).str("cmp").raw(0x07).frame(MsgRepair), false, false},
		{"request cmp a bin32 of 1 GiB", mp{}.fixmap(1).str("cmp").bin32(1<<30).raw(1, 2, 3).frame(MsgRepair), false, false},
		req("compare: a third of a record", repairRequestWire{Compare: cat(u1, d[:15])}),
		req("compare: two thirds of a record", repairRequestWire{Compare: cat(u1, d)}),
		req("compare: a record and a half", repairRequestWire{Compare: cat(u1, d, d, u2, d[:8])}),
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
		req("compare valid, list bad", repairRequestWire{Compare: cat(u1, d, d), List: cat(u1, uvb(1))}),
		req("edges bad after valid lists", repairRequestWire{Compare: cat(u1, d, d), Fetch: cat(u1, uvb(0)), Edges: u1}),

		raw("body a string", mp{}.str("done")),
		raw("answered missing", mp{}.fixmap(0)),
		raw("answered nil", mp{}.fixmap(1).str("done").raw(0xc0)),
		raw("answered of 2^64-1", mp{}.fixmap(1).str("done").fixarr(5).raw(0, 0, 0, 0, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)),
		raw("answered of int64 min", mp{}.fixmap(1).str("done").fixarr(5).raw(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
		raw("answered strings", mp{}.fixmap(1).str("done").fixarr(5).str("1").str("2").str("3").str("4").str("5")),
		raw("answered floats", mp{}.fixmap(1).str("done").fixarr(5).raw(0xca, 0x3f, 0x80, 0, 0, 0, 0, 0, 0, 0)),
		raw("answered a map", mp{}.fixmap(1).str("done").fixmap(1).str("a").raw(1)),
		raw("answered array32 of 2^32-1", mp{}.fixmap(1).str("done").arr32(1<<32-1).raw(0, 0, 0, 0, 0)),
		raw("sums an int", done(mp{}.fixmap(2).str("sums").raw(0x01))),
		rep("answered empty", repairReplyWire{Answered: []int{}}),
		rep("answered 4 counts", repairReplyWire{Answered: []int{1, 2, 3, 4}}),
		rep("answered 6 counts", repairReplyWire{Answered: []int{1, 2, 3, 4, 5, 6}}),
		rep("answered negative", repairReplyWire{Answered: []int{0, 0, -1, 0, 0}}),
		rep("answered most negative", repairReplyWire{Answered: []int{-1 << 63, 0, 0, 0, 0}}),
		rep("summaries: own digest cut", repairReplyWire{Summaries: cat(u1, d[:8])}),
		rep("summaries: no kind", repairReplyWire{Summaries: cat(u1, d)}),
		rep("summaries: kind 2", repairReplyWire{Summaries: cat(u1, d, []byte{2, 0})}),
		rep("summaries: kind 0xff", repairReplyWire{Summaries: cat(u1, d, []byte{0xff, 0})}),
		rep("summaries: no count", repairReplyWire{Summaries: cat(u1, d, []byte{0})}),
		rep("summaries: child active flag 2", repairReplyWire{Summaries: cat(u1, d, []byte{0, 1}, badChild(2))}),
		rep("summaries: child active flag 0xff", repairReplyWire{Summaries: cat(u1, d, []byte{0, 2}, c, badChild(0xff))}),
		rep("summaries: 2 children, 1 present", repairReplyWire{Summaries: cat(u1, d, []byte{0, 2}, c)}),
		rep("summaries: 2^40 children", repairReplyWire{Summaries: cat(u1, d, []byte{0}, uvb(1<<40), c)}),
		rep("summaries: child cut", repairReplyWire{Summaries: cat(u1, d, []byte{0, 1}, c[:32])}),
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
		rep("buckets: child flag 2", repairReplyWire{Buckets: cat(u1, []byte{5, 1}, badChild(2))}),
		rep("buckets: 2 children, 1 present", repairReplyWire{Buckets: cat(u1, []byte{5, 2}, c)}),
		rep("buckets: 2^32 children", repairReplyWire{Buckets: cat(u1, []byte{5}, uvb(1<<32), c)}),
		rep("buckets: child cut", repairReplyWire{Buckets: cat(u1, []byte{5, 1}, c[:17])}),
		rep("bad summary after valid lists", repairReplyWire{Listings: cat(u1, uvb(0), []byte{0}, uvb(0), uvb(0)), Summaries: cat(u1, d, []byte{3})}),
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
	checkRecordCuts(t, MsgRepair, repairRequestSample(), []string{"Compare", "List", "Buckets", "Fetch", "Edges"},
		func(w *repairRequestWire) ([]byte, error) { return encodeWire(MsgRepair, w) },
		DecodeRepairRequest, EncodeRepairRequest)
	checkRecordCuts(t, MsgRepairReply, repairReplySample(), []string{"Summaries", "Listings", "Buckets"},
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
	children := (size - 64) / len(minChild)
	entries := (size - 64) / 16
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
		{"summaries", true, "Summaries", fill(cat(u, d, []byte{0, 0}))},
		{"summary of most children", true, "Summaries", cat(u, d, []byte{0}, uvb(uint64(children)), bytes.Repeat(minChild, children))},
		{"summaries of one bucket", true, "Summaries", fill(cat(u, d, []byte{1, 1, 0}, make([]byte, 8)))},
		{"listings", true, "Listings", fill(cat(u, []byte{0, 0, 0, 0}))},
		{"listing of most entries", true, "Listings", cat(u, []byte{0, 0, 0}, uvb(uint64(entries)), make([]byte, 16*entries))},
		{"listings with cursors", true, "Listings", fill(cat(u, []byte{1, 'a', 1, 1, 'b', 0}))},
		{"bucket listings", true, "Buckets", fill(cat(u, []byte{1, 0}))},
		{"bucket of most children", true, "Buckets", cat(u, []byte{1}, uvb(uint64(children)), bytes.Repeat(minChild, children))},
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

// TestRepairSubject: a session's repair subject is under its prefix and
// distinct from the others.
func TestRepairSubject(t *testing.T) {
	id := NewSessionID()
	s, err := Subjects(id)
	if err != nil {
		t.Fatal(err)
	}
	if s.Repair != "siot.link."+id+".repair" {
		t.Errorf("repair subject %q", s.Repair)
	}
	for _, o := range []string{s.Start, s.Up, s.Down, s.Ping, SubjectHello, SubjectStatus, SubjectImport, SubjectExport} {
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

// TestRepairSketchAndWantRoundTrip covers the compare's sketch and the
// reply's Want list, and refuses a sketch over its size limit.
func TestRepairSketchAndWantRoundTrip(t *testing.T) {
	sk := crdt.NewSketch(9)
	sk.Add([16]byte{1, 2, 3})
	req := &RepairRequest{Root: rid(1), Compare: []NodeSub{{Node: rid(2), Sub: rdig(2), Own: rdig(3), Sketch: sk.AppendBinary(nil)}}}
	b := mustEncodeRequest(t, req)
	got, err := DecodeRepairRequest(b, 0)
	if err != nil || !reflect.DeepEqual(got, req) {
		t.Fatalf("request: %v\n got %+v\nwant %+v", err, got, req)
	}
	if _, err := crdt.DecodeSketch(got.Compare[0].Sketch); err != nil {
		t.Fatal(err)
	}
	rep := &RepairReply{Answered: [5]int{1}, Want: []FetchQuery{{Node: rid(4), Hashes: []uint64{7, 9}}}}
	rb := mustEncodeReply(t, rep)
	gr, err := DecodeRepairReply(rb, 0)
	if err != nil || !reflect.DeepEqual(gr, rep) {
		t.Fatalf("reply: %v\n got %+v\nwant %+v", err, gr, rep)
	}
	big := &RepairRequest{Root: rid(1), Compare: []NodeSub{{Node: rid(2), Sketch: make([]byte, maxSketchBytes+1)}}}
	if _, err := DecodeRepairRequest(mustEncodeRequest(t, big), 0); !errors.Is(err, crdt.ErrMalformed) {
		t.Fatalf("oversized sketch: %v", err)
	}
}
