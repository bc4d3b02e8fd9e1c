package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/siot-io/siot/transport"
)

// fullStatus returns `siot status --json` of server, decoded.
func fullStatus(t *testing.T, server string) transport.Status {
	t.Helper()
	var st transport.Status
	out := mustCLI(t, "", "status", "--json", "--server", server)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v: %q", err, out)
	}
	return st
}

// acceptedFrom returns the accepted link of st from remote instance inst.
func acceptedFrom(st transport.Status, inst string) (transport.LinkStatus, bool) {
	for _, l := range st.Accepted {
		if l.Remote == inst {
			return l, true
		}
	}
	return transport.LinkStatus{}, false
}

// An edge links, then stops: the cloud shows it offline since then, in
// status (human and JSON) and in the metrics, and still does after the
// cloud restarts.
func TestCloudShowsOfflineEdgeSinceItStoppedAcrossRestart(t *testing.T) {
	cloudData := t.TempDir()
	cloud := serve(t, "--data", cloudData, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	edge := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--upstream", cloud.nats)
	waitUntil(t, "edge in sync", func() bool {
		st := status(t, edge.nats)
		return len(st.Links) == 1 && st.Links[0].Connected && st.Links[0].InSync
	})
	inst := fullStatus(t, edge.nats).Instance
	if l, ok := acceptedFrom(fullStatus(t, cloud.nats), inst); !ok || !l.Connected {
		t.Fatalf("cloud's link from the edge: %+v %v", l, ok)
	}
	linked := time.Now()
	if err := edge.stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()

	var offline transport.LinkStatus
	waitUntil(t, "the cloud shows the edge offline", func() bool {
		l, ok := acceptedFrom(fullStatus(t, cloud.nats), inst)
		offline = l
		return ok && !l.Connected
	})
	seen, err := time.Parse(time.RFC3339, offline.LastSeen)
	if err != nil || seen.Before(linked.Add(-time.Minute)) || seen.After(stopped.Add(time.Second)) {
		t.Fatalf("offline edge's lastSeen %q (%v), want between %v and %v", offline.LastSeen, err, linked, stopped)
	}
	human := mustCLI(t, "", "status", "--server", cloud.nats)
	want := "offline since " + seen.UTC().Format("2006-01-02 15:04:05 UTC")
	if !strings.Contains(human, "from "+inst) || !strings.Contains(human, want) {
		t.Fatalf("status does not show the edge %s %q:\n%s", inst, want, human)
	}
	fams := scrape(t, cloud.http)
	if v, ok := metricValue(fams, "siot_link_online", "link", edge.id, "kind", "edge"); !ok || v != 0 {
		t.Fatalf("siot_link_online of the stopped edge = %v %v, want 0", v, ok)
	}
	if v, ok := metricValue(fams, "siot_link_last_seen_seconds", "link", edge.id, "kind", "edge"); !ok || v != float64(seen.UnixMilli())/1000 {
		t.Fatalf("siot_link_last_seen_seconds = %v %v, want %v", v, ok, float64(seen.UnixMilli())/1000)
	}

	if err := cloud.stop(); err != nil {
		t.Fatal(err)
	}
	cloud = serve(t, "--data", cloudData, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	l, ok := acceptedFrom(fullStatus(t, cloud.nats), inst)
	if !ok || l.Connected || l.LastSeen != offline.LastSeen || l.Role != "edge" {
		t.Fatalf("after a restart the cloud shows the edge as %+v (%v), want offline since %s", l, ok, offline.LastSeen)
	}
	fams = scrape(t, cloud.http)
	if v, ok := metricValue(fams, "siot_link_last_seen_seconds", "link", edge.id, "kind", "edge"); !ok || v != float64(seen.UnixMilli())/1000 {
		t.Fatalf("after a restart siot_link_last_seen_seconds = %v %v", v, ok)
	}
}

// siot_store_disk_bytes and status diskBytes measure the data directory:
// not 0, and larger after an import.
func TestDiskBytesGrowAfterImport(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	before, _ := metricValue(scrape(t, srv.http), "siot_store_disk_bytes")
	if before <= 0 || fullStatus(t, srv.nats).Disk <= 0 {
		t.Fatalf("disk bytes of a new store: metric %v, status %d; want > 0", before, fullStatus(t, srv.nats).Disk)
	}
	var in strings.Builder
	pad := strings.Repeat("x", 400)
	in.WriteString(`{"node":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","parent":"` + srv.id + `","type":"edge"}` + "\n")
	for i := range 20000 {
		in.WriteString(`{"node":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","type":"blob","key":"` + strconv.Itoa(i) + `","text":"` + pad + `"}` + "\n")
	}
	mustCLI(t, in.String(), "import", "--server", srv.nats)
	waitUntil(t, "disk bytes to grow by the import", func() bool {
		v, _ := metricValue(scrape(t, srv.http), "siot_store_disk_bytes")
		return v >= before+4<<20 && fullStatus(t, srv.nats).Disk >= int64(before)+4<<20
	})
}
