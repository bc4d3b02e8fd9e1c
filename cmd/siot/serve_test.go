package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/transport"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instance is a `siot serve` running in-process for a test.
type instance struct {
	id       string
	nats     string
	http     string
	log      *syncBuffer
	stop     func() error
	dataDir  string
	listenOn string
}

// serve runs `siot serve args...` until the test ends, and waits for its
// "siot serving" log line to learn its addresses.
func serve(t testing.TB, args ...string) *instance {
	t.Helper()
	return runServe(t, nil, nil, withLinkCreds(t, args)...)
}

// runServe runs `siot serve args...` in-process, logging JSON, with env
// as its environment (GOMEMLIMIT set: serve leaves the test process's
// memory limit alone) and hup as its SIGHUP channel (may be nil). It
// returns once the server announces that it is serving.
func runServe(t testing.TB, env map[string]string, hup <-chan os.Signal, args ...string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := &syncBuffer{}
	getenv := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "max"
		}
		return env[k]
	}
	m := &Main{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: log, Getenv: getenv, Hangup: hup}
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, append([]string{"serve", "--log-format", "json"}, args...))
	}()
	inst := &instance{log: log}
	var once sync.Once
	var stopErr error
	inst.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(20 * time.Second):
				stopErr = errors.New("serve did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := inst.stop(); err != nil {
			t.Errorf("serve: %v\n%s", err, log.String())
		}
	})
	started := poll(20*time.Second, 10*time.Millisecond, func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve exited: %v\n%s", err, log.String())
		default:
		}
		var ok bool
		inst.id, inst.nats, inst.http, ok = servingLine(log.String())
		return ok
	})
	if !started {
		t.Fatalf("serve did not start:\n%s", log.String())
	}
	if inst.dataDir = argValue(args, "--data"); inst.dataDir != "" {
		registerCreds(inst.nats, inst.dataDir)
	}
	return inst
}

// servingLine finds the "siot serving" line in a JSON log and returns the
// addresses it announces.
func servingLine(log string) (id, natsURL, httpAddr string, ok bool) {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var rec struct{ Msg, ID, NATS, HTTP string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "siot serving" {
			return rec.ID, rec.NATS, rec.HTTP, true
		}
	}
	return "", "", "", false
}

// poll calls step every interval until it reports done, for at most
// timeout; it reports whether step finished.
func poll(timeout, interval time.Duration, step func() bool) bool {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !step() {
		select {
		case <-deadline:
			return step()
		case <-tick.C:
		}
	}
	return true
}

// cli runs a client command with input and returns its output.
func cli(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut, Getenv: testGetenv(args)}
	err := m.Run(context.Background(), args)
	return out.String(), errOut.String(), err
}

func mustCLI(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := cli(t, stdin, args...)
	if err != nil {
		t.Fatalf("siot %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

type statusJSON struct {
	ID    string `json:"id"`
	Links []struct {
		URL       string `json:"url"`
		Connected bool   `json:"connected"`
		InSync    bool   `json:"inSync"`
		LastError string `json:"lastError"`
	} `json:"links"`
}

func status(t *testing.T, server string) statusJSON {
	t.Helper()
	var st statusJSON
	out := mustCLI(t, "", "status", "--json", "--server", server)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v: %q", err, out)
	}
	return st
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll(20*time.Second, 20*time.Millisecond, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestServeEdgeCloudImportExportStatus(t *testing.T) {
	cloud := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	edge := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--upstream", cloud.nats)
	waitUntil(t, "edge in sync", func() bool {
		st := status(t, edge.nats)
		return len(st.Links) == 1 && st.Links[0].URL == cloud.nats && st.Links[0].Connected && st.Links[0].InSync
	})
	if st := status(t, edge.nats); st.ID != edge.id {
		t.Fatalf("status id %q, want %q", st.ID, edge.id)
	}
	s := uuid.NewString()
	in := fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}
{"node":%q,"type":"nodeType","text":"sensor"}

{"node":%q,"type":"temp","value":20}
{"node":%q,"type":"temp","value":21.5}
`, s, edge.id, s, s, s)
	_, errOut, err := cli(t, in, "import", "--server", edge.nats)
	if err != nil || !strings.Contains(errOut, "imported 4 records") {
		t.Fatalf("import: %v %q", err, errOut)
	}
	// The later line won, and the cloud holds the same subtree.
	var exp string
	waitUntil(t, "cloud has the edge's subtree", func() bool {
		exp = mustCLI(t, "", "export", "--server", cloud.nats, "--root", edge.id)
		return exp == mustCLI(t, "", "export", "--server", edge.nats)
	})
	// Besides the sensor, the edge's root holds the device state the
	// cloud keeps for it.
	var lines int
	for _, l := range strings.Split(strings.TrimSpace(exp), "\n") {
		if !strings.Contains(l, `"type":"online"`) && !strings.Contains(l, `"type":"lastSeen"`) && !strings.Contains(l, `"type":"linkedVia"`) {
			lines++
		}
	}
	if !strings.Contains(exp, `"type":"temp","key":"0","value":21.5`) || lines != 3 || !strings.Contains(exp, `"type":"online","key":"0","value":1`) {
		t.Fatalf("export:\n%s", exp)
	}
	// Health over HTTP.
	resp, err := http.Get("http://" + edge.http + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", err, resp)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + edge.http + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", err, resp)
	}
	resp.Body.Close()
	if err := edge.stop(); err != nil {
		t.Fatalf("edge stop: %v", err)
	}
	if err := cloud.stop(); err != nil {
		t.Fatalf("cloud stop: %v", err)
	}
}

func TestImportRefusesBadRecordsAndWritesNothing(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	good := fmt.Sprintf(`{"node":%q,"type":"temp","value":1}`, srv.id)
	cases := []struct{ line, want string }{
		{`{"node":"not-a-uuid","type":"temp"}`, "invalid ID"},
		{`{"node":"00000000-0000-0000-0000-000000000000","type":"temp"}`, "node"},
		{fmt.Sprintf(`{"node":%q,"type":"bad type"}`, uuid.NewString()), "type"},
		{fmt.Sprintf(`{"node":%q,"type":"temp","valeu":1}`, uuid.NewString()), "unknown field"},
		{fmt.Sprintf(`{"node":%q,"type":"temp","hlc":"12x"}`, uuid.NewString()), "hlc"},
		{fmt.Sprintf(`{"node":%q,"type":"temp","text":"%s"}`, uuid.NewString(), strings.Repeat("x", 70000)), "text"},
		{`not json`, "not a point record"},
		{fmt.Sprintf(`{"node":%q,"type":"temp","value":1e999}`, uuid.NewString()), "value"},
	}
	for _, c := range cases {
		_, _, err := cli(t, "", "import", "--server", srv.nats, inputFile(t, good+"\n"+good+"\n"+c.line+"\n"))
		if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.60s: err = %v, want line 3 and %q", c.line, err, c.want)
		}
	}
	// A record far in the future is refused by the server's clock check.
	future := fmt.Sprintf(`{"node":%q,"type":"temp","hlc":"%d","origin":%q}`, srv.id, uint64(time.Now().Add(time.Hour).UnixMilli())<<16, uuid.NewString())
	if _, _, err := cli(t, "", "import", "--server", srv.nats, inputFile(t, future+"\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("far-future hlc: %v", err)
	}
	if out := mustCLI(t, "", "export", "--server", srv.nats); out != "" {
		t.Fatalf("refused imports wrote:\n%s", out)
	}
	f := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(f, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "", "import", "--server", srv.nats, f)
	if out := mustCLI(t, "", "export", "--server", srv.nats); strings.Count(out, "\n") != 1 {
		t.Fatalf("file import: %q", out)
	}
}

func TestExportImportRoundTripIsByteIdentical(t *testing.T) {
	a := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	var in strings.Builder
	root := a.id
	var prev = root
	for i := range 3000 {
		n := uuid.NewString()
		fmt.Fprintf(&in, "{\"node\":%q,\"parent\":%q,\"type\":\"edge\"}\n", n, prev)
		fmt.Fprintf(&in, "{\"node\":%q,\"type\":\"temp\",\"value\":%d.25,\"text\":\"<&> \\u00e9 %d\"}\n", n, i, i)
		fmt.Fprintf(&in, "{\"node\":%q,\"type\":\"gone\",\"tombstone\":true}\n", n)
		if i%300 == 0 { // a tree ten levels deep
			prev = n
		}
	}
	mustCLI(t, in.String(), "import", "--server", a.nats)
	exp1 := mustCLI(t, "", "export", "--server", a.nats)
	if strings.Count(exp1, "\n") != 9000 {
		t.Fatalf("export has %d lines", strings.Count(exp1, "\n"))
	}
	// Restore into an empty instance with the same root.
	b := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--id", root)
	mustCLI(t, exp1, "import", "--server", b.nats)
	exp2 := mustCLI(t, "", "export", "--server", b.nats)
	if exp1 != exp2 {
		t.Fatalf("round trip differs: %d vs %d bytes", len(exp1), len(exp2))
	}
	// A subtree export holds the subtree only.
	sub := mustCLI(t, "", "export", "--server", b.nats, "--root", prev)
	if n := strings.Count(sub, "\n"); n == 0 || n >= 9000 {
		t.Fatalf("subtree export has %d lines", n)
	}
}

func TestPeerWithEmptyDataTakesRoot(t *testing.T) {
	a := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	b := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--peer", a.nats)
	if b.id != a.id {
		t.Fatalf("peer root %s, want %s", b.id, a.id)
	}
	waitUntil(t, "peers in sync", func() bool {
		st := status(t, b.nats)
		return len(st.Links) == 1 && st.Links[0].InSync
	})
	// A peer with another root is refused with a clear error.
	c := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--id", uuid.NewString(), "--peer", a.nats)
	waitUntil(t, "root mismatch reported", func() bool {
		st := status(t, c.nats)
		return len(st.Links) == 1 && strings.Contains(st.Links[0].LastError, "different roots")
	})
}

func TestServeUsageErrors(t *testing.T) {
	var ue *UsageError
	for _, args := range [][]string{
		{"serve", "--id", "nope"},
		{"serve", "--upstream", "http://x"},
		{"serve", "--profile", "tiny"},
		{"serve", "--log-level", "loud"},
		{"serve", "extra"},
		{"export", "--root", "x"},
		{"status", "extra"},
		{"import", "a", "b"},
	} {
		if _, _, err := cli(t, "", args...); !errors.As(err, &ue) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
	creds := filepath.Join(t.TempDir(), "admin.creds")
	c, err := transport.NewKeyCreds(transport.KindAdmin, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteCreds(creds, c, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli(t, "", "status", "--server", "nats://127.0.0.1:1", "--timeout", "2s", "--creds", creds); err == nil || !strings.Contains(err.Error(), "siot serve") {
		t.Errorf("status with no server: %v", err)
	}
	if _, _, err := cli(t, "", "status", "--server", "nats://127.0.0.1:1", "--timeout", "2s"); err == nil || !strings.Contains(err.Error(), "no credentials") {
		t.Errorf("status without credentials: %v", err)
	}
}

// TestServeClusterFlagsRefused: the cluster flags' unhappy paths, each
// refused before anything listens, and a secret never shown.
func TestServeClusterFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.secret")
	if err := os.WriteFile(short, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.secret")
	var ue *UsageError
	for _, tc := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"--cluster", "127.0.0.1:0"}, true, "needs --cluster-secret"},
		{[]string{"--route", "nats://127.0.0.1:6222"}, true, "need --cluster"},
		{[]string{"--cluster-secret", short}, true, "need --cluster"},
		{[]string{"--cluster", "10.255.255.1:6222", "--cluster-secret", short}, true, "not a loopback address"},
		{[]string{"--cluster", "127.0.0.1:0", "--cluster-secret", short}, false, "at least 32"},
		{[]string{"--cluster", "127.0.0.1:0", "--cluster-secret", missing, "--route", "nats://127.0.0.1:6222"}, false, "copy it from a member"},
		{[]string{"--upstream", "nats://127.0.0.1:1,", "--creds", short}, true, "a list of them"},
		{[]string{"--upstream", "nats://127.0.0.1:1,nats://u:p@127.0.0.1:2", "--creds", short}, true, "never in the URL"},
	} {
		args := append([]string{"serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", ""}, tc.args...)
		_, _, err := cli(t, "", args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &ue) != tc.usage {
			t.Errorf("%v: %v, want a usage error %v saying %q", tc.args, err, tc.usage, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), ":p@") {
			t.Errorf("%v: the error shows a password: %v", tc.args, err)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a member with --route wrote a secret of its own: %v", err)
	}
}
