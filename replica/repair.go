package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// Digest repair: the dialer of a session compares the digests of the
// session's scope with the acceptor's and, where they differ, descends
// through node summaries (own digest, children, child buckets) and child
// sketches to the nodes whose points differ; one sketch of all their
// points per reply (the aggregate) then shows which points to push and
// which to fetch. Every step is a batched round trip (RepairRequest →
// RepairReply), so the number of round trips grows with the depth of the
// differences, not their count. This file is the dialer's side,
// repair_answer.go the acceptor's, repair_sketch.go the keys and sketches
// both compute; docs/protocol.md describes the messages.

// Repair limits.
const (
	maxListedChildren = 256       // a node with more children is summarized by buckets
	repairReplyBudget = 512 << 10 // bytes a reply aims to stay under
	repairSendBudget  = 256 << 10 // local points are sent in pushes of about this size
	maxQueries        = 8192      // queries of one kind per request
)

// RepairStats describes one repair round.
type RepairStats struct {
	Equal      bool          // the scope digests matched at the first comparison
	RoundTrips int           // request/reply exchanges
	BytesOut   int           // request and push frames sent
	BytesIn    int           // reply frames received
	Fetched    int           // points received from the remote
	Sent       int           // points sent to the remote
	Took       time.Duration // wall time
	Work       time.Duration // time spent in this side's repair code: Took without waiting for replies
}

// repairer runs repair rounds for one session: its queues are the state of
// a round's descent. Owned by one goroutine.
type repairer struct {
	s       *session
	root    uuid.UUID // the scope root both sides compare
	subject string    // where requests go
	pushTo  string    // where local points go (a push subject of the session)
	// readable: the acceptor answers a user's readable view
	// (userrepair.go), where the record of an inactive child carries no
	// own or below digest; ours are made the same way.
	readable bool

	compare []transport.NodeSub
	list    []transport.ListQuery
	buckets []transport.BucketQuery
	fetch   []transport.FetchQuery
	edges   []transport.EdgeQuery
	// childSketches are queued child sketch queries, children our
	// children in their buckets by tag until the answer is processed.
	childSketches []transport.ChildSketchQuery
	children      map[uuid.UUID]map[uint64]store.ChildDigest
	tagFetch      []transport.TagFetch
	visited       map[uuid.UUID]bool
	send          []crdt.Point
	sendLen       int
	stats         RepairStats

	// Pushes of local points are sent without waiting, overlapping the
	// next request; their acks are collected at the end of the round.
	sending   sync.WaitGroup
	sendErr   chan error
	sendAfter bool // a push was sent after the last request
	waited    time.Duration
}

// round runs one repair round to its end: the descent finishes even if
// writes continue meanwhile; what changed during it is caught by push or by
// the next round.
func (rp *repairer) round(ctx context.Context) (RepairStats, error) {
	start := time.Now()
	rp.s.repairing.Store(true)
	defer rp.s.repairing.Store(false)
	rp.stats = RepairStats{}
	rp.visited = map[uuid.UUID]bool{rp.root: true}
	d, err := rp.s.r.st.NodeDigest(rp.root)
	if err != nil {
		return rp.stats, err
	}
	rp.compare = []transport.NodeSub{{Node: rp.root, Sub: d.Sub, Own: d.Own}}
	rp.sendErr = make(chan error, 1)
	rp.sendAfter, rp.waited = false, 0
	defer rp.sending.Wait() // also on errors: no push outlives its round
	first := true
	rp.childSketches, rp.children, rp.tagFetch = nil, nil, nil
	for rp.queued() > 0 {
		if err := ctx.Err(); err != nil {
			return rp.stats, err
		}
		req := rp.takeRequest()
		if err := rp.flushSend(); err != nil { // overlaps this request
			return rp.stats, err
		}
		rp.sendAfter = false
		reply, err := rp.exchange(req)
		if err != nil {
			return rp.stats, err
		}
		if first {
			rp.stats.Equal = len(reply.Summaries) == 0 && reply.Answered[transport.AnsCompare] == 1
			first = false
		}
		rp.requeue(req, reply.Answered)
		if err := rp.process(req, reply); err != nil {
			return rp.stats, err
		}
	}
	if err := rp.flushSend(); err != nil {
		return rp.stats, err
	}
	t0 := time.Now()
	rp.sending.Wait()
	rp.waited += time.Since(t0)
	select {
	case err := <-rp.sendErr:
		return rp.stats, err
	default:
	}
	if rp.sendAfter {
		rp.stats.RoundTrips++ // the last push was waited for on its own
	}
	rp.stats.Took = time.Since(start)
	rp.stats.Work = rp.stats.Took - rp.waited
	return rp.stats, nil
}

// takeRequest moves up to maxQueries queries of each kind into a request.
func (rp *repairer) takeRequest() *transport.RepairRequest {
	req := &transport.RepairRequest{Root: rp.root}
	n := min(len(rp.compare), maxQueries)
	req.Compare, rp.compare = rp.compare[:n:n], rp.compare[n:]
	// Child sketches are large: bound the request's size, not only the
	// number of queries, so it stays far below the message limit.
	n, size := 0, 0
	for n < len(rp.childSketches) && (n == 0 || size+len(rp.childSketches[n].Sketch) < repairReplyBudget) {
		size += 64 + len(rp.childSketches[n].Sketch)
		n++
	}
	req.ChildSketch, rp.childSketches = rp.childSketches[:n:n], rp.childSketches[n:]
	n, size = 0, 0
	for n < len(rp.tagFetch) && n < maxQueries/32 && size < repairReplyBudget/2 {
		size += 24 + 4*len(rp.tagFetch[n].Tags)
		n++
	}
	req.TagFetch, rp.tagFetch = rp.tagFetch[:n:n], rp.tagFetch[n:]
	n = min(len(rp.list), maxQueries/32)
	req.List, rp.list = rp.list[:n:n], rp.list[n:]
	n = min(len(rp.buckets), maxQueries/32)
	req.Buckets, rp.buckets = rp.buckets[:n:n], rp.buckets[n:]
	n, size = 0, 0
	for n < len(rp.fetch) && n < maxQueries/32 && size < repairReplyBudget/2 {
		size += 24 + 8*len(rp.fetch[n].Hashes)
		n++
	}
	req.Fetch, rp.fetch = rp.fetch[:n:n], rp.fetch[n:]
	n = min(len(rp.edges), maxQueries)
	req.Edges, rp.edges = rp.edges[:n:n], rp.edges[n:]
	return req
}

// queued counts the queries waiting to be sent.
func (rp *repairer) queued() int {
	return len(rp.compare) + len(rp.list) + len(rp.buckets) + len(rp.fetch) + len(rp.edges) +
		len(rp.childSketches) + len(rp.tagFetch)
}

// requeue puts back the queries the reply did not get to.
func (rp *repairer) requeue(req *transport.RepairRequest, answered [7]int) {
	rest := func(n, l int) int { return min(answered[n], l) }
	rp.compare = append(req.Compare[rest(transport.AnsCompare, len(req.Compare)):], rp.compare...)
	rp.list = append(req.List[rest(transport.AnsList, len(req.List)):], rp.list...)
	rp.buckets = append(req.Buckets[rest(transport.AnsBuckets, len(req.Buckets)):], rp.buckets...)
	rp.fetch = append(req.Fetch[rest(transport.AnsFetch, len(req.Fetch)):], rp.fetch...)
	rp.edges = append(req.Edges[rest(transport.AnsEdges, len(req.Edges)):], rp.edges...)
	rp.childSketches = append(req.ChildSketch[rest(transport.AnsChildSketch, len(req.ChildSketch)):], rp.childSketches...)
	rp.tagFetch = append(req.TagFetch[rest(transport.AnsTagFetch, len(req.TagFetch)):], rp.tagFetch...)
}

func (rp *repairer) exchange(req *transport.RepairRequest) (*transport.RepairReply, error) {
	b, err := transport.EncodeRepairRequest(req)
	if err != nil {
		return nil, err
	}
	s := rp.s
	s.bytesSent.Add(uint64(len(b)))
	rp.stats.BytesOut += len(b)
	t0 := time.Now()
	m, err := s.conn.Request(rp.subject, b, s.transferTimeout(len(b)+repairReplyBudget))
	rp.waited += time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	s.bytesRecv.Add(uint64(len(m.Data)))
	s.touch()
	rp.stats.BytesIn += len(m.Data)
	rp.stats.RoundTrips++
	reply, err := transport.DecodeRepairReply(m.Data, 0)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	if reply.Answered == [7]int{} && len(req.Compare)+len(req.List)+len(req.Buckets)+len(req.Fetch)+len(req.Edges)+
		len(req.ChildSketch)+len(req.TagFetch) > 0 {
		return nil, errors.New("repair: the remote answered nothing")
	}
	return reply, nil
}

// process compares a reply to req with the local store and queues the next
// step.
func (rp *repairer) process(req *transport.RepairRequest, reply *transport.RepairReply) error {
	asked := make(map[uuid.UUID]transport.NodeSub, reply.Answered[transport.AnsCompare])
	for _, q := range req.Compare[:min(reply.Answered[transport.AnsCompare], len(req.Compare))] {
		asked[q.Node] = q
	}
	var agg []aggNode // nodes whose points the reply's Aggregate sketches
	groups := childGroups{}
	listed := make(map[uuid.UUID]bool, len(reply.Listings))
	for _, l := range reply.Listings {
		listed[l.Node] = true
	}
	for i := range reply.Summaries {
		sm := &reply.Summaries[i]
		q, ok := asked[sm.Node]
		if !ok {
			return fmt.Errorf("repair: summary of %v, which was not asked", sm.Node)
		}
		switch {
		case sm.Aggregated:
			agg = append(agg, aggNode{id: sm.Node, density: q.Density})
		case sm.Own != q.Own && !sm.Own.IsZero() && !q.Own.IsZero() && !listed[sm.Node]:
			// Its points differ but did not fit this reply's Aggregate:
			// ask again.
			if err := rp.recompare(sm.Node, q.Density); err != nil {
				return err
			}
		}
		if sm.Own.IsZero() && !q.Own.IsZero() {
			// The remote holds none of the node's points: all of ours go.
			if err := rp.sendNodePoints(sm.Node); err != nil {
				return err
			}
		}
		switch {
		case sm.BelowEqual:
		case sm.Many:
			if err := rp.compareBuckets(sm.Node, sm.Buckets); err != nil {
				return err
			}
		default:
			if err := rp.compareChildren(sm.Node, -1, sm.Children, groups.of(sm.Node)); err != nil {
				return err
			}
		}
	}
	for i := range reply.Buckets {
		b := &reply.Buckets[i]
		if err := rp.compareChildren(b.Node, int(b.Bucket), b.Children, groups.of(b.Node)); err != nil {
			return err
		}
	}
	groups.size(rp.compare)
	answered := req.ChildSketch[:min(reply.Answered[transport.AnsChildSketch], len(req.ChildSketch))]
	if len(reply.ChildDiffs) != len(answered) {
		return fmt.Errorf("repair: %d child diffs for %d child sketches", len(reply.ChildDiffs), len(answered))
	}
	for i := range reply.ChildDiffs {
		d := &reply.ChildDiffs[i]
		if d.Node != answered[i].Node {
			return fmt.Errorf("repair: child diff of %v for a sketch of %v", d.Node, answered[i].Node)
		}
		if !d.OK {
			// More children differ than the sketch was sized for: once
			// more with twice the cells, while that beats listing them.
			q := &answered[i]
			if err := rp.sketchChildren(d.Node, &q.Buckets, 2*len(q.Sketch)/crdt.SketchCellLen(childKeyLen)); err != nil {
				return err
			}
			continue
		}
		var err error
		if agg, err = rp.childDiff(d, agg); err != nil {
			return err
		}
	}
	for i := range reply.Listings {
		if err := rp.compareListing(&reply.Listings[i]); err != nil {
			return err
		}
	}
	if len(reply.Points) > 0 {
		pts, err := crdt.DecodeBatch(reply.Points, 0)
		if err != nil {
			return fmt.Errorf("repair points: %w", err)
		}
		if _, rejected, reason, err := rp.s.r.applyRemote(rp.s.remote, pts, nil); err != nil {
			return err
		} else if rejected > 0 {
			rp.s.rejected.Add(uint64(rejected))
			rp.s.r.log.Warn("repair points rejected", "remote", rp.s.remote, "count", rejected, "first", reason)
		}
		rp.stats.Fetched += len(pts)
	}
	if len(agg) > 0 {
		return rp.reconcile(agg, reply.Aggregate)
	}
	return nil
}

// sendNodePoints queues every node point of n for the remote.
func (rp *repairer) sendNodePoints(n uuid.UUID) error {
	return rp.s.r.st.ScanNodesPoints([]uuid.UUID{n}, func(_ int, p *crdt.Point) error { return rp.queueSend(p) })
}

// compareBuckets queues, for the differing child buckets of n, a sketch
// of our children there, or their listings when that is cheaper.
func (rp *repairer) compareBuckets(n uuid.UUID, remote []transport.BucketSum) error {
	local := make(map[byte]transport.ShortDigest)
	if err := rp.s.r.st.Buckets(n, func(b byte, d crdt.Digest) error {
		local[b] = transport.Short(d)
		return nil
	}); err != nil {
		return err
	}
	var differ transport.BucketSet
	for _, b := range remote {
		if d, ok := local[b.Bucket]; !ok || d != b.Digest {
			differ.Add(b.Bucket)
		}
		delete(local, b.Bucket)
	}
	for b := range local { // buckets only we have
		differ.Add(b)
	}
	if differ.Len() == 0 {
		return nil
	}
	return rp.sketchChildren(n, &differ, 0)
}

// sketchChildren queues a child sketch of n's children in the buckets of
// differ, or their listings when that costs less.
func (rp *repairer) sketchChildren(n uuid.UUID, differ *transport.BucketSet, retry int) error {
	q, ok, err := rp.childSketch(n, differ, retry)
	if err != nil {
		return err
	}
	if ok {
		rp.childSketches = append(rp.childSketches, q)
		return nil
	}
	rp.listBuckets(n, differ)
	return nil
}

// listBuckets queues the listings of the buckets of n in differ.
func (rp *repairer) listBuckets(n uuid.UUID, differ *transport.BucketSet) {
	for b := range 256 {
		if differ.Has(byte(b)) {
			rp.buckets = append(rp.buckets, transport.BucketQuery{Node: n, Bucket: byte(b)})
		}
	}
}

// childSketch builds the sketch of our children of n in the buckets of
// differ, sized from the number of children that likely differ (or retry
// cells, when set); ok is false when listing the buckets costs less.
func (rp *repairer) childSketch(n uuid.UUID, differ *transport.BucketSet, retry int) (transport.ChildSketchQuery, bool, error) {
	var kids []store.ChildDigest
	err := rp.s.r.st.ChildDigests(n, -1, uuid.Nil, func(c store.ChildDigest) error {
		if differ.Has(c.ID[0]) {
			kids = append(kids, rp.record(c))
		}
		return nil
	})
	if err != nil {
		return transport.ChildSketchQuery{}, false, err
	}
	cells := childSketchCells(differ.Len(), len(kids))
	if retry > 0 {
		cells = retry
	}
	listCost := childRecordLen * len(kids)
	if cells > crdt.MaxSketchCells || cells*crdt.SketchCellLen(childKeyLen) >= listCost {
		return transport.ChildSketchQuery{}, false, nil
	}
	sk := crdt.NewSketch(cells, childKeyLen)
	salt := rand.Uint32()
	byTag := make(map[uint64]store.ChildDigest, len(kids))
	for _, c := range kids {
		sk.Add(childKey(&c, salt))
		byTag[childTag(c.ID)] = c
	}
	if rp.children == nil {
		rp.children = make(map[uuid.UUID]map[uint64]store.ChildDigest)
	}
	rp.children[n] = byTag
	return transport.ChildSketchQuery{Node: n, Buckets: *differ, Salt: salt, Sketch: sk.AppendBinary(nil)}, true, nil
}

// childDiff acts on the children of a node that a child sketch showed
// differ, and adds those whose points the reply sketched to agg.
func (rp *repairer) childDiff(d *transport.ChildDiff, agg []aggNode) ([]aggNode, error) {
	byTag := rp.children[d.Node]
	for _, f := range d.Both {
		c, ok := byTag[f.Tag]
		if !ok {
			return agg, fmt.Errorf("repair: child tag %016x of %v is not ours", f.Tag, d.Node)
		}
		if f.Edge {
			if err := rp.exchangeEdge(c.ID, d.Node); err != nil {
				return agg, err
			}
		}
		if f.Aggregated {
			agg = append(agg, aggNode{id: c.ID})
		}
		if f.Below || (f.Own && !f.Aggregated) {
			if err := rp.descend(c.ID, 0); err != nil {
				return agg, err
			}
		} else {
			rp.visit(c.ID)
		}
	}
	for _, rc := range d.Children { // children only the remote has
		if _, ok := byTag[childTag(rc.ID)]; ok {
			return agg, fmt.Errorf("repair: child %v of %v reported as only the remote's", rc.ID, d.Node)
		}
		rp.edges = append(rp.edges, transport.EdgeQuery{Child: rc.ID, Parent: d.Node})
		if err := rp.descend(rc.ID, 0); err != nil {
			return agg, err
		}
	}
	for _, tag := range d.Missing { // children only we have
		c, ok := byTag[tag]
		if !ok {
			return agg, fmt.Errorf("repair: child tag %016x of %v is not ours", tag, d.Node)
		}
		if err := rp.exchangeEdge(c.ID, d.Node); err != nil {
			return agg, err
		}
		if err := rp.descend(c.ID, 0); err != nil {
			return agg, err
		}
	}
	delete(rp.children, d.Node)
	return agg, nil
}

// compareChildren compares the remote's children of n (all, or one
// bucket) with ours: a differing edge is exchanged, a child whose own
// points or what is below it differ is compared. It counts the children
// in g, and the compares of children whose own points differ.
func (rp *repairer) compareChildren(n uuid.UUID, bucket int, remote []transport.ChildSum, g *childGroup) error {
	rem := make(map[uuid.UUID]transport.ChildSum, len(remote))
	for _, c := range remote {
		rem[c.ID] = c
	}
	err := rp.s.r.st.ChildDigests(n, bucket, uuid.Nil, func(c store.ChildDigest) error {
		c = rp.record(c)
		g.listed++
		rc, ok := rem[c.ID]
		delete(rem, c.ID)
		if !ok || rc.Edge != transport.Short(c.Edge) {
			if err := rp.exchangeEdge(c.ID, n); err != nil {
				return err
			}
		}
		// Inactive children too: a difference below a deleted node (an
		// edge there) can change which edges are active elsewhere, by
		// the cycle rule, without showing in any live digest but its
		// effects.
		if ok && rc.Own != transport.Short(c.Own) && !c.Own.IsZero() {
			g.differ++
			at := len(rp.compare)
			if err := rp.descend(c.ID, 0); err != nil || len(rp.compare) == at {
				return err
			}
			g.own = append(g.own, at)
			return nil
		}
		if !ok || rc.Own != transport.Short(c.Own) || rc.Below != transport.Short(c.Sub.Sub(c.Own)) {
			return rp.descend(c.ID, 0)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, rc := range rem { // children only the remote has
		rp.edges = append(rp.edges, transport.EdgeQuery{Child: rc.ID, Parent: n})
		// (we hold none of its edge points to send)
		if err := rp.descend(rc.ID, 0); err != nil {
			return err
		}
	}
	return nil
}

// record is child c's record as the acceptor's view has it.
func (rp *repairer) record(c store.ChildDigest) store.ChildDigest {
	if rp.readable && !c.Active {
		c.Own, c.Sub = crdt.Digest{}, crdt.Digest{}
	}
	return c
}

// childGroup counts, for one node of a reply, its children compared and
// those whose own points differ, with the indexes of their compares.
type childGroup struct {
	listed, differ int
	own            []int
}

// childGroups are a reply's child groups by node.
type childGroups map[uuid.UUID]*childGroup

func (gs childGroups) of(n uuid.UUID) *childGroup {
	g := gs[n]
	if g == nil {
		g = &childGroup{}
		gs[n] = g
	}
	return g
}

// size sets the density of the compares of children whose own points
// differ from how many of their siblings differ: if differing points fall
// on children at random, c of k children differing means about
// −k·ln(1 − c/k) points, more than one a child when c is a large part of
// k. The aggregate then has room for them the first time.
func (gs childGroups) size(compare []transport.NodeSub) {
	for _, g := range gs {
		if len(g.own) == 0 || g.differ >= g.listed {
			continue // every child differs: no telling how much; a failed table will say
		}
		per := -float64(g.listed) * math.Log(1-float64(g.differ)/float64(g.listed)) / float64(g.differ)
		d := byte(min(math.Ceil(per-0.15), transport.MaxDensity))
		for _, i := range g.own {
			compare[i].Density = max(d, 1)
		}
	}
}

// exchangeEdge fetches the remote's points of the edge parent → child and
// queues ours for it.
func (rp *repairer) exchangeEdge(child, parent uuid.UUID) error {
	rp.edges = append(rp.edges, transport.EdgeQuery{Child: child, Parent: parent})
	return rp.s.r.st.ScanNode(child, func(p *crdt.Point) error {
		if p.Parent != parent {
			return nil
		}
		return rp.queueSend(p)
	})
}

// visit marks n compared in this round; it reports false when it was.
func (rp *repairer) visit(n uuid.UUID) bool {
	if rp.visited[n] {
		return false
	}
	rp.visited[n] = true
	return true
}

// descend queues a comparison of node n, once a round.
func (rp *repairer) descend(n uuid.UUID, density byte) error {
	if !rp.visit(n) {
		return nil
	}
	return rp.recompare(n, density)
}

// recompare queues a comparison of node n whether or not it was compared:
// a sketch of its points failed, or what is below it differs.
func (rp *repairer) recompare(n uuid.UUID, density byte) error {
	d, err := rp.s.r.st.NodeDigest(n)
	if err != nil {
		return err
	}
	rp.compare = append(rp.compare, transport.NodeSub{Node: n, Sub: d.Sub, Own: d.Own, Density: density})
	return nil
}

// aggNode is a node whose points a reply's Aggregate sketches, with the
// density its compare asked for.
type aggNode struct {
	id      uuid.UUID
	density byte
}

// reconcile subtracts our sketch of the points of nodes agg from the
// remote's: our versions that win are sent and theirs that win fetched.
// When the sketch does not decode, the nodes are compared again with
// denser sketches, and listed once that is no longer worth it.
func (rp *repairer) reconcile(agg []aggNode, theirsB []byte) error {
	theirs, err := crdt.DecodeSketch(theirsB, crdt.PointKeyLen)
	if err != nil {
		return fmt.Errorf("repair aggregate: %w", err)
	}
	ids := make([]uuid.UUID, len(agg))
	for i, a := range agg {
		ids[i] = a.id
	}
	mine, err := sketchPoints(rp.s.r.st, ids, theirs.Cells(), true, 0, false)
	if err != nil {
		return err
	}
	ok := false
	var plus, minus []crdt.SketchKey
	var ours []crdt.Point
	if len(mine.big) == 0 {
		if err := mine.sk.Subtract(theirs); err != nil {
			return err
		}
		if plus, minus, ok = mine.sk.Decode(); ok {
			// A key that is not ours: a hostile or colliding sketch.
			if ours, ok, err = mine.points(rp.s.r.st, plus); err != nil {
				return err
			}
		}
	}
	if !ok {
		next := retryDensity(agg, mine.sk, len(plus)+len(minus))
		for _, a := range agg {
			if mine.big[a.id] || next > transport.MaxDensity {
				rp.list = append(rp.list, transport.ListQuery{Node: a.id})
				continue
			}
			if err := rp.recompare(a.id, byte(next)); err != nil {
				return err
			}
		}
		return nil
	}
	// Their versions by node and register tag: a register in both lists
	// has a version on each side and only the later one needs to cross.
	type reg struct{ node, reg uint32 }
	theirTime := make(map[reg]crdt.Timestamp, len(minus))
	for _, k := range minus {
		n, r, t, _ := crdt.PointKeyParts(&k)
		theirTime[reg{n, r}] = t
	}
	for i := range ours {
		p := &ours[i]
		k := crdt.PointKey(p)
		n, r, t, _ := crdt.PointKeyParts(&k)
		tt, both := theirTime[reg{n, r}]
		if both && tt > t {
			continue // theirs is later: fetched below
		}
		if err := rp.queueSend(p); err != nil {
			return err
		}
		if both && tt < t {
			delete(theirTime, reg{n, r}) // ours is later: theirs need not come
		}
	}
	byTag := make(map[uint32][]uuid.UUID, len(agg))
	for _, a := range agg {
		byTag[crdt.NodeTag(a.id)] = append(byTag[crdt.NodeTag(a.id)], a.id)
	}
	want := make(map[uuid.UUID][]uint32)
	for r := range theirTime {
		for _, n := range byTag[r.node] { // (a tag shared by two nodes asks both)
			want[n] = append(want[n], r.reg)
		}
	}
	for n, tags := range want {
		slices.Sort(tags)
		rp.tagFetch = append(rp.tagFetch, transport.TagFetch{Node: n, Tags: tags})
	}
	return nil
}

// compareListing compares a page of the remote's listing of a node's
// points with ours over the same range of registers: points the remote
// lacks or holds older are sent, points we lack or hold older are fetched.
func (rp *repairer) compareListing(l *transport.Listing) error {
	rem := make(map[uint64]transport.ShortDigest, len(l.Entries))
	for _, e := range l.Entries {
		rem[e.Hash] = e.Digest
	}
	var after *crdt.Register
	if len(l.After) > 0 {
		r, err := store.ParseRegisterKey(l.After)
		if err != nil {
			return fmt.Errorf("repair listing: %w", err)
		}
		after = &r
	}
	err := rp.s.r.st.ScanNodeFrom(l.Node, after, func(p *crdt.Point) error {
		if p.IsEdge() {
			return store.ErrStop // edge points follow the node points
		}
		if l.More && bytes.Compare(store.RegisterKey(p.Register()), l.Next) > 0 {
			return store.ErrStop // beyond this page
		}
		h := crdt.RegisterHash(p.Type, p.Key)
		d, ok := rem[h]
		delete(rem, h)
		if ok && d == transport.Short(crdt.PointDigest(p)) {
			return nil
		}
		if ok {
			// Both hold a version: fetch theirs too, LWW keeps the winner
			// on each side.
			rp.addFetch(l.Node, h)
		}
		return rp.queueSend(p)
	})
	if err != nil {
		return err
	}
	for h := range rem {
		rp.addFetch(l.Node, h)
	}
	if l.More {
		rp.list = append(rp.list, transport.ListQuery{Node: l.Node, After: l.Next})
	}
	return nil
}

func (rp *repairer) addFetch(n uuid.UUID, h uint64) {
	if k := len(rp.fetch) - 1; k >= 0 && rp.fetch[k].Node == n && len(rp.fetch[k].Hashes) < 4096 {
		rp.fetch[k].Hashes = append(rp.fetch[k].Hashes, h)
		return
	}
	rp.fetch = append(rp.fetch, transport.FetchQuery{Node: n, Hashes: []uint64{h}})
}

// queueSend adds a local point for the remote, sending when enough
// accumulated.
func (rp *repairer) queueSend(p *crdt.Point) error {
	rp.send = append(rp.send, *p)
	rp.sendLen += pointCost(p)
	if rp.sendLen >= repairSendBudget {
		return rp.flushSend()
	}
	return nil
}

// flushSend pushes the queued local points outside the feed's positions
// (from = thru = 0): the receiver applies them and keeps its position. It
// does not wait for the ack; round waits for every push before it ends.
func (rp *repairer) flushSend() error {
	if len(rp.send) == 0 {
		return nil
	}
	s := rp.s
	b, err := transport.Encode(transport.Push{Points: crdt.AppendBatch(nil, rp.send)})
	if err != nil {
		return err
	}
	s.bytesSent.Add(uint64(len(b)))
	rp.stats.BytesOut += len(b)
	rp.stats.Sent += len(rp.send)
	rp.send, rp.sendLen = nil, 0
	rp.sendAfter = true
	rp.sending.Add(1)
	go func() {
		defer rp.sending.Done()
		m, err := s.conn.Request(rp.pushTo, b, s.transferTimeout(len(b)))
		if err == nil {
			s.bytesRecv.Add(uint64(len(m.Data)))
			err = transport.Decode(m.Data, 0, &transport.Ack{})
		}
		if err != nil {
			select {
			case rp.sendErr <- fmt.Errorf("repair push: %w", err):
			default:
			}
		}
	}()
	return nil
}
