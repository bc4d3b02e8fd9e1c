package main

// End-to-end tests: the real siot binary, built once, run as child
// processes on loopback, each with its own data directory. They drive the
// public contracts only (README.md and docs/operations.md): serve flags and signals, and the
// import, export and status commands.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// e2eBin is the siot binary built for this test binary's run, or the
// error building it; e2eBinDir is removed by TestMain.
var (
	e2eOnce   sync.Once
	e2eBin    string
	e2eBinDir string
	e2eErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if e2eBinDir != "" {
		os.RemoveAll(e2eBinDir)
	}
	if natsBinDir != "" {
		os.RemoveAll(natsBinDir)
	}
	os.Exit(code)
}

// e2eBinary builds `siot` (without -race) once and returns its path.
func e2eBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs the binary")
	}
	e2eOnce.Do(func() {
		dir, err := os.MkdirTemp("", "siot-e2e-bin-")
		if err != nil {
			e2eErr = err
			return
		}
		e2eBinDir = dir
		bin := filepath.Join(dir, "siot")
		goTool, err := exec.LookPath("go")
		if err != nil {
			e2eErr = err
			return
		}
		start := time.Now()
		out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			e2eErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "e2e: built %s in %v\n", bin, time.Since(start).Round(time.Millisecond))
		e2eBin = bin
	})
	if e2eErr != nil {
		t.Fatal(e2eErr)
	}
	return e2eBin
}

// e2eBuffer collects a child's output; safe for concurrent use.
type e2eBuffer = syncBuffer

// e2eProc is one `siot serve` instance: a data directory and a port kept
// across restarts, and at most one running child process.
type e2eProc struct {
	t     *testing.T
	name  string
	data  string
	port  int      // 0 until the first start succeeded
	extra []string // link flags
	web   bool     // serve HTTP on a fresh loopback port each start
	bin   string   // the binary to run; e2eBinary's when empty
	all   e2eBuffer

	// The running child, if any. Only the test goroutine touches these;
	// exited is closed by the goroutine waiting for the child.
	cmd    *exec.Cmd
	exited chan struct{}
	id     string // root ID from the "siot serving" line
	url    string // NATS URL from the "siot serving" line
	http   string // HTTP host:port from the "siot serving" line, if web
}

// newProc declares an instance; it does not start it. Its child, if still
// running when the test ends, is killed and waited for.
func newProc(t *testing.T, name string, extra ...string) *e2eProc {
	p := &e2eProc{t: t, name: name, data: t.TempDir(), extra: extra}
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Kill()
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: pid %d did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("---- %s log (last 6000 bytes) ----\n%s", p.name, tail(p.all.String(), 6000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func (p *e2eProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

var errPortTaken = errors.New("port taken")

// start runs the instance and waits for its "siot serving" line. A first
// start whose port turns out to be taken picks another; a restart keeps its
// port (links are configured with it) and waits for it to be free.
func (p *e2eProc) start() {
	t := p.t
	t.Helper()
	if p.running() {
		t.Fatalf("%s: already running", p.name)
	}
	fixed := p.port != 0
	if !fixed {
		p.port = freePort(t)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.startOnce()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			t.Fatalf("%s: start: %v", p.name, err)
		}
		t.Logf("%s: port %d taken, retrying", p.name, p.port)
		if fixed {
			waitPortFree(t, p.port, deadline)
		} else {
			p.port = freePort(t)
		}
	}
}

func (p *e2eProc) startOnce() error {
	httpAddr := ""
	if p.web {
		httpAddr = "127.0.0.1:" + strconv.Itoa(freePort(p.t))
	}
	args := []string{"serve", "--data", p.data, "--listen", "127.0.0.1:" + strconv.Itoa(p.port), "--http", httpAddr,
		"--log-format", "json"}
	args = withLinkCreds(p.t, append(args, p.extra...))
	bin := p.bin
	if bin == "" {
		bin = e2eBinary(p.t)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	var run e2eBuffer
	fmt.Fprintf(&p.all, "==== %s: siot %s\n", time.Now().Format("15:04:05.000"), strings.Join(args, " "))
	w := multiWriter{&run, &p.all}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	var result error
	finished := poll(20*time.Second, 10*time.Millisecond, func() bool {
		out := run.String()
		var ok bool
		if p.id, p.url, p.http, ok = servingLine(out); ok {
			registerCreds(p.url, p.data)
			if want := "nats://127.0.0.1:" + strconv.Itoa(p.port); p.url != want {
				result = fmt.Errorf("serving on %s, want %s", p.url, want)
			}
			return true
		}
		if strings.Contains(out, "address already in use") {
			// The embedded NATS server logs the bind error, then waits
			// for readiness for 10 s: do not wait with it.
			_ = cmd.Process.Kill()
			<-exited
			result = errPortTaken
			return true
		}
		select {
		case <-exited:
			result = fmt.Errorf("exited (%v) before serving:\n%s", cmd.ProcessState, out)
			return true
		default:
			return false
		}
	})
	if !finished {
		return fmt.Errorf("not serving after 20 s:\n%s", run.String())
	}
	return result
}

type multiWriter []*e2eBuffer

func (m multiWriter) Write(b []byte) (int, error) {
	for _, w := range m {
		w.Write(b)
	}
	return len(b), nil
}

// stop sends sig and waits up to within for the child to exit; it returns
// the exit code (-1 when killed by a signal) and how long it took.
func (p *e2eProc) stop(sig syscall.Signal, within time.Duration) (int, time.Duration) {
	t := p.t
	t.Helper()
	if !p.running() {
		t.Fatalf("%s: not running", p.name)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("%s: still running %v after %v", p.name, within, sig)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}

// httpGet returns the body of a 200 response to GET url.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %s", url, resp.Status, err, b)
	}
	return string(b)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitPortFree(t *testing.T, port int, deadline time.Time) {
	t.Helper()
	var err error
	free := poll(time.Until(deadline), 20*time.Millisecond, func() bool {
		var ln net.Listener
		if ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			ln.Close()
			return true
		}
		return false
	})
	if !free {
		t.Fatalf("port %d still taken: %v", port, err)
	}
}

// childEnv is the environment of the processes a test starts: the test's
// own without its SIOT_ variables, which would change how a server starts
// (every serve flag reads one) or whom a client signs in as.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIOT_") {
			env = append(env, kv)
		}
	}
	return env
}

// siot runs a client command of the binary; it never calls t.Fatal, so it
// may run on any goroutine.
func siot(stdin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2eBin, args...)
	cmd.Env = append(childEnv(), "SIOT_CREDS="+credsFor(argValue(args, "--server")))
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("siot %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), err
}

func mustSiot(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, _, err := siot(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type e2eLink struct {
	URL       string `json:"url"`
	Remote    string `json:"remote"`
	Connected bool   `json:"connected"`
	InSync    bool   `json:"inSync"`
	Pending   uint64 `json:"pending"`
	LastError string `json:"lastError"`
	BytesSent uint64 `json:"bytesSent"`
	BytesRecv uint64 `json:"bytesReceived"`
}

type e2eStatus struct {
	ID       string    `json:"id"`
	Instance string    `json:"instance"`
	LastSeq  uint64    `json:"lastSeq"`
	Links    []e2eLink `json:"links"`
	Accepted []e2eLink `json:"accepted"`
}

func (p *e2eProc) status() (e2eStatus, error) {
	var st e2eStatus
	out, _, err := siot("", "status", "--json", "--server", p.url, "--timeout", "5s")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status --json: %w: %q", err, out)
	}
	return st, nil
}

func (p *e2eProc) mustStatus() e2eStatus {
	p.t.Helper()
	st, err := p.status()
	if err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	return st
}

func (p *e2eProc) link(st e2eStatus, url string) (e2eLink, bool) {
	for _, l := range st.Links {
		if l.URL == url {
			return l, true
		}
	}
	return e2eLink{}, false
}

// export prints the instance's export, of root's subtree when root is set.
func (p *e2eProc) export(root string) string {
	p.t.Helper()
	args := []string{"export", "--server", p.url}
	if root != "" {
		args = append(args, "--root", root)
	}
	return mustSiot(p.t, "", args...)
}

func (p *e2eProc) importRecords(recs []e2eRec) {
	p.t.Helper()
	mustSiot(p.t, jsonl(recs), "import", "--server", p.url)
}

// waitFor polls cond until it holds or timeout passes; cond's string says
// what it saw, for the failure message.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	var seen string
	if !poll(timeout, 25*time.Millisecond, func() (ok bool) { ok, seen = cond(); return ok }) {
		t.Fatalf("timed out after %v waiting for %s; last seen: %s", timeout, what, seen)
	}
}

// waitLinks waits until every link of p to urls is connected and in sync.
func waitLinks(t *testing.T, p *e2eProc, urls ...string) e2eStatus {
	t.Helper()
	var st e2eStatus
	waitFor(t, p.name+" links connected and in sync", 20*time.Second, func() (bool, string) {
		var err error
		st, err = p.status()
		if err != nil {
			return false, err.Error()
		}
		for _, u := range urls {
			l, ok := p.link(st, u)
			if !ok || !l.Connected || !l.InSync {
				return false, fmt.Sprintf("%+v", st.Links)
			}
		}
		return true, ""
	})
	return st
}

// waitSame waits until every export in gets is byte-identical, and returns
// it.
func waitSame(t *testing.T, what string, gets ...func() string) string {
	t.Helper()
	var first string
	waitFor(t, what, 20*time.Second, func() (bool, string) {
		first = gets[0]()
		for i, g := range gets[1:] {
			if other := g(); other != first {
				return false, fmt.Sprintf("export 0 and %d differ: %s", i+1, diffSummary(first, other))
			}
		}
		return true, ""
	})
	return first
}

func diffSummary(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("%d vs %d lines; first difference at line %d:\n  %s\n  %s", len(al)-1, len(bl)-1, i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("%d vs %d lines, one a prefix of the other", len(al)-1, len(bl)-1)
}

// e2eRec is one point record to import.
type e2eRec struct {
	node, parent, typ, key string
	value                  float64
	text                   string
}

func (r e2eRec) id() string { return r.node + "/" + r.parent + "/" + r.typ + "/" + r.key }

func jsonl(recs []e2eRec) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, `{"node":%q`, r.node)
		if r.parent != "" {
			fmt.Fprintf(&b, `,"parent":%q`, r.parent)
		}
		fmt.Fprintf(&b, `,"type":%q,"key":%q`, r.typ, r.key)
		if r.text != "" {
			fmt.Fprintf(&b, `,"text":%q`, r.text)
		} else {
			fmt.Fprintf(&b, `,"value":%v`, r.value)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// sensors returns records creating n sensor nodes under parent, each with
// temps readings "temp" keys 0..temps-1, and the new node IDs.
func sensors(parent string, n, temps int, base float64) ([]e2eRec, []string) {
	var recs []e2eRec
	var ids []string
	for i := range n {
		s := uuid.NewString()
		ids = append(ids, s)
		recs = append(recs,
			e2eRec{node: s, parent: parent, typ: "edge", key: "0"},
			e2eRec{node: s, typ: "nodeType", key: "0", text: "sensor"})
		for k := range temps {
			recs = append(recs, e2eRec{node: s, typ: "temp", key: strconv.Itoa(k), value: base + float64(i) + float64(k)/100})
		}
	}
	return recs, ids
}

// setpoints returns one "setpoint" record per node, key "0".
func setpoints(nodes []string, value float64) []e2eRec {
	return keyedSetpoints(nodes, "0", value)
}

func keyedSetpoints(nodes []string, key string, value float64) []e2eRec {
	recs := make([]e2eRec, len(nodes))
	for i, n := range nodes {
		recs[i] = e2eRec{node: n, typ: "setpoint", key: key, value: value + float64(i)}
	}
	return recs
}

// missing returns how many of recs export lacks (or holds with another
// value or text), and a few of them.
func missing(export string, recs []e2eRec) (int, []string) {
	type line struct {
		Node, Parent, Type, Key, Text string
		Value                         float64
	}
	have := make(map[string]line)
	sc := bufio.NewScanner(strings.NewReader(export))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return len(recs), []string{"bad export line: " + sc.Text()}
		}
		have[l.Node+"/"+l.Parent+"/"+l.Type+"/"+l.Key] = l
	}
	n := 0
	var some []string
	for _, r := range recs {
		l, ok := have[r.id()]
		if ok && l.Text == r.text && (r.text != "" || l.Value == r.value) {
			continue
		}
		n++
		if len(some) < 3 {
			some = append(some, fmt.Sprintf("%s=%v%s (export: %v)", r.id(), r.value, r.text, ok))
		}
	}
	return n, some
}

func requireAll(t *testing.T, where, export string, recs []e2eRec) {
	t.Helper()
	if n, some := missing(export, recs); n > 0 {
		t.Fatalf("%s lacks %d of %d records, e.g. %v", where, n, len(recs), some)
	}
}

// TestE2ESignalsStopCleanlyAndKeepRoot: SIGTERM and SIGINT make `siot
// serve` exit 0 promptly, without logging an error, whether it holds a
// dialed link (edge) or an accepted one and an HTTP server (cloud); a
// restart on the same data keeps the root ID and every point.
func TestE2ESignalsStopCleanlyAndKeepRoot(t *testing.T) {
	e2eBinary(t)
	cloud := newProc(t, "cloud")
	cloud.web = true
	cloud.start()
	edge := newProc(t, "edge", "--upstream", cloud.url)
	edge.start()
	waitLinks(t, edge, cloud.url)
	recs, _ := sensors(edge.id, 20, 5, 10)
	edge.importRecords(recs)
	cloudExp := waitSame(t, "cloud holds the edge's subtree",
		func() string { return edge.export("") }, func() string { return cloud.export(edge.id) })
	requireAll(t, "edge export", cloudExp, recs)
	wantEdge, wantCloud := edge.export(""), cloud.export("")
	ids := map[*e2eProc]string{cloud: cloud.id, edge: edge.id}

	const prompt = 5 * time.Second
	for _, round := range []struct {
		sig   syscall.Signal
		order []*e2eProc
	}{
		{syscall.SIGTERM, []*e2eProc{cloud, edge}}, // cloud first: it ends an accepted session
		{syscall.SIGINT, []*e2eProc{edge, cloud}},  // edge first: it ends a dialed session
		{syscall.SIGINT, []*e2eProc{cloud, edge}},
		{syscall.SIGTERM, []*e2eProc{edge, cloud}},
	} {
		for _, p := range round.order {
			code, took := p.stop(round.sig, 15*time.Second)
			t.Logf("%v %s: exit %d after %v", round.sig, p.name, code, took.Round(time.Millisecond))
			if code != 0 {
				t.Errorf("%v %s: exit status %d, want 0", round.sig, p.name, code)
			}
			if took > prompt {
				t.Errorf("%v %s: took %v to exit, want under %v", round.sig, p.name, took, prompt)
			}
			if i := strings.Index(p.all.String(), `"level":"ERROR"`); i >= 0 {
				t.Errorf("%v %s: logged an error: %.300s", round.sig, p.name, p.all.String()[i:])
			}
		}
		cloud.start()
		edge.start()
		for _, p := range []*e2eProc{cloud, edge} {
			if st := p.mustStatus(); st.ID != ids[p] || p.id != ids[p] {
				t.Fatalf("%v: %s restarted with root %s (status %s), want %s", round.sig, p.name, p.id, st.ID, ids[p])
			}
		}
		if body := httpGet(t, "http://"+cloud.http+"/readyz"); body != "ready\n" {
			t.Errorf("%v: cloud /readyz after restart: %q", round.sig, body)
		}
		var hst e2eStatus
		if err := json.Unmarshal([]byte(httpGet(t, "http://"+cloud.http+"/status")), &hst); err != nil || hst.ID != ids[cloud] {
			t.Errorf("%v: cloud HTTP /status: id %q, err %v; want %s", round.sig, hst.ID, err, ids[cloud])
		}
		waitLinks(t, edge, cloud.url)
		if got := edge.export(""); got != wantEdge {
			t.Fatalf("%v: edge export changed across restart: %s", round.sig, diffSummary(wantEdge, got))
		}
		if got := cloud.export(""); got != wantCloud {
			t.Fatalf("%v: cloud export changed across restart: %s", round.sig, diffSummary(wantCloud, got))
		}
	}
}

// TestE2EPeeredCloudsSurviveKill: cloud B peers with cloud A (taking its
// root), an edge links to both. While A is SIGKILLed, writes at the edge
// and at B still meet; restarted on the same data and port, A catches up
// and all three agree byte for byte.
func TestE2EPeeredCloudsSurviveKill(t *testing.T) {
	e2eBinary(t)
	a := newProc(t, "cloudA")
	a.start()
	b := newProc(t, "cloudB", "--peer", a.url)
	b.start()
	if b.id != a.id {
		t.Fatalf("peer with empty data has root %s, want A's %s", b.id, a.id)
	}
	// The device is provisioned on A; its key syncs to B, so both accept
	// it.
	waitLinks(t, b, a.url)
	devCreds := filepath.Join(t.TempDir(), "edge.creds")
	mustSiot(t, "", "device", "add", "--server", a.url, "--out", devCreds)
	waitLinks(t, b, a.url)
	e := newProc(t, "edge", "--upstream", a.url, "--upstream", b.url, "--creds", devCreds)
	e.start()
	if e.id == a.id {
		t.Fatal("edge has the clouds' root")
	}
	waitLinks(t, e, a.url, b.url)
	waitLinks(t, b, a.url)

	batch1, sensorIDs := sensors(e.id, 30, 4, 100)
	e.importRecords(batch1)
	// Cloud-level data too, outside the edge's subtree.
	cloudRecs, _ := sensors(a.id, 5, 2, 500)
	a.importRecords(cloudRecs)
	exp := waitSame(t, "both clouds hold the edge's subtree",
		func() string { return e.export("") }, func() string { return a.export(e.id) }, func() string { return b.export(e.id) })
	requireAll(t, "edge subtree", exp, batch1)
	requireAll(t, "cloud B", waitSame(t, "clouds agree", func() string { return a.export("") }, func() string { return b.export("") }), cloudRecs)

	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("cloud A survived SIGKILL")
	}

	// While A is dead: new sensors and readings at the edge, setpoints on
	// the edge's sensors written at B.
	batch2, _ := sensors(e.id, 10, 4, 200)
	batch2 = append(batch2, setpoints(sensorIDs[:10], 1000)...)
	e.importRecords(batch2)
	batch3 := setpoints(sensorIDs[10:], 2000)
	b.importRecords(batch3)
	exp = waitSame(t, "edge and B agree while A is dead",
		func() string { return e.export("") }, func() string { return b.export(e.id) })
	requireAll(t, "edge and B", exp, append(append(append([]e2eRec{}, batch1...), batch2...), batch3...))
	// The status contract: the links to A are down and say why; the
	// edge's link to B is up.
	waitFor(t, "status shows the links to A down with a lastError", 10*time.Second, func() (bool, string) {
		es, err := e.status()
		if err != nil {
			return false, err.Error()
		}
		bs, err := b.status()
		if err != nil {
			return false, err.Error()
		}
		ea, _ := e.link(es, a.url)
		eb, _ := e.link(es, b.url)
		ba, _ := b.link(bs, a.url)
		ok := !ea.Connected && !ea.InSync && ea.LastError != "" && eb.Connected &&
			!ba.Connected && !ba.InSync && ba.LastError != ""
		return ok, fmt.Sprintf("edge→A %+v, edge→B %+v, B→A %+v", ea, eb, ba)
	})

	a.start()
	if a.id != b.id {
		t.Fatalf("A restarted with root %s, want %s", a.id, b.id)
	}
	// Edge and B re-dial A with backoff; A learns batch2 (from both) and
	// batch3 (from B).
	waitLinks(t, e, a.url, b.url)
	waitLinks(t, b, a.url)
	full := waitSame(t, "A caught up with B", func() string { return a.export("") }, func() string { return b.export("") })
	sub := waitSame(t, "edge equals the clouds' subtree",
		func() string { return e.export("") }, func() string { return a.export(e.id) }, func() string { return b.export(e.id) })
	all := append(append(append([]e2eRec{}, batch1...), batch2...), batch3...)
	requireAll(t, "A's full export", full, all)
	requireAll(t, "A's full export", full, cloudRecs)
	requireAll(t, "edge subtree", sub, all)
	if n, _ := missing(sub, cloudRecs); n != len(cloudRecs) {
		t.Errorf("edge holds %d cloud-level records outside its scope", len(cloudRecs)-n)
	}
}

// TestE2EEdgeKilledDuringPush: an edge is SIGKILLed while imports into it
// and pushes to the cloud are in flight, five times. Even rounds kill at a
// seeded random moment while imports run into the edge and into the cloud
// (setpoints for the edge's sensors, so pushes go both ways). Odd rounds
// freeze the cloud (SIGSTOP) first, so the edge's pushes of its
// acknowledged imports are certainly sent and unacknowledged when it dies;
// the cloud resumes (SIGCONT) after the kill. After each restart every
// import that exited 0 is on the edge at once (durable), and once the link
// is in sync the cloud's subtree and the edge are byte-identical and hold
// every acknowledged record from both sides.
func TestE2EEdgeKilledDuringPush(t *testing.T) {
	e2eBinary(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SIOT_E2E_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (rerun with SIOT_E2E_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x5107))

	cloud := newProc(t, "cloud")
	cloud.start()
	edge := newProc(t, "edge", "--upstream", cloud.url)
	edge.start()
	waitLinks(t, edge, cloud.url)

	var fromEdge, fromCloud []e2eRec // acknowledged imports
	var synced []string              // sensors the cloud is known to hold
	const rounds = 5
	for round := range rounds {
		frozen := round%2 == 1
		// Everything random is drawn here, on the test goroutine, so the
		// seed decides it.
		type batch struct {
			recs []e2eRec
			ids  []string
		}
		var edgeBatches []batch
		for i := range 30 {
			recs, ids := sensors(edge.id, 20+rng.IntN(40), 8, float64(round*1000+i))
			edgeBatches = append(edgeBatches, batch{recs, ids})
		}
		var cloudBatches [][]e2eRec
		for i := range 30 {
			if len(synced) == 0 || frozen {
				break
			}
			n := 1 + rng.IntN(min(len(synced), 40))
			start := rng.IntN(len(synced) - n + 1)
			// A key of its own: no later batch overwrites it, so every
			// acknowledged record must be found as written.
			key := fmt.Sprintf("r%d.%d", round, i)
			cloudBatches = append(cloudBatches, keyedSetpoints(synced[start:start+n], key, float64(round*10000+i*100)))
		}
		killAfter := 1 + rng.IntN(4) // acknowledged edge imports before the kill
		// Some kills land right at an acknowledgement, while that batch is
		// being pushed; others a little later, maybe inside the next
		// import.
		var jitter time.Duration
		if rng.IntN(2) == 1 {
			jitter = time.Duration(rng.IntN(40)) * time.Millisecond
		}

		if frozen {
			if err := cloud.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}
		var mu sync.Mutex
		var ackedEdge, ackedCloud []e2eRec
		var ackedIDs []string
		var edgeErr, cloudErr error
		acks := make(chan struct{}, len(edgeBatches))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // imports into the edge, one after another
			defer wg.Done()
			for i, b := range edgeBatches {
				select {
				case <-stop:
					return
				default:
				}
				_, _, err := siot(jsonl(b.recs), "import", "--server", edge.url, "--timeout", "10s")
				mu.Lock()
				if err == nil {
					ackedEdge = append(ackedEdge, b.recs...)
					ackedIDs = append(ackedIDs, b.ids...)
				} else if i < killAfter && edgeErr == nil {
					edgeErr = err // before the kill, every import must succeed
				}
				mu.Unlock()
				if err == nil {
					acks <- struct{}{}
				}
			}
		}()
		go func() { // setpoints written at the cloud, pushed to the edge
			defer wg.Done()
			for _, b := range cloudBatches {
				select {
				case <-stop:
					return
				default:
				}
				_, _, err := siot(jsonl(b), "import", "--server", cloud.url, "--timeout", "10s")
				mu.Lock()
				if err == nil {
					ackedCloud = append(ackedCloud, b...)
				} else {
					cloudErr = err // the cloud never dies here
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		for range killAfter {
			select {
			case <-acks:
			case <-time.After(30 * time.Second):
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: no import acknowledged in 30 s (%v)", round, edgeErr)
			}
		}
		if jitter > 0 {
			timer := time.NewTimer(jitter)
			<-timer.C
		}
		if err := edge.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-edge.exited
		close(stop)
		wg.Wait()
		if frozen {
			if err := cloud.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
		if edgeErr != nil || cloudErr != nil {
			t.Fatalf("round %d: import failed while both ran: edge %v; cloud %v", round, edgeErr, cloudErr)
		}
		fromEdge = append(fromEdge, ackedEdge...)
		fromCloud = append(fromCloud, ackedCloud...)

		atKill := cloud.export(edge.id) // the edge is down: nothing more arrives
		edge.start()
		// Durable: every acknowledged import is on the edge at once,
		// before any sync could have returned it (the cloud never sends
		// the edge's own writes back).
		restarted := edge.export("")
		requireAll(t, fmt.Sprintf("round %d: edge right after restart", round), restarted, fromEdge)
		// What resume must deliver: the edge's records the cloud lacked
		// with the edge down (acknowledged or not).
		lacking, _ := missing(atKill, fromEdge)
		t.Logf("round %d (frozen cloud %v): SIGKILL after %d acked edge imports (+%v): %d edge records and %d cloud setpoints acked this round; "+
			"with the edge down the cloud lacked %d acked records and %d records the edge held",
			round, frozen, killAfter, jitter, len(ackedEdge), len(ackedCloud), lacking, linesNotIn(restarted, atKill))
		if frozen && lacking == 0 {
			t.Logf("round %d: the frozen cloud still got every push (read from its socket after SIGCONT)", round)
		}
		waitLinks(t, edge, cloud.url)
		exp := waitSame(t, fmt.Sprintf("round %d: edge and cloud subtree converge", round),
			func() string { return edge.export("") }, func() string { return cloud.export(edge.id) })
		requireAll(t, fmt.Sprintf("round %d: converged edge subtree (edge writes)", round), exp, fromEdge)
		requireAll(t, fmt.Sprintf("round %d: converged edge subtree (cloud setpoints)", round), exp, fromCloud)
		synced = append(synced, ackedIDs...)
	}
	if len(fromCloud) == 0 {
		t.Error("no cloud setpoint was acknowledged in any round: the cloud→edge direction was not exercised")
	}
}

// linesNotIn counts the lines of a that b lacks.
func linesNotIn(a, b string) int {
	have := make(map[string]bool)
	for l := range strings.Lines(b) {
		have[l] = true
	}
	n := 0
	for l := range strings.Lines(a) {
		if !have[l] {
			n++
		}
	}
	return n
}

// TestE2ERestartEveryRoleResumes: a cloud, a peer and an edge each
// restart on their data directory; writes from before and after converge
// everywhere, and each restarted link resumes instead of resending.
func TestE2ERestartEveryRoleResumes(t *testing.T) {
	e2eBinary(t)
	cloud := newProc(t, "cloud")
	cloud.start()
	peer := newProc(t, "peer", "--peer", cloud.url)
	peer.start()
	edge := newProc(t, "edge", "--upstream", cloud.url)
	edge.start()
	waitLinks(t, edge, cloud.url)
	waitLinks(t, peer, cloud.url)

	// Before: a dataset of N = 6000 points at the edge, plus writes at the
	// cloud and the peer, inside and outside the edge's subtree.
	const n = 6000
	before, edgeSensors := sensors(edge.id, n/12, 10, 1)
	edge.importRecords(before)
	// The setpoints below go to the edge's sensors at the cloud and the
	// peer: an import refuses points of nodes its server does not have
	// yet, so both must hold them first.
	waitSame(t, "the edge's sensors reach the cloud and the peer",
		func() string { return edge.export("") }, func() string { return cloud.export(edge.id) }, func() string { return peer.export(edge.id) })
	cloudBefore, _ := sensors(cloud.id, 20, 3, 50)
	cloudBefore = append(cloudBefore, setpoints(edgeSensors[:100], 3000)...)
	cloud.importRecords(cloudBefore)
	peerBefore, _ := sensors(peer.id, 20, 3, 70)
	peerBefore = append(peerBefore, setpoints(edgeSensors[100:200], 4000)...)
	peer.importRecords(peerBefore)

	// converge waits until cloud and peer agree byte for byte and the
	// edge equals their export of its subtree; it returns both exports.
	converge := func(when string) (full, sub string) {
		t.Helper()
		waitLinks(t, edge, cloud.url)
		waitLinks(t, peer, cloud.url)
		full = waitSame(t, when+": cloud and peer agree", func() string { return cloud.export("") }, func() string { return peer.export("") })
		sub = waitSame(t, when+": edge equals the clouds' subtree",
			func() string { return edge.export("") }, func() string { return cloud.export(edge.id) }, func() string { return peer.export(edge.id) })
		return full, sub
	}
	full, sub := converge("before restarts")
	for _, r := range [][]e2eRec{before, cloudBefore, peerBefore} {
		requireAll(t, "before restarts: cloud and peer", full, r)
	}
	requireAll(t, "before restarts: edge", sub, before)
	requireAll(t, "before restarts: edge", sub, cloudBefore[len(cloudBefore)-100:])
	requireAll(t, "before restarts: edge", sub, peerBefore[len(peerBefore)-100:])
	st := waitLinks(t, edge, cloud.url)
	l, _ := edge.link(st, cloud.url)
	initial := l.BytesSent
	t.Logf("edge link: %d bytes sent for the initial sync of %d points", initial, n)

	// The bound. Resending the dataset costs at least 10 bytes a point (a
	// point is a 9-field msgpack array, at least one byte per field, plus
	// its array header), so at least 10·N = 60,000 bytes. A resume with
	// nothing new costs a fixed handful of small frames: a Start (~20 B),
	// at most a few empty idle pushes and acks (~40 B each) and a ping per
	// 15 s (~10 B). 2 KiB leaves ample room for those and is under 4% of
	// the cheapest resend, so passing it proves nothing was resent.
	const resumeBound = 2048
	if initial < 10*n {
		t.Errorf("initial sync sent %d bytes, under the %d a resend must cost: the bound is wrong", initial, 10*n)
	}
	linkBytes := func(p *e2eProc) uint64 {
		t.Helper()
		st := waitLinks(t, p, cloud.url)
		l, _ := p.link(st, cloud.url)
		return l.BytesSent
	}
	checkResume := func(who string, p *e2eProc, before, after uint64) {
		t.Helper()
		t.Logf("%s: %s's link sent %d bytes to resume", who, p.name, after-before)
		if after-before > resumeBound {
			t.Errorf("%s: %s's link sent %d bytes to resume an unchanged dataset, want ≤ %d", who, p.name, after-before, resumeBound)
		}
	}

	// Restart the edge: its counters start at zero.
	code, _ := edge.stop(syscall.SIGTERM, 15*time.Second)
	if code != 0 {
		t.Errorf("edge exit %d", code)
	}
	edge.start()
	checkResume("edge restarted", edge, 0, linkBytes(edge))

	// Restart the cloud while edge and peer keep running: their dialed
	// links reconnect; counters carry over, so compare.
	e0, p0 := linkBytes(edge), linkBytes(peer)
	if code, _ := cloud.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("cloud exit %d", code)
	}
	cloud.start()
	waitFor(t, "the edge's link to go down and back", 20*time.Second, func() (bool, string) {
		st, err := edge.status()
		if err != nil {
			return false, err.Error()
		}
		l, _ := edge.link(st, cloud.url)
		return l.Connected && l.InSync && l.BytesSent > e0, fmt.Sprintf("%+v", l)
	})
	checkResume("cloud restarted", edge, e0, linkBytes(edge))
	checkResume("cloud restarted", peer, p0, linkBytes(peer))

	// Restart the peer.
	if code, _ := peer.stop(syscall.SIGINT, 15*time.Second); code != 0 {
		t.Errorf("peer exit %d", code)
	}
	peer.start()
	checkResume("peer restarted", peer, 0, linkBytes(peer))
	full2, sub2 := converge("after restarts")
	if full2 != full || sub2 != sub {
		t.Errorf("restarts changed the data: full %s; subtree %s", diffSummary(full, full2), diffSummary(sub, sub2))
	}

	// After: new writes everywhere converge too.
	after, _ := sensors(edge.id, 30, 5, 9000)
	after = append(after, setpoints(edgeSensors[:50], 5000)...)
	edge.importRecords(after)
	cloudAfter := setpoints(edgeSensors[200:260], 6000)
	cloud.importRecords(cloudAfter)
	peerAfter := setpoints(edgeSensors[260:320], 7000)
	peerAfter = append(peerAfter, setpoints(edgeSensors[100:110], 7500)...) // overwrites peerBefore's
	peer.importRecords(peerAfter)
	full, sub = converge("after new writes")
	for _, r := range [][]e2eRec{before, after, cloudAfter, peerAfter} {
		requireAll(t, "after new writes: cloud and peer", full, r)
		requireAll(t, "after new writes: edge", sub, r)
	}
}

// TestE2EClusterMemberKilled runs the scale-out topology as an operator
// would: three clouds whose embedded servers form a NATS cluster
// (--cluster, --route, --cluster-secret) and whose replicas are peered,
// and edges that dial the list of all three. The cloud that serves the
// most edges is SIGKILLed: its edges move to the others, everything the
// edges wrote before and after is on both clouds that are up, and the
// killed one catches up when it comes back. A status request reaches the
// member it was sent to, not any member of the cluster.
func TestE2EClusterMemberKilled(t *testing.T) {
	e2eBinary(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "cluster.secret")
	routeA := "127.0.0.1:" + strconv.Itoa(freePort(t))
	a := newProc(t, "cloudA", "--cluster", routeA, "--cluster-secret", secret)
	a.start()
	if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the first member did not write its secret with mode 0600: %v %v", fi, err)
	}
	peerCreds := filepath.Join(dir, "peer.creds")
	mustSiot(t, "", "peer", "add", "--server", a.url, "--out", peerCreds)
	clusterFlags := func() []string {
		return []string{"--cluster", "127.0.0.1:" + strconv.Itoa(freePort(t)), "--route", "nats://" + routeA, "--cluster-secret", secret}
	}
	b := newProc(t, "cloudB", append(clusterFlags(), "--peer", a.url, "--peer-creds", peerCreds)...)
	b.start()
	waitLinks(t, b, a.url)
	c := newProc(t, "cloudC", append(clusterFlags(), "--peer", a.url, "--peer", b.url, "--peer-creds", peerCreds)...)
	c.start()
	waitLinks(t, c, a.url, b.url)
	clouds := []*e2eProc{a, b, c}
	byInstance := map[string]*e2eProc{}
	for _, cl := range clouds {
		// Each member answers its own status: the request names it.
		for range 5 {
			if st := cl.mustStatus(); st.Instance == "" || (byInstance[st.Instance] != nil && byInstance[st.Instance] != cl) {
				t.Fatalf("status through %s answered by another member", cl.name)
			} else {
				byInstance[st.Instance] = cl
			}
		}
	}
	if len(byInstance) != 3 {
		t.Fatalf("%d distinct instances answered status through three members", len(byInstance))
	}

	list := a.url + "," + b.url + "," + c.url
	const nEdges = 4
	var edges []*e2eProc
	for i := range nEdges {
		creds := filepath.Join(dir, fmt.Sprintf("edge%d.creds", i))
		mustSiot(t, "", "device", "add", "--server", a.url, "--out", creds)
		e := newProc(t, fmt.Sprintf("edge%d", i), "--upstream", list, "--creds", creds)
		e.start()
		edges = append(edges, e)
	}
	served := func() map[*e2eProc][]*e2eProc {
		out := map[*e2eProc][]*e2eProc{}
		for _, e := range edges {
			st := waitLinks(t, e, list)
			l, _ := e.link(st, list)
			out[byInstance[l.Remote]] = append(out[byInstance[l.Remote]], e)
		}
		return out
	}
	before := served()
	victim := a
	for _, cl := range clouds {
		if len(before[cl]) > len(before[victim]) {
			victim = cl
		}
	}
	var up []*e2eProc
	for _, cl := range clouds {
		if cl != victim {
			up = append(up, cl)
		}
	}
	t.Logf("edges per cloud: A %d, B %d, C %d; killing %s", len(before[a]), len(before[b]), len(before[c]), victim.name)

	var batch1, batch2 [][]e2eRec
	var sensorIDs [][]string
	for _, e := range edges {
		recs, ids := sensors(e.id, 5, 3, 100)
		e.importRecords(recs)
		batch1, sensorIDs = append(batch1, recs), append(sensorIDs, ids)
	}
	for _, e := range edges {
		waitSame(t, e.name+"'s subtree on every cloud", func() string { return e.export("") },
			func() string { return a.export(e.id) }, func() string { return b.export(e.id) }, func() string { return c.export(e.id) })
	}

	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.exited
	for i, e := range edges {
		recs, _ := sensors(e.id, 3, 3, 300)
		e.importRecords(recs)
		batch2 = append(batch2, recs)
		up[0].importRecords(setpoints(sensorIDs[i], 7))
	}
	after := served()
	if len(after[victim]) != 0 || len(after[up[0]])+len(after[up[1]]) != nEdges {
		t.Fatalf("after the kill: %d edges on %s, %d and %d on the others", len(after[victim]), victim.name, len(after[up[0]]), len(after[up[1]]))
	}
	for i, e := range edges {
		exp := waitSame(t, e.name+"'s subtree on the clouds that are up", func() string { return e.export("") },
			func() string { return up[0].export(e.id) }, func() string { return up[1].export(e.id) })
		requireAll(t, e.name, exp, append(append(append([]e2eRec{}, batch1[i]...), batch2[i]...), setpoints(sensorIDs[i], 7)...))
	}

	victim.start()
	waitSame(t, victim.name+" caught up", func() string { return victim.export("") },
		func() string { return up[0].export("") }, func() string { return up[1].export("") })
}

// TestE2EConcurrentMovesEndInOnePlace is issue 18's scenario through the
// CLI: an edge holds a, b and x while its cloud is down and moves x under
// a; then the edge is down and the cloud moves x under b. Once both are
// back and in sync, x is under exactly one of a and b, the same on both:
// the later move (the cloud's) wins, and the edge's a→x is live but
// inactive.
func TestE2EConcurrentMovesEndInOnePlace(t *testing.T) {
	e2eBinary(t)
	cloud := newProc(t, "cloud")
	cloud.start()
	creds := filepath.Join(t.TempDir(), "edge.creds")
	mustSiot(t, "", "device", "add", "--server", cloud.url, "--out", creds)
	edge := newProc(t, "edge", "--upstream", cloud.url, "--creds", creds)
	edge.start()
	add := func(typ string) string {
		return strings.TrimSpace(mustSiot(t, "", "node", "add", "--server", edge.url, "--parent", edge.id, "--type", typ))
	}
	a, b, x := add("site"), add("site"), add("device")
	waitSame(t, "the cloud holds the edge's nodes", func() string { return edge.export("") }, func() string { return cloud.export(edge.id) })

	if code, _ := cloud.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("cloud exit %d", code)
	}
	mustSiot(t, "", "node", "mv", x, a, "--server", edge.url)
	if code, _ := edge.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("edge exit %d", code)
	}
	cloud.start()
	mustSiot(t, "", "node", "mv", x, b, "--server", cloud.url)
	edge.start()
	waitLinks(t, edge, cloud.url)
	waitSame(t, "edge and cloud agree", func() string { return edge.export("") }, func() string { return cloud.export(edge.id) })

	for _, p := range []*e2eProc{edge, cloud} {
		var parents []string
		for _, line := range strings.Split(strings.TrimSpace(mustSiot(t, "", "node", "ls", edge.id, "--json", "--server", p.url)), "\n") {
			var l struct{ Node, Parent string }
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("%s: node ls --json line %q: %v", p.name, line, err)
			}
			if l.Node == x {
				parents = append(parents, l.Parent)
			}
		}
		if len(parents) != 1 || parents[0] != b {
			t.Fatalf("%s: x is under %v, want exactly b (%s); a is %s", p.name, parents, b, a)
		}
	}
}
