//go:build unix

package store_test

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// The crash test re-executes the test binary as a child that writes to a
// store until it is killed with SIGKILL. These environment variables carry
// the child's instructions.
const (
	crashEnvDir   = "SIOT_CRASH_CHILD" // the data directory; set only in the child
	crashEnvSeed  = "SIOT_CRASH_SEED"  // the seed of the batches (and, in the parent, an override)
	crashEnvStart = "SIOT_CRASH_START" // the number of the child's first batch
)

const (
	crashRounds    = 24 // kills per run (6 with -short)
	crashMinRounds = 12 // kills per run however slow the machine
	// crashBudget ends a run early, after crashMinRounds kills, on a slow
	// or loaded machine.
	crashBudget  = 14 * time.Second
	crashNodes   = 300 // nodes the batches write to
	crashMaxAcks = 40  // the most acks a round waits for before it kills
	// crashChildBatches bounds a child that is never killed.
	crashChildBatches = 100_000
	// crashChildTimeout bounds each wait on the child: a child that neither
	// acks nor exits for this long has hung.
	crashChildTimeout = 60 * time.Second
	// crashBaseMs is the HLC physical time of batch 0; batch n is stamped
	// crashBaseMs+n, so a later batch beats every earlier one.
	crashBaseMs = 1_700_000_000_000
)

// TestCrashDurability kills a writing child with SIGKILL at random moments,
// again and again on one data directory, and checks after each kill that
// every acknowledged batch survived, that the batch in flight was applied
// whole or not at all, that nothing else was written, and that every index
// and digest still matches the registers (Verify).
//
// The seed is logged; rerun a failure with SIOT_CRASH_SEED=<seed>.
func TestCrashDurability(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot re-execute the test binary: %v", err)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashEnvSeed); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", crashEnvSeed, s, err)
		}
	}
	t.Logf("seed %d (rerun with %s=%d)", seed, crashEnvSeed, seed)
	rounds := crashRounds
	if testing.Short() {
		rounds = 6
	}
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c)) // the kill schedule
	dir := t.TempDir()
	m := newCrashModel(seed)
	start := time.Now()
	kills := 0
	for round := 1; round <= rounds; round++ {
		if round > crashMinRounds && time.Since(start) > crashBudget {
			t.Logf("time budget of %v spent: stopping after %d kills", crashBudget, kills)
			break
		}
		plan := newKillPlan(rng)
		first := m.lastAck + 1
		acks, err := runCrashChild(exe, dir, seed, first, plan)
		if err != nil {
			t.Fatalf("seed %d round %d (%v): %v", seed, round, plan, err)
		}
		kills++
		for _, n := range acks {
			m.ack(n)
		}
		if err := m.check(dir); err != nil {
			t.Fatalf("seed %d round %d (%v, batches %d..%d acked): %v", seed, round, plan, first, m.lastAck, err)
		}
	}
	t.Logf("%d kills, %d batches acked, %d registers; batch in flight found applied %d times, absent %d times; %v",
		kills, m.lastAck, len(m.acked), m.inflightApplied, m.inflightAbsent, time.Since(start).Round(time.Millisecond))
}

// TestCrashLeftEmptyLogFile opens a store whose directory holds what a
// kill during Open can leave: Badger creates a memtable file and a value-log
// file on every open and sizes each in the next system call, so a kill in
// between leaves it empty. TestCrashDurability hits this window now and
// then; this test hits it every time.
func TestCrashLeftEmptyLogFile(t *testing.T) {
	for _, name := range []string{"00001.mem", "000002.vlog"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := store.Open(store.DefaultConfig(dir))
			if err != nil {
				t.Fatal(err)
			}
			p := crdt.Point{Node: uuid.New(), Type: "temp", Key: "0", Value: 21,
				Time: crdt.NewTimestamp(crashBaseMs, 0), Origin: uuid.New()}
			if _, err := s.Apply([]crdt.Point{p}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// The file the next Open would create, as the kill left it.
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			s, err = store.Open(store.DefaultConfig(dir))
			if err != nil {
				t.Fatalf("open after a kill left an empty %s: %v", name, err)
			}
			defer s.Close()
			got, ok, err := s.Get(p.Register())
			if err != nil || !ok || crdt.Compare(&got, &p) != 0 {
				t.Fatalf("after reopening: %+v %v %v, want %+v", got, ok, err, p)
			}
			if err := s.Verify(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCrashChild is the child of TestCrashDurability; it does nothing (and
// passes) unless SIOT_CRASH_CHILD is set. It opens the store with the
// durable defaults and applies batches start, start+1, ... printing
// "ack n" on stdout once Apply(batch n) has returned nil, until killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		return
	}
	seed, err := strconv.ParseUint(os.Getenv(crashEnvSeed), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", crashEnvSeed, err)
	}
	first, err := strconv.Atoi(os.Getenv(crashEnvStart))
	if err != nil || first < 1 {
		t.Fatalf("%s=%q: want a batch number >= 1", crashEnvStart, os.Getenv(crashEnvStart))
	}
	say := func(line string) {
		// os.Stdout is unbuffered: the line is in the pipe when Write
		// returns, before the next batch starts.
		if _, err := os.Stdout.WriteString(line + "\n"); err != nil {
			t.Fatalf("stdout: %v", err)
		}
	}
	gen := newCrashGen(seed)
	for gen.n < first-1 {
		gen.next()
	}
	say("open")
	s, err := store.Open(store.DefaultConfig(dir))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	say("ready")
	for range crashChildBatches {
		b := gen.next()
		if _, err := s.Apply(b); err != nil {
			t.Fatalf("batch %d: %v", gen.n, err)
		}
		say(fmt.Sprintf("ack %d", gen.n))
	}
	t.Fatalf("not killed after %d batches", crashChildBatches)
}

// killPlan says when a round kills its child.
type killPlan struct {
	acks  int           // acks to wait for once the store is open; -1: kill while it opens
	delay time.Duration // then wait this long (under 10 ms), so kills land mid-write
}

func (p killPlan) String() string {
	if p.acks < 0 {
		return fmt.Sprintf("kill %v into Open", p.delay)
	}
	return fmt.Sprintf("kill %v after %d acks", p.delay, p.acks)
}

func newKillPlan(rng *rand.Rand) killPlan {
	var p killPlan
	switch r := rng.IntN(10); {
	case r == 0:
		p.acks = -1
	case r == 1:
		p.acks = 0
	default:
		p.acks = 1 + rng.IntN(crashMaxAcks)
	}
	if rng.IntN(3) > 0 {
		p.delay = time.Duration(rng.Int64N(int64(10 * time.Millisecond)))
	}
	return p
}

// runCrashChild runs one child from batch first, kills it as plan says and
// returns the batch numbers it acknowledged, all of them: the pipe is read
// to its end after the kill.
func runCrashChild(exe, dir string, seed uint64, first int, plan killPlan) (acks []int, err error) {
	cmd := exec.Command(exe, "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashEnvDir+"="+dir,
		crashEnvSeed+"="+strconv.FormatUint(seed, 10),
		crashEnvStart+"="+strconv.Itoa(first))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	lines := make(chan string)
	go func() { // ends at EOF, which the kill below guarantees
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	var other []string // anything else the child printed
	opened, ready := false, false
	var protoErr error
	handle := func(l string) {
		switch {
		case l == "open":
			opened = true
		case l == "ready":
			ready = true
		case strings.HasPrefix(l, "ack "):
			n, err := strconv.Atoi(l[4:])
			if err == nil && n != first+len(acks) && protoErr == nil {
				err = fmt.Errorf("acked batch %d, expected %d", n, first+len(acks))
			}
			if err != nil && protoErr == nil {
				protoErr = fmt.Errorf("bad ack %q: %v", l, err)
			}
			acks = append(acks, n)
		default:
			other = append(other, l)
		}
	}
	reached := func() bool {
		if plan.acks < 0 {
			return opened
		}
		return ready && len(acks) >= plan.acks
	}

	deadline := time.NewTimer(crashChildTimeout)
	defer deadline.Stop()
	eof, timedOut := false, false
	for !eof && !timedOut && !reached() {
		select {
		case l, ok := <-lines:
			if !ok {
				eof = true
				break
			}
			handle(l)
		case <-deadline.C:
			timedOut = true
		}
	}
	if !eof && !timedOut && plan.delay > 0 {
		// The kill moment itself: keep reading meanwhile so that the child
		// never blocks on a full pipe.
		delay := time.NewTimer(plan.delay)
	wait:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					eof = true
					break wait
				}
				handle(l)
			case <-delay.C:
				break wait
			}
		}
		delay.Stop()
	}
	// The kill fails only when the child is already gone, which Wait
	// reports below.
	_ = cmd.Process.Kill()
	for l := range lines {
		handle(l)
	}
	waitErr := cmd.Wait()

	show := func(what string) error {
		return fmt.Errorf("%s\nchild stdout (other than acks):\n%s\nchild stderr:\n%s",
			what, strings.Join(other, "\n"), stderr.String())
	}
	if timedOut {
		return acks, show(fmt.Sprintf("child made no progress for %v (after %d acks)", crashChildTimeout, len(acks)))
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return acks, show(fmt.Sprintf("child ended by itself before the kill: %v", waitErr))
	}
	if protoErr != nil {
		return acks, show(protoErr.Error())
	}
	if strings.Contains(stderr.String(), "DATA RACE") || strings.Contains(stderr.String(), "panic:") {
		return acks, show("child reported a race or a panic")
	}
	return acks, nil
}

// crashModel is what the parent knows: the batches acknowledged so far, as
// the winner of each register they wrote, and the batch that may be in
// flight.
type crashModel struct {
	gen     *crashGen
	lastAck int            // the last acknowledged batch (0: none)
	pending [][]crdt.Point // batches lastAck+1, lastAck+2, ... generated ahead
	acked   map[crdt.Register]crdt.Point
	durable int       // the highest batch a reopen has shown applied
	root    uuid.UUID // the store's root and instance, once seen
	inst    uuid.UUID
	// How often a reopen found the batch in flight applied (the kill fell
	// between commit and ack) and not applied.
	inflightApplied, inflightAbsent int
}

func newCrashModel(seed uint64) *crashModel {
	return &crashModel{gen: newCrashGen(seed), acked: make(map[crdt.Register]crdt.Point)}
}

// batch returns batch n, which must not be acknowledged yet.
func (m *crashModel) batch(n int) []crdt.Point {
	for m.gen.n < n {
		m.pending = append(m.pending, m.gen.next())
	}
	return m.pending[n-m.lastAck-1]
}

// ack records batch n as acknowledged; n is lastAck+1 (runCrashChild
// checks the order).
func (m *crashModel) ack(n int) {
	for _, p := range m.batch(n) {
		if cur, ok := m.acked[p.Register()]; !ok || crdt.Compare(&p, &cur) > 0 {
			m.acked[p.Register()] = p
		}
	}
	m.pending = m.pending[1:]
	m.lastAck = n
}

// check reopens the store in dir after a kill and compares it with the
// model.
func (m *crashModel) check(dir string) (err error) {
	s, err := store.Open(store.DefaultConfig(dir))
	if err != nil {
		return fmt.Errorf("reopen after SIGKILL: %w", err)
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	// Durability: every acknowledged write is there, or a later one.
	for reg, want := range m.acked {
		got, ok, err := s.Get(reg)
		if err != nil {
			return err
		}
		if !ok || crdt.Compare(&got, &want) < 0 {
			return fmt.Errorf("acknowledged write lost: register %+v holds %+v (found %v), acked %+v", reg, got, ok, want)
		}
	}

	// Atomicity: the batch in flight is there whole or not at all.
	inflight := m.batch(m.lastAck + 1)
	applied := 0
	for _, p := range inflight {
		got, ok, err := s.Get(p.Register())
		if err != nil {
			return err
		}
		if ok && crdt.Compare(&got, &p) == 0 {
			applied++
		}
	}
	if applied != 0 && applied != len(inflight) {
		return fmt.Errorf("batch %d in flight torn: %d of its %d points applied", m.lastAck+1, applied, len(inflight))
	}
	if applied == 0 && len(inflight) > 0 && m.durable > m.lastAck {
		return fmt.Errorf("batch %d was on disk at the previous reopen and is gone", m.lastAck+1)
	}
	want := m.acked
	if applied == 0 {
		m.inflightAbsent++
	} else {
		m.inflightApplied++
		m.durable = m.lastAck + 1
		want = make(map[crdt.Register]crdt.Point, len(m.acked)+len(inflight))
		for r, p := range m.acked {
			want[r] = p
		}
		for _, p := range inflight {
			want[p.Register()] = p
		}
	}

	// Nothing else: the store holds exactly these registers and winners.
	var maxTime crdt.Timestamp
	for _, p := range want {
		maxTime = max(maxTime, p.Time)
	}
	held := 0
	err = s.ScanAll(func(p *crdt.Point) error {
		held++
		w, ok := want[p.Register()]
		if !ok {
			return fmt.Errorf("register %+v holds %+v, which no batch up to %d wrote", p.Register(), *p, m.lastAck+1)
		}
		if crdt.Compare(p, &w) != 0 {
			return fmt.Errorf("register %+v holds %+v, want %+v", p.Register(), *p, w)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if held != len(want) {
		return fmt.Errorf("store holds %d registers, want %d", held, len(want))
	}
	if got := s.MaxTime(); got != maxTime {
		return fmt.Errorf("MaxTime = %v, want %v", got, maxTime)
	}
	if m.root == uuid.Nil {
		m.root, m.inst = s.Root(), s.Instance()
	} else if s.Root() != m.root || s.Instance() != m.inst {
		return fmt.Errorf("root/instance changed from %v/%v to %v/%v", m.root, m.inst, s.Root(), s.Instance())
	}
	if err := s.Verify(); err != nil {
		return err
	}
	return nil
}

// crashGen generates the batches of a seed: batch n depends only on the
// seed and n (through the batches before it, which it replays). It keeps a
// model of the tree, the parent each node was last attached to, so that
// moves and deletes name edges that exist. Batches never write a register
// twice.
type crashGen struct {
	seed    uint64
	n       int   // the number of the last batch generated
	parent  []int // the model's parent of each node; -1: none
	nodes   []uuid.UUID
	origins []uuid.UUID
}

func newCrashGen(seed uint64) *crashGen {
	rng := rand.New(rand.NewPCG(seed, 0x6e6f646573))
	g := &crashGen{seed: seed, parent: make([]int, crashNodes)}
	randomID := func() uuid.UUID {
		var u uuid.UUID
		for i := range u {
			u[i] = byte(rng.Uint32())
		}
		u[6] = u[6]&0x0f | 0x40 // version 4
		u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
		return u
	}
	for i := range g.parent {
		g.parent[i] = -1
		g.nodes = append(g.nodes, randomID())
	}
	for range 3 {
		g.origins = append(g.origins, randomID())
	}
	return g
}

// next returns the next batch, normalized.
func (g *crashGen) next() []crdt.Point {
	g.n++
	rng := rand.New(rand.NewPCG(g.seed, uint64(g.n)))
	var pts []crdt.Point
	touched := make(map[crdt.Register]bool)
	// add appends ps, all or none: none when one of their registers is
	// already written by this batch.
	add := func(ps ...crdt.Point) bool {
		for i := range ps {
			ps[i].Normalize()
			if touched[ps[i].Register()] {
				return false
			}
		}
		for _, p := range ps {
			touched[p.Register()] = true
			pts = append(pts, p)
		}
		return true
	}
	var logical uint16
	stamp := func() (crdt.Timestamp, uuid.UUID) {
		logical++
		return crdt.NewTimestamp(crashBaseMs+int64(g.n), logical), g.origins[rng.IntN(len(g.origins))]
	}
	edge := func(parent, child int, tomb bool, value float64) crdt.Point {
		ts, o := stamp()
		return crdt.Point{Node: g.nodes[child], Parent: g.nodes[parent], Type: crdt.TypeEdge,
			Tombstone: tomb, Value: value, Time: ts, Origin: o}
	}

	ops := 1 + rng.IntN(16)
	if rng.IntN(32) == 0 {
		ops = 50 + rng.IntN(150)
	}
	for range ops {
		c := 1 + rng.IntN(crashNodes-1) // node 0 stays at the top
		old := g.parent[c]
		switch r := rng.IntN(100); {
		case r < 35: // a measurement, now and then deleted
			ts, o := stamp()
			add(crdt.Point{Node: g.nodes[c], Type: []string{"temp", "voltage"}[rng.IntN(2)],
				Key: strconv.Itoa(rng.IntN(2)), Value: math.Round(rng.NormFloat64()*1000) / 10,
				Tombstone: rng.IntN(20) == 0, Time: ts, Origin: o})
		case r < 50: // a text value
			ts, o := stamp()
			add(crdt.Point{Node: g.nodes[c], Type: []string{"description", "name"}[rng.IntN(2)],
				Text: crashText(rng), Time: ts, Origin: o})
		case r < 65: // attach a node that has no parent
			if old >= 0 {
				continue
			}
			if to := rng.IntN(c); add(edge(to, c, false, 0)) {
				g.parent[c] = to
			}
		case r < 80: // move: a new edge and a moved tombstone, one HLC and origin
			if old < 0 {
				continue
			}
			to := rng.IntN(c)
			if rng.IntN(50) == 0 {
				to = rng.IntN(crashNodes) // anywhere: may close a cycle
			}
			if to == old || to == c {
				continue
			}
			nw, gone := edge(to, c, false, 0), edge(old, c, true, crdt.EdgeMoved)
			gone.Time, gone.Origin = nw.Time, nw.Origin
			if add(nw, gone) {
				g.parent[c] = to
			}
		case r < 88: // delete
			if old >= 0 && add(edge(old, c, true, 0)) {
				g.parent[c] = -1
			}
		default: // a point of the edge itself
			if old < 0 {
				continue
			}
			ts, o := stamp()
			add(crdt.Point{Node: g.nodes[c], Parent: g.nodes[old], Type: "role", Key: strconv.Itoa(rng.IntN(2)),
				Value: float64(rng.IntN(4)), Text: crashText(rng), Time: ts, Origin: o})
		}
	}
	return pts
}

// crashText returns a short text, now and then a few KiB, with some
// multi-byte characters.
func crashText(rng *rand.Rand) string {
	n := rng.IntN(48)
	if rng.IntN(25) == 0 {
		n = 1024 + rng.IntN(7*1024)
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyz 0123456789-é°日"
	runes := []rune(alphabet)
	var b strings.Builder
	for range n {
		b.WriteRune(runes[rng.IntN(len(runes))])
	}
	return b.String()
}
