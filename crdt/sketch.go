package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sketch is an invertible Bloom lookup table of 16-byte keys: a few cells
// that, after subtracting another replica's sketch of the same set, yield
// the keys present on one side only, when there are few of them. Repair
// sketches a node's points (key: the register hash and the point's short
// digest) to find the one or two that differ without listing them all.
//
// Each key goes to one cell in each of SketchHashes equal parts of the
// table, chosen by successive 32-bit words of the key (keys are hash
// outputs, so their bytes are uniform). A cell holds a count, the XOR of
// its keys and the XOR of a check word of each key.
type Sketch struct {
	cells []sketchCell
}

type sketchCell struct {
	count int16
	key   [16]byte
	check uint32
}

// SketchHashes is the number of cells each key touches.
const SketchHashes = 3

// sketchCellLen is the encoded size of a cell: count, key, check.
const sketchCellLen = 2 + 16 + 4

// MaxSketchCells bounds a sketch's size.
const MaxSketchCells = 3 * 1024

// NewSketch returns an empty sketch of cells cells, rounded up to a
// multiple of SketchHashes (at least SketchHashes).
func NewSketch(cells int) *Sketch {
	cells = max(SketchHashes, (cells+SketchHashes-1)/SketchHashes*SketchHashes)
	return &Sketch{cells: make([]sketchCell, min(cells, MaxSketchCells))}
}

func sketchCheck(k *[16]byte) uint32 {
	a := binary.BigEndian.Uint32(k[12:])
	b := binary.BigEndian.Uint32(k[0:])
	return (a ^ b*0x9e3779b1) | 1
}

// cell returns the index of key k's cell in part i.
func (s *Sketch) cell(k *[16]byte, i int) int {
	part := len(s.cells) / SketchHashes
	return i*part + int(binary.BigEndian.Uint32(k[4*i:])%uint32(part))
}

// Add puts key k in the sketch.
func (s *Sketch) Add(k [16]byte) { s.toggle(&k, 1) }

func (s *Sketch) toggle(k *[16]byte, n int16) {
	c := sketchCheck(k)
	for i := range SketchHashes {
		cl := &s.cells[s.cell(k, i)]
		cl.count += n
		for j := range cl.key {
			cl.key[j] ^= k[j]
		}
		cl.check ^= c
	}
}

// Subtract removes o's keys from s, cell by cell; both must have the same
// size.
func (s *Sketch) Subtract(o *Sketch) error {
	if len(s.cells) != len(o.cells) {
		return fmt.Errorf("sketch: %d cells minus %d", len(s.cells), len(o.cells))
	}
	for i := range s.cells {
		c, d := &s.cells[i], &o.cells[i]
		c.count -= d.count
		for j := range c.key {
			c.key[j] ^= d.key[j]
		}
		c.check ^= d.check
	}
	return nil
}

// Decode lists the keys of a subtracted sketch: plus were only in the
// sketch subtracted from, minus only in the one subtracted. ok is false
// when the sketch holds too many keys to list (it is left peeled partway).
func (s *Sketch) Decode() (plus, minus [][16]byte, ok bool) {
	// An honest sketch peels each key once; a hostile one could make
	// peeling go back and forth, so the number of peels is bounded.
	budget := 2*len(s.cells) + SketchHashes
	for progress := true; progress; {
		progress = false
		for i := range s.cells {
			c := &s.cells[i]
			if (c.count != 1 && c.count != -1) || sketchCheck(&c.key) != c.check {
				continue
			}
			k, n := c.key, c.count
			// A pure cell's key must map back here.
			if s.cell(&k, i/(len(s.cells)/SketchHashes)) != i {
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
		if c.count != 0 || c.check != 0 || c.key != [16]byte{} {
			return plus, minus, false
		}
	}
	return plus, minus, true
}

// Cells returns the sketch's size in cells.
func (s *Sketch) Cells() int { return len(s.cells) }

// AppendBinary appends the sketch's encoding: its cells, 22 bytes each.
func (s *Sketch) AppendBinary(dst []byte) []byte {
	for _, c := range s.cells {
		dst = binary.BigEndian.AppendUint16(dst, uint16(c.count))
		dst = append(dst, c.key[:]...)
		dst = binary.BigEndian.AppendUint32(dst, c.check)
	}
	return dst
}

// ErrBadSketch reports an encoded sketch of an impossible size.
var ErrBadSketch = errors.New("sketch: bad encoding")

// DecodeSketch parses an encoding made by AppendBinary.
func DecodeSketch(b []byte) (*Sketch, error) {
	n := len(b) / sketchCellLen
	if len(b)%sketchCellLen != 0 || n < SketchHashes || n%SketchHashes != 0 || n > MaxSketchCells {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadSketch, len(b))
	}
	s := &Sketch{cells: make([]sketchCell, n)}
	for i := range s.cells {
		c := &s.cells[i]
		c.count = int16(binary.BigEndian.Uint16(b))
		copy(c.key[:], b[2:18])
		c.check = binary.BigEndian.Uint32(b[18:])
		b = b[sketchCellLen:]
	}
	return s, nil
}

// PointKey is a point's key in a repair sketch: its register hash within
// its node (RegisterHash), then its HLC, both big-endian. Two versions of a
// register differ in their HLC (a writer never stamps two writes alike),
// and a decoded pair says which one wins without sending both.
func PointKey(p *Point) [16]byte {
	var k [16]byte
	binary.BigEndian.PutUint64(k[:8], RegisterHash(p.Type, p.Key))
	binary.BigEndian.PutUint64(k[8:], uint64(p.Time))
	return k
}
