package main

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestProgressDrawsOnlyOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, true, "importing", 100) // a buffer is no terminal
	p.lastAt = time.Time{}
	p.add(50)
	p.done()
	if buf.Len() != 0 {
		t.Fatalf("bar drawn on a non-terminal: %q", buf.String())
	}
	// Forced on, as on a terminal: a bar, then erased.
	p = &progress{w: &buf, on: true, label: "importing", unit: "records", total: 100, start: time.Now()}
	p.add(50)
	if s := buf.String(); !strings.HasPrefix(s, "\rimporting [===============               ]  50% 50/100 records, ") {
		t.Fatalf("bar %q", s)
	}
	p.done()
	p.add(10)
	if s := buf.String(); !strings.HasSuffix(s, "\r\033[K") {
		t.Fatalf("bar not erased: %q", s)
	}
}

// The bar shows rates and amounts for people: "12.3k records/s",
// "4.1 MiB/s".
func TestProgressHumanRates(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		label string
		unit  string
		n     int64
		total int64
		want  string
	}{
		{"importing", "records", 24_600, 100_000, "\rimporting [=======                       ]  25% 24.6k/100.0k records, 12.3k records/s "},
		{"exporting", "records", 24_600, 0, "\rexporting 24.6k records, 12.3k records/s "},
		{"exporting", "records", 900, 0, "\rexporting 900 records, 450 records/s "},
		{"checking", "bytes", 8_598_323, 16 << 20, "\rchecking [===============               ]  51% 8.2 MiB/16.0 MiB, 4.1 MiB/s "},
		{"exporting", "records", 5_000_000_000, 0, "\rexporting 5.0G records, 2.5G records/s "},
	} {
		var buf bytes.Buffer
		p := &progress{w: &buf, on: true, label: c.label, unit: c.unit, total: c.total, n: c.n, start: start}
		p.draw(start.Add(2 * time.Second))
		if buf.String() != c.want {
			t.Errorf("bar %q, want %q", buf.String(), c.want)
		}
	}
	for x, want := range map[float64]string{0: "0", 999: "999", 999.6: "1.0k", 1000: "1.0k", 12_345: "12.3k", 999_999: "1.0M", 4.5e6: "4.5M"} {
		if got := humanCount(x); got != want {
			t.Errorf("humanCount(%v) = %q, want %q", x, got, want)
		}
	}
	for x, want := range map[float64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 4.1 * (1 << 20): "4.1 MiB", 1 << 40: "1.0 TiB"} {
		if got := humanBytes(x); got != want {
			t.Errorf("humanBytes(%v) = %q, want %q", x, got, want)
		}
	}
}

// import's summary gives its rate for people too: "12.3k records/s", not
// "12345 records/s". (5,000 records in under 5 s, the common case, make
// the old form four digits.)
func TestImportSummaryHumanRate(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	errOut := runCLI(t, io.Discard, "import", "--server", srv.nats, recordsFile(t, srv.id, 5000))
	if !regexp.MustCompile(`^imported 5000 records from .*: 5000 applied, 0 stale, in \S+ \((\d{1,3}|\d{1,3}\.\d[kMG]) records/s\)\n$`).MatchString(errOut) {
		t.Fatalf("import summary %q", errOut)
	}
}
