package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Sketch is an invertible Bloom lookup table of fixed-length keys: a table
// of cells that, after subtracting another replica's sketch of the same
// set, yields the keys present on one side only, when there are not too
// many of them for its size (about two thirds of a key per cell). Repair
// sketches a set of nodes' points (PointKey) to find the few that differ
// without listing them, and a node's children to find the ones whose
// digests differ.
//
// Each key goes to one cell in each of SketchHashes equal parts of the
// table, chosen by a 64-bit mix of the whole key (so keys need not be
// uniform, and a key with a predictable part still spreads). A cell holds
// a count (modulo 256), the XOR of its keys and the XOR of a check word of
// each key.
type Sketch struct {
	keyLen int
	cells  []sketchCell
}

// SketchKey holds a sketch key; a sketch of KeyLen k uses its first k
// bytes, the rest are zero.
type SketchKey [MaxSketchKeyLen]byte

type sketchCell struct {
	count int8 // wraps: only differences of a few keys are decoded
	key   SketchKey
	check uint32
}

// Sketch sizes.
const (
	// SketchHashes is the number of cells each key touches.
	SketchHashes = 3
	// MaxSketchKeyLen is the longest key a sketch holds.
	MaxSketchKeyLen = 20
	// MaxSketchCells bounds a sketch's size: at 25 bytes a cell, a sketch
	// is at most 400 KiB, well under a message.
	MaxSketchCells = 16 * 1024
)

// NewSketch returns an empty sketch of keys of keyLen bytes (1 to
// MaxSketchKeyLen) with cells cells, rounded up to a multiple of
// SketchHashes and clamped to [SketchHashes, MaxSketchCells].
func NewSketch(cells, keyLen int) *Sketch {
	if keyLen < 1 || keyLen > MaxSketchKeyLen {
		panic(fmt.Sprintf("crdt: sketch key length %d", keyLen)) // a programming error, never input
	}
	cells = max(SketchHashes, (cells+SketchHashes-1)/SketchHashes*SketchHashes)
	return &Sketch{keyLen: keyLen, cells: make([]sketchCell, min(cells, MaxSketchCells))}
}

// Mix64 is the SplitMix64 finalizer: a cheap bijective mix of 64 bits.
// Sketches and repair tags use it; any implementation of the protocol must
// compute it bit for bit (docs/protocol.md).
func Mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// keyHash mixes a key's bytes, 8 at a time, big-endian, with a final
// 4-byte word when the length is 20.
func (s *Sketch) keyHash(k *SketchKey) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	i := 0
	for ; i+8 <= s.keyLen; i += 8 {
		h = Mix64(h ^ binary.BigEndian.Uint64(k[i:]))
	}
	if i < s.keyLen {
		var tail [8]byte
		copy(tail[:], k[i:s.keyLen])
		h = Mix64(h ^ binary.BigEndian.Uint64(tail[:]))
	}
	return h
}

// place returns key k's cell in each part and its check word.
func (s *Sketch) place(k *SketchKey) (idx [SketchHashes]int, check uint32) {
	h := s.keyHash(k)
	g := Mix64(h)
	part := uint64(len(s.cells) / SketchHashes)
	idx[0] = int(uint64(uint32(h)) % part)
	idx[1] = int(part + uint64(uint32(h>>32))%part)
	idx[2] = int(2*part + uint64(uint32(g))%part)
	return idx, uint32(g>>32) | 1
}

// Add puts key k in the sketch; bytes of k beyond the sketch's key length
// must be zero.
func (s *Sketch) Add(k SketchKey) { s.toggle(&k, 1) }

func (s *Sketch) toggle(k *SketchKey, n int8) {
	idx, c := s.place(k)
	for _, i := range idx {
		cl := &s.cells[i]
		cl.count += n
		xorKey(&cl.key, k)
		cl.check ^= c
	}
}

// xorKey sets *a to a XOR b, a word at a time.
func xorKey(a, b *SketchKey) {
	binary.LittleEndian.PutUint64(a[0:], binary.LittleEndian.Uint64(a[0:])^binary.LittleEndian.Uint64(b[0:]))
	binary.LittleEndian.PutUint64(a[8:], binary.LittleEndian.Uint64(a[8:])^binary.LittleEndian.Uint64(b[8:]))
	binary.LittleEndian.PutUint32(a[16:], binary.LittleEndian.Uint32(a[16:])^binary.LittleEndian.Uint32(b[16:]))
}

// Subtract removes o's keys from s, cell by cell; both must have the same
// size and key length.
func (s *Sketch) Subtract(o *Sketch) error {
	if len(s.cells) != len(o.cells) || s.keyLen != o.keyLen {
		return fmt.Errorf("sketch: %d cells of %d-byte keys minus %d of %d", len(s.cells), s.keyLen, len(o.cells), o.keyLen)
	}
	for i := range s.cells {
		c, d := &s.cells[i], &o.cells[i]
		c.count -= d.count
		xorKey(&c.key, &d.key)
		c.check ^= d.check
	}
	return nil
}

// Decode lists the keys of a subtracted sketch: plus were only in the
// sketch subtracted from, minus only in the one subtracted. ok is false
// when the sketch holds too many keys to list (it is left peeled partway
// and the keys found so far are not reliable).
func (s *Sketch) Decode() (plus, minus []SketchKey, ok bool) {
	// An honest sketch peels each key once; a hostile one could make
	// peeling go back and forth, so the number of peels is bounded.
	budget := 2*len(s.cells) + SketchHashes
	for progress := true; progress; {
		progress = false
		for i := range s.cells {
			c := &s.cells[i]
			if c.count != 1 && c.count != -1 {
				continue
			}
			k, n := c.key, c.count
			idx, check := s.place(&k)
			// A pure cell's key checks, and maps back here.
			if check != c.check || idx[i/(len(s.cells)/SketchHashes)] != i {
				continue
			}
			if budget--; budget < 0 {
				return plus, minus, false
			}
			if n == 1 {
				plus = append(plus, k)
			} else {
				minus = append(minus, k)
			}
			s.toggle(&k, -n)
			progress = true
		}
	}
	for i := range s.cells {
		c := &s.cells[i]
		if c.count != 0 || c.check != 0 || c.key != (SketchKey{}) {
			return plus, minus, false
		}
	}
	return plus, minus, true
}

// NonEmpty counts the cells that hold anything. After a Decode that failed
// it estimates how many keys are left: with n keys in m cells about
// m·(1 − e^(−3n/m)) cells are non-empty.
func (s *Sketch) NonEmpty() int {
	n := 0
	for i := range s.cells {
		if c := &s.cells[i]; c.count != 0 || c.check != 0 || c.key != (SketchKey{}) {
			n++
		}
	}
	return n
}

// Cells returns the sketch's size in cells.
func (s *Sketch) Cells() int { return len(s.cells) }

// KeyLen returns the length of the sketch's keys.
func (s *Sketch) KeyLen() int { return s.keyLen }

// EncodedLen returns the size of the sketch's encoding.
func (s *Sketch) EncodedLen() int { return len(s.cells) * SketchCellLen(s.keyLen) }

// SketchCellLen is the encoded size of a cell of keyLen-byte keys: count,
// key, check.
func SketchCellLen(keyLen int) int { return 1 + keyLen + 4 }

// AppendBinary appends the sketch's encoding: its cells in order, each a
// count byte, the key and the check word (big-endian).
func (s *Sketch) AppendBinary(dst []byte) []byte {
	for _, c := range s.cells {
		dst = append(dst, byte(c.count))
		dst = append(dst, c.key[:s.keyLen]...)
		dst = binary.BigEndian.AppendUint32(dst, c.check)
	}
	return dst
}

// ErrBadSketch reports an encoded sketch of an impossible size.
var ErrBadSketch = errors.New("sketch: bad encoding")

// DecodeSketch parses an encoding made by AppendBinary of a sketch of
// keyLen-byte keys. It allocates in proportion to len(b) only.
func DecodeSketch(b []byte, keyLen int) (*Sketch, error) {
	if keyLen < 1 || keyLen > MaxSketchKeyLen {
		return nil, fmt.Errorf("%w: key length %d", ErrBadSketch, keyLen)
	}
	cl := SketchCellLen(keyLen)
	n := len(b) / cl
	if len(b)%cl != 0 || n < SketchHashes || n%SketchHashes != 0 || n > MaxSketchCells {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadSketch, len(b))
	}
	s := &Sketch{keyLen: keyLen, cells: make([]sketchCell, n)}
	for i := range s.cells {
		c := &s.cells[i]
		c.count = int8(b[0])
		copy(c.key[:keyLen], b[1:1+keyLen])
		c.check = binary.BigEndian.Uint32(b[1+keyLen:])
		b = b[cl:]
	}
	return s, nil
}

// PointKeyLen is the length of a PointKey.
const PointKeyLen = 20

// PointKey is a node point's key in a repair sketch, 20 bytes:
// NodeTag(node) (4), the high 32 bits of RegisterHash(type, key) (4), the
// HLC (8) and NodeTag(origin) (4), big-endian. A sketch over several
// nodes' points tells from a decoded key which node and register it is,
// and from a decoded pair which version wins; the origin tag keeps two
// versions stamped with one HLC by two writers apart.
func PointKey(p *Point) SketchKey {
	return MakePointKey(NodeTag(p.Node), RegisterHash(p.Type, p.Key), p.Time, p.Origin)
}

// MakePointKey is PointKey from its parts: the node's tag, the register
// hash, the HLC and the origin.
func MakePointKey(nodeTag uint32, regHash uint64, t Timestamp, origin uuid.UUID) SketchKey {
	var k SketchKey
	binary.BigEndian.PutUint32(k[0:], nodeTag)
	binary.BigEndian.PutUint32(k[4:], uint32(regHash>>32))
	binary.BigEndian.PutUint64(k[8:], uint64(t))
	binary.BigEndian.PutUint32(k[16:], NodeTag(origin))
	return k
}

// NodeTag is a 32-bit tag of an ID: Mix64 of its first 8 bytes XOR its
// last 8 (big-endian), mixed again, high 32 bits.
func NodeTag(id uuid.UUID) uint32 {
	a := binary.BigEndian.Uint64(id[:8])
	b := binary.BigEndian.Uint64(id[8:])
	return uint32(Mix64(Mix64(a)^b) >> 32)
}

// PointKeyParts splits a PointKey into node tag, register tag, HLC and
// origin tag.
func PointKeyParts(k *SketchKey) (node, reg uint32, t Timestamp, origin uint32) {
	return binary.BigEndian.Uint32(k[0:]), binary.BigEndian.Uint32(k[4:]),
		Timestamp(binary.BigEndian.Uint64(k[8:])), binary.BigEndian.Uint32(k[16:])
}
