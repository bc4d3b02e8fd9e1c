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
		fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %s/%s, %s ", p.label, strings.Repeat("=", filled),
			strings.Repeat(" ", width-filled), 100*frac, p.count(float64(p.n), false), p.count(float64(p.total), true), p.count(rate, true)+"/s")
	} else {
		fmt.Fprintf(p.w, "\r%s %s, %s ", p.label, p.count(float64(p.n), true), p.count(rate, true)+"/s")
	}
	p.drawn = true
}

// count shows an amount of the bar's unit for people: bytes in binary
// units ("4.1 MiB"), records with a k, M or G prefix ("12.3k records");
// withUnit false leaves the unit out of a record count ("12.3k").
func (p *progress) count(x float64, withUnit bool) string {
	if p.unit == "bytes" {
		return humanBytes(x)
	}
	s := humanCount(x)
	if withUnit {
		s += " " + p.unit
	}
	return s
}

// humanCount shows x with an SI prefix and one decimal from 1000 on:
// 999, 1.0k, 12.3k, 4.5M, 1.2G.
func humanCount(x float64) string {
	const prefixes = "kMGTP"
	if x < 999.5 {
		return fmt.Sprintf("%.0f", x)
	}
	x /= 1000
	i := 0
	for x >= 999.95 && i+1 < len(prefixes) {
		x /= 1000
		i++
	}
	return fmt.Sprintf("%.1f%c", x, prefixes[i])
}

// humanBytes shows a number of bytes in binary units, one decimal from
// 1 KiB on: 512 B, 1.5 KiB, 4.1 MiB, 2.0 GiB.
func humanBytes(x float64) string {
	const units = "KMGTP"
	if x < 1023.5 {
		return fmt.Sprintf("%.0f B", x)
	}
	x /= 1024
	i := 0
	for x >= 1023.95 && i+1 < len(units) {
		x /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", x, units[i])
}

// done erases the bar; later calls do nothing.
func (p *progress) done() {
	if p.on && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	p.on = false
}
