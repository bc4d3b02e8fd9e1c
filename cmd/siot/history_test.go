package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"now":                           now,
		"-24h":                          now.Add(-24 * time.Hour),
		"-90m":                          now.Add(-90 * time.Minute),
		"+1h":                           now.Add(time.Hour),
		"-7d":                           now.Add(-7 * 24 * time.Hour),
		"-1d12h":                        now.Add(-36 * time.Hour),
		"1772366400000":                 time.UnixMilli(1772366400000),
		"0":                             time.UnixMilli(0),
		"2026-02-01":                    time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC),
		"2026-02-01T10:00:00Z":          time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC),
		"2026-02-01T11:00:00.250+01:00": time.Date(2026, 2, 1, 10, 0, 0, 250e6, time.UTC),
	} {
		got, err := parseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-24", "-1x", "2026-02-30", "12:00", "-7d-1h", "1e3", "-99999999999d"} {
		if got, err := parseTime(in, now); err == nil {
			t.Errorf("parseTime(%q) = %v, want an error", in, got)
		}
	}
	for in, want := range map[string]time.Duration{"1d": 24 * time.Hour, "15m": 15 * time.Minute, "500ms": 500 * time.Millisecond, "2d6h": 54 * time.Hour} {
		if got, err := parseDays(in); err != nil || got != want {
			t.Errorf("parseDays(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// histBase is where the command tests' histories start.
var histBase = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

// writeSamples writes n readings of node's point temp, one a second from
// histBase (sample i is i quarter-degrees, every 50th a tombstone, every
// 70th a text), each stamped with its time and origin so that every
// write is one sample of the history.
func writeSamples(t *testing.T, server string, node, origin uuid.UUID, n int) {
	t.Helper()
	cl, err := client.Dial(context.Background(), server, client.WithCredsFile(credsFor(server)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pts := make([]client.Point, n)
	for i := range pts {
		p := client.Point{Node: node, Type: "temp", Value: float64(i) / 4,
			Time: crdt.NewTimestamp(histBase.UnixMilli()+int64(i)*1000, 0), Origin: origin}
		switch {
		case i%50 == 49:
			p.Tombstone = true
		case i%70 == 69:
			p.Value, p.Text = 0, "sensor off"
		}
		pts[i] = p
	}
	if _, err := cl.SetBatch(context.Background(), pts); err != nil {
		t.Fatal(err)
	}
}

// histJSON is one line of history --json.
type histJSON struct {
	Time      string   `json:"time"`
	HLC       string   `json:"hlc"`
	Origin    string   `json:"origin"`
	Value     *float64 `json:"value"`
	Text      string   `json:"text"`
	Tombstone bool     `json:"tombstone"`
}

// stepJSON is one line of history --step --json.
type stepJSON struct {
	Start, LastTime           string
	Count                     int
	Min, Max, Mean, Sum, Last float64
}

func histLines[T any](t *testing.T, out string) []T {
	t.Helper()
	var recs []T
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var r T
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestHistoryCommand: siot history prints a point's history, raw and per
// step, as text and JSON, within a span, and refuses what it must.
func TestHistoryCommand(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	node := strings.TrimSpace(mustCLI(t, "", append([]string{"node", "add", "--type", "sensor"}, s...)...))
	origin := uuid.MustParse("0badcafe-0000-4000-8000-000000000001")
	writeSamples(t, srv.nats, uuid.MustParse(node), origin, 300)
	hist := func(args ...string) string {
		t.Helper()
		return mustCLI(t, "", append(append([]string{"history", node}, args...), s...)...)
	}

	recs := histLines[histJSON](t, hist("temp", "--json"))
	if len(recs) != 300 {
		t.Fatalf("--json: %d lines, want 300", len(recs))
	}
	for i, r := range recs {
		at := histBase.Add(time.Duration(i) * time.Second).Format("2006-01-02T15:04:05.000Z")
		ok := r.Time == at && r.Origin == origin.String() && r.HLC == crdt.NewTimestamp(histBase.UnixMilli()+int64(i)*1000, 0).String()
		switch {
		case i%50 == 49:
			ok = ok && r.Tombstone && r.Value != nil
		case i%70 == 69:
			ok = ok && r.Text == "sensor off" && r.Value == nil && !r.Tombstone
		default:
			ok = ok && r.Value != nil && *r.Value == float64(i)/4 && !r.Tombstone && r.Text == ""
		}
		if !ok {
			t.Fatalf("line %d: %+v", i, r)
		}
	}

	text := strings.Split(strings.TrimSuffix(hist("temp.0"), "\n"), "\n")
	if len(text) != 300 || text[2] != "2024-01-01T12:00:02.000Z  0.5  origin 0badcafe" ||
		text[49] != "2024-01-01T12:00:49.000Z  deleted  origin 0badcafe" || text[69] != `2024-01-01T12:01:09.000Z  "sensor off"  origin 0badcafe` {
		t.Fatalf("text: %d lines: %q %q %q", len(text), text[2], text[49], text[69])
	}

	// A span: RFC 3339 to Unix ms; the end is excluded.
	span := histLines[histJSON](t, hist("temp", "--json", "--from", "2024-01-01T12:01:00Z", "--to", strconv.FormatInt(histBase.Add(2*time.Minute).UnixMilli(), 10)))
	if len(span) != 60 || span[0].Time != "2024-01-01T12:01:00.000Z" || span[59].Time != "2024-01-01T12:01:59.000Z" {
		t.Fatalf("a span: %d lines", len(span))
	}
	// Nothing in the last hour: a note, no line.
	out, errOut, err := cli(t, "", append([]string{"history", node, "temp", "--from", "-1h"}, s...)...)
	if err != nil || out != "" || !strings.Contains(errOut, "no history of "+node+" temp.0 in that span") {
		t.Fatalf("an empty span: %v %q %q", err, out, errOut)
	}

	// Per minute: count, min, max, mean, last, as computed by hand.
	steps := histLines[stepJSON](t, hist("temp", "--step", "1m", "--from", histBase.Format(time.RFC3339), "--json"))
	if len(steps) != 5 {
		t.Fatalf("--step 1m: %d steps", len(steps))
	}
	for k, st := range steps {
		var want stepJSON
		for i := 60 * k; i < 60*(k+1); i++ {
			if i%50 == 49 {
				continue
			}
			v := float64(i) / 4
			if i%70 == 69 {
				v = 0
			}
			if want.Count == 0 || v < want.Min {
				want.Min = v
			}
			want.Max = max(want.Max, v)
			want.Count++
			want.Sum += v
			want.Last = v
			want.LastTime = histBase.Add(time.Duration(i) * time.Second).Format("2006-01-02T15:04:05.000Z")
		}
		want.Mean = want.Sum / float64(want.Count)
		want.Start = histBase.Add(time.Duration(k) * time.Minute).Format("2006-01-02T15:04:05.000Z")
		if st != want {
			t.Fatalf("step %d: %+v, want %+v", k, st, want)
		}
	}
	if line := strings.SplitN(hist("temp", "--step", "1m", "--from", "2024-01-01"), "\n", 2)[0]; line != "2024-01-01T12:00:00.000Z  count 59  min 0  max 14.75  mean 7.29237  last 14.75" {
		t.Fatalf("--step text: %q", line)
	}

	// Refusals: usage errors before anything is sent, others after.
	var ue *UsageError
	for _, args := range [][]string{
		{"history", node},
		{"history", "not-a-uuid", "temp"},
		{"history", node, "te mp"},
		{"history", node, "temp."},
		{"history", node, strings.Repeat("t", crdt.MaxTypeLen+1)},
		{"history", node, "temp", "--from", "yesterday"},
		{"history", node, "temp", "--from", "-1h", "--to", "-2h"},
		{"history", node, "temp", "--step", "0s"},
		{"history", node, "temp", "--step", "1500us"},
		{"history", node, "temp", "--step", "-1m"},
	} {
		if _, _, err := cli(t, "", append(args, s...)...); !errors.As(err, &ue) {
			t.Errorf("siot %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"history", uuid.NewString(), "temp"}, "history: unknown node"},
		{[]string{"history", node, "email"}, "no history is kept of email points"},
	} {
		_, _, err := cli(t, "", append(c.args, s...)...)
		if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("siot %s: %v, want an error saying %q", strings.Join(c.args, " "), err, c.want)
		}
	}
	// A device reads its own subtree's history, not another node's.
	dir := t.TempDir()
	devCreds := filepath.Join(dir, "dev.creds")
	dev := histLines[map[string]string](t, mustCLI(t, "", append([]string{"device", "add", "--out", devCreds, "--json"}, s...)...))[0]["node"]
	mustCLI(t, "", append([]string{"set", dev, "temp=19.5"}, s...)...)
	if out := mustCLI(t, "", "history", dev, "temp", "--server", srv.nats, "--creds", devCreds); !regexp.MustCompile(`^\S+Z  19\.5  origin [0-9a-f]{8}\n$`).MatchString(out) {
		t.Fatalf("the device's own history: %q", out)
	}
	_, _, err = cli(t, "", "history", node, "temp", "--server", srv.nats, "--creds", devCreds)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("a device reads outside its subtree: %v", err)
	}
	_, _, err = cli(t, "", "history", dev, "authKey", "--server", srv.nats, "--creds", devCreds)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("a device reads a credential's history: %v", err)
	}
}

// stopOnWrite is a command's standard output that stops the server at
// its first write, and keeps what it is given.
type stopOnWrite struct {
	mu   sync.Mutex
	b    strings.Builder
	stop func() error
	once sync.Once
}

func (w *stopOnWrite) Write(p []byte) (int, error) {
	w.once.Do(func() { _ = w.stop() })
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestHistoryCommandServerStops: a server that stops while history
// streams ends the command with an error that says how far it got, whole
// lines printed, and exit status 1.
func TestHistoryCommandServerStops(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	s := []string{"--server", srv.nats}
	node := strings.TrimSpace(mustCLI(t, "", append([]string{"node", "add", "--type", "sensor"}, s...)...))
	const n = 52_000 // two pages
	writeSamples(t, srv.nats, uuid.MustParse(node), uuid.MustParse("0badcafe-0000-4000-8000-000000000002"), n)
	out := &stopOnWrite{stop: srv.stop}
	m := &Main{Stdin: strings.NewReader(""), Stdout: out, Stderr: io.Discard, Getenv: testGetenv(s)}
	err := m.Run(context.Background(), append([]string{"history", node, "temp"}, s...))
	var ue *UsageError
	if err == nil || errors.As(err, &ue) {
		t.Fatalf("history while the server stops: %v, want an error (exit status 1)", err)
	}
	lines := strings.Count(out.b.String(), "\n")
	want := fmt.Sprintf("history: after %d lines, the last at ", lines)
	if lines == 0 || lines >= n || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(out.b.String(), "\n") ||
		!strings.Contains(err.Error(), "closed (the server stopped?)") {
		t.Fatalf("%d lines printed, then: %v", lines, err)
	}
	t.Logf("%d lines, then: %v", lines, err)
}
