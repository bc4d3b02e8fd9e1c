package crdt

import (
	"bytes"
	"fmt"
	"math"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"
)

// MaxMessageSize is the default limit on one encoded message, the NATS
// default maximum payload (1 MiB). Decoders refuse larger input before
// reading it.
const MaxMessageSize = 1 << 20

// The canonical encoding of one point is a msgpack array of nine values:
//
//	[node bin(16), parent nil|bin(16), type str, key str, value number,
//	 text str, tombstone bool, time uint, origin bin(16)]
//
// value is written as an integer when it is integral and fits in an int64,
// else as float32 when that is exact, else as float64; integers use the
// shortest msgpack form. Decoders accept any msgpack number for value.
const pointFields = 9

// AppendPoint appends the canonical encoding of p to dst. p should be valid
// and normalized; AppendPoint does not check.
func AppendPoint(dst []byte, p *Point) []byte {
	buf := bytes.NewBuffer(dst)
	enc := msgpack.GetEncoder()
	enc.Reset(buf)
	encodePoint(enc, p)
	msgpack.PutEncoder(enc)
	return buf.Bytes()
}

// Writes to a bytes.Buffer cannot fail, so the encoders below ignore the
// errors the msgpack API returns.
func encodePoint(enc *msgpack.Encoder, p *Point) {
	_ = enc.EncodeArrayLen(pointFields)
	_ = enc.EncodeBytes(p.Node[:])
	if p.Parent == uuid.Nil {
		_ = enc.EncodeNil()
	} else {
		_ = enc.EncodeBytes(p.Parent[:])
	}
	_ = enc.EncodeString(p.Type)
	_ = enc.EncodeString(p.Key)
	encodeValue(enc, p.Value)
	_ = enc.EncodeString(p.Text)
	_ = enc.EncodeBool(p.Tombstone)
	_ = enc.EncodeUint(uint64(p.Time))
	_ = enc.EncodeBytes(p.Origin[:])
}

func encodeValue(enc *msgpack.Encoder, v float64) {
	switch {
	case v == math.Trunc(v) && v >= -(1<<63) && v < 1<<63:
		_ = enc.EncodeInt(int64(v))
	case float64(float32(v)) == v:
		_ = enc.EncodeFloat32(float32(v))
	default:
		_ = enc.EncodeFloat64(v)
	}
}

// DecodePoint decodes one canonically encoded point (AppendPoint) and
// validates it. It refuses input over MaxMessageSize. Errors wrap
// ErrMalformed, ErrTooLarge or ErrInvalidPoint.
func DecodePoint(b []byte) (Point, error) {
	if len(b) > MaxMessageSize {
		return Point{}, fmt.Errorf("decode point: %d bytes: %w (limit %d)", len(b), ErrTooLarge, MaxMessageSize)
	}
	if err := CheckMsgpack(b, MaxDepth); err != nil {
		return Point{}, fmt.Errorf("decode point: %w", err)
	}
	d := newDecoder(b)
	defer d.release()
	var p Point
	if err := d.point(&p); err != nil {
		return Point{}, fmt.Errorf("decode point: %w", err)
	}
	p.Normalize()
	if err := p.Validate(); err != nil {
		return Point{}, fmt.Errorf("decode point: %w", err)
	}
	return p, nil
}

// A batch is encoded as a msgpack array of three values:
//
//	[ids bin(16·n), strings array(str), points array(array(9))]
//
// ids holds every distinct node, parent and origin UUID of the batch once,
// concatenated; strings holds every distinct type and key once. Each point
// is
//
//	[node uint, parent uint, type uint, key uint, value number, text str,
//	 tombstone bool, time int, origin uint]
//
// where node and origin index ids, parent is 0 for none or 1 + an index of
// ids, type and key index strings, and time is the difference from the
// previous point's time (the first point's from zero). A batch of sensor
// readings from one device costs about 20 bytes a point.
const batchFields = 3

// AppendBatch appends the encoding of pts to dst.
func AppendBatch(dst []byte, pts []Point) []byte {
	ids := make(map[uuid.UUID]uint64)
	var idBytes []byte
	strs := make(map[string]uint64)
	var strList []string
	id := func(u uuid.UUID) uint64 {
		i, ok := ids[u]
		if !ok {
			i = uint64(len(ids))
			ids[u] = i
			idBytes = append(idBytes, u[:]...)
		}
		return i
	}
	str := func(s string) uint64 {
		i, ok := strs[s]
		if !ok {
			i = uint64(len(strs))
			strs[s] = i
			strList = append(strList, s)
		}
		return i
	}
	type ref struct{ node, parent, typ, key, origin uint64 }
	refs := make([]ref, len(pts))
	for i := range pts {
		p := &pts[i]
		r := ref{node: id(p.Node), typ: str(p.Type), key: str(p.Key), origin: id(p.Origin)}
		if p.Parent != uuid.Nil {
			r.parent = 1 + id(p.Parent)
		}
		refs[i] = r
	}

	buf := bytes.NewBuffer(dst)
	enc := msgpack.GetEncoder()
	enc.Reset(buf)
	_ = enc.EncodeArrayLen(batchFields)
	if idBytes == nil {
		idBytes = []byte{} // an empty bin, never nil
	}
	_ = enc.EncodeBytes(idBytes)
	_ = enc.EncodeArrayLen(len(strList))
	for _, s := range strList {
		_ = enc.EncodeString(s)
	}
	_ = enc.EncodeArrayLen(len(pts))
	var prev Timestamp
	for i := range pts {
		p, r := &pts[i], refs[i]
		_ = enc.EncodeArrayLen(pointFields)
		_ = enc.EncodeUint(r.node)
		_ = enc.EncodeUint(r.parent)
		_ = enc.EncodeUint(r.typ)
		_ = enc.EncodeUint(r.key)
		encodeValue(enc, p.Value)
		_ = enc.EncodeString(p.Text)
		_ = enc.EncodeBool(p.Tombstone)
		_ = enc.EncodeInt(int64(p.Time - prev)) // wraps; the decoder adds it back modulo 2^64
		_ = enc.EncodeUint(r.origin)
		prev = p.Time
	}
	msgpack.PutEncoder(enc)
	return buf.Bytes()
}

// DecodeBatch decodes a batch (AppendBatch) and validates every point. It
// refuses input over limit bytes (MaxMessageSize when limit <= 0) before
// reading it. Memory allocated is bounded by a small multiple of len(b),
// whatever lengths the input declares. Errors wrap ErrTooLarge, ErrMalformed
// or ErrInvalidPoint and name the point's index.
func DecodeBatch(b []byte, limit int) ([]Point, error) {
	return decodeBatch(b, limit, false)
}

// DecodeBatchUnstamped is DecodeBatch for points a server stamps on
// arrival: a zero Time or a nil Origin is allowed (ValidateUnstamped).
func DecodeBatchUnstamped(b []byte, limit int) ([]Point, error) {
	return decodeBatch(b, limit, true)
}

func decodeBatch(b []byte, limit int, unstamped bool) ([]Point, error) {
	if limit <= 0 {
		limit = MaxMessageSize
	}
	if len(b) > limit {
		return nil, fmt.Errorf("decode batch: %d bytes: %w (limit %d)", len(b), ErrTooLarge, limit)
	}
	if err := CheckMsgpack(b, MaxDepth); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	d := newDecoder(b)
	defer d.release()
	d.unstamped = unstamped
	pts, err := d.batch()
	if err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	return pts, nil
}

// decoder reads values from input that CheckMsgpack has accepted, so every
// length it meets is backed by bytes present.
type decoder struct {
	r         bytes.Reader
	dec       *msgpack.Decoder
	unstamped bool // batch points may lack Time and Origin
}

func newDecoder(b []byte) *decoder {
	d := &decoder{}
	d.r.Reset(b)
	d.dec = msgpack.GetDecoder()
	d.dec.Reset(&d.r)
	return d
}

func (d *decoder) release() {
	d.dec.Reset(nil)
	msgpack.PutDecoder(d.dec)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

func (d *decoder) arrayLen(what string, want int) (int, error) {
	n, err := d.dec.DecodeArrayLen()
	if err != nil {
		return 0, malformed("%s: %v", what, err)
	}
	if want >= 0 && n != want {
		return 0, malformed("%s: array of %d, want %d", what, n, want)
	}
	if n < 0 {
		return 0, malformed("%s: nil, want an array", what)
	}
	return n, nil
}

func (d *decoder) uuid(what string) (uuid.UUID, error) {
	var u uuid.UUID
	b, err := d.dec.DecodeBytes()
	if err != nil {
		return u, malformed("%s: %v", what, err)
	}
	if len(b) != 16 {
		return u, malformed("%s: %d bytes, want 16", what, len(b))
	}
	copy(u[:], b)
	return u, nil
}

func (d *decoder) str(what string) (string, error) {
	s, err := d.dec.DecodeString()
	if err != nil {
		return "", malformed("%s: %v", what, err)
	}
	return s, nil
}

func (d *decoder) uint(what string) (uint64, error) {
	c, err := d.dec.PeekCode()
	if err != nil {
		return 0, malformed("%s: %v", what, err)
	}
	if !isUint(c) {
		return 0, malformed("%s: code 0x%02x, want an unsigned integer", what, c)
	}
	n, err := d.dec.DecodeUint64()
	if err != nil {
		return 0, malformed("%s: %v", what, err)
	}
	return n, nil
}

func (d *decoder) value() (float64, error) {
	c, err := d.dec.PeekCode()
	if err != nil {
		return 0, malformed("value: %v", err)
	}
	if !isUint(c) && !isInt(c) && c != 0xca && c != 0xcb {
		return 0, malformed("value: code 0x%02x, want a number", c)
	}
	if c == 0xcf { // uint64 beyond int64 must not be read as signed
		n, err := d.dec.DecodeUint64()
		if err != nil {
			return 0, malformed("value: %v", err)
		}
		return float64(n), nil
	}
	v, err := d.dec.DecodeFloat64()
	if err != nil {
		return 0, malformed("value: %v", err)
	}
	return v, nil
}

func isUint(c byte) bool { return c <= 0x7f || (c >= 0xcc && c <= 0xcf) }
func isInt(c byte) bool  { return c >= 0xe0 || (c >= 0xd0 && c <= 0xd3) }

func (d *decoder) bool(what string) (bool, error) {
	v, err := d.dec.DecodeBool()
	if err != nil {
		return false, malformed("%s: %v", what, err)
	}
	return v, nil
}

func (d *decoder) point(p *Point) error {
	if _, err := d.arrayLen("point", pointFields); err != nil {
		return err
	}
	var err error
	if p.Node, err = d.uuid("node"); err != nil {
		return err
	}
	c, err := d.dec.PeekCode()
	if err != nil {
		return malformed("parent: %v", err)
	}
	if c == 0xc0 {
		_ = d.dec.DecodeNil()
	} else if p.Parent, err = d.uuid("parent"); err != nil {
		return err
	}
	if p.Type, err = d.str("type"); err != nil {
		return err
	}
	if p.Key, err = d.str("key"); err != nil {
		return err
	}
	if p.Value, err = d.value(); err != nil {
		return err
	}
	if p.Text, err = d.str("text"); err != nil {
		return err
	}
	if p.Tombstone, err = d.bool("tombstone"); err != nil {
		return err
	}
	t, err := d.uint("time")
	if err != nil {
		return err
	}
	p.Time = Timestamp(t)
	if p.Origin, err = d.uuid("origin"); err != nil {
		return err
	}
	return nil
}

// minPointBytes is the fewest bytes one encoded batch point can take (an
// array header and nine one-byte values); it bounds the point slice a batch
// header can make the decoder allocate.
const minPointBytes = 1 + pointFields

func (d *decoder) batch() ([]Point, error) {
	if _, err := d.arrayLen("batch", batchFields); err != nil {
		return nil, err
	}
	idBytes, err := d.dec.DecodeBytes()
	if err != nil {
		return nil, malformed("ids: %v", err)
	}
	if len(idBytes)%16 != 0 {
		return nil, malformed("ids: %d bytes, not a multiple of 16", len(idBytes))
	}
	ids := make([]uuid.UUID, len(idBytes)/16)
	for i := range ids {
		copy(ids[i][:], idBytes[16*i:])
	}
	ns, err := d.arrayLen("strings", -1)
	if err != nil {
		return nil, err
	}
	strs := make([]string, ns)
	for i := range strs {
		if strs[i], err = d.str("strings"); err != nil {
			return nil, err
		}
	}
	np, err := d.arrayLen("points", -1)
	if err != nil {
		return nil, err
	}
	if np*minPointBytes > d.r.Len() {
		return nil, malformed("points: %d declared, only %d bytes follow", np, d.r.Len())
	}
	pts := make([]Point, np)
	var prev Timestamp
	for i := range pts {
		if err := d.batchPoint(&pts[i], ids, strs, &prev); err != nil {
			return nil, fmt.Errorf("point %d: %w", i, err)
		}
	}
	return pts, nil
}

func (d *decoder) batchPoint(p *Point, ids []uuid.UUID, strs []string, prev *Timestamp) error {
	if _, err := d.arrayLen("point", pointFields); err != nil {
		return err
	}
	index := func(what string, table int) (uint64, error) {
		i, err := d.uint(what)
		if err != nil {
			return 0, err
		}
		if i >= uint64(table) {
			return 0, malformed("%s: index %d out of range (%d entries)", what, i, table)
		}
		return i, nil
	}
	i, err := index("node", len(ids))
	if err != nil {
		return err
	}
	p.Node = ids[i]
	pi, err := index("parent", len(ids)+1)
	if err != nil {
		return err
	}
	if pi > 0 {
		p.Parent = ids[pi-1]
	}
	if i, err = index("type", len(strs)); err != nil {
		return err
	}
	p.Type = strs[i]
	if i, err = index("key", len(strs)); err != nil {
		return err
	}
	p.Key = strs[i]
	if p.Value, err = d.value(); err != nil {
		return err
	}
	if p.Text, err = d.str("text"); err != nil {
		return err
	}
	if p.Tombstone, err = d.bool("tombstone"); err != nil {
		return err
	}
	c, err := d.dec.PeekCode()
	if err != nil {
		return malformed("time: %v", err)
	}
	if !isUint(c) && !isInt(c) {
		return malformed("time: code 0x%02x, want an integer", c)
	}
	var delta int64
	if c == 0xcf {
		u, err := d.dec.DecodeUint64()
		if err != nil {
			return malformed("time: %v", err)
		}
		delta = int64(u)
	} else if delta, err = d.dec.DecodeInt64(); err != nil {
		return malformed("time: %v", err)
	}
	p.Time = *prev + Timestamp(delta)
	*prev = p.Time
	if i, err = index("origin", len(ids)); err != nil {
		return err
	}
	p.Origin = ids[i]
	p.Normalize()
	if d.unstamped {
		return p.ValidateUnstamped()
	}
	return p.Validate()
}
