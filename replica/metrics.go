package replica

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// Paths by which points reach the store, the label values of
// Metrics.Applied and Metrics.Stale.
const (
	PathLocal  = "local"  // Write: the local API, import, an upstream adopting an edge
	PathPush   = "push"   // a link's push (and the points a remote's repair sends, which travel as pushes)
	PathRepair = "repair" // points this side fetched in its own repair rounds
)

// Reasons a write or a point is refused, the label values of
// Metrics.RejectedPoints and Metrics.RejectedWrites.
const (
	ReasonClockSkew    = "clock_skew"    // a time too far ahead of the local clock (crdt.ErrClockSkew)
	ReasonTooLarge     = "too_large"     // a text, point or message over its limit (crdt.ErrTooLarge)
	ReasonOutsideScope = "outside_scope" // an edge wrote outside its own subtree
	ReasonInvalid      = "invalid"       // a point or message that breaks a rule or does not decode
	ReasonDiskFull     = "disk_full"     // free disk space below the floor (store.ErrDiskFull)
	ReasonForbidden    = "forbidden"     // the request's identity may not do this (ErrForbidden)
	ReasonLimited      = "limited"       // the identity is over a rate or concurrency limit (ErrLimited)
	ReasonOther        = "other"         // anything else: the store closed, an I/O error
)

var (
	metricPaths   = [...]string{PathLocal, PathPush, PathRepair}
	metricReasons = [...]string{ReasonClockSkew, ReasonTooLarge, ReasonOutsideScope, ReasonInvalid, ReasonDiskFull,
		ReasonForbidden, ReasonLimited, ReasonOther}
)

// metrics are the replica's counters. Every field is atomic: the write
// path, the links and the repairers count concurrently, and Metrics reads
// them without stopping anything.
type metrics struct {
	applied, stale                 [len(metricPaths)]atomic.Uint64
	rejectedPoints, rejectedWrites [len(metricReasons)]atomic.Uint64
	repairEqual, repairDifferent   atomic.Uint64
	repairRoundTrips               atomic.Uint64
	repairBytesOut, repairBytesIn  atomic.Uint64
	repairFetched, repairSent      atomic.Uint64
	refusedRequests                [len(metricReasons)]atomic.Uint64
	loginFailures                  atomic.Uint64
	historyWritten, historyRound   atomic.Uint64
	historyAcked, historyUnacked   atomic.Uint64    // samples dropped by retention or budget
	ruleActive, ruleCleared        atomic.Uint64    // rule instances that became active, inactive
	notifySent, notifyFailed       [2]atomic.Uint64 // by channel: webhook, email
	notifyRetried                  [2]atomic.Uint64

	mu         sync.Mutex
	lastRemote map[string]string // a dialed link's last remote instance, by URL
}

func pathIndex(path string) int {
	for i, p := range metricPaths {
		if p == path {
			return i
		}
	}
	return 0
}

func reasonIndex(reason string) int {
	for i, r := range metricReasons {
		if r == reason {
			return i
		}
	}
	return len(metricReasons) - 1
}

// rejectReason classifies an error that refused a write.
func rejectReason(err error) string {
	switch {
	case errors.Is(err, crdt.ErrClockSkew):
		return ReasonClockSkew
	case errors.Is(err, crdt.ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, store.ErrDiskFull):
		return ReasonDiskFull
	case errors.Is(err, ErrForbidden):
		return ReasonForbidden
	case errors.Is(err, ErrLimited):
		return ReasonLimited
	case errors.Is(err, store.ErrInvalid), errors.Is(err, crdt.ErrInvalidPoint), errors.Is(err, crdt.ErrMalformed), errors.Is(err, ErrInvalidRequest),
		errors.Is(err, transport.ErrVersion), errors.Is(err, transport.ErrUnknownType):
		return ReasonInvalid
	}
	return ReasonOther
}

// write counts a batch of n points that went through path: what it
// applied, or, when err refused it whole, the refusal.
func (m *metrics) write(path string, n int, res store.Result, err error) {
	if err != nil {
		m.rejectWrite(rejectReason(err), n)
		return
	}
	m.historyWritten.Add(res.HistoryAdded)
	var applied uint64
	for _, o := range res.Outcomes {
		if o == store.Applied {
			applied++
		}
	}
	i := pathIndex(path)
	m.applied[i].Add(applied)
	m.stale[i].Add(uint64(len(res.Outcomes)) - applied)
}

// remote counts a batch received from a link (applyRemote): skewed points
// were dropped for their clock, the rest went to the store. A push
// carries its receive mark; the points of this side's repair rounds none.
func (m *metrics) remote(marks map[string]uint64, skewed, n int, res store.Result, err error) {
	m.rejectPoints(ReasonClockSkew, skewed)
	path := PathRepair
	if marks != nil {
		path = PathPush
	}
	m.write(path, n, res, err)
}

// historyMerged counts samples a history round added (history.go).
func (m *metrics) historyMerged(n uint64) { m.historyRound.Add(n) }

// ruleTransition counts a rule instance's change of state.
func (m *metrics) ruleTransition(active bool) {
	if active {
		m.ruleActive.Add(1)
	} else {
		m.ruleCleared.Add(1)
	}
}

// notification counts a delivery attempt's outcome on a channel.
func (m *metrics) notification(channel, status string) {
	i := 0
	if channel == channelEmail {
		i = 1
	}
	switch status {
	case deliverySent:
		m.notifySent[i].Add(1)
	case deliveryFailed:
		m.notifyFailed[i].Add(1)
	default:
		m.notifyRetried[i].Add(1)
	}
}

// historyDropped counts samples the history upkeep dropped: acked ones
// (retention, or the budget with acknowledged history), and unacked ones
// the budget dropped before an upstream acknowledged them.
func (m *metrics) historyDropped(acked, unacked uint64) {
	m.historyAcked.Add(acked)
	m.historyUnacked.Add(unacked)
}

// rejectPoints counts n points refused one by one for reason.
func (m *metrics) rejectPoints(reason string, n int) {
	if n > 0 {
		m.rejectedPoints[reasonIndex(reason)].Add(uint64(n))
	}
}

// rejectWrite counts a write (a request, a push) refused whole, with the n
// points it carried.
func (m *metrics) rejectWrite(reason string, n int) {
	m.rejectedWrites[reasonIndex(reason)].Add(1)
	m.rejectPoints(reason, n)
}

// refuse counts an API request refused for reason, before it did
// anything.
func (m *metrics) refuse(reason string) {
	m.refusedRequests[reasonIndex(reason)].Add(1)
}

// loginFailed counts a failed password sign-in.
func (m *metrics) loginFailed() { m.loginFailures.Add(1) }

// repairRound counts a repair round that ended.
func (m *metrics) repairRound(st RepairStats) {
	if st.Equal {
		m.repairEqual.Add(1)
	} else {
		m.repairDifferent.Add(1)
	}
	m.repairRoundTrips.Add(uint64(st.RoundTrips))
	m.repairBytesOut.Add(uint64(st.BytesOut))
	m.repairBytesIn.Add(uint64(st.BytesIn))
	m.repairFetched.Add(uint64(st.Fetched))
	m.repairSent.Add(uint64(st.Sent))
}

// Metrics is a snapshot of a replica's counters and gauges, for the
// Prometheus endpoint of `siot serve`. Counters count from Open; a link's
// byte counters from the link's start (a dialed link) or from the
// session's (an accepted one, which ends when its dialer goes).
type Metrics struct {
	Applied        []Count // points that won their register, by path (PathLocal...)
	Stale          []Count // points that lost to what the store held, by path
	RejectedPoints []Count // points refused, by reason (ReasonClockSkew...), one by one or with their write
	RejectedWrites []Count // requests and pushes refused whole, by reason

	RepairRounds     []Count // rounds this side ran, by result: "equal" or "different"
	RepairRoundTrips uint64
	RepairBytesOut   uint64 // request and push frames this side's rounds sent
	RepairBytesIn    uint64 // reply frames they received
	RepairFetched    uint64 // points they received
	RepairSent       uint64 // points they sent
	RepairAnswerTime time.Duration

	// HistorySamples counts the samples added to the registers'
	// histories, by path: "write" (with the points of a write, a push or
	// a repair), "round" (merged by a history round, either side's).
	HistorySamples []Count
	// HistoryDropped counts the samples the history upkeep dropped, by
	// kind: "kept" (past the retention, or acknowledged history over
	// the budget) and "unacknowledged" (over the budget before any
	// upstream acknowledged them: lost unless another replica holds
	// them).
	HistoryDropped []Count
	// RuleTransitions counts the changes of rule instances this instance
	// made, by state: "active", "inactive".
	RuleTransitions []Count
	// Notifications counts delivery attempts this instance made, by
	// channel ("webhook", "email") and result ("sent", "retry",
	// "failed").
	Notifications []ChannelCount

	LinksRefused    uint64  // hellos refused
	RequestsRefused []Count // API requests refused before they did anything, by reason (forbidden, limited, invalid...)
	LoginFailures   uint64  // password sign-ins refused
	// ConnectionsRefused counts connections the server refused at
	// sign-in, by reason ("refused": unknown, revoked or expired
	// credentials; "connection limit"; "bad signature").
	ConnectionsRefused []Count
	Links              []LinkMetrics
	// Known lists every link this instance has known, with its last
	// state, including those whose session ended (kept across restarts).
	Known []KnownLink

	LastSeq   uint64 // the store's last change number
	DiskBytes int64  // the data directory's files on disk (store.DiskUsage: at most 2 s old)
}

// ChannelCount is a notification count of one channel and result.
type ChannelCount struct {
	Channel, Result string
	Value           uint64
}

// Count is one labeled value of a Metrics family.
type Count struct {
	Label string
	Value uint64
}

// LinkMetrics describes one link: a dialed one (URL set) or a session a
// remote opened here (URL empty).
type LinkMetrics struct {
	URL, Role, Remote    string
	Connected, InSync    bool
	Pending              uint64 // changes the remote lacks, estimated
	BytesSent, BytesRecv uint64
}

// KnownLink is a link of the link book: its identity (Kind: KindUpstream,
// KindPeer or KindEdge; Name: a dialed link's URL, an edge's root node, an
// accepted peer's instance), whether a session is up, and when its remote
// was last seen (for a link down: when it went offline).
type KnownLink struct {
	Kind, Name, Role, Remote string
	Connected                bool
	LastSeen                 time.Time
}

// Metrics returns a snapshot of the replica's counters, links and store
// figures. Safe for concurrent use; it does not block the write path.
func (r *Replica) Metrics() Metrics {
	m := &r.metrics
	out := Metrics{
		RepairRounds:     []Count{{"equal", m.repairEqual.Load()}, {"different", m.repairDifferent.Load()}},
		RepairRoundTrips: m.repairRoundTrips.Load(),
		RepairBytesOut:   m.repairBytesOut.Load(),
		RepairBytesIn:    m.repairBytesIn.Load(),
		RepairFetched:    m.repairFetched.Load(),
		RepairSent:       m.repairSent.Load(),
		RepairAnswerTime: time.Duration(r.acceptor.repairTime.Load()),
		HistorySamples:   []Count{{"write", m.historyWritten.Load()}, {"round", m.historyRound.Load()}},
		HistoryDropped:   []Count{{"kept", m.historyAcked.Load()}, {"unacknowledged", m.historyUnacked.Load()}},
		RuleTransitions:  []Count{{"active", m.ruleActive.Load()}, {"inactive", m.ruleCleared.Load()}},
		LinksRefused:     r.acceptor.refused.Load(),
		LastSeq:          r.st.LastSeq(),
		DiskBytes:        r.st.DiskUsage(),
	}
	for i, ch := range []string{channelWebhook, channelEmail} {
		out.Notifications = append(out.Notifications,
			ChannelCount{ch, "sent", m.notifySent[i].Load()},
			ChannelCount{ch, "retry", m.notifyRetried[i].Load()},
			ChannelCount{ch, "failed", m.notifyFailed[i].Load()})
	}
	for i, p := range metricPaths {
		out.Applied = append(out.Applied, Count{p, m.applied[i].Load()})
		out.Stale = append(out.Stale, Count{p, m.stale[i].Load()})
	}
	for i, rs := range metricReasons {
		out.RejectedPoints = append(out.RejectedPoints, Count{rs, m.rejectedPoints[i].Load()})
		out.RejectedWrites = append(out.RejectedWrites, Count{rs, m.rejectedWrites[i].Load()})
		out.RequestsRefused = append(out.RequestsRefused, Count{rs, m.refusedRequests[i].Load()})
	}
	out.LoginFailures = m.loginFailures.Load()
	refusedConns := r.cfg.Server.Refused()
	for _, reason := range slices.Sorted(maps.Keys(refusedConns)) {
		out.ConnectionsRefused = append(out.ConnectionsRefused, Count{reason, refusedConns[reason]})
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastRemote == nil {
		m.lastRemote = make(map[string]string)
	}
	link := func(ls transport.LinkStatus) LinkMetrics {
		return LinkMetrics{URL: ls.URL, Role: ls.Role, Remote: ls.Remote, Connected: ls.Connected, InSync: ls.InSync,
			Pending: ls.Pending, BytesSent: ls.BytesSent, BytesRecv: ls.BytesRecv}
	}
	for _, d := range r.dialers {
		lm := link(d.status())
		// Keep a dialed link's series while it is down: label it with
		// the remote it last reached.
		if lm.Remote != "" {
			m.lastRemote[lm.URL] = lm.Remote
		}
		lm.Remote = m.lastRemote[lm.URL]
		out.Links = append(out.Links, lm)
	}
	for _, k := range r.links.snapshot() {
		out.Known = append(out.Known, KnownLink{Kind: k.Kind, Name: k.Name, Role: k.Role, Remote: k.Remote,
			Connected: k.Connected, LastSeen: k.LastSeenAt})
	}
	accepted := r.acceptor.status()
	slices.SortFunc(accepted, func(a, b transport.LinkStatus) int { return strings.Compare(a.Remote, b.Remote) })
	for _, ls := range accepted {
		out.Links = append(out.Links, link(ls))
	}
	return out
}
