package replica

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/siot-io/siot/store"
)

// NotReady returns why this instance should not get traffic, one reason a
// line, or nil when it is ready: writes are refused (free disk below the
// floor), or a configured peer refused for a root mismatch. It costs a
// statfs and reads no data. Safe for concurrent use.
func (r *Replica) NotReady() []string {
	var why []string
	if err := r.st.SpaceOK(); err != nil {
		why = append(why, "writes refused: "+err.Error())
	}
	for _, d := range r.dialers {
		if d.role != "peer" {
			continue
		}
		st := d.status()
		if !st.Connected && rootMismatch(st.LastError) {
			why = append(why, fmt.Sprintf("peer %s refused: %s", st.URL, st.LastError))
		}
	}
	return why
}

// rootMismatch reports whether a link's error is a root mismatch, found
// by either side (the acceptor's comes back as its text).
func rootMismatch(lastErr string) bool {
	return strings.Contains(lastErr, ErrRootMismatch.Error())
}

// refusalLog logs the writes refused for a full disk at most once per
// interval, with how many were refused since the last line: a device
// pushing into a full cloud refuses a write a second, and one line a
// minute says it all.
type refusalLog struct {
	log      *slog.Logger
	now      func() time.Time
	interval time.Duration

	mu             sync.Mutex
	logged         time.Time // when the last line was written; zero: never
	writes, points int       // refused since
	last           error     // the latest refusal
}

// note counts a write of n points refused with err (wrapping
// store.ErrDiskFull), and logs when the interval since the last line has
// passed (or none was written yet).
func (l *refusalLog) note(n int, err error) {
	if !errors.Is(err, store.ErrDiskFull) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	l.points += n
	l.last = err
	l.flushLocked(l.now())
}

// flush writes the line of refusals not yet logged once the interval has
// passed; called on a timer, so the last refusals of a burst are logged
// too.
func (l *refusalLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked(l.now())
}

func (l *refusalLog) flushLocked(now time.Time) {
	if l.writes == 0 || !l.logged.IsZero() && now.Sub(l.logged) < l.interval {
		return
	}
	msg := fmt.Sprintf("refused %d writes (%d points): %v", l.writes, l.points, l.last)
	var over time.Duration
	if !l.logged.IsZero() {
		over = now.Sub(l.logged).Round(time.Second)
		msg = fmt.Sprintf("refused %d writes (%d points) in the last %v: %v", l.writes, l.points, over, l.last)
	}
	l.log.Warn(msg, "writes", l.writes, "points", l.points, "in_last", over.String())
	l.logged, l.writes, l.points = now, 0, 0
}
