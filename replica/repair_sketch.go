package replica

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// Sketch sizes and keys. docs/protocol.md specifies the keys: another
// implementation must compute the same bytes.
const (
	childKeyLen    = 16                 // a child sketch's keys: child tag, state tag
	childRecordLen = 41                 // a ChildSum on the wire
	aggregateSlack = 30                 // cells an Aggregate gets beyond its nodes'
	maxAggPoints   = 4096               // a node with more points is listed, not sketched
	cellsPerNode   = 3                  // an aggregated node's cells at density 1: two versions of one point
	childCellsPer  = 3.3                // a child sketch's cells per likely differing child (two keys each)
	bucketsPerNode = 256                // child buckets of a node
	childSketchMin = aggregateSlack + 3 // a child sketch's smallest size
	maxChildScan   = 1 << 18            // child records one request's child sketches may read (default)
	maxAggScan     = 1 << 20            // points one reply's Aggregate may read (default)
)

// retryDensity returns the density to compare the nodes of agg again with
// after their aggregate sk failed to decode, having peeled peeled keys:
// enough cells for the keys left, estimated from the cells still
// non-empty, at 1.5 cells a key; at least twice the density before, and
// eight times when the table was too full to estimate.
func retryDensity(agg []aggNode, sk *crdt.Sketch, peeled int) int {
	old := 1
	for _, a := range agg {
		old = max(old, int(a.density))
	}
	m, z := float64(sk.Cells()), float64(sk.NonEmpty())
	if z >= m*0.98 {
		return old * 8
	}
	keys := float64(peeled) - m/crdt.SketchHashes*math.Log(1-z/m)
	need := int(math.Ceil(1.5 * keys / float64(cellsPerNode*len(agg))))
	return max(2*old, need)
}

// repairLimits bound the reads of answering one repair request.
type repairLimits struct {
	childScan int // child records its child sketches may read
	aggScan   int // points its Aggregate may read
}

// orDefault returns l with zero fields set to the defaults.
func (l repairLimits) orDefault() repairLimits {
	if l.childScan <= 0 {
		l.childScan = maxChildScan
	}
	if l.aggScan <= 0 {
		l.aggScan = maxAggScan
	}
	return l
}

// aggregateCells returns the cells an aggregated node of density d gets.
func aggregateCells(d byte) int { return cellsPerNode * int(max(d, 1)) }

// childSketchCells sizes a child sketch for nb differing buckets of a node
// whose children there number kids on our side: for the number of
// differing children inverted from the number of equal buckets (children
// fall into buckets uniformly, so c differing children leave about
// 256·(1−1/256)^c buckets equal), taking one standard deviation fewer
// equal buckets than seen, since a sketch sized too small costs a round
// trip; or for all of them when every bucket differs.
func childSketchCells(nb, kids int) int {
	c := float64(kids)
	if nb < bucketsPerNode {
		e := float64(bucketsPerNode - nb)
		e = max(e-math.Sqrt(e*(1-e/bucketsPerNode)), 0.5)
		c = math.Log(e/bucketsPerNode) / math.Log(1-1.0/bucketsPerNode)
	}
	return int(math.Ceil(childCellsPer*c)) + childSketchMin
}

// childTag is a child's 64-bit tag in a child sketch: Mix64(Mix64(first
// 8 bytes) XOR last 8 bytes), big-endian words (crdt.NodeTag is its high
// 32 bits).
func childTag(id uuid.UUID) uint64 {
	return crdt.Mix64(crdt.Mix64(binary.BigEndian.Uint64(id[:8])) ^ binary.BigEndian.Uint64(id[8:]))
}

// childKey is a child's key in a child sketch, salted with salt: its tag,
// then tags of its edge (with whether it is active), its own points and
// what is below it, of 16, 24 and 24 bits. A child whose digests differ on
// the two sides decodes as two keys with one tag, and the answerer tells
// from the component tags what differs. The salt is new each round, so a
// coincidence of tags hides a difference for one round at most.
func childKey(c *store.ChildDigest, salt uint32) crdt.SketchKey {
	cs := childSum(c)
	act := uint64(0)
	if cs.Active {
		act = 1
	}
	tag := func(short transport.ShortDigest, part uint64) uint64 {
		return crdt.Mix64(binary.BigEndian.Uint64(short[:]) ^ crdt.Mix64(uint64(salt)<<8|part))
	}
	st := tag(cs.Edge, 1^act<<1)>>48<<48 | tag(cs.Own, 4)>>40<<24 | tag(cs.Below, 8)>>40
	var k crdt.SketchKey
	binary.BigEndian.PutUint64(k[:8], childTag(c.ID))
	binary.BigEndian.PutUint64(k[8:], st)
	return k
}

// childKeyDiff compares two keys of one child: which of its edge, own
// points and below differ.
func childKeyDiff(a, b *crdt.SketchKey) (edge, own, below bool) {
	x := binary.BigEndian.Uint64(a[8:]) ^ binary.BigEndian.Uint64(b[8:])
	return x>>48 != 0, x>>24&(1<<24-1) != 0, x&(1<<24-1) != 0
}

// childSum is a child's ChildSum: its digests, shortened.
func childSum(c *store.ChildDigest) transport.ChildSum {
	return transport.ChildSum{ID: c.ID, Active: c.Active, Edge: transport.Short(c.Edge),
		Own: transport.Short(c.Own), Below: transport.Short(c.Sub.Sub(c.Own))}
}

// sketched is a sketch of some nodes' points, and with keep the
// registers behind its keys.
type sketched struct {
	sk    *crdt.Sketch
	nodes []uuid.UUID        // the nodes sketched, sorted
	big   map[uuid.UUID]bool // nodes left out: more than maxAggPoints points
	// deferred are nodes left out because the points read reached the
	// budget.
	deferred map[uuid.UUID]bool
	// With keep: every key added, and where its register is.
	keys  []crdt.SketchKey
	refs  []regRef
	arena []byte // type 0x00 key of every register, back to back
}

// regRef locates a sketched register: its node and its type 0x00 key in
// the arena.
type regRef struct {
	node     int32
	from, to int32
}

// sketchPoints returns a sketch of cells cells of the node points of
// nodes, leaving out secret points (crdt.IsSecret) when hideSecrets; with
// a budget, the nodes reached once budget points were read are left out
// (deferred). It reads versions, not points, and allocates nothing per
// point but, with keep, its key and register reference.
func sketchPoints(st *store.Store, nodes []uuid.UUID, cells int, keep bool, budget int, hideSecrets bool) (*sketched, error) {
	// In key order the scan moves forward through the store. A node
	// flagged twice in one reply (compared, and a differing child of a
	// node compared) is sketched once on both sides: twice, its keys
	// would cancel themselves out.
	nodes = slices.Clone(nodes)
	slices.SortFunc(nodes, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	nodes = slices.Compact(nodes)
	out := &sketched{sk: crdt.NewSketch(cells, crdt.PointKeyLen), nodes: nodes}
	cur, from, tag := -1, 0, uint32(0)
	var keys []crdt.SketchKey // the current node's
	flush := func() {
		for _, k := range keys {
			out.sk.Add(k)
		}
		if keep {
			out.keys = append(out.keys, keys...)
		}
		keys, from = keys[:0], len(out.refs)
	}
	scanned := 0
	err := st.ScanNodesVersions(nodes, func(i int, v *store.Version) error {
		if i != cur {
			flush()
			cur, tag = i, crdt.NodeTag(v.Node)
			if budget > 0 && scanned >= budget {
				if out.deferred == nil {
					out.deferred = make(map[uuid.UUID]bool)
				}
				out.deferred[nodes[i]] = true
				return store.ErrSkip
			}
		}
		if hideSecrets && secretTypeKey(v.TypeKey) {
			return nil
		}
		scanned++
		if len(keys) == maxAggPoints {
			if out.big == nil {
				out.big = make(map[uuid.UUID]bool)
			}
			out.big[nodes[i]] = true
			keys = keys[:0]
			if keep {
				out.refs = out.refs[:from]
			}
			return store.ErrSkip
		}
		keys = append(keys, crdt.MakePointKey(tag, crdt.RegisterHashBytes(v.TypeKey), v.Time, v.Origin))
		if keep {
			a := len(out.arena)
			out.arena = append(out.arena, v.TypeKey...)
			out.refs = append(out.refs, regRef{node: int32(i), from: int32(a), to: int32(len(out.arena))})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	flush()
	return out, nil
}

// secretTypeKey reports whether a register's type 0x00 key names a
// secret type (crdt.IsSecret), without allocating.
func secretTypeKey(tk []byte) bool {
	return bytes.HasPrefix(tk, []byte(crdt.TypeAuthKey+"\x00")) || bytes.HasPrefix(tk, []byte(crdt.TypePassword+"\x00"))
}

// points returns our points behind keys, in order; found is false when a
// key is not one this sketch added.
func (s *sketched) points(st *store.Store, keys []crdt.SketchKey) (pts []crdt.Point, found bool, err error) {
	want := make(map[crdt.SketchKey]int, len(keys))
	for i, k := range keys {
		want[k] = i
	}
	at := make([]int, len(keys))
	for i := range at {
		at[i] = -1
	}
	for j, k := range s.keys {
		if i, ok := want[k]; ok {
			at[i] = j
		}
	}
	for _, j := range at {
		if j < 0 {
			return nil, false, nil
		}
		ref := s.refs[j]
		tk := s.arena[ref.from:ref.to]
		sep := bytes.IndexByte(tk, 0)
		if sep < 0 {
			return nil, false, fmt.Errorf("repair: register key without separator")
		}
		p, ok, err := st.Get(crdt.Register{Node: s.nodes[ref.node], Type: string(tk[:sep]), Key: string(tk[sep+1:])})
		if err != nil {
			return nil, false, err
		}
		if ok { // (gone meanwhile: nothing to send)
			pts = append(pts, p)
		}
	}
	return pts, true, nil
}
