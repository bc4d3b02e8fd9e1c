package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
	"github.com/siot-io/siot/transport/faultproxy"
)

// e2eSeed returns the seed of a randomized end-to-end test, SIOT_E2E_SEED
// when set, and logs how to rerun with it.
func e2eSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SIOT_E2E_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (rerun with SIOT_E2E_SEED=%d)", seed, seed)
	return seed
}

// histReading is one reading written on the edge with its own time.
type histReading struct {
	hlc   crdt.Timestamp
	value float64
}

// offlineReadings returns perReg readings of each of n registers (n at
// most 10) from start, one every 1.08 s per register with up to 8 ms of
// jitter, register r's 100·r ms after register 0's so that no two share
// a time; their values are random walks in hundredths (21.37, 21.41,
// ...): a sensor's decimals.
func offlineReadings(rng *rand.Rand, n, perReg int, start time.Time) [][]histReading {
	out := make([][]histReading, n)
	for r := range out {
		k := 1500 + rng.IntN(1500) // hundredths
		out[r] = make([]histReading, perReg)
		for i := range out[r] {
			k += rng.IntN(7) - 3
			at := start.UnixMilli() + int64(i)*1080 + int64(r)*100 + int64(rng.IntN(9))
			out[r][i] = histReading{hlc: crdt.NewTimestamp(at, 0), value: float64(k) / 100}
		}
	}
	return out
}

// histCounts returns the number of samples of each node's point typ.0 on
// the server of cl from since on, read from the stored summaries.
func histCounts(ctx context.Context, cl *client.Client, nodes []uuid.UUID, typ string, since time.Time) ([]int, error) {
	counts := make([]int, len(nodes))
	for i, n := range nodes {
		for m, err := range cl.HistorySummaries(ctx, n, typ, "0", client.HistoryOptions{From: since, Step: 24 * time.Hour}) {
			if err != nil {
				return nil, err
			}
			counts[i] += m.Count
		}
	}
	return counts, nil
}

func sumInts(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

// historiesJSON runs siot history NODE temp --json against each server
// for each node (servers[i], nodes[i]), four at a time, and returns
// their outputs and errors.
func historiesJSON(servers []string, nodes []uuid.UUID) ([]string, []error) {
	outs, errs := make([]string, len(nodes)), make([]error, len(nodes))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			outs[i], _, errs[i] = siot("", "history", nodes[i].String(), "temp", "--json", "--server", servers[i])
		})
	}
	wg.Wait()
	return outs, errs
}

// dialAdmin connects the test to p as its administrator.
func dialAdmin(t *testing.T, p *e2eProc) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, p.url, client.WithCredsFile(credsFor(p.url)), client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("%s: dial: %v", p.name, err)
	}
	t.Cleanup(cl.Close) // closing twice is harmless
	return cl
}

// TestE2EHistoryEdgeKilledMidUpload is issue 16's offline day with a
// SIGKILL of the edge mid-upload, on real processes: an edge provisioned
// on a cloud, linked through a proxy, takes 100,000 readings of ten
// sensors with the link cut, each stamped with its own time in the three
// hours (windows) before the current one; the link returns throttled,
// and once the cloud holds one or two windows of readings, the next
// window's push under way, the edge is killed (SIGKILL) and started
// again on its data. The restarted edge sends the windows the cloud
// lacks, not those it holds; the cloud's history of every sensor then
// equals the edge's, sample for sample (time, HLC, origin, value), the
// edge's equals what was written, and both stores verify.
func TestE2EHistoryEdgeKilledMidUpload(t *testing.T) {
	e2eBinary(t)
	rng := rand.New(rand.NewPCG(e2eSeed(t), 0x4157))
	const (
		nSensors = 10
		perReg   = 10_000
		total    = nSensors * perReg
		// The throttled upload's rate, each way: a history round
		// carries about 2 bytes a reading, so each window's push (65
		// KB) takes about 4 s. The kill comes while the second or the
		// third is under way; the rest goes unthrottled.
		throttle = 16 << 10
	)

	cloud := newProc(t, "cloud")
	cloud.start()
	proxy, err := faultproxy.Start(faultproxy.Config{Target: strings.TrimPrefix(cloud.url, "nats://"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	creds := filepath.Join(t.TempDir(), "edge.creds")
	mustSiot(t, "", "device", "add", "--server", cloud.url, "--desc", "pump house", "--out", creds)
	edge := newProc(t, "edge", "--upstream", proxy.URL(), "--creds", creds)
	edge.start()
	st := waitLinks(t, edge, proxy.URL())
	origin := st.Instance

	var recs []e2eRec
	nodes := make([]uuid.UUID, nSensors)
	for i := range nodes {
		nodes[i] = uuid.MustParse(uuidFrom(rng))
		id := nodes[i].String()
		recs = append(recs,
			e2eRec{node: id, parent: edge.id, typ: "edge", key: "0"},
			e2eRec{node: id, typ: "nodeType", key: "0", text: "sensor"},
			e2eRec{node: id, typ: "description", key: "0", text: fmt.Sprintf("well %d", i)})
	}
	edge.importRecords(recs)
	waitSame(t, "the cloud holds the edge's sensors",
		func() string { return edge.export("") }, func() string { return cloud.export(edge.id) })

	// Cut off, the edge takes three hours of readings.
	proxy.Cut()
	waitFor(t, "the edge to see its link down", 20*time.Second, func() (bool, string) {
		st, err := edge.status()
		if err != nil {
			return false, err.Error()
		}
		l, ok := edge.link(st, proxy.URL())
		return ok && !l.Connected, fmt.Sprintf("%+v", st.Links)
	})
	// The three hours before the current one: three whole windows of
	// history, so the upload is three pushes of a third each.
	now := time.Now()
	start := time.UnixMilli((now.UnixMilli()/history.WindowMs - 3) * history.WindowMs)
	readings := offlineReadings(rng, nSensors, perReg, start)
	if last := readings[nSensors-1][perReg-1].hlc; history.WindowOf(last) != history.WindowOf(crdt.NewTimestamp(start.UnixMilli(), 0))+2 {
		t.Fatalf("the last reading, at %v, is not in the third window from %v", last.Time(), start)
	}
	// landed[k]: the readings in the first k+1 windows.
	var landed [3]int
	for _, rs := range readings {
		for _, rd := range rs {
			for k := history.WindowOf(rd.hlc) - history.WindowOf(crdt.NewTimestamp(start.UnixMilli(), 0)); k < 3; k++ {
				landed[k]++
			}
		}
	}
	// One file, in time order across the sensors, as a logger would
	// write it: every write appends to its register's history.
	var data []byte
	for i := range perReg {
		for r := range nSensors {
			rd := readings[r][i]
			data = fmt.Appendf(data, `{"node":"%s","type":"temp","key":"0","value":%s,"hlc":"%d"}`+"\n",
				nodes[r], strconv.FormatFloat(rd.value, 'f', -1, 64), uint64(rd.hlc))
		}
	}
	file := filepath.Join(t.TempDir(), "readings.jsonl")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	mustSiot(t, "", "import", "--server", edge.url, "--quiet", file)
	t.Logf("imported %d readings into the cut-off edge in %v", total, time.Since(t0).Round(time.Millisecond))

	ctx := context.Background()
	since := start.Add(-time.Hour)
	cloudCl, edgeCl := dialAdmin(t, cloud), dialAdmin(t, edge)
	counts, err := histCounts(ctx, edgeCl, nodes, "temp", since)
	edgeCl.Close() // the edge is killed later
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range counts {
		if c != perReg {
			t.Fatalf("sensor %d: the edge's history holds %d readings, want the %d written", i, c, perReg)
		}
	}
	if counts, err = histCounts(ctx, cloudCl, nodes, "temp", since); err != nil || sumInts(counts) != 0 {
		t.Fatalf("the cut-off cloud holds %v readings (%v), want none", counts, err)
	}

	// The link returns, throttled; once the cloud holds the first one
	// or two windows (the seed says), but not all, the edge is killed.
	pushes := 1 + rng.IntN(2)
	proxy.SetRate(throttle)
	proxy.Restore()
	t0 = time.Now()
	var atKill int
	waitFor(t, fmt.Sprintf("the cloud to hold the first %d of 3 windows (%d readings) but not all %d (throttled upload under way)", pushes, landed[pushes-1], total),
		60*time.Second, func() (bool, string) {
			counts, err := histCounts(ctx, cloudCl, nodes, "temp", since)
			if err != nil {
				return false, err.Error()
			}
			atKill = sumInts(counts)
			if atKill == total {
				t.Fatalf("the whole upload (%d readings) landed in %v before the test could kill the edge: lower the throttle (%d B/s)",
					total, time.Since(t0), throttle)
			}
			return atKill >= landed[pushes-1], fmt.Sprintf("%d readings on the cloud (%v); proxy %+v", atKill, counts, proxy.Stats())
		})
	if err := edge.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-edge.exited
	t.Logf("SIGKILL of the edge %v after the link returned, the cloud holding %d of %d readings; proxy %+v",
		time.Since(t0).Round(time.Millisecond), atKill, total, proxy.Stats())
	proxy.SetRate(0)
	sentAtKill := proxy.Stats().ClientToTarget
	edge.start()
	t0 = time.Now()

	// The restarted edge's first history round sends the rest.
	waitFor(t, "the cloud to hold every reading after the edge's restart", 45*time.Second, func() (bool, string) {
		counts, err := histCounts(ctx, cloudCl, nodes, "temp", since)
		if err != nil {
			return false, err.Error()
		}
		return sumInts(counts) == total, fmt.Sprintf("%d of %d readings on the cloud (%v); edge links %+v",
			sumInts(counts), total, counts, edge.mustStatus().Links)
	})
	resent := proxy.Stats().ClientToTarget - sentAtKill
	t.Logf("the cloud held every reading %v after the edge's restart, the restarted edge having sent %d bytes",
		time.Since(t0).Round(time.Millisecond), resent)
	// The round compares windows and sends only those that differ: the
	// windows the cloud holds are not sent again. A window's push is
	// about what the edge sent before the kill over the windows that
	// landed (an overestimate: it counts the next push's start).
	if perWindow := sentAtKill / int64(pushes); resent > int64(3-pushes)*perWindow+perWindow/2 {
		t.Errorf("the restarted edge sent %d bytes for the %d windows the cloud lacked, about %d bytes each: it sent again what had landed",
			resent, 3-pushes, perWindow)
	}

	// Sample for sample: each sensor's history --json on both sides,
	// and the edge's against what was written.
	var onEdge []string
	waitFor(t, "every sensor's history on the cloud to equal the edge's", 30*time.Second, func() (bool, string) {
		var errs []error
		onEdge, errs = historiesJSON(append(slices.Repeat([]string{edge.url}, len(nodes)), slices.Repeat([]string{cloud.url}, len(nodes))...),
			append(nodes, nodes...))
		for i, n := range nodes {
			if err := cmp.Or(errs[i], errs[len(nodes)+i]); err != nil {
				return false, fmt.Sprintf("sensor %d: %v", i, err)
			}
			if onCloud := onEdge[len(nodes)+i]; onEdge[i] != onCloud {
				return false, fmt.Sprintf("sensor %d (%v): edge's and cloud's history --json differ: %s", i, n, diffSummary(onEdge[i], onCloud))
			}
		}
		return true, ""
	})
	for i := range nodes {
		var got []sampleLine
		for l := range strings.Lines(onEdge[i]) {
			var s sampleLine
			if err := json.Unmarshal([]byte(l), &s); err != nil {
				t.Fatalf("sensor %d: history --json line %q: %v", i, l, err)
			}
			got = append(got, s)
		}
		if len(got) != perReg {
			t.Fatalf("sensor %d: %d samples on both sides, want the %d written", i, len(got), perReg)
		}
		for j, s := range got {
			w := readings[i][j]
			if s.HLC != w.hlc.String() || s.Origin != origin || s.Value == nil || *s.Value != w.value || s.Tombstone ||
				s.Time != w.hlc.Time().Format(histTime) {
				t.Fatalf("sensor %d sample %d on both sides: %+v (value %v), want hlc %d, origin %s, value %v",
					i, j, s, s.Value, uint64(w.hlc), origin, w.value)
			}
		}
	}
	// The registers too: each holds its last reading on both sides.
	exp := waitSame(t, "the cloud's copy of the edge's subtree equals the edge's",
		func() string { return edge.export("") }, func() string { return cloud.export(edge.id) })
	for i, n := range nodes {
		want := fmt.Sprintf(`"node":%q,"type":"temp","key":"0","value":%s,`, n, strconv.FormatFloat(readings[i][perReg-1].value, 'f', -1, 64))
		if !strings.Contains(exp, want) {
			t.Errorf("sensor %d: the export lacks its last reading %s", i, want)
		}
	}

	for _, p := range []*e2eProc{edge, cloud} {
		if out := mustSiot(t, "", "verify", "--online", "--server", p.url); !strings.Contains(out, ": ok: ") {
			t.Errorf("%s: siot verify --online: %q", p.name, out)
		}
	}
}

// TestE2EReadmeHistory runs the README's "History: an edge cut off" as
// written (bash -e, free ports, the test's binary, TMPDIR in the test's
// directory) and checks what it shows: the edge's last three readings,
// and the cloud's summaries of all hundred, taken while the cloud was
// down.
func TestE2EReadmeHistory(t *testing.T) {
	bin := e2eBinary(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script := readmeScript(t, "### History: an edge cut off")
	if !strings.HasPrefix(script, "make build\n") {
		t.Fatalf("the block does not start with make build:\n%s", script)
	}
	// The ports it uses are those the test replaces, and those the text
	// before it says it needs.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	intro := string(readme)[strings.Index(string(readme), "### History: an edge cut off"):]
	intro = intro[:strings.Index(intro, "```sh")]
	ports := []string{"4222", "4223", "8118", "8119"}
	for _, m := range regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(script, -1) {
		if !slices.Contains(ports, m[1]) {
			t.Errorf("the block uses port %s, which the test does not replace", m[1])
		}
		if !strings.Contains(intro, m[1]) {
			t.Errorf("the block uses port %s, which the text before it does not say it needs:\n%s", m[1], intro)
		}
	}
	start := time.Now()
	stdout, stderr, err := runScript(t, bash, bin, strings.TrimPrefix(script, "make build\n"), ports...)
	t.Logf("the block ran in %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("block: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	// Reading i (1..100) is 300 + i%7: the last three are 300, 301, 302.
	samples := regexp.MustCompile(`(?m)^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)  (\S+)  origin ([0-9a-f]{8})$`).FindAllStringSubmatch(stdout, -1)
	if len(samples) != 3 {
		t.Fatalf("%d history lines from the edge's tail -3, want 3:\n%s", len(samples), stdout)
	}
	for i, s := range samples {
		if want := strconv.Itoa(300 + (98+i)%7); s[2] != want || s[3] != samples[0][3] || i > 0 && s[1] < samples[i-1][1] {
			t.Errorf("edge history line %d: %q; want the value %s, the origin of the others, a time not before the previous", i, s[0], want)
		}
	}
	steps := regexp.MustCompile(`(?m)^\S+Z  count (\d+)  min (\S+)  max (\S+)  mean (\S+)  last (\S+)$`).FindAllStringSubmatch(stdout, -1)
	if len(steps) == 0 {
		t.Fatalf("no --step 10s lines from the cloud:\n%s", stdout)
	}
	n := 0
	for _, s := range steps {
		c, _ := strconv.Atoi(s[1])
		n += c
		if lo, _ := strconv.Atoi(s[2]); lo < 300 {
			t.Errorf("step %q: min under 300", s[0])
		}
		if hi, _ := strconv.Atoi(s[3]); hi > 306 {
			t.Errorf("step %q: max over 306", s[0])
		}
	}
	if n != 100 {
		t.Errorf("the cloud's steps count %d readings, want 100:\n%s", n, stdout)
	}
	if last := steps[len(steps)-1][5]; last != "302" {
		t.Errorf("the cloud's last step ends with %s, want the hundredth reading, 302", last)
	}
	if testing.Verbose() {
		t.Logf("block output:\n%s", stdout)
	}
}
