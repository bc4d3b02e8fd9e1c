package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// TypeDescription is the node point whose text describes a node for
// people.
const TypeDescription = "description"

// Nodes adds, removes, moves and lists nodes (Client.Node). Each change
// is one operation: its points share one HLC.
type Nodes struct{ c *Client }

// Labels are what people call a node: its type and description.
type Labels struct {
	Type        string
	Description string
}

func (l *Labels) take(p *crdt.Point) {
	if p.Tombstone {
		return
	}
	switch p.Type {
	case crdt.TypeNodeType:
		l.Type = p.Text
	case TypeDescription:
		l.Description = p.Text
	}
}

// Edge is one edge next to a node, as Ls and Parents list it.
type Edge struct {
	// Other is the node at the other end: the child (Ls) or the parent
	// (Parents).
	Other uuid.UUID
	// Point is the edge point.
	Point Point
	// Active says the edge is part of the live tree (by the tree rules:
	// live, and not undone by the cycle rule).
	Active bool
	// Labels are Other's.
	Labels Labels
}

// Live reports whether the edge point is not tombstoned.
func (e *Edge) Live() bool { return !e.Point.Tombstone }

// Listing is a node's labels and the edges below it (or above it).
type Listing struct {
	Labels Labels
	Edges  []Edge
}

// NewNode is a node to add. ID nil: a random one. Parent nil: the
// client's default root (Client.Root).
type NewNode struct {
	ID, Parent  uuid.UUID
	Type        string // its nodeType point
	Description string // its description point
	// Points are more points of the node written with it.
	Points []Point
}

// Add creates a node under its parent, which must exist: the edge and the
// node's points in one operation. It returns the node's ID and parent.
func (n Nodes) Add(ctx context.Context, nn NewNode) (id, parent uuid.UUID, err error) {
	id, parent = nn.ID, nn.Parent
	if id == uuid.Nil {
		id = uuid.New()
	}
	if parent == id {
		return uuid.Nil, uuid.Nil, invalidf("a node cannot be its own parent")
	}
	if parent == uuid.Nil {
		if parent, err = n.c.Root(ctx); err != nil {
			return uuid.Nil, uuid.Nil, err
		}
		if parent == id {
			return uuid.Nil, uuid.Nil, invalidf("the node to add is the server's root")
		}
	} else if err := n.c.Known(ctx, parent); err != nil {
		return uuid.Nil, uuid.Nil, fmt.Errorf("parent: %w", err)
	}
	pts := []Point{{Node: id, Parent: parent, Type: crdt.TypeEdge}}
	if nn.Type != "" {
		pts = append(pts, Point{Node: id, Type: crdt.TypeNodeType, Text: nn.Type})
	}
	if nn.Description != "" {
		pts = append(pts, Point{Node: id, Type: TypeDescription, Text: nn.Description})
	}
	for _, p := range nn.Points {
		p.Node = id
		pts = append(pts, p)
	}
	if _, err := n.c.Set(ctx, pts...); err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	return id, parent, nil
}

// Rm deletes node from under its parent from (uuid.Nil: its only live
// parent): it tombstones the edge above it. The node and its subtree
// leave the live tree; their points are kept. It returns the parent.
func (n Nodes) Rm(ctx context.Context, node, from uuid.UUID) (uuid.UUID, error) {
	old, err := n.liveParent(ctx, node, from)
	if err != nil {
		return uuid.Nil, err
	}
	// The deletion names the placement it ends (docs/design.md).
	p := Point{Node: node, Parent: old.Parent, Type: crdt.TypeEdge, Tombstone: true, Text: crdt.PlaceOf(&old)}
	if _, err := n.c.Set(ctx, p); err != nil {
		return uuid.Nil, err
	}
	return old.Parent, nil
}

// Mv moves node (with its subtree) under to, from its parent from
// (uuid.Nil: its only live parent), as one operation: the new edge and the
// tombstone of the old one share one HLC. A move under node's own subtree
// is ErrInvalid. It returns the parent the node left.
func (n Nodes) Mv(ctx context.Context, node, to, from uuid.UUID) (uuid.UUID, error) {
	if node == to {
		return uuid.Nil, invalidf("a node cannot be its own parent")
	}
	if err := n.c.Known(ctx, to); err != nil {
		return uuid.Nil, fmt.Errorf("new parent: %w", err)
	}
	oldEdge, err := n.liveParent(ctx, node, from)
	if err != nil {
		return uuid.Nil, err
	}
	old := oldEdge.Parent
	if old == to {
		return uuid.Nil, invalidf("%s is under %s already", node, to)
	}
	if below, err := n.IsBelow(ctx, to, node); err != nil {
		return uuid.Nil, err
	} else if below {
		return uuid.Nil, invalidf("%s is below %s: the move would make a cycle", to, node)
	}
	// Both points name the placement the move moves (docs/design.md,
	// "Tree rules: placements"): a concurrent move of the same placement
	// elsewhere then loses to the later one instead of leaving the node
	// in two places.
	place := crdt.PlaceOf(&oldEdge)
	_, err = n.c.Set(ctx,
		Point{Node: node, Parent: to, Type: crdt.TypeEdge, Value: crdt.EdgeMoved, Text: place},
		Point{Node: node, Parent: old, Type: crdt.TypeEdge, Tombstone: true, Value: crdt.EdgeMoved, Text: place})
	if err != nil {
		return uuid.Nil, err
	}
	return old, nil
}

// ParentsError is a node whose parent must be named: it has several live
// parents, or none, or not the one named.
type ParentsError struct {
	Node   uuid.UUID
	Want   uuid.UUID   // the parent named; uuid.Nil when none was
	Live   []uuid.UUID // the live parents
	Choose string      // how the caller names one, for the message ("--from")
}

func (e *ParentsError) Error() string {
	var live []string
	for _, p := range e.Live {
		live = append(live, p.String())
	}
	switch {
	case e.Want != uuid.Nil:
		s := "none"
		if len(live) > 0 {
			s = strings.Join(live, ", ")
		}
		return fmt.Sprintf("%s has no live edge from %s (its parents: %s)", e.Node, e.Want, s)
	case len(live) == 0:
		return fmt.Sprintf("%s has no live edge above it: it is a root or was removed already", e.Node)
	}
	choose := e.Choose
	if choose == "" {
		choose = "the parent argument"
	}
	return fmt.Sprintf("%s has %d parents (%s): choose one with %s", e.Node, len(live), strings.Join(live, ", "), choose)
}

// Is makes a ParentsError an ErrInvalid.
func (e *ParentsError) Is(target error) bool { return target == ErrInvalid }

// liveParent returns the edge point of node's parent whose edge is live:
// want when set (an error unless that edge is live), else the only one
// (a *ParentsError when there are none or several).
func (n Nodes) liveParent(ctx context.Context, node, want uuid.UUID) (crdt.Point, error) {
	if err := n.c.Known(ctx, node); err != nil {
		return crdt.Point{}, err
	}
	ups, err := n.Parents(ctx, node)
	if err != nil {
		return crdt.Point{}, err
	}
	pe := &ParentsError{Node: node, Want: want}
	var only crdt.Point
	for _, e := range ups.Edges {
		if !e.Live() {
			continue
		}
		if e.Other == want {
			return e.Point, nil
		}
		pe.Live = append(pe.Live, e.Other)
		only = e.Point
	}
	if want != uuid.Nil || len(pe.Live) != 1 {
		return crdt.Point{}, pe
	}
	return only, nil
}

// maxAncestors bounds the walk of IsBelow.
const maxAncestors = 10_000

// IsBelow reports whether n is anc or below it in the live tree, walking
// up from n over active edges.
func (n Nodes) IsBelow(ctx context.Context, node, anc uuid.UUID) (bool, error) {
	seen := map[uuid.UUID]bool{node: true}
	queue := []uuid.UUID{node}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == anc {
			return true, nil
		}
		if len(seen) > maxAncestors {
			return false, invalidf("%s has more than %d ancestors", node, maxAncestors)
		}
		ups, err := n.Parents(ctx, cur)
		if err != nil {
			return false, err
		}
		for _, e := range ups.Edges {
			if e.Active && !seen[e.Other] {
				seen[e.Other] = true
				queue = append(queue, e.Other)
			}
		}
	}
	return false, nil
}

// Ls lists the edges below node (deleted and inactive ones too: see
// Edge.Live and Edge.Active), in order of the child's ID, with node's
// labels and each child's.
func (n Nodes) Ls(ctx context.Context, node uuid.UUID) (Listing, error) {
	return n.edges(ctx, node, false)
}

// Parents lists the edges above node, in order of the parent's ID.
func (n Nodes) Parents(ctx context.Context, node uuid.UUID) (Listing, error) {
	return n.edges(ctx, node, true)
}

func (n Nodes) edges(ctx context.Context, id uuid.UUID, up bool) (Listing, error) {
	var out Listing
	req := transport.EdgesRequest{Node: id, Up: up}
	for {
		var page transport.EdgesPage
		if err := n.c.Request(ctx, transport.NameEdges, req, &page); err != nil {
			return Listing{}, err
		}
		pts, err := crdt.DecodeBatch(page.Points, 0)
		if err != nil {
			return Listing{}, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("edges page: %v", err), Err: err}
		}
		first := len(out.Edges)
		for i := range pts {
			p := &pts[i]
			switch {
			case p.IsEdge():
				k := len(out.Edges) - first
				if k >= len(page.Active) {
					return Listing{}, &Error{Kind: ErrUnavailable, Msg: "edges: server sent more edges than flags", Err: errors.ErrUnsupported}
				}
				e := Edge{Other: p.Node, Point: *p, Active: page.Active[k] == 1}
				if up {
					e.Other = p.Parent
				}
				out.Edges = append(out.Edges, e)
			case p.Node == id:
				out.Labels.take(p)
			case len(out.Edges) > first && p.Node == out.Edges[len(out.Edges)-1].Other:
				out.Edges[len(out.Edges)-1].Labels.take(p)
			}
		}
		if !page.More {
			return out, nil
		}
		if page.Next == uuid.Nil || page.Next == req.After {
			return Listing{}, &Error{Kind: ErrUnavailable, Msg: "edges: the server sent a page without a new cursor"}
		}
		req.After = page.Next
	}
}
