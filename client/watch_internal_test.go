package client

import (
	"encoding/binary"
	"testing"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// TestDecodeChangesRefusesWhatWouldDuplicate: a reply whose change
// numbers do not grow past the request's, or go beyond its next, is an
// error: a watch never delivers a change twice, even from a faulty server.
func TestDecodeChangesRefusesWhatWouldDuplicate(t *testing.T) {
	n, origin := uuid.New(), uuid.New()
	reply := func(next uint64, seqs ...uint64) transport.WatchReply {
		var pts []crdt.Point
		var chg []byte
		for i, s := range seqs {
			pts = append(pts, crdt.Point{Node: n, Type: "t", Key: "0", Value: float64(i), Time: crdt.Timestamp(1 << 20), Origin: origin})
			chg = binary.BigEndian.AppendUint64(chg, s)
			chg = append(chg, make([]byte, 16)...)
		}
		return transport.WatchReply{Points: crdt.AppendBatch(nil, pts), Changes: chg, Next: next, Last: next}
	}
	if chs, err := decodeChanges(reply(12, 11, 12), 10); err != nil || len(chs) != 2 || chs[1].Seq != 12 {
		t.Fatalf("a good reply: %v %v", chs, err)
	}
	for name, c := range map[string]struct {
		rep   transport.WatchReply
		after uint64
	}{
		"a change already delivered": {reply(12, 10, 12), 10},
		"a change twice":             {reply(12, 11, 11), 10},
		"out of order":               {reply(12, 12, 11), 10},
		"beyond next":                {reply(11, 11, 12), 10},
		"next going back":            {reply(9), 10},
	} {
		if _, err := decodeChanges(c.rep, c.after); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
