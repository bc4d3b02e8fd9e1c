package replica

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/siot-io/siot/transport"
)

// Logging: a link logs its connect, its disconnect, the backlog it sent on
// resume and each repair round that fixed something, once each and with
// their figures; nothing is logged per point, and a link that stays down
// (an edge offline for days, a detached device retrying) logs once, then a
// reminder every downRemind, not every retry.

// downRemind is how often a link that stays down is logged again.
const downRemind = 10 * time.Minute

// downLog tracks a dialed link's failed attempts for its logs. Owned by
// the link's run goroutine.
type downLog struct {
	since    time.Time // when the link went down, or first failed; zero while up
	attempts int       // failed attempts since
	warned   time.Time // the last warning
}

// ended logs the end of a session attempt: a session that was up (it
// moved bytes) at warn with its figures; a failed attempt at warn the
// first time, then at debug with a reminder every downRemind.
func (l *downLog) ended(d *dialLink, err error, started time.Time, before, after transport.LinkStatus) {
	log, now := d.r.log, time.Now()
	if after.BytesSent > before.BytesSent && isGoodbye(err) { // the remote closed it cleanly
		log.Info("link closed by remote", "url", d.shown, "role", d.role, "reason", err, "up", now.Sub(started).Round(time.Millisecond),
			"bytes_sent", after.BytesSent-before.BytesSent, "bytes_recv", after.BytesRecv-before.BytesRecv)
		*l = downLog{since: now, warned: now}
		return
	}
	if after.BytesSent > before.BytesSent { // the session was up
		log.Warn("link down", "url", d.shown, "role", d.role, "err", err, "up", now.Sub(started).Round(time.Millisecond),
			"bytes_sent", after.BytesSent-before.BytesSent, "bytes_recv", after.BytesRecv-before.BytesRecv)
		*l = downLog{since: now, warned: now}
		return
	}
	l.attempts++
	switch {
	case l.since.IsZero():
		l.since, l.warned = now, now
		log.Warn("link cannot connect", "url", d.shown, "role", d.role, "err", err)
	case now.Sub(l.warned) >= downRemind:
		l.warned = now
		log.Warn("link still down", "url", d.shown, "role", d.role, "err", err, "attempts", l.attempts,
			"down_for", now.Sub(l.since).Round(time.Second))
	default:
		log.Debug("link attempt failed", "url", d.shown, "role", d.role, "err", err, "attempts", l.attempts)
	}
}

// up returns the log attributes of a link that came up: how long it was
// down and how many attempts failed meanwhile.
func (l *downLog) up() []any {
	if l.since.IsZero() {
		return nil
	}
	attrs := []any{"down_for", time.Since(l.since).Round(time.Millisecond), "attempts", l.attempts}
	*l = downLog{}
	return attrs
}

// resumeLog logs once, when a session's sender first catches up, what it
// sent to get there: the resume after a reconnect. Owned by the sender.
type resumeLog struct {
	s               *session
	start           time.Time
	from            uint64
	bytes0, points0 uint64
	done            bool
}

func newResumeLog(s *session, from uint64) *resumeLog {
	return &resumeLog{s: s, start: time.Now(), from: from, bytes0: s.bytesSent.Load(), points0: s.pointsSent.Load()}
}

// check logs once the sender is caught up with everything through acked.
func (l *resumeLog) check(caughtUp bool, acked uint64) {
	if l.done || !caughtUp {
		return
	}
	l.done = true
	points := l.s.pointsSent.Load() - l.points0
	level := slog.LevelInfo
	if points == 0 {
		level = slog.LevelDebug // nothing was missing
	}
	l.s.r.log.Log(context.Background(), level, "link caught up", "remote", l.s.remote, "role", l.s.role,
		"changes", acked-l.from, "points", points, "bytes", l.s.bytesSent.Load()-l.bytes0,
		"took", time.Since(l.start).Round(time.Millisecond))
}

// limiter lets a repeated log line through once per interval and key,
// counting what it held back. Safe for concurrent use.
type limiter struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// allow reports whether the line keyed key may be logged now, and how
// many were held back since the last one.
func (l *limiter) allow(key string, every time.Duration) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.last == nil {
		l.last, l.held = make(map[string]time.Time), make(map[string]int)
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < every {
		l.held[key]++
		return false, 0
	}
	if len(l.last) > 1024 { // forget old keys
		for k, t := range l.last {
			if now.Sub(t) >= every {
				delete(l.last, k)
				delete(l.held, k)
			}
		}
	}
	held := l.held[key]
	l.last[key], l.held[key] = now, 0
	return true, held
}
