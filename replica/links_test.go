package replica

import (
	"fmt"
	"testing"
	"time"

	"github.com/siot-io/siot/transport"
)

// A status lists the offline accepted links most recently seen first, and
// no more than fit in a status frame beside the live ones; a dialed link
// that is down gets its last-seen time.
func TestStatusListsOfflineLinksBounded(t *testing.T) {
	b := &linkBook{recs: make(map[string]*linkRecord), live: make(map[string]*session)}
	base := time.Unix(1_800_000_000, 0)
	for i := range maxStatusAccepted + 100 {
		name := fmt.Sprintf("edge-%05d", i)
		b.recs[recordName(KindEdge, name)] = &linkRecord{Kind: KindEdge, Name: name, Role: "edge",
			Remote: "inst-" + name, LastSeen: base.Add(time.Duration(i) * time.Second).UnixMilli()}
	}
	b.recs[recordName(KindUpstream, "nats://cloud:4222")] = &linkRecord{Kind: KindUpstream, Name: "nats://cloud:4222",
		Role: "edge", URL: "nats://cloud:4222", Remote: "cloud-inst", LastSeen: base.UnixMilli()}
	st := transport.Status{
		Links:    []transport.LinkStatus{{URL: "nats://cloud:4222", Role: "edge"}},
		Accepted: []transport.LinkStatus{{Role: "edge", Remote: "live-one", Connected: true}},
	}
	b.withHistory(&st)
	if len(st.Accepted) != maxStatusAccepted {
		t.Fatalf("%d accepted links listed, want %d", len(st.Accepted), maxStatusAccepted)
	}
	newest := fmt.Sprintf("inst-edge-%05d", maxStatusAccepted+99)
	if st.Accepted[0].Remote != "live-one" || st.Accepted[1].Remote != newest || st.Accepted[1].Connected ||
		st.Accepted[1].LastSeen != formatSeen(base.Add(time.Duration(maxStatusAccepted+99)*time.Second)) {
		t.Fatalf("first accepted links: %+v %+v", st.Accepted[0], st.Accepted[1])
	}
	if l := st.Links[0]; l.LastSeen != formatSeen(base) || l.Remote != "cloud-inst" {
		t.Fatalf("dialed link down: %+v", l)
	}
}
