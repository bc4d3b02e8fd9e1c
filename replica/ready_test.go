package replica

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/siot-io/siot/store"
)

// Writes refused for a full disk are logged at most once per interval,
// each line with the writes and points refused since the last; a burst's
// tail is logged by the timer's flush; other errors are not counted.
func TestDiskFullRefusalsLoggedOncePerIntervalWithCounts(t *testing.T) {
	var sink logSink
	now := time.Unix(1_800_000_000, 0)
	l := &refusalLog{log: slog.New(slog.NewJSONHandler(&sink, nil)), now: func() time.Time { return now }, interval: time.Minute}
	full := fmt.Errorf("%w: 1000 bytes free under /data, floor 268435456", store.ErrDiskFull)
	lines := func() []string {
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(sink.String()), "\n") {
			if line != "" {
				out = append(out, line)
			}
		}
		return out
	}

	l.note(5, full) // the first refusal: logged at once
	if got := lines(); len(got) != 1 || !strings.Contains(got[0], `"msg":"refused 1 writes (5 points): store: free disk space below the configured floor: 1000 bytes free under /data, floor 268435456"`) {
		t.Fatalf("after the first refusal: %q", got)
	}
	for i := range 30 { // a write every second for 30 s: none logged
		now = now.Add(time.Second)
		l.note(i+1, full)
		l.flush()
	}
	l.note(7, fmt.Errorf("store: closed")) // not a full disk: not counted
	if got := lines(); len(got) != 1 {
		t.Fatalf("refusals within the interval logged: %q", got)
	}
	now = now.Add(30 * time.Second) // a minute after the first line
	l.flush()
	got := lines()
	if len(got) != 2 || !strings.Contains(got[1], `"msg":"refused 30 writes (465 points) in the last 1m0s: store: free disk`) ||
		!strings.Contains(got[1], `"level":"WARN"`) || !strings.Contains(got[1], `"writes":30,"points":465,"in_last":"1m0s"`) {
		t.Fatalf("the interval's line: %q", got)
	}
	now = now.Add(time.Hour)
	l.flush() // nothing refused since: nothing logged
	if got := lines(); len(got) != 2 {
		t.Fatalf("a line with nothing refused: %q", got)
	}
}
