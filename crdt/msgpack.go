package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed reports bytes that are not a well-formed encoding. Decoders
// wrap it with the position and the reason.
var ErrMalformed = errors.New("malformed message")

// MaxDepth is the deepest nesting of msgpack arrays and maps a decoder
// accepts. siot's own messages nest three levels at most.
const MaxDepth = 16

// CheckMsgpack verifies that b holds exactly one well-formed msgpack value,
// nested at most maxDepth deep, and that every length it declares is backed
// by bytes actually present: a string, binary or extension of n bytes needs
// n more bytes, and an array or map of n entries needs at least n (or 2n)
// more bytes, since every value takes at least one.
//
// This is the guard in front of github.com/vmihailenco/msgpack/v5, which
// allocates whatever a message declares (an array header of five bytes can
// ask for 2^32 elements). After CheckMsgpack accepts b, no decoder reading b
// can be made to allocate more than a small constant times len(b). It runs
// in O(len(b)) time without allocating.
func CheckMsgpack(b []byte, maxDepth int) error {
	n, err := skipValue(b, 0, maxDepth)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("%w: %d trailing bytes after the value", ErrMalformed, len(b)-n)
	}
	return nil
}

// skipValue returns the offset just past the value starting at b[off].
// Containers are walked with an explicit counter of pending values rather
// than recursion, so hostile nesting cannot exhaust the stack.
func skipValue(b []byte, off, maxDepth int) (int, error) {
	// pending[i] is how many values are still expected at depth i.
	var pendingBuf [MaxDepth + 1]int
	if maxDepth > MaxDepth {
		maxDepth = MaxDepth
	}
	pending := pendingBuf[:1]
	pending[0] = 1
	for len(pending) > 0 {
		if pending[len(pending)-1] == 0 {
			pending = pending[:len(pending)-1]
			continue
		}
		pending[len(pending)-1]--
		if off >= len(b) {
			return 0, fmt.Errorf("%w: truncated at byte %d", ErrMalformed, off)
		}
		c := b[off]
		off++
		var size, count int // payload bytes to skip; values to expect
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
			// positive/negative fixint, nil, false, true
		case c >= 0x80 && c <= 0x8f:
			count = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			count = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			size = int(c & 0x1f)
		case c == 0xc1:
			return 0, fmt.Errorf("%w: reserved code 0xc1 at byte %d", ErrMalformed, off-1)
		case c == 0xc4, c == 0xd9: // bin8, str8
			l, err := readLen(b, off, 1)
			if err != nil {
				return 0, err
			}
			off++
			size = l
		case c == 0xc5, c == 0xda: // bin16, str16
			l, err := readLen(b, off, 2)
			if err != nil {
				return 0, err
			}
			off += 2
			size = l
		case c == 0xc6, c == 0xdb: // bin32, str32
			l, err := readLen(b, off, 4)
			if err != nil {
				return 0, err
			}
			off += 4
			size = l
		case c == 0xc7, c == 0xc8, c == 0xc9: // ext8/16/32: length, type, data
			w := 1 << (c - 0xc7)
			l, err := readLen(b, off, w)
			if err != nil {
				return 0, err
			}
			off += w
			size = l + 1
		case c == 0xca: // float32
			size = 4
		case c == 0xcb: // float64
			size = 8
		case c == 0xcc, c == 0xd0:
			size = 1
		case c == 0xcd, c == 0xd1:
			size = 2
		case c == 0xce, c == 0xd2:
			size = 4
		case c == 0xcf, c == 0xd3:
			size = 8
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16: type then data
			size = 1 + 1<<(c-0xd4)
		case c == 0xdc, c == 0xdd: // array16, array32
			w := 2 << (c - 0xdc)
			l, err := readLen(b, off, w)
			if err != nil {
				return 0, err
			}
			off += w
			count = l
		case c == 0xde, c == 0xdf: // map16, map32
			w := 2 << (c - 0xde)
			l, err := readLen(b, off, w)
			if err != nil {
				return 0, err
			}
			off += w
			count = 2 * l
		}
		if size > len(b)-off {
			return 0, fmt.Errorf("%w: value at byte %d declares %d bytes, %d present", ErrMalformed, off-1, size, len(b)-off)
		}
		off += size
		if count > 0 {
			if count > len(b)-off {
				return 0, fmt.Errorf("%w: container at byte %d declares %d values, only %d bytes follow", ErrMalformed, off-1, count, len(b)-off)
			}
			if len(pending) > maxDepth {
				return 0, fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxDepth)
			}
			pending = append(pending, count)
		}
	}
	return off, nil
}

func readLen(b []byte, off, width int) (int, error) {
	if len(b)-off < width {
		return 0, fmt.Errorf("%w: truncated length at byte %d", ErrMalformed, off)
	}
	var n uint64
	switch width {
	case 1:
		n = uint64(b[off])
	case 2:
		n = uint64(binary.BigEndian.Uint16(b[off:]))
	default:
		n = uint64(binary.BigEndian.Uint32(b[off:]))
	}
	// Every declared byte or value needs at least one byte of input. Checking
	// that before converting to int also keeps a 32-bit length from turning
	// negative where int has 32 bits.
	if rest := len(b) - off - width; n > uint64(rest) {
		return 0, fmt.Errorf("%w: length %d at byte %d, only %d bytes follow", ErrMalformed, n, off-1, rest)
	}
	return int(n), nil
}
