package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// An import's records must belong to the server's tree: a node point to a
// node in the tree, an edge point to a parent in the tree. A node is in
// the tree when the server has it there (its root, or a node with an edge
// above it, in what the importer may read) or when an edge record of the
// same input, live or deleted, attaches it to a node in the tree, through
// any number of such edges. treeIndex collects, in the import's first
// pass, what deciding that needs; the server is then asked about every
// node at once, in batches (treeIndex.check).

// treeIndex is the nodes an import's records hang on and the edges its
// records add between them.
type treeIndex struct {
	ids     map[uuid.UUID]int32
	nodes   []uuid.UUID
	recs    []int      // per node: the records that hang on it
	first   []int      // per node: the input line of the first of them
	child   []bool     // per node: an edge record has it as its child
	edges   [][2]int32 // child, parent
	records int
}

func newTreeIndex() *treeIndex { return &treeIndex{ids: map[uuid.UUID]int32{}} }

func (x *treeIndex) id(n uuid.UUID) int32 {
	i, ok := x.ids[n]
	if !ok {
		i = int32(len(x.nodes))
		x.ids[n] = i
		x.nodes = append(x.nodes, n)
		x.recs = append(x.recs, 0)
		x.first = append(x.first, 0)
		x.child = append(x.child, false)
	}
	return i
}

// add notes the record of input line line: a node point hangs on its
// node, an edge point on its parent, and attaches its node to it.
func (x *treeIndex) add(line int, p *crdt.Point) {
	x.records++
	on := x.id(p.Node)
	if p.IsEdge() {
		c := on
		on = x.id(p.Parent)
		x.child[c] = true
		x.edges = append(x.edges, [2]int32{c, on})
	}
	if x.recs[on] == 0 {
		x.first[on] = line
	}
	x.recs[on]++
}

// orphans is what an import's records hold outside the tree.
type orphans struct {
	records, nodes int
	// examples are a few of the nodes, in input order, with the line of
	// the first record that hangs on each.
	examples []orphanNode
	// tops are the nodes outside the tree that no edge record attaches
	// to anything: the tops of the detached parts (a few of them), and
	// how many there are.
	tops  []uuid.UUID
	ntops int
}

type orphanNode struct {
	node uuid.UUID
	line int
}

const orphanExamples = 3

// outside returns the records outside the tree, given known[i]: the
// server has nodes[i] in its tree. A pure function of the index.
func (x *treeIndex) outside(known []bool) orphans {
	in := slices.Clone(known)
	below := make([][]int32, len(x.nodes))
	for _, e := range x.edges {
		below[e[1]] = append(below[e[1]], e[0])
	}
	var stack []int32
	for i, k := range in {
		if k {
			stack = append(stack, int32(i))
		}
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range below[n] {
			if !in[c] {
				in[c] = true
				stack = append(stack, c)
			}
		}
	}
	var o orphans
	var out []orphanNode
	for i := range x.nodes {
		if in[i] || x.recs[i] == 0 && x.child[i] {
			continue
		}
		if !x.child[i] {
			o.ntops++
			if len(o.tops) < orphanExamples {
				o.tops = append(o.tops, x.nodes[i])
			}
		}
		if x.recs[i] == 0 {
			continue
		}
		o.records += x.recs[i]
		o.nodes++
		out = append(out, orphanNode{x.nodes[i], x.first[i]})
	}
	slices.SortFunc(out, func(a, b orphanNode) int { return a.line - b.line })
	o.examples = out[:min(len(out), orphanExamples)]
	return o
}

// check asks the server which of the index's nodes its tree has, in
// batches of transport.MaxNodesAsked, and returns the records outside it.
func (x *treeIndex) check(ctx context.Context, cl *client.Client) (orphans, error) {
	known := make([]bool, len(x.nodes))
	for start := 0; start < len(x.nodes); start += transport.MaxNodesAsked {
		part := x.nodes[start:min(start+transport.MaxNodesAsked, len(x.nodes))]
		req := transport.NodesRequest{Nodes: make([]byte, 0, 16*len(part))}
		for _, n := range part {
			req.Nodes = append(req.Nodes, n[:]...)
		}
		var rep transport.NodesReply
		if err := cl.Request(ctx, transport.NameNodes, req, &rep); err != nil {
			return orphans{}, fmt.Errorf("asking the server which nodes it has: %w", err)
		}
		if len(rep.Known) != len(part) {
			return orphans{}, fmt.Errorf("asking the server which nodes it has: %d answers for %d nodes", len(rep.Known), len(part))
		}
		for i, k := range rep.Known {
			known[start+i] = k == 1
		}
	}
	return x.outside(known), nil
}

// describe says what o holds, for the error or the warning: counts, a few
// nodes with their lines, and the tops of the detached parts.
func (o orphans) describe(name string, root uuid.UUID) string {
	var b strings.Builder
	verb := "hang"
	if o.records == 1 {
		verb = "hangs"
	}
	fmt.Fprintf(&b, "%s: %d record%s %s on %d node%s outside this server's tree (root %s): neither the server nor an edge record of the input attaches them to it",
		name, o.records, plural(o.records), verb, o.nodes, plural(o.nodes), root)
	for i, e := range o.examples {
		sep := "; e.g."
		if i > 0 {
			sep = ","
		}
		fmt.Fprintf(&b, "%s node %s (line %d)", sep, e.node, e.line)
	}
	if o.ntops == 1 {
		fmt.Fprintf(&b, "; they all hang under node %s, which this server does not have", o.tops[0])
	} else if o.ntops > 1 {
		ids := make([]string, len(o.tops))
		for i, t := range o.tops {
			ids[i] = t.String()
		}
		fmt.Fprintf(&b, "; they hang under %d nodes this server does not have (%s", o.ntops, strings.Join(ids, ", "))
		if o.ntops > len(o.tops) {
			b.WriteString(", …")
		}
		b.WriteString(")")
	}
	return b.String()
}

// hint says how to proceed with records outside the tree.
func (o orphans) hint() string {
	top := "ROOT"
	if o.ntops == 1 {
		top = o.tops[0].String()
	}
	return fmt.Sprintf("nothing was written. A backup restores into a new instance started on empty data with the backed-up root, `siot serve --id %s`; to write these records anyway, outside the tree, add --allow-orphans", top)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
