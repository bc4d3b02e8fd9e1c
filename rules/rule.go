// Package rules is the pure core of siot's rules: what a rule node's points
// say (its conditions, actions, timing and state), how one condition is
// judged against a point, and how one instance of a rule moves between
// inactive and active. It does no I/O and reads no clock: the replica
// feeds it points and the time (replica/rules.go), and writes what it
// decides. docs/design.md, "Rules and notifications", is the overview.
//
// A rule is a node of type "rule" whose points are:
//
//	description          text: its name
//	condition.NAME       text: a condition (ParseCondition)
//	match                text: "all" (default) or "any" of the conditions
//	action.NAME          text: run when an instance becomes active (ParseAction)
//	actionClear.NAME     text: run when an instance becomes inactive
//	minActive            seconds the conditions must hold before it becomes active (0)
//	pacing               least seconds between two changes of one instance's state (60)
//	disabled             1: the rule is off
//
// and the state its running instance writes:
//
//	state.SUBJECT        1 active, 0 inactive, per subject node (point time: the change)
//	fired.SUBJECT        Unix ms of the subject's last activation
//	ruleError.TYPE.NAME  text: why condition.NAME (action.NAME, ...) is ignored
//	delivery.KEY         text (JSON): the newest notification of KEY, as its change made it
//	deliveryStatus.KEY   text (JSON): where that notification's delivery stands (replica/notify.go)
package rules

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// Node types with a meaning to rules.
const (
	NodeTypeRule = "rule"
	NodeTypeUser = "user"
)

// Point types of a rule node.
const (
	TypeCondition   = "condition"
	TypeMatch       = "match"
	TypeAction      = "action"
	TypeActionClear = "actionClear"
	TypeMinActive   = "minActive"
	TypePacing      = "pacing"
	TypeDisabled    = "disabled"
	TypeState       = "state"
	TypeFired       = "fired"
	TypeError       = "ruleError"
	TypeDelivery    = "delivery"
	// TypeDeliveryStatus: where the delivery of the same key stands
	// (sent, failed, retrying, its sender); beside the delivery point so
	// that no outcome ever replaces a newer notification.
	TypeDeliveryStatus = "deliveryStatus"
)

// IsDeliveryType reports whether typ is a notification's record
// (delivery, deliveryStatus): written by the instances that run the rule,
// never by a user.
func IsDeliveryType(typ string) bool {
	return typ == TypeDelivery || typ == TypeDeliveryStatus
}

// Point types of a device node, kept by the upstream it links to
// (replica/devicestate.go).
const (
	// TypeOnline: 1 while the device is linked or was seen within its
	// offlineAfter, 0 once it has not been.
	TypeOnline = "online"
	// TypeLastSeen: Unix ms the device was last seen, written when its
	// link comes up, and when it ends unless the device is back soon.
	TypeLastSeen = "lastSeen"
	// TypeLinkedVia: the instance ID (text) of the upstream holding the
	// device's link; tombstoned when the link ends.
	TypeLinkedVia = "linkedVia"
	// TypeOfflineAfter: seconds a device may go unseen before it is
	// offline (DefaultOfflineAfter without one).
	TypeOfflineAfter = "offlineAfter"
)

// Point types of a user node: the channels that user opted in to.
const (
	TypeNotifyWebhook = "notifyWebhook" // text: an http(s) URL that receives a JSON POST per notification
	TypeNotifyEmail   = "notifyEmail"   // text: an email address
	// crdt.TypeWebhookSecret (secret): signs the webhook's body.
)

// Point types of an instance's root node: the SMTP server its
// notifications are mailed through.
const (
	TypeSMTPServer = "smtpServer" // text: host:port
	TypeSMTPFrom   = "smtpFrom"   // text: the sender address
	TypeSMTPUser   = "smtpUser"   // text: the AUTH user; none: no AUTH
	TypeSMTPTLS    = "smtpTLS"    // text: "starttls" (default), "tls" or "none"
	// crdt.TypeSMTPPassword (secret): the AUTH password.
)

// Defaults of a rule's timing and a device's offline delay.
const (
	DefaultPacing       = time.Minute
	DefaultOfflineAfter = 15 * time.Minute
	// MaxConditions and MaxActions bound one rule: what one change costs
	// to judge is bounded.
	MaxConditions = 16
	MaxActions    = 16
)

// Rule is what a rule node's points say.
type Rule struct {
	ID          uuid.UUID
	Description string
	Conditions  []Condition // by name
	Actions     []Action    // run on activation, by name
	Clear       []Action    // run on clearing, by name
	Any         bool        // any condition (else all)
	MinActive   time.Duration
	Pacing      time.Duration
	Disabled    bool
	// Errors says, by TYPE.NAME (condition.1, action.2), why a condition
	// or an action is ignored (and by match, condition or action for the
	// whole rule); a
	// rule with a bad condition is judged on none (it would fire on a
	// part of what its author meant).
	Errors map[string]string
}

// Valid reports whether the rule has conditions and none is broken.
func (r *Rule) Valid() bool {
	if len(r.Conditions) == 0 {
		return false
	}
	// More than MaxConditions: those past it are dropped, and judging the
	// rest would fire on a part of what the author meant (this used to
	// be valid).
	if _, many := r.Errors[TypeCondition]; many {
		return false
	}
	for _, c := range r.Conditions {
		if _, bad := r.Errors[TypeCondition+"."+c.Name]; bad {
			return false
		}
	}
	return true
}

// Types returns the point types the rule's conditions read, each once.
func (r *Rule) Types() []string {
	var ts []string
	for _, c := range r.Conditions {
		if c.Type != "" && !slices.Contains(ts, c.Type) {
			ts = append(ts, c.Type)
		}
	}
	return ts
}

// PerNode reports whether some condition is judged on each node of the
// scope (it names no node): the rule then has an instance per node.
func (r *Rule) PerNode() bool {
	for _, c := range r.Conditions {
		if c.PerNode() {
			return true
		}
	}
	return false
}

// FromPoints reads a rule from its node's points (any order; tombstones
// and other types are ignored).
func FromPoints(id uuid.UUID, pts []crdt.Point) Rule {
	r := Rule{ID: id, Pacing: DefaultPacing, Errors: map[string]string{}}
	for i := range pts {
		p := &pts[i]
		if p.Tombstone || p.IsEdge() {
			continue
		}
		switch p.Type {
		case "description":
			r.Description = p.Text
		case TypeCondition:
			c, err := ParseCondition(p.Text)
			c.Name = p.Key
			if err != nil {
				r.Errors[p.Type+"."+p.Key] = err.Error()
			}
			r.Conditions = append(r.Conditions, c)
		case TypeAction, TypeActionClear:
			a, err := ParseAction(p.Text)
			a.Name = p.Key
			if err != nil {
				r.Errors[p.Type+"."+p.Key] = err.Error()
				continue
			}
			if p.Type == TypeAction {
				r.Actions = append(r.Actions, a)
			} else {
				r.Clear = append(r.Clear, a)
			}
		case TypeMatch:
			r.Any = p.Text == "any"
			if p.Text != "any" && p.Text != "all" && p.Text != "" {
				r.Errors[TypeMatch] = fmt.Sprintf("match %q: want all or any", p.Text)
			}
		case TypeMinActive:
			r.MinActive = seconds(p.Value)
		case TypePacing:
			r.Pacing = seconds(p.Value)
		case TypeDisabled:
			r.Disabled = p.Value != 0
		}
	}
	for i := range r.Conditions {
		if c := &r.Conditions[i]; c.Kind == KindChanged && c.For == 0 {
			c.For = r.Pacing
		}
	}
	byName := func(a, b Condition) int { return cmp.Compare(a.Name, b.Name) }
	slices.SortFunc(r.Conditions, byName)
	slices.SortFunc(r.Actions, func(a, b Action) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Clear, func(a, b Action) int { return cmp.Compare(a.Name, b.Name) })
	if len(r.Conditions) > MaxConditions {
		r.Errors[TypeCondition] = fmt.Sprintf("%d conditions: at most %d", len(r.Conditions), MaxConditions)
		r.Conditions = r.Conditions[:MaxConditions]
	}
	if len(r.Actions)+len(r.Clear) > MaxActions {
		r.Errors[TypeAction] = fmt.Sprintf("%d actions: at most %d", len(r.Actions)+len(r.Clear), MaxActions)
		r.Actions, r.Clear = nil, nil
	}
	return r
}

// seconds converts a point's value in seconds to a duration, clamped to
// [0, 10 years].
func seconds(v float64) time.Duration {
	const most = 10 * 365 * 24 * time.Hour
	switch {
	case !(v > 0): // also NaN
		return 0
	case v >= most.Seconds():
		return most
	}
	return time.Duration(v * float64(time.Second))
}

// IsRuleType reports whether points of type typ define a rule (a change
// to one makes the engine read the rule again); state points do not.
func IsRuleType(typ string) bool {
	switch typ {
	case TypeCondition, TypeMatch, TypeAction, TypeActionClear, TypeMinActive, TypePacing, TypeDisabled, "description":
		return true
	}
	return false
}
