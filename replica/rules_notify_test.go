package replica

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/rules"
	"github.com/siot-io/siot/transport"
)

// smtpSink is an in-test SMTP server on loopback that accepts every mail
// and keeps it.
type smtpSink struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	mails []string // DATA of each mail
	rcpts []string
}

func newSMTPSink(t *testing.T) *smtpSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *smtpSink) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	say := func(line string) { _, _ = c.Write([]byte(line + "\r\n")) }
	say("220 sink ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250 sink")
		case strings.HasPrefix(cmd, "MAIL"):
			say("250 ok")
		case strings.HasPrefix(cmd, "RCPT"):
			s.mu.Lock()
			s.rcpts = append(s.rcpts, strings.TrimSpace(line))
			s.mu.Unlock()
			say("250 ok")
		case cmd == "DATA":
			say("354 go on")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.mails = append(s.mails, b.String())
			s.mu.Unlock()
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

func (s *smtpSink) got() (mails, rcpts []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.mails...), append([]string(nil), s.rcpts...)
}

// deliveryOf returns where the delivery of rule id under key stands, as
// n's store says (zero when there is no claim).
func deliveryOf(n *node, id uuid.UUID, key string) outcomeRecord {
	var c claimRecord
	p := n.get(id, uuid.Nil, rules.TypeDelivery, key)
	if p.Text == "" || json.Unmarshal([]byte(p.Text), &c) != nil {
		return outcomeRecord{}
	}
	var o outcomeRecord
	q := n.get(id, uuid.Nil, rules.TypeDeliveryStatus, key)
	ok := q.Text != "" && json.Unmarshal([]byte(q.Text), &o) == nil
	return deliveryState(c, o, ok)
}

// TestRuleNotifiesByEmail: a user who opted in by email gets the
// notification through the SMTP server configured on the root; one who
// did not gets nothing; the delivery is recorded as sent.
func TestRuleNotifiesByEmail(t *testing.T) {
	sink := newSMTPSink(t)
	n := startNode(t, "cloud", nodeOpts{})
	n.write(textPt(n.root, rules.TypeSMTPServer, "", sink.ln.Addr().String()),
		textPt(n.root, rules.TypeSMTPFrom, "", "siot@example.com"),
		textPt(n.root, rules.TypeSMTPTLS, "", "none"))
	site := addNode(n, n.root, "site")
	ops := addNode(n, n.root, rules.NodeTypeUser)
	n.write(textPt(ops, rules.TypeNotifyEmail, "", "ops@example.com"))
	addNode(n, site, rules.NodeTypeUser) // a user who did not opt in
	other := addNode(n, addNode(n, n.root, "site"), rules.NodeTypeUser)
	n.write(textPt(other, rules.TypeNotifyEmail, "", "other@example.com")) // not above the rule
	sensor := addNode(n, site, "sensor")
	n.write(textPt(sensor, "description", "", "boiler"))
	rule := addRule(n, site, []string{"temp > 90"}, []string{`notify "{node} at {value} degrees"`}, nil)
	n.write(valPt(sensor, "temp", 95))
	waitFor(t, "a mail", 10*time.Second, func() bool { m, _ := sink.got(); return len(m) == 1 })
	mails, rcpts := sink.got()
	if len(rcpts) != 1 || !strings.Contains(rcpts[0], "ops@example.com") {
		t.Fatalf("recipients %q", rcpts)
	}
	if !strings.Contains(mails[0], "boiler at 95 degrees") || !strings.Contains(mails[0], "FIRING") {
		t.Fatalf("mail:\n%s", mails[0])
	}
	key := deliveryKey(sensor, ops, channelEmail, "1")
	waitFor(t, "the delivery recorded as sent", 5*time.Second, func() bool { return deliveryOf(n, rule, key).Status == deliverySent })
	if rec := deliveryOf(n, rule, key); rec.Attempts != 1 || rec.By != n.st.Instance() {
		t.Fatalf("record %+v", rec)
	}
	settleRules(t, n)
	if m, _ := sink.got(); len(m) != 1 {
		t.Fatalf("%d mails", len(m))
	}
}

// failingNotification is a node on a fake clock whose one user's webhook
// has nothing listening, and a rule that has notified it once: its first
// attempt failed, and the next is due after a backoff.
type failingNotification struct {
	ft         *fakeTime
	hook       *hookReceiver // up, and not the user's webhook yet
	n          *node
	user, rule uuid.UUID
	key        string // the delivery's
}

func startFailingNotification(t *testing.T) *failingNotification {
	f := &failingNotification{ft: newFakeTime(), hook: newHookReceiver(t)}
	n := startNode(t, "cloud", nodeOpts{physical: f.ft.now})
	f.n = n
	f.user = addNode(n, n.root, rules.NodeTypeUser)
	n.write(textPt(f.user, rules.TypeNotifyWebhook, "", "http://127.0.0.1:1/down")) // nothing listens
	sensor := addNode(n, n.root, "sensor")
	f.rule = addRule(n, n.root, []string{"temp > 30"}, []string{"notify"}, nil)
	n.write(valPt(sensor, "temp", 31))
	f.key = deliveryKey(sensor, f.user, channelWebhook, "1")
	waitFor(t, "a failed attempt recorded", 10*time.Second, func() bool { return deliveryOf(n, f.rule, f.key).Attempts == 1 })
	return f
}

// TestRuleNotifyRetriesThenSends: a webhook that fails is retried with
// backoff, each attempt recorded, until it answers.
func TestRuleNotifyRetriesThenSends(t *testing.T) {
	f := startFailingNotification(t)
	ft, hook, n, user, rule, key := f.ft, f.hook, f.n, f.user, f.rule, f.key
	rec := deliveryOf(n, rule, key)
	if rec.Status != deliveryPending || rec.Error == "" || rec.Next <= ft.now().UnixMilli() {
		t.Fatalf("after one failure: %+v", rec)
	}
	// The receiver comes up; the next attempt, due after the backoff, reaches it.
	n.write(textPt(user, rules.TypeNotifyWebhook, "", hook.srv.URL))
	settleRules(t, n)
	if ids, _ := hook.distinct(); ids != 0 {
		t.Fatal("retried before the backoff")
	}
	ft.advanceAll(time.Minute, n)
	waitFor(t, "delivered on retry", 10*time.Second, func() bool { return deliveryOf(n, rule, key).Status == deliverySent })
	if got := hook.posts(); len(got) != 1 || got[0].ID != rec.ID {
		t.Fatalf("posts %+v, want one with ID %s", got, rec.ID)
	}
}

// TestRuleForgedDeliveryIgnored: a pending delivery record that this
// instance did not write (a user or an edge may write the rule node's
// points) is never sent, even when it names this instance as sender.
func TestRuleForgedDeliveryIgnored(t *testing.T) {
	hook := newHookReceiver(t)
	n := startNode(t, "cloud", nodeOpts{})
	user := addNode(n, n.root, rules.NodeTypeUser)
	n.write(textPt(user, rules.TypeNotifyWebhook, "", hook.srv.URL))
	rule := addRule(n, n.root, []string{"temp > 30"}, []string{"notify"}, nil)
	forged := claimRecord{ID: "forged", Event: "firing", User: user, Channel: channelWebhook,
		By: n.st.Instance(), Created: time.Now().UnixMilli(), Message: msgRecord{Node: user, Text: "click here"}}
	b, _ := json.Marshal(forged)
	n.write(crdt.Point{Node: rule, Type: rules.TypeDelivery, Key: "x", Text: string(b), Origin: uuid.New()})
	// A real firing afterwards is sent: the engine is alive.
	sensor := addNode(n, n.root, "sensor")
	n.write(valPt(sensor, "temp", 31))
	waitFor(t, "the real notification", 10*time.Second, func() bool { ids, _ := hook.distinct(); return ids == 1 })
	settleRules(t, n)
	for _, p := range hook.posts() {
		if p.ID == "forged" {
			t.Fatal("a forged delivery was sent")
		}
	}
	if ids, _ := hook.distinct(); ids != 1 {
		t.Fatalf("%d notifications", ids)
	}
}

// TestRuleOlderOutcomeNeverHidesNotification: an outcome of an older
// notification of the same key that lands after a newer one's claim (a
// peer recording what it sent while this instance claimed the next
// firing) leaves the newer notification due: it is sent, with its own ID.
// When one register held both, the late "sent" replaced the claim and the
// newer notification was never sent.
func TestRuleOlderOutcomeNeverHidesNotification(t *testing.T) {
	f := startFailingNotification(t)
	ft, hook, n, user, rule, key := f.ft, f.hook, f.n, f.user, f.rule, f.key
	want := deliveryOf(n, rule, key).ID

	older := outcomeRecord{ID: "older", Status: deliverySent, By: n.st.Instance(), Attempts: 1, Sent: ft.now().UnixMilli()}
	b, _ := json.Marshal(older)
	n.write(crdt.Point{Node: rule, Type: rules.TypeDeliveryStatus, Key: key, Text: string(b)})
	settleRules(t, n)
	if rec := deliveryOf(n, rule, key); rec.ID != want || rec.Status != deliveryPending {
		t.Fatalf("after an older outcome landed: %+v, want %s pending", rec, want)
	}
	if got := hook.posts(); len(got) != 0 {
		t.Fatalf("posts before the receiver is up: %+v", got)
	}

	n.write(textPt(user, rules.TypeNotifyWebhook, "", hook.srv.URL))
	ft.advanceAll(time.Minute, n)
	waitFor(t, "delivered", 10*time.Second, func() bool { return deliveryOf(n, rule, key).Status == deliverySent })
	settleRules(t, n)
	if got := hook.posts(); len(got) != 1 || got[0].ID != want {
		t.Fatalf("posts %+v, want one with ID %s", got, want)
	}
}

// TestRuleForgedOutcomeIgnored: an outcome this instance did not write,
// nor a peer, neither repeats a notification already sent nor silences
// one: a forged "pending" does not resend, and a forged "sent" of a
// pending one does not stop its delivery.
func TestRuleForgedOutcomeIgnored(t *testing.T) {
	ft := newFakeTime()
	hook := newHookReceiver(t)
	n := startNode(t, "cloud", nodeOpts{physical: ft.now})
	user := addNode(n, n.root, rules.NodeTypeUser)
	n.write(textPt(user, rules.TypeNotifyWebhook, "", hook.srv.URL))
	sensor := addNode(n, n.root, "sensor")
	rule := addRule(n, n.root, []string{"temp > 30"}, []string{"notify"}, nil)
	key := deliveryKey(sensor, user, channelWebhook, "1")
	forge := func(o outcomeRecord) {
		b, _ := json.Marshal(o)
		n.write(crdt.Point{Node: rule, Type: rules.TypeDeliveryStatus, Key: key, Text: string(b), Origin: uuid.New()})
	}

	n.write(valPt(sensor, "temp", 31))
	waitFor(t, "the notification", 10*time.Second, func() bool { return deliveryOf(n, rule, key).Status == deliverySent })
	sent := deliveryOf(n, rule, key).ID
	forge(outcomeRecord{ID: sent, Status: deliveryPending, By: n.st.Instance()})
	ft.advanceAll(time.Minute, n)
	settleRules(t, n)
	if got := hook.posts(); len(got) != 1 {
		t.Fatalf("a forged pending outcome resent: %+v", got)
	}

	// The receiver goes away; the next change's notification is pending
	// when a forged "sent" of it lands; it is still delivered once the
	// receiver is back.
	n.write(textPt(user, rules.TypeNotifyWebhook, "", "http://127.0.0.1:1/down"))
	ft.advanceAll(2*time.Minute, n) // past the pacing
	n.write(valPt(sensor, "temp", 20))
	ft.advanceAll(time.Second, n)
	settleRules(t, n) // the resolve has no action: nothing is claimed
	ft.advanceAll(2*time.Minute, n)
	n.write(valPt(sensor, "temp", 32))
	waitFor(t, "a failed attempt of the second firing", 10*time.Second, func() bool {
		rec := deliveryOf(n, rule, key)
		return rec.ID != sent && rec.Attempts == 1
	})
	second := deliveryOf(n, rule, key).ID
	forge(outcomeRecord{ID: second, Status: deliverySent, By: n.st.Instance(), Attempts: 1})
	n.write(textPt(user, rules.TypeNotifyWebhook, "", hook.srv.URL))
	ft.advanceAll(time.Hour, n)
	waitFor(t, "the second firing delivered", 10*time.Second, func() bool {
		for _, p := range hook.posts() {
			if p.ID == second {
				return true
			}
		}
		return false
	})
	settleRules(t, n)
	if got := hook.posts(); len(got) != 2 {
		t.Fatalf("posts %+v, want the two firings", got)
	}
}

// TestSoonest: a delivery already due wakes the engine at once. With
// "none" told apart by a negative sentinel, a due one (a negative wait)
// read as none, and a notification whose peers' acks came in between the
// dispatch and the wait stayed unsent until something else woke the
// engine (TestRuleNotifiesOnceAcrossPeers, about once in ten runs).
func TestSoonest(t *testing.T) {
	for _, tc := range []struct {
		waits []int64
		want  time.Duration
	}{
		{nil, 0},
		{[]int64{-5}, time.Millisecond},
		{[]int64{0}, time.Millisecond},
		{[]int64{7, -3}, time.Millisecond},
		{[]int64{7, 3}, 3 * time.Millisecond},
		{[]int64{2, 60000}, 2 * time.Millisecond},
	} {
		if got := soonest(tc.waits); got != tc.want {
			t.Errorf("soonest(%v) = %v, want %v", tc.waits, got, tc.want)
		}
	}
}

// TestRuleOlderOutcomeAfterSentIsRepaired: an older notification's
// outcome that lands after a newer one was sent and recorded (a peer's
// write, later by the clock) does not make the newer one pending again:
// the instance that sent it writes its outcome again, and sends nothing.
func TestRuleOlderOutcomeAfterSentIsRepaired(t *testing.T) {
	hook := newHookReceiver(t)
	n := startNode(t, "cloud", nodeOpts{})
	user := addNode(n, n.root, rules.NodeTypeUser)
	n.write(textPt(user, rules.TypeNotifyWebhook, "", hook.srv.URL))
	sensor := addNode(n, n.root, "sensor")
	rule := addRule(n, n.root, []string{"temp > 30"}, []string{"notify"}, nil)
	key := deliveryKey(sensor, user, channelWebhook, "1")
	n.write(valPt(sensor, "temp", 31))
	waitFor(t, "the notification", 10*time.Second, func() bool { return deliveryOf(n, rule, key).Status == deliverySent })
	sent := deliveryOf(n, rule, key)

	older := outcomeRecord{ID: "older", Status: deliverySent, By: n.st.Instance(), Attempts: 1}
	b, _ := json.Marshal(older)
	n.write(crdt.Point{Node: rule, Type: rules.TypeDeliveryStatus, Key: key, Text: string(b)})
	waitFor(t, "the outcome written again", 10*time.Second, func() bool {
		var o outcomeRecord
		p := n.get(rule, uuid.Nil, rules.TypeDeliveryStatus, key)
		return json.Unmarshal([]byte(p.Text), &o) == nil && o.ID == sent.ID
	})
	settleRules(t, n)
	if got := deliveryOf(n, rule, key); got != sent {
		t.Fatalf("repaired outcome %+v, want %+v", got, sent)
	}
	if got := hook.posts(); len(got) != 1 || got[0].ID != sent.ID {
		t.Fatalf("posts %+v, want the one notification", got)
	}
}

// TestUserCannotWriteDeliveryRecords: a user who administers the rule's
// site may edit the rule, but not write its notification records: a
// claim would make the cloud send the user's message to anyone, an
// outcome would silence or repeat a notification.
func TestUserCannotWriteDeliveryRecords(t *testing.T) {
	n := startNode(t, "cloud", nodeOpts{})
	site := addNode(n, n.root, "site")
	addUser(t, n, site, "ops@example.com", "a long password", true)
	rule := addRule(n, site, []string{"temp > 30"}, []string{"notify"}, nil)
	creds, err := login(t, n, "ops@example.com", "a long password")
	if err != nil {
		t.Fatal(err)
	}
	nc := n.dial(creds)
	id := keyID(creds)
	write := func(p crdt.Point) error {
		var res transport.ImportResult
		return request(t, nc, id, transport.NameImport, transport.Import{Points: crdt.AppendBatch(nil, []crdt.Point{p})}, &res)
	}
	if err := write(textPt(rule, rules.TypeCondition, "2", "temp < -10")); err != nil {
		t.Fatalf("editing the rule: %v", err)
	}
	before := n.st.LastSeq()
	for _, typ := range []string{rules.TypeDelivery, rules.TypeDeliveryStatus} {
		err := write(textPt(rule, typ, "x", `{"id":"forged","status":"pending"}`))
		if !transport.IsRemote(err) || !strings.Contains(err.Error(), "notification records") {
			t.Errorf("a user's %s point: %v, want refused", typ, err)
		}
	}
	if got := changesBesidesDeviceState(n, before); got != 0 {
		t.Fatalf("refused writes changed the store: %d changes", got)
	}
}

// TestRuleSentNotRecordedIsNotResent: a notification the receiver
// accepted, whose outcome the store then refuses (the disk full), is not
// sent again: the outcome is kept in memory and written once the store
// takes writes again.
func TestRuleSentNotRecordedIsNotResent(t *testing.T) {
	var full atomic.Bool
	free := func(string) (uint64, error) {
		if full.Load() {
			return 0, nil
		}
		return 1 << 40, nil
	}
	var mu sync.Mutex
	var ids []string
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			ID string `json:"id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		ids = append(ids, body.ID)
		first := len(ids) == 1
		mu.Unlock()
		if first {
			<-gate // answered once the disk is full
		}
	}))
	t.Cleanup(srv.Close)
	posts := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), ids...)
	}

	n := startNode(t, "cloud", nodeOpts{freeSpace: free})
	user := addNode(n, n.root, rules.NodeTypeUser)
	n.write(textPt(user, rules.TypeNotifyWebhook, "", srv.URL))
	sensor := addNode(n, n.root, "sensor")
	rule := addRule(n, n.root, []string{"temp > 30"}, []string{"notify"}, nil)
	key := deliveryKey(sensor, user, channelWebhook, "1")
	n.write(valPt(sensor, "temp", 31))
	waitFor(t, "the POST", 10*time.Second, func() bool { return len(posts()) == 1 })
	full.Store(true)
	close(gate)
	waitFor(t, "the attempt done", 10*time.Second, func() bool { return n.rep.rules.inflight.Load() == 0 })
	settleRules(t, n)
	if got := posts(); len(got) != 1 {
		t.Fatalf("%d POSTs while the outcome could not be recorded, want 1", len(got))
	}
	if rec := deliveryOf(n, rule, key); rec.Status != deliveryPending {
		t.Fatalf("recorded %+v with the disk full", rec)
	}

	full.Store(false)
	waitFor(t, "the outcome recorded", 10*time.Second, func() bool { return deliveryOf(n, rule, key).Status == deliverySent })
	settleRules(t, n)
	if got := posts(); len(got) != 1 {
		t.Fatalf("POSTs %v, want 1", got)
	}
}

// TestRuleClearingKeepsUnsentFiring: a clearing while its firing's
// notification still waits for a retry is a notification of its own: the
// receiver, once back, gets the firing and the resolution, not the
// resolution alone.
func TestRuleClearingKeepsUnsentFiring(t *testing.T) {
	ft := newFakeTime()
	hook := newHookReceiver(t)
	n := startNode(t, "cloud", nodeOpts{physical: ft.now})
	user := addNode(n, n.root, rules.NodeTypeUser)
	n.write(textPt(user, rules.TypeNotifyWebhook, "", "http://127.0.0.1:1/down")) // nothing listens
	sensor := addNode(n, n.root, "sensor")
	rule := addRule(n, n.root, []string{"temp > 30"}, []string{"notify"}, []string{"notify"})
	n.write(valPt(sensor, "temp", 31))
	firing := deliveryKey(sensor, user, channelWebhook, "1")
	waitFor(t, "the firing's first attempt failed", 10*time.Second, func() bool { return deliveryOf(n, rule, firing).Attempts == 1 })
	ft.advanceAll(2*time.Minute, n) // past the pacing
	n.write(valPt(sensor, "temp", 20))
	resolved := deliveryKey(sensor, user, channelWebhook, "clear.1")
	waitFor(t, "the resolution's first attempt failed", 10*time.Second, func() bool { return deliveryOf(n, rule, resolved).Attempts == 1 })
	if rec := deliveryOf(n, rule, firing); rec.Status != deliveryPending {
		t.Fatalf("the firing's notification after the clearing: %+v", rec)
	}

	n.write(textPt(user, rules.TypeNotifyWebhook, "", hook.srv.URL))
	ft.advanceAll(time.Hour, n)
	waitFor(t, "both delivered", 10*time.Second, func() bool {
		return deliveryOf(n, rule, firing).Status == deliverySent && deliveryOf(n, rule, resolved).Status == deliverySent
	})
	settleRules(t, n)
	got := map[string]int{}
	for _, p := range hook.posts() {
		got[p.Status]++
	}
	if got["firing"] != 1 || got["resolved"] != 1 || len(hook.posts()) != 2 {
		t.Fatalf("posts %+v, want one firing and one resolved", hook.posts())
	}
}
