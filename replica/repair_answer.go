package replica

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// The acceptor's side of digest repair: answering one request at a time,
// statelessly, within the session's scope.

// answerRepair answers a repair request within scope sc, whose root the
// request must name: nodes outside it are answered as unknown, so a dialer
// learns nothing beyond its scope.
func answerRepair(st *store.Store, sc *scope, req *transport.RepairRequest, lim repairLimits) (*transport.RepairReply, error) {
	root := sc.root
	if sc.full() {
		root = st.Root()
	}
	if req.Root != root {
		return nil, fmt.Errorf("repair: scope root %v, this session's is %v", req.Root, root)
	}
	return answerIn(st, sc, storeView{st}, req, lim)
}

// repairView is what a repair answer reads of the digests: the store's as
// they are (storeView), or a user's readable view of them (readableView).
// Its methods are the store's of the same names, with the same contracts.
type repairView interface {
	nodeDigest(n uuid.UUID) (store.Digests, error)
	childDigests(parent uuid.UUID, bucket int, fn func(store.ChildDigest) error) error
	buckets(parent uuid.UUID, fn func(bucket byte, d crdt.Digest) error) error
	// hidesSecrets reports whether the view leaves out secret points
	// (crdt.IsSecret): the answer then never lists, sketches or sends
	// one.
	hidesSecrets() bool
}

// storeView is the store's digests as they are.
type storeView struct{ st *store.Store }

var _ repairView = storeView{}

func (v storeView) nodeDigest(n uuid.UUID) (store.Digests, error) { return v.st.NodeDigest(n) }
func (v storeView) childDigests(parent uuid.UUID, bucket int, fn func(store.ChildDigest) error) error {
	return v.st.ChildDigests(parent, bucket, uuid.Nil, fn)
}
func (v storeView) buckets(parent uuid.UUID, fn func(bucket byte, d crdt.Digest) error) error {
	return v.st.Buckets(parent, fn)
}
func (v storeView) hidesSecrets() bool { return false }

// answerIn answers a repair request within scope sc over view v; the
// request's root is the caller's to check.
func answerIn(st *store.Store, sc *scope, v repairView, req *transport.RepairRequest, lim repairLimits) (*transport.RepairReply, error) {
	a := &answer{st: st, sc: sc, v: v, reply: &transport.RepairReply{}, size: 64, lim: lim.orDefault()}
	if err := a.compares(req.Compare); err != nil {
		return nil, err
	}
	if err := a.childSketches(req.ChildSketch); err != nil {
		return nil, err
	}
	for _, q := range req.List {
		if a.full() {
			break
		}
		a.reply.Answered[transport.AnsList]++
		in, err := sc.containsNode(q.Node)
		if err != nil {
			return nil, err
		}
		l, err := listNode(st, in, q, &a.size, v.hidesSecrets())
		if err != nil {
			return nil, err
		}
		a.reply.Listings = append(a.reply.Listings, l)
	}
	for _, q := range req.Buckets {
		if a.full() {
			break
		}
		a.reply.Answered[transport.AnsBuckets]++
		bc := transport.BucketChildren{Node: q.Node, Bucket: q.Bucket}
		in, err := sc.containsNode(q.Node)
		if err != nil {
			return nil, err
		}
		if in {
			err := v.childDigests(q.Node, int(q.Bucket), func(c store.ChildDigest) error {
				bc.Children = append(bc.Children, childSum(&c))
				a.size += childRecordLen
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		a.reply.Buckets = append(a.reply.Buckets, bc)
	}
	for _, q := range req.Fetch {
		if a.full() {
			break
		}
		a.reply.Answered[transport.AnsFetch]++
		if in, err := sc.containsNode(q.Node); err != nil || !in {
			if err != nil {
				return nil, err
			}
			continue
		}
		want := make(map[uint64]bool, len(q.Hashes))
		for _, h := range q.Hashes {
			want[h] = true
		}
		if err := nodePointsWhere(st, q.Node, func(h uint64) bool { return want[h] }, a.addPoint); err != nil {
			return nil, err
		}
	}
	for _, q := range req.TagFetch {
		if a.full() {
			break
		}
		a.reply.Answered[transport.AnsTagFetch]++
		if in, err := sc.containsNode(q.Node); err != nil || !in {
			if err != nil {
				return nil, err
			}
			continue
		}
		want := make(map[uint32]bool, len(q.Tags))
		for _, t := range q.Tags {
			want[t] = true
		}
		if err := nodePointsWhere(st, q.Node, func(h uint64) bool { return want[uint32(h>>32)] }, a.addPoint); err != nil {
			return nil, err
		}
	}
	for _, q := range req.Edges {
		if a.full() {
			break
		}
		a.reply.Answered[transport.AnsEdges]++
		if in, err := sc.containsNode(q.Parent); err != nil || !in {
			if err != nil {
				return nil, err
			}
			continue
		}
		err := st.ScanNode(q.Child, func(p *crdt.Point) error {
			if p.Parent == q.Parent && !a.hidden(p) {
				return a.addPoint(p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := a.aggregate(); err != nil {
		return nil, err
	}
	if len(a.pts) > 0 {
		a.reply.Points = crdt.AppendBatch(nil, a.pts)
	}
	return a.reply, nil
}

// answer is the state of answering one repair request.
type answer struct {
	st    *store.Store
	sc    *scope
	v     repairView
	lim   repairLimits
	reply *transport.RepairReply
	size  int // the reply's encoded size, estimated
	pts   []crdt.Point
	// agg are the nodes whose points go into the reply's Aggregate, with
	// where each is flagged, and aggCells the cells reserved for them.
	agg      []aggNode
	aggRefs  []aggRef
	aggCells int
}

func (a *answer) full() bool { return a.size >= repairReplyBudget }

// aggRef is where a reply flags a node as aggregated: summary sum, or
// entry both of child diff diff.
type aggRef struct{ sum, diff, both int }

// unflag clears the aggregated flag at ref.
func (a *answer) unflag(ref aggRef) {
	if ref.sum >= 0 {
		a.reply.Summaries[ref.sum].Aggregated = false
		return
	}
	a.reply.ChildDiffs[ref.diff].Both[ref.both].Aggregated = false
}

// hidden reports whether p is left out of the answer's view.
func (a *answer) hidden(p *crdt.Point) bool { return a.v.hidesSecrets() && crdt.IsSecret(p.Type) }

// addPoint adds p to the reply's points, unless the view hides it.
func (a *answer) addPoint(p *crdt.Point) error {
	if a.hidden(p) {
		return nil
	}
	a.pts = append(a.pts, *p)
	a.size += pointCost(p) + 8
	return nil
}

// aggregateRoom reports whether the Aggregate can take a node of density
// d, and reserves its cells when it can.
func (a *answer) aggregateRoom(d byte) bool {
	c := aggregateCells(d)
	if a.aggCells+c+aggregateSlack > crdt.MaxSketchCells {
		return false
	}
	a.aggCells += c
	a.size += c * crdt.SketchCellLen(crdt.PointKeyLen)
	return true
}

// compares answers the compare queries: a Summary for each node whose
// subtree differs, its points in the Aggregate when its own points
// differ, and its children when what is below it differs.
func (a *answer) compares(qs []transport.NodeSub) error {
	for _, q := range qs {
		if a.full() {
			break
		}
		in, err := a.sc.containsNode(q.Node)
		if err != nil {
			return err
		}
		var d store.Digests
		if in {
			if d, err = a.v.nodeDigest(q.Node); err != nil {
				return err
			}
		}
		if d.Sub == q.Sub {
			a.reply.Answered[transport.AnsCompare]++
			continue
		}
		if d.Own != q.Own && !d.Own.IsZero() && !q.Own.IsZero() && !a.aggregateRoom(q.Density) {
			break // the Aggregate is full: asked again next time
		}
		a.reply.Answered[transport.AnsCompare]++
		sm := transport.Summary{Node: q.Node, Own: d.Own}
		a.size += 40
		switch {
		case d.Own == q.Own || d.Own.IsZero():
		case q.Own.IsZero():
			// The asker has none of the node's points: send them, or a
			// listing when they do not fit.
			if err := a.ownPoints(q.Node); err != nil {
				return err
			}
		default:
			sm.Aggregated = true
		}
		if d.Sub.Sub(d.Own) == q.Sub.Sub(q.Own) {
			sm.BelowEqual = true
		} else if in {
			if err := a.children(&sm); err != nil {
				return err
			}
		}
		if sm.Aggregated {
			a.agg = append(a.agg, aggNode{id: q.Node, density: q.Density})
			a.aggRefs = append(a.aggRefs, aggRef{sum: len(a.reply.Summaries), diff: -1})
		}
		a.reply.Summaries = append(a.reply.Summaries, sm)
	}
	return nil
}

// ownPoints adds node n's points to the reply, or its listing when they
// would not fit.
func (a *answer) ownPoints(n uuid.UUID) error {
	mark, size := len(a.pts), a.size
	err := a.st.ScanNodesPoints([]uuid.UUID{n}, func(_ int, p *crdt.Point) error {
		if a.full() {
			return store.ErrStop
		}
		return a.addPoint(p)
	})
	if err != nil || !a.full() {
		return err
	}
	a.pts, a.size = a.pts[:mark], size
	l, err := listNode(a.st, true, transport.ListQuery{Node: n}, &a.size, a.v.hidesSecrets())
	a.reply.Listings = append(a.reply.Listings, l)
	return err
}

// children puts node sm.Node's children, or its child buckets when it has
// many, in sm.
func (a *answer) children(sm *transport.Summary) error {
	n := 0
	err := a.v.childDigests(sm.Node, -1, func(c store.ChildDigest) error {
		if n++; n > maxListedChildren {
			return store.ErrStop
		}
		sm.Children = append(sm.Children, childSum(&c))
		return nil
	})
	if err != nil {
		return err
	}
	if n <= maxListedChildren {
		a.size += childRecordLen * len(sm.Children)
		return nil
	}
	sm.Many, sm.Children = true, nil
	err = a.v.buckets(sm.Node, func(b byte, d crdt.Digest) error {
		sm.Buckets = append(sm.Buckets, transport.BucketSum{Bucket: b, Digest: transport.Short(d)})
		return nil
	})
	a.size += 9 * len(sm.Buckets)
	return err
}

// childSketches answers child sketch queries: our sketch of the children
// in the asked buckets minus the asker's, decoded, gives the children that
// differ; those both sides hold go into the Aggregate.
func (a *answer) childSketches(qs []transport.ChildSketchQuery) error {
	scanned := 0 // child records read for this request
	for i, q := range qs {
		// Each query reads every child of its node: past a budget the
		// rest wait for the next request, so a request full of queries
		// for one big node cannot cost more than a few of them.
		if a.full() || a.aggCells+aggregateSlack+aggregateCells(0) > crdt.MaxSketchCells ||
			(i > 0 && scanned >= a.lim.childScan) {
			break
		}
		a.reply.Answered[transport.AnsChildSketch]++
		d := transport.ChildDiff{Node: q.Node}
		a.size += 24
		in, err := a.sc.containsNode(q.Node)
		if err != nil {
			return err
		}
		theirs, err := crdt.DecodeSketch(q.Sketch, childKeyLen)
		if err != nil {
			return fmt.Errorf("repair child sketch of %v: %w", q.Node, err)
		}
		if !in {
			a.reply.ChildDiffs = append(a.reply.ChildDiffs, d)
			continue
		}
		mine := crdt.NewSketch(theirs.Cells(), childKeyLen)
		byTag := make(map[uint64]store.ChildDigest)
		err = a.v.childDigests(q.Node, -1, func(c store.ChildDigest) error {
			scanned++
			if q.Buckets.Has(c.ID[0]) {
				mine.Add(childKey(&c, q.Salt))
				byTag[childTag(c.ID)] = c
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := mine.Subtract(theirs); err != nil {
			return err
		}
		plus, minus, ok := mine.Decode()
		if !ok {
			a.reply.ChildDiffs = append(a.reply.ChildDiffs, d)
			continue
		}
		theirKey := make(map[uint64]*crdt.SketchKey, len(minus))
		for i := range minus {
			theirKey[binary.BigEndian.Uint64(minus[i][:8])] = &minus[i]
		}
		ours := make([]store.ChildDigest, 0, len(plus))
		for _, k := range plus {
			c, found := byTag[binary.BigEndian.Uint64(k[:8])]
			if !found {
				ok = false // not a key of ours: a hostile or colliding sketch
				break
			}
			ours = append(ours, c)
		}
		if !ok {
			a.reply.ChildDiffs = append(a.reply.ChildDiffs, d)
			continue
		}
		d.OK = true
		for i := range ours {
			c := &ours[i]
			tag := childTag(c.ID)
			tk, both := theirKey[tag]
			if !both { // a child the asker lacks
				d.Children = append(d.Children, childSum(c))
				a.size += childRecordLen
				continue
			}
			delete(theirKey, tag)
			f := transport.ChildFlags{Tag: tag}
			f.Edge, f.Own, f.Below = childKeyDiff(&plus[i], tk)
			// Points both hold go into the Aggregate (those alike
			// cancel), while there is room.
			f.Aggregated = f.Own && !c.Own.IsZero() && a.aggregateRoom(0)
			if f.Aggregated {
				a.agg = append(a.agg, aggNode{id: c.ID})
				a.aggRefs = append(a.aggRefs, aggRef{sum: -1, diff: len(a.reply.ChildDiffs), both: len(d.Both)})
			}
			d.Both = append(d.Both, f)
			a.size += 9
		}
		for tag := range theirKey {
			d.Missing = append(d.Missing, tag)
			a.size += 8
		}
		slices.Sort(d.Missing)
		a.reply.ChildDiffs = append(a.reply.ChildDiffs, d)
	}
	return nil
}

// aggregate builds the reply's Aggregate over the nodes in a.agg. A node
// with too many points to sketch is left out (its flag cleared) and
// listed; the nodes past maxAggScan points read are left out too, for the
// asker to compare again, so one request costs a bounded read.
func (a *answer) aggregate() error {
	if len(a.agg) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(a.agg))
	cells := aggregateSlack
	for i, n := range a.agg {
		ids[i] = n.id
		cells += aggregateCells(n.density)
	}
	sk, err := sketchPoints(a.st, ids, cells, false, a.lim.aggScan, a.v.hidesSecrets())
	if err != nil {
		return err
	}
	for i, n := range a.agg {
		if sk.deferred[n.id] {
			a.unflag(a.aggRefs[i]) // the asker compares it again
			continue
		}
		if sk.big[n.id] {
			a.unflag(a.aggRefs[i])
			l, err := listNode(a.st, true, transport.ListQuery{Node: n.id}, &a.size, a.v.hidesSecrets())
			if err != nil {
				return err
			}
			a.reply.Listings = append(a.reply.Listings, l)
		}
	}
	a.reply.Aggregate = sk.sk.AppendBinary(nil)
	return nil
}

// listNode lists node q.Node's points after q.After (nothing when the node
// is out of scope; no secret point when hideSecrets) while *size stays
// under the reply budget; a listing cut short says More, with Next the
// cursor to continue from (nil: from the start, when not even one entry
// fitted).
func listNode(st *store.Store, in bool, q transport.ListQuery, size *int, hideSecrets bool) (transport.Listing, error) {
	l := transport.Listing{Node: q.Node, After: q.After}
	*size += 40
	if !in {
		return l, nil
	}
	var after *crdt.Register
	if len(q.After) > 0 {
		r, err := store.ParseRegisterKey(q.After)
		if err != nil {
			return l, fmt.Errorf("repair list: %w", err)
		}
		after = &r
	}
	var last []byte
	err := st.ScanNodeFrom(q.Node, after, func(p *crdt.Point) error {
		if p.IsEdge() {
			return store.ErrStop
		}
		if hideSecrets && crdt.IsSecret(p.Type) {
			return nil
		}
		if *size >= repairReplyBudget {
			l.More = true
			return store.ErrStop
		}
		l.Entries = append(l.Entries, transport.ListEntry{Hash: crdt.RegisterHash(p.Type, p.Key),
			Digest: transport.Short(crdt.PointDigest(p))})
		*size += 16
		last = store.RegisterKey(p.Register())
		return nil
	})
	if l.More {
		l.Next = last
		if last == nil {
			l.Next = q.After
		}
	}
	return l, err
}

// handleRepair is the acceptor's side of repair: it answers one request.
func (a *acceptor) handleRepair(as *acceptedSession, m *nats.Msg) {
	t0 := time.Now()
	defer func() { a.repairTime.Add(int64(time.Since(t0))) }()
	s := as.s
	s.bytesRecv.Add(uint64(len(m.Data)))
	s.touch()
	if t, _, err := transport.ParseFrame(m.Data, 0); err == nil && t == transport.MsgHistRequest {
		a.handleHistory(as, m)
		return
	}
	req, err := transport.DecodeRepairRequest(m.Data, 0)
	if err != nil {
		s.respond(m, transport.EncodeError(err))
		return
	}
	var reply *transport.RepairReply
	if s.user != nil {
		// A user's replica compares its readable view: no secret, and
		// nothing beyond the subtrees of its parents (userrepair.go).
		reply, err = a.answerUser(s, req)
	} else {
		reply, err = a.answerSession(s, req)
	}
	if err != nil {
		s.respond(m, transport.EncodeError(err))
		return
	}
	if len(req.Compare) > 0 && req.Compare[0].Node == req.Root {
		s.mu.Lock()
		s.repairEqual = len(reply.Summaries) == 0 || reply.Summaries[0].Node != req.Root
		s.mu.Unlock()
	}
	b, err := transport.EncodeRepairReply(reply)
	if err != nil {
		b = transport.EncodeError(err)
	}
	s.respond(m, b)
}

// answerSession answers a repair request on an edge's or a peer's session.
func (a *acceptor) answerSession(s *session, req *transport.RepairRequest) (*transport.RepairReply, error) {
	// A fresh scope: its memo must see the tree as it is now, and the
	// sender goroutine owns the session's. It is what the device owns, as
	// the session accepts it (newDeviceScope): its subtree over deleted
	// edges too, since differences below a deleted node can change which
	// edges are active elsewhere and both sides must compare them; but
	// not a node moved away to another part of the tree.
	sc := newScope(a.r.st, uuid.Nil)
	if !s.scope.full() {
		sc = newDeviceScope(a.r.st, s.scope.root)
	}
	return answerRepair(a.r.st, sc, req, a.r.cfg.repairLimits)
}

// nodePointsWhere calls fn for the node points of n whose register hash
// (crdt.RegisterHash) match accepts.
func nodePointsWhere(st *store.Store, n uuid.UUID, match func(regHash uint64) bool, fn func(*crdt.Point) error) error {
	return st.ScanNodesPoints([]uuid.UUID{n}, func(_ int, p *crdt.Point) error {
		if match(crdt.RegisterHash(p.Type, p.Key)) {
			return fn(p)
		}
		return nil
	})
}
