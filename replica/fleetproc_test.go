package replica

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// procCloud is a cloud run as `siot serve` in a process of its own, so a
// fleet benchmark measures its CPU and memory apart from the simulated
// edges.
type procCloud struct {
	cmd  *exec.Cmd
	url  string
	root uuid.UUID
	nc   *nats.Conn // the local administrator's
	done chan error // the process's exit
}

// startProcCloud builds cmd/siot and starts it on a free loopback port
// and a data directory of its own.
func startProcCloud(b *testing.B) *procCloud {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "siot")
	build := exec.Command("go", "build", "-o", bin, "../cmd/siot")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build siot: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	data := filepath.Join(dir, "data")
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { logf.Close() })
	c := &procCloud{url: "nats://" + addr, done: make(chan error, 1)}
	c.cmd = exec.Command(bin, "serve", "--data", data, "--listen", addr, "--http", "", "--log-level", "warn")
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if v := os.Getenv("SIOT_CLOUD_GOMEMLIMIT"); v != "" {
		c.cmd.Env = append(os.Environ(), "GOMEMLIMIT="+v)
	}
	if err := c.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	b.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	var creds *transport.Creds
	waitFor(b, "the cloud process's admin.creds", 30*time.Second, func() bool {
		creds, err = transport.ReadCreds(filepath.Join(data, "admin.creds"))
		if err != nil {
			return false
		}
		c.nc, err = transport.Dial(c.url, transport.DialConfig{Creds: creds, Timeout: 5 * time.Second})
		return err == nil
	})
	b.Cleanup(c.nc.Close)
	var st transport.Status
	if err := c.call(transport.NameStatus, transport.StatusRequest{}, &st); err != nil {
		b.Fatal(err)
	}
	if c.root, err = crdt.ParseID(st.ID); err != nil {
		b.Fatal(err)
	}
	return c
}

func (c *procCloud) call(name string, req, out any) error {
	m, err := c.nc.Request(adminSubject(name), mustEncode(req), time.Minute)
	if err != nil {
		return err
	}
	return transport.Decode(m.Data, 0, out)
}

// provision writes pts through the administrator's import.
func (c *procCloud) provision(b *testing.B) func([]crdt.Point) {
	return func(pts []crdt.Point) {
		var res transport.ImportResult
		if err := c.call(transport.NameImport, transport.Import{Points: crdt.AppendBatch(nil, pts), OneTime: true}, &res); err != nil {
			b.Fatalf("provision: %v", err)
		}
	}
}

// cpu returns the process's user and system CPU time so far.
func (c *procCloud) cpu(b *testing.B) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th of them, in clock ticks (100 a second).
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+stime) * 10 * time.Millisecond
}

// rss returns the process's resident and peak resident memory in MB, and
// resets the peak when reset is set.
func (c *procCloud) rss(b *testing.B, reset bool) (cur, peak float64) {
	pid := c.cmd.Process.Pid
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, _ := strings.Cut(line, ":")
		kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		switch k {
		case "VmRSS":
			cur = float64(kb) / 1024
		case "VmHWM":
			peak = float64(kb) / 1024
		}
	}
	if reset {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
	return cur, peak
}

// stop sends SIGTERM and returns how long the process took to exit.
func (c *procCloud) stop(b *testing.B) time.Duration {
	t0 := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			b.Fatal(err)
		}
		if err != nil {
			b.Errorf("siot serve exited with %v after SIGTERM", err)
		}
	case <-time.After(time.Minute):
		b.Fatal("siot serve did not exit within a minute of SIGTERM")
	}
	return time.Since(t0)
}

// BenchmarkFleetProcess is BenchmarkFleet with the cloud in a process of
// its own (`siot serve`, built from this tree): N edges (SIOT_FLEET_PROC,
// default 1,000) of 1,200 points link at once; SIOT_CLOUD_GOMEMLIMIT, when
// set, is the cloud's GOMEMLIMIT (siot serve sets 176 MiB for a cloud
// otherwise). Reported: the time until
// all are in sync, the cloud process's CPU per edge, its peak resident
// memory from the start of the linking, and how long it took to exit on
// SIGTERM right after.
func BenchmarkFleetProcess(b *testing.B) {
	for _, n := range fleetSizes(b, "SIOT_FLEET_PROC", 1000) {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				cloud := startProcCloud(b)
				fleet := newFleet(b, cloud.root, cloud.provision(b), n, 1200)
				cloud.rss(b, true)
				cpu0 := cloud.cpu(b)
				run := runFleet(b, cloud.url, fleet, 15*time.Minute)
				cpu := cloud.cpu(b) - cpu0
				_, peak := cloud.rss(b, false)
				b.ReportMetric(run.took.Seconds(), "in-sync-s")
				b.ReportMetric(cpu.Seconds()*1000/float64(n), "cloud-cpu-ms/edge")
				b.ReportMetric(peak, "cloud-peak-rss-MB")
				b.ReportMetric(float64(run.shed), "shed")
				b.ReportMetric(cloud.stop(b).Seconds(), "sigterm-s")
			}
		})
	}
}
