package transport

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// Digest repair messages. A repair is driven by the dialer of a link: it
// sends RepairRequests to the session's repair subject and the acceptor
// answers each with a RepairReply. The lists inside are fixed-layout binary
// records in msgpack bins, so their size is bounded by the bytes present
// and a record costs no more than its fields; docs/protocol.md gives the
// layouts.

// ShortDigest is the first 8 bytes of a crdt.Digest: enough to tell two
// versions of one thing apart (a false match needs a 2^-64 coincidence),
// half the bytes on the wire.
type ShortDigest [8]byte

// Short returns d's ShortDigest.
func Short(d crdt.Digest) ShortDigest {
	b := d.Bytes()
	var s ShortDigest
	copy(s[:], b[:8])
	return s
}

// NodeSub asks: is node n's subtree digest equal to Sub? When it is not,
// the reply has a Summary of n. When n's own digest differs from Own, the
// answerer also puts n's points in the reply's Aggregate sketch (or, for a
// node too big to sketch, attaches its listing; for an asker without any
// own points, the points themselves).
type NodeSub struct {
	Node uuid.UUID
	Sub  crdt.Digest
	Own  crdt.Digest
	// Density scales the cells the answerer gives n in the Aggregate:
	// 0 or 1 for the first try (about one differing point), more after a
	// sketch failed to decode. At most MaxDensity.
	Density byte
}

// MaxDensity bounds NodeSub.Density.
const MaxDensity = 64

// ListQuery asks for the listing of node Node's points after register
// After (nil: from the first).
type ListQuery struct {
	Node  uuid.UUID
	After []byte
}

// BucketQuery asks for the children of Node whose ID starts with Bucket.
type BucketQuery struct {
	Node   uuid.UUID
	Bucket byte
}

// FetchQuery asks for the node points of Node whose register hashes
// (RegisterHash) are in Hashes.
type FetchQuery struct {
	Node   uuid.UUID
	Hashes []uint64
}

// EdgeQuery asks for the points of the edge Parent → Child.
type EdgeQuery struct {
	Child, Parent uuid.UUID
}

// BucketSet is a set of child buckets: bit b%8 of byte b/8 for bucket b.
type BucketSet [32]byte

// Add puts bucket b in the set.
func (s *BucketSet) Add(b byte) { s[b/8] |= 1 << (b % 8) }

// Has reports whether bucket b is in the set.
func (s *BucketSet) Has(b byte) bool { return s[b/8]&(1<<(b%8)) != 0 }

// Len counts the buckets in the set.
func (s *BucketSet) Len() int {
	n := 0
	for _, x := range s {
		n += bits.OnesCount8(x)
	}
	return n
}

// ChildSketchQuery asks which children of Node, among those in the child
// buckets set in Buckets, differ from
// the asker's: Sketch is the asker's crdt.Sketch (16-byte keys) of its
// children there, one key per child, salted with Salt (docs/protocol.md
// gives the key).
type ChildSketchQuery struct {
	Node    uuid.UUID
	Buckets BucketSet
	Salt    uint32
	Sketch  []byte
}

// TagFetch asks for the node points of Node whose register tags (the high
// 32 bits of RegisterHash, as in a crdt.PointKey) are in Tags.
type TagFetch struct {
	Node uuid.UUID
	Tags []uint32
}

// RepairRequest is one round trip of a repair: every query of it is
// answered in the reply, in order, until the reply is full.
type RepairRequest struct {
	Root        uuid.UUID
	Compare     []NodeSub
	List        []ListQuery
	Buckets     []BucketQuery
	Fetch       []FetchQuery
	Edges       []EdgeQuery
	ChildSketch []ChildSketchQuery
	TagFetch    []TagFetch
}

// Query kinds, the indexes of RepairReply.Answered.
const (
	AnsCompare = iota
	AnsList
	AnsBuckets
	AnsFetch
	AnsEdges
	AnsChildSketch
	AnsTagFetch
	ansKinds
)

// ChildSum is one child in a Summary, a bucket listing or a ChildDiff:
// the digests of its edge, its own points and what is below it (its
// subtree digest minus its own), shortened.
type ChildSum struct {
	ID     uuid.UUID
	Active bool
	Edge   ShortDigest
	Own    ShortDigest
	Below  ShortDigest
}

// Summary describes a node whose subtree digest differed: its own digest
// and either its children (when few) or its non-empty child buckets,
// unless what is below it matched (BelowEqual: the asker's and the
// answerer's subtree minus own digests are equal).
type Summary struct {
	Node     uuid.UUID
	Own      crdt.Digest
	Children []ChildSum
	Buckets  []BucketSum // set instead of Children for a node with many children
	Many     bool        // Buckets, not Children
	// BelowEqual: nothing below the node differs; no children are listed.
	BelowEqual bool
	// Aggregated: the node's points are in the reply's Aggregate.
	Aggregated bool
}

// ChildFlags tells the asker of a child sketch what differs about a child
// both sides hold, known to it by its 64-bit child tag: its edge, its own
// points, what is below it; and whether the reply's Aggregate holds the
// child's points.
type ChildFlags struct {
	Tag                          uint64
	Edge, Own, Below, Aggregated bool
}

// ChildDiff answers a ChildSketchQuery. When OK: Both says what differs
// about each differing child both sides hold; Children are the children
// only the answerer holds; Missing the 64-bit child tags (the first 8
// bytes of a child sketch key, docs/protocol.md) of children only the
// asker holds. When not OK the sketch did not decode: the asker tries a
// larger one or lists the buckets.
type ChildDiff struct {
	Node     uuid.UUID
	OK       bool
	Both     []ChildFlags
	Children []ChildSum
	Missing  []uint64
}

// BucketSum is the digest of one non-empty child bucket.
type BucketSum struct {
	Bucket byte
	Digest ShortDigest
}

// Listing lists a node's points: register hash and short point digest.
type Listing struct {
	Node    uuid.UUID
	Entries []ListEntry
	More    bool   // more follow: ask again with After = Next
	Next    []byte // cursor, set when More
	After   []byte // the cursor this page started after (echoed)
}

// ListEntry is one point in a Listing.
type ListEntry struct {
	Hash   uint64
	Digest ShortDigest
}

// BucketChildren lists the children of Node in one bucket.
type BucketChildren struct {
	Node     uuid.UUID
	Bucket   byte
	Children []ChildSum
}

// RepairReply answers a RepairRequest. Answered counts, per kind (the Ans
// constants), how many queries of the request were answered (in order);
// the rest did not fit and must be asked again. Points holds the fetched
// points and edge points, a crdt batch.
type RepairReply struct {
	Summaries  []Summary
	Listings   []Listing
	Buckets    []BucketChildren
	ChildDiffs []ChildDiff
	Points     []byte
	Answered   [ansKinds]int
	// Aggregate is the answerer's crdt.Sketch (PointKey keys) of the
	// points of every node marked Aggregated in this reply, in one table,
	// sized from their number and densities: nil when none is.
	Aggregate []byte
}

// RegisterHash identifies a node point's register (type and key) in
// listings and fetches: the first 8 bytes of SHA-256 over type 0x00 key,
// big-endian.
func RegisterHash(typ, key string) uint64 {
	return crdt.RegisterHash(typ, key)
}

// wire forms: the msgpack bodies.

type repairRequestWire struct {
	Root        uuid.UUID `msgpack:"root"`
	Compare     []byte    `msgpack:"cmp,omitempty"`
	List        []byte    `msgpack:"list,omitempty"`
	Buckets     []byte    `msgpack:"bkt,omitempty"`
	Fetch       []byte    `msgpack:"fetch,omitempty"`
	Edges       []byte    `msgpack:"edges,omitempty"`
	ChildSketch []byte    `msgpack:"csk,omitempty"`
	TagFetch    []byte    `msgpack:"ftag,omitempty"`
}

type repairReplyWire struct {
	Summaries  []byte `msgpack:"sums,omitempty"`
	Listings   []byte `msgpack:"lists,omitempty"`
	Buckets    []byte `msgpack:"bkts,omitempty"`
	Points     []byte `msgpack:"pts,omitempty"`
	Answered   []int  `msgpack:"done"`
	ChildDiffs []byte `msgpack:"cdiff,omitempty"`
	Aggregate  []byte `msgpack:"agg,omitempty"`
}

// maxChildSketchBytes bounds a ChildSketchQuery's sketch: cells of 16-byte
// keys (crdt.SketchCellLen(16)).
const maxChildSketchBytes = crdt.MaxSketchCells * (1 + 16 + 4)

// EncodeRepairRequest returns the frame of r.
func EncodeRepairRequest(r *RepairRequest) ([]byte, error) {
	w := repairRequestWire{Root: r.Root}
	for _, c := range r.Compare {
		d, o := c.Sub.Bytes(), c.Own.Bytes()
		w.Compare = append(append(append(w.Compare, c.Node[:]...), d[:]...), o[:]...)
		w.Compare = append(w.Compare, c.Density)
	}
	for _, l := range r.List {
		w.List = append(w.List, l.Node[:]...)
		w.List = binary.AppendUvarint(w.List, uint64(len(l.After)))
		w.List = append(w.List, l.After...)
	}
	for _, b := range r.Buckets {
		w.Buckets = append(append(w.Buckets, b.Node[:]...), b.Bucket)
	}
	w.Fetch = appendFetches(w.Fetch, r.Fetch)
	for _, e := range r.Edges {
		w.Edges = append(append(w.Edges, e.Child[:]...), e.Parent[:]...)
	}
	for _, c := range r.ChildSketch {
		w.ChildSketch = append(append(w.ChildSketch, c.Node[:]...), c.Buckets[:]...)
		w.ChildSketch = binary.BigEndian.AppendUint32(w.ChildSketch, c.Salt)
		w.ChildSketch = binary.AppendUvarint(w.ChildSketch, uint64(len(c.Sketch)))
		w.ChildSketch = append(w.ChildSketch, c.Sketch...)
	}
	for _, f := range r.TagFetch {
		w.TagFetch = append(w.TagFetch, f.Node[:]...)
		w.TagFetch = binary.AppendUvarint(w.TagFetch, uint64(len(f.Tags)))
		for _, t := range f.Tags {
			w.TagFetch = binary.BigEndian.AppendUint32(w.TagFetch, t)
		}
	}
	return encodeWire(MsgRepair, &w)
}

// DecodeRepairRequest parses a MsgRepair frame of at most limit bytes.
// Errors wrap crdt.ErrMalformed for a defective body, or those of Decode.
func DecodeRepairRequest(msg []byte, limit int) (*RepairRequest, error) {
	var w repairRequestWire
	if err := decodeWire(msg, limit, MsgRepair, &w); err != nil {
		return nil, err
	}
	r := &RepairRequest{Root: w.Root}
	rd := &recReader{b: w.Compare, what: "compare"}
	for rd.more() {
		c := NodeSub{Node: rd.id()}
		c.Sub = rd.digest()
		c.Own = rd.digest()
		if c.Density = rd.byte(); c.Density > MaxDensity {
			rd.fail("density")
		}
		r.Compare = append(r.Compare, c)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	rd = &recReader{b: w.List, what: "list"}
	for rd.more() {
		l := ListQuery{Node: rd.id()}
		l.After = rd.bytes(crdt.MaxTypeLen + crdt.MaxKeyLen + 64)
		r.List = append(r.List, l)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	rd = &recReader{b: w.Buckets, what: "buckets"}
	for rd.more() {
		r.Buckets = append(r.Buckets, BucketQuery{Node: rd.id(), Bucket: rd.byte()})
	}
	if rd.err != nil {
		return nil, rd.err
	}
	var err error
	if r.Fetch, err = readFetches(w.Fetch, "fetch"); err != nil {
		return nil, err
	}
	rd = &recReader{b: w.Edges, what: "edges"}
	for rd.more() {
		r.Edges = append(r.Edges, EdgeQuery{Child: rd.id(), Parent: rd.id()})
	}
	if rd.err != nil {
		return nil, rd.err
	}
	rd = &recReader{b: w.ChildSketch, what: "child sketch"}
	for rd.more() {
		c := ChildSketchQuery{Node: rd.id()}
		copy(c.Buckets[:], rd.take(32, "buckets"))
		c.Salt = binary.BigEndian.Uint32(rd.take(4, "salt"))
		c.Sketch = rd.bytes(maxChildSketchBytes)
		r.ChildSketch = append(r.ChildSketch, c)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	rd = &recReader{b: w.TagFetch, what: "tag fetch"}
	for rd.more() {
		f := TagFetch{Node: rd.id()}
		n := rd.count(4)
		for range n {
			f.Tags = append(f.Tags, binary.BigEndian.Uint32(rd.take(4, "tag")))
		}
		r.TagFetch = append(r.TagFetch, f)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	return r, nil
}

// childRecordLen is the size of a ChildSum record: id, active, edge, own,
// below.
const childRecordLen = 16 + 1 + 8 + 8 + 8

func appendChild(b []byte, c ChildSum) []byte {
	b = append(b, c.ID[:]...)
	b = append(b, boolByte(c.Active))
	b = append(b, c.Edge[:]...)
	b = append(b, c.Own[:]...)
	return append(b, c.Below[:]...)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func (rd *recReader) child() ChildSum {
	c := ChildSum{ID: rd.id()}
	switch rd.byte() {
	case 0:
	case 1:
		c.Active = true
	default:
		rd.fail("child flag")
	}
	c.Edge = rd.short()
	c.Own = rd.short()
	c.Below = rd.short()
	return c
}

// ChildFlags flag bits.
const (
	diffEdge       = 1
	diffOwn        = 2
	diffBelow      = 4
	diffAggregated = 8
)

func appendChildFlags(b []byte, c ChildFlags) []byte {
	b = binary.BigEndian.AppendUint64(b, c.Tag)
	f := boolByte(c.Edge)*diffEdge | boolByte(c.Own)*diffOwn | boolByte(c.Below)*diffBelow |
		boolByte(c.Aggregated)*diffAggregated
	return append(b, f)
}

func (rd *recReader) childFlags() ChildFlags {
	c := ChildFlags{Tag: rd.u64()}
	f := rd.byte()
	if f&^(diffEdge|diffOwn|diffBelow|diffAggregated) != 0 {
		rd.fail("child diff flags")
	}
	c.Edge, c.Own, c.Below, c.Aggregated = f&diffEdge != 0, f&diffOwn != 0, f&diffBelow != 0, f&diffAggregated != 0
	return c
}

// Summary kinds: flag bits.
const (
	sumMany       = 1
	sumBelowEqual = 2
	sumAggregated = 4
)

func appendFetches(b []byte, fs []FetchQuery) []byte {
	for _, f := range fs {
		b = append(b, f.Node[:]...)
		b = binary.AppendUvarint(b, uint64(len(f.Hashes)))
		for _, h := range f.Hashes {
			b = binary.BigEndian.AppendUint64(b, h)
		}
	}
	return b
}

func readFetches(b []byte, what string) ([]FetchQuery, error) {
	var out []FetchQuery
	rd := &recReader{b: b, what: what}
	for rd.more() {
		f := FetchQuery{Node: rd.id()}
		n := rd.count(8)
		for range n {
			f.Hashes = append(f.Hashes, rd.u64())
		}
		out = append(out, f)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	return out, nil
}

// EncodeRepairReply returns the frame of r.
func EncodeRepairReply(r *RepairReply) ([]byte, error) {
	w := repairReplyWire{Points: r.Points, Answered: r.Answered[:], Aggregate: r.Aggregate}
	for _, s := range r.Summaries {
		own := s.Own.Bytes()
		w.Summaries = append(append(w.Summaries, s.Node[:]...), own[:]...)
		flags := byte(0)
		if s.Aggregated {
			flags |= sumAggregated
		}
		switch {
		case s.BelowEqual:
			w.Summaries = append(w.Summaries, flags|sumBelowEqual)
		case s.Many:
			w.Summaries = append(w.Summaries, flags|sumMany)
			w.Summaries = binary.AppendUvarint(w.Summaries, uint64(len(s.Buckets)))
			for _, b := range s.Buckets {
				w.Summaries = append(append(w.Summaries, b.Bucket), b.Digest[:]...)
			}
		default:
			w.Summaries = append(w.Summaries, flags)
			w.Summaries = binary.AppendUvarint(w.Summaries, uint64(len(s.Children)))
			for _, c := range s.Children {
				w.Summaries = appendChild(w.Summaries, c)
			}
		}
	}
	for _, d := range r.ChildDiffs {
		w.ChildDiffs = append(w.ChildDiffs, d.Node[:]...)
		if !d.OK {
			w.ChildDiffs = append(w.ChildDiffs, 0)
			continue
		}
		w.ChildDiffs = append(w.ChildDiffs, 1)
		w.ChildDiffs = binary.AppendUvarint(w.ChildDiffs, uint64(len(d.Both)))
		for _, c := range d.Both {
			w.ChildDiffs = appendChildFlags(w.ChildDiffs, c)
		}
		w.ChildDiffs = binary.AppendUvarint(w.ChildDiffs, uint64(len(d.Children)))
		for _, c := range d.Children {
			w.ChildDiffs = appendChild(w.ChildDiffs, c)
		}
		w.ChildDiffs = binary.AppendUvarint(w.ChildDiffs, uint64(len(d.Missing)))
		for _, m := range d.Missing {
			w.ChildDiffs = binary.BigEndian.AppendUint64(w.ChildDiffs, m)
		}
	}
	for _, l := range r.Listings {
		w.Listings = append(w.Listings, l.Node[:]...)
		w.Listings = binary.AppendUvarint(w.Listings, uint64(len(l.After)))
		w.Listings = append(w.Listings, l.After...)
		more := byte(0)
		if l.More {
			more = 1
		}
		w.Listings = append(w.Listings, more)
		w.Listings = binary.AppendUvarint(w.Listings, uint64(len(l.Next)))
		w.Listings = append(w.Listings, l.Next...)
		w.Listings = binary.AppendUvarint(w.Listings, uint64(len(l.Entries)))
		for _, e := range l.Entries {
			w.Listings = binary.BigEndian.AppendUint64(w.Listings, e.Hash)
			w.Listings = append(w.Listings, e.Digest[:]...)
		}
	}
	for _, b := range r.Buckets {
		w.Buckets = append(append(w.Buckets, b.Node[:]...), b.Bucket)
		w.Buckets = binary.AppendUvarint(w.Buckets, uint64(len(b.Children)))
		for _, c := range b.Children {
			w.Buckets = appendChild(w.Buckets, c)
		}
	}
	return encodeWire(MsgRepairReply, &w)
}

// DecodeRepairReply parses a MsgRepairReply frame of at most limit bytes.
// Errors wrap crdt.ErrMalformed for a defective body, or those of Decode.
func DecodeRepairReply(msg []byte, limit int) (*RepairReply, error) {
	var w repairReplyWire
	if err := decodeWire(msg, limit, MsgRepairReply, &w); err != nil {
		return nil, err
	}
	r := &RepairReply{}
	if len(w.Points) > 0 {
		r.Points = w.Points // an empty pts bin is no points, like none
	}
	if len(w.Answered) != len(r.Answered) {
		return nil, fmt.Errorf("repair reply: %w: %d answered counts", crdt.ErrMalformed, len(w.Answered))
	}
	for i, n := range w.Answered {
		if n < 0 {
			return nil, fmt.Errorf("repair reply: %w: negative count", crdt.ErrMalformed)
		}
		r.Answered[i] = n
	}
	if len(w.Aggregate) > 0 {
		r.Aggregate = w.Aggregate
	}
	rd := &recReader{b: w.Summaries, what: "summaries"}
	for rd.more() {
		s := Summary{Node: rd.id(), Own: rd.digest()}
		f := rd.byte()
		s.Aggregated = f&sumAggregated != 0
		switch f &^ sumAggregated {
		case sumBelowEqual:
			s.BelowEqual = true
		case 0:
			n := rd.count(childRecordLen)
			for range n {
				s.Children = append(s.Children, rd.child())
			}
		case sumMany:
			s.Many = true
			n := rd.count(9)
			for range n {
				s.Buckets = append(s.Buckets, BucketSum{Bucket: rd.byte(), Digest: rd.short()})
			}
		default:
			rd.fail("summary kind")
		}
		r.Summaries = append(r.Summaries, s)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	rd = &recReader{b: w.ChildDiffs, what: "child diffs"}
	for rd.more() {
		d := ChildDiff{Node: rd.id()}
		switch rd.byte() {
		case 0:
		case 1:
			d.OK = true
			n := rd.count(9)
			for range n {
				d.Both = append(d.Both, rd.childFlags())
			}
			n = rd.count(childRecordLen)
			for range n {
				d.Children = append(d.Children, rd.child())
			}
			n = rd.count(8)
			for range n {
				d.Missing = append(d.Missing, rd.u64())
			}
		default:
			rd.fail("child diff ok")
		}
		r.ChildDiffs = append(r.ChildDiffs, d)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	rd = &recReader{b: w.Listings, what: "listings"}
	for rd.more() {
		l := Listing{Node: rd.id()}
		l.After = rd.bytes(crdt.MaxTypeLen + crdt.MaxKeyLen + 64)
		switch rd.byte() {
		case 0:
		case 1:
			l.More = true
		default:
			rd.fail("listing more")
		}
		l.Next = rd.bytes(crdt.MaxTypeLen + crdt.MaxKeyLen + 64)
		n := rd.count(16)
		for range n {
			l.Entries = append(l.Entries, ListEntry{Hash: rd.u64(), Digest: rd.short()})
		}
		r.Listings = append(r.Listings, l)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	rd = &recReader{b: w.Buckets, what: "buckets"}
	for rd.more() {
		b := BucketChildren{Node: rd.id(), Bucket: rd.byte()}
		n := rd.count(childRecordLen)
		for range n {
			b.Children = append(b.Children, rd.child())
		}
		r.Buckets = append(r.Buckets, b)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	return r, nil
}

// recReader reads fixed-layout records from a bin, remembering the first
// error; every read is bounds-checked.
type recReader struct {
	b    []byte
	what string
	err  error
}

func (r *recReader) fail(field string) {
	if r.err == nil {
		r.err = fmt.Errorf("repair %s: %w: bad %s", r.what, crdt.ErrMalformed, field)
	}
	r.b = nil
}

func (r *recReader) more() bool { return r.err == nil && len(r.b) > 0 }

func (r *recReader) take(n int, field string) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.fail(field)
		return make([]byte, max(n, 0))
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *recReader) id() (u uuid.UUID) {
	copy(u[:], r.take(16, "uuid"))
	return u
}

func (r *recReader) digest() crdt.Digest {
	var b [16]byte
	copy(b[:], r.take(16, "digest"))
	return crdt.DigestFromBytes(b)
}

func (r *recReader) short() (s ShortDigest) {
	copy(s[:], r.take(8, "digest"))
	return s
}

func (r *recReader) byte() byte { return r.take(1, "byte")[0] }

func (r *recReader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8, "hash")) }

// count reads a record count and checks that the bytes left can hold that
// many records of at least min bytes, so no count allocates beyond them.
func (r *recReader) count(min int) int {
	if r.err != nil {
		return 0
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(len(r.b)-k)/uint64(min) {
		r.fail("count")
		return 0
	}
	r.b = r.b[k:]
	return int(n)
}

// bytes reads a length-prefixed byte string of at most limit bytes.
func (r *recReader) bytes(limit int) []byte {
	if r.err != nil {
		return nil
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(limit) || n > uint64(len(r.b)-k) {
		r.fail("length")
		return nil
	}
	r.b = r.b[k:]
	if n == 0 {
		return nil
	}
	return append([]byte(nil), r.take(int(n), "bytes")...)
}
