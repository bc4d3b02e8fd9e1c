// Command sensor is an example edge application built on the client
// library (package client). It runs next to a siot server, reads a sensor
// every interval and writes the readings as points of its node; it
// watches that node for a setpoint written anywhere, on the cloud as well,
// acts on it and writes the reaction back as a point.
//
//	go run ./examples/sensor --server nats://127.0.0.1:4223 --creds "$E/admin.creds" --source sim --interval 1s
//
// With --source proc it reads the 1-minute load average from /proc/loadavg
// and the first thermal zone's temperature, where the machine has one;
// with --source sim it simulates a room with a heater, deterministic given
// --seed, that a thermostat switches toward the setpoint.
//
// The server's connection may drop (a restart, an update): the client
// reconnects by itself, a reading that fails to be written is logged and
// written with the next one, and the watch resumes where it stopped.
// SIGINT or SIGTERM stops the program.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sensor:", err)
		os.Exit(1)
	}
}

// config is what the flags say.
type config struct {
	server, creds, source string
	node                  uuid.UUID // uuid.Nil: add one
	interval              time.Duration
	seed                  uint64
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	var cfg config
	var node string
	flags := flag.NewFlagSet("sensor", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&cfg.server, "server", env("SIOT_SERVER", "nats://127.0.0.1:4222"), "the local siot server (SIOT_SERVER)")
	flags.StringVar(&cfg.creds, "creds", env("SIOT_CREDS", "./siot-data/admin.creds"), "the credential file to sign in with (SIOT_CREDS)")
	flags.StringVar(&node, "node", "", "the sensor's node (default: add one under the server's root and print its ID)")
	flags.DurationVar(&cfg.interval, "interval", 10*time.Second, "time between two readings")
	flags.StringVar(&cfg.source, "source", "sim", "what to read: sim (a simulated room with a heater) or proc (/proc/loadavg, thermal zone)")
	flags.Uint64Var(&cfg.seed, "seed", 1, "the simulation's random seed")
	if err := flags.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case flags.NArg() > 0:
		return cfg, fmt.Errorf("unexpected argument %q", flags.Arg(0))
	case cfg.interval <= 0:
		return cfg, errors.New("--interval must be positive")
	case cfg.source != "sim" && cfg.source != "proc":
		return cfg, fmt.Errorf("--source %q: want sim or proc", cfg.source)
	}
	if node != "" {
		id, err := uuid.Parse(node)
		if err != nil {
			return cfg, fmt.Errorf("--node: %w", err)
		}
		cfg.node = id
	}
	return cfg, nil
}

// source is a sensor, and the actuator a setpoint drives.
type source interface {
	// read takes one reading: values by point type.
	read() (map[string]float64, error)
	// setpoint acts on a new setpoint and returns the points it changed.
	setpoint(v float64) map[string]float64
}

// run runs the sensor until ctx is done. It prints the ID of the node it
// adds, if it adds one, to stdout and logs to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	var src source = procSource{fsys: os.DirFS("/")}
	if cfg.source == "sim" {
		src = newSim(cfg.seed)
	}

	cl, err := dial(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the server
		}
		return err
	}
	defer cl.Close()
	node := cfg.node
	if node == uuid.Nil {
		// Parent nil: the client's root, for a server's admin.creds the
		// server's root.
		node, _, err = cl.Node.Add(ctx, client.NewNode{Type: "sensor", Description: "example sensor (" + cfg.source + ")"})
		if err != nil {
			err = fmt.Errorf("add the sensor's node: %w", err)
		} else {
			fmt.Fprintln(stdout, node)
		}
	} else if err = cl.Known(ctx, node); err != nil {
		err = fmt.Errorf("--node: %w", err)
	}
	if ctx.Err() != nil {
		return nil // stopped while starting
	} else if err != nil {
		return err
	}
	log = log.With("node", node)
	log.Info("sensor started", "server", cl.URL(), "source", cfg.source, "interval", cfg.interval)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	setpoints := make(chan float64)
	wg.Go(func() { watchSetpoint(ctx, cl, node, setpoints, log) })

	tick := time.NewTicker(cfg.interval)
	defer tick.Stop()
	pending := map[string]float64{} // point type → value not yet written
	read := func() {
		r, err := src.read()
		if err != nil {
			log.Warn("read", "err", err)
		}
		maps.Copy(pending, r)
	}
	read()
	for {
		write(ctx, cl, node, pending, log)
		select {
		case <-ctx.Done():
			log.Info("sensor stopped")
			return nil
		case <-tick.C:
			read()
		case v := <-setpoints:
			log.Info("setpoint changed", "value", v)
			maps.Copy(pending, src.setpoint(v))
		}
	}
}

// dial connects to the server, waiting for it while it is unavailable.
func dial(ctx context.Context, cfg config, log *slog.Logger) (*client.Client, error) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		cl, err := client.Dial(ctx, cfg.server, client.WithCredsFile(cfg.creds), client.WithName("sensor example"), client.WithTimeout(10*time.Second))
		if err == nil || !errors.Is(err, client.ErrUnavailable) {
			return cl, err
		}
		log.Warn("waiting for the server", "err", err, "retry", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// write writes the pending points as one operation and forgets them. A
// write the server did not take for now (ErrUnavailable: disconnected, no
// reply, a server that refuses for now) keeps them for the next write; any
// other failure would fail again, so they are dropped.
func write(ctx context.Context, cl *client.Client, node uuid.UUID, pending map[string]float64, log *slog.Logger) {
	if len(pending) == 0 {
		return
	}
	var pts []client.Point
	for _, typ := range slices.Sorted(maps.Keys(pending)) {
		pts = append(pts, client.Point{Node: node, Type: typ, Value: pending[typ]})
	}
	_, err := cl.Set(ctx, pts...)
	switch {
	case err == nil:
		clear(pending)
	case ctx.Err() != nil:
	case errors.Is(err, client.ErrUnavailable):
		log.Warn("write failed, retrying with the next reading", "points", len(pts), "err", err)
	default:
		log.Error("write refused, dropped", "points", len(pts), "err", err)
		clear(pending)
	}
}

// watchSetpoint sends node's setpoint to out: the one it has, then each
// new one, until ctx is done.
func watchSetpoint(ctx context.Context, cl *client.Client, node uuid.UUID, out chan<- float64, log *slog.Logger) {
	send := func(p client.Point) {
		if p.Type != "setpoint" || p.Node != node || p.IsEdge() || p.Tombstone {
			return
		}
		select {
		case out <- p.Value:
		case <-ctx.Done():
		}
	}
	for ctx.Err() == nil {
		// The change number first, then the setpoint as it is, then every
		// change after that number: none is missed in between.
		st, err := cl.Status(ctx)
		var pts []client.Point
		if err == nil {
			pts, err = cl.Get(ctx, node)
		}
		if err == nil {
			for _, p := range pts {
				send(p)
			}
			// The watch resumes by itself across a dropped connection; it
			// ends on an error it cannot get past (a server whose data
			// was replaced): start over from the setpoint as it is.
			for ch, werr := range cl.Watch(ctx, node, client.After(st.LastSeq)) {
				if err = werr; err != nil {
					break
				}
				send(ch.Point)
			}
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("watching the setpoint", "err", err, "retry", time.Second)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// procSource reads the machine's load and temperature from fsys, the root
// file system.
type procSource struct{ fsys fs.FS }

func (p procSource) read() (map[string]float64, error) {
	b, err := fs.ReadFile(p.fsys, "proc/loadavg")
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return nil, errors.New("/proc/loadavg is empty")
	}
	load, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return nil, fmt.Errorf("/proc/loadavg: %w", err)
	}
	r := map[string]float64{"load": load}
	// A temperature where the machine has a thermal zone, in m°C.
	zones, _ := fs.Glob(p.fsys, "sys/class/thermal/thermal_zone*/temp")
	for _, z := range zones {
		b, err := fs.ReadFile(p.fsys, z)
		if err != nil {
			continue
		}
		if mc, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err == nil {
			r["temp"] = mc / 1000
			break
		}
	}
	return r, nil
}

func (procSource) setpoint(float64) map[string]float64 {
	return nil // nothing here to drive: the setpoint is only logged
}

// The simulated room: it drifts toward ambient with the heater off and
// toward heated with it on, by rate of the difference per reading, plus
// noise; the thermostat switches the heater band around the setpoint.
const (
	ambient = 15.0
	heated  = 35.0
	rate    = 0.1
	noise   = 0.05
	band    = 0.5
)

type sim struct {
	rng    *rand.Rand
	temp   float64
	set    float64 // the setpoint; NaN until one is written
	heater bool
}

func newSim(seed uint64) *sim {
	return &sim{rng: rand.New(rand.NewPCG(seed, seed)), temp: 20, set: math.NaN()}
}

func (s *sim) read() (map[string]float64, error) {
	target := ambient
	if s.heater {
		target = heated
	}
	s.temp += rate*(target-s.temp) + noise*s.rng.NormFloat64()
	s.control()
	return map[string]float64{"temp": math.Round(s.temp*100) / 100, "heater": s.heaterValue()}, nil
}

func (s *sim) setpoint(v float64) map[string]float64 {
	s.set = v
	s.control()
	return map[string]float64{"heater": s.heaterValue()}
}

// control is the thermostat.
func (s *sim) control() {
	switch {
	case s.temp < s.set-band:
		s.heater = true
	case s.temp > s.set+band:
		s.heater = false
	}
}

func (s *sim) heaterValue() float64 {
	if s.heater {
		return 1
	}
	return 0
}
