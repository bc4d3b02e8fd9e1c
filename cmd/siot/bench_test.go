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

// recordsFile writes n records under root (writeRecords) to a new file.
func recordsFile(tb testing.TB, root string, n int) string {
	tb.Helper()
	file := filepath.Join(tb.TempDir(), "in.jsonl")
	f, err := os.Create(file)
	if err != nil {
		tb.Fatal(err)
	}
	if err := writeRecords(f, root, n); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return file
}

// runCLI runs a client command with stdout to out.
func runCLI(tb testing.TB, out io.Writer, args ...string) string {
	tb.Helper()
	var errOut strings.Builder
	m := &Main{Stdin: strings.NewReader(""), Stdout: out, Stderr: &errOut, Getenv: testGetenv(args)}
	if err := m.Run(context.Background(), args); err != nil {
		tb.Fatalf("siot %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return errOut.String()
}

const benchRecords = 200_000

// BenchmarkImport imports 200,000 new records from a file into a fresh
// local server, through `siot import` (both passes: check, then write).
func BenchmarkImport(b *testing.B) {
	var elapsed time.Duration
	for range b.N {
		b.StopTimer()
		inst := serve(b, "--data", b.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
		file := recordsFile(b, inst.id, benchRecords)
		b.StartTimer()
		t0 := time.Now()
		runCLI(b, io.Discard, "import", "--server", inst.nats, file)
		elapsed += time.Since(t0)
		b.StopTimer()
		if err := inst.stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(benchRecords*b.N)/elapsed.Seconds(), "records/s")
}

// BenchmarkExport exports 200,000 records from a local server through
// `siot export`.
func BenchmarkExport(b *testing.B) {
	inst := serve(b, "--data", b.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	runCLI(b, io.Discard, "import", "--server", inst.nats, recordsFile(b, inst.id, benchRecords))
	var elapsed time.Duration
	for b.Loop() {
		t0 := time.Now()
		runCLI(b, io.Discard, "export", "--server", inst.nats)
		elapsed += time.Since(t0)
	}
	b.ReportMetric(float64((benchRecords+1)*b.N)/elapsed.Seconds(), "records/s")
}
