package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
	visited map[uuid.UUID]bool
	send    []crdt.Point
	sendLen int
	stats   RepairStats

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
	for len(rp.compare)+len(rp.list)+len(rp.buckets)+len(rp.fetch)+len(rp.edges) > 0 {
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
			rp.stats.Equal = len(reply.Summaries) == 0 && reply.Answered[0] == 1
			first = false
		}
		rp.requeue(req, reply.Answered)
		if err := rp.process(reply); err != nil {
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
	// Compares carry sketches: bound the request's size, not only the
	// number of queries, so it stays far below the message limit.
	n, size := 0, 0
	for n < len(rp.compare) && n < maxQueries && size < repairReplyBudget {
		size += 64 + len(rp.compare[n].Sketch)
		n++
	}
	req.Compare, rp.compare = rp.compare[:n:n], rp.compare[n:]
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

// requeue puts back the queries the reply did not get to.
func (rp *repairer) requeue(req *transport.RepairRequest, answered [5]int) {
	rp.compare = append(req.Compare[min(answered[0], len(req.Compare)):], rp.compare...)
	rp.list = append(req.List[min(answered[1], len(req.List)):], rp.list...)
	rp.buckets = append(req.Buckets[min(answered[2], len(req.Buckets)):], rp.buckets...)
	rp.fetch = append(req.Fetch[min(answered[3], len(req.Fetch)):], rp.fetch...)
	rp.edges = append(req.Edges[min(answered[4], len(req.Edges)):], rp.edges...)
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
	if reply.Answered == [5]int{} && len(req.Compare)+len(req.List)+len(req.Buckets)+len(req.Fetch)+len(req.Edges) > 0 {
		return nil, errors.New("repair: the remote answered nothing")
	}
	return reply, nil
}

// process compares a reply with the local store and queues the next step.
func (rp *repairer) process(reply *transport.RepairReply) error {
	for i := range reply.Summaries {
		sm := &reply.Summaries[i]
		// When the own digests differ the responder attached the node's
		// listing to this reply (processed below).
		if sm.Many {
			if err := rp.compareBuckets(sm.Node, sm.Buckets); err != nil {
				return err
			}
			continue
		}
		if err := rp.compareChildren(sm.Node, -1, sm.Children); err != nil {
			return err
		}
	}
	for i := range reply.Buckets {
		b := &reply.Buckets[i]
		if err := rp.compareChildren(b.Node, int(b.Bucket), b.Children); err != nil {
			return err
		}
	}
	for i := range reply.Listings {
		if err := rp.compareListing(&reply.Listings[i]); err != nil {
			return err
		}
	}
	for _, w := range reply.Want {
		if err := pointsByHash(rp.s.r.st, w, rp.queueSend); err != nil {
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
	return nil
}

// compareBuckets queues the child buckets of n that differ.
func (rp *repairer) compareBuckets(n uuid.UUID, remote []transport.BucketSum) error {
	local := make(map[byte]transport.ShortDigest)
	if err := rp.s.r.st.Buckets(n, func(b byte, d crdt.Digest) error {
		local[b] = transport.Short(d)
		return nil
	}); err != nil {
		return err
	}
	for _, b := range remote {
		if d, ok := local[b.Bucket]; !ok || d != b.Digest {
			rp.buckets = append(rp.buckets, transport.BucketQuery{Node: n, Bucket: b.Bucket})
		}
		delete(local, b.Bucket)
	}
	for b := range local { // buckets only we have
		rp.buckets = append(rp.buckets, transport.BucketQuery{Node: n, Bucket: b})
	}
	return nil
}

// compareChildren compares the remote's children of n (all, or one
// bucket) with ours: a differing edge is exchanged, a differing subtree
// descended into.
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
		if !ok || rc.Sub != transport.Short(c.Sub) {
			return rp.descend(c.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, rc := range rem { // children only the remote has
		rp.edges = append(rp.edges, transport.EdgeQuery{Child: rc.ID, Parent: n})
		// (we hold none of its edge points to send)
		if err := rp.descend(rc.ID); err != nil {
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

func (rp *repairer) descend(n uuid.UUID) error {
	if rp.visited[n] {
		return nil
	}
	rp.visited[n] = true
	d, err := rp.s.r.st.NodeDigest(n)
	if err != nil {
		return err
	}
	q := transport.NodeSub{Node: n, Sub: d.Sub, Own: d.Own}
	if !d.Own.IsZero() {
		sk, _, err := sketchNode(rp.s.r.st, n, false)
		if err != nil {
			return err
		}
		if sk != nil {
			q.Sketch = sk.AppendBinary(nil)
		}
	}
	rp.compare = append(rp.compare, q)
	return nil
}

// Sketches of a node's points.
const (
	sketchCells     = 9    // finds up to about three differing point versions
	maxSketchPoints = 4096 // a node with more is listed instead
)

// sketchNode returns the sketch of node n's points, and with keep the
// points by key; nil when n has more than maxSketchPoints.
func sketchNode(st *store.Store, n uuid.UUID, keep bool) (*crdt.Sketch, map[[16]byte]crdt.Point, error) {
	sk := crdt.NewSketch(sketchCells)
	var pts map[[16]byte]crdt.Point
	if keep {
		pts = make(map[[16]byte]crdt.Point)
	}
	count := 0
	err := st.ScanNode(n, func(p *crdt.Point) error {
		if p.IsEdge() {
			return store.ErrStop
		}
		if count++; count > maxSketchPoints {
			return store.ErrStop
		}
		k := crdt.PointKey(p)
		sk.Add(k)
		if keep {
			pts[k] = *p
		}
		return nil
	})
	if err != nil || count > maxSketchPoints {
		return nil, nil, err
	}
	return sk, pts, nil
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
	reply := &transport.RepairReply{}
	size := 64
	var pts []crdt.Point
	full := func() bool { return size >= repairReplyBudget }
	for _, q := range req.Compare {
		if full() {
			break
		}
		in, err := sc.containsNode(q.Node)
		if err != nil {
			return nil, err
		}
		var d store.Digests
		if in {
			if d, err = st.NodeDigest(q.Node); err != nil {
				return nil, err
			}
		}
		reply.Answered[0]++
		if d.Sub == q.Sub {
			continue
		}
		sm := transport.Summary{Node: q.Node, Own: d.Own}
		size += 40
		if d.Own != q.Own {
			done := false
			if in && len(q.Sketch) > 0 {
				var err error
				if done, err = answerSketch(st, q, reply, &pts, &size); err != nil {
					return nil, err
				}
			}
			if !done {
				l, err := listNode(st, in, transport.ListQuery{Node: q.Node}, &size)
				if err != nil {
					return nil, err
				}
				reply.Listings = append(reply.Listings, l)
			}
		}
		if in {
			n := 0
			err := st.ChildDigests(q.Node, -1, uuid.Nil, func(c store.ChildDigest) error {
				if n++; n > maxListedChildren {
					return store.ErrStop
				}
				sm.Children = append(sm.Children, transport.ChildSum{ID: c.ID, Active: c.Active,
					Edge: transport.Short(c.Edge), Sub: transport.Short(c.Sub)})
				return nil
			})
			if err != nil {
				return nil, err
			}
			if n > maxListedChildren {
				sm.Many, sm.Children = true, nil
				if err := st.Buckets(q.Node, func(b byte, d crdt.Digest) error {
					sm.Buckets = append(sm.Buckets, transport.BucketSum{Bucket: b, Digest: transport.Short(d)})
					return nil
				}); err != nil {
					return nil, err
				}
				size += 9 * len(sm.Buckets)
			} else {
				size += 33 * len(sm.Children)
			}
		}
		reply.Summaries = append(reply.Summaries, sm)
	}
	for _, q := range req.List {
		if full() {
			break
		}
		reply.Answered[1]++
		in, err := sc.containsNode(q.Node)
		if err != nil {
			return nil, err
		}
		l, err := listNode(st, in, q, &size)
		if err != nil {
			return nil, err
		}
		reply.Listings = append(reply.Listings, l)
	}
	for _, q := range req.Buckets {
		if full() {
			break
		}
		reply.Answered[2]++
		bc := transport.BucketChildren{Node: q.Node, Bucket: q.Bucket}
		in, err := sc.containsNode(q.Node)
		if err != nil {
			return nil, err
		}
		if in {
			err := st.ChildDigests(q.Node, int(q.Bucket), uuid.Nil, func(c store.ChildDigest) error {
				bc.Children = append(bc.Children, transport.ChildSum{ID: c.ID, Active: c.Active,
					Edge: transport.Short(c.Edge), Sub: transport.Short(c.Sub)})
				size += 33
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		reply.Buckets = append(reply.Buckets, bc)
	}
	for _, q := range req.Fetch {
		if full() {
			break
		}
		reply.Answered[3]++
		in, err := sc.containsNode(q.Node)
		if err != nil {
			return nil, err
		}
		if !in {
			continue
		}
		err = pointsByHash(st, q, func(p *crdt.Point) error {
			pts = append(pts, *p)
			size += pointCost(p) + 8
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for _, q := range req.Edges {
		if full() {
			break
		}
		reply.Answered[4]++
		in, err := sc.containsNode(q.Parent)
		if err != nil {
			return nil, err
		}
		if !in {
			continue
		}
		err = st.ScanNode(q.Child, func(p *crdt.Point) error {
			if p.Parent == q.Parent {
				pts = append(pts, *p)
				size += pointCost(p) + 8
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(pts) > 0 {
		reply.Points = crdt.AppendBatch(nil, pts)
	}
	return reply, nil
}

// pointsByHash calls fn for the node points of q.Node whose register
// hashes are in q.Hashes.
func pointsByHash(st *store.Store, q transport.FetchQuery, fn func(*crdt.Point) error) error {
	want := make(map[uint64]bool, len(q.Hashes))
	for _, h := range q.Hashes {
		want[h] = true
	}
	return st.ScanNode(q.Node, func(p *crdt.Point) error {
		if p.IsEdge() {
			return store.ErrStop // edge points follow the node points
		}
		if want[crdt.RegisterHash(p.Type, p.Key)] {
			return fn(p)
		}
		return nil
	})
}

// answerSketch subtracts the asker's sketch of node q.Node from ours: when
// the differences decode, our versions go into pts and the asker's are
// asked for in reply.Want. It reports false when the sketch did not
// decode (too many differences, or a node too big to sketch): the caller
// falls back to a listing.
func answerSketch(st *store.Store, q transport.NodeSub, reply *transport.RepairReply, pts *[]crdt.Point, size *int) (bool, error) {
	theirs, err := crdt.DecodeSketch(q.Sketch)
	if err != nil {
		return false, fmt.Errorf("repair sketch of %v: %w", q.Node, err)
	}
	mine, byKey, err := sketchNode(st, q.Node, true)
	if err != nil || mine == nil || mine.Cells() != theirs.Cells() {
		return false, err
	}
	if err := mine.Subtract(theirs); err != nil {
		return false, nil
	}
	plus, minus, ok := mine.Decode()
	if !ok {
		return false, nil
	}
	// A register in both lists has a version on each side: only the later
	// one needs to cross.
	theirTime := make(map[uint64]uint64, len(minus))
	for _, k := range minus {
		theirTime[binary.BigEndian.Uint64(k[:8])] = binary.BigEndian.Uint64(k[8:])
	}
	for _, k := range plus {
		p, found := byKey[k]
		if !found {
			return false, nil // not a key of ours: a collision, list instead
		}
		h := binary.BigEndian.Uint64(k[:8])
		if t, both := theirTime[h]; both && t > uint64(p.Time) {
			continue // theirs is later: ask for it below
		}
		*pts = append(*pts, p)
		*size += pointCost(&p) + 8
		if t, both := theirTime[h]; both && t < uint64(p.Time) {
			delete(theirTime, h) // ours is later: theirs need not come
		}
	}
	if len(theirTime) > 0 {
		w := transport.FetchQuery{Node: q.Node}
		for h := range theirTime {
			w.Hashes = append(w.Hashes, h)
		}
		slices.Sort(w.Hashes)
		reply.Want = append(reply.Want, w)
		*size += 24 + 8*len(w.Hashes)
	}
	return true, nil
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
