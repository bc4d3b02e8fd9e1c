package replica

import (
	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// maxScopeCache bounds a scope's memo of node membership.
const maxScopeCache = 100_000

// scope decides which points a link carries: everything (root uuid.Nil),
// or the subtree of root over active edges: root's points, its
// descendants' points and the edges below them.
//
// Membership is the current tree's, computed by walking up active parents
// and memoized; the memo is dropped whenever an edge changes. A scope is
// owned by one goroutine.
type scope struct {
	st    *store.Store
	root  uuid.UUID
	cache map[uuid.UUID]bool
	// anyEdge walks tombstoned and inactive edges too: the subtree as it
	// is or ever was (newHistoricScope).
	anyEdge bool
	// roots, when not nil, replaces root: the union of the subtrees of
	// several nodes (newRootsScope), empty for a scope that holds nothing.
	roots map[uuid.UUID]bool
	// cur and live, when set, make this historic scope a device's
	// (newDeviceScope): nodes in cur, or in the historic subtree and in
	// no part of live.
	cur, live *scope
}

func newScope(st *store.Store, root uuid.UUID) *scope {
	return &scope{st: st, root: root, cache: make(map[uuid.UUID]bool)}
}

// newHistoricScope returns a scope of every node below root over any edge,
// deleted or inactive ones included: the nodes that are or ever were in the
// subtree.
func newHistoricScope(st *store.Store, root uuid.UUID) *scope {
	sc := newScope(st, root)
	sc.anyEdge = true
	return sc
}

// newDeviceScope returns what a device whose root is root owns: the nodes
// of its subtree now, and the nodes that were in it and have since been
// placed in no live part of the tree (deleted, not moved elsewhere). While
// replicas diverge a device still owns what it made and what it deleted;
// a node the upstream moved to another device is no longer its own. Link
// ingress and repair answers use it: what a device may write and read.
func newDeviceScope(st *store.Store, root uuid.UUID) *scope {
	sc := newHistoricScope(st, root)
	sc.cur, sc.live = newScope(st, root), newScope(st, st.Root())
	return sc
}

// newRootsScope returns the union of the subtrees of roots over active
// edges; with no roots it holds nothing.
func newRootsScope(st *store.Store, roots []uuid.UUID) *scope {
	sc := newScope(st, uuid.Nil)
	sc.roots = make(map[uuid.UUID]bool, len(roots))
	for _, r := range roots {
		sc.roots[r] = true
	}
	return sc
}

// full reports whether the scope holds everything.
func (s *scope) full() bool { return s.roots == nil && s.root == uuid.Nil }

// isRoot reports whether n is a root of the scope.
func (s *scope) isRoot(n uuid.UUID) bool {
	if s.roots != nil {
		return s.roots[n]
	}
	return n == s.root
}

// contains reports whether p belongs to the scope.
func (s *scope) contains(p *crdt.Point) (bool, error) {
	if s.full() {
		return true, nil
	}
	if p.IsEdge() {
		return s.containsNode(p.Parent)
	}
	return s.containsNode(p.Node)
}

// invalidate forgets memoized membership; call it when an edge changed.
func (s *scope) invalidate() {
	if len(s.cache) > 0 {
		clear(s.cache)
	}
	if s.cur != nil {
		s.cur.invalidate()
		s.live.invalidate()
	}
}

// containsNode reports whether n is root or below it over active edges
// (any edges for a historic scope; see newDeviceScope for a device's).
func (s *scope) containsNode(n uuid.UUID) (bool, error) {
	if s.cur == nil {
		return s.walk(n)
	}
	if in, err := s.cur.containsNode(n); err != nil || in {
		return in, err
	}
	if in, err := s.walk(n); err != nil || !in {
		return false, err
	}
	placed, err := s.live.containsNode(n)
	return !placed, err
}

// walk reports whether n is root or below it, walking up the edges the
// scope follows.
func (s *scope) walk(n uuid.UUID) (bool, error) {
	if s.full() || s.isRoot(n) {
		return true, nil
	}
	if s.roots != nil && len(s.roots) == 0 {
		return false, nil
	}
	if in, ok := s.cache[n]; ok {
		return in, nil
	}
	// Walk up every active parent. Every node visited shares the answer:
	// on success each lies on a path that reaches root (its descendants
	// were visited only through it); on failure none reaches root.
	visited := map[uuid.UUID]bool{n: true}
	queue := []uuid.UUID{n}
	found := false
	for len(queue) > 0 && !found {
		cur := queue[0]
		queue = queue[1:]
		if in, ok := s.cache[cur]; ok && in {
			found = true
			break
		}
		err := s.st.Parents(cur, func(c store.Child) error {
			if (!c.Active && !s.anyEdge) || visited[c.ID] {
				return nil
			}
			if s.isRoot(c.ID) {
				found = true
				return store.ErrStop
			}
			visited[c.ID] = true
			queue = append(queue, c.ID)
			return nil
		})
		if err != nil {
			return false, err
		}
	}
	if len(s.cache)+len(visited) > maxScopeCache {
		clear(s.cache)
	}
	if found {
		// Only n is certainly in scope: other visited nodes may be
		// ancestors on paths that do not reach root.
		s.cache[n] = true
	} else {
		for v := range visited {
			s.cache[v] = false
		}
	}
	return found, nil
}

// holdsTree reports whether the subtree of root holds more than root's
// own points: nodes below it. A link between two replicas that both do
// compares before it sends (see Welcome.Holds); a new device's node,
// provisioned with its key and description only, does not.
func holdsTree(st *store.Store, root uuid.UUID) (bool, error) {
	d, err := st.NodeDigest(root)
	if err != nil {
		return false, err
	}
	return d.Sub != d.Own, nil
}
