package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
)

const rulesHeading = "### Rules: know when a device goes offline"

// timedLine is a line a script printed and when the test read it.
type timedLine struct {
	at   time.Time
	text string
}

// runScriptLines is runScript with the script's standard output read as
// it comes, each line with the time it was read: what a script printed
// is known to have happened before that time.
func runScriptLines(t *testing.T, bash, bin, script string, ports ...string) (lines []timedLine, stderr string, err error) {
	t.Helper()
	cmd, cancel := scriptCmd(t, bash, bin, "", t.TempDir(), script, ports)
	defer cancel()
	// The write end of a pipe as an *os.File: the script's processes
	// write to it directly, and its end is not held up by a server it
	// left running (the read end sees EOF once every one is gone).
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	errF := createFile(t, filepath.Join(t.TempDir(), "stderr"))
	cmd.Stdout, cmd.Stderr = pw, errF
	var mu sync.Mutex
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, timedLine{time.Now(), sc.Text()})
			mu.Unlock()
		}
	}()
	err = cmd.Start()
	pw.Close()
	if err == nil {
		err = cmd.Wait()
		killGroup(t, cmd.Process.Pid)
	}
	select {
	case <-read:
	case <-time.After(10 * time.Second):
		t.Errorf("the script's output still open 10 s after it ended")
	}
	errF.Close()
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lines), readFile(t, errF.Name()), err
}

// hookPost is one POST the test's webhook receiver got.
type hookPost struct {
	at     time.Time
	header http.Header
	body   []byte
}

// hookBody is a webhook's JSON body (notify/webhook.go).
type hookBody struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Rule   struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"rule"`
	Node struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"node"`
	Text     string `json:"text"`
	Time     string `json:"time"`
	Instance string `json:"instance"`
	Values   []struct {
		Node  string   `json:"node"`
		Type  string   `json:"type"`
		Key   string   `json:"key"`
		Value *float64 `json:"value"`
	} `json:"values"`
}

// hookReceiver is the test's stand-in for the README's receiver: it
// records every POST and appends its body, a line, to a file.
type hookReceiver struct {
	mu    sync.Mutex
	posts []hookPost
	file  string
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || r.Method != http.MethodPost || r.URL.Path != "/hook" {
		http.Error(w, "want a POST to /hook", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.posts = append(h.posts, hookPost{time.Now(), r.Header.Clone(), body})
	f, err := os.OpenFile(h.file, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.Write(append(body, '\n'))
		f.Close()
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) got() []hookPost {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.posts)
}

// checkReadmeReceiver runs the README's webhook receiver (python3 -c
// CODE, its port a free one) and checks that it answers a POST with 204
// and prints the body on a line of its own.
func checkReadmeReceiver(t *testing.T, python, code string) {
	t.Helper()
	port := freePort(t)
	code = regexp.MustCompile(`\("127\.0\.0\.1", \d+\)`).ReplaceAllString(code, fmt.Sprintf(`("127.0.0.1", %d)`, port))
	out := filepath.Join(t.TempDir(), "out")
	f := createFile(t, out)
	defer f.Close()
	var errOut syncBuffer
	cmd := exec.Command(python, "-c", code)
	cmd.Stdout, cmd.Stderr = f, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	body := `{"id":"0f1e","status":"firing","text":"pump house is offline"}`
	var resp *http.Response
	var err error
	if !poll(15*time.Second, 50*time.Millisecond, func() bool {
		resp, err = http.Post(fmt.Sprintf("http://127.0.0.1:%d/hook", port), "application/json", strings.NewReader(body))
		return err == nil
	}) {
		t.Fatalf("the README's receiver does not answer: %v\nits stderr:\n%s", err, errOut.String())
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the README's receiver answers a POST with %s, want 204", resp.Status)
	}
	var printed string
	if !poll(5*time.Second, 20*time.Millisecond, func() bool {
		printed = readFile(t, out)
		return printed != ""
	}) || printed != body+"\n" {
		t.Fatalf("the README's receiver printed %q, want the body and a newline; stderr:\n%s", printed, errOut.String())
	}
}

// normalizeOutput replaces what differs from run to run in a README
// block's output (IDs, times, ages, ports) with placeholders.
func normalizeOutput(s string) string {
	for _, r := range []struct{ re, with string }{
		{`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`, "<uuid>"},
		{`"id":"[0-9a-f]{32}"`, `"id":"<id>"`},
		{`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`, "<time>"},
		{`\(\d+s ago\)`, "(<age>)"},
		{`127\.0\.0\.1:\d+`, "127.0.0.1:<port>"},
	} {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.with)
	}
	return s
}

// TestE2EReadmeRules runs the README's "Rules: know when a device goes
// offline" as written (bash -e, free ports, the test's binary), but for
// its webhook receiver: the test's own HTTP server on loopback receives
// the POSTs, and tail copies their bodies to where the block reads them.
// It checks that the edge stopped brings exactly one "firing" POST, no
// sooner than the device's offlineAfter, with the fields and the
// Idempotency-Key the README says; that rule ls shows the rule active
// and its last firing; that the edge back brings exactly one "resolved"
// POST, no sooner than the rule's pacing; that no other comes in the
// seconds after; and that the output the README shows is what the block
// prints, but for IDs and times. The README's receiver itself is checked
// on its own with python3.
func TestE2EReadmeRules(t *testing.T) {
	bin := e2eBinary(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("the recipe's webhook receiver needs python3 (.ci/run installs it)")
	}
	if _, err := exec.LookPath("tail"); err != nil {
		t.Fatal("the test's stand-in for the receiver needs tail")
	}
	const (
		offlineAfter = 5 * time.Second // the block's siot set DEV offlineAfter=5
		pacing       = 5 * time.Second // its rule add --pacing 5s
		// dupWindow is how long the cloud stays up after the resolved
		// notification: a duplicate would come within it.
		dupWindow = 4 * time.Second
	)
	script := readmeScript(t, rulesHeading)
	if !strings.HasPrefix(script, "make build\n") {
		t.Fatalf("the block does not start with make build:\n%s", script)
	}
	for _, want := range []string{" offlineAfter=5 ", " --pacing 5s"} {
		if !strings.Contains(script, want) {
			t.Fatalf("the block lacks %q, which the test's timing checks assume:\n%s", want, script)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)[strings.Index(string(readme), rulesHeading):]
	section = section[:strings.Index(section[len(rulesHeading):], "\n## ")+len(rulesHeading)]
	intro := section[:strings.Index(section, "```sh")]
	ports := []string{"4222", "4223", "9000"}
	for _, m := range regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(script, -1) {
		if !slices.Contains(ports, m[1]) {
			t.Errorf("the block uses port %s, which the test does not replace", m[1])
		}
		if !strings.Contains(intro, m[1]) {
			t.Errorf("the block uses port %s, which the text before it does not say it needs:\n%s", m[1], intro)
		}
	}

	// The receiver: python3 -c '...' >"$H"; the test's stand-in is tail,
	// copying the test server's bodies to "$H".
	recv := regexp.MustCompile(`(?s)python3 -c '([^']*)' >"\$H"`).FindAllStringSubmatchIndex(script, -1)
	if len(recv) != 1 {
		t.Fatalf("the block has %d webhook receivers (python3 -c '...' >\"$H\"), want 1:\n%s", len(recv), script)
	}
	code := script[recv[0][2]:recv[0][3]]
	hookURL := regexp.MustCompile(`http://127\.0\.0\.1:(\d+)/hook`).FindStringSubmatch(script)
	listen := regexp.MustCompile(`\("127\.0\.0\.1", (\d+)\)`).FindStringSubmatch(code)
	if hookURL == nil || listen == nil || hookURL[1] != listen[1] {
		t.Fatalf("the receiver listens on %v, the user's notifyWebhook is %v: want one port", listen, hookURL)
	}
	checkReadmeReceiver(t, python, code)

	hooks := &hookReceiver{file: filepath.Join(t.TempDir(), "hooks")}
	createFile(t, hooks.file).Close()
	srv := httptest.NewServer(hooks)
	defer srv.Close()
	run := script[:recv[0][0]] + "tail -n +1 -F -s 0.1 '" + hooks.file + `' >"$H"` + script[recv[0][1]:]
	run = strings.ReplaceAll(run, hookURL[0], srv.URL+"/hook")
	// The block's last line stops everything: the cloud stays up
	// dupWindow longer first.
	last := strings.LastIndex(strings.TrimRight(run, "\n"), "\nkill ")
	if last < 0 {
		t.Fatalf("the block does not end with a kill:\n%s", script)
	}
	run = run[:last+1] + fmt.Sprintf("sleep %d\n", int(dupWindow/time.Second)) + run[last+1:]

	start := time.Now()
	lines, stderr, err := runScriptLines(t, bash, bin, strings.TrimPrefix(run, "make build\n"), "4222", "4223")
	ended := time.Now()
	var stdout strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&stdout, "%s\n", l.text)
	}
	t.Logf("the block ran in %v", ended.Sub(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("block: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr)
	}
	if testing.Verbose() {
		t.Logf("block output:\n%s\nstderr:\n%s", stdout.String(), stderr)
	}

	// What the block printed: the rule's ID (rule add), then the
	// firing body, rule ls, the resolved body, rule ls's first line.
	uuidRe := `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
	idLine := slices.IndexFunc(lines, func(l timedLine) bool { return regexpMatch(`^`+uuidRe+`$`, l.text) })
	if idLine < 0 {
		t.Fatalf("rule add printed no rule ID:\n%s", stdout.String())
	}
	ruleID := lines[idLine].text
	dev := regexp.MustCompile(`(?m)^set 1 point of (` + uuidRe + `)$`).FindStringSubmatch(stderr)
	if dev == nil {
		t.Fatalf("siot set DEV offlineAfter=5 printed no node:\n%s", stderr)
	}
	device := dev[1]
	lsLine := slices.IndexFunc(lines, func(l timedLine) bool { return strings.HasPrefix(l.text, ruleID+"  ") })
	if lsLine < 0 {
		t.Fatalf("no rule ls line for the rule %s:\n%s", ruleID, stdout.String())
	}
	firedRe := regexp.MustCompile(`^` + ruleID + `  Device offline  active \(1\)  last fired (\S+Z) \(\d+s ago\)$`)
	fired := firedRe.FindStringSubmatch(lines[lsLine].text)
	if fired == nil {
		t.Errorf("rule ls after the firing: %q; want it active on one node with its last firing", lines[lsLine].text)
	}
	lsEnd := lsLine
	for lsEnd+1 < len(lines) && strings.HasPrefix(lines[lsEnd+1].text, "  ") {
		lsEnd++
	}

	posts := hooks.got()
	if len(posts) != 2 {
		var b strings.Builder
		for _, p := range posts {
			fmt.Fprintf(&b, "%v  %s\n", p.at.Sub(start).Round(time.Millisecond), p.body)
		}
		t.Fatalf("%d POSTs, want 2 (firing, then resolved):\n%s", len(posts), b.String())
	}
	var bodies [2]hookBody
	for i, want := range []struct {
		status, text string
		online       float64
	}{{"firing", "pump house is offline", 0}, {"resolved", "pump house is back", 1}} {
		p := posts[i]
		b := &bodies[i]
		dec := json.NewDecoder(bytes.NewReader(p.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(b); err != nil {
			t.Fatalf("POST %d: %v: %s", i+1, err, p.body)
		}
		if b.Status != want.status || b.Text != want.text || b.Rule.ID != ruleID || b.Rule.Name != "Device offline" ||
			b.Node.ID != device || b.Node.Name != "pump house" || !regexpMatch(`^[0-9a-f]{32}$`, b.ID) || !regexpMatch(`^`+uuidRe+`$`, b.Instance) {
			t.Errorf("POST %d: %s\nwant status %q, text %q, rule %s \"Device offline\", node %s \"pump house\"", i+1, p.body, want.status, want.text, ruleID, device)
		}
		if len(b.Values) != 1 || b.Values[0].Node != device || b.Values[0].Type != "online" || b.Values[0].Key != "0" ||
			b.Values[0].Value == nil || *b.Values[0].Value != want.online {
			t.Errorf("POST %d: values %s; want the device's online = %v", i+1, p.body, want.online)
		}
		if k := p.header.Get("Idempotency-Key"); k != b.ID {
			t.Errorf("POST %d: Idempotency-Key %q, want the body's id %q", i+1, k, b.ID)
		}
		if ct := p.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("POST %d: Content-Type %q", i+1, ct)
		}
	}
	if bodies[0].ID == bodies[1].ID {
		t.Errorf("the firing and the resolved notification share the id %s", bodies[0].ID)
	}
	// Timing. The edge was stopped after rule add printed the rule's
	// ID, and the device is offline offlineAfter after its link ended:
	// the firing came no sooner (a second's slack for reading the line).
	// The rule changes again no sooner than pacing after, by the
	// cloud's clock; and the edge came back after rule ls printed.
	if d := posts[0].at.Sub(lines[idLine].at); d < offlineAfter-time.Second || d > offlineAfter+20*time.Second {
		t.Errorf("the firing POST came %v after the edge was stopped; want offlineAfter (%v) and a little", d, offlineAfter)
	}
	t0, err0 := time.Parse(time.RFC3339Nano, bodies[0].Time)
	t1, err1 := time.Parse(time.RFC3339Nano, bodies[1].Time)
	if err0 != nil || err1 != nil || t1.Sub(t0) < pacing-100*time.Millisecond {
		t.Errorf("the rule fired at %s and cleared at %s (%v, %v); want at least its pacing, %v, between", bodies[0].Time, bodies[1].Time, err0, err1, pacing)
	}
	if fired != nil && fired[1] != t0.UTC().Truncate(time.Second).Format(time.RFC3339) {
		t.Errorf("rule ls says last fired %s, the notification's time is %s", fired[1], bodies[0].Time)
	}
	if !posts[1].at.After(lines[lsEnd].at) {
		t.Errorf("the resolved POST came before the edge was started again")
	}
	if d := ended.Sub(posts[1].at); d < dupWindow-500*time.Millisecond {
		t.Errorf("the block ended %v after the resolved POST; want the cloud up %v longer, to see no duplicate", d, dupWindow)
	}
	inactive := regexp.MustCompile(`^` + ruleID + `  Device offline  inactive  last fired (\S+Z) \(\d+s ago\)$`)
	if m := inactive.FindStringSubmatch(lines[len(lines)-1].text); m == nil || fired != nil && m[1] != fired[1] {
		t.Errorf("the block's last line: %q; want the rule inactive, last fired at %v", lines[len(lines)-1].text, fired)
	}

	// The output the README shows is what the block prints: standard
	// output, and the two lines of siot set on standard error, each
	// after the line before it.
	shown := section[strings.Index(section, "It prints (with other IDs and times):"):]
	shown = shown[strings.Index(shown, "```text\n")+len("```text\n"):]
	shown = shown[:strings.Index(shown, "```")]
	var shownOut, shownErr strings.Builder
	for l := range strings.Lines(shown) {
		if strings.HasPrefix(l, "set 1 point of ") {
			shownErr.WriteString(l)
		} else {
			shownOut.WriteString(l)
		}
	}
	if got, want := normalizeOutput(stdout.String()), normalizeOutput(shownOut.String()); got != want {
		t.Errorf("the block printed, but for IDs and times:\n%s\nthe README shows:\n%s", got, want)
	}
	// The servers' log lines (--log-level warn: none when all goes
	// well) are not the commands' output.
	var cmdErr strings.Builder
	for l := range strings.Lines(stderr) {
		if strings.HasPrefix(l, `{"time":`) {
			t.Logf("a server logged: %s", strings.TrimSpace(l))
			continue
		}
		cmdErr.WriteString(l)
	}
	if got, want := normalizeOutput(cmdErr.String()), normalizeOutput(shownErr.String()); got != want {
		t.Errorf("the block's standard error, but for IDs:\n%s\nthe README shows:\n%s", got, want)
	}
	// The README's bodies have the fields the real ones have.
	var shownBodies []map[string]any
	for l := range strings.Lines(shown) {
		if strings.HasPrefix(l, "{") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("the README's body %q: %v", l, err)
			}
			shownBodies = append(shownBodies, m)
		}
	}
	for i, p := range posts {
		var m map[string]any
		if err := json.Unmarshal(p.body, &m); err != nil {
			t.Fatal(err)
		}
		if i >= len(shownBodies) || jsonShape(m) != jsonShape(shownBodies[i]) {
			t.Errorf("POST %d's fields: %s; the README shows %d bodies", i+1, jsonShape(m), len(shownBodies))
		}
	}
}

// jsonShape is a decoded JSON value's structure: object keys, sorted,
// and the kinds of values.
func jsonShape(v any) string {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteString("{")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(k + ":" + jsonShape(v[k]))
		}
		return b.String() + "}"
	case []any:
		var parts []string
		for _, e := range v {
			parts = append(parts, jsonShape(e))
		}
		return "[" + strings.Join(parts, ",") + "]"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	}
	return "null"
}

// onlineOf returns device dev's online point as cl reads it: its value,
// and whether it exists and is not deleted.
func onlineOf(cl *client.Client, dev uuid.UUID) (float64, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pts, err := cl.Get(ctx, dev)
	if err != nil {
		return 0, false, err
	}
	for _, p := range pts {
		if p.Type == "online" && p.Key == "0" {
			return p.Value, !p.Tombstone, nil
		}
	}
	return 0, false, nil
}

// TestE2EDeviceKilledGoesOffline: an edge killed (SIGKILL: no goodbye on
// its link) goes offline on its cloud too, offlineAfter after the cloud
// saw its connection close, and not hours later. The cloud's NATS server
// used to keep the closed connection of the newest client as open (it
// told a new connection from a closed one by its ID), so the edge's link
// never ended while no newer connection was open: the test reads the
// cloud on a connection older than the edge's, and opens none after it.
func TestE2EDeviceKilledGoesOffline(t *testing.T) {
	e2eBinary(t)
	cloud := newProc(t, "cloud")
	cloud.start()
	creds := filepath.Join(t.TempDir(), "edge.creds")
	dev := uuid.MustParse(strings.TrimSpace(mustSiot(t, "", "device", "add", "--server", cloud.url, "--desc", "crashing pump", "--out", creds)))
	mustSiot(t, "", "set", dev.String(), "offlineAfter=1", "--server", cloud.url)
	cl := dialAdmin(t, cloud)
	edge := newProc(t, "edge", "--upstream", cloud.url, "--creds", creds)
	edge.start()
	waitLinks(t, edge, cloud.url)
	waitFor(t, "the device online on the cloud", 20*time.Second, func() (bool, string) {
		v, ok, err := onlineOf(cl, dev)
		return err == nil && ok && v == 1, fmt.Sprintf("online %v (%v, %v)", v, ok, err)
	})
	if err := edge.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-edge.exited
	killed := time.Now()
	// The cloud checks its connections every 2 s; the device is offline
	// a second after it saw the edge's close.
	waitFor(t, "the killed device offline on the cloud", 20*time.Second, func() (bool, string) {
		v, ok, err := onlineOf(cl, dev)
		return err == nil && ok && v == 0, fmt.Sprintf("online %v (%v, %v)", v, ok, err)
	})
	t.Logf("the killed device went offline on the cloud %v after the kill", time.Since(killed).Round(time.Millisecond))
}
