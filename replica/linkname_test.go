package replica

import (
	"strings"
	"testing"

	"github.com/siot-io/siot/store"
)

// A link record's name fits the store's limit whatever the URL, and two
// long URLs that share their beginning keep two records (a record name
// too long made the store refuse every record saved with it).
func TestRecordNameFitsTheStore(t *testing.T) {
	long := "nats://" + strings.Repeat("h", 300)
	a, b := recordName(KindUpstream, long+"a:4222"), recordName(KindUpstream, long+"b:4222")
	if len(a) > store.MaxLinkName || len(b) > store.MaxLinkName || a == b {
		t.Fatalf("record names %q (%d bytes) and %q (%d bytes)", a, len(a), b, len(b))
	}
	if short := recordName(KindUpstream, "nats://h:4222"); short != KindUpstream+"/nats://h:4222" {
		t.Fatalf("a short name changed: %q", short)
	}
}
