package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// Client helpers over the local API shared by node, set, get and watch.

// typeDescription is the node point whose text describes a node for people
// (replica.TypeDescription).
const typeDescription = "description"

// clientCmd is what every command that talks to a server and prints has:
// its Main, the client flags and --json.
type clientCmd struct {
	m      *Main
	cf     clientFlags
	asJSON bool
}

// register defines the client flags and --json (described by jsonUsage).
func (c *clientCmd) register(fs *flag.FlagSet, jsonUsage string) {
	c.cf.register(fs, c.m.Getenv)
	fs.BoolVar(&c.asJSON, "json", false, jsonUsage)
}

// parseNode parses a node ID given on the command line; what names it in
// the error ("NODE", "--parent").
func parseNode(what, s string) (uuid.UUID, error) {
	id, err := crdt.ParseID(s)
	if err != nil {
		return uuid.Nil, &UsageError{Msg: fmt.Sprintf("%s: %v", what, err)}
	}
	return id, nil
}

// newNodeFlags parses the --id and --parent of a command that creates a
// node: id is random without --id, parent uuid.Nil without --parent.
func newNodeFlags(idFlag, parentFlag string) (id, parent uuid.UUID, err error) {
	id = uuid.New()
	if idFlag != "" {
		if id, err = parseNode("--id", idFlag); err != nil {
			return uuid.Nil, uuid.Nil, err
		}
	}
	if parentFlag != "" {
		if parent, err = parseNode("--parent", parentFlag); err != nil {
			return uuid.Nil, uuid.Nil, err
		}
	}
	return id, parent, nil
}

// oneNode parses the single argument of command cmd, a node named what
// (NODE, USER): a usage error when there is not exactly one.
func oneNode(cmd, what string, args []string) (uuid.UUID, error) {
	if len(args) != 1 {
		return uuid.Nil, &UsageError{Msg: fmt.Sprintf("%s takes one %s", cmd, what)}
	}
	return parseNode(what, args[0])
}

// optionalNode parses args, at most one node ID (what names it): uuid.Nil
// when there is none.
func optionalNode(what string, args []string) (uuid.UUID, error) {
	if len(args) == 0 {
		return uuid.Nil, nil
	}
	return parseNode(what, args[0])
}

// serverRoot returns the server's root node, whatever the credentials
// reach.
func (c *client) serverRoot(ctx context.Context) (uuid.UUID, error) {
	st, err := c.status(ctx)
	if err != nil {
		return uuid.Nil, err
	}
	id, err := crdt.ParseID(st.ID)
	if err != nil {
		return uuid.Nil, fmt.Errorf("server root: %w", err)
	}
	return id, nil
}

// root returns the node commands start from by default: the server's
// root, or, for credentials that reach one subtree (a device, a user with
// one parent), that subtree's root.
func (c *client) root(ctx context.Context) (uuid.UUID, error) {
	st, err := c.status(ctx)
	if err != nil {
		return uuid.Nil, err
	}
	switch len(st.Scope) {
	case 0:
	case 1:
		id, err := crdt.ParseID(st.Scope[0])
		if err != nil {
			return uuid.Nil, fmt.Errorf("server scope: %w", err)
		}
		return id, nil
	default:
		return uuid.Nil, fmt.Errorf("these credentials reach %d subtrees (%s): name one", len(st.Scope), strings.Join(st.Scope, ", "))
	}
	id, err := crdt.ParseID(st.ID)
	if err != nil {
		return uuid.Nil, fmt.Errorf("server root: %w", err)
	}
	return id, nil
}

func (c *client) status(ctx context.Context) (transport.Status, error) {
	var st transport.Status
	err := c.call(ctx, transport.NameStatus, transport.StatusRequest{}, &st)
	return st, err
}

// errUnknownNode reports a node the server holds nothing of.
var errUnknownNode = errors.New("unknown node")

// mustKnow returns an error naming id unless the server knows the node.
func (c *client) mustKnow(ctx context.Context, id uuid.UUID) error {
	var page transport.NodePage
	if err := c.call(ctx, transport.NameNode, transport.NodeRequest{Node: id, MaxBytes: 1}, &page); err != nil {
		return err
	}
	if !page.Known {
		return fmt.Errorf("%w %s: the server holds no point or edge of it (create it with siot node add)", errUnknownNode, id)
	}
	return nil
}

// nodePoints calls fn with every point of node id (its node points, then
// the edge points above it), page by page.
func (c *client) nodePoints(ctx context.Context, id uuid.UUID, fn func(*crdt.Point) error) error {
	req := transport.NodeRequest{Node: id}
	for {
		var page transport.NodePage
		if err := c.call(ctx, transport.NameNode, req, &page); err != nil {
			return err
		}
		if !page.Known {
			return fmt.Errorf("%w %s: the server holds no point or edge of it", errUnknownNode, id)
		}
		pts, err := crdt.DecodeBatch(page.Points, 0)
		if err != nil {
			return fmt.Errorf("node page: %w", err)
		}
		for i := range pts {
			if err := fn(&pts[i]); err != nil {
				return err
			}
		}
		if !page.More {
			return nil
		}
		if len(page.Next) == 0 {
			return errors.New("node: server sent a page without a cursor")
		}
		req.After = page.Next
	}
}

// labels are what people call a node: its type and description.
type labels struct{ typ, desc string }

func (l *labels) take(p *crdt.Point) {
	if p.Tombstone {
		return
	}
	switch p.Type {
	case crdt.TypeNodeType:
		l.typ = p.Text
	case typeDescription:
		l.desc = p.Text
	}
}

// edge is one edge next to a node, as edges lists it.
type edge struct {
	other  uuid.UUID  // the node at the other end
	point  crdt.Point // the edge point
	active bool       // part of the live tree
	labels labels     // of other
}

// live reports whether the edge point is not tombstoned.
func (e *edge) live() bool { return !e.point.Tombstone }

// edges lists the edges below node id, or above it with up, and id's own
// labels.
func (c *client) edges(ctx context.Context, id uuid.UUID, up bool) (labels, []edge, error) {
	var self labels
	var out []edge
	req := transport.EdgesRequest{Node: id, Up: up}
	for {
		var page transport.EdgesPage
		if err := c.call(ctx, transport.NameEdges, req, &page); err != nil {
			return self, nil, err
		}
		pts, err := crdt.DecodeBatch(page.Points, 0)
		if err != nil {
			return self, nil, fmt.Errorf("edges page: %w", err)
		}
		first := len(out)
		for i := range pts {
			p := &pts[i]
			switch {
			case p.IsEdge():
				k := len(out) - first
				if k >= len(page.Active) {
					return self, nil, errors.New("edges: server sent more edges than flags")
				}
				e := edge{other: p.Node, point: *p, active: page.Active[k] == 1}
				if up {
					e.other = p.Parent
				}
				out = append(out, e)
			case p.Node == id:
				self.take(p)
			case len(out) > first && p.Node == out[len(out)-1].other:
				out[len(out)-1].labels.take(p)
			}
		}
		if !page.More {
			return self, out, nil
		}
		if page.Next == uuid.Nil {
			return self, nil, errors.New("edges: server sent a page without a cursor")
		}
		req.After = page.Next
	}
}

// write writes pts, unstamped, as one operation: one HLC for all.
func (c *client) write(ctx context.Context, pts []crdt.Point) (transport.ImportResult, error) {
	var res transport.ImportResult
	err := c.call(ctx, transport.NameImport, transport.Import{Points: crdt.AppendBatch(nil, pts), OneTime: true}, &res)
	return res, err
}

// validate checks points built from the command line before anything is
// sent: a bad one is a usage error.
func validate(pts []crdt.Point) error {
	for i := range pts {
		pts[i].Normalize()
		if err := pts[i].ValidateUnstamped(); err != nil {
			return &UsageError{Msg: err.Error()}
		}
	}
	return nil
}
