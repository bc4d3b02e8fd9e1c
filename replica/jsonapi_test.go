package replica

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
	"github.com/siot-io/siot/transport"
)

// jsonRaw sends body as JSON request name of identity id on nc and
// returns the reply's bytes.
func jsonRaw(t *testing.T, nc *nats.Conn, id transport.Identity, name string, body []byte) []byte {
	t.Helper()
	m, err := nc.Request(transport.Subject(id, name), body, 10*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m.Data
}

// jsonError returns the message of an error reply, "" for any other.
func jsonError(t *testing.T, b []byte) string {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("reply is not JSON: %v: %q", err, b)
	}
	msg, ok := e["error"].(string)
	if !ok {
		return ""
	}
	if len(e) != 1 {
		t.Fatalf("error reply with other fields: %s", b)
	}
	return msg
}

// jsonOK sends body as request name and decodes the reply into out,
// failing the test on an error reply or an unknown field.
func jsonOK(t *testing.T, nc *nats.Conn, id transport.Identity, name, body string, out any) {
	t.Helper()
	b := jsonRaw(t, nc, id, name, []byte(body))
	if msg := jsonError(t, b); msg != "" {
		t.Fatalf("%s %s: error %q", name, body, msg)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("%s: reply %s: %v", name, b, err)
	}
}

// jsonRefused sends body as request name and checks that the reply is
// an error containing want.
func jsonRefused(t *testing.T, nc *nats.Conn, id transport.Identity, name string, body []byte, want string) {
	t.Helper()
	b := jsonRaw(t, nc, id, name, body)
	msg := jsonError(t, b)
	if msg == "" || !strings.Contains(msg, want) {
		shown := string(body)
		if len(shown) > 80 {
			shown = shown[:80] + "…"
		}
		t.Errorf("%s %q: reply %s, want an error containing %q", name, shown, b, want)
	}
}

// TestJSONSetGetWatch: a client writes records with json.set, reads the
// node back with json.get and follows the change feed with json.watch
// (a held request woken by the write, then resumed from next with no gap
// and no duplicate), and json.status names the root.
func TestJSONSetGetWatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x6a736f6e))
	root := mxUUID(rng)
	n := startNode(t, "cloud", nodeOpts{root: root})
	nc := n.dial(nil)
	sensor := mxUUID(rng)

	var st jsonStatusReply
	jsonOK(t, nc, adminID, transport.NameJSONStatus, "", &st)
	if st.ID != root.String() || st.You != "admin" || st.Scope != nil || st.LastSeq != strconv.FormatUint(n.st.LastSeq(), 10) {
		t.Fatalf("status %+v, want root %v, admin, no scope, lastSeq %d", st, root, n.st.LastSeq())
	}

	// A watch held from the current change: the set wakes it.
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	start := st.LastSeq
	body := fmt.Sprintf(`{"after":%q,"wait":20000}`, start)
	if err := nc.PublishRequest(transport.Subject(adminID, transport.NameJSONWatch), inbox, []byte(body)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watch held", 5*time.Second, func() bool {
		n.rep.apiMu.Lock()
		defer n.rep.apiMu.Unlock()
		return n.rep.watchers == 1
	})

	set := fmt.Sprintf(`[{"node":%q,"parent":%q,"type":"edge","key":"0","value":1},
		{"node":%q,"type":"nodeType","text":"sensor"},
		{"node":%q,"type":"temp","value":21.5},
		{"node":%q,"type":"temp","value":22}]`, sensor, root, sensor, sensor, sensor)
	var res jsonSetReply
	jsonOK(t, nc, adminID, transport.NameJSONSet, set, &res)
	if res != (jsonSetReply{Applied: 4}) {
		t.Fatalf("set: %+v, want 4 applied", res)
	}
	// Durable and stamped in order: the later temp won.
	if p := n.get(sensor, uuid.Nil, "temp", "0"); p.Value != 22 || p.Origin != n.st.Instance() {
		t.Fatalf("temp: %+v", p)
	}
	// One object alone; the same stamped record again is stale.
	jsonOK(t, nc, adminID, transport.NameJSONSet, fmt.Sprintf(`{"node":%q,"type":"note","key":"a","text":"hi"}`, sensor), &res)
	if res != (jsonSetReply{Applied: 1}) {
		t.Fatalf("set one: %+v", res)
	}
	again, _ := json.Marshal(record.From(ptr(n.get(sensor, uuid.Nil, "note", "a"))))
	jsonOK(t, nc, adminID, transport.NameJSONSet, string(again), &res)
	if res != (jsonSetReply{Stale: 1}) {
		t.Fatalf("set a stamped record again: %+v, want 1 stale", res)
	}

	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("held watch: %v", err)
	}
	var w jsonWatchReply
	if err := json.Unmarshal(m.Data, &w); err != nil || len(w.Records) == 0 {
		t.Fatalf("held watch reply %s: %v", m.Data, err)
	}

	// Follow the feed from the start of the test to its end, page by
	// page: every register once per change that reported it, in order.
	var seqs []uint64
	after := start
	for {
		var w jsonWatchReply
		jsonOK(t, nc, adminID, transport.NameJSONWatch, fmt.Sprintf(`{"after":%q,"max":200}`, after), &w)
		for _, c := range w.Records {
			s, err := strconv.ParseUint(c.Seq, 10, 64)
			if err != nil || c.Via != "" || c.HLC == "" {
				t.Fatalf("change %+v", c)
			}
			seqs = append(seqs, s)
		}
		if w.Next == after {
			if w.Last != w.Next {
				t.Fatalf("no progress at %s, last %s", w.Next, w.Last)
			}
			break
		}
		after = w.Next
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("change numbers not increasing: %v", seqs)
		}
	}
	// The two temps collapse into one report of the winner.
	if len(seqs) != 4 {
		t.Fatalf("%d changes reported, want 4 (edge, nodeType, temp, note): %v", len(seqs), seqs)
	}

	var g jsonGetReply
	jsonOK(t, nc, adminID, transport.NameJSONGet, fmt.Sprintf(`{"node":%q}`, sensor), &g)
	var got []string
	for _, r := range g.Records {
		b, _ := json.Marshal(r)
		got = append(got, string(b))
	}
	want := []string{}
	for _, reg := range []crdt.Register{{Node: sensor, Type: "nodeType", Key: "0"}, {Node: sensor, Type: "note", Key: "a"},
		{Node: sensor, Type: "temp", Key: "0"}, {Node: sensor, Parent: root, Type: "edge", Key: "0"}} {
		p := n.get(reg.Node, reg.Parent, reg.Type, reg.Key)
		b, _ := json.Marshal(record.Shown(&p))
		want = append(want, string(b))
	}
	if !g.Known || g.More || g.Next != "" || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("get: known %v more %v next %q\n got  %s\n want %s", g.Known, g.More, g.Next, got, want)
	}
	if strings.Contains(got[0], `"value"`) || !strings.Contains(got[2], `"value":22`) {
		t.Fatalf("text points are shown without value, others with: %s", got)
	}
	jsonOK(t, nc, adminID, transport.NameJSONGet, fmt.Sprintf(`{"node":%q}`, mxUUID(rng)), &g)
	if g.Known || len(g.Records) != 0 || g.Records == nil {
		t.Fatalf("stranger: %+v, want unknown and records []", g)
	}
}

func ptr[T any](v T) *T { return &v }

// TestJSONGetPagesBoundedReplies: a node read with json.get in pages of
// "max" comes back whole, in order, through the cursors; and a page of
// texts that JSON escapes six-fold still fits in one message.
func TestJSONGetPagesBoundedReplies(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x70616765))
	n := startNode(t, "cloud", nodeOpts{root: mxUUID(rng)})
	nc := n.dial(nil)
	id := mxUUID(rng)
	pts := []crdt.Point{edgePt(n.root, id)}
	for i := range 3000 {
		pts = append(pts, crdt.Point{Node: id, Type: "reading", Key: fmt.Sprintf("k%05d", i), Value: float64(i)})
	}
	n.write(pts...)
	var keys []string
	pages, after := 0, ""
	for {
		var g jsonGetReply
		jsonOK(t, nc, adminID, transport.NameJSONGet, fmt.Sprintf(`{"node":%q,"after":%q,"max":8192}`, id, after), &g)
		pages++
		for _, r := range g.Records {
			keys = append(keys, r.Type+"/"+r.Key)
		}
		if !g.More {
			break
		}
		after = g.Next
	}
	if len(keys) != 3001 || pages < 10 || keys[0] != "reading/k00000" || keys[2999] != "reading/k02999" || keys[3000] != "edge/0" {
		t.Fatalf("%d records in %d pages: first %v", len(keys), pages, keys[:3])
	}

	// Texts of control characters: each byte is \u00XX in JSON.
	big := mxUUID(rng)
	text := strings.Repeat("\x01", crdt.MaxTextLen)
	pts = []crdt.Point{edgePt(n.root, big)}
	for i := range 40 {
		pts = append(pts, crdt.Point{Node: big, Type: "blob", Key: strconv.Itoa(i), Text: text})
	}
	n.write(pts...)
	var records int
	after = ""
	for {
		b := jsonRaw(t, nc, adminID, transport.NameJSONGet, fmt.Appendf(nil, `{"node":%q,"after":%q}`, big, after))
		if msg := jsonError(t, b); msg != "" {
			t.Fatalf("page of escaped texts: %s", msg)
		}
		if len(b) > crdt.MaxMessageSize {
			t.Fatalf("reply of %d bytes", len(b))
		}
		var g jsonGetReply
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatal(err)
		}
		for _, r := range g.Records {
			if r.Type == "blob" && r.Text != text {
				t.Fatalf("record %s: text changed", r.Key)
			}
		}
		records += len(g.Records)
		if !g.More {
			break
		}
		after = g.Next
	}
	if records != 41 {
		t.Fatalf("%d records of the big node, want 41", records)
	}
	// A cursor of another node, or not one at all, is refused.
	jsonRefused(t, nc, adminID, transport.NameJSONGet, fmt.Appendf(nil, `{"node":%q,"after":%q}`, big, keysCursor(t, nc, id)), "cursor of another node")
	jsonRefused(t, nc, adminID, transport.NameJSONGet, fmt.Appendf(nil, `{"node":%q,"after":"!!"}`, big), `"after": not a cursor`)
}

// keysCursor returns the cursor of json.get's first small page of node.
func keysCursor(t *testing.T, nc *nats.Conn, node uuid.UUID) string {
	t.Helper()
	var g jsonGetReply
	jsonOK(t, nc, adminID, transport.NameJSONGet, fmt.Sprintf(`{"node":%q,"max":100}`, node), &g)
	if g.Next == "" {
		t.Fatal("no cursor")
	}
	return g.Next
}

// TestJSONHostileInputs: malformed JSON, bodies over the limit, values
// that are not objects, unknown fields, bad UUIDs and change numbers,
// invalid UTF-8 and invalid points: each is answered with an error
// object, and nothing is written.
func TestJSONHostileInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x686f7374))
	n := startNode(t, "cloud", nodeOpts{root: mxUUID(rng)})
	nc := n.dial(nil)
	node := mxUUID(rng).String()
	good := fmt.Sprintf(`{"node":%q,"type":"temp","value":1}`, node)
	before := n.st.LastSeq()
	huge := make([]byte, MaxJSONSet+1)
	for i := range huge {
		huge[i] = ' '
	}
	copy(huge, good)

	set := []struct{ body, want string }{
		{``, "want a point record"},
		{`   `, "want a point record"},
		{`null`, "want a point record"},
		{`42`, "want a point record"},
		{`"text"`, "want a point record"},
		{`{`, "invalid point in batch: point 0: not a point record"},
		{`[`, "not a JSON array of point records"},
		{`[]`, "an empty array"},
		{`[` + good + `,]`, "not a JSON array of point records"},
		{`[` + good + `,` + good + `] x`, "not a JSON array of point records"},
		{good + good, "point 0: more than one JSON value"},
		{`[` + good + `,42]`, "point 1: not a point record"},
		{`[` + good + `,null]`, `point 1: "node" is missing`},
		{`[` + good + `,` + strings.Replace(good, `"value"`, `"valeu"`, 1) + `]`, `point 1: not a point record: json: unknown field "valeu"`},
		{strings.Replace(good, node, "not-a-uuid", 1), `point 0: "node": invalid ID`},
		{strings.Replace(good, node, strings.ToUpper(node[:8])+node[8:], 1) + `x`, "point 0"},
		{fmt.Sprintf(`{"node":%q,"type":"bad type"}`, node), "point 0: invalid point"},
		{fmt.Sprintf(`[%s,{"node":%q,"type":"t","text":"a`+"\xff"+`b"}]`, good, node), "point 1: not valid UTF-8"},
		{fmt.Sprintf(`{"node":%q,"type":"t","text":"\ud800"}`, node), "point 0: lone UTF-16 surrogate"},
		{fmt.Sprintf(`{"node":%q,"type":"t","hlc":"-1"}`, node), `point 0: "hlc"`},
		{fmt.Sprintf(`{"node":%q,"type":"t","value":1e999}`, node), "point 0"},
		{fmt.Sprintf(`{"node":%q,"parent":%q,"type":"t"}`, node, node), "point 0: invalid point"},
		{string(huge), "too large: request of 1048577 bytes, limit 1048576"},
	}
	for _, c := range set {
		jsonRefused(t, nc, adminID, transport.NameJSONSet, []byte(c.body), c.want)
	}

	query := string(make([]byte, MaxJSONQuery+1))
	get := []struct{ body, want string }{
		{``, `"node" is missing`},
		{`{}`, `"node" is missing`},
		{`[]`, "want a JSON object"},
		{`null`, "want a JSON object"},
		{`{"node":`, "request: unexpected EOF"},
		{fmt.Sprintf(`{"node":%q,"nod":1}`, node), `unknown field "nod"`},
		{fmt.Sprintf(`{"node":%q} {}`, node), "more than one JSON value"},
		{`{"node":"6BA7B810-9DAD-11D1-80B4-00C04FD430C8x"}`, `"node": invalid ID`},
		{`{"node":"00000000-0000-0000-0000-000000000000"}`, "the nil UUID"},
		{`{"node":7}`, "cannot unmarshal number"},
		{fmt.Sprintf(`{"node":%q,"max":-1}`, node), `"max"`},
		{fmt.Sprintf(`{"node":%q,"after":"%%%%"}`, node), `"after": not a cursor`},
		{query, "too large"},
	}
	for _, c := range get {
		jsonRefused(t, nc, adminID, transport.NameJSONGet, []byte(c.body), c.want)
	}

	watch := []struct{ body, want string }{
		{`[]`, "want a JSON object"},
		{`{"after":0}`, "cannot unmarshal number"},
		{`{"after":"-1"}`, `"after": want a change number`},
		{`{"after":"1e3"}`, `"after": want a change number`},
		{`{"after":"18446744073709551616"}`, `"after": want a change number`},
		{`{"after":"0","wait":-5}`, `"wait": want milliseconds`},
		{`{"after":"0","wait":1.5}`, "cannot unmarshal number 1.5"},
		{`{"root":"x"}`, `"root": invalid ID`},
		{`{"after":"0","since":"1"}`, `unknown field "since"`},
		{query, "too large"},
	}
	for _, c := range watch {
		jsonRefused(t, nc, adminID, transport.NameJSONWatch, []byte(c.body), c.want)
	}
	jsonRefused(t, nc, adminID, transport.NameJSONStatus, []byte(`{"x":1}`), `unknown field "x"`)
	jsonRefused(t, nc, adminID, transport.NameJSONStatus, []byte(`1`), "want a JSON object")

	if got := n.st.LastSeq(); got != before {
		t.Fatalf("hostile requests wrote %d changes", got-before)
	}
	if p := n.get(uuid.MustParse(node), uuid.Nil, "temp", "0"); p.Time != 0 {
		t.Fatalf("a refused batch wrote its good point: %+v", p)
	}
	// The same connection is still served.
	var res jsonSetReply
	jsonOK(t, nc, adminID, transport.NameJSONSet, good, &res)
	if res.Applied != 1 {
		t.Fatalf("set after the hostile ones: %+v", res)
	}
}

// TestJSONScopeAndLimits: a device key and users are refused, on
// json.set, json.get and json.watch, what api.import, api.node and
// api.watch refuse them, with the same words, and are served in their
// scope; json.watch holds count against the same per-identity limit as
// api.watch.
func TestJSONScopeAndLimits(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0x73636f70))
	f := newMxFixture(t, rng)
	devA := f.connect(t, "devA", f.n.deviceCreds(f.devA))
	userB := f.connect(t, "userB", f.userCreds(t, f.userB))
	adminA := f.connect(t, "adminA", f.userCreds(t, f.adminA))

	type cell struct {
		who  *mxWho
		node uuid.UUID
		ok   bool
	}
	cells := []cell{
		{devA, f.sA1, true}, {devA, f.devA, true}, {devA, f.sB1, false}, {devA, f.siteA, false}, {devA, f.sB, false},
		{userB, f.sB, true}, {userB, f.siteB, true}, {userB, f.sA1, false}, {userB, f.siteA, false}, {userB, f.root, false},
		{adminA, f.sA1, true}, {adminA, f.sB, false},
	}
	for _, c := range cells {
		name := f.name(c.node)
		before := f.counts()
		seq := f.n.st.LastSeq()
		set := fmt.Sprintf(`{"node":%q,"type":"reading","key":"k%d","value":5}`, c.node, f.next())
		get := fmt.Sprintf(`{"node":%q}`, c.node)
		watch := fmt.Sprintf(`{"root":%q,"after":"0"}`, c.node)
		if !c.ok {
			jsonRefused(t, c.who.nc, c.who.id, transport.NameJSONSet, []byte(set), "permission denied: ")
			jsonRefused(t, c.who.nc, c.who.id, transport.NameJSONGet, []byte(get), "permission denied: ")
			jsonRefused(t, c.who.nc, c.who.id, transport.NameJSONWatch, []byte(watch), "permission denied: ")
			// The msgpack twin's words.
			var page transport.NodePage
			err := mxCall(c.who, transport.NameNode, transport.NodeRequest{Node: c.node}, &page)
			jb := jsonRaw(t, c.who.nc, c.who.id, transport.NameJSONGet, []byte(get))
			if err == nil || "remote: "+jsonError(t, jb) != err.Error() {
				t.Errorf("%s get %s: json %q, msgpack %v", c.who.name, name, jsonError(t, jb), err)
			}
			if f.n.st.LastSeq() != seq {
				t.Errorf("%s set %s: written", c.who.name, name)
			}
			// Refused: json.get twice, api.node, json.watch; json.set
			// is counted as a rejected write, as api.import is.
			f.wantDelta(t, before, mxCounts{"requests refused/forbidden": 4, "writes rejected/forbidden": 1, "points rejected/forbidden": 1})
			continue
		}
		var res jsonSetReply
		jsonOK(t, c.who.nc, c.who.id, transport.NameJSONSet, set, &res)
		var g jsonGetReply
		jsonOK(t, c.who.nc, c.who.id, transport.NameJSONGet, get, &g)
		var w jsonWatchReply
		jsonOK(t, c.who.nc, c.who.id, transport.NameJSONWatch, watch, &w)
		if res.Applied != 1 || !g.Known || len(w.Records) == 0 {
			t.Errorf("%s on %s: set %+v, get known %v, watch %d records", c.who.name, name, res, g.Known, len(w.Records))
		}
		for _, r := range g.Records {
			if crdt.IsSecret(r.Type) {
				t.Errorf("%s reads a secret of %s: %+v", c.who.name, name, r)
			}
		}
	}
	// A user's write is stamped with the user's node as origin.
	var res jsonSetReply
	jsonOK(t, userB.nc, userB.id, transport.NameJSONSet, fmt.Sprintf(`{"node":%q,"type":"mark2","origin":%q}`, f.sB, f.root), &res)
	if p := f.n.get(f.sB, uuid.Nil, "mark2", "0"); p.Origin != f.userB {
		t.Fatalf("user's point has origin %v, want the user %v", p.Origin, f.userB)
	}
	// Scope in status.
	var st jsonStatusReply
	jsonOK(t, devA.nc, devA.id, transport.NameJSONStatus, "{}", &st)
	if st.You != "key:"+f.devA.String() || len(st.Scope) != 1 || st.Scope[0] != f.devA.String() {
		t.Fatalf("device's status: %+v", st)
	}

	// Watchers: api.watch and json.watch share the identity's limit.
	limit := f.n.rep.cfg.MaxWatchersPerIdentity
	seq := strconv.FormatUint(f.n.st.LastSeq(), 10)
	msgReq, _ := transport.Encode(transport.WatchRequest{Root: f.devA, After: f.n.st.LastSeq(), Wait: transport.MaxWatchWait})
	for i := range limit {
		inbox := devA.nc.NewRespInbox()
		sub, err := devA.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		subj, body := transport.Subject(devA.id, transport.NameJSONWatch), []byte(`{"after":"`+seq+`","wait":30000}`)
		if i%2 == 0 {
			subj, body = transport.Subject(devA.id, transport.NameWatch), msgReq
		}
		if err := devA.nc.PublishRequest(subj, inbox, body); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the device's watchers held", 5*time.Second, func() bool {
		f.n.rep.apiMu.Lock()
		defer f.n.rep.apiMu.Unlock()
		return f.n.rep.watchers == limit
	})
	jsonRefused(t, devA.nc, devA.id, transport.NameJSONWatch, []byte(`{"after":"`+seq+`","wait":30000}`), "limit reached: ")
}
