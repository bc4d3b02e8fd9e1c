package replica

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/rules"
	"github.com/siot-io/siot/store"
)

// The rule engine (docs/design.md, "Rules and notifications").
//
// One goroutine (ruleEngine.run) reads the change feed behind the router,
// so the tree it walks is never older than the change. It keeps in
// memory the rules this instance knows, the state of the devices linked
// to it or to its peers, and the instances of the rules it runs. A change
// of a point walks up from its node: the rules under each node above read
// that type, and the node is in their scope, so they judge it again.
//
// Every replica that holds a rule judges it; one acts. A rule runs on the
// instance that is home to it: the nearest node above the rule that is a
// device (an edge's root) or this instance's root. Among peers, which
// share a root, the one that acts for a rule is its owner: of this
// instance and its peers whose links are up, the one with the highest
// hash of (rule, instance). What the owner decides (the instance's state,
// the points its actions set, the notifications to send) is written in
// one batch before anything is sent, so a peer that takes over reads it.

// Defaults of the rule engine.
const (
	// DefaultPeerGrace is how long an instance that has had peers waits
	// after it starts, for its peer links to come up, before it acts
	// alone on rules and device state (Config.PeerGrace).
	DefaultPeerGrace = time.Minute
	// ruleFeedBatch is how many changes the engine reads before it looks
	// at its timers and deliveries.
	ruleFeedBatch = 4096
)

// ruleRun is what the engine keeps of one rule node.
type ruleRun struct {
	rule    rules.Rule
	types   []string // rule.Types()
	parents []uuid.UUID
	home    bool // it runs here
	// scopeErr, by condition or action name: a node it names is outside
	// its scope.
	scopeErr map[string]string
	errs     map[string]string             // the ruleError points as held
	insts    map[uuid.UUID]*rules.Instance // by subject
}

// changeMark is what the engine remembers of a register some changed or
// unchanged condition reads: its value and when it last changed.
type changeMark struct {
	value float64
	text  string
	tomb  bool
	at    time.Time
	seen  bool // a change was seen (not only a first read)
}

// timerKey names something to look at again: an instance (rule, subject)
// or, with rule uuid.Nil, a device's offline deadline.
type timerKey struct{ rule, subject uuid.UUID }

type timerItem struct {
	at  time.Time
	key timerKey
}

type timerHeap []timerItem

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerItem)) }
func (h *timerHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// ruleEngine runs the rules and keeps the device state of this instance.
// Everything but its kick channels is owned by its goroutine.
type ruleEngine struct {
	r     *Replica
	kick  chan struct{} // the hub's: the store changed
	wakeC chan struct{} // tests: look at the time again
	start time.Time
	root  uuid.UUID
	self  uuid.UUID

	pos     uint64
	seenPos atomic.Uint64 // pos, for tests
	// known and readyFlag publish the rules held and whether the engine
	// acts, for tests.
	known     atomic.Pointer[map[uuid.UUID]bool]
	readyFlag atomic.Bool
	// passes counts the loop's passes and inflight the notifications
	// being sent after the last one, for tests that wait for the engine
	// to settle.
	passes      atomic.Uint64
	inflight    atomic.Int64
	membersView atomic.Pointer[[]uuid.UUID]
	edgesView   atomic.Pointer[map[uuid.UUID]bool]
	rules       map[uuid.UUID]*ruleRun
	byParent    map[uuid.UUID][]uuid.UUID        // parent → rules under it
	dirty       map[uuid.UUID]bool               // rules to read again
	rescan      map[uuid.UUID]bool               // rules whose every subject to judge again
	moved       map[uuid.UUID]map[uuid.UUID]bool // rule → subtrees that moved in or out of its scope
	types       map[string]int                   // point types some rule reads, with how many
	marks       map[crdt.Register]*changeMark
	markTyps    map[string]int // types some changed/unchanged condition reads
	devices     map[uuid.UUID]*deviceState
	edgeKeys    map[uuid.UUID]bool // nodes with a device's credential
	users       map[uuid.UUID]bool // user nodes: who may be notified

	timers timerHeap
	due    map[timerKey]time.Time

	// membership: the peers whose links are up, as last read, and since
	// when each was last seen up (engine clock).
	members   []uuid.UUID
	peerSeen  map[uuid.UUID]time.Time
	ready     bool
	knownPeer int
	liveEdges map[uuid.UUID]bool
	downAt    map[uuid.UUID]time.Time // when this instance's link to a device last ended
	peerUpAt  map[*session]time.Time  // when each linked peer's session was first seen

	deliv *notifier
	// batch and queue: the instances' changes judged since the last
	// commit, and their points.
	batch []crdt.Point
	queue []queuedChange

	// fresh is the change being judged (judgeChange): the current winner
	// of its register, as the feed read it.
	fresh *crdt.Point
}

func newRuleEngine(r *Replica) *ruleEngine {
	return &ruleEngine{
		r: r, kick: r.hub.register(), wakeC: make(chan struct{}, 1),
		root: r.st.Root(), self: r.st.Instance(),
		rules: map[uuid.UUID]*ruleRun{}, byParent: map[uuid.UUID][]uuid.UUID{},
		dirty: map[uuid.UUID]bool{}, rescan: map[uuid.UUID]bool{}, moved: map[uuid.UUID]map[uuid.UUID]bool{}, types: map[string]int{},
		marks: map[crdt.Register]*changeMark{}, markTyps: map[string]int{},
		devices: map[uuid.UUID]*deviceState{}, edgeKeys: map[uuid.UUID]bool{}, users: map[uuid.UUID]bool{},
		due: map[timerKey]time.Time{}, peerSeen: map[uuid.UUID]time.Time{}, liveEdges: map[uuid.UUID]bool{},
	}
}

func (e *ruleEngine) knownView() map[uuid.UUID]bool {
	if m := e.known.Load(); m != nil {
		return *m
	}
	return nil
}

// wake makes the engine look at its timers now (tests that move the
// clock).
func (e *ruleEngine) wake() {
	select {
	case e.wakeC <- struct{}{}:
	default:
	}
}

func (e *ruleEngine) now() time.Time { return e.r.physicalNow() }

// run loads what the store holds and follows the feed until ctx ends.
func (e *ruleEngine) run(ctx context.Context) error {
	defer e.r.hub.unregister(e.kick)
	e.start = e.now()
	e.knownPeer = max(e.r.links.knownPeers(), len(e.r.cfg.Peers))
	e.deliv = newNotifier(e)
	defer e.deliv.stop()
	if err := e.load(); err != nil {
		return err
	}
	poll := time.NewTimer(time.Hour)
	defer poll.Stop()
	for {
		e.readLinks()
		behind, err := e.step(ctx)
		if err != nil {
			return err
		}
		e.flush()
		e.seenPos.Store(e.pos)
		e.readyFlag.Store(e.ready)
		if len(e.rules) != len(e.knownView()) {
			m := make(map[uuid.UUID]bool, len(e.rules))
			for id := range e.rules {
				m[id] = true
			}
			e.known.Store(&m)
		}
		e.fireTimers()
		e.commit()
		e.deliv.dispatch()
		e.inflight.Store(int64(len(e.deliv.inflight)))
		e.passes.Add(1)
		wait := time.Hour
		if behind {
			wait = 5 * time.Millisecond
		}
		if len(e.timers) > 0 {
			wait = min(wait, max(e.timers[0].at.Sub(e.now()), time.Millisecond))
		}
		if d := e.deliv.nextWait(); d > 0 {
			wait = min(wait, d)
		}
		if !e.ready {
			wait = min(wait, time.Second, e.r.cfg.PeerGrace) // a grace may end
		}
		poll.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-e.kick:
		case <-e.r.router.moved:
		case <-e.r.links.changed:
		case <-e.wakeC:
		case res := <-e.deliv.results:
			e.deliv.done(res)
		case <-poll.C:
		}
	}
}

// load reads every rule, device and device credential the store holds.
func (e *ruleEngine) load() error {
	e.pos = e.r.st.LastSeq()
	var ruleIDs []uuid.UUID
	err := e.r.st.ScanAll(func(p *crdt.Point) error {
		if p.IsEdge() {
			return nil
		}
		switch {
		case p.Type == crdt.TypeNodeType && p.Text == rules.NodeTypeRule && !p.Tombstone:
			ruleIDs = append(ruleIDs, p.Node)
		case p.Type == crdt.TypeNodeType && p.Text == rules.NodeTypeUser && !p.Tombstone:
			e.users[p.Node] = true
		case isDeviceType(p.Type):
			e.deviceSaw(p)
		case p.Type == crdt.TypeAuthKey:
			e.keySaw(p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rules: load: %w", err)
	}
	for _, id := range ruleIDs {
		e.dirty[id] = true
	}
	return nil
}

// step reads the feed from the engine's position up to the router's, at
// most ruleFeedBatch changes; behind reports that more is there.
func (e *ruleEngine) step(ctx context.Context) (behind bool, err error) {
	limit := e.r.router.position.Load()
	n := 0
	err = e.r.st.Feed(e.pos, func(c *store.Change) error {
		if c.Seq > limit || n >= ruleFeedBatch || ctx.Err() != nil {
			behind = true
			return store.ErrStop
		}
		n++
		e.pos = c.Seq
		e.change(&c.Point, c.Seq)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("rules: read the feed: %w", err)
	}
	return behind || e.pos < e.r.st.LastSeq(), nil
}

// change takes one changed register into account.
func (e *ruleEngine) change(p *crdt.Point, seq uint64) {
	if p.IsEdge() {
		if p.Type == crdt.TypeEdge {
			e.edgeChanged(p.Parent, p.Node)
		}
		return
	}
	n := p.Node
	switch {
	case p.Type == crdt.TypeNodeType:
		if !p.Tombstone && p.Text == rules.NodeTypeUser {
			e.users[n] = true
		} else {
			delete(e.users, n)
		}
		_, known := e.rules[n]
		if known || p.Text == rules.NodeTypeRule {
			e.dirty[n] = true
		}
	case rules.IsRuleType(p.Type):
		if _, known := e.rules[n]; known {
			e.dirty[n] = true
		}
	case p.Type == rules.TypeState || p.Type == rules.TypeError:
		if rr := e.rules[n]; rr != nil {
			e.stateSaw(rr, p)
		}
	case p.Type == rules.TypeDelivery || p.Type == rules.TypeDeliveryStatus:
		if rr := e.rules[n]; rr != nil && rr.home {
			e.deliv.saw(n, p, seq)
		}
	case isDeviceType(p.Type):
		e.deviceSaw(p)
	case p.Type == crdt.TypeAuthKey:
		e.keySaw(p)
	}
	if e.markTyps[p.Type] > 0 {
		e.markSaw(p)
	}
	if e.types[p.Type] > 0 {
		// The feed hands the register's current winner: the rules that
		// judge this change read it from here, not once each from the
		// store (BenchmarkRuleFleet: ten Gets of one register a change
		// were most of the judging's CPU).
		e.fresh = p
		e.judgeChange(p)
		e.fresh = nil
	}
}

// edgeChanged: a node's parents changed. A rule that moved is read again.
// The rules above the edge's parent (where the child came or went) and
// above the child (where it is now) judge the moved subtree again, at
// flush; a rule that names nodes checks its scope whole.
func (e *ruleEngine) edgeChanged(parent, child uuid.UUID) {
	if _, ok := e.rules[child]; ok {
		e.dirty[child] = true
	}
	if len(e.rules) == 0 {
		return
	}
	collect := func(a uuid.UUID) bool {
		for _, id := range e.byParent[a] {
			rr := e.rules[id]
			switch {
			case rr == nil || !rr.home:
			case rr.namesNodes() || !rr.rule.PerNode():
				e.rescan[id] = true
			default:
				if e.moved[id] == nil {
					e.moved[id] = map[uuid.UUID]bool{}
				}
				e.moved[id][child] = true
			}
		}
		return true
	}
	e.r.router.up(parent, collect)
	e.r.router.up(child, collect)
}

// namesNodes reports whether a condition or an action of the rule names
// a node (whose place in the scope a move may change).
func (rr *ruleRun) namesNodes() bool {
	for _, c := range rr.rule.Conditions {
		if c.Node != uuid.Nil {
			return true
		}
	}
	for _, as := range [][]rules.Action{rr.rule.Actions, rr.rule.Clear} {
		for _, a := range as {
			if a.Node != uuid.Nil {
				return true
			}
		}
	}
	return false
}

// judgeMoved judges again, for rule rr, every node of the subtrees that
// moved (they entered or left its scope).
func (e *ruleEngine) judgeMoved(rr *ruleRun, roots map[uuid.UUID]bool) {
	if !rr.runs() {
		return
	}
	seen := map[uuid.UUID]bool{}
	for root := range roots {
		err := e.r.st.Descendants(root, func(n uuid.UUID) error {
			if !seen[n] {
				seen[n] = true
				e.judge(rr, n)
			}
			return nil
		})
		if err != nil {
			e.r.log.Warn("rules: read a moved subtree", "rule", rr.rule.ID, "err", err)
		}
	}
}

// markSaw records a value change of a register a changed or unchanged
// condition reads. A register seen for the first time is a change (had it
// existed when the rule was read, reading would have marked it).
func (e *ruleEngine) markSaw(p *crdt.Point) {
	reg := p.Register()
	m := e.marks[reg]
	if m == nil {
		e.marks[reg] = &changeMark{value: p.Value, text: p.Text, tomb: p.Tombstone, at: p.Time.Time(), seen: true}
		return
	}
	if m.value == p.Value && m.text == p.Text && m.tomb == p.Tombstone {
		return
	}
	m.value, m.text, m.tomb, m.seen = p.Value, p.Text, p.Tombstone, true
	m.at = later(m.at, p.Time.Time())
}

// reading returns what a condition reads on node n.
func (e *ruleEngine) reading(n uuid.UUID, c *rules.Condition) (rules.Reading, error) {
	reg := crdt.Register{Node: n, Type: c.Type, Key: c.Key}
	var p crdt.Point
	var ok bool
	if e.fresh != nil && e.fresh.Register() == reg {
		p, ok = *e.fresh, true
	} else {
		var err error
		if p, ok, err = e.r.st.Get(reg); err != nil {
			return rules.Reading{}, err
		}
	}
	var rd rules.Reading
	if ok {
		rd.Point = &p
	}
	if c.Kind != rules.KindChanged && c.Kind != rules.KindUnchanged {
		return rd, nil
	}
	m := e.marks[reg]
	if m == nil && ok {
		// First read: its value is known from here; only a change seen
		// from now on makes "changed" hold.
		m = &changeMark{value: p.Value, text: p.Text, tomb: p.Tombstone, at: p.Time.Time()}
		e.marks[reg] = m
	}
	if m != nil && (m.seen || c.Kind == rules.KindUnchanged) {
		rd.ChangedAt = m.at
	}
	return rd, nil
}

// judgeChange judges again the instances a change of p may move: of
// every rule that reads p's type and holds p's node in its scope, the
// instance of p's node, or the rule's own one when a condition names p's
// node.
func (e *ruleEngine) judgeChange(p *crdt.Point) {
	var found []uuid.UUID
	e.r.router.up(p.Node, func(a uuid.UUID) bool {
		found = append(found, e.byParent[a]...)
		return true
	})
	for _, id := range found {
		rr := e.rules[id]
		if rr == nil || !rr.home || !slices.Contains(rr.types, p.Type) {
			continue
		}
		perNode, named := false, false
		for i := range rr.rule.Conditions {
			c := &rr.rule.Conditions[i]
			if c.Type != p.Type {
				continue
			}
			switch {
			case c.Node == p.Node:
				named = true
			case c.PerNode():
				perNode = true
			}
		}
		switch {
		case named && rr.rule.PerNode():
			e.rescan[id] = true // a named node's point bears on every instance
		case named:
			e.judge(rr, rr.rule.ID)
		}
		if perNode {
			e.judge(rr, p.Node)
		}
	}
}

// flush reads the dirty rules again and judges the rescanned ones whole.
func (e *ruleEngine) flush() {
	for id := range e.dirty {
		delete(e.dirty, id)
		e.reload(id)
	}
	for id := range e.rescan {
		delete(e.rescan, id)
		delete(e.moved, id)
		if rr := e.rules[id]; rr != nil && rr.home {
			e.judgeAll(rr)
		}
	}
	for id, roots := range e.moved {
		delete(e.moved, id)
		if rr := e.rules[id]; rr != nil && rr.home {
			e.judgeMoved(rr, roots)
		}
	}
	e.deviceFlush()
}

// reload reads rule id's node again: what it says, where it is, whether
// it runs here.
func (e *ruleEngine) reload(id uuid.UUID) {
	old := e.rules[id]
	if old != nil {
		e.forget(id, old)
	}
	var pts []crdt.Point
	if err := e.r.st.ScanNode(id, func(p *crdt.Point) error {
		pts = append(pts, *p)
		return nil
	}); err != nil {
		e.r.log.Warn("rules: read a rule", "rule", id, "err", err)
		return
	}
	isRule := false
	for i := range pts {
		if p := &pts[i]; p.Type == crdt.TypeNodeType && !p.Tombstone && p.Text == rules.NodeTypeRule {
			isRule = true
		}
	}
	if !isRule {
		return
	}
	rr := &ruleRun{rule: rules.FromPoints(id, pts), errs: map[string]string{}, insts: map[uuid.UUID]*rules.Instance{}}
	rr.types = rr.rule.Types()
	rr.parents = e.r.router.parentsOf(id, nil)
	rr.home = e.isHome(rr.parents)
	for i := range pts {
		if p := &pts[i]; p.Type == rules.TypeState || p.Type == rules.TypeError {
			e.stateSaw(rr, p)
		}
	}
	rr.scopeErr = e.scopeErrors(rr)
	e.rules[id] = rr
	for _, p := range rr.parents {
		e.byParent[p] = append(e.byParent[p], id)
	}
	for _, t := range rr.rule.Types() {
		e.types[t]++
	}
	for i := range rr.rule.Conditions {
		if k := rr.rule.Conditions[i].Kind; k == rules.KindChanged || k == rules.KindUnchanged {
			e.markTyps[rr.rule.Conditions[i].Type]++
		}
	}
	for i := range pts {
		if pts[i].Type == rules.TypeDelivery && rr.home {
			e.deliv.saw(id, &pts[i], 0)
		}
	}
	if rr.home {
		e.judgeAll(rr)
	}
}

// forget removes a rule from the indexes (it is read again or gone).
func (e *ruleEngine) forget(id uuid.UUID, rr *ruleRun) {
	delete(e.rules, id)
	e.deliv.forget(id)
	for _, p := range rr.parents {
		e.byParent[p] = slices.DeleteFunc(e.byParent[p], func(x uuid.UUID) bool { return x == id })
		if len(e.byParent[p]) == 0 {
			delete(e.byParent, p)
		}
	}
	for _, t := range rr.rule.Types() {
		if e.types[t]--; e.types[t] <= 0 {
			delete(e.types, t)
		}
	}
	for i := range rr.rule.Conditions {
		if k := rr.rule.Conditions[i].Kind; k == rules.KindChanged || k == rules.KindUnchanged {
			t := rr.rule.Conditions[i].Type
			if e.markTyps[t]--; e.markTyps[t] <= 0 {
				delete(e.markTyps, t)
			}
		}
	}
}

// isHome reports whether a rule under parents runs here: some path up
// from a parent reaches this instance's root before any other device.
func (e *ruleEngine) isHome(parents []uuid.UUID) bool {
	seen := map[uuid.UUID]bool{}
	stack := slices.Clone(parents)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			continue
		}
		seen[n] = true
		if n == e.root {
			return true
		}
		if e.isDevice(n) {
			continue
		}
		stack = e.r.router.parentsOf(n, stack)
	}
	return false
}

// inScope reports whether node n is in rule rr's scope: one of its
// parents or below one.
func (e *ruleEngine) inScope(rr *ruleRun, n uuid.UUID) bool {
	found := false
	e.r.router.up(n, func(a uuid.UUID) bool {
		found = slices.Contains(rr.parents, a)
		return !found
	})
	return found
}

// scopeErrors checks the nodes the rule's conditions and actions name.
func (e *ruleEngine) scopeErrors(rr *ruleRun) map[string]string {
	errs := map[string]string{}
	for _, c := range rr.rule.Conditions {
		if c.Node != uuid.Nil && !e.inScope(rr, c.Node) {
			errs[rules.TypeCondition+"."+c.Name] = fmt.Sprintf("node %s is outside the rule's scope", c.Node)
		}
	}
	for i, as := range [][]rules.Action{rr.rule.Actions, rr.rule.Clear} {
		typ := []string{rules.TypeAction, rules.TypeActionClear}[i]
		for _, a := range as {
			if a.Node != uuid.Nil && !e.inScope(rr, a.Node) {
				errs[typ+"."+a.Name] = fmt.Sprintf("node %s is outside the rule's scope", a.Node)
			}
		}
	}
	return errs
}

// runs reports whether rule rr is judged at all: here, valid, enabled,
// every named node in scope.
func (rr *ruleRun) runs() bool {
	return rr.home && !rr.rule.Disabled && rr.rule.Valid() && len(rr.scopeErr) == 0
}

// judgeAll judges every instance of a rule: each node of its scope with
// a point some per-node condition reads, the rule's own, and those it
// holds state for.
func (e *ruleEngine) judgeAll(rr *ruleRun) {
	rr.scopeErr = e.scopeErrors(rr) // the tree may have moved
	e.writeErrors(rr)
	if !rr.runs() {
		return
	}
	subjects := map[uuid.UUID]bool{}
	for s := range rr.insts {
		subjects[s] = true
	}
	if rr.rule.PerNode() {
		for _, p := range rr.parents {
			err := e.r.st.Descendants(p, func(n uuid.UUID) error {
				subjects[n] = true
				return nil
			})
			if err != nil {
				e.r.log.Warn("rules: read a rule's scope", "rule", rr.rule.ID, "err", err)
			}
			subjects[p] = true
		}
	} else {
		subjects[rr.rule.ID] = true
	}
	for s := range subjects {
		e.judge(rr, s)
	}
}

// judge judges the instance of rule rr for subject s, and acts if it
// changes and this instance owns the rule.
func (e *ruleEngine) judge(rr *ruleRun, s uuid.UUID) {
	if !rr.runs() {
		return
	}
	now := e.now()
	holds, since, next, ok := e.conditions(rr, s, now)
	if !ok {
		return
	}
	in := rr.insts[s]
	if in == nil {
		if !holds {
			if !next.IsZero() {
				e.setTimer(timerKey{rr.rule.ID, s}, next) // a schedule, a change that ages
			}
			return // nothing else to track
		}
		in = &rules.Instance{}
		rr.insts[s] = in
	}
	out, changed, wake := rules.Step(&rr.rule, *in, holds, since, now)
	in.Holding = out.Holding
	if !wake.IsZero() {
		next = earliest(next, wake)
	}
	if !next.IsZero() {
		e.setTimer(timerKey{rr.rule.ID, s}, next)
	}
	if !changed || !e.owns(rr.rule.ID) {
		return
	}
	// The change is queued, and the instance moved, at once: what the
	// engine judges next sees it. commit writes the queue in one batch
	// (one fsync for every change of a step) or moves them back.
	e.queue = append(e.queue, queuedChange{key: timerKey{rr.rule.ID, s}, in: in, old: *in, active: out.Active})
	e.batch = append(e.batch, e.transition(rr, s, out)...)
	*in = out
	if len(e.batch) >= ruleBatchPoints {
		e.commit()
	}
}

// queuedChange is an instance's change written by the next commit.
type queuedChange struct {
	key    timerKey
	in     *rules.Instance
	old    rules.Instance // as it was before: restored if the write fails
	active bool
}

// ruleBatchPoints bounds the points of the changes one commit writes.
const ruleBatchPoints = 4096

// commit writes the queued changes of rule instances, with their actions'
// points and delivery claims, as one batch. If the store refuses it, the
// instances go back to what they were and are judged again in a second.
func (e *ruleEngine) commit() {
	if len(e.batch) == 0 {
		return
	}
	_, err := e.r.write(e.batch, false)
	if err != nil {
		e.r.log.Warn("rules: write the rules' changes", "changes", len(e.queue), "err", err)
		retry := e.now().Add(time.Second)
		for i := len(e.queue) - 1; i >= 0; i-- {
			q := e.queue[i]
			*q.in = q.old
			e.setTimer(q.key, retry)
		}
	} else {
		for _, q := range e.queue {
			e.r.metrics.ruleTransition(q.active)
		}
	}
	clear(e.batch)
	e.batch, e.queue = e.batch[:0], e.queue[:0]
}

// conditions judges rr's conditions for subject s: whether they hold,
// since when (the latest change among those that hold), and when the
// answer changes with time alone. ok is false when s is not a subject
// (outside the scope, or not of the type a condition asks for).
func (e *ruleEngine) conditions(rr *ruleRun, s uuid.UUID, now time.Time) (holds bool, since, next time.Time, ok bool) {
	perNode := rr.rule.PerNode()
	if perNode && (s == rr.rule.ID || !e.inScope(rr, s)) {
		// A node that left the scope: its instance, if any, clears.
		return false, now, next, rr.insts[s] != nil && s != rr.rule.ID
	}
	anyHeld, allHeld, anyPer := false, true, false
	for i := range rr.rule.Conditions {
		c := &rr.rule.Conditions[i]
		target := c.Node
		if c.PerNode() {
			target = s
			if c.NodeType != "" && !e.nodeIs(s, c.NodeType) {
				allHeld = false
				continue
			}
		}
		var rd rules.Reading
		if c.Kind != rules.KindSchedule {
			var err error
			if rd, err = e.reading(target, c); err != nil {
				e.r.log.Warn("rules: read a point", "rule", rr.rule.ID, "err", err)
				return false, since, next, false
			}
			if c.PerNode() && rd.Point != nil {
				anyPer = true
			}
		}
		h, n := c.Holds(rd, now)
		next = earliest(next, n)
		if h {
			anyHeld = true
			at := now
			switch {
			case rd.ChangedAt.After(time.Time{}):
				at = rd.ChangedAt
			case rd.Point != nil:
				at = rd.Point.Time.Time()
			}
			since = later(since, at)
		} else {
			allHeld = false
		}
	}
	if perNode && !anyPer && rr.insts[s] == nil {
		return false, since, next, false
	}
	if rr.rule.Any {
		holds = anyHeld
	} else {
		holds = allHeld
	}
	if since.After(now) || since.IsZero() {
		since = now
	}
	return holds, since, next, true
}

// nodeIs reports whether node n's nodeType is typ.
func (e *ruleEngine) nodeIs(n uuid.UUID, typ string) bool {
	p, ok, err := e.r.st.Get(crdt.Register{Node: n, Type: crdt.TypeNodeType, Key: crdt.DefaultKey})
	return err == nil && ok && !p.Tombstone && p.Text == typ
}

// stateSaw updates a rule's instance from a state point, or its errors
// from an error point.
func (e *ruleEngine) stateSaw(rr *ruleRun, p *crdt.Point) {
	switch p.Type {
	case rules.TypeError:
		if p.Tombstone {
			delete(rr.errs, p.Key)
		} else {
			rr.errs[p.Key] = p.Text
		}
		return
	}
	s, err := uuid.Parse(p.Key)
	if err != nil {
		return
	}
	in := rr.insts[s]
	if in == nil {
		in = &rules.Instance{}
		rr.insts[s] = in
	}
	in.Active = !p.Tombstone && p.Value != 0
	in.Changed = p.Time.Time()
	if rr.home {
		// A peer's decision, or ours read back: judge again, so a
		// condition that changed since is not left behind.
		e.setTimer(timerKey{rr.rule.ID, s}, e.now())
	}
}

// writeErrors makes the rule's ruleError points say what is wrong with
// it, when this instance owns it.
func (e *ruleEngine) writeErrors(rr *ruleRun) {
	if !rr.home || !e.owns(rr.rule.ID) {
		return
	}
	want := map[string]string{}
	for k, v := range rr.rule.Errors {
		want[k] = v
	}
	for k, v := range rr.scopeErr {
		want[k] = v
	}
	var pts []crdt.Point
	for k, v := range want {
		if rr.errs[k] != v && crdt.CheckKey(k) == nil {
			pts = append(pts, crdt.Point{Node: rr.rule.ID, Type: rules.TypeError, Key: k, Text: truncateText(v, 1024)})
		}
	}
	for k := range rr.errs {
		if _, ok := want[k]; !ok {
			pts = append(pts, crdt.Point{Node: rr.rule.ID, Type: rules.TypeError, Key: k, Tombstone: true})
		}
	}
	if len(pts) == 0 {
		return
	}
	if _, err := e.r.Write(pts); err != nil {
		e.r.log.Warn("rules: write a rule's errors", "rule", rr.rule.ID, "err", err)
		return
	}
	for _, p := range pts {
		if p.Tombstone {
			delete(rr.errs, p.Key)
		} else {
			rr.errs[p.Key] = p.Text
		}
	}
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// transition returns the points of an instance's change and of what its
// actions do: the state and fired points, each set action's point, and a
// delivery claim per notification, all at one new HLC.
func (e *ruleEngine) transition(rr *ruleRun, s uuid.UUID, out rules.Instance) []crdt.Point {
	t := e.r.clock.Now()
	key := s.String()
	v := 0.0
	if out.Active {
		v = 1
	}
	pts := []crdt.Point{{Node: rr.rule.ID, Type: rules.TypeState, Key: key, Value: v, Time: t}}
	actions := rr.rule.Clear
	if out.Active {
		pts = append(pts, crdt.Point{Node: rr.rule.ID, Type: rules.TypeFired, Key: key, Value: float64(t.Physical()), Time: t})
		actions = rr.rule.Actions
	}
	for _, a := range actions {
		if a.Notify {
			pts = append(pts, e.deliv.records(rr, s, out.Active, a, t)...)
			continue
		}
		target := a.Node
		if target == uuid.Nil {
			target = s
		}
		if !e.inScope(rr, target) {
			continue // the rule's own node without a per-node condition: checked at load
		}
		p := crdt.Point{Node: target, Type: a.Type, Key: a.Key, Value: a.Value, Text: a.Text, Time: t}
		if slices.ContainsFunc(pts, func(q crdt.Point) bool { return q.Register() == p.Register() }) {
			continue // two actions set one point: the first wins
		}
		pts = append(pts, p)
	}
	return pts
}

// setTimer asks to judge key again at at (the earliest asked wins).
func (e *ruleEngine) setTimer(key timerKey, at time.Time) {
	if d, ok := e.due[key]; ok && !at.Before(d) {
		return
	}
	e.due[key] = at
	heap.Push(&e.timers, timerItem{at: at, key: key})
}

// fireTimers judges again what is due.
func (e *ruleEngine) fireTimers() {
	now := e.now()
	for len(e.timers) > 0 && !e.timers[0].at.After(now) {
		it := heap.Pop(&e.timers).(timerItem)
		if d, ok := e.due[it.key]; !ok || !d.Equal(it.at) {
			continue // superseded
		}
		delete(e.due, it.key)
		if it.key.rule == uuid.Nil {
			e.deviceCheck(it.key.subject)
			continue
		}
		if rr := e.rules[it.key.rule]; rr != nil {
			e.judge(rr, it.key.subject)
		}
	}
}

// readLinks reads which edges and peers are linked now. A change of
// peers changes who owns what: every rule run here is judged again.
func (e *ruleEngine) readLinks() {
	edges, peers := e.r.links.liveLinks()
	now := e.now()
	members := []uuid.UUID{e.self}
	synced := true
	upAt := make(map[*session]time.Time, len(peers))
	for id, s := range peers {
		e.peerSeen[id] = now
		members = append(members, id)
		// A peer link counts once caught up, or once it has been up
		// PeerGrace: a link busy both ways may not look idle for long.
		at, ok := e.peerUpAt[s]
		if !ok {
			at = now
		}
		upAt[s] = at
		if !s.synced() && now.Sub(at) < e.r.cfg.PeerGrace {
			synced = false
		}
	}
	e.peerUpAt = upAt
	sortIDs(members)
	ready := synced && (len(peers) >= e.knownPeer || now.Sub(e.start) >= e.r.cfg.PeerGrace)
	changed := !slices.Equal(members, e.members) || ready != e.ready
	e.members, e.ready = members, ready
	e.membersView.Store(&members)
	edgesChanged := len(edges) != len(e.liveEdges)
	for id := range edges {
		if !e.liveEdges[id] {
			edgesChanged = true
		}
	}
	if edgesChanged {
		var down []uuid.UUID
		for id := range e.liveEdges {
			if !edges[id] {
				e.edgeDown(id, now)
				down = append(down, id)
			}
		}
		e.liveEdges = edges
		e.edgesView.Store(&edges)
		for id := range edges {
			e.deviceCheck(id)
		}
		for _, id := range down {
			e.deviceCheck(id)
		}
	}
	if changed {
		for id, rr := range e.rules {
			if rr.home {
				e.rescan[id] = true
			}
		}
		for id := range e.devices {
			e.setTimer(timerKey{uuid.Nil, id}, now)
		}
	}
}

// owns reports whether this instance acts for key (a rule or a device):
// ready, and the highest hash of (key, member) among this instance and
// its linked peers is its own.
func (e *ruleEngine) owns(key uuid.UUID) bool {
	if !e.ready {
		return false
	}
	return e.ownerOf(key) == e.self
}

func (e *ruleEngine) ownerOf(key uuid.UUID) uuid.UUID {
	var best uuid.UUID
	var bestH uint64
	for _, m := range e.members {
		h := sha256.Sum256(append(key[:], m[:]...))
		if v := binary.BigEndian.Uint64(h[:8]); best == uuid.Nil || v > bestH {
			best, bestH = m, v
		}
	}
	return best
}

// isMember reports whether instance id is this one or a linked peer.
func (e *ruleEngine) isMember(id uuid.UUID) bool { return slices.Contains(e.members, id) }

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

// seen returns how far the engine has read the feed, for tests.
func (e *ruleEngine) seen() uint64 { return e.seenPos.Load() }

// ruleKnown reports whether the engine holds rule id, for tests.
func (e *ruleEngine) ruleKnown(id uuid.UUID) bool {
	return e.known.Load() != nil && (*e.known.Load())[id]
}

// isReady reports whether the engine acts (its peers are linked and in
// sync, or its grace is over), for tests.
func (e *ruleEngine) isReady() bool { return e.readyFlag.Load() }

// isMemberForTest reports whether id is among the engine's members.
func (e *ruleEngine) isMemberForTest(id uuid.UUID) bool {
	m := e.membersView.Load()
	return m != nil && slices.Contains(*m, id)
}

// linkedForTest reports whether the engine holds a link to device id.
func (e *ruleEngine) linkedForTest(id uuid.UUID) bool {
	m := e.edgesView.Load()
	return m != nil && (*m)[id]
}
