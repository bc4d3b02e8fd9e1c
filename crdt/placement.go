package crdt

import (
	"bytes"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// The tree rules of placements (docs/design.md, "Tree rules:
// placements"). A node is in one or more placements: the edge it was
// created under, and each mirror (an edge added without a move), starts
// one. A move moves one placement, so only moves of the same placement
// are exclusive: of two concurrent moves of a node out of the same parent
// the greater wins and the node ends in one place.
//
// ResolvePlacements decides over a whole set of registers; ResolveRegion
// (region.go) decides after a change over the part it touched, as the
// store does, and gives the same result.

// maxPlaces bounds the placement ids one edge write may name (a move that
// merges several placements): more makes the write's text invalid.
const maxPlaces = 64

// PlaceID returns the id of the placement that a plain edge parent→child
// written at t starts: the parent and the write's HLC in 16 lowercase hex
// digits, "<parent>/<hlc>".
func PlaceID(parent uuid.UUID, t Timestamp) string {
	var b [16]byte
	s := strconv.AppendUint(b[:0], uint64(t), 16)
	return parent.String() + "/" + strings.Repeat("0", 16-len(s)) + string(s)
}

// parsePlaceID parses one placement id.
func parsePlaceID(id string) (parent uuid.UUID, t Timestamp, ok bool) {
	if len(id) != 36+1+16 || id[36] != '/' {
		return uuid.Nil, 0, false
	}
	p, err := uuid.Parse(id[:36])
	if err != nil || p.String() != id[:36] {
		return uuid.Nil, 0, false
	}
	var raw [8]byte
	if _, err := hex.Decode(raw[:], []byte(id[37:])); err != nil || strings.ToLower(id[37:]) != id[37:] {
		return uuid.Nil, 0, false
	}
	var v uint64
	for _, c := range raw {
		v = v<<8 | uint64(c)
	}
	return p, Timestamp(v), true
}

// ParsePlaces returns the placement ids an edge write's text names,
// separated by commas, or false when the text is not such a list (empty,
// malformed or over maxPlaces ids): the write then names no placement.
func ParsePlaces(text string) ([]string, bool) {
	if text == "" {
		return nil, false
	}
	ids := strings.Split(text, ",")
	if len(ids) > maxPlaces {
		return nil, false
	}
	for _, id := range ids {
		if _, _, ok := parsePlaceID(id); !ok {
			return nil, false
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), true
}

// Places returns the placements the edge register r belongs to: those its
// text names, or, for a plain live edge (a live edge that names none), the
// one it starts. A tombstone that names none belongs to none.
func (r *EdgeRegister) Places() []string {
	if ids, ok := ParsePlaces(r.Place); ok && (r.Tombstone || r.Moved) {
		return ids
	}
	if !r.Tombstone {
		return []string{PlaceID(r.Parent, r.Time)}
	}
	return nil
}

// PlaceOf returns the placement id that the live edge point p holds its
// child in: the one its text names when a move placed it there (value
// EdgeMoved), else the one it starts. A move of the child away from p and
// a deletion of p name it in their text.
func PlaceOf(p *Point) string {
	if _, ok := ParsePlaces(p.Text); ok && p.Value == EdgeMoved {
		return p.Text
	}
	return PlaceID(p.Parent, p.Time)
}

// deletion reports whether r is a tombstone that deletes (not one a move
// wrote).
func (r *EdgeRegister) deletion() bool { return r.Tombstone && !r.Moved }

// sameOp reports whether a and b were written by one operation: the same
// HLC and origin.
func sameOp(a, b *EdgeRegister) bool { return a.Time == b.Time && a.Origin == b.Origin }

// placeKey names a placement: its child and its id.
type placeKey struct {
	child uuid.UUID
	id    string
}

// place is one placement while the rules run: its registers, greatest
// (Time, Origin) first, and the edges it has been withdrawn from.
type place struct {
	key       placeKey
	regs      []*EdgeRegister
	withdrawn map[Edge]bool
	held      int // active edges it holds
}

// holder is a placement holding an active edge through a register (for
// the fallback to a placement's origin, a register made up from its id).
type holder struct {
	pl  *place
	reg *EdgeRegister
}

// resolver is the state of one ResolvePlacements or ResolveRegion run.
type resolver struct {
	view    TreeRegion // nil: every child is loaded up front
	err     error      // the first error the view returned inside a predicate
	loaded  map[uuid.UUID]bool
	known   map[Edge]bool // edges of the loaded children that have a register
	places  []*place      // sorted by key
	byChild map[uuid.UUID][]*place
	parents map[uuid.UUID]int                // active edges into each node
	up      map[uuid.UUID]map[uuid.UUID]bool // the parents of those edges
	active  map[Edge]*EdgeRegister
	holders map[Edge][]holder
	// oldTombs are the moved-away tombstones that name no placement (moves
	// written before placements), by child: a plain edge withdrawn from a
	// cycle falls back to those its own operation wrote.
	oldTombs map[uuid.UUID][]*EdgeRegister
}

// ResolvePlacements computes the active edges of the tree from edge
// registers by the rules of placements (docs/design.md). The result is
// sorted by (parent, child) and depends only on the set of registers:
// several registers for one edge are merged by the LWW rule first.
//
//  1. A register belongs to the placements its text names (a move's
//     writes and a deletion's), or, as a plain live edge, starts one. A
//     placement's current operation is its registers' greatest (Time,
//     Origin).
//  2. The current operation's live edge is the placement's candidate; a
//     current deletion leaves it none, and so does an operation whose
//     live edge was overwritten since.
//  3. While candidates form a cycle, in each cycle component one is
//     withdrawn, the one whose withdrawal loses least: an edge into a
//     node entered from outside the component by another active edge;
//     else one whose child falls back to a parent outside it; else any;
//     within that class the greatest (Time, Origin), then parent and
//     child bytes. Each placement that held it falls back: to its
//     greatest other live edge; else to every moved-away tombstone of the
//     withdrawn operation; else to its greatest moved-away tombstone;
//     else to the parent its id names.
//
// A node's active edges therefore depend only on its own registers and on
// the cycles through it. Visibility (a root reaches the node over active
// edges) is the caller's: a deleted node hides its subtree.
func ResolvePlacements(regs []EdgeRegister) []Edge {
	rs := resolvePlacements(regs)
	out := make([]Edge, 0, len(rs.active))
	for e := range rs.active {
		out = append(out, e)
	}
	slices.SortFunc(out, compareEdges)
	return out
}

// DecidePlacements is ResolvePlacements with the Decision on every edge
// that has a register (and on an active edge that has none): what a
// replica that resolves regionally must hold after any sequence of
// changes.
func DecidePlacements(regs []EdgeRegister) map[Edge]Decision {
	return resolvePlacements(regs).decisions()
}

// resolvePlacements runs the rules and returns their final state.
func resolvePlacements(regs []EdgeRegister) *resolver {
	all := mergeEdgeRegisters(regs)
	rs := newResolver(nil)
	// all is sorted by (parent, child): group by child in child order.
	byChild := make(map[uuid.UUID][]*EdgeRegister)
	var children []uuid.UUID
	for i := range all {
		r := &all[i]
		if byChild[r.Child] == nil {
			children = append(children, r.Child)
		}
		byChild[r.Child] = append(byChild[r.Child], r)
	}
	slices.SortFunc(children, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	for _, c := range children {
		rs.addChild(c, byChild[c])
	}
	for {
		comps := cyclicComponents(rs.active)
		if len(comps) == 0 {
			break
		}
		var victims []Edge
		for _, comp := range comps {
			victims = append(victims, rs.victim(comp))
		}
		slices.SortFunc(victims, compareEdges)
		for _, e := range victims {
			rs.withdraw(e)
		}
	}
	_ = rs.rescue() // a global run reads no view: no error
	return rs
}

// victim returns the edge to withdraw from a cycle component comp, the
// one whose withdrawal loses least. Class 2: an edge into a node that has
// another active edge from outside comp (the node stays where it also
// is). Class 1: an edge whose child would fall back (or revive) to a
// parent outside comp. Class 0: any other. The highest class present wins,
// and within it the greatest (Time, Origin), then edge bytes.
func (rs *resolver) victim(comp map[uuid.UUID]bool) Edge {
	entered := make(map[uuid.UUID]bool) // nodes with an active edge from outside comp
	for e := range rs.active {
		if comp[e.Child] && !comp[e.Parent] {
			entered[e.Child] = true
		}
	}
	var best *EdgeRegister
	var be Edge
	bestClass := -1
	for e, r := range rs.active {
		if !comp[e.Parent] || !comp[e.Child] {
			continue
		}
		class := 0
		if entered[e.Child] {
			class = 3
		} else if out, safe := rs.fallsOutside(e, comp); safe {
			class = 2
		} else if out {
			class = 1
		}
		if class > bestClass || class == bestClass && (rankCompare(r, best) > 0 || rankCompare(r, best) == 0 && compareEdges(e, be) > 0) {
			best, be, bestClass = r, e, class
		}
	}
	return be
}

// fallsOutside reports whether e's child, were e withdrawn, has a place
// to fall back to outside comp (out), and one that is not below the child
// either (safe: falling back there closes no cycle, judged over the edges
// as they are, e included, which can only say no too often), at any step
// of rule 3's fallback order: through a placement that held e, or through
// a placement of the child that holds nothing now and would revive
// (withdraw).
func (rs *resolver) fallsOutside(e Edge, comp map[uuid.UUID]bool) (out, safe bool) {
	check := func(pl *place, r *EdgeRegister) {
		for _, x := range rs.fallbackAll(pl, r, e) {
			if comp[x.Parent] {
				continue
			}
			out = true
			below, err := rs.isAncestor(e.Child, x.Parent)
			if err != nil {
				rs.err = err
				return
			}
			if !below {
				safe = true
				return
			}
		}
	}
	for _, h := range rs.holders[e] {
		if check(h.pl, h.reg); safe {
			return out, safe
		}
	}
	if rs.parents[e.Child] > 1 {
		return out, safe // no revival: the child keeps an edge inside comp
	}
	for _, pl := range rs.byChild[e.Child] {
		if len(pl.regs) > 0 && pl.held == 0 && !pl.deleted() {
			if check(pl, pl.regs[0]); safe {
				return out, safe
			}
		}
	}
	return out, safe
}

// fallbackAll returns every place rule 3 could make pl fall back to, at
// any of its steps, were its edge held through r withdrawn along with
// edge without. It leaves pl as it found it.
func (rs *resolver) fallbackAll(pl *place, r *EdgeRegister, without Edge) []*EdgeRegister {
	var added []Edge
	mark := func(e Edge) {
		if !pl.withdrawn[e] {
			pl.withdrawn[e] = true
			added = append(added, e)
		}
	}
	mark(without)
	var out []*EdgeRegister
	for len(out) <= len(pl.regs)+len(rs.oldTombs[pl.key.child])+1 {
		got := rs.fallback(pl, r)
		if len(got) == 0 {
			break
		}
		out = append(out, got...)
		for _, x := range got {
			mark(Edge{Parent: x.Parent, Child: pl.key.child})
		}
	}
	for _, e := range added {
		delete(pl.withdrawn, e)
	}
	return out
}

func newResolver(view TreeRegion) *resolver {
	return &resolver{view: view, loaded: make(map[uuid.UUID]bool), known: make(map[Edge]bool),
		active: make(map[Edge]*EdgeRegister), holders: make(map[Edge][]holder),
		oldTombs: make(map[uuid.UUID][]*EdgeRegister), byChild: make(map[uuid.UUID][]*place), parents: make(map[uuid.UUID]int),
		up: make(map[uuid.UUID]map[uuid.UUID]bool)}
}

// addChild loads the registers of every edge into child (one per edge):
// its placements, each holding its current operation's edge (rules 1, 2).
func (rs *resolver) addChild(child uuid.UUID, regs []*EdgeRegister) {
	rs.loaded[child] = true
	byKey := make(map[string]*place)
	var places []*place
	for _, r := range regs {
		if r.Child != child || r.Parent == child {
			continue
		}
		rs.known[r.Edge()] = true
		ids := r.Places()
		if len(ids) == 0 && r.Tombstone && r.Moved {
			rs.oldTombs[child] = append(rs.oldTombs[child], r)
		}
		for _, id := range ids {
			pl := byKey[id]
			if pl == nil {
				pl = &place{key: placeKey{child, id}, withdrawn: make(map[Edge]bool)}
				byKey[id] = pl
				places = append(places, pl)
			}
			pl.regs = append(pl.regs, r)
		}
	}
	slices.SortFunc(places, func(a, b *place) int { return strings.Compare(a.key.id, b.key.id) })
	for _, pl := range places {
		rs.places = append(rs.places, pl)
		rs.byChild[child] = append(rs.byChild[child], pl)
		slices.SortFunc(pl.regs, func(a, b *EdgeRegister) int { return rankCompare(b, a) })
		if c := pl.current(); c != nil {
			rs.hold(pl, c)
		}
	}
}

// mergeEdgeRegisters keeps one register per edge, the LWW winner, sorted
// by edge. Self-loops are dropped.
func mergeEdgeRegisters(regs []EdgeRegister) []EdgeRegister {
	byEdge := make(map[Edge]EdgeRegister, len(regs))
	for _, r := range regs {
		if r.Parent == r.Child {
			continue // never valid; Validate refuses it
		}
		if cur, ok := byEdge[r.Edge()]; !ok || winsEdge(&r, &cur) {
			byEdge[r.Edge()] = r
		}
	}
	all := make([]EdgeRegister, 0, len(byEdge))
	for _, r := range byEdge {
		all = append(all, r)
	}
	slices.SortFunc(all, func(a, b EdgeRegister) int { return compareEdges(a.Edge(), b.Edge()) })
	return all
}

// current returns the placement's candidate by rules 1 and 2: the live
// edge of its greatest operation, or nil.
func (pl *place) current() *EdgeRegister {
	if len(pl.regs) == 0 || pl.deleted() {
		return nil // a deletion in the operation wins, as a tombstone wins a tie
	}
	for _, r := range pl.regs {
		if !sameOp(r, pl.regs[0]) {
			break
		}
		if !r.Tombstone {
			return r // regs are sorted: the first live one has the greatest rank
		}
	}
	return nil
}

// hold makes r's edge active for pl.
func (rs *resolver) hold(pl *place, r *EdgeRegister) {
	e := Edge{Parent: r.Parent, Child: pl.key.child}
	cur, ok := rs.active[e]
	if !ok {
		rs.parents[e.Child]++
		if rs.up[e.Child] == nil {
			rs.up[e.Child] = make(map[uuid.UUID]bool)
		}
		rs.up[e.Child][e.Parent] = true
	}
	if !ok || rankCompare(r, cur) > 0 {
		rs.active[e] = r
	}
	rs.holders[e] = append(rs.holders[e], holder{pl, r})
	pl.held++
}

// withdraw takes e out of the active edges (it closed a cycle) and makes
// each placement that held it fall back (rule 3).
func (rs *resolver) withdraw(e Edge) {
	hs := rs.holders[e]
	delete(rs.active, e)
	delete(rs.holders, e)
	rs.parents[e.Child]--
	delete(rs.up[e.Child], e.Parent)
	for _, h := range hs {
		h.pl.held--
		h.pl.withdrawn[e] = true
		for _, r := range rs.fallback(h.pl, h.reg) {
			rs.hold(h.pl, r)
		}
	}
	if rs.parents[e.Child] > 0 {
		return
	}
	// The node has no place left. Its placements that hold none because
	// the live edge of their last move was overwritten since (by a write
	// of another placement, now withdrawn) fall back as if that move were
	// undone; deleted ones stay deleted.
	for _, pl := range rs.byChild[e.Child] {
		if len(pl.regs) == 0 || pl.held > 0 || pl.deleted() {
			continue
		}
		for _, r := range rs.fallback(pl, pl.regs[0]) {
			rs.hold(pl, r)
		}
	}
}

// oldFormat reports whether pl holds no register a placement-format move
// wrote: a plain edge, which a move written before placements may have
// placed, so the child's tombstones that name no placement are its
// history too.
func (pl *place) oldFormat() bool {
	return !slices.ContainsFunc(pl.regs, func(r *EdgeRegister) bool { return r.Moved })
}

// deleted reports whether pl's current operation deletes it.
func (pl *place) deleted() bool {
	for _, r := range pl.regs {
		if !sameOp(r, pl.regs[0]) {
			break
		}
		if r.deletion() {
			return true
		}
	}
	return false
}

// fallback returns where placement pl goes when its edge held through r
// is withdrawn, in the order of rule 3. It never returns an edge pl was
// withdrawn from, or one pl holds already.
func (rs *resolver) fallback(pl *place, r *EdgeRegister) []*EdgeRegister {
	usable := func(x *EdgeRegister) bool {
		e := Edge{Parent: x.Parent, Child: pl.key.child}
		if pl.withdrawn[e] || x.Parent == pl.key.child {
			return false
		}
		for _, h := range rs.holders[e] {
			if h.pl == pl {
				return false
			}
		}
		return true
	}
	// 1. Its greatest other live edge: an older concurrent move.
	for _, x := range pl.regs {
		if !x.Tombstone && usable(x) {
			return []*EdgeRegister{x}
		}
	}
	// 2. Every moved-away tombstone of the withdrawn operation: an undone
	// move restores what it took away.
	var out []*EdgeRegister
	for _, x := range pl.regs {
		if x.Tombstone && x.Moved && sameOp(x, r) && usable(x) {
			out = append(out, x)
		}
	}
	if pl.oldFormat() {
		for _, x := range rs.oldTombs[pl.key.child] {
			if sameOp(x, r) && usable(x) {
				out = append(out, x)
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	// 3. Its greatest moved-away tombstone; for a plain edge (which an
	// older move may have written), also the greatest moved-away
	// tombstone of the child that names no placement.
	var best *EdgeRegister
	for _, x := range pl.regs {
		if x.Tombstone && x.Moved && usable(x) {
			best = x
			break
		}
	}
	if pl.oldFormat() {
		for _, x := range rs.oldTombs[pl.key.child] {
			if usable(x) && (best == nil || rankCompare(x, best) > 0) {
				best = x
			}
		}
	}
	if best != nil {
		return []*EdgeRegister{best}
	}
	// 4. The parent its id names, ranked as the write that started it,
	// when that edge has a register: a text cannot attach a node to a
	// parent it was never under.
	if parent, t, ok := parsePlaceID(pl.key.id); ok && rs.known[Edge{Parent: parent, Child: pl.key.child}] {
		x := &EdgeRegister{Parent: parent, Child: pl.key.child, Time: t}
		if usable(x) {
			return []*EdgeRegister{x}
		}
	}
	return nil
}
