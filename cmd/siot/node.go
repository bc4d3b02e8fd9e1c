package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
)

const nodeUsage = `Usage: siot node <add|rm|mv|ls> [flags] [arguments]

Change and show the node tree of a running server.

  node add [--parent UUID] [--type T] [--desc TEXT] [--id UUID]
                        create a node under a parent (default: the root)
  node rm NODE [--parent UUID]
                        delete NODE from under its parent
  node mv NODE NEWPARENT [--from OLDPARENT]
                        move NODE under NEWPARENT, as one operation
  node ls [ROOT] [--depth N] [--all]
                        print the tree below ROOT (default: the root)

Run "siot node <sub-command> --help" for its flags and examples.
`

const nodeAddUsage = `Usage: siot node add [--parent UUID] [--type T] [--desc TEXT] [--id UUID] [--json]

Create a node: a live edge under --parent (default: the server's root), and
its "nodeType" (--type) and "description" (--desc) points, all written as
one operation. Print the new node's UUID (with --json, {"node","parent"}).
The UUID is random unless --id gives it; --id of a node that exists
already places it under --parent as well (a node can have several parents).

Examples:
  siot node add --type device --desc "pump house"
  SENSOR=$(siot node add --parent 6ba7b810-9dad-11d1-80b4-00c04fd430c8 --type sensor)
  siot node add --id 6ba7b811-9dad-11d1-80b4-00c04fd430c8 --parent 6ba7b810-9dad-11d1-80b4-00c04fd430c8

Flags:
`

type nodeAddCmd struct {
	clientCmd
	parent, typ, desc, id string
}

func (c *nodeAddCmd) usage() string { return nodeAddUsage }

func (c *nodeAddCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"node","parent"}`)
	fs.StringVar(&c.parent, "parent", "", "the parent's UUID (default: the server's root)")
	fs.StringVar(&c.typ, "type", "", `the node's type, its "nodeType" point (e.g. device, sensor, user)`)
	fs.StringVar(&c.desc, "desc", "", `the node's "description" point`)
	fs.StringVar(&c.id, "id", "", "the new node's UUID (default: a random one)")
}

func (c *nodeAddCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "node add takes no arguments (use --parent, --type, --desc)"}
	}
	id, parent, err := newNodeFlags(c.id, c.parent)
	if err != nil {
		return err
	}
	var own []crdt.Point
	if c.typ != "" {
		own = append(own, crdt.Point{Type: crdt.TypeNodeType, Text: c.typ})
	}
	if c.desc != "" {
		own = append(own, crdt.Point{Type: typeDescription, Text: c.desc})
	}
	n, err := makeNewNode(id, parent, own)
	if err != nil {
		return err
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	if parent, err = n.write(ctx, cl); err != nil {
		return err
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"node": id.String(), "parent": parent.String()})
	}
	fmt.Fprintln(c.m.Stdout, id)
	return nil
}

// newNode is a node a command creates (node add, rule add): the edge
// under its parent and the node's own points, written by write as one
// operation, so that no replica sees the node without its points.
type newNode struct {
	id, parent uuid.UUID    // parent uuid.Nil: the client's root, found by write
	pts        []crdt.Point // the edge first, then the node's own points
}

// makeNewNode returns node id under parent (uuid.Nil: the client's root)
// with the points own, whose Node it sets to id (own is not kept). A
// parent that is the node, or, when parent is given, an invalid point,
// is a usage error: nothing has been sent.
func makeNewNode(id, parent uuid.UUID, own []crdt.Point) (*newNode, error) {
	if parent == id {
		return nil, &UsageError{Msg: "--id and --parent are the same node"}
	}
	n := &newNode{id: id, parent: parent, pts: make([]crdt.Point, 0, 1+len(own))}
	n.pts = append(n.pts, crdt.Point{Node: id, Parent: parent, Type: crdt.TypeEdge})
	for _, p := range own {
		p.Node = id
		n.pts = append(n.pts, p)
	}
	if parent != uuid.Nil { // else checked once the root is known
		if err := validate(n.pts); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// write creates the node through cl and returns its parent. Without a
// parent it takes the client's root (the node being that root is a usage
// error); a given parent must exist (an error naming --parent). Then the
// edge and the points go as one operation (client.Set): the server
// writes all of them or none. Errors are cl's, with the server's words.
func (n *newNode) write(ctx context.Context, cl *client.Client) (uuid.UUID, error) {
	if n.parent == uuid.Nil {
		root, err := cl.Root(ctx)
		if err != nil {
			return uuid.Nil, err
		}
		if root == n.id {
			return uuid.Nil, &UsageError{Msg: "--id is the server's root"}
		}
		n.parent, n.pts[0].Parent = root, root
		if err := validate(n.pts); err != nil {
			return uuid.Nil, err
		}
	} else if err := cl.Known(ctx, n.parent); err != nil {
		return uuid.Nil, fmt.Errorf("--parent: %w", err)
	}
	if _, err := cl.Set(ctx, n.pts...); err != nil {
		return uuid.Nil, err
	}
	return n.parent, nil
}

// printJSON writes v as one line of JSON, without escaping <, > and &
// (as export writes records).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

const nodeRmUsage = `Usage: siot node rm NODE [--parent UUID] [--json]

Delete NODE from under its parent: tombstone the edge above it. NODE and
its subtree leave the live tree; their points are kept, and
"siot node ls --all" still shows them. Writing the edge again brings them
back. A node under several parents needs --parent to say which edge to
delete.

Examples:
  siot node rm 6ba7b811-9dad-11d1-80b4-00c04fd430c8
  siot node rm 6ba7b811-9dad-11d1-80b4-00c04fd430c8 --parent 6ba7b810-9dad-11d1-80b4-00c04fd430c8

Flags:
`

type nodeRmCmd struct {
	clientCmd
	parent string
}

func (c *nodeRmCmd) usage() string { return nodeRmUsage }

func (c *nodeRmCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"node","parent"}`)
	fs.StringVar(&c.parent, "parent", "", "the parent to delete NODE from (needed when it has several)")
}

func (c *nodeRmCmd) run(ctx context.Context, args []string) error {
	id, err := oneNode("node rm", "NODE", args)
	if err != nil {
		return err
	}
	var from uuid.UUID
	if c.parent != "" {
		if from, err = parseNode("--parent", c.parent); err != nil {
			return err
		}
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	old, err := cl.Node.Rm(ctx, id, from)
	if err != nil {
		return flagged(err, "--parent")
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"node": id.String(), "parent": old.String()})
	}
	fmt.Fprintf(c.m.Stdout, "removed %s from under %s\n", id, old)
	return nil
}

// flagged names the flag that chooses a parent in a *client.ParentsError.
func flagged(err error, flagName string) error {
	var pe *client.ParentsError
	if errors.As(err, &pe) {
		pe.Choose = flagName
	}
	return err
}

const nodeMvUsage = `Usage: siot node mv NODE NEWPARENT [--from OLDPARENT] [--json]

Move NODE (with its subtree) under NEWPARENT, as one operation: the new
edge and the tombstone of the old one are written with the same HLC and
origin, so every replica sees the move whole. A node under several parents
needs --from to say which edge the move replaces. A move under NODE's own
subtree is refused; concurrent moves on two replicas that would form a
cycle are resolved by every replica the same way (the later move is
undone).

Examples:
  siot node mv 6ba7b811-9dad-11d1-80b4-00c04fd430c8 6ba7b812-9dad-11d1-80b4-00c04fd430c8
  siot node mv 6ba7b811-9dad-11d1-80b4-00c04fd430c8 6ba7b812-9dad-11d1-80b4-00c04fd430c8 --from 6ba7b810-9dad-11d1-80b4-00c04fd430c8

Flags:
`

type nodeMvCmd struct {
	clientCmd
	from string
}

func (c *nodeMvCmd) usage() string { return nodeMvUsage }

func (c *nodeMvCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"node","from","to"}`)
	fs.StringVar(&c.from, "from", "", "the parent NODE leaves (needed when it has several)")
}

func (c *nodeMvCmd) run(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return &UsageError{Msg: "node mv takes NODE and NEWPARENT"}
	}
	id, err := parseNode("NODE", args[0])
	if err != nil {
		return err
	}
	to, err := parseNode("NEWPARENT", args[1])
	if err != nil {
		return err
	}
	var from uuid.UUID
	if c.from != "" {
		if from, err = parseNode("--from", c.from); err != nil {
			return err
		}
	}
	if id == to {
		return &UsageError{Msg: "node mv: a node cannot be its own parent"}
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	old, err := cl.Node.Mv(ctx, id, to, from)
	if err != nil {
		if strings.HasPrefix(err.Error(), "new parent: ") {
			return fmt.Errorf("NEWPARENT: %w", errors.Unwrap(err))
		}
		return flagged(err, "--from")
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"node": id.String(), "from": old.String(), "to": to.String()})
	}
	fmt.Fprintf(c.m.Stdout, "moved %s from %s to %s\n", id, old, to)
	return nil
}

const nodeLsUsage = `Usage: siot node ls [ROOT] [--depth N] [--all] [--json]

Print the tree below ROOT (default: the server's root), each node with its
UUID, its type ("nodeType") and its description. Only the live tree is
shown; --all adds deleted edges (marked [deleted] or [moved away]) and
edges the cycle rule undid ([inactive]). A node under several parents is
shown under each; its children are listed the first time only. --depth
limits the levels below ROOT (0: all).

With --json, print one JSON object per line, in the same order:
  {"node", "parent" (absent for ROOT), "depth", "type", "description",
   "active", "deleted", "moved", "repeat"}
"deleted" is true for an edge tombstoned by a delete or a move ("moved").
"repeat" marks a node listed before, whose children are not repeated.

Examples:
  siot node ls
  siot node ls 6ba7b810-9dad-11d1-80b4-00c04fd430c8 --depth 2
  siot node ls --all --json

Flags:
`

type nodeLsCmd struct {
	clientCmd
	depth int
	all   bool
}

func (c *nodeLsCmd) usage() string { return nodeLsUsage }

func (c *nodeLsCmd) flags(fs *flag.FlagSet) {
	c.register(fs, "print one JSON object per node")
	fs.IntVar(&c.depth, "depth", 0, "levels below ROOT to print (0: all)")
	fs.BoolVar(&c.all, "all", false, "show deleted and inactive edges too")
}

// lsLine is one node of node ls --json.
type lsLine struct {
	Node        string `json:"node"`
	Parent      string `json:"parent,omitempty"`
	Depth       int    `json:"depth"`
	Type        string `json:"type"`
	Description string `json:"description"`
	Active      bool   `json:"active"`
	Deleted     bool   `json:"deleted"`
	Moved       bool   `json:"moved"`
	Repeat      bool   `json:"repeat"`
}

func (c *nodeLsCmd) run(ctx context.Context, args []string) error {
	if len(args) > 1 {
		return &UsageError{Msg: "node ls takes at most one ROOT"}
	}
	if c.depth < 0 {
		return &UsageError{Msg: "--depth must be 0 or more"}
	}
	root, err := optionalNode("ROOT", args)
	if err != nil {
		return err
	}
	cl, root, err := dialAt(ctx, &c.cf, root)
	if err != nil {
		return err
	}
	defer cl.Close()
	w := &lsWriter{c: c, out: c.m.Stdout, seen: map[uuid.UUID]bool{root: true}}
	self, err := cl.Node.Ls(ctx, root)
	if err != nil {
		return err
	}
	w.line("", lsLine{Node: root.String(), Type: self.Labels.Type, Description: self.Labels.Description, Active: true})
	return w.children(ctx, cl, root, self.Edges, "", 1)
}

type lsWriter struct {
	c    *nodeLsCmd
	out  io.Writer
	seen map[uuid.UUID]bool
}

func (w *lsWriter) children(ctx context.Context, cl *client.Client, parent uuid.UUID, kids []client.Edge, indent string, depth int) error {
	var shown []client.Edge
	for _, e := range kids {
		if e.Active || w.c.all {
			shown = append(shown, e)
		}
	}
	for i, e := range shown {
		last := i == len(shown)-1
		branch, next := "├── ", "│   "
		if last {
			branch, next = "└── ", "    "
		}
		repeat := w.seen[e.Other]
		w.seen[e.Other] = true
		w.line(indent+branch, lsLine{Node: e.Other.String(), Parent: parent.String(), Depth: depth,
			Type: e.Labels.Type, Description: e.Labels.Description, Active: e.Active, Deleted: e.Point.Tombstone,
			Moved: e.Point.Tombstone && e.Point.Value == crdt.EdgeMoved, Repeat: repeat})
		if repeat || (w.c.depth > 0 && depth >= w.c.depth) {
			continue
		}
		grand, err := cl.Node.Ls(ctx, e.Other)
		if err != nil {
			return err
		}
		if err := w.children(ctx, cl, e.Other, grand.Edges, indent+next, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func (w *lsWriter) line(prefix string, l lsLine) {
	if w.c.asJSON {
		_ = printJSON(w.out, l)
		return
	}
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteString(l.Node)
	if l.Type != "" {
		b.WriteString("  " + oneLine(l.Type, 40))
	}
	if l.Description != "" {
		b.WriteString("  " + fmt.Sprintf("%q", oneLine(l.Description, 60)))
	}
	switch {
	case l.Moved:
		b.WriteString("  [moved away]")
	case l.Deleted:
		b.WriteString("  [deleted]")
	case !l.Active:
		b.WriteString("  [inactive]")
	}
	if l.Repeat {
		b.WriteString("  (listed above)")
	}
	fmt.Fprintln(w.out, b.String())
}

// oneLine shortens s to n runes on one line, for a table or a tree.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
