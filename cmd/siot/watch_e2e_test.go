package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// watchProc is a `siot watch --json` child process.
type watchProc struct {
	cmd         *exec.Cmd
	out, errOut e2eBuffer
	exited      chan struct{}
}

// startWatch runs `siot watch --json --after after` against p; the child
// is killed and waited for when the test ends.
func startWatch(t *testing.T, p *e2eProc, after uint64) *watchProc {
	t.Helper()
	w := &watchProc{exited: make(chan struct{})}
	w.cmd = exec.Command(e2eBinary(t), "watch", "--json", "--after", strconv.FormatUint(after, 10), "--server", p.url, "--timeout", "5s")
	w.cmd.Env = append(childEnv(), "SIOT_CREDS="+credsFor(p.url))
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.errOut
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = w.cmd.Wait()
		close(w.exited)
	}()
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.exited
		if t.Failed() {
			t.Logf("watch stdout:\n%s\nwatch stderr:\n%s", tail(w.out.String(), 4000), w.errOut.String())
		}
	})
	return w
}

// seen counts the watch's lines by register (type.key of node), and
// checks that change numbers only grow.
func (w *watchProc) seen(t *testing.T) map[string]int {
	t.Helper()
	n := map[string]int{}
	var last uint64
	for _, line := range strings.Split(strings.TrimSpace(w.out.String()), "\n") {
		if line == "" {
			continue
		}
		var l struct {
			Node, Type, Key string
			Seq             uint64
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("watch line %q: %v", line, err)
		}
		if l.Seq <= last {
			t.Errorf("change #%d printed after #%d", l.Seq, last)
		}
		last = l.Seq
		n[l.Node+"/"+l.Type+"."+l.Key]++
	}
	return n
}

// keyed returns n records of type typ on node, keys 0..n-1.
func keyed(node, typ string, n int) []e2eRec {
	recs := make([]e2eRec, n)
	for i := range recs {
		recs[i] = e2eRec{node: node, typ: typ, key: strconv.Itoa(i), value: float64(i)}
	}
	return recs
}

// A watch survives its server's restart: it reconnects and resumes after
// the last change it printed, so the changes made before, while the
// server was down (written at an edge that delivers them when the server
// is back) and after are each printed exactly once. A server on that
// address with other data cannot continue the feed: the watch says so and
// exits 1.
func TestE2EWatchResumesAcrossRestart(t *testing.T) {
	e2eBinary(t)
	cloud := newProc(t, "cloud")
	cloud.start()
	edge := newProc(t, "edge", "--upstream", cloud.url)
	edge.start()
	waitLinks(t, edge, cloud.url)
	w := startWatch(t, cloud, cloud.mustStatus().LastSeq)

	before, down, after := keyed(cloud.id, "before", 20), keyed(edge.id, "down", 20), keyed(cloud.id, "after", 20)
	want := map[string]bool{}
	for _, r := range append(append(append([]e2eRec{}, before...), down...), after...) {
		want[r.node+"/"+r.typ+"."+r.key] = true
	}
	waitSeen := func(what string, recs []e2eRec) {
		t.Helper()
		waitFor(t, what, 30*time.Second, func() (bool, string) {
			n := w.seen(t)
			for _, r := range recs {
				if n[r.node+"/"+r.typ+"."+r.key] == 0 {
					return false, fmt.Sprintf("%d registers seen; stderr %q", len(n), w.errOut.String())
				}
			}
			return true, ""
		})
	}
	cloud.importRecords(before)
	waitSeen("the changes before the restart", before)

	if code, _ := cloud.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("cloud exit %d", code)
	}
	edge.importRecords(down) // the cloud gets them when it is back
	cloud.start()
	waitLinks(t, edge, cloud.url)
	cloud.importRecords(after)
	waitSeen("the changes while down and after", append(down, after...))
	// A last change: the feed is in order, so once it is printed every
	// earlier one has been, and any duplicate too.
	sentinel := []e2eRec{{node: cloud.id, typ: "sentinel", key: "0", value: 1}}
	cloud.importRecords(sentinel)
	waitSeen("the last change", sentinel)
	for reg, k := range w.seen(t) {
		if k != 1 {
			t.Errorf("%s printed %d times", reg, k)
		}
		delete(want, reg)
	}
	if len(want) != 0 {
		t.Errorf("%d changes never printed", len(want))
	}
	if !strings.Contains(w.errOut.String(), "reconnected to "+cloud.url) {
		t.Errorf("watch did not say it reconnected: %q", w.errOut.String())
	}

	// Another data directory on the same address, with the same
	// administrator: its changes are not the ones watched.
	if code, _ := cloud.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("cloud exit %d", code)
	}
	other := newProc(t, "other")
	b, err := os.ReadFile(filepath.Join(cloud.data, "admin.creds"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other.data, "admin.creds"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	other.port = cloud.port
	other.start()
	select {
	case <-w.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("watch still running against another server")
	}
	if code := w.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(w.errOut.String(), "siot: watch: cannot resume") {
		t.Fatalf("watch against another server: exit %d, stderr %q", code, w.errOut.String())
	}
}

// A watch asked to resume after a change the server does not have yet
// (another server's number, or a restored backup) says so and fails,
// rather than wait silently past a gap.
func TestWatchAfterBeyondTheFeedFails(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	_, _, err := cli(t, "", "watch", "--after", "1000000", "--server", srv.nats)
	var ue *UsageError
	if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "watch: cannot resume") {
		t.Fatalf("watch --after beyond the feed: %v", err)
	}
}
