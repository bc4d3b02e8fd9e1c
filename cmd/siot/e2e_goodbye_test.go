package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An edge process stopped by SIGTERM says goodbye: its cloud shows it
// disconnected within a second of its exit (not when the session times
// out), offline since about then, and logs no warning.
func TestE2ESigtermEdgeShowsOfflineAtOnce(t *testing.T) {
	e2eBinary(t)
	cloud := newProc(t, "cloud")
	cloud.start()
	edge := newProc(t, "edge", "--upstream", cloud.url)
	edge.start()
	waitLinks(t, edge, cloud.url)
	inst := edge.mustStatus().Instance
	if code, _ := edge.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("edge exit status %d", code)
	}
	exited := time.Now()
	var asked time.Time // when the status that showed it offline was asked for
	waitFor(t, "the cloud shows the edge offline", 10*time.Second, func() (bool, string) {
		asked = time.Now()
		st, err := cloud.status()
		if err != nil {
			return false, err.Error()
		}
		for _, l := range st.Accepted {
			if l.Remote == inst {
				return !l.Connected, fmt.Sprintf("%+v", l)
			}
		}
		return false, fmt.Sprintf("no link from %s: %+v", inst, st.Accepted)
	})
	if took := asked.Sub(exited); took > time.Second {
		t.Fatalf("the cloud showed the edge offline %v after it exited, want within 1s", took)
	}
	for _, level := range []string{`"level":"WARN"`, `"level":"ERROR"`, "malformed"} {
		if i := strings.Index(cloud.all.String(), level); i >= 0 {
			t.Fatalf("the cloud logged when its edge stopped: %.300s", cloud.all.String()[i:])
		}
	}
}
