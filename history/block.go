// Package history holds the values a register took over time: its
// samples, and their compact encoding. It is pure: no I/O, no clock.
//
// A register's history is a grow-only set of samples keyed by HLC and
// origin (merge is union), beside the last-writer-wins register, which
// stays the current value. A block is a run of one register's samples in
// key order, encoded for a regular sensor series after Facebook's Gorilla
// (Pelkonen et al., VLDB 2015): the physical milliseconds of the HLCs as
// deltas of deltas, the values as the XOR of each with the one before,
// the logical counter and the origin in a bit or two when they repeat.
//
// # Block layout (version 1)
//
//	u8      version (1)
//	uvarint n, the number of samples (≥ 1)
//	uvarint k, the number of origins (1 ≤ k ≤ n), then k × 16 bytes,
//	        in byte order
//	u8      the values' form: d in 0-15, every value is an integer k
//	        divided by 10^d (exactly, as float64(k) / 1e<d>); 255, raw
//	bits    the samples, most significant bit first, zero-padded to a byte
//
// Each sample, in (time, origin) order, strictly increasing:
//
//	time      the physical ms: the first raw (48 bits); the second as its
//	          delta from the first, the others as their delta's change
//	          from the delta before (dod), in one of
//	          0 (dod 0) | 10 +4 | 110 +7 | 1110 +12 | 11110 +20 | 11111 +50
//	          bits, two's complement
//	logical   0 (same as the sample before; 0 for the first) | 1 +16 bits
//	origin    ⌈log2 k⌉ bits: its index in the origins (none when k = 1)
//	kind      0 (a value) | 1 +2 bits: tombstone, has text
//	text      when it has text: 17 bits of length (≤ 65,536), the bytes
//	value     decimal (d ≤ 15): k's change from the previous sample's k (0
//	          before the first), in one of 0 | 10 +4 | 110 +8 | 1110 +16 |
//	          11110 +32 | 11111 +64 bits, two's complement;
//	          raw: the IEEE-754 bits XOR the previous sample's (0 before
//	          the first), as in Gorilla: 0 (equal) | 10 + the bits inside
//	          the window of the last XOR written | 11 +6 bits leading zeros
//	          +6 bits length−1 + the bits
//
// Sensor values are mostly decimals (21.37, read from a device that
// rounds), whose float64 bits differ wildly from one reading to the next
// although the numbers barely move: as integers of hundredths their
// changes take a few bits, where Gorilla's XOR takes 40 or more.
//
// A regular series (1 Hz, a few ms of jitter, slowly changing values)
// costs about 1-2 bytes a sample; BENCHMARKS.md, "history".
package history

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// Sample is one value a register took: the point's time, origin, value,
// text and tombstone.
type Sample struct {
	Time      crdt.Timestamp
	Origin    uuid.UUID
	Value     float64
	Text      string
	Tombstone bool
}

// Key orders samples: by time, then origin bytes.
func (s *Sample) compare(o *Sample) int {
	if s.Time != o.Time {
		if s.Time < o.Time {
			return -1
		}
		return 1
	}
	return bytes.Compare(s.Origin[:], o.Origin[:])
}

// Limits of a block.
const (
	// MaxBlockSamples bounds the samples of one block.
	MaxBlockSamples = 1 << 20
	// MaxTextLen is the longest text a sample carries (crdt.MaxTextLen).
	MaxTextLen = crdt.MaxTextLen

	version = 1
	// minSampleBits is the least a sample after the first can take: time,
	// logical, kind and value codes of one bit each.
	minSampleBits = 4
)

// ErrMalformed is a block that breaks the layout; errors wrap it.
var ErrMalformed = errors.New("history: malformed block")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// Encode returns the block of samples, which it sorts by (time, origin)
// in place. Two samples with the same key must be the same sample (one
// write): an exact duplicate is kept once, a conflicting one is an error,
// as are an empty slice, more than MaxBlockSamples, a text over
// MaxTextLen or not UTF-8, and a value that is NaN or infinite (the data
// contract's rules, crdt.Validate).
func Encode(samples []Sample) ([]byte, error) {
	if len(samples) == 0 {
		return nil, errors.New("history: an empty block")
	}
	slices.SortFunc(samples, func(a, b Sample) int { return a.compare(&b) })
	uniq := samples[:1]
	for i := 1; i < len(samples); i++ {
		s, last := &samples[i], &uniq[len(uniq)-1]
		if s.compare(last) == 0 {
			if s.Value != last.Value || s.Text != last.Text || s.Tombstone != last.Tombstone {
				return nil, fmt.Errorf("history: two samples at %v from %v differ", s.Time, s.Origin)
			}
			continue
		}
		uniq = append(uniq, *s)
	}
	samples = uniq
	if len(samples) > MaxBlockSamples {
		return nil, fmt.Errorf("history: %d samples in a block, limit %d", len(samples), MaxBlockSamples)
	}
	var origins []uuid.UUID
	for i := range samples {
		s := &samples[i]
		if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			return nil, fmt.Errorf("history: sample %d: value %v", i, s.Value)
		}
		if len(s.Text) > MaxTextLen || !utf8.ValidString(s.Text) {
			return nil, fmt.Errorf("history: sample %d: text of %d bytes, or not UTF-8", i, len(s.Text))
		}
		origins = append(origins, s.Origin)
	}
	slices.SortFunc(origins, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	origins = slices.Compact(origins)

	out := []byte{version}
	out = binary.AppendUvarint(out, uint64(len(samples)))
	out = binary.AppendUvarint(out, uint64(len(origins)))
	for _, o := range origins {
		out = append(out, o[:]...)
	}
	dec := decimals(samples)
	out = append(out, dec)
	ob := originBits(len(origins))
	w := bitWriter{b: out}
	st := state{dec: dec}
	for i := range samples {
		s := &samples[i]
		st.writeTime(&w, i, s.Time)
		if ob > 0 {
			j, _ := slices.BinarySearchFunc(origins, s.Origin, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
			w.write(uint64(j), ob)
		}
		if s.Text == "" && !s.Tombstone {
			w.bit(false)
		} else {
			w.bit(true)
			w.bit(s.Tombstone)
			w.bit(s.Text != "")
			if s.Text != "" {
				w.write(uint64(len(s.Text)), 17)
				for k := 0; k < len(s.Text); k++ {
					w.write(uint64(s.Text[k]), 8)
				}
			}
		}
		st.writeValue(&w, s.Value)
	}
	return w.b, nil
}

// Decode returns the samples of a block, in (time, origin) order. Encode
// writes one encoding of a set of samples; Decode accepts any that
// decodes to a valid block (a value's window code, for one, may be
// written either way). It refuses, with an error wrapping ErrMalformed and before allocating
// what the block declares, anything Encode could not have written: a
// count the bytes cannot hold, origins out of order, samples out of
// order or repeated, a text over the limit or not UTF-8, a NaN or
// infinite value, padding that is not zero, trailing bytes.
func Decode(b []byte) ([]Sample, error) {
	if len(b) == 0 || b[0] != version {
		return nil, malformed("not a version %d block", version)
	}
	p := 1
	n, err := uvarint(b, &p, "sample count")
	if err != nil {
		return nil, err
	}
	k, err := uvarint(b, &p, "origin count")
	if err != nil {
		return nil, err
	}
	if n == 0 || n > MaxBlockSamples {
		return nil, malformed("%d samples (want 1 to %d)", n, MaxBlockSamples)
	}
	if k == 0 || k > n || k > uint64(len(b)-p)/16 {
		return nil, malformed("%d origins for %d samples in %d bytes", k, n, len(b)-p)
	}
	origins := make([]uuid.UUID, k)
	for i := range origins {
		copy(origins[i][:], b[p:p+16])
		p += 16
		if i > 0 && bytes.Compare(origins[i-1][:], origins[i][:]) >= 0 {
			return nil, malformed("origin %d out of order", i)
		}
	}
	if p >= len(b) {
		return nil, malformed("no values' form")
	}
	dec := b[p]
	p++
	if dec > 15 && dec != rawValues {
		return nil, malformed("values' form %d", dec)
	}
	r := bitReader{b: b[p:]}
	// The first sample takes at least 51 bits (time, logical, kind and
	// value codes), each other one minSampleBits: a count the bits
	// cannot hold is refused here, before the samples are allocated.
	if r.left() < 51 || (n-1) > (r.left()-51)/minSampleBits {
		return nil, malformed("%d samples cannot fit in %d bits", n, r.left())
	}
	ob := originBits(int(k))
	out := make([]Sample, 0, n)
	st := state{dec: dec}
	used := make([]bool, k)
	for i := 0; i < int(n); i++ {
		var s Sample
		t, err := st.readTime(&r, i)
		if err != nil {
			return nil, err
		}
		s.Time = t
		if ob > 0 {
			j := r.read(ob)
			if j >= k {
				return nil, malformed("sample %d: origin %d of %d", i, j, k)
			}
			s.Origin = origins[j]
			used[j] = true
		} else {
			s.Origin = origins[0]
			used[0] = true
		}
		if r.bit() {
			s.Tombstone = r.bit()
			if r.bit() {
				l := r.read(17)
				if l == 0 || l > MaxTextLen || l*8 > r.left() {
					return nil, malformed("sample %d: text of %d bytes", i, l)
				}
				t := make([]byte, l)
				for j := range t {
					t[j] = byte(r.read(8))
				}
				if !utf8.Valid(t) {
					return nil, malformed("sample %d: text not UTF-8", i)
				}
				s.Text = string(t)
			} else if !s.Tombstone {
				return nil, malformed("sample %d: a kind of 1 with neither tombstone nor text", i)
			}
		}
		s.Value = st.readValue(&r)
		if r.bad {
			return nil, malformed("sample %d: the block ends inside it", i)
		}
		if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			return nil, malformed("sample %d: value %v", i, s.Value)
		}
		if i > 0 && out[i-1].compare(&s) >= 0 {
			return nil, malformed("sample %d out of order or repeated", i)
		}
		out = append(out, s)
	}
	for j, u := range used {
		if !u {
			return nil, malformed("origin %d is no sample's", j)
		}
	}
	if r.left() >= 8 {
		return nil, malformed("%d bytes after the last sample", r.left()/8)
	}
	if r.left() > 0 && r.read(uint(r.left())) != 0 {
		return nil, malformed("padding is not zero")
	}
	return out, nil
}

func uvarint(b []byte, p *int, what string) (uint64, error) {
	v, n := binary.Uvarint(b[*p:])
	if n <= 0 {
		return 0, malformed("%s: not a uvarint", what)
	}
	*p += n
	return v, nil
}

// originBits is the bits an origin index takes among k origins.
func originBits(k int) uint {
	if k <= 1 {
		return 0
	}
	return uint(bits.Len(uint(k - 1)))
}

// dodCodes are the time codes after the second sample: a prefix of ones
// ended by a zero (none for the last), then that many bits of the delta
// of deltas, two's complement.
var dodCodes = [...]uint{0, 4, 7, 12, 20, 50}

// deltaCodes are the codes of a decimal value's change, read the same way.
var deltaCodes = [...]uint{0, 4, 8, 16, 32, 64}

// rawValues is the values' form byte of a block of raw floats.
const rawValues = 255

// pow10 are the exact powers of ten a decimal block divides by.
var pow10 = [16]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// decimals returns the least d ≤ 15 such that every value is exactly
// float64(k)/10^d for an integer |k| < 2^53, or rawValues.
func decimals(samples []Sample) byte {
next:
	for d := range pow10 {
		for i := range samples {
			v := samples[i].Value
			k := math.Round(v * pow10[d])
			if math.Abs(k) >= 1<<53 || k/pow10[d] != v || math.Signbit(v) != math.Signbit(k) {
				continue next
			}
		}
		return byte(d)
	}
	return rawValues
}

// state is what the next sample's codes depend on: the previous time,
// delta, logical counter and value, and the window of the last XOR.
type state struct {
	prevMs, prevDelta int64
	prevLogical       uint16
	prevValue         uint64
	lead, sig         uint  // the last XOR's leading zeros and meaningful bits (sig 0: none yet)
	dec               byte  // the values' form: d, or rawValues
	prevK             int64 // a decimal block's previous integer
}

func (st *state) writeTime(w *bitWriter, i int, t crdt.Timestamp) {
	ms := t.Physical()
	switch i {
	case 0:
		w.write(uint64(ms), 48)
	default:
		d := ms - st.prevMs
		v := d
		if i > 1 {
			v = d - st.prevDelta
		}
		writeSigned(w, dodCodes[:], v)
		st.prevDelta = d
	}
	st.prevMs = ms
	if l := t.Logical(); l == st.prevLogical {
		w.bit(false)
	} else {
		w.bit(true)
		w.write(uint64(l), 16)
		st.prevLogical = l
	}
}

// writeSigned writes v in the smallest of codes (dodCodes, deltaCodes)
// that holds it.
func writeSigned(w *bitWriter, codes []uint, v int64) {
	if v == 0 {
		w.bit(false)
		return
	}
	last := len(codes) - 1
	for c := 1; c <= last; c++ {
		n := codes[c]
		if n == 64 || v >= -(1<<(n-1)) && v < 1<<(n-1) {
			if c < last {
				w.write(1<<(c+1)-2, uint(c+1)) // c ones, then a zero
			} else {
				w.write(1<<c-1, uint(c)) // the last code: c ones
			}
			if n == 64 {
				w.write(uint64(v), 64)
			} else {
				w.write(uint64(v)&(1<<n-1), n)
			}
			return
		}
	}
	panic("history: a change beyond its codes") // the last code holds any
}

// readSigned reads what writeSigned wrote with the same codes.
func readSigned(r *bitReader, codes []uint) int64 {
	c := 0
	for c < len(codes)-1 && r.bit() {
		c++
	}
	if c == 0 {
		return 0
	}
	n := codes[c]
	if n == 64 {
		return int64(r.read(64))
	}
	return int64(r.read(n)<<(64-n)) >> (64 - n) // sign-extend
}

func (st *state) readTime(r *bitReader, i int) (crdt.Timestamp, error) {
	var ms int64
	if i == 0 {
		ms = int64(r.read(48))
	} else {
		v := readSigned(r, dodCodes[:])
		d := v
		if i > 1 {
			d = st.prevDelta + v
		}
		ms = st.prevMs + d
		st.prevDelta = d
	}
	if ms < 0 || ms > crdt.MaxPhysical {
		return 0, malformed("sample %d: time %d ms out of range", i, ms)
	}
	st.prevMs = ms
	if r.bit() {
		st.prevLogical = uint16(r.read(16))
	}
	return crdt.NewTimestamp(ms, st.prevLogical), nil
}

func (st *state) writeValue(w *bitWriter, v float64) {
	if st.dec != rawValues {
		k := int64(math.Round(v * pow10[st.dec]))
		writeSigned(w, deltaCodes[:], k-st.prevK)
		st.prevK = k
		return
	}
	b := math.Float64bits(v)
	x := b ^ st.prevValue
	st.prevValue = b
	if x == 0 {
		w.bit(false)
		return
	}
	lead, trail := uint(bits.LeadingZeros64(x)), uint(bits.TrailingZeros64(x))
	if st.sig > 0 && lead >= st.lead && trail >= 64-st.lead-st.sig {
		w.write(0b10, 2)
		w.write(x>>(64-st.lead-st.sig), st.sig)
		return
	}
	lead = min(lead, 63)
	sig := 64 - lead - trail
	w.write(0b11, 2)
	w.write(uint64(lead), 6)
	w.write(uint64(sig-1), 6)
	w.write(x>>trail, sig)
	st.lead, st.sig = lead, sig
}

func (st *state) readValue(r *bitReader) float64 {
	if st.dec != rawValues {
		k := st.prevK + readSigned(r, deltaCodes[:])
		st.prevK = k
		if k >= 1<<53 || k <= -(1<<53) {
			r.bad = true
			return 0
		}
		return float64(k) / pow10[st.dec]
	}
	if r.bit() {
		if !r.bit() {
			if st.sig == 0 {
				r.bad = true // a window before any was set
				return 0
			}
			st.prevValue ^= r.read(st.sig) << (64 - st.lead - st.sig)
		} else {
			lead := uint(r.read(6))
			sig := uint(r.read(6)) + 1
			if lead+sig > 64 {
				r.bad = true
				return 0
			}
			st.prevValue ^= r.read(sig) << (64 - lead - sig)
			st.lead, st.sig = lead, sig
		}
	}
	return math.Float64frombits(st.prevValue)
}
