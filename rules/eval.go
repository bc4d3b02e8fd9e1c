package rules

import (
	"strconv"
	"strings"
	"time"

	"github.com/siot-io/siot/crdt"
)

// Reading is what a condition is judged on: the current point of its
// register on one node (nil when there is none) and when that register's
// value last changed (zero when unknown: a register never seen to change
// counts from its point's time).
type Reading struct {
	Point     *crdt.Point
	ChangedAt time.Time
}

// changedAt is when the reading's value last changed.
func (r Reading) changedAt() time.Time {
	if !r.ChangedAt.IsZero() {
		return r.ChangedAt
	}
	if r.Point != nil {
		return r.Point.Time.Time()
	}
	return time.Time{}
}

// Holds judges the condition on a reading at time now. It returns whether
// it holds and, when the answer changes with time alone, when it next
// does (the zero time otherwise: only a new point changes it).
func (c *Condition) Holds(r Reading, now time.Time) (holds bool, next time.Time) {
	p := r.Point
	live := p != nil && !p.Tombstone
	switch c.Kind {
	case KindSchedule:
		return c.Sched.In(now), c.Sched.Next(now)
	case KindOffline:
		return live && p.Value == 0, time.Time{}
	case KindCompare:
		if !live {
			return false, time.Time{}
		}
		if c.IsText {
			return (p.Text == c.Text) == (c.Op == "=="), time.Time{}
		}
		return compare(p.Value, c.Op, c.Value), time.Time{}
	case KindChanged:
		// Only a change seen counts: a replica that starts does not
		// take every recent point for one.
		if r.ChangedAt.IsZero() {
			return false, time.Time{}
		}
		end := r.ChangedAt.Add(max(c.For, time.Second))
		if now.Before(end) {
			return true, end
		}
		return false, time.Time{}
	case KindUnchanged:
		if !live {
			return false, time.Time{}
		}
		end := r.changedAt().Add(c.For)
		if now.Before(end) {
			return false, end
		}
		return true, time.Time{}
	}
	return false, time.Time{}
}

func compare(v float64, op string, w float64) bool {
	switch op {
	case ">":
		return v > w
	case ">=":
		return v >= w
	case "<":
		return v < w
	case "<=":
		return v <= w
	case "==":
		return v == w
	case "!=":
		return v != w
	}
	return false
}

// Instance is the state of a rule for one subject node.
type Instance struct {
	Active  bool
	Changed time.Time // when Active last changed; zero: never
	// Holding is since when the conditions have held without a break
	// (zero: they do not hold); it is not kept as a point, so a replica
	// that starts counts from what it sees.
	Holding time.Time
}

// Step moves an instance given whether its conditions hold at now and, if
// they do, since when (the time of the change that made them hold, no
// later than now). It returns the new instance, whether Active changed
// (the caller then runs the rule's actions) and, when a change is due
// later (the minimum active time or the pacing has not passed), when to
// call again.
//
// The instance becomes active once the conditions have held for
// MinActive, and inactive as soon as they stop; either change waits until
// Pacing has passed since the last one, so a flapping point moves the
// instance at most once per Pacing.
func Step(r *Rule, in Instance, holds bool, since, now time.Time) (out Instance, changed bool, wake time.Time) {
	out = in
	if !holds {
		out.Holding = time.Time{}
	} else if out.Holding.IsZero() {
		out.Holding = since
		if since.IsZero() || since.After(now) {
			out.Holding = now
		}
	}
	if holds == in.Active {
		return out, false, time.Time{}
	}
	ready := now
	if holds {
		ready = later(ready, out.Holding.Add(r.MinActive))
	}
	if !in.Changed.IsZero() {
		ready = later(ready, in.Changed.Add(r.Pacing))
	}
	if now.Before(ready) {
		return out, false, ready
	}
	out.Active, out.Changed = holds, now
	return out, true, time.Time{}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Render fills a notify action's message: {rule}, {node}, {status} and
// {value} are replaced; an empty message gets a default one.
func Render(msg, rule, node, status string, value *crdt.Point) string {
	if msg == "" {
		msg = "{rule}: {node} {status}"
	}
	v := ""
	if value != nil {
		if value.Text != "" {
			v = value.Text
		} else {
			v = strconv.FormatFloat(value.Value, 'g', -1, 64)
		}
	}
	return strings.NewReplacer("{rule}", rule, "{node}", node, "{status}", status, "{value}", v).Replace(msg)
}
