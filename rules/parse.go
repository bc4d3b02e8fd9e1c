package rules

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
)

// Kind is what a condition tests.
type Kind uint8

// Kinds of condition.
const (
	KindCompare   Kind = iota + 1 // POINT OP VALUE
	KindChanged                   // POINT changed [within D]
	KindUnchanged                 // POINT unchanged D
	KindOffline                   // offline: the node's online point is 0
	KindSchedule                  // schedule DAYS HH:MM-HH:MM [ZONE]
)

// Condition is one condition of a rule. Its text, parsed by
// ParseCondition, is one of:
//
//	[on TARGET] TYPE[.KEY] OP NUMBER      OP: > >= < <= == !=
//	[on TARGET] TYPE[.KEY] == "TEXT"      (or !=) compares the point's text
//	[on TARGET] TYPE[.KEY] changed [within DURATION]   (default: the rule's pacing)
//	[on TARGET] TYPE[.KEY] unchanged DURATION
//	[on TARGET] offline
//	schedule DAYS HH:MM-HH:MM [ZONE]
//
// TARGET is a node ID (the condition is judged on that node only) or a
// node type (only nodes of that type); without one, every node of the
// rule's scope that has the point. KEY defaults to "0". A DURATION is a
// number with a unit: 500ms, 30s, 15m, 2h, 1d. DAYS is "daily" or a list of
// weekdays and ranges (Mon-Fri,Sun); the time range may end the next day
// (22:00-06:00); ZONE is an IANA name (UTC without one).
type Condition struct {
	Name     string
	Kind     Kind
	Node     uuid.UUID // on NODE; uuid.Nil: each node of the scope
	NodeType string    // on TYPE
	Type     string    // the point's type (online for offline)
	Key      string
	Op       string // for KindCompare
	Value    float64
	Text     string
	IsText   bool
	For      time.Duration // changed within / unchanged for
	Sched    Schedule
}

// PerNode reports whether the condition is judged on each node of the
// scope rather than on one named node or the time alone.
func (c *Condition) PerNode() bool { return c.Kind != KindSchedule && c.Node == uuid.Nil }

// Action is one action of a rule. Its text, parsed by ParseAction, is:
//
//	set [NODE] TYPE[.KEY] NUMBER|"TEXT"   write a point (on NODE, else on the instance's node)
//	notify [MESSAGE]                       notify the rule's users (MESSAGE may use {rule} {node} {status} {value})
type Action struct {
	Name    string
	Notify  bool
	Message string
	Node    uuid.UUID // set: the node; uuid.Nil: the instance's node
	Type    string
	Key     string
	Value   float64
	Text    string
	IsText  bool
}

// MaxExpressionLen bounds a condition's or action's text.
const MaxExpressionLen = 1024

var errEmpty = errors.New("empty")

// ParseCondition parses a condition's text (see Condition). The error
// says what is wrong, for a person to fix.
func ParseCondition(s string) (Condition, error) {
	var c Condition
	toks, err := tokens(s)
	if err != nil {
		return c, err
	}
	if len(toks) == 0 {
		return c, fmt.Errorf("condition: %w", errEmpty)
	}
	if toks[0] == "schedule" {
		c.Kind = KindSchedule
		sc, err := ParseSchedule(toks[1:])
		if err != nil {
			return c, fmt.Errorf("condition %q: %w", s, err)
		}
		c.Sched = sc
		return c, nil
	}
	if toks[0] == "on" {
		if len(toks) < 2 {
			return c, fmt.Errorf("condition %q: on what?", s)
		}
		if id, err := uuid.Parse(toks[1]); err == nil {
			c.Node = id
		} else if err := crdt.CheckType(toks[1]); err == nil && !strings.Contains(toks[1], "-") {
			c.NodeType = toks[1]
		} else {
			return c, fmt.Errorf("condition %q: on %q: neither a node ID nor a node type", s, toks[1])
		}
		toks = toks[2:]
	}
	if len(toks) == 1 && toks[0] == "offline" {
		c.Kind, c.Type, c.Key = KindOffline, TypeOnline, crdt.DefaultKey
		return c, nil
	}
	if len(toks) < 2 {
		return c, fmt.Errorf("condition %q: want POINT OP VALUE, POINT changed, POINT unchanged DURATION, offline or schedule", s)
	}
	if c.Type, c.Key, err = ParsePoint(toks[0]); err != nil {
		return c, fmt.Errorf("condition %q: %w", s, err)
	}
	switch op := toks[1]; op {
	case "changed":
		c.Kind = KindChanged
		switch {
		case len(toks) == 2:
		case len(toks) == 4 && toks[2] == "within":
			if c.For, err = ParseDuration(toks[3]); err != nil {
				return c, fmt.Errorf("condition %q: %w", s, err)
			}
		default:
			return c, fmt.Errorf("condition %q: want POINT changed [within DURATION]", s)
		}
	case "unchanged":
		c.Kind = KindUnchanged
		if len(toks) != 3 {
			return c, fmt.Errorf("condition %q: want POINT unchanged DURATION", s)
		}
		if c.For, err = ParseDuration(toks[2]); err != nil {
			return c, fmt.Errorf("condition %q: %w", s, err)
		}
		if c.For <= 0 {
			return c, fmt.Errorf("condition %q: unchanged for no time", s)
		}
	case ">", ">=", "<", "<=", "==", "!=":
		c.Kind, c.Op = KindCompare, op
		if len(toks) != 3 {
			return c, fmt.Errorf("condition %q: want POINT %s VALUE", s, op)
		}
		if c.Text, c.IsText, c.Value, err = parseValue(toks[2]); err != nil {
			return c, fmt.Errorf("condition %q: %w", s, err)
		}
		if c.IsText && op != "==" && op != "!=" {
			return c, fmt.Errorf("condition %q: text compares only with == or !=", s)
		}
	default:
		return c, fmt.Errorf("condition %q: %q: want > >= < <= == != changed or unchanged", s, op)
	}
	return c, nil
}

// ParseAction parses an action's text (see Action).
func ParseAction(s string) (Action, error) {
	var a Action
	toks, err := tokens(s)
	if err != nil {
		return a, err
	}
	if len(toks) == 0 {
		return a, fmt.Errorf("action: %w", errEmpty)
	}
	switch toks[0] {
	case "notify":
		a.Notify = true
		// A quoted token comes with tokens' leading quote mark, which is
		// not part of the message (notify "{node} is offline" says
		// {node} is offline); only a quoted token starts with one.
		words := make([]string, len(toks)-1)
		for i, w := range toks[1:] {
			words[i] = strings.TrimPrefix(w, `"`)
		}
		a.Message = strings.Join(words, " ") // a quoted message keeps its spacing
		return a, nil
	case "set":
		toks = toks[1:]
		if len(toks) == 3 {
			id, err := uuid.Parse(toks[0])
			if err != nil {
				return a, fmt.Errorf("action %q: node %q: %w", s, toks[0], err)
			}
			a.Node = id
			toks = toks[1:]
		}
		if len(toks) != 2 {
			return a, fmt.Errorf("action %q: want set [NODE] TYPE[.KEY] VALUE", s)
		}
		if a.Type, a.Key, err = ParsePoint(toks[0]); err != nil {
			return a, fmt.Errorf("action %q: %w", s, err)
		}
		if a.Text, a.IsText, a.Value, err = parseValue(toks[1]); err != nil {
			return a, fmt.Errorf("action %q: %w", s, err)
		}
		if crdt.IsCredential(a.Type) || a.Type == crdt.TypeEdge || a.Type == crdt.TypeRole || a.Type == crdt.TypeNodeType {
			return a, fmt.Errorf("action %q: a rule may not write %s points", s, a.Type)
		}
		return a, nil
	}
	return a, fmt.Errorf("action %q: want set ... or notify ...", s)
}

// ParsePoint parses TYPE[.KEY]: the type is what precedes the first dot.
func ParsePoint(s string) (typ, key string, err error) {
	typ, key, _ = strings.Cut(s, ".")
	if key == "" {
		key = crdt.DefaultKey
	}
	if err := crdt.CheckType(typ); err != nil {
		return "", "", fmt.Errorf("point %q: %w", s, err)
	}
	if err := crdt.CheckKey(key); err != nil {
		return "", "", fmt.Errorf("point %q: %w", s, err)
	}
	return typ, key, nil
}

// parseValue parses a number or a double-quoted text (already unquoted
// by tokens, which marks it with a leading quote).
func parseValue(s string) (text string, isText bool, v float64, err error) {
	if t, ok := strings.CutPrefix(s, `"`); ok {
		return t, true, 0, nil
	}
	if v, err = strconv.ParseFloat(s, 64); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return "", false, 0, fmt.Errorf("value %q: want a finite number or a \"text\"", s)
	}
	return "", false, v, nil
}

// tokens splits s at spaces; a double-quoted part is one token, returned
// with one leading quote (and no closing one) so parseValue knows it was
// text. Backslash escapes a quote or backslash inside quotes.
func tokens(s string) ([]string, error) {
	if len(s) > MaxExpressionLen {
		return nil, fmt.Errorf("%d bytes: at most %d", len(s), MaxExpressionLen)
	}
	var out []string
	for i := 0; i < len(s); {
		r := rune(s[i])
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '"':
			var b strings.Builder
			b.WriteByte('"')
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("%q: unterminated quote", s)
			}
			out = append(out, b.String())
			i = j + 1
		default:
			j := i
			for j < len(s) && !unicode.IsSpace(rune(s[j])) {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out, nil
}

// ParseDuration parses a Go duration or a whole number of days ("1d").
func ParseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("duration %q: want a number of days from 0 to 3650", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want e.g. 30s, 15m, 2h or 1d", s)
	}
	return d, nil
}
