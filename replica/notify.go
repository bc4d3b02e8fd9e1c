package replica

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/notify"
	"github.com/siot-io/siot/rules"
)

// Notifications (docs/design.md, "Exactly once across redundant clouds").
//
// A rule's notify action becomes, in the batch that records the rule's
// change, one claim per recipient and channel: a delivery point on the
// rule node, keyed by subject, user, channel and action, whose text is a
// claimRecord (JSON). It holds the whole message, names the instance that
// sends it ("by"), and has an ID made from the rule, the key and the
// change's time: the same on every replica, and across retries. Only a
// rule's change writes a claim, so the register always holds the newest
// firing of its key.
//
// Where a claim's delivery stands is a second register beside it, the
// deliveryStatus point of the same key (an outcomeRecord): the claim's
// ID, status, sender, attempts, next try, last error. It applies only
// while its ID is the claim's: a claim with no outcome of its own is
// pending, by its claimer. So an outcome or a takeover, whenever it lands
// and whoever wrote it, never replaces a newer firing's claim: at worst
// it is an outcome of an older claim, which every replica ignores.
//
// The sender waits until every linked peer acknowledges the batch, so a
// peer that takes over holds the claim; then sends, and writes "sent", or
// the attempt and the next one's time, or "failed" (a permanent error, or
// notify.GiveUpAfter of trying). A delivery pending by an instance that
// is not linked any more is taken over by the rule's owner: it writes an
// outcome naming itself, then sends with the same ID. The one case that
// sends twice is a sender that dies after the receiver got the message
// and before its peers got "sent": the second carries the same ID
// (Idempotency-Key), which a receiver dedups on.

// Delivery statuses.
const (
	deliveryPending = "pending"
	deliverySent    = "sent"
	deliveryFailed  = "failed"
)

// Channels of a delivery.
const (
	channelWebhook = "webhook"
	channelEmail   = "email"
)

// claimRecord is the text of a delivery point: one notification, as the
// rule's change made it.
type claimRecord struct {
	ID      string    `json:"id"`
	Event   string    `json:"event"` // firing or resolved
	User    uuid.UUID `json:"user"`
	Channel string    `json:"channel"`
	By      uuid.UUID `json:"by"`      // the instance that sends it, unless an outcome says otherwise
	Created int64     `json:"created"` // Unix ms of the rule's change
	Message msgRecord `json:"message"`
}

// outcomeRecord is the text of a deliveryStatus point: where the delivery
// of claim ID stands.
type outcomeRecord struct {
	ID       string    `json:"id"`
	Status   string    `json:"status"`
	By       uuid.UUID `json:"by"`
	Attempts int       `json:"attempts"`
	Next     int64     `json:"next,omitempty"` // Unix ms of the next attempt
	Sent     int64     `json:"sent,omitempty"` // Unix ms it was delivered
	Error    string    `json:"error,omitempty"`
}

// deliveryState returns where claim c's delivery stands: outcome o when
// it is c's (ok: there is one), else pending by its claimer, due at once.
func deliveryState(c claimRecord, o outcomeRecord, ok bool) outcomeRecord {
	if ok && o.ID == c.ID {
		return o
	}
	return outcomeRecord{ID: c.ID, Status: deliveryPending, By: c.By, Next: c.Created}
}

// msgRecord is the message as kept in a claim.
type msgRecord struct {
	RuleName string      `json:"ruleName,omitempty"`
	Node     uuid.UUID   `json:"node"`
	NodeName string      `json:"nodeName,omitempty"`
	Text     string      `json:"text"`
	Values   []valRecord `json:"values,omitempty"`
}

type valRecord struct {
	Node  uuid.UUID `json:"node"`
	Type  string    `json:"type"`
	Key   string    `json:"key"`
	Value float64   `json:"value"`
	Text  string    `json:"text,omitempty"`
}

// delivKey names a delivery: its rule and the key of its two points.
type delivKey struct {
	rule uuid.UUID
	key  string
}

// delivery is a pending delivery as the notifier holds it.
type delivery struct {
	claim claimRecord
	out   outcomeRecord // where it stands (deliveryState)
	seq   uint64        // the last local change of its points (0: read at start)
	seen  time.Time     // when its claim or sender last changed (engine clock)
}

type sendJob struct {
	key   delivKey
	claim claimRecord
}

type sendResult struct {
	key delivKey
	id  string
	err error
}

// finishedOutcome is a final outcome this instance wrote, and when.
type finishedOutcome struct {
	o  outcomeRecord
	at time.Time
}

// finishedKeep is how long a final outcome is remembered, so that an
// older claim's outcome landing after it (within a push's latency: a
// peer's write that crossed this one's claim) is repaired, not resent.
const finishedKeep = 10 * time.Minute

// senders is how many notifications are sent at once.
const senders = 4

// notifier sends the pending deliveries this instance owns. Its maps are
// owned by the engine's goroutine; the senders only send.
type notifier struct {
	e        *ruleEngine
	pending  map[delivKey]*delivery
	inflight map[delivKey]bool
	// finished holds the final outcomes (sent, failed) this instance
	// wrote in the last finishedKeep, and repair those to write again:
	// an outcome of an older claim replaced one in the register, or the
	// store refused it.
	finished  map[delivKey]finishedOutcome
	repair    map[delivKey]outcomeRecord
	repairAt  time.Time // the next try at writing repair (engine clock)
	prunedAt  time.Time
	forgotten map[delivKey]uint64 // seq of pending deliveries a rule's reload dropped, until read back
	jobs      chan sendJob
	results   chan sendResult
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

func newNotifier(e *ruleEngine) *notifier {
	n := &notifier{e: e, pending: map[delivKey]*delivery{}, inflight: map[delivKey]bool{},
		finished: map[delivKey]finishedOutcome{}, repair: map[delivKey]outcomeRecord{}, forgotten: map[delivKey]uint64{},
		jobs: make(chan sendJob, senders), results: make(chan sendResult, senders)}
	n.ctx, n.cancel = context.WithCancel(e.r.ctx)
	for range senders {
		n.wg.Go(n.sendLoop)
	}
	return n
}

// stop ends the senders (an attempt under way is cancelled) and waits.
func (n *notifier) stop() {
	n.cancel()
	n.wg.Wait()
}

func (n *notifier) sendLoop() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case j := <-n.jobs:
			err := n.send(j.key.rule, j.claim)
			select {
			case n.results <- sendResult{key: j.key, id: j.claim.ID, err: err}:
			case <-n.ctx.Done():
				return
			}
		}
	}
}

// saw takes a change of a delivery or deliveryStatus point of a rule
// this instance runs into account (seq: the local change; 0 at start).
// It reads both registers back from the store, which may be newer than
// the change. Only points written by this instance or a peer (their
// origin) count: a user who may write the rule node, or an edge below
// it, could write a claim that names any recipient and says anything, or
// an outcome that silences or repeats one.
func (n *notifier) saw(rule uuid.UUID, p *crdt.Point, seq uint64) {
	k := delivKey{rule, p.Key}
	if !n.trusted(p) {
		if ok, _ := n.e.r.logLimit.allow("delivery origin", time.Minute); ok {
			n.e.r.log.Warn("notify: a delivery point not written by this instance or a peer is ignored", "rule", rule, "type", p.Type, "key", p.Key, "origin", p.Origin)
		}
		if p.Type == rules.TypeDeliveryStatus {
			return // the claim, and what was known of it, stand
		}
	}
	c, ok := n.claim(k)
	if !ok {
		delete(n.pending, k)
		delete(n.finished, k)
		return
	}
	o, ook := n.outcome(k)
	if f, done := n.finished[k]; done {
		switch {
		case f.o.ID != c.ID:
			delete(n.finished, k) // a newer claim
		case !ook || o.ID != c.ID:
			// Sent (or given up) here, and an older claim's outcome
			// replaced that in the register: written again, not resent.
			n.repair[k] = f.o
			delete(n.pending, k)
			return
		}
	}
	d := n.pending[k]
	st := deliveryState(c, o, ook)
	if (!ook || o.ID != c.ID) && d != nil && d.claim.ID == c.ID {
		st = d.out // an older claim's outcome landed last: what was known of this one stands
	}
	if st.Status != deliveryPending {
		delete(n.pending, k)
		return
	}
	if d == nil || d.claim.ID != c.ID || d.out.By != st.By {
		d = &delivery{seen: n.e.now(), seq: n.forgotten[k]}
		n.pending[k] = d
	}
	d.claim, d.out = c, st
	if seq > d.seq {
		d.seq = seq
	}
}

// trusted reports whether point p was written by this instance or a peer.
func (n *notifier) trusted(p *crdt.Point) bool {
	return p.Origin == n.e.self || n.e.r.links.isPeer(p.Origin)
}

// claim reads delivery k's claim from the store (ok false: none, a
// tombstone, unreadable, or not written by this instance or a peer).
func (n *notifier) claim(k delivKey) (claimRecord, bool) {
	var c claimRecord
	p, ok, err := n.e.r.st.Get(crdt.Register{Node: k.rule, Type: rules.TypeDelivery, Key: k.key})
	if err != nil || !ok || p.Tombstone || !n.trusted(&p) || json.Unmarshal([]byte(p.Text), &c) != nil || c.ID == "" {
		return claimRecord{}, false
	}
	return c, true
}

// outcome reads delivery k's outcome from the store (ok false: as for
// claim).
func (n *notifier) outcome(k delivKey) (outcomeRecord, bool) {
	var o outcomeRecord
	p, ok, err := n.e.r.st.Get(crdt.Register{Node: k.rule, Type: rules.TypeDeliveryStatus, Key: k.key})
	if err != nil || !ok || p.Tombstone || !n.trusted(&p) || json.Unmarshal([]byte(p.Text), &o) != nil {
		return outcomeRecord{}, false
	}
	return o, true
}

// forget drops the pending deliveries of a rule read again or gone (a
// rule still held and run here is read back with its records).
func (n *notifier) forget(rule uuid.UUID) {
	for k, d := range n.pending {
		if k.rule == rule && !n.inflight[k] {
			delete(n.pending, k)
			// Read back with the rule, the claim still waits for the
			// change the peers must hold.
			n.forgotten[k] = d.seq
		}
	}
}

// records builds the claims (delivery points) of notify action a for
// subject s of rule rr, changed at t.
func (n *notifier) records(rr *ruleRun, s uuid.UUID, active bool, a rules.Action, t crdt.Timestamp) []crdt.Point {
	e := n.e
	event, status := "firing", "FIRING"
	if !active {
		event, status = "resolved", "RESOLVED"
	}
	nodeName := e.description(s)
	shown := nodeName
	if shown == "" {
		shown = s.String()
	}
	msg := msgRecord{RuleName: rr.rule.Description, Node: s, NodeName: nodeName}
	var first *crdt.Point
	for i := range rr.rule.Conditions {
		c := &rr.rule.Conditions[i]
		if c.Kind == rules.KindSchedule {
			continue
		}
		target := c.Node
		if target == uuid.Nil {
			target = s
		}
		p, ok, err := e.r.st.Get(crdt.Register{Node: target, Type: c.Type, Key: c.Key})
		if err != nil || !ok || p.Tombstone {
			continue
		}
		if first == nil {
			first = &p
		}
		msg.Values = append(msg.Values, valRecord{Node: target, Type: p.Type, Key: p.Key, Value: p.Value, Text: truncateText(p.Text, 256)})
	}
	ruleName := rr.rule.Description
	if ruleName == "" {
		ruleName = rr.rule.ID.String()
	}
	msg.Text = rules.Render(a.Message, ruleName, shown, status, first)
	var pts []crdt.Point
	action := a.Name
	if !active {
		// Its own key: a clearing never replaces its firing's
		// notification that is not sent yet.
		action = "clear." + a.Name
	}
	for _, rc := range e.recipients(rr.rule.ID) {
		key := deliveryKey(s, rc.user, rc.channel, action)
		id := deliveryID(rr.rule.ID, key, t)
		c := claimRecord{ID: id, Event: event, User: rc.user, Channel: rc.channel,
			By: e.self, Created: t.Physical(), Message: msg}
		b, err := json.Marshal(c)
		if err != nil || len(b) > crdt.MaxTextLen {
			continue
		}
		pts = append(pts, crdt.Point{Node: rr.rule.ID, Type: rules.TypeDelivery, Key: key, Text: string(b), Time: t})
	}
	return pts
}

// deliveryKey is the key of a delivery's two points: subject, user,
// channel and action; a key longer than a point's is shortened with a
// hash.
func deliveryKey(s, user uuid.UUID, channel, action string) string {
	k := s.String() + "." + user.String() + "." + channel + "." + action
	if len(k) <= crdt.MaxKeyLen && crdt.CheckKey(k) == nil {
		return k
	}
	h := sha256.Sum256([]byte(action))
	return s.String() + "." + user.String() + "." + channel + "." + hex.EncodeToString(h[:8])
}

// deliveryID is a notification's ID: the same on every replica for one
// change of one instance, and across retries.
func deliveryID(rule uuid.UUID, key string, t crdt.Timestamp) string {
	h := sha256.New()
	h.Write(rule[:])
	h.Write([]byte(key))
	h.Write([]byte(t.String()))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// recipient is one user's opted-in channel.
type recipient struct {
	user    uuid.UUID
	channel string
}

// recipients returns the users of rule node id and of every node above
// it that opted in: users (nodeType user) that are children of those
// nodes and have a notifyWebhook or notifyEmail point.
func (e *ruleEngine) recipients(id uuid.UUID) []recipient {
	above := map[uuid.UUID]bool{}
	e.r.router.up(id, func(a uuid.UUID) bool {
		above[a] = true
		return true
	})
	var out []recipient
	for _, u := range e.userList() {
		isUser := false
		for _, p := range e.r.router.parentsOf(u, nil) {
			if above[p] {
				isUser = true
				break
			}
		}
		if !isUser {
			continue
		}
		if t := e.text(u, rules.TypeNotifyWebhook); t != "" {
			out = append(out, recipient{u, channelWebhook})
		}
		if t := e.text(u, rules.TypeNotifyEmail); t != "" {
			out = append(out, recipient{u, channelEmail})
		}
	}
	return out
}

// userList returns the user nodes, sorted.
func (e *ruleEngine) userList() []uuid.UUID {
	out := make([]uuid.UUID, 0, len(e.users))
	for u := range e.users {
		out = append(out, u)
	}
	sortIDs(out)
	return out
}

// text returns node n's point typ (key "0"), "" without one.
func (e *ruleEngine) text(n uuid.UUID, typ string) string {
	p, ok, err := e.r.st.Get(crdt.Register{Node: n, Type: typ, Key: crdt.DefaultKey})
	if err != nil || !ok || p.Tombstone {
		return ""
	}
	return p.Text
}

// description returns node n's description.
func (e *ruleEngine) description(n uuid.UUID) string { return e.text(n, TypeDescription) }

// dispatch hands the pending deliveries this instance sends, and whose
// time has come, to the senders; it takes over those of a sender gone,
// and writes the repairs saw found.
func (n *notifier) dispatch() {
	e := n.e
	clear(n.forgotten) // a reload reads its rule back before this
	n.writeRepairs()
	n.prune()
	if !e.ready || len(n.pending) == 0 {
		return
	}
	now := e.now().UnixMilli()
	held := n.heldThrough()
	var takeover []crdt.Point
	var taken []*delivery
pending:
	for k, d := range n.pending {
		if n.inflight[k] {
			continue
		}
		if d.out.By != e.self {
			if e.isMember(d.out.By) || !e.owns(k.rule) || !n.current(k, d.claim.ID) {
				continue
			}
			o := d.out
			o.By, o.Next = e.self, now
			if b, err := json.Marshal(o); err == nil {
				takeover = append(takeover, crdt.Point{Node: k.rule, Type: rules.TypeDeliveryStatus, Key: k.key, Text: string(b)})
				taken = append(taken, d)
			}
			continue
		}
		if d.out.Next > now || d.seq > held && !n.waitedAcks(d) {
			continue
		}
		select {
		case n.jobs <- sendJob{key: k, claim: d.claim}:
			n.inflight[k] = true
		default:
			break pending // the senders are busy; takeovers still go
		}
	}
	if len(takeover) > 0 {
		res, err := e.r.Write(takeover)
		if err != nil {
			e.r.log.Warn("notify: take over deliveries", "err", err)
			return
		}
		// Taken over now, not once the feed brings the outcomes back: the
		// next dispatch, which may come first, must not write them again.
		for _, d := range taken {
			d.out.By, d.out.Next, d.seen = e.self, now, e.now()
		}
		for i := range res.Changes {
			if c := &res.Changes[i]; c.Type == rules.TypeDeliveryStatus {
				if d := n.pending[delivKey{c.Node, c.Key}]; d != nil {
					d.seq = res.FirstSeq + uint64(i) // the change peers must hold
				}
			}
		}
	}
}

// writeRepairs writes again the final outcomes of claims still current
// that an older claim's outcome replaced, or that the store refused (then
// tried again in a second).
func (n *notifier) writeRepairs() {
	now := n.e.now()
	if len(n.repair) == 0 || now.Before(n.repairAt) {
		return
	}
	var pts []crdt.Point
	var keys []delivKey
	for k, o := range n.repair {
		if !n.current(k, o.ID) {
			delete(n.repair, k)
			continue
		}
		if b, err := json.Marshal(o); err == nil {
			pts = append(pts, crdt.Point{Node: k.rule, Type: rules.TypeDeliveryStatus, Key: k.key, Text: string(b)})
			keys = append(keys, k)
		}
	}
	if len(pts) == 0 {
		return
	}
	if _, err := n.e.r.Write(pts); err != nil {
		n.e.r.log.Warn("notify: record deliveries again", "err", err)
		n.repairAt = now.Add(time.Second)
		return
	}
	for _, k := range keys {
		delete(n.repair, k)
	}
}

// prune forgets, about once a minute, the final outcomes written more
// than finishedKeep ago.
func (n *notifier) prune() {
	now := n.e.now()
	if now.Sub(n.prunedAt) < time.Minute {
		return
	}
	n.prunedAt = now
	for k, f := range n.finished {
		if now.Sub(f.at) > finishedKeep {
			delete(n.finished, k)
		}
	}
}

// current reports whether the store's claim k is still claim id. The
// engine may not have read a newer one from the feed yet (the next change
// of the instance, committed while this one was sent): an outcome of this
// one is not written then, and nothing is taken over.
func (n *notifier) current(k delivKey, id string) bool {
	c, ok := n.claim(k)
	return ok && c.ID == id
}

// waitedAcks reports whether delivery d has waited for its peers' acks as
// long as a push may go unacknowledged (Config.AckTimeout): a peer that
// has not acknowledged by then loses its session anyway, and the
// notification goes out rather than wait on it.
func (n *notifier) waitedAcks(d *delivery) bool {
	return n.e.now().Sub(d.seen) >= n.e.r.cfg.AckTimeout
}

// heldThrough returns the local change every linked peer has
// acknowledged (all of them, with no peer linked): a point of a change
// at or below it is held by every peer.
func (n *notifier) heldThrough() uint64 {
	held := uint64(math.MaxUint64)
	_, peers := n.e.r.links.liveLinks()
	for _, s := range peers {
		held = min(held, s.acked.Load())
	}
	return held
}

// nextWait is how long until a pending delivery of this instance is due
// (0: none).
func (n *notifier) nextWait() time.Duration {
	var waits []int64
	if len(n.repair) > 0 {
		waits = append(waits, max(n.repairAt.Sub(n.e.now()).Milliseconds(), 1))
	}
	if !n.e.ready || len(n.pending) == 0 || len(n.jobs) == cap(n.jobs) {
		// Nothing is sent now: the engine wakes when it is ready (it
		// looks at least every second until then), and a sender's
		// result wakes it.
		return soonest(waits)
	}
	now := n.e.now().UnixMilli()
	held := n.heldThrough()
	for k, d := range n.pending {
		if n.inflight[k] || d.out.By != n.e.self {
			continue
		}
		w := d.out.Next - now
		if d.seq > held && !n.waitedAcks(d) {
			w = 2 // waiting for the peers' acks
		}
		waits = append(waits, w)
	}
	return soonest(waits)
}

// soonest returns the shortest of waits (ms), 0 for none. A wait already
// over counts as a millisecond: dispatch may have passed its delivery
// over an instant ago, for acks that came in since.
func soonest(waits []int64) time.Duration {
	if len(waits) == 0 {
		return 0
	}
	return time.Duration(max(slices.Min(waits), 1)) * time.Millisecond
}

// done records an attempt's outcome, if the claim is still the one sent
// and this instance still its sender.
func (n *notifier) done(res sendResult) {
	e := n.e
	delete(n.inflight, res.key)
	d := n.pending[res.key]
	if d == nil || d.claim.ID != res.id || d.out.By != e.self || !n.current(res.key, res.id) {
		return // superseded, or taken over, while it was sent
	}
	o := d.out
	now := e.now()
	o.Attempts++
	switch {
	case res.err == nil:
		o.Status, o.Sent, o.Error, o.Next = deliverySent, now.UnixMilli(), "", 0
	case isPermanent(res.err) || now.Sub(time.UnixMilli(d.claim.Created)) >= notify.GiveUpAfter:
		o.Status, o.Error, o.Next = deliveryFailed, truncateText(res.err.Error(), 1024), 0
	default:
		o.Error = truncateText(res.err.Error(), 1024)
		o.Next = now.Add(notify.Backoff(o.ID, o.Attempts)).UnixMilli()
	}
	e.r.metrics.notification(d.claim.Channel, o.Status)
	b, err := json.Marshal(o)
	if err != nil {
		return
	}
	p := crdt.Point{Node: res.key.rule, Type: rules.TypeDeliveryStatus, Key: res.key.key, Text: string(b)}
	_, werr := e.r.Write([]crdt.Point{p})
	if werr != nil {
		e.r.log.Warn("notify: record a delivery", "rule", res.key.rule, "err", werr)
	}
	// What the attempt did stands in memory even when the store refused
	// its record: a delivery sent is not sent again, a retry waits its
	// time.
	if o.Status != deliveryPending {
		delete(n.pending, res.key)
		n.finished[res.key] = finishedOutcome{o, now}
		if werr != nil {
			n.repair[res.key] = o
			n.repairAt = now.Add(time.Second)
		}
	} else {
		d.out = o
	}
	if res.err != nil {
		e.r.log.Warn("notification not delivered", "rule", res.key.rule, "channel", d.claim.Channel, "attempt", o.Attempts, "status", o.Status, "err", res.err)
	}
}

// send makes one attempt at a delivery. It runs on a sender goroutine:
// it reads the store, not the engine's maps.
func (n *notifier) send(rule uuid.UUID, rec claimRecord) error {
	e := n.e
	m := &notify.Message{ID: rec.ID, Status: rec.Event, Rule: rule, RuleName: rec.Message.RuleName,
		Node: rec.Message.Node, NodeName: rec.Message.NodeName, Text: rec.Message.Text,
		Time: time.UnixMilli(rec.Created).UTC(), Instance: e.self}
	for _, v := range rec.Message.Values {
		m.Values = append(m.Values, notify.Value{Node: v.Node, Type: v.Type, Key: v.Key, Value: v.Value, Text: v.Text})
	}
	ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
	defer cancel()
	switch rec.Channel {
	case channelWebhook:
		url := e.text(rec.User, rules.TypeNotifyWebhook)
		if url == "" {
			return permanent(fmt.Errorf("user %s has no %s any more", rec.User, rules.TypeNotifyWebhook))
		}
		w := &notify.Webhook{URL: url, Secret: e.text(rec.User, crdt.TypeWebhookSecret), UserAgent: "siot/" + e.r.cfg.Version}
		return w.Send(ctx, m)
	case channelEmail:
		to := e.text(rec.User, rules.TypeNotifyEmail)
		if to == "" {
			return permanent(fmt.Errorf("user %s has no %s any more", rec.User, rules.TypeNotifyEmail))
		}
		addr := e.text(e.root, rules.TypeSMTPServer)
		if addr == "" {
			return fmt.Errorf("email: no %s on this instance's root node", rules.TypeSMTPServer)
		}
		s := &notify.SMTP{Addr: addr, From: e.text(e.root, rules.TypeSMTPFrom), To: to,
			Username: e.text(e.root, rules.TypeSMTPUser), Password: e.text(e.root, crdt.TypeSMTPPassword),
			TLS: e.text(e.root, rules.TypeSMTPTLS)}
		return s.Send(ctx, m)
	}
	return permanent(fmt.Errorf("unknown channel %q", rec.Channel))
}

// permanentError marks an error no retry fixes.
type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

func permanent(err error) error { return permanentError{err} }

func isPermanent(err error) bool {
	var pe permanentError
	return errors.As(err, &pe) || notify.Permanent(err)
}

func sortIDs(ids []uuid.UUID) {
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
}
