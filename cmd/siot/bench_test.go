package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// writeRecords writes n point records for an import under root: devices
// of 100 points each (the device's edge, its nodeType and 98 readings of
// seven types), every record a register of its own, without hlc or origin.
func writeRecords(w io.Writer, root string, n int) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	types := [...]string{"temp", "humidity", "voltage", "current", "rssi", "pressure", "co2"}
	var dev string
	for i := range n {
		switch j := i % 100; j {
		case 0:
			dev = uuid.NewString()
			fmt.Fprintf(bw, "{\"node\":%q,\"parent\":%q,\"type\":\"edge\"}\n", dev, root)
		case 1:
			fmt.Fprintf(bw, "{\"node\":%q,\"type\":\"nodeType\",\"text\":\"device\"}\n", dev)
		default:
			fmt.Fprintf(bw, "{\"node\":%q,\"type\":%q,\"key\":\"%d\",\"value\":%d.5}\n", dev, types[j%len(types)], j, i)
		}
	}
	return bw.Flush()
}

// benchServer runs `siot serve` in a fresh temp dir until stop is called
// and returns its root ID and NATS URL.
func benchServer(tb testing.TB, args ...string) (id, natsURL string, stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := &syncBuffer{}
	getenv := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "max"
		}
		return ""
	}
	m := &Main{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: log, Getenv: getenv}
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, append([]string{"serve", "--data", tb.TempDir(), "--listen", "127.0.0.1:0", "--http", "",
			"--min-free", "0", "--log-format", "json"}, args...))
	}()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("serve: %v\n%s", err, log.String())
		}
	}
	ok := poll(20*time.Second, 10*time.Millisecond, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		id, natsURL, _, _ = servingLine(log.String())
		return id != ""
	})
	if !ok || id == "" {
		stop()
		tb.Fatalf("serve did not start:\n%s", log.String())
	}
	return id, natsURL, stop
}

// runCLI runs a client command with stdout to out.
func runCLI(tb testing.TB, out io.Writer, args ...string) string {
	tb.Helper()
	var errOut strings.Builder
	m := &Main{Stdin: strings.NewReader(""), Stdout: out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	if err := m.Run(context.Background(), args); err != nil {
		tb.Fatalf("siot %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return errOut.String()
}

const benchRecords = 200_000

// BenchmarkImport imports 200,000 new records from a file into a fresh
// local server, through `siot import` (both passes: check, then write).
func BenchmarkImport(b *testing.B) {
	file := filepath.Join(b.TempDir(), "in.jsonl")
	var elapsed time.Duration
	for range b.N {
		b.StopTimer()
		id, url, stop := benchServer(b)
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		if err := writeRecords(f, id, benchRecords); err != nil {
			b.Fatal(err)
		}
		f.Close()
		b.StartTimer()
		t0 := time.Now()
		runCLI(b, io.Discard, "import", "--server", url, file)
		elapsed += time.Since(t0)
		b.StopTimer()
		stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(benchRecords*b.N)/elapsed.Seconds(), "records/s")
}

// BenchmarkExport exports 200,000 records from a local server through
// `siot export`.
func BenchmarkExport(b *testing.B) {
	id, url, stop := benchServer(b)
	defer stop()
	file := filepath.Join(b.TempDir(), "in.jsonl")
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	if err := writeRecords(f, id, benchRecords); err != nil {
		b.Fatal(err)
	}
	f.Close()
	runCLI(b, io.Discard, "import", "--server", url, file)
	var elapsed time.Duration
	for b.Loop() {
		t0 := time.Now()
		runCLI(b, io.Discard, "export", "--server", url)
		elapsed += time.Since(t0)
	}
	b.ReportMetric(float64((benchRecords+1)*b.N)/elapsed.Seconds(), "records/s")
}
