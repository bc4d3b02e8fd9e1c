package main

import (
	"bytes"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/siot-io/siot/replica"
)

// The Prometheus endpoint of `siot serve --http`: GET /metrics in the text
// exposition format 0.0.4, written by hand. client_golang would add about
// 660 KB to the binary and five modules for what is a snapshot of one
// struct; the format is a few rules (HELP and TYPE lines, escaped label
// values, one family at a time), and the tests check the output with
// Prometheus's own parser.

const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// promWriter writes metric families in the text format. Families must be
// written whole, one after the other, each name once.
type promWriter struct{ b bytes.Buffer }

// family starts a family: its HELP and TYPE lines.
func (w *promWriter) family(name, typ, help string) {
	w.b.WriteString("# HELP ")
	w.b.WriteString(name)
	w.b.WriteByte(' ')
	w.b.WriteString(escapeHelp(help))
	w.b.WriteString("\n# TYPE ")
	w.b.WriteString(name)
	w.b.WriteByte(' ')
	w.b.WriteString(typ)
	w.b.WriteByte('\n')
}

// sample writes one sample; labels are name, value pairs.
func (w *promWriter) sample(name string, v float64, labels ...string) {
	w.b.WriteString(name)
	if len(labels) > 0 {
		w.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.b.WriteByte(',')
			}
			w.b.WriteString(labels[i])
			w.b.WriteString(`="`)
			w.b.WriteString(escapeLabel(labels[i+1]))
			w.b.WriteByte('"')
		}
		w.b.WriteByte('}')
	}
	w.b.WriteByte(' ')
	w.b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	w.b.WriteByte('\n')
}

// one writes a family of a single unlabeled sample.
func (w *promWriter) one(name, typ, help string, v float64) {
	w.family(name, typ, help)
	w.sample(name, v)
}

// counts writes a family with one sample per labeled count.
func (w *promWriter) counts(name, help, label string, cs []replica.Count) {
	w.family(name, "counter", help)
	for _, c := range cs {
		w.sample(name, float64(c.Value), label, c.Label)
	}
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
func escapeHelp(s string) string  { return helpEscaper.Replace(s) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// processInfo is what the endpoint reports about the process itself.
type processInfo struct {
	start   time.Time
	version string
}

// writeMetrics renders the replica's metrics and the process's.
func writeMetrics(w *promWriter, m replica.Metrics, p processInfo) {
	w.counts("siot_points_applied_total", "Points that won their register, by the path they came by: local (local API and import), push (links), repair (fetched by this side's repair rounds).", "path", m.Applied)
	w.counts("siot_points_stale_total", "Points received that lost to what the store already held, by path.", "path", m.Stale)
	w.counts("siot_points_rejected_total", "Points refused, alone or with the write that carried them, by reason.", "reason", m.RejectedPoints)
	w.counts("siot_writes_rejected_total", "Writes (local requests, imports, pushes) refused whole, by reason.", "reason", m.RejectedWrites)
	w.counts("siot_repair_rounds_total", "Digest repair rounds this side ran, by result: equal (the scopes matched) or different.", "result", m.RepairRounds)
	w.one("siot_repair_round_trips_total", "counter", "Request/reply exchanges of this side's repair rounds.", float64(m.RepairRoundTrips))
	w.family("siot_repair_bytes_total", "counter", "Bytes of this side's repair rounds, by direction: out (requests and pushes), in (replies).")
	w.sample("siot_repair_bytes_total", float64(m.RepairBytesIn), "direction", "in")
	w.sample("siot_repair_bytes_total", float64(m.RepairBytesOut), "direction", "out")
	w.family("siot_repair_points_total", "counter", "Points this side's repair rounds moved, by direction: in (fetched), out (sent).")
	w.sample("siot_repair_points_total", float64(m.RepairFetched), "direction", "in")
	w.sample("siot_repair_points_total", float64(m.RepairSent), "direction", "out")
	w.counts("siot_history_samples_total", "Samples added to the registers' histories, by path: write (with the points of writes, pushes and repairs), round (merged by history rounds).", "path", m.HistorySamples)
	w.counts("siot_history_dropped_total", "Samples the history upkeep dropped, by kind: kept (past the retention, or acknowledged history over the budget), unacknowledged (over the budget before an upstream acknowledged them).", "kind", m.HistoryDropped)
	w.counts("siot_rule_transitions_total", "Changes of rule instances this instance made, by state: active (fired), inactive (cleared).", "state", m.RuleTransitions)
	w.family("siot_notifications_total", "counter", "Notification delivery attempts this instance made, by channel (webhook, email) and result: sent, retry (failed, to be tried again), failed (given up).")
	for _, c := range m.Notifications {
		w.sample("siot_notifications_total", float64(c.Value), "channel", c.Channel, "result", c.Result)
	}
	w.one("siot_repair_answer_seconds_total", "counter", "Time spent answering the repair requests of remotes.", m.RepairAnswerTime.Seconds())
	w.one("siot_links_refused_total", "counter", "Link handshakes refused (wrong root, detached edge, bad protocol, an identity that may not link so).", float64(m.LinksRefused))
	w.counts("siot_requests_refused_total", "API requests refused before they did anything, by reason: forbidden (outside the identity's scope), limited (over a per-identity limit), invalid.", "reason", m.RequestsRefused)
	w.one("siot_login_failures_total", "counter", "Password sign-ins refused.", float64(m.LoginFailures))
	w.counts("siot_connections_refused_total", "Connections refused at sign-in, by reason: refused (unknown, revoked or expired credentials, anonymous), connection limit, bad signature, websocket origin, websocket limit (/nats).", "reason", m.ConnectionsRefused)

	linkLabels := func(l replica.LinkMetrics) []string {
		return []string{"url", l.URL, "role", l.Role, "remote", l.Remote}
	}
	linkFamily := func(name, typ, help string, v func(replica.LinkMetrics) float64) {
		w.family(name, typ, help)
		for _, l := range m.Links {
			w.sample(name, v(l), linkLabels(l)...)
		}
	}
	linkFamily("siot_link_connected", "gauge", "1 while the link's session is up. url is empty for a link a remote opened here.",
		func(l replica.LinkMetrics) float64 { return b2f(l.Connected) })
	linkFamily("siot_link_in_sync", "gauge", "1 when the link's last digest comparison matched and nothing is pending either way.",
		func(l replica.LinkMetrics) float64 { return b2f(l.InSync) })
	linkFamily("siot_link_pending_changes", "gauge", "Changes the remote still lacks, estimated by this side's sender (the link's lag).",
		func(l replica.LinkMetrics) float64 { return float64(l.Pending) })
	linkFamily("siot_link_sent_bytes_total", "counter", "Frame bytes sent on the link (a link a remote opened counts from its session's start).",
		func(l replica.LinkMetrics) float64 { return float64(l.BytesSent) })
	linkFamily("siot_link_received_bytes_total", "counter", "Frame bytes received on the link (a link a remote opened counts from its session's start).",
		func(l replica.LinkMetrics) float64 { return float64(l.BytesRecv) })

	w.family("siot_link_online", "gauge", "1 while a session of the link is up, 0 once it ended; every link this server has known, kept across restarts. link is a dialed link's URL, an edge's root node or an accepted peer's instance; kind is upstream, peer or edge.")
	for _, k := range m.Known {
		w.sample("siot_link_online", b2f(k.Connected), "link", k.Name, "kind", k.Kind)
	}
	w.family("siot_link_last_seen_seconds", "gauge", "When the link's remote last spoke, in seconds since the Unix epoch: for a link that is down, when it went offline.")
	for _, k := range m.Known {
		w.sample("siot_link_last_seen_seconds", float64(k.LastSeen.UnixMilli())/1000, "link", k.Name, "kind", k.Kind)
	}

	w.one("siot_store_last_change", "gauge", "The store's last change number: it grows by one with every point applied.", float64(m.LastSeq))
	w.one("siot_store_disk_bytes", "gauge", "Bytes the store's files take on disk (every file under --data), measured at most every 2 s.", float64(m.DiskBytes))

	w.family("siot_build_info", "gauge", "Always 1; the labels say which build runs.")
	w.sample("siot_build_info", 1, "version", p.version, "goversion", runtime.Version())
	w.one("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.", float64(p.start.UnixMilli())/1000)
	w.one("go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.one("go_memstats_heap_alloc_bytes", "gauge", "Bytes of allocated heap objects.", float64(ms.HeapAlloc))
	w.one("go_memstats_sys_bytes", "gauge", "Bytes of memory obtained from the OS.", float64(ms.Sys))
	w.one("go_gc_cycles_total", "counter", "Completed garbage collection cycles.", float64(ms.NumGC))
	if rss, ok := residentBytes(); ok {
		w.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", float64(rss))
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		w.one("process_open_fds", "gauge", "Number of open file descriptors.", float64(len(fds)))
	}
}

// residentBytes reads the process's resident set size from /proc (Linux).
func residentBytes() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * uint64(os.Getpagesize()), true
}

// metricsHandler serves GET /metrics.
func metricsHandler(rep *replica.Replica, p processInfo) http.HandlerFunc {
	return func(rw http.ResponseWriter, _ *http.Request) {
		var w promWriter
		writeMetrics(&w, rep.Metrics(), p)
		rw.Header().Set("Content-Type", metricsContentType)
		_, _ = rw.Write(w.b.Bytes())
	}
}
