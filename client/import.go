package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/record"
	"github.com/siot-io/siot/transport"
)

// MaxRecordLine bounds one line of an import: a point's text is at most
// 64 KiB, which JSON escaping can grow six-fold.
const MaxRecordLine = 512 << 10

// ImportOptions configure Import.
type ImportOptions struct {
	// Name names the input in errors ("standard input").
	Name string
	// FromLine skips the lines before it (0 or 1: none); line numbers
	// stay those of the whole input.
	FromLine int
	// Batch and Linger are the Writer's.
	Batch  int
	Linger time.Duration
	// AllowOrphans writes the records outside the server's tree at the
	// end of the input instead of refusing them.
	AllowOrphans bool
	// OnAck, when set, is called after each acknowledged request with the
	// input lines of its records and its result.
	OnAck func(lines []int, res Result)
}

// ImportResult counts an import's records.
type ImportResult struct {
	Result
	// Records is the records read and written.
	Records int
	// Orphans is the records outside the tree written (AllowOrphans).
	Orphans int
}

// Import reads point records, one JSON object per line (package record),
// and writes them as it reads them: a record is sent within Linger of
// being read, one request at a time, in input order, so records without
// "hlc" are stamped in input order. Blank lines are skipped.
//
// A record must belong to the server's tree: a node point to a node in
// it, an edge point to a parent in it. A node is in the tree when the
// server has it there or when an edge record read before, live or
// deleted, attaches it to such a node. A record outside the tree is held
// back until the input attaches its node; at the end of the input the
// records still held are refused (an *ImportError wrapping an
// *OrphansError), or written with AllowOrphans.
//
// An invalid line stops the import: the records before it are written
// first. Any failure is an *ImportError saying exactly which lines are
// written.
func (c *Client) Import(ctx context.Context, r io.Reader, opt ImportOptions) (ImportResult, error) {
	if opt.Name == "" {
		opt.Name = "input"
	}
	if opt.FromLine < 1 {
		opt.FromLine = 1
	}
	done := &lineSet{from: opt.FromLine}  // lines written, or not records
	acked := &lineSet{from: opt.FromLine} // lines written
	gate := &treeGate{c: c, allow: opt.AllowOrphans}
	userAck := opt.OnAck
	w := c.NewWriter(ctx, WriterOptions{Batch: opt.Batch, Linger: opt.Linger, gate: gate,
		OnAck: func(tags []int, res Result) {
			for _, l := range tags {
				done.set(l)
				acked.set(l)
			}
			if userAck != nil {
				userAck(tags, res)
			}
		}})
	var res ImportResult
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxRecordLine)
	line := 0
	var stop error // why reading stopped early
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if line < opt.FromLine {
			continue
		}
		if len(strings.TrimSpace(string(b))) == 0 {
			done.set(line)
			continue
		}
		p, err := record.Parse(b)
		if err != nil {
			stop = &Error{Kind: ErrInvalid, Msg: fmt.Sprintf("%s, line %d: %v", opt.Name, line, err), Err: err}
			line--
			break
		}
		res.Records++
		if err := w.Write(p, line); err != nil {
			line--
			break
		}
	}
	if stop == nil && w.Err() == nil {
		if err := sc.Err(); err != nil {
			if errors.Is(err, bufio.ErrTooLong) {
				stop = &Error{Kind: ErrInvalid, Msg: fmt.Sprintf("%s, line %d: longer than %d bytes", opt.Name, line+1, MaxRecordLine), Err: err}
			} else {
				stop = &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("%s: %v", opt.Name, err), Err: err}
			}
		}
	}
	if stop != nil {
		// What was read before the bad line is written first, but not
		// the records still held outside the tree: the input ends here.
		gate.stopped = true
	}
	wres, werr := w.Close()
	res.Result = wres
	res.Orphans = gate.written
	if werr == nil && stop == nil {
		return res, nil
	}
	ie := &ImportError{Name: opt.Name, Read: line, Acked: w.Acked(), Err: werr}
	if werr == nil {
		ie.Err = stop
	}
	var we *WriteError
	if errors.As(werr, &we) {
		ie.Batch = we.Tags
		ie.Refused = IsRefused(we.Err)
	}
	ie.Resume = done.first()
	ie.AckedAfter = acked.countFrom(ie.Resume)
	ie.Held = gate.heldLines()
	return res, ie
}

// ImportError is an import that stopped. Every record on the lines
// before Resume is written; of the lines from Resume on, AckedAfter
// counts the records in acknowledged requests (written too). Batch is the lines of the request that
// failed, if one did: refused by the server (not written) or without a
// reply (unknown). Held is lines of records outside the tree, not written.
type ImportError struct {
	Name   string
	Read   int // the last line read
	Acked  int // records acknowledged in all
	Resume int // the first line not known written
	// AckedAfter is the records after Resume that are written.
	AckedAfter int
	Batch      []int
	Refused    bool
	Held       []int
	Err        error
}

func (e *ImportError) Error() string {
	if len(e.Batch) > 0 {
		first, last := e.Batch[0], e.Batch[len(e.Batch)-1]
		if e.Refused {
			return fmt.Sprintf("%s, lines %d-%d: server refused the batch (not written): %v", e.Name, first, last, e.Err)
		}
		return fmt.Sprintf("%s, lines %d-%d: no reply from the server (the batch may or may not be written): %v", e.Name, first, last, e.Err)
	}
	return e.Err.Error()
}

func (e *ImportError) Unwrap() error { return e.Err }

// lineSet is the input lines known written or not records.
type lineSet struct {
	from int
	bits []uint64
}

func (s *lineSet) set(line int) {
	i := line - s.from
	for i/64 >= len(s.bits) {
		s.bits = append(s.bits, 0)
	}
	s.bits[i/64] |= 1 << (i % 64)
}

// countFrom returns how many lines from line on are in the set.
func (s *lineSet) countFrom(line int) int {
	n := 0
	for i := max(line-s.from, 0); i < len(s.bits)*64; i++ {
		if s.bits[i/64]&(1<<(i%64)) != 0 {
			n++
		}
	}
	return n
}

// first returns the first line not in the set.
func (s *lineSet) first() int {
	for w, b := range s.bits {
		if b != ^uint64(0) {
			for i := range 64 {
				if b&(1<<i) == 0 {
					return s.from + w*64 + i
				}
			}
		}
	}
	return s.from + len(s.bits)*64
}

// treeGate holds back the records of an import that are outside the
// server's tree until the input attaches their node (see Import). It is
// used by the Writer's goroutine only.
type treeGate struct {
	c       *Client
	allow   bool
	stopped bool                      // the input stopped early: the held records stay held
	in      map[uuid.UUID]bool        // true: in the tree; false: the server does not have it there
	held    map[uuid.UUID][]writeItem // records waiting for their node, in input order
	nheld   int
	written int // held records written at the end (allow)
}

// hangsOn is the node a record needs in the tree: an edge point's parent,
// a node point's node.
func hangsOn(p *Point) uuid.UUID {
	if p.IsEdge() {
		return p.Parent
	}
	return p.Node
}

// pass returns the items that may be sent now, in order: those whose
// node is in the tree, and the held ones an edge among them attaches,
// at the place of that edge. It asks the server about the nodes it has
// not seen.
func (g *treeGate) pass(ctx context.Context, items []writeItem) ([]writeItem, error) {
	if g.in == nil {
		g.in, g.held = map[uuid.UUID]bool{}, map[uuid.UUID][]writeItem{}
	}
	var ask []uuid.UUID
	for i := range items {
		if n := hangsOn(&items[i].p); !slices.Contains(ask, n) {
			if _, seen := g.in[n]; !seen {
				ask = append(ask, n)
			}
		}
	}
	if err := g.ask(ctx, ask); err != nil {
		return nil, err
	}
	out := make([]writeItem, 0, len(items))
	var visit func(it writeItem)
	visit = func(it writeItem) {
		n := hangsOn(&it.p)
		if !g.in[n] {
			g.held[n] = append(g.held[n], it)
			g.nheld++
			return
		}
		out = append(out, it)
		if it.p.IsEdge() && !g.in[it.p.Node] {
			child := it.p.Node
			g.in[child] = true
			waiting := g.held[child]
			delete(g.held, child)
			g.nheld -= len(waiting)
			for _, h := range waiting {
				visit(h)
			}
		}
	}
	for _, it := range items {
		visit(it)
	}
	return out, nil
}

// ask asks the server which of nodes its tree has, in requests of
// transport.MaxNodesAsked.
func (g *treeGate) ask(ctx context.Context, nodes []uuid.UUID) error {
	for start := 0; start < len(nodes); start += transport.MaxNodesAsked {
		part := nodes[start:min(start+transport.MaxNodesAsked, len(nodes))]
		req := transport.NodesRequest{Nodes: make([]byte, 0, 16*len(part))}
		for _, n := range part {
			req.Nodes = append(req.Nodes, n[:]...)
		}
		var rep transport.NodesReply
		if err := g.c.Request(ctx, transport.NameNodes, req, &rep); err != nil {
			return fmt.Errorf("asking the server which nodes it has: %w", err)
		}
		if len(rep.Known) != len(part) {
			return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("asking the server which nodes it has: %d answers for %d nodes", len(rep.Known), len(part))}
		}
		for i, k := range rep.Known {
			g.in[part[i]] = k == 1
		}
	}
	return nil
}

// end returns the records still held at the end of the input, in input
// order: none when the input stopped early.
func (g *treeGate) end() []writeItem {
	if g.stopped || g.nheld == 0 {
		return nil
	}
	var out []writeItem
	for _, its := range g.held {
		out = append(out, its...)
	}
	slices.SortFunc(out, func(a, b writeItem) int { return a.tag - b.tag })
	return out
}

// orphanErr refuses the held records, unless the gate allows them: then
// they are counted and released.
func (g *treeGate) orphanErr(ctx context.Context, held []writeItem) error {
	if g.allow {
		g.written = len(held)
		clear(g.held)
		g.nheld = 0
		return nil
	}
	oe := &OrphansError{Records: len(held)}
	seen := map[uuid.UUID]bool{}
	for _, it := range held {
		n := hangsOn(&it.p)
		if !seen[n] {
			seen[n] = true
			oe.Nodes++
			if len(oe.Examples) < 3 {
				oe.Examples = append(oe.Examples, OrphanNode{Node: n, Line: it.tag})
			}
		}
	}
	oe.Root, _ = g.c.ServerRoot(ctx)
	return oe
}

// heldLines returns the lines of the records held, in order.
func (g *treeGate) heldLines() []int {
	var out []int
	for _, its := range g.held {
		for _, it := range its {
			out = append(out, it.tag)
		}
	}
	slices.Sort(out)
	return out
}

// OrphansError refuses an import's records outside the server's tree:
// none of them is written.
type OrphansError struct {
	Records, Nodes int
	Examples       []OrphanNode
	Root           uuid.UUID // the server's
}

// OrphanNode is a node outside the tree and the line of its first record.
type OrphanNode struct {
	Node uuid.UUID
	Line int
}

func (e *OrphansError) Error() string {
	var b strings.Builder
	verb := "hang"
	if e.Records == 1 {
		verb = "hangs"
	}
	fmt.Fprintf(&b, "%d record%s %s on %d node%s outside this server's tree (root %s): neither the server nor an edge record of the input attaches them to it",
		e.Records, plural(e.Records), verb, e.Nodes, plural(e.Nodes), e.Root)
	for i, ex := range e.Examples {
		sep := "; e.g."
		if i > 0 {
			sep = ","
		}
		fmt.Fprintf(&b, "%s node %s (line %d)", sep, ex.Node, ex.Line)
	}
	b.WriteString("; they are not written (to write them anyway, outside the tree, add --allow-orphans)")
	return b.String()
}

// Is makes an OrphansError an ErrInvalid.
func (e *OrphansError) Is(target error) bool { return target == ErrInvalid }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
