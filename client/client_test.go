package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
	"github.com/siot-io/siot/transport/faultproxy"
)

// value returns the value (or text) of node's node point typ.key, and
// whether it is there.
func value(t *testing.T, cl *client.Client, node uuid.UUID, typ, key string) (client.Point, bool) {
	t.Helper()
	pts, err := cl.Get(context.Background(), node)
	if err != nil {
		t.Fatalf("get %s: %v", node, err)
	}
	for _, p := range pts {
		if !p.IsEdge() && p.Type == typ && p.Key == key {
			return p, true
		}
	}
	return client.Point{}, false
}

func TestSetGetAndErrors(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	n, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Set(ctx, client.Point{Node: n, Type: "temp", Value: 21.5}, client.Point{Node: n, Type: "mode", Text: "auto"}); err != nil {
		t.Fatal(err)
	}
	if p, ok := value(t, cl, n, "temp", "0"); !ok || p.Value != 21.5 || p.Time == 0 || p.Origin == uuid.Nil {
		t.Fatalf("temp: %+v %v, want 21.5 stamped", p, ok)
	}
	if p, ok := value(t, cl, n, "mode", "0"); !ok || p.Text != "auto" {
		t.Fatalf("mode: %+v %v", p, ok)
	}

	// An invalid point: ErrInvalid naming it, and nothing of the call written.
	_, err = cl.Set(ctx, client.Point{Node: n, Type: "ok", Value: 1}, client.Point{Node: n, Type: "bad type!", Value: 2})
	if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "point 1") {
		t.Fatalf("invalid point: %v, want ErrInvalid naming point 1", err)
	}
	if _, ok := value(t, cl, n, "ok", "0"); ok {
		t.Fatal("a call with an invalid point wrote the valid one")
	}
	// A text over the limit is refused before it is sent.
	if _, err := cl.Set(ctx, client.Point{Node: n, Type: "blob", Text: strings.Repeat("x", crdt.MaxTextLen+1)}); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("oversized text: %v, want ErrInvalid", err)
	}
	// A register written twice in one Set is refused by the server: the
	// points of one operation share one HLC.
	_, err = cl.Set(ctx, client.Point{Node: n, Type: "x", Value: 1}, client.Point{Node: n, Type: "x", Value: 2})
	if !errors.Is(err, client.ErrInvalid) || !client.IsRefused(err) {
		t.Fatalf("one register twice: %v, want a refusal (ErrInvalid)", err)
	}

	if _, err := cl.Get(ctx, uuid.New()); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unknown node: %v, want ErrNotFound", err)
	}
	if _, _, err := cl.Node.Add(ctx, client.NewNode{Parent: uuid.New()}); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("add under an unknown parent: %v, want ErrNotFound", err)
	}
	st, err := cl.Status(ctx)
	if err != nil || st.ID != s.root.String() || st.You != "admin" {
		t.Fatalf("status: %+v %v", st, err)
	}
}

func TestGetPages(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	n, _, err := cl.Node.Add(ctx, client.NewNode{Type: "logger"})
	if err != nil {
		t.Fatal(err)
	}
	const keys = 3000
	pts := make([]client.Point, keys)
	for i := range pts {
		pts[i] = client.Point{Node: n, Type: "sample", Key: fmt.Sprintf("%05d", i), Text: strings.Repeat("v", 300)}
	}
	res, err := cl.SetBatch(ctx, pts)
	if err != nil || res.Applied != keys {
		t.Fatalf("SetBatch: %+v %v", res, err)
	}
	page, err := cl.GetPage(ctx, n, nil, 64<<10)
	if err != nil || !page.More || len(page.Points) == 0 || len(page.Points) >= keys {
		t.Fatalf("first page: %d points, more %v, %v", len(page.Points), page.More, err)
	}
	all, err := cl.Get(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	samples := 0
	for i, p := range all {
		if p.Type == "sample" {
			if p.Key != fmt.Sprintf("%05d", samples) {
				t.Fatalf("point %d: key %s, want %05d (in order, each once)", i, p.Key, samples)
			}
			samples++
		}
	}
	if samples != keys {
		t.Fatalf("Get read %d samples, want %d", samples, keys)
	}
}

func TestSetBatchKeepsOrder(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	n, _, err := cl.Node.Add(ctx, client.NewNode{})
	if err != nil {
		t.Fatal(err)
	}
	// 12,000 writes of one register across three requests: the last wins.
	pts := make([]client.Point, 12_000)
	for i := range pts {
		pts[i] = client.Point{Node: n, Type: "count", Value: float64(i)}
	}
	if _, err := cl.SetBatch(ctx, pts); err != nil {
		t.Fatal(err)
	}
	if p, _ := value(t, cl, n, "count", "0"); p.Value != 11_999 {
		t.Fatalf("count = %v, want the last written, 11999", p.Value)
	}
	// An invalid point anywhere: nothing sent.
	pts[4000].Type = ""
	if _, err := cl.SetBatch(ctx, append(pts[:10:10], pts[4000])); !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "point 10") {
		t.Fatalf("invalid point: %v", err)
	}
	if p, _ := value(t, cl, n, "count", "0"); p.Value != 11_999 {
		t.Fatalf("count = %v after a refused batch, want 11999", p.Value)
	}
}

func TestNodes(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	site, parent, err := cl.Node.Add(ctx, client.NewNode{Type: "site", Description: "north"})
	if err != nil || parent != s.root {
		t.Fatalf("add site: %v under %v, want under the root", err, parent)
	}
	other, _, err := cl.Node.Add(ctx, client.NewNode{Type: "site", Description: "south"})
	if err != nil {
		t.Fatal(err)
	}
	dev, _, err := cl.Node.Add(ctx, client.NewNode{Parent: site, Type: "device", Description: "pump",
		Points: []client.Point{{Type: "flow", Value: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := value(t, cl, dev, "flow", "0"); !ok || p.Value != 3 {
		t.Fatalf("points given with the node: %+v %v", p, ok)
	}
	ls, err := cl.Node.Ls(ctx, site)
	if err != nil || ls.Labels.Type != "site" || len(ls.Edges) != 1 || ls.Edges[0].Other != dev || !ls.Edges[0].Active ||
		ls.Edges[0].Labels.Description != "pump" {
		t.Fatalf("ls site: %+v %v", ls, err)
	}
	// A move under its own subtree is refused; a move elsewhere is one
	// operation.
	if _, err := cl.Node.Mv(ctx, site, dev, uuid.Nil); !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("move under own subtree: %v", err)
	}
	from, err := cl.Node.Mv(ctx, dev, other, uuid.Nil)
	if err != nil || from != site {
		t.Fatalf("mv: from %v, %v", from, err)
	}
	ups, err := cl.Node.Parents(ctx, dev)
	if err != nil || len(ups.Edges) != 2 {
		t.Fatalf("parents after the move: %+v %v", ups, err)
	}
	for _, e := range ups.Edges {
		if (e.Other == other) != e.Live() || e.Point.Time != ups.Edges[0].Point.Time {
			t.Fatalf("after the move: edge from %v live %v at %v: want only the new one live, both at one HLC", e.Other, e.Live(), e.Point.Time)
		}
	}
	if _, err := cl.Node.Rm(ctx, dev, site); !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "no live edge from") {
		t.Fatalf("rm from a parent it left: %v", err)
	}
	if from, err := cl.Node.Rm(ctx, dev, uuid.Nil); err != nil || from != other {
		t.Fatalf("rm: %v %v", from, err)
	}
	if _, err := cl.Node.Rm(ctx, s.root, uuid.Nil); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("rm the root: %v", err)
	}
	ls, err = cl.Node.Ls(ctx, other)
	if err != nil || len(ls.Edges) != 1 || ls.Edges[0].Live() {
		t.Fatalf("ls after rm: %+v %v, want the deleted edge", ls, err)
	}
}

// provisionDevice creates a device node under parent with a key, and
// returns its credentials.
func provisionDevice(t *testing.T, cl *client.Client, parent uuid.UUID) (uuid.UUID, *transport.Creds) {
	t.Helper()
	dev := uuid.New()
	creds, err := transport.NewKeyCreds(transport.KindKey, dev)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := creds.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.Node.Add(context.Background(), client.NewNode{ID: dev, Parent: parent, Type: "device",
		Points: []client.Point{{Type: crdt.TypeAuthKey, Key: pub, Value: 1, Text: "device"}}}); err != nil {
		t.Fatal(err)
	}
	return dev, creds
}

func TestPermission(t *testing.T) {
	s := startServer(t)
	admin := s.dial()
	ctx := context.Background()
	secret, _, err := admin.Node.Add(ctx, client.NewNode{Type: "site"})
	if err != nil {
		t.Fatal(err)
	}
	dev, creds := provisionDevice(t, admin, s.root)
	cl := s.dial(client.WithCreds(creds))
	if root, err := cl.Root(ctx); err != nil || root != dev {
		t.Fatalf("a device's root: %v %v, want its node", root, err)
	}
	if _, err := cl.Set(ctx, client.Point{Node: dev, Type: "temp", Value: 1}); err != nil {
		t.Fatalf("a device writes its own node: %v", err)
	}
	if _, err := cl.Get(ctx, secret); !errors.Is(err, client.ErrPermission) {
		t.Fatalf("get outside the scope: %v, want ErrPermission", err)
	}
	if _, err := cl.Set(ctx, client.Point{Node: secret, Type: "temp", Value: 1}); !errors.Is(err, client.ErrPermission) {
		t.Fatalf("set outside the scope: %v, want ErrPermission", err)
	}
	if _, ok := value(t, admin, secret, "temp", "0"); ok {
		t.Fatal("a refused set wrote")
	}
	for _, err := range cl.Watch(ctx, secret, client.After(0)) {
		if !errors.Is(err, client.ErrPermission) {
			t.Fatalf("watch outside the scope: %v, want ErrPermission", err)
		}
		break
	}
	// Revoked: the server closes the device's connection, and its client,
	// reconnecting, is refused.
	pub, _ := creds.PublicKey()
	if _, err := admin.Set(ctx, client.Point{Node: dev, Type: crdt.TypeAuthKey, Key: pub, Tombstone: true, Text: "device"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := cl.Set(ctx, client.Point{Node: dev, Type: "temp", Value: 2})
		if errors.Is(err, client.ErrPermission) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("set with revoked credentials: %v, want ErrPermission", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Credentials the server does not know.
	stranger, err := transport.NewKeyCreds(transport.KindKey, uuid.New())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Dial(ctx, s.url, client.WithCreds(stranger)); !errors.Is(err, client.ErrPermission) {
		t.Fatalf("unknown key: %v, want ErrPermission", err)
	}
	if _, err := client.Dial(ctx, s.url); !errors.Is(err, client.ErrPermission) {
		t.Fatalf("no credentials: %v, want ErrPermission", err)
	}
}

func TestUnavailable(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	url := s.url
	cl := s.dial(client.WithTimeout(time.Minute))
	s.stop()
	// While the client reconnects, a request fails at once, known not
	// sent: it does not wait for its reply timeout (a minute here).
	start := time.Now()
	_, err := cl.Set(ctx, client.Point{Node: s.root, Type: "x", Value: 1})
	if !errors.Is(err, client.ErrUnavailable) || client.IsRefused(err) {
		t.Fatalf("set with the server stopped: %v, want ErrUnavailable, not a refusal", err)
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Errorf("set with the server stopped took %v: it waited for its reply timeout", el)
	}
	if _, err := client.Dial(ctx, url, client.WithCreds(s.admin)); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("dial with nothing there: %v, want ErrUnavailable", err)
	}
	// The client is back by itself when the server is.
	s.start()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := cl.Set(ctx, client.Point{Node: s.root, Type: "x", Value: 2})
		if err == nil {
			break
		}
		if !errors.Is(err, client.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p, _ := value(t, cl, s.root, "x", "0"); p.Value != 2 {
		t.Fatalf("x = %v after the reconnect, want 2", p.Value)
	}
}

// collect reads n changes from a watch, failing on an error.
func collect(t *testing.T, next func() (client.Change, error, bool), n int) []client.Change {
	t.Helper()
	out, err := collectErr(next, n)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func collectErr(next func() (client.Change, error, bool), n int) ([]client.Change, error) {
	var out []client.Change
	for len(out) < n {
		ch, err, ok := next()
		if !ok {
			return out, fmt.Errorf("watch ended after %d changes", len(out))
		}
		if err != nil {
			return out, fmt.Errorf("watch after %d changes: %w", len(out), err)
		}
		out = append(out, ch)
	}
	return out, nil
}

// iterPull returns a pull iterator over a watch.
func iterPull(seq iter.Seq2[client.Change, error]) (func() (client.Change, error, bool), func()) {
	return iter.Pull2(seq)
}

func TestWatchResumesAcrossRestart(t *testing.T) {
	s := startServer(t)
	w := s.dial(client.WithTimeout(2 * time.Second))
	cl := s.dial()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost, resumed := make(chan uint64, 10), make(chan uint64, 10)
	next, stop := iterPull(w.Watch(ctx, n, client.After(st.LastSeq),
		client.OnLost(func(_ error, after uint64) { lost <- after }),
		client.OnResumed(func(after uint64) { resumed <- after })))
	defer stop()
	write := func(from, to int) {
		deadline := time.Now().Add(20 * time.Second)
		for i := from; i < to; i++ {
			_, err := cl.Set(ctx, client.Point{Node: n, Type: "r", Key: fmt.Sprint(i), Value: float64(i)})
			for ; err != nil; _, err = cl.Set(ctx, client.Point{Node: n, Type: "r", Key: fmt.Sprint(i), Value: float64(i)}) {
				// Not sent while the client reconnects: send it again.
				if client.IsRefused(err) || !errors.Is(err, client.ErrUnavailable) || time.Now().After(deadline) {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	write(0, 50)
	first := collect(t, next, 50)
	// The watch waits in a request the server holds when it stops.
	got := make(chan []client.Change, 1)
	errc := make(chan error, 1)
	go func() {
		chs, err := collectErr(next, 50)
		errc <- err
		got <- chs
	}()
	time.Sleep(200 * time.Millisecond)
	s.stop()
	s.start()
	write(50, 100)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	second := <-got
	seen := map[string]bool{}
	var last uint64
	for _, ch := range append(first, second...) {
		if ch.Seq <= last {
			t.Fatalf("change #%d after #%d: out of order or repeated", ch.Seq, last)
		}
		last = ch.Seq
		if seen[ch.Point.Key] {
			t.Fatalf("register r.%s delivered twice", ch.Point.Key)
		}
		seen[ch.Point.Key] = true
	}
	if len(seen) != 100 {
		t.Fatalf("%d registers delivered, want 100", len(seen))
	}
	select {
	case <-lost:
	default:
		t.Fatal("the watch never said it lost the server")
	}
	if got := <-resumed; got != first[len(first)-1].Seq {
		t.Fatalf("resumed after #%d, want after the last delivered, #%d", got, first[len(first)-1].Seq)
	}
}

func TestWatchRefusesAnotherFeed(t *testing.T) {
	s := startServer(t)
	w := s.dial(client.WithTimeout(2 * time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := w.Set(ctx, client.Point{Node: s.root, Type: "a", Value: 1}); err != nil {
		t.Fatal(err)
	}
	next, stop := iterPull(w.Watch(ctx, uuid.Nil, client.After(0)))
	defer stop()
	collect(t, next, 1)
	// The same address, a new data directory: another instance.
	s.stop()
	s.dir = t.TempDir()
	s.start()
	_, err, ok := next()
	if !ok || !errors.Is(err, client.ErrCannotResume) {
		t.Fatalf("watch over a replaced server: %v (ok %v), want ErrCannotResume", err, ok)
	}
	// After beyond the server's last change cannot be resumed either.
	for _, err := range w.Watch(ctx, uuid.Nil, client.After(1<<40)) {
		if !errors.Is(err, client.ErrCannotResume) {
			t.Fatalf("after beyond the feed: %v", err)
		}
		break
	}
}

func TestWriterSendsWithoutFlush(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	w := cl.NewWriter(ctx, client.WriterOptions{})
	if err := w.Write(client.Point{Node: s.root, Type: "level", Value: 7}, 1); err != nil {
		t.Fatal(err)
	}
	// Written within the linger, with no Flush and no more points.
	deadline := time.Now().Add(10 * time.Second)
	for w.Acked() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a point written to a Writer was not sent without a Flush")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p, ok := value(t, cl, s.root, "level", "0"); !ok || p.Value != 7 {
		t.Fatalf("level: %+v %v", p, ok)
	}
	if err := w.Write(client.Point{Node: s.root, Type: "", Value: 1}, 2); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("invalid point: %v", err)
	}
	res, err := w.Close()
	if err != nil || res.Applied != 1 {
		t.Fatalf("close: %+v %v", res, err)
	}
	if err := w.Write(client.Point{Node: s.root, Type: "x"}, 3); err == nil {
		t.Fatal("write after close accepted")
	}
}

func TestImportWritesAsItReads(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	var res client.ImportResult
	go func() {
		var err error
		res, err = cl.Import(ctx, pr, client.ImportOptions{Name: "pipe"})
		done <- err
	}()
	fmt.Fprintf(pw, "{\"node\":%q,\"type\":\"temp\",\"value\":20}\n", s.root)
	// Durable while the input is still open.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p, ok := value(t, cl, s.root, "temp", "0"); ok && p.Value == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a line read was not written before the end of the input")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintf(pw, "{\"node\":%q,\"type\":\"temp\",\"value\":21}\n", s.root)
	pw.Close()
	if err := <-done; err != nil || res.Records != 2 || res.Applied != 2 {
		t.Fatalf("import: %+v %v", res, err)
	}
	if p, _ := value(t, cl, s.root, "temp", "0"); p.Value != 21 {
		t.Fatalf("temp = %v, want the later line's 21", p.Value)
	}
}

func TestImportStopsAtBadLine(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	in := fmt.Sprintf("{\"node\":%q,\"type\":\"a\",\"value\":1}\n\n{\"node\":%q,\"type\":\"b\",\"value\":2}\n{\"node\":\"not-a-uuid\",\"type\":\"c\"}\n{\"node\":%q,\"type\":\"d\",\"value\":4}\n",
		s.root, s.root, s.root)
	_, err := cl.Import(ctx, strings.NewReader(in), client.ImportOptions{Name: "in"})
	var ie *client.ImportError
	if !errors.As(err, &ie) || !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "in, line 4") || ie.Resume != 4 {
		t.Fatalf("bad line 4: %v (%+v)", err, ie)
	}
	for typ, want := range map[string]bool{"a": true, "b": true, "d": false} {
		if _, ok := value(t, cl, s.root, typ, "0"); ok != want {
			t.Errorf("point %s written: %v, want %v", typ, ok, want)
		}
	}
}

func TestImportHoldsRecordsUntilAttached(t *testing.T) {
	s := startServer(t)
	cl := s.dial()
	ctx := context.Background()
	child, parent, stray := uuid.New(), uuid.New(), uuid.New()
	// As a backup lists them: the child's points and edge before the
	// edge that attaches its parent.
	lines := []string{
		fmt.Sprintf(`{"node":%q,"type":"temp","value":1}`, child),
		fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}`, child, parent),
		fmt.Sprintf(`{"node":%q,"type":"level","value":2}`, stray),
		fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}`, parent, s.root),
		fmt.Sprintf(`{"node":%q,"type":"temp","value":3}`, parent),
	}
	_, err := cl.Import(ctx, strings.NewReader(strings.Join(lines, "\n")+"\n"), client.ImportOptions{Name: "backup"})
	var ie *client.ImportError
	var oe *client.OrphansError
	if !errors.As(err, &ie) || !errors.As(err, &oe) || oe.Records != 1 || oe.Examples[0].Node != stray || oe.Examples[0].Line != 3 {
		t.Fatalf("a record outside the tree: %v", err)
	}
	if ie.Resume != 3 || ie.AckedAfter != 2 || len(ie.Held) != 1 || ie.Held[0] != 3 {
		t.Fatalf("report: resume %d, acked after %d, held %v; want 3, 2, [3]", ie.Resume, ie.AckedAfter, ie.Held)
	}
	if p, ok := value(t, cl, child, "temp", "0"); !ok || p.Value != 1 {
		t.Fatalf("the child's point, held until its parent was attached: %+v %v", p, ok)
	}
	if _, err := cl.Get(ctx, stray); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("the stray node: %v, want not written", err)
	}
	// With AllowOrphans, written at the end.
	res, err := cl.Import(ctx, strings.NewReader(lines[2]+"\n"), client.ImportOptions{AllowOrphans: true})
	if err != nil || res.Orphans != 1 {
		t.Fatalf("allow orphans: %+v %v", res, err)
	}
	if _, ok := value(t, cl, stray, "level", "0"); !ok {
		t.Fatal("allowed orphan not written")
	}
}

func TestImportReportsServerLost(t *testing.T) {
	s := startServer(t)
	cl := s.dial(client.WithTimeout(2 * time.Second))
	ctx := context.Background()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := cl.Import(ctx, pr, client.ImportOptions{Name: "pipe"})
		done <- err
	}()
	fmt.Fprintf(pw, "{\"node\":%q,\"type\":\"a\",\"value\":1}\n", s.root)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := value(t, cl, s.root, "a", "0"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("line 1 not written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.stop()
	fmt.Fprintf(pw, "{\"node\":%q,\"type\":\"b\",\"value\":2}\n", s.root)
	// The write of line 2 fails; the import stops at the next line read.
	time.Sleep(300 * time.Millisecond)
	fmt.Fprintf(pw, "{\"node\":%q,\"type\":\"c\",\"value\":3}\n", s.root)
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("import did not stop when its server did")
	}
	pw.Close()
	var ie *client.ImportError
	if !errors.As(err, &ie) || !errors.Is(err, client.ErrUnavailable) || ie.Resume != 2 || len(ie.Batch) != 1 || ie.Batch[0] != 2 || ie.Refused {
		t.Fatalf("import with its server gone: %v (%+v), want line 2 unsent/unknown, resume at 2", err, ie)
	}
}

// TestRequestInFlightWhenTheConnectionDrops: a request waiting for its
// reply when the connection drops fails then, with ErrUnavailable (its
// outcome unknown, not a refusal), rather than at its timeout: its reply
// could not come over the new connection.
func TestRequestInFlightWhenTheConnectionDrops(t *testing.T) {
	s := startServer(t)
	p, err := faultproxy.Start(faultproxy.Config{Target: strings.TrimPrefix(s.url, "nats://")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cl, err := client.Dial(context.Background(), p.URL(), client.WithCreds(s.admin), client.WithTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	st, err := cl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A watch after the feed's end: the server holds it (up to 30 s).
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		var r transport.WatchReply
		done <- cl.RequestWait(context.Background(), transport.NameWatch,
			transport.WatchRequest{After: st.LastSeq, Root: s.root, Wait: transport.MaxWatchWait}, &r, 30*time.Second)
	}()
	time.Sleep(300 * time.Millisecond) // the request reaches the server (if not, it fails the same way)
	p.Cut()
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrUnavailable) || client.IsRefused(err) || !strings.Contains(err.Error(), "may or may not") {
			t.Fatalf("in flight when the connection dropped: %v, want ErrUnavailable, outcome unknown", err)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Fatalf("it failed after %v", el)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the request still waits 20 s after the connection dropped")
	}
}
