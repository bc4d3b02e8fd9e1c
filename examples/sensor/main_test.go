package main

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// The end-to-end test of this program, against a cloud and an edge, is
// cmd/siot's TestE2ESensorExample.

// TestSim: a seed gives one run; the thermostat switches the heater at
// once when a setpoint comes, and holds it while the room cannot reach
// the setpoint.
func TestSim(t *testing.T) {
	const seed = 42
	a, b := newSim(seed), newSim(seed)
	for i := range 50 {
		ra, _ := a.read()
		rb, _ := b.read()
		if !reflect.DeepEqual(ra, rb) {
			t.Fatalf("seed %d, reading %d: %v and %v", seed, i, ra, rb)
		}
		if ra["heater"] != 0 {
			t.Fatalf("seed %d, reading %d: heater on without a setpoint", seed, i)
		}
	}
	if got := a.setpoint(50); got["heater"] != 1 {
		t.Fatalf("setpoint 50: %v, want the heater on at once", got)
	}
	var r map[string]float64
	for i := range 100 {
		if r, _ = a.read(); r["heater"] != 1 {
			t.Fatalf("seed %d, reading %d after setpoint 50: %v, want the heater on", seed, i, r)
		}
	}
	if r["temp"] < heated-1 {
		t.Errorf("after 100 readings heated: temp %v, want near %v", r["temp"], heated)
	}
	// A reachable setpoint: the heater goes off above it.
	a.setpoint(25)
	for i := range 100 {
		if r, _ = a.read(); r["temp"] > 25+band+1 && r["heater"] != 0 {
			t.Fatalf("seed %d, reading %d after setpoint 25: %v, want the heater off", seed, i, r)
		}
	}
	if r["temp"] < 25-band-1 || r["temp"] > 25+band+1 {
		t.Errorf("seed %d: temp %v after 100 readings at setpoint 25", seed, r["temp"])
	}
}

func TestProcSource(t *testing.T) {
	fsys := fstest.MapFS{
		"proc/loadavg":                           {Data: []byte("0.52 0.58 0.59 1/467 12345\n")},
		"sys/class/thermal/thermal_zone0/temp":   {Data: []byte("not a number\n")},
		"sys/class/thermal/thermal_zone1/temp":   {Data: []byte("45250\n")},
		"sys/class/thermal/thermal_zone1/policy": {Data: []byte("step_wise\n")},
	}
	r, err := procSource{fsys}.read()
	if want := map[string]float64{"load": 0.52, "temp": 45.25}; err != nil || !reflect.DeepEqual(r, want) {
		t.Fatalf("read: %v %v, want %v", r, err, want)
	}
	// No thermal zone: the load only.
	delete(fsys, "sys/class/thermal/thermal_zone1/temp")
	if r, err := (procSource{fsys}).read(); err != nil || !reflect.DeepEqual(r, map[string]float64{"load": 0.52}) {
		t.Fatalf("without a thermal zone: %v %v", r, err)
	}
	fsys["proc/loadavg"] = &fstest.MapFile{Data: []byte("\n")}
	if _, err := (procSource{fsys}).read(); err == nil {
		t.Fatal("an empty /proc/loadavg read without an error")
	}
	delete(fsys, "proc/loadavg")
	if _, err := (procSource{fsys}).read(); err == nil {
		t.Fatal("a missing /proc/loadavg read without an error")
	}
}

func TestFlags(t *testing.T) {
	env := map[string]string{"SIOT_SERVER": "nats://10.0.0.5:4222", "SIOT_CREDS": "/etc/siot/admin.creds"}
	cfg, err := parseFlags([]string{"--interval", "1s", "--source", "proc"}, func(k string) string { return env[k] }, io.Discard)
	want := config{server: "nats://10.0.0.5:4222", creds: "/etc/siot/admin.creds", source: "proc", interval: time.Second, seed: 1}
	if err != nil || cfg != want {
		t.Fatalf("parse: %+v %v, want %+v", cfg, err, want)
	}
	none := func(string) string { return "" }
	for _, bad := range [][]string{
		{"--source", "gps"}, {"--interval", "0s"}, {"--node", "pump"}, {"extra"},
	} {
		if _, err := parseFlags(bad, none, io.Discard); err == nil {
			t.Errorf("%s: no error", strings.Join(bad, " "))
		}
	}
}
