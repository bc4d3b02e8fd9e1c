package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// The authorization matrix: every identity against every operation, in
// and out of its scope, over real NATS on one cloud node. Each cell states
// the outcome the rules of authz.go promise and checks it exactly: an
// allowed request's reply and its effect on the store; a refused one's
// error, the unchanged store and the counter that counts it.

// mxUUID returns a version-4 UUID drawn from rng, so that a seed
// reproduces every ID of a test.
func mxUUID(rng *rand.Rand) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[:8], rng.Uint64())
	binary.BigEndian.PutUint64(u[8:], rng.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// mxWho is one identity with its connection.
type mxWho struct {
	name  string
	id    transport.Identity
	nc    *nats.Conn
	admin bool // the local administrator: sees secrets
}

// mxCall sends req as request name of w and decodes the reply into out.
func mxCall(w *mxWho, name string, req, out any) error {
	b, err := transport.Encode(req)
	if err != nil {
		return err
	}
	m, err := w.nc.Request(transport.Subject(w.id, name), b, 5*time.Second)
	if err != nil {
		return err
	}
	return transport.Decode(m.Data, 0, out)
}

// mxCounts is a snapshot of the counters a cell may move, by name.
type mxCounts map[string]uint64

// mxFixture is the cloud node, its tree and the test's randomness.
type mxFixture struct {
	n     *node
	rng   *rand.Rand
	hash  string // a valid password hash, for password points
	names map[uuid.UUID]string
	marks map[uuid.UUID]float64 // each fixture node's "mark" point
	seq   int                   // numbers unique point types, keys and addresses

	root, siteA, devA, sA1, devB, sB1, userA, adminA, userA2 uuid.UUID
	siteB, userB, userB2, sB, userX                          uuid.UUID
}

func (f *mxFixture) newID(name string) uuid.UUID {
	u := mxUUID(f.rng)
	f.names[u] = name
	return u
}

func (f *mxFixture) name(u uuid.UUID) string {
	if s, ok := f.names[u]; ok {
		return s
	}
	return u.String()
}

func (f *mxFixture) next() int {
	f.seq++
	return f.seq
}

// addNode writes a node of type typ under parents with a mark point.
func (f *mxFixture) addNode(name, typ string, parents ...uuid.UUID) uuid.UUID {
	u := f.newID(name)
	f.marks[u] = float64(len(f.marks) + 1)
	pts := []crdt.Point{{Node: u, Type: crdt.TypeNodeType, Key: "0", Text: typ}, valPt(u, "mark", f.marks[u])}
	for _, p := range parents {
		pts = append(pts, edgePt(p, u))
	}
	f.n.write(pts...)
	return u
}

// addUser writes a user under parents with a password, an administrator
// of its first parent when admin is set.
func (f *mxFixture) addUser(name string, admin bool, parents ...uuid.UUID) uuid.UUID {
	u := f.addNode(name, "user", parents...)
	pts := []crdt.Point{{Node: u, Type: crdt.TypePassword, Key: "0", Text: f.hash}}
	if admin {
		pts = append(pts, crdt.Point{Node: u, Parent: parents[0], Type: crdt.TypeRole, Key: "0", Text: crdt.RoleAdmin})
	}
	f.n.write(pts...)
	return u
}

// userCreds returns a token for user u, issued against its stored
// password point as siot login would issue it.
func (f *mxFixture) userCreds(t *testing.T, u uuid.UUID) *transport.Creds {
	t.Helper()
	pw, ok, err := f.n.st.Get(crdt.Register{Node: u, Type: crdt.TypePassword, Key: crdt.DefaultKey})
	if err != nil || !ok {
		t.Fatalf("password of %s: %v %v", f.name(u), ok, err)
	}
	exp := time.Now().Add(time.Hour)
	tok := transport.NewToken(f.n.rep.cfg.TokenKey, u, uint64(pw.Time), exp)
	return &transport.Creds{Kind: transport.KindUser, Node: u, Token: tok, Expires: exp}
}

func (f *mxFixture) connect(t *testing.T, name string, c *transport.Creds) *mxWho {
	t.Helper()
	w := &mxWho{name: name, nc: f.n.dial(c), admin: c == nil}
	if c == nil {
		w.id = adminID
	} else {
		id, err := c.Identity()
		if err != nil {
			t.Fatal(err)
		}
		w.id = id
	}
	return w
}

// newMxFixture starts the cloud and builds
//
//	root → siteA → devA (device) → sA1
//	             → devB (device) → sB1
//	             → userA, adminA (admin of siteA), userA2 (users)
//	     → siteB → userB, userB2 (users), sB
//	userX: a user under both sites
func newMxFixture(t *testing.T, rng *rand.Rand) *mxFixture {
	t.Helper()
	f := &mxFixture{rng: rng, names: map[uuid.UUID]string{}, marks: map[uuid.UUID]float64{}}
	var salt [32]byte
	for i := 0; i < len(salt); i += 8 {
		binary.LittleEndian.PutUint64(salt[i:], rng.Uint64())
	}
	hash, err := transport.HashPassword("pw", rand.NewChaCha8(salt))
	if err != nil {
		t.Fatal(err)
	}
	f.hash = hash
	f.root = f.newID("root")
	f.n = startNode(t, "cloud", nodeOpts{root: f.root})
	f.siteA = f.addNode("siteA", "site", f.root)
	f.siteB = f.addNode("siteB", "site", f.root)
	f.devA = f.addNode("devA", "device", f.siteA)
	f.devB = f.addNode("devB", "device", f.siteA)
	f.sA1 = f.addNode("sA1", "sensor", f.devA)
	f.sB1 = f.addNode("sB1", "sensor", f.devB)
	f.sB = f.addNode("sB", "sensor", f.siteB)
	f.userA = f.addUser("userA", false, f.siteA)
	f.adminA = f.addUser("adminA", true, f.siteA)
	f.userA2 = f.addUser("userA2", false, f.siteA)
	f.userB = f.addUser("userB", false, f.siteB)
	f.userB2 = f.addUser("userB2", false, f.siteB)
	f.userX = f.addUser("userX", false, f.siteA, f.siteB)
	// A key on a user node: a secret its page must hide.
	f.n.write(crdt.Point{Node: f.userA2, Type: crdt.TypeAuthKey, Key: fmt.Sprintf("UFAKE%016X", rng.Uint64()), Value: 1, Text: "device"})
	return f
}

func (f *mxFixture) counts() mxCounts {
	m := f.n.rep.Metrics()
	c := mxCounts{"seq": m.LastSeq, "links refused": m.LinksRefused}
	for _, x := range m.RequestsRefused {
		c["requests refused/"+x.Label] = x.Value
	}
	for _, x := range m.RejectedWrites {
		c["writes rejected/"+x.Label] = x.Value
	}
	for _, x := range m.RejectedPoints {
		c["points rejected/"+x.Label] = x.Value
	}
	var conns uint64
	for _, v := range f.n.srv.Refused() {
		conns += v
	}
	c["connections refused"] = conns
	return c
}

// wantDelta checks that every counter moved by what want says (0 when
// absent) since before.
func (f *mxFixture) wantDelta(t *testing.T, before, want mxCounts) {
	t.Helper()
	after := f.counts()
	keys := make([]string, 0, len(after))
	for k := range after {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		d := after[k] - before[k]
		if k == "seq" {
			// The upstream's own writes of device state (an edge session
			// that came up or ended) are not the request's.
			d = uint64(changesBesidesDeviceState(f.n, before[k]))
		}
		if d != want[k] {
			t.Errorf("%s moved by %d, want %d", k, d, want[k])
		}
	}
}

func wantDenied(t *testing.T, err error) {
	t.Helper()
	if err == nil || !transport.IsRemote(err) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("got %v, want a remote error saying permission denied", err)
	}
}

func mxDecode(t *testing.T, b []byte) []crdt.Point {
	t.Helper()
	pts, err := crdt.DecodeBatch(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return pts
}

func (f *mxFixture) fmtPts(pts []crdt.Point) []string {
	out := make([]string, len(pts))
	for i, p := range pts {
		out[i] = fmt.Sprintf("%s/%s/%s/%s=%v,%q,%v@%v", f.name(p.Node), f.name(p.Parent), p.Type, p.Key, p.Value, p.Text, p.Tombstone, p.Time)
	}
	return out
}

func (f *mxFixture) wantPts(t *testing.T, what string, got, want []crdt.Point) {
	t.Helper()
	g, w := f.fmtPts(got), f.fmtPts(want)
	if !slices.Equal(g, w) {
		t.Errorf("%s:\n got  %q\n want %q", what, g, w)
	}
}

// scopeSet is the set of nodes below roots over live edges (the roots
// included), walked down from the roots: the model a scoped identity's
// reads are checked against. nil roots: everything.
func (f *mxFixture) scopeSet(t *testing.T, roots []uuid.UUID) map[uuid.UUID]bool {
	t.Helper()
	if roots == nil {
		return nil
	}
	in := map[uuid.UUID]bool{}
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if in[cur] {
			continue
		}
		in[cur] = true
		err := f.n.st.Children(cur, func(c store.Child) error {
			if c.Active {
				queue = append(queue, c.ID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return in
}

// visible keeps the points of pts an identity with scope set in (nil:
// everything) may read: secrets only for the administrator, node points
// of nodes in the set, edge points below them.
func visible(pts []crdt.Point, in map[uuid.UUID]bool, secrets bool) []crdt.Point {
	var out []crdt.Point
	for _, p := range pts {
		if crdt.IsSecret(p.Type) && !secrets {
			continue
		}
		n := p.Node
		if p.IsEdge() {
			n = p.Parent
		}
		if in != nil && !in[n] {
			continue
		}
		out = append(out, p)
	}
	return out
}

// systemExport is everything under root (uuid.Nil: everything), read
// without any identity.
func (f *mxFixture) systemExport(t *testing.T, root uuid.UUID) []crdt.Point {
	t.Helper()
	var all []crdt.Point
	req := transport.ExportRequest{Root: root}
	for {
		page, err := f.n.rep.ExportPage(req)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, mxDecode(t, page.Points)...)
		if !page.More {
			return all
		}
		req.After = page.Next
	}
}

func (f *mxFixture) getReg(p crdt.Point) crdt.Point {
	key := p.Key
	if key == "" {
		key = crdt.DefaultKey
	}
	return f.n.get(p.Node, p.Parent, p.Type, key)
}

// mxSpec is one identity and the rules that apply to it.
type mxSpec struct {
	who *mxWho
	// roots whose subtrees it reads (nil: everything).
	roots []uuid.UUID
	// in: nodes whose points it may read and write; out: nodes it may
	// not (the administrator has none).
	in, out []uuid.UUID
	// structure: parents inside its scope (sIn, sIn2) and outside it
	// (sOut, sOut2); inStructOK says it may change structure inside.
	sIn, sIn2, sOut, sOut2 uuid.UUID
	inStructOK             bool
	// above is an edge above its scope it must not delete (zero: none).
	above crdt.Point
	// keyIn, keyOut: nodes inside and outside to put an authKey on.
	keyIn, keyOut uuid.UUID
	keyInOK       bool
	// siteUser: a user of its site (or, for a device, one it cannot
	// reach) to set a password and an email on; siteUserOK says it may.
	siteUser   uuid.UUID
	siteUserOK bool
	// siteUserReadable: it may read siteUser's page (never its secrets).
	siteUserReadable bool
	// ownSecret: a node in scope that holds a secret.
	ownSecret uuid.UUID
	// escalate: a role point granting admin; escalateOK says it may.
	escalate   crdt.Point
	escalateOK bool
	// helloOwn, helloOther: roots to link as; helloOwnOK says it may
	// link as helloOwn.
	helloOwn, helloOther uuid.UUID
	helloOwnOK           bool
	device               bool
}

type mxCell struct {
	name string
	run  func(t *testing.T)
}

// TestAuthorizationMatrix checks every identity (anonymous, two devices, a
// plain user, an administrator user, a user of another site, the local
// administrator) against every operation inside and outside its scope.
func TestAuthorizationMatrix(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x6d6174726978))
	f := newMxFixture(t, rng)
	n := f.n
	start := time.Now()

	devA := f.connect(t, "deviceA", n.deviceCreds(f.devA))
	devB := f.connect(t, "deviceB", n.deviceCreds(f.devB))
	userA := f.connect(t, "userA", f.userCreds(t, f.userA))
	adminA := f.connect(t, "adminA", f.userCreds(t, f.adminA))
	userB := f.connect(t, "userB", f.userCreds(t, f.userB))
	admin := f.connect(t, "admin", nil)

	role := func(parent, child uuid.UUID) crdt.Point {
		return crdt.Point{Node: child, Parent: parent, Type: crdt.TypeRole, Key: "0", Text: crdt.RoleAdmin}
	}
	tomb := func(parent, child uuid.UUID) crdt.Point {
		p := edgePt(parent, child)
		p.Tombstone = true
		return p
	}
	specs := []mxSpec{{
		who: devA, roots: []uuid.UUID{f.devA},
		in: []uuid.UUID{f.devA, f.sA1}, out: []uuid.UUID{f.sB1, f.siteA, f.sB},
		sIn: f.sA1, sIn2: f.devA, sOut: f.sB1, sOut2: f.sB, inStructOK: true,
		above: tomb(f.siteA, f.devA),
		keyIn: f.sA1, keyOut: f.sB1, keyInOK: false,
		siteUser: f.userA2, ownSecret: f.devA,
		escalate: role(f.siteA, f.devA),
		helloOwn: f.devA, helloOther: f.devB, helloOwnOK: true, device: true,
	}, {
		who: devB, roots: []uuid.UUID{f.devB},
		in: []uuid.UUID{f.devB, f.sB1}, out: []uuid.UUID{f.sA1, f.devA, f.siteB},
		sIn: f.sB1, sIn2: f.devB, sOut: f.sA1, sOut2: f.siteA, inStructOK: true,
		above: tomb(f.siteA, f.devB),
		keyIn: f.sB1, keyOut: f.sA1, keyInOK: false,
		siteUser: f.userA2, ownSecret: f.devB,
		escalate: role(f.siteA, f.devB),
		helloOwn: f.devB, helloOther: f.devA, helloOwnOK: true, device: true,
	}, {
		who: userA, roots: []uuid.UUID{f.siteA},
		in: []uuid.UUID{f.siteA, f.sA1, f.devB}, out: []uuid.UUID{f.sB, f.siteB, f.root},
		sIn: f.sA1, sIn2: f.siteA, sOut: f.sB, sOut2: f.siteB,
		above: tomb(f.root, f.siteA),
		keyIn: f.sA1, keyOut: f.sB,
		siteUser: f.userA2, siteUserReadable: true, ownSecret: f.userA,
		escalate: role(f.siteA, f.userA),
		helloOwn: f.userA, helloOther: f.sA1,
	}, {
		who: adminA, roots: []uuid.UUID{f.siteA},
		in: []uuid.UUID{f.siteA, f.sB1}, out: []uuid.UUID{f.sB, f.root},
		sIn: f.sA1, sIn2: f.siteA, sOut: f.sB, sOut2: f.siteB, inStructOK: true,
		above: tomb(f.root, f.siteA),
		keyIn: f.sA1, keyOut: f.sB, keyInOK: false,
		siteUser: f.userA2, siteUserOK: true, siteUserReadable: true, ownSecret: f.adminA,
		escalate: role(f.siteA, f.userA2), escalateOK: true,
		helloOwn: f.adminA, helloOther: f.sA1,
	}, {
		who: userB, roots: []uuid.UUID{f.siteB},
		in: []uuid.UUID{f.siteB, f.sB}, out: []uuid.UUID{f.siteA, f.sA1, f.root},
		sIn: f.sB, sIn2: f.siteB, sOut: f.sA1, sOut2: f.siteA,
		above: tomb(f.root, f.siteB),
		keyIn: f.sB, keyOut: f.sA1,
		siteUser: f.userB2, siteUserReadable: true, ownSecret: f.userB,
		escalate: role(f.siteB, f.userB),
		helloOwn: f.userB, helloOther: f.sB,
	}, {
		who: admin,
		in:  []uuid.UUID{f.root, f.siteA, f.sA1, f.siteB, f.sB},
		sIn: f.sA1, sIn2: f.sB1, sOut: f.sB, sOut2: f.siteB, inStructOK: true,
		keyIn: f.sA1, keyOut: f.sB, keyInOK: true,
		siteUser: f.userB2, siteUserOK: true, siteUserReadable: true, ownSecret: f.devA,
		escalate: role(f.siteB, f.userB2), escalateOK: true,
		helloOwn: f.devB, helloOther: f.sB, helloOwnOK: true,
	}}

	var cells []mxCell
	add := func(name string, run func(t *testing.T)) { cells = append(cells, mxCell{name, run}) }
	for _, s := range specs {
		w := s.who
		all := w.admin // the administrator may do everything, "outside" too
		inOut := func(op string, fn func(t *testing.T, node uuid.UUID, allow bool)) {
			for _, u := range s.in {
				add(fmt.Sprintf("%s/%s/in:%s", w.name, op, f.name(u)), func(t *testing.T) { fn(t, u, true) })
			}
			for _, u := range s.out {
				add(fmt.Sprintf("%s/%s/out:%s", w.name, op, f.name(u)), func(t *testing.T) { fn(t, u, false) })
			}
		}
		inOut("read", func(t *testing.T, u uuid.UUID, allow bool) { f.read(t, s, u, allow) })
		inOut("write", func(t *testing.T, u uuid.UUID, allow bool) { f.write(t, w, u, allow) })
		inOut("export", func(t *testing.T, u uuid.UUID, allow bool) { f.export(t, w, u, allow) })
		inOut("watch", func(t *testing.T, u uuid.UUID, allow bool) { f.watch(t, w, u, allow) })
		inOut("edges", func(t *testing.T, u uuid.UUID, allow bool) { f.edges(t, w, u, allow) })
		inOut("history", func(t *testing.T, u uuid.UUID, allow bool) { f.historyOp(t, w, u, allow) })
		add(w.name+"/export/all-of-its-scope", func(t *testing.T) { f.exportAll(t, s) })
		add(w.name+"/watch/all-of-its-scope", func(t *testing.T) { f.watchAll(t, s) })
		add(fmt.Sprintf("%s/edges/above:%s", w.name, f.name(s.in[0])), func(t *testing.T) { f.edgesUp(t, s, s.in[0]) })

		ns := f.name
		add(fmt.Sprintf("%s/add-node/in:under-%s", w.name, ns(s.sIn)), func(t *testing.T) { f.addOp(t, w, s.sIn, s.inStructOK) })
		add(fmt.Sprintf("%s/add-node/out:under-%s", w.name, ns(s.sOut)), func(t *testing.T) { f.addOp(t, w, s.sOut, all) })
		add(fmt.Sprintf("%s/delete-node/in:under-%s", w.name, ns(s.sIn)), func(t *testing.T) { f.deleteOp(t, w, s.sIn, s.inStructOK) })
		add(fmt.Sprintf("%s/delete-node/out:under-%s", w.name, ns(s.sOut)), func(t *testing.T) { f.deleteOp(t, w, s.sOut, all) })
		add(fmt.Sprintf("%s/move-node/in:%s-to-%s", w.name, ns(s.sIn), ns(s.sIn2)), func(t *testing.T) { f.moveOp(t, w, s.sIn, s.sIn2, s.inStructOK) })
		add(fmt.Sprintf("%s/move-node/out:%s-to-%s", w.name, ns(s.sOut), ns(s.sOut2)), func(t *testing.T) { f.moveOp(t, w, s.sOut, s.sOut2, all) })
		add(fmt.Sprintf("%s/move-node/out:%s-to-%s", w.name, ns(s.sIn), ns(s.sOut)), func(t *testing.T) { f.moveOp(t, w, s.sIn, s.sOut, all) })
		add(fmt.Sprintf("%s/move-node/out:%s-to-%s", w.name, ns(s.sOut), ns(s.sIn)), func(t *testing.T) { f.moveOp(t, w, s.sOut, s.sIn, all) })
		add(fmt.Sprintf("%s/adopt-node/out:from-%s-under-%s", w.name, ns(s.sOut), ns(s.sIn)), func(t *testing.T) { f.adoptOp(t, w, s.sOut, s.sIn, all) })
		if s.above.Node != uuid.Nil {
			add(fmt.Sprintf("%s/delete-node/out:edge-%s-to-%s", w.name, ns(s.above.Parent), ns(s.above.Node)), func(t *testing.T) {
				f.importOp(t, w, []crdt.Point{s.above}, false)
			})
		}
		add(fmt.Sprintf("%s/credential/in:authKey-on-%s", w.name, ns(s.keyIn)), func(t *testing.T) { f.keyOp(t, w, s.keyIn, s.keyInOK) })
		add(fmt.Sprintf("%s/credential/out:authKey-on-%s", w.name, ns(s.keyOut)), func(t *testing.T) { f.keyOp(t, w, s.keyOut, all) })
		add(fmt.Sprintf("%s/credential/password-of-%s", w.name, ns(s.siteUser)), func(t *testing.T) {
			f.importOp(t, w, []crdt.Point{{Node: s.siteUser, Type: crdt.TypePassword, Key: "0", Text: f.hash}}, s.siteUserOK)
		})
		add(fmt.Sprintf("%s/credential/email-of-%s", w.name, ns(s.siteUser)), func(t *testing.T) {
			email := fmt.Sprintf("u%d@example.com", f.next())
			f.importOp(t, w, []crdt.Point{{Node: s.siteUser, Type: crdt.TypeEmail, Key: "0", Text: email}}, s.siteUserOK)
		})
		add(w.name+"/credential/password-of-userX-under-both-sites", func(t *testing.T) {
			f.importOp(t, w, []crdt.Point{{Node: f.userX, Type: crdt.TypePassword, Key: "0", Text: f.hash}}, all)
		})
		add(fmt.Sprintf("%s/role/admin-on-edge-%s-to-%s", w.name, ns(s.escalate.Parent), ns(s.escalate.Node)), func(t *testing.T) {
			f.importOp(t, w, []crdt.Point{s.escalate}, s.escalateOK)
		})
		add(fmt.Sprintf("%s/secrets/page-of-%s", w.name, ns(s.ownSecret)), func(t *testing.T) { f.read(t, s, s.ownSecret, true) })
		add(fmt.Sprintf("%s/secrets/page-of-%s", w.name, ns(s.siteUser)), func(t *testing.T) { f.read(t, s, s.siteUser, s.siteUserReadable) })
		add(fmt.Sprintf("%s/secrets/watch-%s", w.name, ns(s.in[len(s.in)-1])), func(t *testing.T) { f.watchSecret(t, w, s.in[len(s.in)-1]) })
		add(fmt.Sprintf("%s/secrets/history-of-%s", w.name, ns(s.ownSecret)), func(t *testing.T) { f.historySecret(t, w, s.ownSecret) })

		add(fmt.Sprintf("%s/hello-edge/as-%s", w.name, ns(s.helloOwn)), func(t *testing.T) {
			f.hello(t, w, transport.RoleEdge, s.helloOwn, s.helloOwnOK, false)
		})
		add(fmt.Sprintf("%s/hello-edge/as-%s", w.name, ns(s.helloOther)), func(t *testing.T) {
			f.hello(t, w, transport.RoleEdge, s.helloOther, all, false)
		})
		add(w.name+"/hello-edge/as-a-new-root", func(t *testing.T) {
			f.hello(t, w, transport.RoleEdge, f.newID("new-root"), all, all)
		})
		add(w.name+"/hello-peer/with-the-cloud-root", func(t *testing.T) { f.hello(t, w, transport.RolePeer, f.root, all, false) })
		add(w.name+"/hello-peer/identity-only", func(t *testing.T) { f.hello(t, w, transport.RolePeer, uuid.Nil, all, false) })
		if !w.admin {
			add(w.name+"/spoof/import-on-the-admin-subject", func(t *testing.T) { f.spoof(t, w, s.in[0]) })
		}
		if s.device {
			add(w.name+"/push/outside-its-subtree", func(t *testing.T) { f.push(t, s) })
			add(fmt.Sprintf("%s/push/node-moved-from-%s-to-%s", w.name, ns(s.sIn), ns(s.sOut)), func(t *testing.T) { f.pushMovedAway(t, s) })
		}
	}
	anon := f.anonymousCells(t)
	cells = append(anon, cells...)

	for _, c := range cells {
		t.Run(c.name, c.run)
	}
	t.Logf("%d cells in %v", len(cells), time.Since(start).Round(time.Millisecond))
}

// anonymousCells: no credentials, or credentials the server never issued,
// are refused at connect, counted, and change nothing.
func (f *mxFixture) anonymousCells(t *testing.T) []mxCell {
	n := f.n
	refused := func(t *testing.T, dial func() (*nats.Conn, error)) {
		t.Helper()
		before := f.counts()
		nc, err := dial()
		if err == nil {
			nc.Close()
			t.Fatal("connected")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("got %v, want nats.ErrAuthorization", err)
		}
		f.wantDelta(t, before, mxCounts{"connections refused": 1})
	}
	raw := func(opts ...nats.Option) func() (*nats.Conn, error) {
		return func() (*nats.Conn, error) {
			return nats.Connect(n.url(), append([]nats.Option{nats.NoReconnect(), nats.Timeout(5 * time.Second)}, opts...)...)
		}
	}
	creds := func(c func() *transport.Creds) func() (*nats.Conn, error) {
		return func() (*nats.Conn, error) {
			return transport.Dial(n.url(), transport.DialConfig{Name: "test", Creds: c(), Timeout: 5 * time.Second})
		}
	}
	unknownKey := func() *transport.Creds {
		c, err := transport.NewKeyCreds(transport.KindKey, f.devA)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	token := func(key []byte, pwDelta int64, ttl time.Duration) func() *transport.Creds {
		return func() *transport.Creds {
			pw := n.get(f.userA, uuid.Nil, crdt.TypePassword, "0")
			exp := time.Now().Add(ttl)
			return &transport.Creds{Kind: transport.KindUser, Node: f.userA, Expires: exp,
				Token: transport.NewToken(key, f.userA, uint64(int64(pw.Time)+pwDelta), exp)}
		}
	}
	otherKey := make([]byte, 32)
	for i := range otherKey {
		otherKey[i] = byte(f.rng.Uint32())
	}
	return []mxCell{
		{"anonymous/connect", func(t *testing.T) { refused(t, raw()) }},
		{"anonymous/connect-as-admin-without-key", func(t *testing.T) {
			refused(t, raw(nats.UserInfo(string(transport.KindAdmin), ""), nats.CustomInboxPrefix(adminID.Inbox())))
		}},
		{"anonymous/connect-with-a-device-name-without-key", func(t *testing.T) { refused(t, raw(nats.UserInfo(f.devA.String(), ""))) }},
		{"forged/unprovisioned-key-of-devA", func(t *testing.T) { refused(t, creds(unknownKey)) }},
		{"forged/token-of-userA-signed-by-another-key", func(t *testing.T) { refused(t, creds(token(otherKey, 0, time.Hour))) }},
		{"forged/token-of-userA-for-another-password", func(t *testing.T) { refused(t, creds(token(n.rep.cfg.TokenKey, -1, time.Hour))) }},
		{"forged/expired-token-of-userA", func(t *testing.T) { refused(t, creds(token(n.rep.cfg.TokenKey, 0, -time.Minute))) }},
	}
}

// read asks for node u's page: allowed, the page is exactly what the
// system sees of u less what s may not see; refused, permission denied.
func (f *mxFixture) read(t *testing.T, s mxSpec, u uuid.UUID, allow bool) {
	w := s.who
	before := f.counts()
	var page transport.NodePage
	err := mxCall(w, transport.NameNode, transport.NodeRequest{Node: u}, &page)
	if !allow {
		wantDenied(t, err)
		f.wantDelta(t, before, mxCounts{"requests refused/forbidden": 1})
		return
	}
	if err != nil {
		t.Fatalf("read %s: %v", f.name(u), err)
	}
	f.wantDelta(t, before, nil)
	sys, err := f.n.rep.NodePage(transport.NodeRequest{Node: u})
	if err != nil {
		t.Fatal(err)
	}
	if !page.Known || page.More || sys.More {
		t.Errorf("page known=%v more=%v (system more=%v)", page.Known, page.More, sys.More)
	}
	all := mxDecode(t, sys.Points)
	got := mxDecode(t, page.Points)
	f.wantPts(t, "page of "+f.name(u), got, visible(all, f.scopeSet(t, s.roots), w.admin))
	if m, ok := f.marks[u]; ok && !slices.ContainsFunc(got, func(p crdt.Point) bool { return p.Type == "mark" && p.Value == m }) {
		t.Errorf("the page of %s lacks its mark", f.name(u))
	}
	secrets := slices.ContainsFunc(got, func(p crdt.Point) bool { return crdt.IsSecret(p.Type) })
	held := slices.ContainsFunc(all, func(p crdt.Point) bool { return crdt.IsSecret(p.Type) })
	if secrets != (w.admin && held) {
		t.Errorf("secrets in the page of %s: %v (held: %v, reader is the administrator: %v)", f.name(u), secrets, held, w.admin)
	}
}

// historyOp asks for the history of node u's mark: allowed, exactly the
// samples the system reads, the mark's value among them; refused, the
// very refusal a read of u's points gets, counted once.
func (f *mxFixture) historyOp(t *testing.T, w *mxWho, u uuid.UUID, allow bool) {
	before := f.counts()
	req := transport.HistoryRequest{Node: u, Type: "mark"}
	var page transport.HistoryPage
	err := mxCall(w, transport.NameHistory, req, &page)
	if !allow {
		wantDenied(t, err)
		f.wantDelta(t, before, mxCounts{"requests refused/forbidden": 1})
		var np transport.NodePage
		if nerr := mxCall(w, transport.NameNode, transport.NodeRequest{Node: u}, &np); nerr == nil || nerr.Error() != err.Error() {
			t.Errorf("history refused with %q, a read of the node's points with %v", err, nerr)
		}
		return
	}
	if err != nil {
		t.Fatalf("history of %s: %v", f.name(u), err)
	}
	f.wantDelta(t, before, nil)
	sys, err := f.n.rep.HistoryPage(req)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Known || page.More || !bytes.Equal(page.Samples, sys.Samples) {
		t.Fatalf("history of %s: known=%v more=%v, %d bytes where the system reads %d", f.name(u), page.Known, page.More, len(page.Samples), len(sys.Samples))
	}
	ss, err := transport.DecodeHistorySamples(page.Samples, 0)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := f.marks[u]; ok && !slices.ContainsFunc(ss, func(s history.Sample) bool { return s.Value == m }) {
		t.Errorf("the history of %s lacks its mark %v: %+v", f.name(u), m, ss)
	}
}

// historySecret asks for the history of u's password: refused, as
// permission denied, to all but the administrator, who is told no
// history of credentials is kept.
func (f *mxFixture) historySecret(t *testing.T, w *mxWho, u uuid.UUID) {
	before := f.counts()
	var page transport.HistoryPage
	err := mxCall(w, transport.NameHistory, transport.HistoryRequest{Node: u, Type: crdt.TypePassword}, &page)
	if !w.admin {
		wantDenied(t, err)
		f.wantDelta(t, before, mxCounts{"requests refused/forbidden": 1})
		return
	}
	if err == nil || !transport.IsRemote(err) || !strings.Contains(err.Error(), "no history is kept of password points") {
		t.Errorf("the administrator's history of a password: %v", err)
	}
	f.wantDelta(t, before, nil)
}

// importOp sends pts as one one-time import. Allowed: every point is
// applied, stamped once, durable, counted nowhere as refused. Refused:
// permission denied, counted as one forbidden write of len(pts) points,
// and every register is as it was.
func (f *mxFixture) importOp(t *testing.T, w *mxWho, pts []crdt.Point, allow bool) {
	t.Helper()
	old := make([]crdt.Point, len(pts))
	for i, p := range pts {
		old[i] = f.getReg(p)
	}
	before := f.counts()
	var res transport.ImportResult
	err := mxCall(w, transport.NameImport, transport.Import{OneTime: true, Points: crdt.AppendBatch(nil, pts)}, &res)
	if !allow {
		wantDenied(t, err)
		f.wantDelta(t, before, mxCounts{"writes rejected/forbidden": 1, "points rejected/forbidden": uint64(len(pts))})
		for i, p := range pts {
			if got := f.getReg(p); got != old[i] {
				t.Errorf("point %d changed: %v, was %v", i, f.fmtPts([]crdt.Point{got}), f.fmtPts(old[i:i+1]))
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("import: %v, want it applied", err)
	}
	if res != (transport.ImportResult{Applied: len(pts)}) {
		t.Errorf("import result %+v, want %d applied", res, len(pts))
	}
	f.wantDelta(t, before, mxCounts{"seq": uint64(len(pts))})
	var at crdt.Timestamp
	for i, p := range pts {
		got := f.getReg(p)
		if got.Time <= old[i].Time || got.Value != p.Value || got.Text != p.Text || got.Tombstone != p.Tombstone {
			t.Errorf("point %d: store holds %v, want %v written", i, f.fmtPts([]crdt.Point{got}), f.fmtPts(pts[i:i+1]))
		}
		if i == 0 {
			at = got.Time
		} else if got.Time != at {
			t.Errorf("point %d stamped %v, point 0 %v: a one-time import has one time", i, got.Time, at)
		}
		if w.id.Kind == transport.KindUser && got.Origin != w.id.Node {
			t.Errorf("point %d: origin %v, want the user %v", i, got.Origin, w.id.Node)
		}
	}
}

func (f *mxFixture) write(t *testing.T, w *mxWho, u uuid.UUID, allow bool) {
	f.importOp(t, w, []crdt.Point{valPt(u, fmt.Sprintf("w%d", f.next()), float64(f.next()))}, allow)
}

// leaf writes a new node under parent, as the system.
func (f *mxFixture) leaf(parent uuid.UUID) uuid.UUID {
	l := f.newID(fmt.Sprintf("leaf%d", f.next()))
	f.n.write(edgePt(parent, l), crdt.Point{Node: l, Type: crdt.TypeNodeType, Key: "0", Text: "sensor"})
	return l
}

func (f *mxFixture) addOp(t *testing.T, w *mxWho, parent uuid.UUID, allow bool) {
	u := f.newID(fmt.Sprintf("new%d", f.next()))
	f.importOp(t, w, []crdt.Point{edgePt(parent, u), {Node: u, Type: crdt.TypeNodeType, Key: "0", Text: "sensor"}}, allow)
}

func (f *mxFixture) deleteOp(t *testing.T, w *mxWho, parent uuid.UUID, allow bool) {
	l := f.leaf(parent)
	del := edgePt(parent, l)
	del.Tombstone = true
	f.importOp(t, w, []crdt.Point{del}, allow)
}

func (f *mxFixture) moveOp(t *testing.T, w *mxWho, from, to uuid.UUID, allow bool) {
	l := f.leaf(from)
	old := edgePt(from, l)
	old.Tombstone, old.Value = true, crdt.EdgeMoved
	f.importOp(t, w, []crdt.Point{edgePt(to, l), old}, allow)
	if allow {
		if in, err := newScope(f.n.st, to).containsNode(l); err != nil || !in {
			t.Errorf("the moved node is not under %s: %v", f.name(to), err)
		}
	}
}

// adoptOp pulls a node that lives outside under a node inside.
func (f *mxFixture) adoptOp(t *testing.T, w *mxWho, from, under uuid.UUID, allow bool) {
	f.importOp(t, w, []crdt.Point{edgePt(under, f.leaf(from))}, allow)
}

func (f *mxFixture) keyOp(t *testing.T, w *mxWho, u uuid.UUID, allow bool) {
	key := fmt.Sprintf("UTEST%016X", f.rng.Uint64())
	f.importOp(t, w, []crdt.Point{{Node: u, Type: crdt.TypeAuthKey, Key: key, Value: 1, Text: "device"}}, allow)
}

// export asks for u's subtree: allowed, exactly the system's export of it
// less the secrets (for all but the administrator).
func (f *mxFixture) export(t *testing.T, w *mxWho, u uuid.UUID, allow bool) {
	before := f.counts()
	var page transport.ExportPage
	err := mxCall(w, transport.NameExport, transport.ExportRequest{Root: u}, &page)
	if !allow {
		wantDenied(t, err)
		f.wantDelta(t, before, mxCounts{"requests refused/forbidden": 1})
		return
	}
	if err != nil {
		t.Fatalf("export %s: %v", f.name(u), err)
	}
	f.wantDelta(t, before, nil)
	if page.More {
		t.Fatal("more than one page")
	}
	f.wantPts(t, "export of "+f.name(u), mxDecode(t, page.Points), visible(f.systemExport(t, u), nil, w.admin))
}

// exportAll asks for everything: exactly what the scope holds.
func (f *mxFixture) exportAll(t *testing.T, s mxSpec) {
	before := f.counts()
	var page transport.ExportPage
	if err := mxCall(s.who, transport.NameExport, transport.ExportRequest{}, &page); err != nil {
		t.Fatalf("export: %v", err)
	}
	f.wantDelta(t, before, nil)
	if page.More {
		t.Fatal("more than one page")
	}
	got := mxDecode(t, page.Points)
	f.wantPts(t, "export without a root", got, visible(f.systemExport(t, uuid.Nil), f.scopeSet(t, s.roots), s.who.admin))
	if s.roots != nil && len(got) == 0 {
		t.Error("empty export")
	}
}

// watch writes a mark on u (as the system) and asks for the changes
// since under u: allowed, exactly that mark.
func (f *mxFixture) watch(t *testing.T, w *mxWho, u uuid.UUID, allow bool) {
	after := f.n.st.LastSeq()
	mark := valPt(u, fmt.Sprintf("m%d", f.next()), float64(f.next()))
	f.n.write(mark)
	before := f.counts()
	var rep transport.WatchReply
	err := mxCall(w, transport.NameWatch, transport.WatchRequest{Root: u, After: after, Wait: 0}, &rep)
	if !allow {
		wantDenied(t, err)
		f.wantDelta(t, before, mxCounts{"requests refused/forbidden": 1})
		return
	}
	if err != nil {
		t.Fatalf("watch %s: %v", f.name(u), err)
	}
	f.wantDelta(t, before, nil)
	f.wantPts(t, "changes under "+f.name(u), mxDecode(t, rep.Points), []crdt.Point{f.getReg(mark)})
	if rep.Next != after+1 || rep.Last != after+1 {
		t.Errorf("next %d last %d, want %d", rep.Next, rep.Last, after+1)
	}
}

// watchAll writes a mark inside s's scope and one outside (the same
// node for the administrator, who has no outside) and watches everything:
// only what s may read comes back.
func (f *mxFixture) watchAll(t *testing.T, s mxSpec) {
	after := f.n.st.LastSeq()
	in := valPt(s.in[0], fmt.Sprintf("m%d", f.next()), 1)
	outNode := f.sB
	if len(s.out) > 0 {
		outNode = s.out[0]
	}
	out := valPt(outNode, fmt.Sprintf("m%d", f.next()), 2)
	f.n.write(in)
	f.n.write(out)
	want := []crdt.Point{f.getReg(in)}
	if s.who.admin {
		want = append(want, f.getReg(out))
	}
	before := f.counts()
	var rep transport.WatchReply
	if err := mxCall(s.who, transport.NameWatch, transport.WatchRequest{After: after, Wait: 0}, &rep); err != nil {
		t.Fatalf("watch: %v", err)
	}
	f.wantDelta(t, before, nil)
	f.wantPts(t, "changes", mxDecode(t, rep.Points), want)
}

// watchSecret writes a mark and a key on u (as the system): a watcher of
// u sees the key only when it is the administrator.
func (f *mxFixture) watchSecret(t *testing.T, w *mxWho, u uuid.UUID) {
	after := f.n.st.LastSeq()
	mark := valPt(u, fmt.Sprintf("m%d", f.next()), 1)
	key := crdt.Point{Node: u, Type: crdt.TypeAuthKey, Key: fmt.Sprintf("UWATCH%016X", f.rng.Uint64()), Value: 1, Text: "device"}
	f.n.write(mark, key)
	want := []crdt.Point{f.getReg(mark)}
	if w.admin {
		want = append(want, f.getReg(key))
	}
	var rep transport.WatchReply
	if err := mxCall(w, transport.NameWatch, transport.WatchRequest{Root: u, After: after, Wait: 0}, &rep); err != nil {
		t.Fatalf("watch: %v", err)
	}
	f.wantPts(t, "changes", mxDecode(t, rep.Points), want)
}

// hello asks to link with role as root. Allowed: a session (none for an
// identity-only hello), adopting root when adopt says so. Refused:
// permission denied, counted as a refused link, nothing written.
func (f *mxFixture) hello(t *testing.T, w *mxWho, role string, root uuid.UUID, allow, adopt bool) {
	before := f.counts()
	var wl transport.Welcome
	err := mxCall(w, transport.NameHello, transport.Hello{Proto: transport.LinkProto, Instance: mxUUID(f.rng), Root: root,
		Role: role, Time: time.Now().UnixMilli()}, &wl)
	if !allow {
		wantDenied(t, err)
		f.wantDelta(t, before, mxCounts{"links refused": 1})
		return
	}
	if err != nil {
		t.Fatalf("hello: %v", err)
	}
	if wl.Root != f.root || wl.Instance != f.n.st.Instance() {
		t.Errorf("welcome from %v/%v, want %v/%v", wl.Root, wl.Instance, f.root, f.n.st.Instance())
	}
	if (wl.Session == "") != (root == uuid.Nil) {
		t.Errorf("session %q for root %v", wl.Session, root)
	}
	var seq uint64
	if adopt {
		seq = 1
		if p := f.n.get(root, f.root, crdt.TypeEdge, "0"); p.Time == 0 || p.Tombstone {
			t.Errorf("the new root was not adopted: %+v", p)
		}
	}
	f.wantDelta(t, before, mxCounts{"seq": seq})
}

// spoof publishes an import under the administrator's subject: the server
// drops it (its connection may publish under its own prefix only).
func (f *mxFixture) spoof(t *testing.T, w *mxWho, u uuid.UUID) {
	p := valPt(u, fmt.Sprintf("spoof%d", f.next()), 1)
	b, err := transport.Encode(transport.Import{OneTime: true, Points: crdt.AppendBatch(nil, []crdt.Point{p})})
	if err != nil {
		t.Fatal(err)
	}
	violation := make(chan error, 1)
	w.nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case violation <- err:
		default:
		}
	})
	before := f.counts()
	_, err = w.nc.Request(adminSubject(transport.NameImport), b, 300*time.Millisecond)
	if !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("request under the admin's prefix: %v, want no reply", err)
	}
	select {
	case err := <-violation:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), adminSubject(transport.NameImport)) {
			t.Errorf("the server reported %v, want a permissions violation for the admin's subject", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the server reported no permissions violation")
	}
	f.wantDelta(t, before, nil)
	if got := f.getReg(p); got.Time != 0 {
		t.Errorf("the spoofed import was applied: %+v", got)
	}
	// The connection stays usable.
	var page transport.NodePage
	if err := mxCall(w, transport.NameNode, transport.NodeRequest{Node: u}, &page); err != nil {
		t.Errorf("after the spoof: %v", err)
	}
}

// pushPts opens a session as the device's own root and pushes pts,
// stamped now, as one push: the points at the indexes in applied must be
// applied, every other one rejected, reported in the ack and counted, and
// its register left as it was.
func (f *mxFixture) pushPts(t *testing.T, s mxSpec, pts []crdt.Point, applied ...int) {
	t.Helper()
	w := s.who
	inst := mxUUID(f.rng)
	var wl transport.Welcome
	if err := mxCall(w, transport.NameHello, transport.Hello{Proto: transport.LinkProto, Instance: inst, Root: s.helloOwn,
		Role: transport.RoleEdge, Time: time.Now().UnixMilli()}, &wl); err != nil {
		t.Fatalf("hello as its own root: %v", err)
	}
	subj, err := transport.Subjects(w.id, wl.Session)
	if err != nil {
		t.Fatal(err)
	}
	now := f.n.clock.Now()
	old := make([]crdt.Point, len(pts))
	for i := range pts {
		pts[i].Time, pts[i].Origin = now+crdt.Timestamp(i+1), inst
		old[i] = f.getReg(pts[i])
	}
	b, err := transport.Encode(transport.Push{From: 0, Through: uint64(len(pts)), Points: crdt.AppendBatch(nil, pts)})
	if err != nil {
		t.Fatal(err)
	}
	before := f.counts()
	m, err := w.nc.Request(subj.Up, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ack transport.Ack
	if err := transport.Decode(m.Data, 0, &ack); err != nil {
		t.Fatalf("push: %v", err)
	}
	rejected := len(pts) - len(applied)
	if ack.Rejected != rejected || ack.Have != uint64(len(pts)) || ack.Gap || !strings.Contains(ack.Reason, "subtree") {
		t.Errorf("ack %+v, want %d rejected for being outside the subtree, have %d", ack, rejected, len(pts))
	}
	f.wantDelta(t, before, mxCounts{"seq": uint64(len(applied)), "points rejected/outside_scope": uint64(rejected)})
	for i := range pts {
		got := f.getReg(pts[i])
		switch {
		case slices.Contains(applied, i) && got != pts[i]:
			t.Errorf("point %d, inside, was not applied: store holds %v", i, f.fmtPts([]crdt.Point{got}))
		case !slices.Contains(applied, i) && got != old[i]:
			t.Errorf("point %d, outside, changed the store: %v", i, f.fmtPts([]crdt.Point{got}))
		}
	}
}

// push pushes one point inside the device's subtree and five outside:
// on a sensor of another device, on its parent, on another site, an edge
// pulling an outside node under itself, and the tombstone of the edge
// above its root.
func (f *mxFixture) push(t *testing.T, s mxSpec) {
	typ := fmt.Sprintf("push%d", f.next())
	detach := edgePt(f.siteA, s.helloOwn)
	detach.Tombstone = true
	f.pushPts(t, s, []crdt.Point{
		valPt(s.sIn, typ, 1),
		valPt(s.out[0], typ, 2),
		valPt(f.siteA, typ, 3),
		valPt(f.sB, typ, 4),
		edgePt(s.sIn, s.out[0]),
		detach,
	}, 0)
}

// pushMovedAway: the administrator moves a node of the device's subtree
// into another device's; the device can then neither write the node's
// points nor pull it back under itself by push, as it cannot by the API.
func (f *mxFixture) pushMovedAway(t *testing.T, s mxSpec) {
	l := f.leaf(s.sIn)
	old := edgePt(s.sIn, l)
	old.Tombstone, old.Value = true, crdt.EdgeMoved
	if _, err := f.n.rep.WriteOne([]crdt.Point{edgePt(s.sOut, l), old}); err != nil {
		t.Fatal(err)
	}
	f.read(t, s, l, false)
	f.pushPts(t, s, []crdt.Point{valPt(l, fmt.Sprintf("push%d", f.next()), 1), edgePt(s.sIn, l)})
}

// edges asks for the edges below u: allowed, exactly what the system
// reads (every edge below a node in scope is in scope).
func (f *mxFixture) edges(t *testing.T, w *mxWho, u uuid.UUID, allow bool) {
	before := f.counts()
	var page transport.EdgesPage
	err := mxCall(w, transport.NameEdges, transport.EdgesRequest{Node: u}, &page)
	if !allow {
		wantDenied(t, err)
		f.wantDelta(t, before, mxCounts{"requests refused/forbidden": 1})
		return
	}
	if err != nil {
		t.Fatalf("edges below %s: %v", f.name(u), err)
	}
	f.wantDelta(t, before, nil)
	sys, err := f.n.rep.EdgesPage(transport.EdgesRequest{Node: u})
	if err != nil {
		t.Fatal(err)
	}
	f.wantPts(t, "edges below "+f.name(u), mxDecode(t, page.Points), mxDecode(t, sys.Points))
	if string(page.Active) != string(sys.Active) || page.Next != sys.Next || page.More || sys.More {
		t.Errorf("active %v next %s more %v, system %v %s %v", page.Active, f.name(page.Next), page.More, sys.Active, f.name(sys.Next), sys.More)
	}
}

// edgesUp asks for the edges above u: those from parents outside the scope
// are left out, and nothing in the reply names such a parent (but the
// root, whose ID every identity's status reply carries).
func (f *mxFixture) edgesUp(t *testing.T, s mxSpec, u uuid.UUID) {
	in := f.scopeSet(t, s.roots)
	var page transport.EdgesPage
	if err := mxCall(s.who, transport.NameEdges, transport.EdgesRequest{Node: u, Up: true}, &page); err != nil {
		t.Fatalf("edges above %s: %v", f.name(u), err)
	}
	for _, p := range mxDecode(t, page.Points) {
		if in != nil && (p.IsEdge() && !in[p.Parent] || !p.IsEdge() && !in[p.Node]) {
			t.Errorf("the reply holds %v, outside the scope", f.fmtPts([]crdt.Point{p}))
		}
	}
	if in != nil && page.Next != uuid.Nil && page.Next != f.root && !in[page.Next] {
		t.Errorf("the reply's cursor Next names %s, a parent outside the scope", f.name(page.Next))
	}
}

// TestMovedDeviceKeepsItsAccessAndMovedUserLosesIt: scope follows the tree
// at each request. A device moved to another site still reaches its own
// subtree; a user moved to another site loses the old one and gains the
// new one at its next request, on the same connection.
func TestMovedDeviceKeepsItsAccessAndMovedUserLosesIt(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x6d6f766564))
	f := newMxFixture(t, rng)
	devA := f.connect(t, "deviceA", f.n.deviceCreds(f.devA))
	userA := f.connect(t, "userA", f.userCreds(t, f.userA))
	admin := f.connect(t, "admin", nil)
	devSpec := mxSpec{who: devA, roots: []uuid.UUID{f.devA}}
	move := func(node, from, to uuid.UUID) {
		t.Helper()
		old := edgePt(from, node)
		old.Tombstone, old.Value = true, crdt.EdgeMoved
		f.importOp(t, admin, []crdt.Point{edgePt(to, node), old}, true)
		if t.Failed() {
			t.FailNow()
		}
	}
	// The device, before and after its move to siteB.
	for _, moved := range []bool{false, true} {
		if moved {
			move(f.devA, f.siteA, f.siteB)
		}
		for _, u := range []uuid.UUID{f.devA, f.sA1} {
			f.read(t, devSpec, u, true)
			f.write(t, devA, u, true)
		}
		for _, u := range []uuid.UUID{f.siteA, f.siteB, f.sB, f.sB1} {
			f.read(t, devSpec, u, false)
			f.write(t, devA, u, false)
		}
		f.addOp(t, devA, f.sA1, true)
	}
	// The user, before and after its move to siteB.
	userSpec := mxSpec{who: userA, roots: []uuid.UUID{f.siteA}}
	for _, u := range []uuid.UUID{f.siteA, f.sB1} {
		f.read(t, userSpec, u, true)
		f.write(t, userA, u, true)
	}
	for _, u := range []uuid.UUID{f.siteB, f.sB, f.sA1} { // sA1 went to siteB with devA
		f.read(t, userSpec, u, false)
		f.write(t, userA, u, false)
	}
	move(f.userA, f.siteA, f.siteB)
	userSpec.roots = []uuid.UUID{f.siteB}
	for _, u := range []uuid.UUID{f.siteA, f.sB1} {
		f.read(t, userSpec, u, false)
		f.write(t, userA, u, false)
		f.export(t, userA, u, false)
	}
	for _, u := range []uuid.UUID{f.siteB, f.sB, f.sA1} { // sA1 came along with devA
		f.read(t, userSpec, u, true)
		f.write(t, userA, u, true)
		f.export(t, userA, u, true)
	}
	f.exportAll(t, userSpec)
	for _, w := range []*mxWho{devA, userA} {
		if !w.nc.IsConnected() || w.nc.Stats().Reconnects != 0 {
			t.Errorf("%s: the connection did not stay up: closed %v, reconnects %d", w.name, w.nc.IsClosed(), w.nc.Stats().Reconnects)
		}
	}
}
