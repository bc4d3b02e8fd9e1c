package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
)

// sensorProc is the example edge application (examples/sensor) running as
// a child process.
type sensorProc struct {
	cmd         *exec.Cmd
	out, errOut e2eBuffer
	exited      chan struct{}
}

// sensorBinary builds examples/sensor (without -race, like the siot
// binary) in a directory of the test and returns its path.
func sensorBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "sensor")
	start := time.Now()
	if out, err := exec.Command(goTool, "build", "-o", bin, "../../examples/sensor").CombinedOutput(); err != nil {
		t.Fatalf("go build examples/sensor: %v\n%s", err, out)
	}
	t.Logf("built examples/sensor in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// startSensor runs the sensor binary bin with args; it is killed and
// waited for when the test ends.
func startSensor(t *testing.T, bin string, args ...string) *sensorProc {
	t.Helper()
	s := &sensorProc{exited: make(chan struct{})}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = childEnv()
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.errOut
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("sensor stdout:\n%s\nsensor log:\n%s", s.out.String(), tail(s.errOut.String(), 6000))
		}
	})
	return s
}

// node waits for the ID of the node the sensor adds, the first line of its
// output.
func (s *sensorProc) node(t *testing.T) uuid.UUID {
	t.Helper()
	var node uuid.UUID
	waitFor(t, "the sensor to print its node", 20*time.Second, func() (bool, string) {
		line, _, ok := strings.Cut(s.out.String(), "\n")
		if ok {
			node, _ = uuid.Parse(line)
		}
		select {
		case <-s.exited:
			t.Fatalf("sensor exited: %v\n%s", s.cmd.ProcessState, s.errOut.String())
		default:
		}
		return node != uuid.Nil, fmt.Sprintf("stdout %q", s.out.String())
	})
	return node
}

// TestE2ESensorExample runs the example edge application against an edge
// provisioned on a cloud, and checks on the cloud what it claims: it adds
// its node under the edge's root, its readings arrive (the simulated
// room's, and this machine's load with --source proc), a setpoint written
// on the cloud switches its heater (seen on the cloud), it goes on across
// a restart of the edge, and SIGTERM stops it cleanly.
func TestE2ESensorExample(t *testing.T) {
	e2eBinary(t)
	cloud := newProc(t, "cloud")
	cloud.start()
	devCreds := filepath.Join(t.TempDir(), "device.creds")
	dev := strings.TrimSpace(mustSiot(t, "", "device", "add", "--server", cloud.url, "--desc", "boiler room", "--out", devCreds))
	edge := newProc(t, "edge", "--upstream", cloud.url, "--creds", devCreds)
	edge.start()
	if edge.id != dev {
		t.Fatalf("edge root %s, want the device node %s", edge.id, dev)
	}
	waitLinks(t, edge, cloud.url)

	bin := sensorBinary(t)
	edgeCreds := filepath.Join(edge.data, "admin.creds")
	s := startSensor(t, bin, "--server", edge.url, "--creds", edgeCreds, "--source", "sim", "--interval", "50ms", "--seed", "7")
	node := s.node(t)

	ctx := context.Background()
	cl, err := client.Dial(ctx, cloud.url, client.WithCredsFile(filepath.Join(cloud.data, "admin.creds")), client.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// pointOf reads node's point typ on the cloud.
	pointOf := func(node uuid.UUID, typ string) (client.Point, string) {
		pts, err := cl.Get(ctx, node)
		if err != nil {
			return client.Point{}, err.Error()
		}
		for _, p := range pts {
			if !p.IsEdge() && p.Type == typ {
				return p, fmt.Sprintf("%s=%v", typ, p.Value)
			}
		}
		return client.Point{}, "no " + typ
	}
	point := func(typ string) (client.Point, string) { return pointOf(node, typ) }
	// waitValue waits until the cloud's typ satisfies ok, and returns it.
	waitValue := func(what, typ string, ok func(p client.Point) bool) client.Point {
		t.Helper()
		var p client.Point
		waitFor(t, what, 20*time.Second, func() (bool, string) {
			var seen string
			p, seen = point(typ)
			return p.Time != 0 && ok(p), seen
		})
		return p
	}
	setpoint := func(v float64) {
		t.Helper()
		if _, err := cl.Set(ctx, client.Point{Node: node, Type: "setpoint", Value: v}); err != nil {
			t.Fatal(err)
		}
	}
	anyValue := func(client.Point) bool { return true }

	// Readings arrive, one after another, on a node under the edge's root.
	first := waitValue("a temp reading on the cloud", "temp", anyValue)
	waitValue("a later temp reading on the cloud", "temp", func(p client.Point) bool { return p.Time > first.Time })
	waitValue("heater off before any setpoint", "heater", func(p client.Point) bool { return p.Value == 0 })
	if ps, err := cl.Node.Parents(ctx, node); err != nil || len(ps.Edges) != 1 || ps.Edges[0].Other.String() != dev || ps.Labels.Type != "sensor" {
		t.Fatalf("the sensor's node on the cloud: %+v %v, want a sensor under the device %s", ps, err, dev)
	}

	// A sensor reading this machine writes its load.
	proc := startSensor(t, bin, "--server", edge.url, "--creds", edgeCreds, "--source", "proc", "--interval", "50ms")
	procNode := proc.node(t)
	waitFor(t, "the proc sensor's load on the cloud", 20*time.Second, func() (bool, string) {
		p, seen := pointOf(procNode, "load")
		return p.Time != 0, seen
	})
	if err := proc.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.exited:
		if code := proc.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("proc sensor: exit status %d after SIGINT, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proc sensor still running 10 s after SIGINT")
	}

	// A setpoint above what the heater can reach keeps it on; one below
	// the ambient temperature keeps it off.
	setpoint(50)
	waitValue("heater on after setpoint 50", "heater", func(p client.Point) bool { return p.Value == 1 })
	waitValue("the room warming", "temp", func(p client.Point) bool { return p.Value > 25 })
	setpoint(-10)
	waitValue("heater off after setpoint -10", "heater", func(p client.Point) bool { return p.Value == 0 })

	// The edge restarts under the sensor: it goes on writing, and still
	// watches its setpoint.
	edge.stop(syscall.SIGTERM, 15*time.Second)
	before, _ := point("temp")
	edge.start()
	waitLinks(t, edge, cloud.url)
	waitValue("a temp reading after the edge's restart", "temp", func(p client.Point) bool { return p.Time > before.Time })
	setpoint(40)
	waitValue("heater on after setpoint 40, after the restart", "heater", func(p client.Point) bool { return p.Value == 1 })
	if !strings.Contains(s.errOut.String(), "write failed, retrying with the next reading") {
		t.Errorf("no failed write logged while the edge was down")
	}

	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("sensor still running 10 s after SIGTERM")
	}
	log := s.errOut.String()
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("sensor exit status %d after SIGTERM, want 0", code)
	}
	for _, want := range []string{`msg="setpoint changed" .*value=50\n`, `msg="setpoint changed" .*value=-10\n`,
		`msg="setpoint changed" .*value=40\n`, `msg="sensor stopped"`} {
		if !regexpMatch(want, log) {
			t.Errorf("sensor log does not match %s", want)
		}
	}
	if strings.Contains(log, "level=ERROR") {
		t.Errorf("sensor logged an error")
	}
}

// TestE2EReadmeEdgeApplication runs the README's "An edge application"
// block where it says, before the tour's last line, with the example
// built for the test in place of go run, and checks what it claims: the
// sensor logs the setpoint written on the cloud, and the cloud sees its
// heater on.
func TestE2EReadmeEdgeApplication(t *testing.T) {
	bin := e2eBinary(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	tour := strings.TrimPrefix(tourScript(t), "make build\n")
	const last = "kill %1 %2 %3; wait\n"
	if !strings.HasSuffix(tour, last) {
		t.Fatalf("the tour does not end with %q:\n%s", last, tour)
	}
	block := readmeScript(t, "### An edge application")
	const goRun = "go run ./examples/sensor "
	if !strings.HasPrefix(block, goRun) {
		t.Fatalf("the block does not start with %q:\n%s", goRun, block)
	}
	block = sensorBinary(t) + " " + strings.TrimPrefix(block, goRun)
	script := strings.TrimSuffix(tour, last) + block + last
	stdout, stderr, err := runScript(t, bash, bin, script, "4222", "4223", "8118", "8119")
	if err != nil {
		t.Fatalf("tour and edge application: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	// The tour's setpoint 19 is logged only when the sensor reads it
	// before the block's 25 reaches the edge (a race the block does not
	// wait out): 25 is always logged.
	for _, re := range []string{`msg="setpoint changed" .*value=25\n`, `msg="sensor stopped"`} {
		if !regexpMatch(re, stderr) {
			t.Errorf("the sensor's log does not match %s:\n%s", re, stderr)
		}
	}
	if !regexpMatch(`(?m)^heater\s+0\s+1\s`, stdout) || !regexpMatch(`(?m)^setpoint\s+0\s+25\s`, stdout) {
		t.Errorf("the cloud's get shows no heater on or no setpoint 25:\n%s", stdout)
	}
}
