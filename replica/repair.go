package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"siot/crdt"
	"siot/store"
	"siot/transport"
)

// Digest repair: the dialer of a session compares the digests of the
// session's scope with the acceptor's and, where they differ, descends
// through node summaries (own digest, children or child buckets) to
// listings of the differing nodes' points, then fetches the points it
// lacks and sends the ones the acceptor lacks. Every step is a batched
// round trip (RepairRequest → RepairReply), so the number of round trips
// grows with the depth of the differences, not their count. docs/protocol.md
// describes the messages.

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
	m, err := s.conn.Request(rp.subject, b, s.r.cfg.AckTimeout)
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
	for i := range reply.Summaries {
		sm := &reply.Summaries[i]
		q, ok := asked[sm.Node]
		if !ok {
			return fmt.Errorf("repair: summary of %v, which was not asked", sm.Node)
		}
		if sm.Aggregated {
			agg = append(agg, aggNode{id: sm.Node, density: q.Density})
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
			if err := rp.compareChildren(sm.Node, -1, sm.Children); err != nil {
				return err
			}
		}
	}
	for i := range reply.Buckets {
		b := &reply.Buckets[i]
		if err := rp.compareChildren(b.Node, int(b.Bucket), b.Children); err != nil {
			return err
		}
	}
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
			rp.listBuckets(d.Node, &answered[i].Buckets)
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
	var differ [32]byte
	nb := 0
	for _, b := range remote {
		if d, ok := local[b.Bucket]; !ok || d != b.Digest {
			differ[b.Bucket/8] |= 1 << (b.Bucket % 8)
			nb++
		}
		delete(local, b.Bucket)
	}
	for b := range local { // buckets only we have
		differ[b/8] |= 1 << (b % 8)
		nb++
	}
	if nb == 0 {
		return nil
	}
	q, ok, err := rp.childSketch(n, &differ, nb)
	if err != nil {
		return err
	}
	if ok {
		rp.childSketches = append(rp.childSketches, q)
		return nil
	}
	rp.listBuckets(n, &differ)
	return nil
}

// listBuckets queues the listings of the buckets of n set in differ.
func (rp *repairer) listBuckets(n uuid.UUID, differ *[32]byte) {
	for b := range 256 {
		if differ[b/8]&(1<<(b%8)) != 0 {
			rp.buckets = append(rp.buckets, transport.BucketQuery{Node: n, Bucket: byte(b)})
		}
	}
}

// childSketch builds the sketch of our children of n in the nb buckets set
// in differ, sized from the number of children that likely differ; ok is
// false when listing the buckets costs less.
func (rp *repairer) childSketch(n uuid.UUID, differ *[32]byte, nb int) (transport.ChildSketchQuery, bool, error) {
	var kids []store.ChildDigest
	err := rp.s.r.st.ChildDigests(n, -1, uuid.Nil, func(c store.ChildDigest) error {
		if differ[c.ID[0]/8]&(1<<(c.ID[0]%8)) != 0 {
			kids = append(kids, c)
		}
		return nil
	})
	if err != nil {
		return transport.ChildSketchQuery{}, false, err
	}
	cells := childSketchCells(nb, len(kids))
	listCost := childRecordLen * len(kids)
	if cells > crdt.MaxSketchCells || cells*crdt.SketchCellLen(childKeyLen) >= listCost {
		return transport.ChildSketchQuery{}, false, nil
	}
	sk := crdt.NewSketch(cells, childKeyLen)
	byTag := make(map[uint64]store.ChildDigest, len(kids))
	for _, c := range kids {
		k := childKey(&c)
		sk.Add(k)
		byTag[childTag(c.ID)] = c
	}
	if rp.children == nil {
		rp.children = make(map[uuid.UUID]map[uint64]store.ChildDigest)
	}
	rp.children[n] = byTag
	return transport.ChildSketchQuery{Node: n, Buckets: *differ, Sketch: sk.AppendBinary(nil)}, true, nil
}

// childDiff acts on the children of a node that a child sketch showed
// differ, and adds those whose points the reply sketched to agg.
func (rp *repairer) childDiff(d *transport.ChildDiff, agg []aggNode) ([]aggNode, error) {
	byTag := rp.children[d.Node]
	byID := make(map[uuid.UUID]store.ChildDigest, len(d.Children))
	for _, rc := range d.Children {
		if c, ok := byTag[childTag(rc.ID)]; ok && c.ID == rc.ID {
			byID[rc.ID] = c
		}
	}
	for _, rc := range d.Children {
		c, ok := byID[rc.ID]
		if !ok { // a child only the remote has
			rp.edges = append(rp.edges, transport.EdgeQuery{Child: rc.ID, Parent: d.Node})
			if err := rp.descend(rc.ID, 0); err != nil {
				return agg, err
			}
			continue
		}
		if rc.Edge != transport.Short(c.Edge) {
			if err := rp.exchangeEdge(c.ID, d.Node); err != nil {
				return agg, err
			}
		}
		if rc.Aggregated {
			agg = append(agg, aggNode{id: c.ID})
		}
		if rc.Below != transport.Short(c.Sub.Sub(c.Own)) || (!rc.Aggregated && rc.Own != transport.Short(c.Own)) {
			if err := rp.descend(c.ID, 0); err != nil {
				return agg, err
			}
		} else {
			rp.visit(c.ID)
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
// points or what is below it differ is compared.
func (rp *repairer) compareChildren(n uuid.UUID, bucket int, remote []transport.ChildSum) error {
	rem := make(map[uuid.UUID]transport.ChildSum, len(remote))
	for _, c := range remote {
		rem[c.ID] = c
	}
	err := rp.s.r.st.ChildDigests(n, bucket, uuid.Nil, func(c store.ChildDigest) error {
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
	mine, err := sketchPoints(rp.s.r.st, ids, theirs.Cells(), true)
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
			if ours, ok, err = mine.points(rp.s.r.st, ids, plus); err != nil {
				return err
			}
		}
	}
	if !ok {
		for _, a := range agg {
			switch next := max(a.density, 1) * 4; {
			case mine.big[a.id] || next > transport.MaxDensity:
				rp.list = append(rp.list, transport.ListQuery{Node: a.id})
			default:
				if err := rp.recompare(a.id, next); err != nil {
					return err
				}
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
)

// aggregateCells returns the cells an aggregated node of density d gets.
func aggregateCells(d byte) int { return cellsPerNode * int(max(d, 1)) }

// childSketchCells sizes a child sketch for nb differing buckets of a node
// whose children there number kids on our side: the expected number of
// differing children, inverted from the number of differing buckets
// (children fall into buckets uniformly), or all of them when every
// bucket differs.
func childSketchCells(nb, kids int) int {
	c := float64(kids)
	if nb < bucketsPerNode {
		c = math.Log(1-float64(nb)/bucketsPerNode) / math.Log(1-1.0/bucketsPerNode)
	}
	return int(math.Ceil(childCellsPer*c)) + childSketchMin
}

// childTag is a child's 64-bit tag in a child sketch: Mix64(Mix64(first
// 8 bytes) XOR last 8 bytes), big-endian words (crdt.NodeTag is its high
// 32 bits).
func childTag(id uuid.UUID) uint64 {
	return crdt.Mix64(crdt.Mix64(binary.BigEndian.Uint64(id[:8])) ^ binary.BigEndian.Uint64(id[8:]))
}

// childKey is a child's key in a child sketch: its tag, then a mix of the
// short digests of its edge, own points and what is below it, and whether
// the edge is active. A child whose digests differ on the two sides
// decodes as two keys with one tag.
func childKey(c *store.ChildDigest) crdt.SketchKey {
	cs := childSum(c)
	act := uint64(0)
	if cs.Active {
		act = 1
	}
	st := crdt.Mix64(binary.BigEndian.Uint64(cs.Below[:]) ^ act)
	st = crdt.Mix64(binary.BigEndian.Uint64(cs.Own[:]) ^ st)
	st = crdt.Mix64(binary.BigEndian.Uint64(cs.Edge[:]) ^ st)
	var k crdt.SketchKey
	binary.BigEndian.PutUint64(k[:8], childTag(c.ID))
	binary.BigEndian.PutUint64(k[8:], st)
	return k
}

// childSum is a child's ChildSum: its digests, shortened.
func childSum(c *store.ChildDigest) transport.ChildSum {
	return transport.ChildSum{ID: c.ID, Active: c.Active, Edge: transport.Short(c.Edge),
		Own: transport.Short(c.Own), Below: transport.Short(c.Sub.Sub(c.Own))}
}

// sketched is a sketch of some nodes' points, and with keep the
// registers behind its keys.
type sketched struct {
	sk  *crdt.Sketch
	big map[uuid.UUID]bool // nodes left out: more than maxAggPoints points
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
// nodes. It reads versions, not points, and allocates nothing per point
// but, with keep, its key and register reference.
func sketchPoints(st *store.Store, nodes []uuid.UUID, cells int, keep bool) (*sketched, error) {
	out := &sketched{sk: crdt.NewSketch(cells, crdt.PointKeyLen)}
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
	err := st.ScanNodesVersions(nodes, func(i int, v *store.Version) error {
		if i != cur {
			flush()
			cur, tag = i, crdt.NodeTag(v.Node)
		}
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

// points returns our points behind keys, in order; found is false when a
// key is not one this sketch added.
func (s *sketched) points(st *store.Store, nodes []uuid.UUID, keys []crdt.SketchKey) (pts []crdt.Point, found bool, err error) {
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
		p, ok, err := st.Get(crdt.Register{Node: nodes[ref.node], Type: string(tk[:sep]), Key: string(tk[sep+1:])})
		if err != nil {
			return nil, false, err
		}
		if ok { // (gone meanwhile: nothing to send)
			pts = append(pts, p)
		}
	}
	return pts, true, nil
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
		m, err := s.conn.Request(rp.pushTo, b, s.r.cfg.AckTimeout)
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

// answerRepair answers a repair request within scope sc: nodes outside it
// are answered as unknown, so a dialer learns nothing beyond its scope.
func answerRepair(st *store.Store, sc *scope, req *transport.RepairRequest) (*transport.RepairReply, error) {
	root := sc.root
	if sc.full() {
		root = st.Root()
	}
	if req.Root != root {
		return nil, fmt.Errorf("repair: scope root %v, this session's is %v", req.Root, root)
	}
	a := &answer{st: st, sc: sc, reply: &transport.RepairReply{}, size: 64}
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
		l, err := listNode(st, in, q, &a.size)
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
			err := st.ChildDigests(q.Node, int(q.Bucket), uuid.Nil, func(c store.ChildDigest) error {
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
		if err := pointsByHash(st, q, a.addPoint); err != nil {
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
		err := st.ScanNodesPoints([]uuid.UUID{q.Node}, func(_ int, p *crdt.Point) error {
			if want[uint32(crdt.RegisterHash(p.Type, p.Key)>>32)] {
				return a.addPoint(p)
			}
			return nil
		})
		if err != nil {
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
			if p.Parent == q.Parent {
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
	reply *transport.RepairReply
	size  int // the reply's encoded size, estimated
	pts   []crdt.Point
	// agg are the nodes whose points go into the reply's Aggregate, with
	// where each is flagged, and aggCells the cells reserved for them.
	agg      []aggNode
	aggFlags []*bool
	aggCells int
}

func (a *answer) full() bool { return a.size >= repairReplyBudget }

func (a *answer) addPoint(p *crdt.Point) error {
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
			if d, err = a.st.NodeDigest(q.Node); err != nil {
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
		a.reply.Summaries = append(a.reply.Summaries, sm)
		if sm.Aggregated {
			s := &a.reply.Summaries[len(a.reply.Summaries)-1]
			a.agg = append(a.agg, aggNode{id: q.Node, density: q.Density})
			a.aggFlags = append(a.aggFlags, &s.Aggregated)
		}
	}
	// Flags point into Summaries: it must not grow from here on.
	a.reply.Summaries = slices.Clip(a.reply.Summaries)
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
	l, err := listNode(a.st, true, transport.ListQuery{Node: n}, &a.size)
	a.reply.Listings = append(a.reply.Listings, l)
	return err
}

// children puts node sm.Node's children, or its child buckets when it has
// many, in sm.
func (a *answer) children(sm *transport.Summary) error {
	n := 0
	err := a.st.ChildDigests(sm.Node, -1, uuid.Nil, func(c store.ChildDigest) error {
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
	err = a.st.Buckets(sm.Node, func(b byte, d crdt.Digest) error {
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
	for _, q := range qs {
		if a.full() || a.aggCells+aggregateSlack+aggregateCells(0) > crdt.MaxSketchCells {
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
		err = a.st.ChildDigests(q.Node, -1, uuid.Nil, func(c store.ChildDigest) error {
			if q.Buckets[c.ID[0]/8]&(1<<(c.ID[0]%8)) != 0 {
				mine.Add(childKey(&c))
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
		theirTags := make(map[uint64]bool, len(minus))
		for _, k := range minus {
			theirTags[binary.BigEndian.Uint64(k[:8])] = true
		}
		ours := make([]store.ChildDigest, 0, len(plus))
		for _, k := range plus {
			c, found := byTag[binary.BigEndian.Uint64(k[:8])]
			if !found {
				ours = nil // not a key of ours: a hostile or colliding sketch
				ok = false
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
			cs := childSum(c)
			// A child both hold: its points go into the Aggregate (those
			// alike cancel), while there is room.
			cs.Aggregated = theirTags[tag] && !c.Own.IsZero() && a.aggregateRoom(0)
			delete(theirTags, tag)
			d.Children = append(d.Children, cs)
			a.size += childRecordLen
		}
		for tag := range theirTags {
			d.Missing = append(d.Missing, tag)
			a.size += 8
		}
		slices.Sort(d.Missing)
		a.reply.ChildDiffs = append(a.reply.ChildDiffs, d)
	}
	// Flags point into ChildDiffs' children: set them up only now.
	for i := range a.reply.ChildDiffs {
		cs := a.reply.ChildDiffs[i].Children
		for j := range cs {
			if cs[j].Aggregated {
				a.agg = append(a.agg, aggNode{id: cs[j].ID})
				a.aggFlags = append(a.aggFlags, &cs[j].Aggregated)
			}
		}
	}
	return nil
}

// aggregate builds the reply's Aggregate over the nodes in a.agg. A node
// with too many points to sketch is left out (its flag cleared), and
// listed when it was asked by a compare.
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
	sk, err := sketchPoints(a.st, ids, cells, false)
	if err != nil {
		return err
	}
	for i, n := range a.agg {
		if sk.big[n.id] {
			*a.aggFlags[i] = false
			l, err := listNode(a.st, true, transport.ListQuery{Node: n.id}, &a.size)
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
// is out of scope) while *size stays under the reply budget; a listing cut
// short says More, with Next the cursor to continue from (nil: from the
// start, when not even one entry fitted).
func listNode(st *store.Store, in bool, q transport.ListQuery, size *int) (transport.Listing, error) {
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
	req, err := transport.DecodeRepairRequest(m.Data, 0)
	if err != nil {
		s.respond(m, transport.EncodeError(err))
		return
	}
	// A fresh scope: its memo must see the tree as it is now, and the
	// sender goroutine owns the session's. It is the subtree as it is or
	// ever was (over deleted edges too), like what the session accepts:
	// differences below a deleted node can change which edges are active
	// elsewhere, and both sides must be able to compare them.
	sc := newScope(a.r.st, uuid.Nil)
	if !s.scope.full() {
		sc = newHistoricScope(a.r.st, s.scope.root)
	}
	reply, err := answerRepair(a.r.st, sc, req)
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

// pointsByHash calls fn for the node points of q.Node whose register
// hashes are in q.Hashes.
func pointsByHash(st *store.Store, q transport.FetchQuery, fn func(*crdt.Point) error) error {
	want := make(map[uint64]bool, len(q.Hashes))
	for _, h := range q.Hashes {
		want[h] = true
	}
	return st.ScanNodesPoints([]uuid.UUID{q.Node}, func(_ int, p *crdt.Point) error {
		if want[crdt.RegisterHash(p.Type, p.Key)] {
			return fn(p)
		}
		return nil
	})
}
