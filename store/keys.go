package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

const (
	pfxMeta      = 'm'
	pfxPoint     = 'p'
	pfxSeq       = 's'
	pfxChild     = 'c'
	pfxParent    = 'u'
	pfxNode      = 'n'
	pfxBucket    = 'b'
	pfxIrregular = 'i'
)

var (
	keyRoot     = []byte{pfxMeta, 'r', 'o', 'o', 't'}
	keyInstance = []byte{pfxMeta, 'i', 'n', 's', 't'}
	keyFormat   = []byte{pfxMeta, 'f', 'm', 't'}
	keyMaxTime  = []byte{pfxMeta, 'h', 'l', 'c'}
)

// formatVersion is the on-disk layout version, checked on open.
const formatVersion = 2

// errCorrupt reports stored bytes that do not decode; it means damage or a
// bug, never bad input from a peer.
var errCorrupt = errors.New("store: corrupt record")

// appendRegKey appends node | parent | type 0x00 key: the register part
// shared by point keys and HLC index keys.
func appendRegKey(dst []byte, node, parent uuid.UUID, typ, key string) []byte {
	dst = append(dst, node[:]...)
	dst = append(dst, parent[:]...)
	dst = append(dst, typ...)
	dst = append(dst, 0)
	return append(dst, key...)
}

func pointKey(p *crdt.Point) []byte {
	k := make([]byte, 0, 1+32+len(p.Type)+1+len(p.Key))
	k = append(k, pfxPoint)
	return appendRegKey(k, p.Node, p.Parent, p.Type, p.Key)
}

// seqKey is the change-feed key of the register whose winner arrived as
// local change number seq.
func seqKey(seq uint64, p *crdt.Point) []byte {
	k := make([]byte, 0, 1+8+32+len(p.Type)+1+len(p.Key))
	k = append(k, pfxSeq)
	k = binary.BigEndian.AppendUint64(k, seq)
	return appendRegKey(k, p.Node, p.Parent, p.Type, p.Key)
}

// parseRegKey parses node | parent | type 0x00 key into p's identity.
func parseRegKey(b []byte, p *crdt.Point) error {
	if len(b) < 32+2 {
		return fmt.Errorf("%w: register key of %d bytes", errCorrupt, len(b))
	}
	copy(p.Node[:], b[:16])
	copy(p.Parent[:], b[16:32])
	rest := string(b[32:])
	i := strings.IndexByte(rest, 0)
	if i < 0 {
		return fmt.Errorf("%w: register key without separator", errCorrupt)
	}
	p.Type, p.Key = rest[:i], rest[i+1:]
	return nil
}

// Register values: flags(1) time(8) origin(16) value(8) seq(8) text. seq is
// the local change number under which the winner arrived (its 's' key).
const (
	regTombstone = 1 << 0
	regHeader    = 1 + 8 + 16 + 8 + 8
)

func encodeRegister(p *crdt.Point, seq uint64) []byte {
	return appendRegister(make([]byte, 0, regHeader+len(p.Text)), p, seq)
}

// appendRegister appends the register value of p, the winner under change
// number seq, to dst.
func appendRegister(dst []byte, p *crdt.Point, seq uint64) []byte {
	var flags byte
	if p.Tombstone {
		flags = regTombstone
	}
	dst = append(dst, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.Time))
	dst = append(dst, p.Origin[:]...)
	dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(p.Value))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return append(dst, p.Text...)
}

// decodeRegister fills p's payload from a register value and returns the
// winner's change number. The text is copied: v may belong to Badger.
func decodeRegister(v []byte, p *crdt.Point) (uint64, error) {
	if len(v) < regHeader {
		return 0, fmt.Errorf("%w: register value of %d bytes", errCorrupt, len(v))
	}
	p.Tombstone = v[0]&regTombstone != 0
	p.Time = crdt.Timestamp(binary.BigEndian.Uint64(v[1:]))
	copy(p.Origin[:], v[9:25])
	p.Value = math.Float64frombits(binary.BigEndian.Uint64(v[25:]))
	seq := binary.BigEndian.Uint64(v[33:])
	p.Text = string(v[regHeader:])
	return seq, nil
}

func edgeKey(pfx byte, a, b uuid.UUID) []byte {
	k := make([]byte, 33)
	k[0] = pfx
	copy(k[1:], a[:])
	copy(k[17:], b[:])
	return k
}

func nodeKey(n uuid.UUID) []byte {
	k := make([]byte, 17)
	k[0] = pfxNode
	copy(k[1:], n[:])
	return k
}

func bucketKey(parent uuid.UUID, bucket byte) []byte {
	k := make([]byte, 18)
	k[0] = pfxBucket
	copy(k[1:], parent[:])
	k[17] = bucket
	return k
}

// edgeState is what the store keeps about one parent→child pair that has at
// least one edge point.
type edgeState struct {
	hasReg    bool // a TypeEdge register exists
	tombstone bool // ... and it is a tombstone
	moved     bool // ... with value crdt.EdgeMoved (a move wrote it)
	active    bool // the edge is part of the tree
	time      crdt.Timestamp
	origin    uuid.UUID
	digest    crdt.Digest // sum of the digests of the edge's points
	place     string      // ... and its text: the placements it names
}

const (
	esHasReg = 1 << iota
	esTombstone
	esMoved
	esActive
)

// edgeStateLen is the fixed part of an encoded edge state; the register's
// text (its placements) follows it. A state written before placements has
// no text.
const edgeStateLen = 1 + 8 + 16 + 16

func (s *edgeState) encode() []byte {
	v := make([]byte, edgeStateLen, edgeStateLen+len(s.place))
	var f byte
	if s.hasReg {
		f |= esHasReg
	}
	if s.tombstone {
		f |= esTombstone
	}
	if s.moved {
		f |= esMoved
	}
	if s.active {
		f |= esActive
	}
	v[0] = f
	binary.BigEndian.PutUint64(v[1:], uint64(s.time))
	copy(v[9:25], s.origin[:])
	d := s.digest.Bytes()
	copy(v[25:], d[:])
	return append(v, s.place...)
}

func decodeEdgeState(v []byte) (edgeState, error) {
	if len(v) < edgeStateLen || len(v) > edgeStateLen+crdt.MaxTextLen {
		return edgeState{}, fmt.Errorf("%w: edge state of %d bytes", errCorrupt, len(v))
	}
	f := v[0]
	s := edgeState{hasReg: f&esHasReg != 0, tombstone: f&esTombstone != 0, moved: f&esMoved != 0, active: f&esActive != 0}
	s.time = crdt.Timestamp(binary.BigEndian.Uint64(v[1:]))
	copy(s.origin[:], v[9:25])
	var d [16]byte
	copy(d[:], v[25:])
	s.digest = crdt.DigestFromBytes(d)
	s.place = string(v[edgeStateLen:])
	return s, nil
}

// live reports whether the edge's register says it exists.
func (s *edgeState) live() bool { return s.hasReg && !s.tombstone }

// register returns the edge register e's state holds; ok is false when
// the edge has no TypeEdge register.
func (s *edgeState) register(e crdt.Edge) (r crdt.EdgeRegister, ok bool) {
	if !s.hasReg {
		return r, false
	}
	return crdt.EdgeRegister{Parent: e.Parent, Child: e.Child, Tombstone: s.tombstone, Moved: s.moved,
		Place: s.place, Time: s.time, Origin: s.origin}, true
}

// nodeMeta holds a node's digests.
type nodeMeta struct {
	own, sub crdt.Digest
}

func (m *nodeMeta) encode() []byte {
	v := make([]byte, 32)
	a, b := m.own.Bytes(), m.sub.Bytes()
	copy(v, a[:])
	copy(v[16:], b[:])
	return v
}

func decodeNodeMeta(v []byte) (nodeMeta, error) {
	if len(v) != 32 {
		return nodeMeta{}, fmt.Errorf("%w: node record of %d bytes", errCorrupt, len(v))
	}
	var a, b [16]byte
	copy(a[:], v[:16])
	copy(b[:], v[16:])
	return nodeMeta{own: crdt.DigestFromBytes(a), sub: crdt.DigestFromBytes(b)}, nil
}

func decodeDigest(v []byte) (crdt.Digest, error) {
	if len(v) != 16 {
		return crdt.Digest{}, fmt.Errorf("%w: digest of %d bytes", errCorrupt, len(v))
	}
	var a [16]byte
	copy(a[:], v)
	return crdt.DigestFromBytes(a), nil
}
