package bus

import (
	"math/rand/v2"
	"strings"
	"sync"
)

// sub is one subscription of one client.
type sub struct {
	c       *client
	subject string
	queue   string // "" outside a queue group
	sid     string
	// max is the number of messages after which the subscription ends
	// (UNSUB sid max); zero: no limit. max and delivered are guarded by
	// c.mu.
	max, delivered uint64
}

// sublist is the subscription index: a tree with one level per subject
// token, where "*" and ">" are tokens of their own. It is safe for
// concurrent use.
type sublist struct {
	mu   sync.RWMutex
	root level
}

type level map[string]*node

type node struct {
	next   level
	plain  map[*sub]struct{}
	queues map[string]map[*sub]struct{}
}

func (n *node) empty() bool { return len(n.next) == 0 && len(n.plain) == 0 && len(n.queues) == 0 }

// insert adds s under s.subject, which must be a valid subscription
// subject (validSubject).
func (l *sublist) insert(s *sub) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.root == nil {
		l.root = level{}
	}
	lv := l.root
	var n *node
	for tok := range strings.SplitSeq(s.subject, ".") {
		if lv == nil {
			lv = level{}
			n.next = lv
		}
		n = lv[tok]
		if n == nil {
			n = &node{}
			lv[tok] = n
		}
		lv = n.next
	}
	if s.queue == "" {
		if n.plain == nil {
			n.plain = map[*sub]struct{}{}
		}
		n.plain[s] = struct{}{}
		return
	}
	if n.queues == nil {
		n.queues = map[string]map[*sub]struct{}{}
	}
	q := n.queues[s.queue]
	if q == nil {
		q = map[*sub]struct{}{}
		n.queues[s.queue] = q
	}
	q[s] = struct{}{}
}

// remove deletes s, if present, and the tree nodes left empty.
func (l *sublist) remove(s *sub) {
	l.mu.Lock()
	defer l.mu.Unlock()
	toks := strings.Split(s.subject, ".")
	removeAt(l.root, toks, s)
}

// removeAt removes s below lv, at the path toks, and prunes the nodes it
// leaves empty.
func removeAt(lv level, toks []string, s *sub) {
	n := lv[toks[0]]
	if n == nil {
		return
	}
	if len(toks) == 1 {
		if s.queue == "" {
			delete(n.plain, s)
		} else if q := n.queues[s.queue]; q != nil {
			delete(q, s)
			if len(q) == 0 {
				delete(n.queues, s.queue)
			}
		}
	} else {
		removeAt(n.next, toks[1:], s)
	}
	if n.empty() {
		delete(lv, toks[0])
	}
}

// match returns the subscriptions a message on subject (a valid publish
// subject: no wildcards) goes to: every plain one, and one member of each
// queue group, picked at random. skip, when not nil, is left out (a
// client that does not want its own messages echoed).
func (l *sublist) match(subject string, skip *client) []*sub {
	toks := strings.Split(subject, ".")
	var out []*sub
	groups := map[string][]*sub{}
	l.mu.RLock()
	matchLevel(l.root, toks, func(n *node) {
		for s := range n.plain {
			if s.c != skip {
				out = append(out, s)
			}
		}
		for q, members := range n.queues {
			for s := range members {
				if s.c != skip {
					groups[q] = append(groups[q], s)
				}
			}
		}
	})
	l.mu.RUnlock()
	for _, members := range groups {
		out = append(out, members[rand.IntN(len(members))])
	}
	return out
}

// matchLevel calls f with every node below lv whose pattern matches toks.
// A node is reached by one path only, so f sees each node at most once.
func matchLevel(lv level, toks []string, f func(*node)) {
	if lv == nil {
		return
	}
	if n := lv[">"]; n != nil {
		f(n)
	}
	for _, key := range [2]string{"*", toks[0]} {
		n := lv[key]
		if n == nil {
			continue
		}
		if len(toks) == 1 {
			f(n)
		} else {
			matchLevel(n.next, toks[1:], f)
		}
	}
}

// matchSubject reports whether the literal subject matches pattern.
func matchSubject(pattern, subject string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ".")
		s, srest, smore := strings.Cut(subject, ".")
		switch {
		case p == ">":
			return true
		case p != "*" && p != s:
			return false
		case !pmore || !smore:
			return pmore == smore
		}
		pattern, subject = prest, srest
	}
}

// subsetOf reports whether every subject sub (a subscription subject,
// wildcards allowed) matches also matches pattern.
func subsetOf(sub, pattern string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ".")
		s, srest, smore := strings.Cut(sub, ".")
		switch {
		case p == ">":
			return true
		case s == ">":
			return false // matches more tokens than p can
		case p == "*":
		case s != p: // a literal p: s must be the same literal, not *
			return false
		}
		if !pmore || !smore {
			return pmore == smore
		}
		pattern, sub = prest, srest
	}
}

// validSubject reports whether subject is a well-formed subject: tokens
// separated by dots, none empty. With wild, "*" tokens and a final ">" are
// allowed (a subscription); without, no token may be either (a publish).
func validSubject(subject string, wild bool) bool {
	if subject == "" {
		return false
	}
	for {
		tok, rest, more := strings.Cut(subject, ".")
		switch {
		case tok == "":
			return false
		case tok == "*" || tok == ">":
			if !wild || tok == ">" && more {
				return false
			}
		}
		if !more {
			return true
		}
		subject = rest
	}
}
