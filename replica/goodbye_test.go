package replica

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/siot-io/siot/transport"
)

// logSink collects a node's JSON log records.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the records at level warn or above, and every record
// whose text mentions "malformed".
func (l *logSink) bad() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var rec struct{ Level string }
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Level == "WARN" || rec.Level == "ERROR" ||
			strings.Contains(sc.Text(), "malformed") {
			out = append(out, sc.Text())
		}
	}
	return out
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logTo makes a node's logger write JSON records at debug level to sink.
func logTo(sink *logSink, then func(*Config)) func(*Config) {
	return func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if then != nil {
			then(c)
		}
	}
}

// accepted returns the cloud's accepted link from remote instance inst.
func accepted(n *node, inst uuid.UUID) (transport.LinkStatus, bool) {
	for _, l := range n.rep.Status().Accepted {
		if l.Remote == inst.String() {
			return l, true
		}
	}
	return transport.LinkStatus{}, false
}

// eachCreds runs test with an edge that links as the cloud's
// administrator, then as a device with its own key (whose connection may
// only answer reply subjects and use its session's subjects).
func eachCreds(t *testing.T, test func(t *testing.T, deviceKey bool)) {
	t.Run("admin", func(t *testing.T) { test(t, false) })
	t.Run("device key", func(t *testing.T) { test(t, true) })
}

// edgeOpts are the options of an edge of cloud, linking with a device key
// of its own or as the cloud's administrator.
func edgeOpts(cloud *node, deviceKey bool, tune func(*Config)) nodeOpts {
	o := nodeOpts{upstreams: []string{cloud.url()}, tune: tune}
	if deviceKey {
		o.root = uuid.New()
		o.upstreamCreds = cloud.deviceCreds(o.root)
	}
	return o
}

// An edge that stops cleanly says goodbye: the cloud shows its link
// disconnected within a second, not when the session times out, and logs
// no warning about it.
func TestEdgeStopShowsDisconnectedAtOnce(t *testing.T) {
	eachCreds(t, testEdgeStopShowsDisconnectedAtOnce)
}

func testEdgeStopShowsDisconnectedAtOnce(t *testing.T, deviceKey bool) {
	var cloudLog logSink
	cloud := startNode(t, "cloud", nodeOpts{tune: logTo(&cloudLog, func(c *Config) {
		// Only a goodbye can end the session in time: no timeout, and
		// no check of the dialer's connections.
		c.SessionTimeout, c.RevalidateInterval = time.Hour, time.Hour
	})})
	edge := startNode(t, "edge", edgeOpts(cloud, deviceKey, nil))
	edge.waitInSync(cloud.url())
	inst := edge.st.Instance()
	if l, ok := accepted(cloud, inst); !ok || !l.Connected {
		t.Fatalf("cloud's link from the edge before it stops: %+v %v", l, ok)
	}
	edge.stop()
	stopped := time.Now()
	waitFor(t, "the cloud shows the edge disconnected", 5*time.Second, func() bool {
		l, ok := accepted(cloud, inst)
		return ok && !l.Connected
	})
	if took := time.Since(stopped); took > time.Second {
		t.Fatalf("the cloud showed the edge disconnected after %v, want within 1s", took)
	}
	l, _ := accepted(cloud, inst)
	seen, err := time.Parse(time.RFC3339, l.LastSeen)
	if err != nil || seen.After(time.Now()) || time.Since(seen) > time.Minute {
		t.Fatalf("offline link's lastSeen %q: %v", l.LastSeen, err)
	}
	if bad := cloudLog.bad(); len(bad) > 0 {
		t.Fatalf("the cloud logged on a clean edge stop:\n%s", strings.Join(bad, "\n"))
	}
}

// A cloud whose replica stops cleanly (its NATS server may run on: a
// cluster member, a hub) says goodbye: the edge shows its upstream
// disconnected at once, not at its next ping, and logs no warning.
func TestCloudStopShowsUpstreamDisconnectedAtOnce(t *testing.T) {
	eachCreds(t, testCloudStopShowsUpstreamDisconnectedAtOnce)
}

func testCloudStopShowsUpstreamDisconnectedAtOnce(t *testing.T, deviceKey bool) {
	var edgeLog logSink
	cloud := startNode(t, "cloud", nodeOpts{})
	edge := startNode(t, "edge", edgeOpts(cloud, deviceKey, logTo(&edgeLog, func(c *Config) {
		c.PingInterval, c.KeepAlive = time.Hour, time.Hour
	})))
	edge.waitInSync(cloud.url())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closing := time.Now()
	if err := cloud.rep.Close(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("the cloud closed in %v", time.Since(closing))
	// Closed, not stopped: the server runs on until the test ends.
	rep := cloud.rep
	t.Cleanup(func() { cloud.rep = rep })
	l := edge.link(cloud.url())
	if l.Connected {
		t.Fatalf("edge's upstream after the cloud closed: %+v, want disconnected at once", l)
	}
	waitFor(t, "the reason in the status", time.Second, func() bool {
		l = edge.link(cloud.url())
		return strings.Contains(l.LastError, "closed the session") && l.LastSeen != ""
	})
	// The next attempts fail (no replica answers): at debug, not warn.
	waitFor(t, "a failed attempt", 5*time.Second, func() bool {
		return strings.Contains(edgeLog.String(), "link attempt failed")
	})
	if bad := edgeLog.bad(); len(bad) > 0 {
		t.Fatalf("the edge logged on a clean cloud stop:\n%s", strings.Join(bad, "\n"))
	}
}

// A push whose remote no longer listens gets the server's no-responders
// status on its ack subject: the session ends saying so, not with a
// "malformed message" (an empty frame).
func TestPushToAGoneSessionIsNotMalformed(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{tune: func(c *Config) { c.SessionTimeout, c.RevalidateInterval = time.Hour, time.Hour }})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}, tune: func(c *Config) {
		c.PingInterval, c.KeepAlive, c.RetryMin, c.RetryMax = time.Hour, time.Hour, time.Hour, time.Hour
	}})
	edge.waitInSync(cloud.url())
	// The cloud lets go of the session without a word, as a replica that
	// predates goodbyes, or one that died under a running server.
	cloud.rep.acceptor.mu.Lock()
	var sessions []*acceptedSession
	for _, as := range cloud.rep.acceptor.sessions {
		sessions = append(sessions, as)
	}
	cloud.rep.acceptor.mu.Unlock()
	for _, as := range sessions {
		for _, sub := range as.subs {
			_ = sub.Unsubscribe()
		}
	}
	_ = cloud.rep.nc.Flush()
	sensor := uuid.New()
	edge.write(edgePt(edge.root, sensor), valPt(sensor, "temp", 1))
	waitFor(t, "the edge's session ends", 10*time.Second, func() bool {
		l := edge.link(cloud.url())
		return !l.Connected && l.LastError != ""
	})
	l := edge.link(cloud.url())
	if strings.Contains(l.LastError, "malformed") || !strings.Contains(l.LastError, "no responders") {
		t.Fatalf("edge's upstream ended with %q, want no responders and not malformed", l.LastError)
	}
}

// The link book keeps both ends' view across restarts: the cloud its
// edge, by the edge's root; the edge its upstream, by URL, with the time
// each last saw the other.
func TestLinkBookSurvivesRestarts(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}})
	edge.waitInSync(cloud.url())
	known := func(n *node, kind, name string) (KnownLink, bool) {
		for _, k := range n.rep.Metrics().Known {
			if k.Kind == kind && k.Name == name {
				return k, true
			}
		}
		return KnownLink{}, false
	}
	if k, ok := known(cloud, KindEdge, edge.root.String()); !ok || !k.Connected || k.Remote != edge.st.Instance().String() {
		t.Fatalf("cloud's book while the edge is linked: %+v %v", k, ok)
	}
	edge.stop()
	cloud.stop()
	cloud.start()
	k, ok := known(cloud, KindEdge, edge.root.String())
	if !ok || k.Connected || k.Role != "edge" || k.LastSeen.IsZero() || time.Since(k.LastSeen) > time.Minute {
		t.Fatalf("cloud's book after a restart: %+v %v", k, ok)
	}
	if l, ok := accepted(cloud, edge.st.Instance()); !ok || l.Connected || l.LastSeen != formatSeen(k.LastSeen) {
		t.Fatalf("cloud's status after a restart: %+v %v, want offline since %v", l, ok, k.LastSeen)
	}
	// The edge comes back while its cloud is down: its upstream shows
	// when it was last seen.
	url := cloud.url()
	cloud.stop()
	edge.start()
	l := edge.link(url)
	up, ok := known(edge, KindUpstream, url)
	if l.Connected || l.LastSeen == "" || !ok || up.Connected || l.LastSeen != formatSeen(up.LastSeen) {
		t.Fatalf("edge's upstream after a restart: %+v, book %+v %v", l, up, ok)
	}
	cloud.start()
	edge.waitInSync(url)
	if k, ok := known(cloud, KindEdge, edge.root.String()); !ok || !k.Connected {
		t.Fatalf("cloud's book once the edge is back: %+v %v", k, ok)
	}
}

// A live link's stored last-seen time is refreshed on a timer, so that a
// crash (no session end recorded) loses at most seenRefresh of it.
func TestLiveLinkLastSeenRefreshed(t *testing.T) {
	cloud := startNode(t, "cloud", nodeOpts{})
	edge := startNode(t, "edge", nodeOpts{upstreams: []string{cloud.url()}})
	edge.waitInSync(cloud.url())
	stored := func() linkRecord {
		var rec linkRecord
		name := recordName(KindEdge, edge.root.String())
		if err := cloud.st.LinkRecords(func(n string, data []byte) error {
			if n == name {
				return msgpack.Unmarshal(data, &rec)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	first := stored()
	if !first.Connected || first.LastSeen == 0 {
		t.Fatalf("stored record of a live link: %+v", first)
	}
	// The edge speaks after the record was written.
	waitFor(t, "a message after the record", 10*time.Second, func() bool {
		edge.write(valPt(edge.root, "temp", float64(time.Now().UnixNano())))
		as, _ := accepted(cloud, edge.st.Instance())
		seen, _ := time.Parse(time.RFC3339, as.LastSeen)
		return seen.UnixMilli() > first.LastSeen
	})
	cloud.rep.links.refresh(time.UnixMilli(first.LastSeen).Add(seenRefresh / 2))
	if got := stored(); got.LastSeen != first.LastSeen {
		t.Fatalf("refreshed before seenRefresh: %+v", got)
	}
	cloud.rep.links.refresh(time.UnixMilli(first.LastSeen).Add(seenRefresh))
	got := stored()
	if !got.Connected || got.LastSeen <= first.LastSeen || time.Since(time.UnixMilli(got.LastSeen)) > time.Minute {
		t.Fatalf("stored record after a refresh: %+v, first %+v", got, first)
	}
}
