package bus

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzReadOp: readOp never panics, never returns a payload larger than
// the maximum, and stops at the first error. Seeds: testdata/fuzz.
func FuzzReadOp(f *testing.F) {
	for _, s := range []string{
		"CONNECT {\"verbose\":false}\r\nPING\r\n", "PUB a.b 5\r\nhello\r\n", "PUB a.b r.1 0\r\n\r\n",
		"HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n", "SUB a.* q 1\r\nUNSUB 1 10\r\n", "pong\r\n", "PUB a 99999999999\r\n",
		"SUB a.>.b 1\r\n", "HPUB a 5 3\r\n", "UNSUB\r\n",
	} {
		f.Add([]byte(s))
	}
	const maxPayload = 64
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(in), readBufferSize)
		for range 1000 {
			o, err := readOp(r, maxPayload)
			if err != nil {
				return
			}
			if len(o.payload) > maxPayload || o.hdr > len(o.payload) {
				t.Fatalf("op %+v past the limits", o)
			}
			if o.kind == opPub && (!validSubject(o.subject, false) || o.reply != "" && !validSubject(o.reply, false)) {
				t.Fatalf("PUB to %q, reply %q", o.subject, o.reply)
			}
			if o.kind == opSub && !validSubject(o.subject, true) {
				t.Fatalf("SUB to %q", o.subject)
			}
		}
	})
}
