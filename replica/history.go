package replica

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// History rounds (transport.HistRequest) bring the registers' histories
// of a link's scope to the same sets on both sides. Pushes carry the
// points, and a receiver records each in its register's history; a
// round carries what pushes did not: the values a register took and lost
// before they could be pushed (a day offline), a batch one side lost.
// The dialer runs a round after each repair round that had traffic since
// the last, and every Config.HistoryFullInterval over all windows.
//
// A round compares, from the link's history mark on: the sums of each
// window of the scope, then the sums of each node in a window that
// differs, then sends its samples of a node and window that differs and
// fetches the acceptor's when the acceptor's sums still differ after.
// Both sides see the scope the same way: the subtree of the dialer's root
// over active edges for an edge's link, everything for a peer's.
const (
	// histPushBytes bounds the blocks of one push or fetch reply, about
	// (one register's may exceed it).
	histPushBytes = 512 << 10
	// histChunk bounds the samples of one HistReg.
	histChunk = 20_000
	// histMaxWindows bounds the windows one request compares.
	histMaxWindows = 4096
	// histMaxNodes bounds the node sums of one HistNodes message (about
	// 40 bytes each): past it the dialer splits the node range
	// (Config.histMaxNodes lowers it in tests).
	histMaxNodes = 8192
	// histReplyBudget is the reply size a request's timeout allows for.
	histReplyBudget = 1 << 20
)

// histScope is what one side of a link compares: the subtree of root over
// active edges, or everything (root uuid.Nil).
type histScope struct {
	st   *store.Store
	root uuid.UUID
}

func (h histScope) nodes() ([]uuid.UUID, error) {
	var out []uuid.UUID
	err := h.st.Descendants(h.root, func(n uuid.UUID) error {
		out = append(out, n)
		return nil
	})
	return out, err
}

// windowSums returns the scope's sum in each window from from through
// to that holds history, in window order.
func (h histScope) windowSums(from, to int64) ([]store.WindowSum, error) {
	if h.root == uuid.Nil {
		return h.st.HistoryWindows(from, to)
	}
	nodes, err := h.nodes()
	if err != nil {
		return nil, err
	}
	acc := map[int64]*store.WindowSum{}
	for _, n := range nodes {
		ws, err := h.st.HistoryNodeSums(n, from, to)
		if err != nil {
			return nil, err
		}
		for _, w := range ws {
			a := acc[w.Window]
			if a == nil {
				a = &store.WindowSum{Window: w.Window}
				acc[w.Window] = a
			}
			a.Digest, a.Count = a.Digest.Add(w.Digest), a.Count+w.Count
		}
	}
	out := make([]store.WindowSum, 0, len(acc))
	for _, w := range slices.Sorted(maps.Keys(acc)) {
		out = append(out, *acc[w])
	}
	return out, nil
}

// groupSums adds sums sorted by window into groups of per windows, each
// named by its group (window/per).
func groupSums(ws []store.WindowSum, per int64) []transport.HistSum {
	per = max(per, 1)
	var out []transport.HistSum
	var cur store.WindowSum
	flush := func() {
		if cur.Count > 0 || !cur.Digest.IsZero() {
			out = append(out, transport.HistSum{Window: cur.Window, Digest: transport.Short(cur.Digest), Count: cur.Count})
		}
	}
	for i, w := range ws {
		g := w.Window / per
		if i == 0 || g != cur.Window {
			if i > 0 {
				flush()
			}
			cur = store.WindowSum{Window: g}
		}
		cur.Digest, cur.Count = cur.Digest.Add(w.Digest), cur.Count+w.Count
	}
	if len(ws) > 0 {
		flush()
	}
	return out
}

// nodeSums returns the sum of each node of the scope with history in
// window w, in node order.
func (h histScope) nodeSums(w int64) ([]transport.HistSum, error) {
	var ws []store.WindowSum
	if h.root == uuid.Nil {
		var err error
		if ws, err = h.st.HistoryWindowSums(w); err != nil {
			return nil, err
		}
	} else {
		nodes, err := h.nodes()
		if err != nil {
			return nil, err
		}
		for _, n := range nodes {
			s, err := h.st.HistoryNodeSums(n, w, w)
			if err != nil {
				return nil, err
			}
			ws = append(ws, s...)
		}
		slices.SortFunc(ws, func(a, b store.WindowSum) int { return slices.Compare(a.Node[:], b.Node[:]) })
	}
	out := make([]transport.HistSum, len(ws))
	for i, s := range ws {
		out[i] = transport.HistSum{Node: s.Node, Window: w, Digest: transport.Short(s.Digest), Count: s.Count}
	}
	return out, nil
}

// histRegs returns node's samples in window w as blocks, skipping its
// first skip registers.
func histRegs(st *store.Store, node uuid.UUID, w int64, skip int) ([]transport.HistReg, []int, error) {
	regs, err := st.HistoryOfNode(node, w)
	if err != nil {
		return nil, nil, err
	}
	var out []transport.HistReg
	var of []int // the register index of each block
	for i := skip; i < len(regs); i++ {
		r := &regs[i]
		for ss := r.Samples; len(ss) > 0; {
			n := min(len(ss), histChunk)
			b, err := history.Encode(ss[:n])
			if err != nil {
				return nil, nil, err
			}
			out = append(out, transport.HistReg{Node: r.Reg.Node, Type: r.Reg.Type, Key: r.Reg.Key, Block: b})
			of = append(of, i)
			ss = ss[n:]
		}
	}
	return out, of, nil
}

// decodeHistRegs turns received blocks into samples as points, for the
// checks every received point passes.
func decodeHistRegs(regs []transport.HistReg) ([]crdt.Point, error) {
	var pts []crdt.Point
	for _, r := range regs {
		ss, err := history.Decode(r.Block)
		if err != nil {
			return nil, fmt.Errorf("history of %v %s.%s: %w", r.Node, r.Type, r.Key, err)
		}
		reg := crdt.Register{Node: r.Node, Type: r.Type, Key: r.Key}
		for i := range ss {
			pts = append(pts, history.Point(reg, &ss[i]))
		}
	}
	return pts, nil
}

// mergeHistoryPoints merges received samples, given as points, into the
// histories after the clock check every received point passes; it
// returns how many were new and how many were refused, with the first
// reason.
func (r *Replica) mergeHistoryPoints(pts []crdt.Point) (added uint64, rejected int, reason string, err error) {
	byReg := map[crdt.Register]int{}
	var regs []store.RegisterHistory
	for i := range pts {
		p := &pts[i]
		if err := r.clock.Check(p.Time); err != nil {
			if rejected == 0 {
				reason = fmt.Sprintf("history of %v/%s/%s: %v", p.Node, p.Type, p.Key, err)
			}
			rejected++
			continue
		}
		if !store.HistoryRecorded(p) {
			if rejected == 0 {
				reason = fmt.Sprintf("history of %v/%s/%s: %s points have no history", p.Node, p.Type, p.Key, p.Type)
			}
			rejected++
			continue
		}
		k := p.Register()
		j, ok := byReg[k]
		if !ok {
			j = len(regs)
			byReg[k] = j
			regs = append(regs, store.RegisterHistory{Reg: k})
		}
		regs[j].Samples = append(regs[j].Samples, history.FromPoint(p))
	}
	if len(regs) == 0 {
		return 0, rejected, reason, nil
	}
	added, err = r.st.MergeHistory(regs)
	if err == nil {
		r.metrics.historyMerged(added)
	}
	return added, rejected, reason, err
}

// handleHistory answers a history round's request on an edge's or a
// peer's session.
func (a *acceptor) handleHistory(as *acceptedSession, m *nats.Msg) {
	s := as.s
	var req transport.HistRequest
	if err := transport.Decode(m.Data, 0, &req); err != nil {
		s.respond(m, transport.EncodeError(err))
		return
	}
	reply, err := a.answerHistory(s, &req)
	if err != nil {
		s.respond(m, transport.EncodeError(err))
		return
	}
	s.respondMsg(m, reply)
}

// Refusals of history requests.
var (
	errHistoryRound = errors.New("history rounds are for edges' and peers' links")
	errHistInvalid  = errors.New("invalid history request")
	errHistScope    = errors.New("history request outside the link's scope")
)

func (a *acceptor) answerHistory(s *session, req *transport.HistRequest) (*transport.HistReply, error) {
	if s.user != nil {
		return nil, errHistoryRound
	}
	st := a.r.st
	hs := histScope{st: st}
	if !s.scope.full() {
		hs.root = s.scope.root
	}
	switch req.Kind {
	case transport.HistWindows:
		per := max(req.Per, 1)
		if req.From < 0 || req.To < req.From || (req.To-req.From)/per >= histMaxWindows {
			return nil, fmt.Errorf("%w: history windows %d to %d by %d (at most %d groups)", errHistInvalid, req.From, req.To, per, histMaxWindows)
		}
		since, err := st.Mark(markTrimmed)
		if err != nil {
			return nil, err
		}
		ws, err := hs.windowSums(req.From, req.To)
		return &transport.HistReply{Sums: groupSums(ws, per), Since: int64(since)}, err
	case transport.HistNodes:
		lo, hi, err := nodeRange(req)
		if err != nil {
			return nil, err
		}
		sums, err := hs.nodeSums(req.Window)
		if err != nil {
			return nil, err
		}
		sums = inRange(sums, lo, hi)
		if len(sums) > a.r.cfg.histMaxNodes {
			return &transport.HistReply{More: true}, nil // ask for a narrower range
		}
		return &transport.HistReply{Sums: sums}, nil
	case transport.HistPush:
		pts, err := decodeHistRegs(req.Regs)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errHistInvalid, err)
		}
		refused, why := 0, ""
		if s.ingress != nil {
			if pts, refused, why, err = s.ingress.keep(pts); err != nil {
				return nil, err
			}
		}
		added, rejected, reason, err := a.r.mergeHistoryPoints(pts)
		if err != nil {
			return nil, err
		}
		if rejected += refused; rejected > 0 {
			if reason == "" {
				reason = why
			}
			s.rejected.Add(uint64(rejected))
			if ok, held := a.r.logLimit.allow("history rejected "+s.remote.String(), time.Minute); ok {
				a.r.log.Warn("history samples rejected", "remote", s.remote, "count", rejected, "first", reason, "earlier_not_logged", held)
			}
		}
		// The sums after the merge, of what the push touched.
		type nodeWindow struct {
			n uuid.UUID
			w int64
		}
		touched := map[nodeWindow]bool{}
		var sums []transport.HistSum
		for i := range pts {
			w := history.WindowOf(pts[i].Time)
			n := pts[i].Node
			if touched[nodeWindow{n, w}] {
				continue
			}
			touched[nodeWindow{n, w}] = true
			ws, err := st.HistoryNodeSums(n, w, w)
			if err != nil {
				return nil, err
			}
			sum := transport.HistSum{Node: n, Window: w}
			if len(ws) == 1 {
				sum.Digest, sum.Count = transport.Short(ws[0].Digest), ws[0].Count
			}
			sums = append(sums, sum)
		}
		return &transport.HistReply{Added: added, Sums: sums}, nil
	case transport.HistFetch:
		var dev *scope
		if !s.scope.full() {
			dev = newDeviceScope(st, s.scope.root)
		}
		reply := &transport.HistReply{}
		size := 0
		for _, f := range req.Fetch {
			if dev != nil {
				ok, err := dev.containsNode(f.Node)
				if err != nil {
					return nil, err
				}
				if !ok {
					return nil, fmt.Errorf("%w: node %v is outside the link's scope", errHistScope, f.Node)
				}
			}
			regs, of, err := histRegs(st, f.Node, f.Window, int(min(f.Count, 1<<20)))
			if err != nil {
				return nil, err
			}
			sent := int(f.Count)
			for i := 0; i < len(regs); {
				// A register goes whole: all its chunks.
				j := i
				for j < len(regs) && of[j] == of[i] {
					size += len(regs[j].Block) + 64
					j++
				}
				reply.Regs = append(reply.Regs, regs[i:j]...)
				sent = of[i] + 1
				i = j
				if size >= histPushBytes && i < len(regs) {
					reply.More = true
					reply.Sums = append(reply.Sums, transport.HistSum{Node: f.Node, Window: f.Window, Count: uint64(sent)})
					return reply, nil
				}
			}
			reply.Sums = append(reply.Sums, transport.HistSum{Node: f.Node, Window: f.Window, Count: uint64(sent)})
			if size >= histPushBytes {
				reply.More = len(reply.Sums) < len(req.Fetch)
				return reply, nil
			}
		}
		return reply, nil
	}
	return nil, fmt.Errorf("%w: history request kind %d", errHistInvalid, req.Kind)
}

// HistoryStats describes one history round.
type HistoryStats struct {
	RoundTrips int
	Windows    int // windows that differed
	Sent       uint64
	Fetched    uint64 // samples new to this side
	Took       time.Duration
}

// histSyncer runs a dialer's history rounds.
type histSyncer struct {
	s       *session
	subject string
	scope   histScope
	mark    string   // the first window the next round compares
	ack     *histAck // for an upstream: how far it acknowledged
	lastGen uint64   // the store's late-write count when the last round started
	since   int64    // no window before it is compared: either side dropped history there
	// fetchFrom: no window before it is fetched, the first this instance
	// keeps by its retention (a new edge does not download the cloud's
	// year to drop it a week later); it still sends older windows.
	fetchFrom int64
	last      time.Time // the last round's start
	lastAll   time.Time // the last round over every window
	lastTo    int64     // the last window the last round compared
	traffic   uint64    // the session's traffic at the last round
	off       bool      // the acceptor predates history rounds
}

// histSettle is how long after a window ends a round compares it: the
// pushes of its last samples have landed by then, so a live sensor's
// window is equal and costs one sum.
const histSettle = 2 * time.Minute

// closedWindow returns the last window that ended histSettle before now.
func (h *histSyncer) closedWindow() int64 {
	now := h.s.r.clock.Physical().Add(-histSettle)
	return history.WindowOf(crdt.NewTimestamp(now.UnixMilli(), 0)) - 1
}

func (d *dialLink) newHistSyncer(s *session, subject string) *histSyncer {
	hs := histScope{st: d.r.st}
	if d.role == transport.RoleEdge {
		hs.root = d.r.st.Root()
	}
	h := &histSyncer{s: s, subject: subject, scope: hs, mark: "hist:" + s.remote.String()}
	if d.role == transport.RoleEdge {
		h.ack = &d.histAck
	}
	return h
}

// due reports whether a round should run now.
//
// A session's first round compares up to the current window: it follows
// the resume, and an edge back from a day offline uploads its readings at
// once. Later rounds compare windows once they have closed (histSettle),
// so a link that streams readings runs about one round an hour and never
// compares a window its pushes are still filling; an idle link, with no
// point pushed either way since, runs only the round every
// Config.HistoryFullInterval.
func (h *histSyncer) due(now time.Time) bool {
	if h.off {
		return false
	}
	return h.last.IsZero() || now.Sub(h.lastAll) >= h.s.r.cfg.HistoryFullInterval ||
		h.closedWindow() > h.lastTo && h.s.traffic() != h.traffic ||
		h.s.r.st.LateHistoryGen() != h.lastGen
}

func (h *histSyncer) exchange(ctx context.Context, req *transport.HistRequest, st *HistoryStats) (*transport.HistReply, error) {
	b, err := transport.Encode(req)
	if err != nil {
		return nil, err
	}
	s := h.s
	s.bytesSent.Add(uint64(len(b)))
	// The session's end (a Bye, a failed push) cancels ctx: a request in
	// flight must not hold the link up until its timeout.
	rctx, cancel := context.WithTimeout(ctx, s.transferTimeout(len(b)+histReplyBudget))
	defer cancel()
	m, err := s.conn.RequestWithContext(rctx, h.subject, b)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	s.bytesRecv.Add(uint64(len(m.Data)))
	s.touch()
	st.RoundTrips++
	var reply transport.HistReply
	if err := transport.Decode(m.Data, 0, &reply); err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) && st.RoundTrips == 1 && req.Kind == transport.HistWindows && isUnknownType(re) {
			h.off = true
			return nil, nil
		}
		return nil, fmt.Errorf("history: %w", err)
	}
	return &reply, nil
}

// isUnknownType reports whether a remote error says it did not know the
// request's message type: an acceptor that predates history rounds.
func isUnknownType(re *transport.RemoteError) bool {
	return strings.Contains(re.Msg, transport.ErrUnknownType.Error())
}

// histAck is how far an upstream acknowledged this instance's history,
// kept by its dialLink across sessions (not across restarts: until a
// round succeeds after a restart, nothing counts as acknowledged).
type histAck struct {
	mu  sync.Mutex
	ok  bool
	w   int64  // every window through w matched
	gen uint64 // ... as of this many late writes (store.LateHistoryGen)
}

func (a *histAck) set(w int64, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ok, a.w, a.gen = true, w, gen
}

// before returns the first window the upstream may lack: 0 when nothing
// is known acknowledged.
func (a *histAck) before(st *store.Store) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ok {
		return 0
	}
	low := st.LateHistoryLow(a.gen)
	if low < 0 {
		return 0
	}
	return min(a.w+1, low)
}

// histLevels are the group sizes a round compares, in windows: 30 days,
// a day, a window. A round over a span descends from the largest group
// the span needs, so comparing a year costs a dozen sums when it is
// equal.
var histLevels = [...]int64{720, 24, 1}

// round runs one history round: from the link's mark, or over every
// window every Config.HistoryFullInterval.
func (h *histSyncer) round(ctx context.Context) (st HistoryStats, err error) {
	t0 := time.Now()
	defer func() { st.Took = time.Since(t0) }()
	first := h.last.IsZero()
	h.last, h.traffic = t0, h.s.traffic()
	r := h.s.r
	gen := r.st.LateHistoryGen()
	closed := h.closedWindow()
	now := history.WindowOf(crdt.NewTimestamp(r.clock.Physical().UnixMilli(), 0))
	to := closed
	// A session's first round compares every window, through the current
	// one: late writes are only remembered since the store opened
	// (store.LateHistoryLow). A round after late writes, or samples no
	// push carries, compares through the current window too.
	low := r.st.LateHistoryLow(h.lastGen)
	if first || low != math.MaxInt64 {
		to = now
	}
	from := int64(0)
	full := first || low < 0 || t0.Sub(h.lastAll) >= r.cfg.HistoryFullInterval
	if !full {
		m, err := r.st.Mark(h.mark)
		if err != nil {
			return st, err
		}
		from = min(int64(m), to, low)
	}
	trimmed, err := r.st.Mark(markTrimmed)
	if err != nil {
		return st, err
	}
	h.since = max(h.since, int64(trimmed))
	from = max(from, h.since)
	if h.fetchFrom, err = r.keepFrom(r.clock.Physical()); err != nil {
		return st, err
	}
	level := len(histLevels) - 1
	for level > 0 && (to+1-from)/histLevels[level] > 48 {
		level--
	}
	if err = h.compare(ctx, from, to, level, &st); err != nil || h.off {
		return st, err
	}
	if full {
		h.lastAll = t0
	}
	h.lastTo = max(h.lastTo, closed)
	h.lastGen = gen
	if h.ack != nil {
		// Every window through closed now matches the upstream's, as of
		// the late writes through gen.
		h.ack.set(closed, gen)
	}
	return st, r.st.SetMarks(map[string]uint64{h.mark: uint64(max(closed, 0))})
}

// compare compares windows from through to in groups of histLevels[level]
// windows, and descends into those that differ.
func (h *histSyncer) compare(ctx context.Context, from, to int64, level int, st *HistoryStats) error {
	per := histLevels[level]
	for lo := from / per * per; lo <= to; lo += histMaxWindows * per {
		hi := min(lo+histMaxWindows*per-1, to)
		ws, err := h.scope.windowSums(max(lo, from), hi)
		if err != nil {
			return err
		}
		mine := groupSums(ws, per)
		reply, err := h.exchange(ctx, &transport.HistRequest{Kind: transport.HistWindows, From: max(lo, from), To: hi, Per: per, Sums: mine}, st)
		if err != nil || reply == nil {
			return err
		}
		h.since = max(h.since, reply.Since)
		held := make(map[int64]bool, len(mine))
		for _, m := range mine {
			held[m.Window] = true
		}
		for _, g := range differing(mine, reply.Sums, func(s transport.HistSum) int64 { return s.Window }) {
			if (g+1)*per-1 < h.since {
				continue // dropped on one side: not compared
			}
			if (g+1)*per-1 < h.fetchFrom && !held[g] {
				continue // only theirs, and older than we keep: nothing to do
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if level == len(histLevels)-1 {
				st.Windows++
				if err := h.syncWindow(ctx, g, st); err != nil {
					return err
				}
				continue
			}
			if err := h.compare(ctx, max(g*per, from, h.since), min(g*per+per-1, to), level+1, st); err != nil {
				return err
			}
		}
	}
	return nil
}

// differing returns the keys whose sums differ between two lists sorted
// by key, a key missing from one side included.
func differing(a, b []transport.HistSum, key func(transport.HistSum) int64) []int64 {
	var out []int64
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && key(a[i]) < key(b[j]):
			out = append(out, key(a[i]))
			i++
		case i == len(a) || key(b[j]) < key(a[i]):
			out = append(out, key(b[j]))
			j++
		default:
			if a[i].Digest != b[j].Digest || a[i].Count != b[j].Count {
				out = append(out, key(a[i]))
			}
			i++
			j++
		}
	}
	return out
}

// nodeRange returns the range of node IDs' first bytes a HistNodes
// request covers (To 0 means 255).
func nodeRange(req *transport.HistRequest) (lo, hi byte, err error) {
	to := req.To
	if to == 0 {
		to = 255
	}
	if req.From < 0 || req.From > to || to > 255 {
		return 0, 0, fmt.Errorf("%w: node range %d to %d", errHistInvalid, req.From, req.To)
	}
	return byte(req.From), byte(to), nil
}

// inRange keeps the sums of nodes whose ID's first byte is in [lo, hi].
func inRange(sums []transport.HistSum, lo, hi byte) []transport.HistSum {
	if lo == 0 && hi == 255 {
		return sums
	}
	out := sums[:0:0]
	for _, s := range sums {
		if s.Node[0] >= lo && s.Node[0] <= hi {
			out = append(out, s)
		}
	}
	return out
}

// syncWindow brings window w to the same samples on both sides.
func (h *histSyncer) syncWindow(ctx context.Context, w int64, st *HistoryStats) error {
	all, err := h.scope.nodeSums(w)
	if err != nil {
		return err
	}
	return h.syncNodes(ctx, w, all, 0, 255, st)
}

// syncNodes brings the nodes of window w whose ID's first byte is in [lo,
// hi] to the same samples on both sides, splitting the range while either
// side has too many for one message.
func (h *histSyncer) syncNodes(ctx context.Context, w int64, all []transport.HistSum, lo, hi byte, st *HistoryStats) error {
	r := h.s.r
	mine := inRange(all, lo, hi)
	split := func() error {
		if lo == hi {
			return fmt.Errorf("history: window %d has more than %d nodes whose ID starts with %02x", w, r.cfg.histMaxNodes, lo)
		}
		mid := lo + (hi-lo)/2
		if err := h.syncNodes(ctx, w, all, lo, mid, st); err != nil {
			return err
		}
		return h.syncNodes(ctx, w, all, mid+1, hi, st)
	}
	if len(mine) > r.cfg.histMaxNodes {
		return split()
	}
	reply, err := h.exchange(ctx, &transport.HistRequest{Kind: transport.HistNodes, Window: w, From: int64(lo), To: int64(hi), Sums: mine}, st)
	if err != nil || reply == nil {
		return err
	}
	if reply.More {
		return split()
	}
	theirs := map[uuid.UUID]transport.HistSum{}
	for _, s := range reply.Sums {
		theirs[s.Node] = s
	}
	mineBy := map[uuid.UUID]transport.HistSum{}
	for _, s := range mine {
		mineBy[s.Node] = s
	}
	var fetch []transport.HistSum
	var push []transport.HistReg
	size := 0
	flush := func() error {
		if len(push) == 0 {
			return nil
		}
		reply, err := h.exchange(ctx, &transport.HistRequest{Kind: transport.HistPush, Regs: push}, st)
		if err != nil || reply == nil {
			return err
		}
		for _, s := range reply.Sums {
			if m := mineBy[s.Node]; s.Window == w && (m.Digest != s.Digest || m.Count != s.Count) {
				fetch = append(fetch, transport.HistSum{Node: s.Node, Window: w})
			}
		}
		push, size = nil, 0
		return nil
	}
	for _, m := range mine {
		if t, ok := theirs[m.Node]; ok && t.Digest == m.Digest && t.Count == m.Count {
			continue
		}
		regs, _, err := histRegs(r.st, m.Node, w, 0)
		if err != nil {
			return err
		}
		st.Sent += m.Count // the node's every sample of the window
		for _, g := range regs {
			push = append(push, g)
			size += len(g.Block) + 64
			if size >= histPushBytes {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	for _, t := range reply.Sums {
		if _, ok := mineBy[t.Node]; !ok && t.Count > 0 {
			fetch = append(fetch, transport.HistSum{Node: t.Node, Window: w})
		}
	}
	if w < h.fetchFrom {
		fetch = nil // older than we keep: theirs stays theirs
	}
	for len(fetch) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		reply, err := h.exchange(ctx, &transport.HistRequest{Kind: transport.HistFetch, Fetch: fetch}, st)
		if err != nil || reply == nil {
			return err
		}
		pts, err := decodeHistRegs(reply.Regs)
		if err != nil {
			return fmt.Errorf("history fetch: %w", err)
		}
		added, rejected, reason, err := r.mergeHistoryPoints(pts)
		if err != nil {
			return err
		}
		if rejected > 0 {
			r.log.Warn("history samples rejected", "remote", h.s.remote, "count", rejected, "first", reason)
		}
		st.Fetched += added
		if !reply.More {
			return nil
		}
		// Fetch again what did not come whole: the last entry answered
		// (from its register count on) and those not answered.
		n := len(reply.Sums)
		if n == 0 {
			return errors.New("history fetch: the remote sent nothing and said more")
		}
		last := reply.Sums[n-1]
		rest := []transport.HistSum{{Node: last.Node, Window: last.Window, Count: last.Count}}
		fetch = append(rest, fetch[min(n, len(fetch)):]...)
	}
	return nil
}
