package main

import (
	"bytes"
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
	if s := buf.String(); !strings.HasPrefix(s, "\rimporting [===============               ]  50% 50/100 records") {
		t.Fatalf("bar %q", s)
	}
	p.done()
	p.add(10)
	if s := buf.String(); !strings.HasSuffix(s, "\r\033[K") {
		t.Fatalf("bar not erased: %q", s)
	}
}
