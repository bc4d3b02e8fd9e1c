package history

// bitWriter appends bits, most significant first, to a byte slice.
type bitWriter struct {
	b    []byte
	free uint // unused low bits of the last byte (0: start a new byte)
}

// write appends the low n bits of v (n ≤ 64), most significant first.
func (w *bitWriter) write(v uint64, n uint) {
	for n > 0 {
		if w.free == 0 {
			w.b = append(w.b, 0)
			w.free = 8
		}
		take := min(n, w.free)
		chunk := (v >> (n - take)) & (1<<take - 1)
		w.b[len(w.b)-1] |= byte(chunk << (w.free - take))
		w.free -= take
		n -= take
	}
}

// bit appends one bit.
func (w *bitWriter) bit(on bool) {
	if on {
		w.write(1, 1)
	} else {
		w.write(0, 1)
	}
}

// bitReader reads what a bitWriter wrote. A read past the end sets err
// and returns zeros: callers check err once, at the end of a record.
type bitReader struct {
	b   []byte
	pos uint64 // in bits
	bad bool
}

// left is the number of bits not read yet.
func (r *bitReader) left() uint64 { return uint64(len(r.b))*8 - r.pos }

// read returns the next n bits (n ≤ 64).
func (r *bitReader) read(n uint) uint64 {
	if uint64(n) > r.left() {
		r.bad = true
		r.pos = uint64(len(r.b)) * 8
		return 0
	}
	var v uint64
	for n > 0 {
		i := r.pos / 8
		used := uint(r.pos % 8)
		avail := 8 - used
		take := min(n, avail)
		chunk := uint64(r.b[i]>>(avail-take)) & (1<<take - 1)
		v = v<<take | chunk
		r.pos += uint64(take)
		n -= take
	}
	return v
}

// bit reads one bit.
func (r *bitReader) bit() bool { return r.read(1) == 1 }
