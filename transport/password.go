package transport

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Password hashes are argon2id in the PHC string format:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
//
// salt and key in unpadded standard base64. A hash is a point in the tree:
// any admin can write one, and a peer can sync one in, so the server
// verifies hashes it did not make. Verifying runs argon2 with the
// parameters the hash declares, so ParsePasswordHash bounds every one of
// them before anything is computed or allocated: whatever a hostile hash
// says, checking a password against it allocates at most 64 MiB and runs
// at most 10 passes over it, on at most 4 goroutines.

// Parameters of the hashes HashPassword makes: OWASP's argon2id
// recommendation (19 MiB, two passes, one lane), 16-byte salt, 32-byte
// key.
const (
	passwordMemory  = 19456 // KiB
	passwordTime    = 2
	passwordThreads = 1
	passwordSaltLen = 16
	passwordKeyLen  = 32
)

// MaxPasswordLen bounds a password, in bytes.
const MaxPasswordLen = 1024

// Bounds of what ParsePasswordHash accepts. They bound the cost of one
// verification, since a hash may come from anyone who can write a point:
// memory is what argon2 allocates (64 MiB at most), time the passes over
// it, threads the goroutines it starts. A hash HashPassword makes is well
// inside them.
const (
	maxPasswordHashLen = 256      // bytes of PHC string
	maxPasswordMemory  = 64 << 10 // KiB
	maxPasswordTime    = 10
	maxPasswordThreads = 4
	minPasswordSalt    = 8
	maxPasswordSalt    = 64
	minPasswordKey     = 16
	maxPasswordKey     = 64
)

// ErrPasswordHash is wrapped by every error ParsePasswordHash and
// VerifyPassword return: the hash is malformed or outside the bounds.
var ErrPasswordHash = errors.New("bad password hash")

// PasswordHash is a parsed argon2id hash. Memory is in KiB; Salt and Key
// are the decoded bytes, owned by the PasswordHash.
type PasswordHash struct {
	Memory  uint32
	Time    uint32
	Threads uint8
	Salt    []byte
	Key     []byte
}

// phcB64 is the PHC format's base64: standard alphabet, no padding, and
// strict, so that each hash has one encoding.
var phcB64 = base64.RawStdEncoding.Strict()

// HashPassword hashes password with a new 16-byte salt read from rnd
// (crypto/rand.Reader outside tests) and returns the PHC string. It
// refuses an empty password and one longer than MaxPasswordLen bytes, and
// fails if rnd does. It allocates about 19 MiB and takes tens to a few
// hundred milliseconds of CPU, depending on the machine.
func HashPassword(password string, rnd io.Reader) (string, error) {
	if password == "" {
		return "", errors.New("password: empty")
	}
	if len(password) > MaxPasswordLen {
		return "", fmt.Errorf("password: %d bytes, more than %d", len(password), MaxPasswordLen)
	}
	if rnd == nil {
		return "", errors.New("password: no source of randomness for the salt")
	}
	h := PasswordHash{Memory: passwordMemory, Time: passwordTime, Threads: passwordThreads,
		Salt: make([]byte, passwordSaltLen)}
	if _, err := io.ReadFull(rnd, h.Salt); err != nil {
		return "", fmt.Errorf("password: salt: %w", err)
	}
	h.Key = argon2.IDKey([]byte(password), h.Salt, h.Time, h.Memory, h.Threads, passwordKeyLen)
	return h.encode(), nil
}

// VerifyPassword reports whether password matches the PHC string phc,
// comparing in constant time. It returns an error wrapping
// ErrPasswordHash only when phc is malformed or out of bounds (see
// ParsePasswordHash); a wrong password, an empty one or one longer than
// MaxPasswordLen is false without an error. Its cost is the hash's: up to
// 64 MiB and 10 passes over it (about a second of CPU), so a caller that
// verifies on behalf of the network bounds how many run at once.
func VerifyPassword(phc, password string) (bool, error) {
	h, err := ParsePasswordHash(phc)
	if err != nil {
		return false, err
	}
	if password == "" || len(password) > MaxPasswordLen {
		return false, nil
	}
	key := argon2.IDKey([]byte(password), h.Salt, h.Time, h.Memory, h.Threads, uint32(len(h.Key)))
	return subtle.ConstantTimeCompare(key, h.Key) == 1, nil
}

// ParsePasswordHash parses an argon2id PHC string strictly: version 19,
// parameters exactly "m=<KiB>,t=<passes>,p=<lanes>" in decimal without
// leading zeros, salt and key in unpadded standard base64 with nothing
// else. It refuses, with ErrPasswordHash and before allocating anything
// the declared parameters ask for: a string over 256 bytes; memory over
// 65536 KiB (64 MiB) or under 8 KiB per thread (argon2 would round it
// up); time 0 or over 10; threads 0 or over 4; a salt under 8 or over 64
// bytes; a key under 16 or over 64 bytes. Whatever it accepts re-encodes
// to phc exactly.
func ParsePasswordHash(phc string) (PasswordHash, error) {
	if len(phc) > maxPasswordHashLen {
		return PasswordHash{}, fmt.Errorf("%w: %d bytes, more than %d", ErrPasswordHash, len(phc), maxPasswordHashLen)
	}
	// "", "argon2id", "v=19", params, salt, key
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[0] != "" {
		return PasswordHash{}, fmt.Errorf("%w: want $argon2id$v=19$m=…,t=…,p=…$<salt>$<key>", ErrPasswordHash)
	}
	if parts[1] != "argon2id" {
		return PasswordHash{}, fmt.Errorf("%w: algorithm %q, want argon2id", ErrPasswordHash, truncate(parts[1], 20))
	}
	if parts[2] != "v=19" {
		return PasswordHash{}, fmt.Errorf("%w: version %q, want v=19", ErrPasswordHash, truncate(parts[2], 20))
	}
	ms, rest, ok1 := strings.Cut(parts[3], ",")
	ts, ps, ok2 := strings.Cut(rest, ",")
	m, okm := phcParam(ms, "m=", maxPasswordMemory)
	t, okt := phcParam(ts, "t=", maxPasswordTime)
	p, okp := phcParam(ps, "p=", maxPasswordThreads)
	if !ok1 || !ok2 || !okm || !okt || !okp {
		return PasswordHash{}, fmt.Errorf("%w: parameters %q, want m=<KiB up to %d>,t=<1 to %d>,p=<1 to %d>",
			ErrPasswordHash, truncate(parts[3], 40), maxPasswordMemory, maxPasswordTime, maxPasswordThreads)
	}
	if t == 0 || p == 0 || m < 8*p {
		return PasswordHash{}, fmt.Errorf("%w: parameters m=%d,t=%d,p=%d: want t and p at least 1, m at least 8*p",
			ErrPasswordHash, m, t, p)
	}
	h := PasswordHash{Memory: m, Time: t, Threads: uint8(p)}
	var err error
	if h.Salt, err = phcBytes(parts[4], minPasswordSalt, maxPasswordSalt); err != nil {
		return PasswordHash{}, fmt.Errorf("%w: salt: %v", ErrPasswordHash, err)
	}
	if h.Key, err = phcBytes(parts[5], minPasswordKey, maxPasswordKey); err != nil {
		return PasswordHash{}, fmt.Errorf("%w: key: %v", ErrPasswordHash, err)
	}
	return h, nil
}

// phcParam parses "<name><decimal>" with a value at most limit: digits
// only, no sign, no leading zero.
func phcParam(s, name string, limit uint32) (uint32, bool) {
	d, ok := strings.CutPrefix(s, name)
	if !ok || d == "" || len(d) > 10 || d[0] == '0' && len(d) > 1 || strings.Trim(d, "0123456789") != "" {
		return 0, false
	}
	v, err := strconv.ParseUint(d, 10, 32)
	if err != nil || v > uint64(limit) {
		return 0, false
	}
	return uint32(v), true
}

// phcBytes decodes s, which must hold lo to hi bytes in the canonical
// encoding, checking the length before decoding.
func phcBytes(s string, lo, hi int) ([]byte, error) {
	if n := phcB64.DecodedLen(len(s)); n < lo || n > hi {
		return nil, fmt.Errorf("%d base64 characters, want %d to %d bytes", len(s), lo, hi)
	}
	b, err := phcB64.DecodeString(s)
	if err != nil {
		return nil, errors.New("not unpadded base64")
	}
	// The decoder skips CR and LF; the canonical encoding has none.
	if len(b) < lo || phcB64.EncodedLen(len(b)) != len(s) {
		return nil, errors.New("not canonical unpadded base64")
	}
	return b, nil
}

// encode returns h as a PHC string.
func (h PasswordHash) encode() string {
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s",
		h.Memory, h.Time, h.Threads, phcB64.EncodeToString(h.Salt), phcB64.EncodeToString(h.Key))
}
