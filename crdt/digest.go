package crdt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/bits"
)

// Digest is a 128-bit multiset hash: the sum, modulo 2^128, of the digests
// of the points it covers. Sums are independent of order and can be updated
// in O(1): Add a point's digest when it enters a set and Sub it when it
// leaves. Unlike XOR, a point counted twice (a node reachable by two paths)
// adds twice and never cancels out. The zero Digest is the digest of the
// empty set.
type Digest struct {
	Hi, Lo uint64
}

// Add returns d + e modulo 2^128.
func (d Digest) Add(e Digest) Digest {
	lo, carry := bits.Add64(d.Lo, e.Lo, 0)
	hi, _ := bits.Add64(d.Hi, e.Hi, carry)
	return Digest{Hi: hi, Lo: lo}
}

// Sub returns d - e modulo 2^128.
func (d Digest) Sub(e Digest) Digest {
	lo, borrow := bits.Sub64(d.Lo, e.Lo, 0)
	hi, _ := bits.Sub64(d.Hi, e.Hi, borrow)
	return Digest{Hi: hi, Lo: lo}
}

// IsZero reports whether d is the digest of the empty set (or of a set whose
// sum wrapped to zero, which happens with probability 2^-128).
func (d Digest) IsZero() bool { return d.Hi == 0 && d.Lo == 0 }

// Bytes returns d as 16 bytes, big-endian.
func (d Digest) Bytes() [16]byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], d.Hi)
	binary.BigEndian.PutUint64(b[8:], d.Lo)
	return b
}

// DigestFromBytes is the inverse of Digest.Bytes.
func DigestFromBytes(b [16]byte) Digest {
	return Digest{Hi: binary.BigEndian.Uint64(b[:8]), Lo: binary.BigEndian.Uint64(b[8:])}
}

// String returns d as 32 lowercase hex digits, big-endian.
func (d Digest) String() string {
	b := d.Bytes()
	return hex.EncodeToString(b[:])
}

// ParseDigest parses the String form of a Digest.
func ParseDigest(s string) (Digest, error) {
	var b [16]byte
	if len(s) != 32 {
		return Digest{}, fmt.Errorf("invalid digest %q: want 32 hex digits", truncate(s, 40))
	}
	if _, err := hex.Decode(b[:], []byte(s)); err != nil {
		return Digest{}, fmt.Errorf("invalid digest %q: %w", s, err)
	}
	return DigestFromBytes(b), nil
}

// digestInputVersion starts every digest input; a change to the layout below
// gets a new version byte.
const digestInputVersion = 1

// AppendDigestInput appends the byte string that PointDigest hashes:
//
//	u8    version (1)
//	[16]  node
//	[16]  parent (16 zero bytes for a node point)
//	u8    len(type), type
//	u8    len(key), key
//	u64   value as IEEE-754 bits
//	u32   len(text), text
//	u8    tombstone (0 or 1)
//	u64   time (the HLC)
//	[16]  origin
//
// Integers are big-endian. The point must be valid and normalized: the
// layout relies on the length limits, and -0 would hash apart from 0.
func AppendDigestInput(dst []byte, p *Point) []byte {
	dst = append(dst, digestInputVersion)
	dst = append(dst, p.Node[:]...)
	dst = append(dst, p.Parent[:]...)
	dst = append(dst, byte(len(p.Type)))
	dst = append(dst, p.Type...)
	dst = append(dst, byte(len(p.Key)))
	dst = append(dst, p.Key...)
	dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(p.Value))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p.Text)))
	dst = append(dst, p.Text...)
	if p.Tombstone {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.Time))
	dst = append(dst, p.Origin[:]...)
	return dst
}

// PointDigest returns the digest of one point: the first 16 bytes of
// SHA-256(AppendDigestInput(p)), read as a big-endian 128-bit integer.
// SHA-256 is in every browser (WebCrypto) and has hardware support on
// current CPUs; being cryptographic, it keeps a hostile peer from crafting
// points whose digests hide a difference.
func PointDigest(p *Point) Digest {
	var buf [160]byte
	in := AppendDigestInput(buf[:0], p)
	sum := sha256.Sum256(in)
	return Digest{Hi: binary.BigEndian.Uint64(sum[:8]), Lo: binary.BigEndian.Uint64(sum[8:16])}
}

// RegisterHash identifies a node point's register within its node, for
// repair listings: the first 8 bytes, big-endian, of SHA-256 over
// type 0x00 key.
func RegisterHash(typ, key string) uint64 {
	var buf [128]byte // short registers hash without allocating
	return RegisterHashBytes(append(append(append(buf[:0], typ...), 0), key...))
}

// RegisterHashBytes is RegisterHash of the bytes type 0x00 key.
func RegisterHashBytes(typeKey []byte) uint64 {
	sum := sha256.Sum256(typeKey)
	return binary.BigEndian.Uint64(sum[:8])
}
