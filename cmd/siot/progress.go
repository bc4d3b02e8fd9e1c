package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a one-line progress bar for a long import or export, on
// standard error and only when it is a terminal: piped or redirected
// output, tests and --quiet get none. Owned by one goroutine.
type progress struct {
	w      io.Writer
	on     bool
	drawn  bool
	label  string
	unit   string
	total  int64 // 0 when unknown
	n      int64
	start  time.Time
	lastAt time.Time
}

// progressEvery is how often the bar is redrawn; nothing is drawn before
// it first passes, so short commands print no bar at all.
const progressEvery = 200 * time.Millisecond

// newProgress returns a bar labelled label that counts toward total (0:
// unknown); want false or w not a terminal gives a bar that draws nothing.
func newProgress(w io.Writer, want bool, label string, total int64) *progress {
	now := time.Now()
	unit := "records"
	if label == "checking" {
		unit = "bytes"
	}
	return &progress{w: w, on: want && isTerminal(w), label: label, unit: unit, total: total, start: now, lastAt: now}
}

// add counts n more and redraws when due.
func (p *progress) add(n int64) {
	if !p.on {
		return
	}
	p.n += n
	if now := time.Now(); now.Sub(p.lastAt) >= progressEvery {
		p.lastAt = now
		p.draw(now)
	}
}

func (p *progress) draw(now time.Time) {
	rate := float64(p.n) / max(now.Sub(p.start).Seconds(), 1e-9)
	if p.total > 0 {
		const width = 30
		frac := min(float64(p.n)/float64(p.total), 1)
		filled := int(frac * width)
		fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %d/%d %s, %.0f/s ", p.label, strings.Repeat("=", filled),
			strings.Repeat(" ", width-filled), 100*frac, p.n, p.total, p.unit, rate)
	} else {
		fmt.Fprintf(p.w, "\r%s %d %s, %.0f/s ", p.label, p.n, p.unit, rate)
	}
	p.drawn = true
}

// done erases the bar; later calls do nothing.
func (p *progress) done() {
	if p.on && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	p.on = false
}
