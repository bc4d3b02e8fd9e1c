package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/history"
)

// msgSamples returns one value of every message type with every field set
// to something other than its zero value, so a field the encoding drops or
// renames shows up in a round trip.
func msgSamples() []any {
	inst := uuid.MustParse("00010203-0405-0607-0809-0a0b0c0d0e0f")
	root := uuid.MustParse("f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff")
	pts := crdt.AppendBatch(nil, wireSensorPoints(3))
	link := LinkStatus{
		URL: "nats://127.0.0.1:4222", Role: RoleEdge, Remote: "edge-1", Connected: true, InSync: true,
		Pending: 7, LastError: "timeout", BytesSent: 1 << 40, BytesRecv: 12345, Rejected: 3,
		LastSeen: "2026-12-06T04:00:00.123Z",
	}
	return []any{
		Hello{Proto: LinkProto, Instance: inst, Root: root, Role: RolePeer, Time: 1_700_000_000_123},
		Welcome{Instance: root, Root: inst, Time: -1, Session: NewSessionID(), Have: 1<<64 - 1},
		Start{Have: 42},
		Push{From: 10, Through: 20, Idle: true, Points: pts},
		Ack{Have: 20, Gap: true, Rejected: 2, Reason: "clock too far ahead"},
		Ping{},
		StatusRequest{},
		Status{
			ID: inst.String(), Instance: root.String(), Version: "v0.1.0", LastSeq: 99, HLC: "1700000000000.3",
			Disk: 1 << 33, Refused: 4, Links: []LinkStatus{link, {URL: "nats://127.0.0.1:4223"}}, Accepted: []LinkStatus{link},
		},
		Import{Points: pts, OneTime: true},
		ImportResult{Applied: 5, Stale: 1},
		ExportRequest{Root: inst, After: []byte{0x00, 0xff, 0x10}, MaxBytes: 65536},
		ExportPage{Points: pts, Next: []byte("next-register"), More: true},
		NodeRequest{Node: root, After: []byte{0x01, 0x02}, MaxBytes: 4096},
		NodePage{Known: true, Points: pts, Next: []byte("next-register"), More: true},
		EdgesRequest{Node: root, Up: true, After: inst, Max: 500},
		EdgesPage{Points: pts, Active: []byte{1, 0, 1}, Next: inst, More: true},
		WatchRequest{After: 77, Root: root, Wait: 20_000, MaxBytes: 65536},
		WatchReply{Points: pts, Changes: bytes.Repeat([]byte{7}, 3*WatchChangeLen), Next: 80, Last: 1 << 40},
		TokenRequest{TTL: 3600},
		TokenReply{Token: "v1.payload.mac", User: inst, Expires: 1_900_000_000_123},
		NodesRequest{Nodes: append(inst[:], root[:]...)},
		NodesReply{Known: []byte{1, 0}},
		Bye{Reason: "server shutting down"},
		VerifyRequest{},
		VerifyReply{Registers: 3, Nodes: 2, Edges: 1, Problems: 1, Seconds: 0.5, Error: "store: verify mismatch"},
		HistRequest{Kind: HistPush, From: 494_000, To: 494_100, Window: 494_050, Per: 24,
			Sums:  []HistSum{{Node: uuid.MustParse("6f1c1b6e-3a57-4d8e-9a43-2f9a0c1d5e77"), Window: 494_050, Digest: ShortDigest{1, 2, 3, 4, 5, 6, 7, 8}, Count: 3600}},
			Regs:  []HistReg{{Node: uuid.MustParse("6f1c1b6e-3a57-4d8e-9a43-2f9a0c1d5e77"), Type: "temp", Key: "0", Block: []byte{1, 1, 1}}},
			Fetch: []HistSum{{Node: uuid.MustParse("6f1c1b6e-3a57-4d8e-9a43-2f9a0c1d5e77"), Window: 494_051}}},
		HistReply{Sums: []HistSum{{Window: 494_050, Count: 1}}, Regs: []HistReg{{Type: "temp", Key: "0", Block: []byte{1}}}, Added: 7, More: true, Since: 494_001},
		HistoryRequest{Node: root, Type: "temp", Key: "a", From: 1_700_000_000_000, To: 1_700_003_600_000, Step: 60_000,
			After: AppendStepCursor(nil, 1_700_000_060_000), Max: 100},
		HistoryPage{Known: true, Samples: wireHistoryBlock(), Steps: wireHistorySteps(), Next: AppendSampleCursor(nil, 7<<16, inst), More: true},
	}
}

// wireHistoryBlock is a history block of three samples.
func wireHistoryBlock() []byte {
	o := uuid.MustParse("00010203-0405-0607-0809-0a0b0c0d0e0f")
	b, err := history.Encode([]history.Sample{
		{Time: crdt.NewTimestamp(1_700_000_000_000, 0), Origin: o, Value: 21.5},
		{Time: crdt.NewTimestamp(1_700_000_001_000, 0), Origin: o, Value: 21.7},
		{Time: crdt.NewTimestamp(1_700_000_002_000, 1), Origin: o, Text: "off", Tombstone: true},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// wireHistorySteps is two step records.
func wireHistorySteps() []byte {
	b := AppendHistoryStep(nil, &HistoryStep{Start: 1_700_000_000_000, Count: 2, Min: 21.5, Max: 21.7, Sum: 43.2, Last: 21.7, LastTime: crdt.NewTimestamp(1_700_000_001_000, 0)})
	return AppendHistoryStep(b, &HistoryStep{Start: 1_700_000_060_000, Count: 1, Min: -3, Max: -3, Sum: -3, Last: -3, LastTime: crdt.NewTimestamp(1_700_000_061_000, 2)})
}

// msgZeros returns the zero value of every message type, whose empty
// fields take the encoding's nil and omitempty paths.
func msgZeros() []any {
	var out []any
	for _, v := range msgSamples() {
		out = append(out, reflect.Zero(reflect.TypeOf(v)).Interface())
	}
	return out
}

// msgPtr returns a pointer to a fresh zero value of v's message type (v by
// value or pointer).
func msgPtr(v any) any {
	t := reflect.TypeOf(v)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return reflect.New(t).Interface()
}

// msgAddr returns a pointer to a copy of v.
func msgAddr(v any) any {
	p := reflect.New(reflect.TypeOf(v))
	p.Elem().Set(reflect.ValueOf(v))
	return p.Interface()
}

func msgElem(p any) any { return reflect.ValueOf(p).Elem().Interface() }

// TestMessageTypesWireContract pins the numbers and names of the message
// types: the enum is append-only, so none of these may ever change.
func TestMessageTypesWireContract(t *testing.T) {
	want := []struct {
		typ  MsgType
		num  uint8
		name string
	}{
		{MsgHello, 3, "hello"}, {MsgWelcome, 4, "welcome"}, {MsgStart, 5, "start"}, {MsgPush, 6, "push"},
		{MsgAck, 7, "ack"}, {MsgPing, 8, "ping"}, {MsgStatusRequest, 9, "status-request"}, {MsgStatus, 10, "status"},
		{MsgImport, 11, "import"}, {MsgImportResult, 12, "import-result"}, {MsgExportRequest, 13, "export-request"},
		{MsgExportPage, 14, "export-page"}, {MsgRepair, 15, "repair"}, {MsgRepairReply, 16, "repair-reply"},
		{MsgNodeRequest, 17, "node-request"}, {MsgNodePage, 18, "node-page"}, {MsgEdgesRequest, 19, "edges-request"},
		{MsgEdgesPage, 20, "edges-page"}, {MsgWatchRequest, 21, "watch-request"}, {MsgWatchReply, 22, "watch-reply"},
		{MsgTokenRequest, 23, "token-request"}, {MsgTokenReply, 24, "token-reply"},
		{MsgNodesRequest, 25, "nodes-request"}, {MsgNodesReply, 26, "nodes-reply"},
		{MsgBye, 27, "bye"}, {MsgVerifyRequest, 28, "verify-request"}, {MsgVerifyReply, 29, "verify-reply"},
		{MsgHistRequest, 30, "history-round"}, {MsgHistReply, 31, "history-round-reply"},
		{MsgHistoryRequest, 32, "history-request"}, {MsgHistoryPage, 33, "history-page"},
	}
	for _, w := range want {
		if uint8(w.typ) != w.num || w.typ.String() != w.name {
			t.Errorf("%s = %d, want %s = %d (the enum is append-only)", w.typ, uint8(w.typ), w.name, w.num)
		}
	}
	if msgTypeEnd != 34 {
		t.Errorf("msgTypeEnd = %d, want 34: a new type needs a test here and a seed in FuzzDecode", msgTypeEnd)
	}
	if LinkProto != 1 {
		t.Errorf("LinkProto = %d: changing it breaks every deployed peer", LinkProto)
	}
	seen := map[MsgType]bool{}
	for _, v := range msgSamples() {
		typ, err := typeOf(v)
		if err != nil {
			t.Fatal(err)
		}
		seen[typ] = true
	}
	for typ := MsgHello; typ < msgTypeEnd; typ++ {
		if !typ.known() {
			continue // reserved
		}
		// The repair messages are not encoded by Encode(v) but by
		// EncodeRepairRequest and EncodeRepairReply, from binary records;
		// repair_test.go covers them.
		if typ == MsgRepair || typ == MsgRepairReply {
			continue
		}
		if !seen[typ] {
			t.Errorf("no sample of %s: add one to msgSamples", typ)
		}
	}
}

// TestMessageKeys pins the msgpack map keys of every message: they are the
// wire format (docs/protocol.md), and a renamed struct tag would silently
// drop the field on every older peer. A uuid is a 16-byte bin.
func TestMessageKeys(t *testing.T) {
	want := map[MsgType][]string{
		MsgHello:          {"inst", "role", "root", "t", "v"},
		MsgWelcome:        {"have", "inst", "root", "sess", "t"},
		MsgStart:          {"have"},
		MsgPush:           {"from", "idle", "pts", "thru"},
		MsgAck:            {"gap", "have", "rej", "why"},
		MsgPing:           {},
		MsgStatusRequest:  {},
		MsgStatus:         {"accepted", "diskBytes", "hlc", "id", "instance", "lastSeq", "links", "refused", "version"},
		MsgImport:         {"one", "pts"},
		MsgImportResult:   {"applied", "stale"},
		MsgExportRequest:  {"after", "max", "root"},
		MsgExportPage:     {"more", "next", "pts"},
		MsgNodeRequest:    {"after", "max", "node"},
		MsgNodePage:       {"known", "more", "next", "pts"},
		MsgEdgesRequest:   {"after", "max", "node", "up"},
		MsgEdgesPage:      {"act", "more", "next", "pts"},
		MsgWatchRequest:   {"after", "max", "root", "wait"},
		MsgWatchReply:     {"chg", "last", "next", "pts"},
		MsgTokenRequest:   {"ttl"},
		MsgTokenReply:     {"exp", "token", "user"},
		MsgNodesRequest:   {"nodes"},
		MsgNodesReply:     {"known"},
		MsgBye:            {"why"},
		MsgVerifyRequest:  {},
		MsgVerifyReply:    {"edges", "error", "nodes", "problems", "registers", "seconds"},
		MsgHistoryRequest: {"after", "from", "key", "max", "node", "step", "to", "type"},
		MsgHistoryPage:    {"known", "more", "next", "smp", "steps"},
		MsgHistRequest:    {"fetch", "from", "k", "per", "regs", "sums", "to", "w"},
		MsgHistReply:      {"added", "more", "regs", "since", "sums"},
	}
	linkKeys := []string{"bytesReceived", "bytesSent", "connected", "inSync", "lastError", "lastSeen", "pending", "rejected", "remote", "role", "url"}
	for _, v := range msgSamples() {
		msg, err := Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		typ := MsgType(msg[1])
		var m map[string]any
		if err := msgpack.Unmarshal(msg[headerLen:], &m); err != nil {
			t.Fatalf("%s body is not a msgpack map: %v", typ, err)
		}
		if got := sortedKeys(m); !slices.Equal(got, want[typ]) {
			t.Errorf("%s keys = %q, want %q", typ, got, want[typ])
		}
		for _, k := range []string{"inst", "root", "user"} {
			if id, ok := m[k]; ok {
				if b, isBin := id.([]byte); !isBin || len(b) != 16 {
					t.Errorf("%s %q = %#v, want a 16-byte bin", typ, k, id)
				}
			}
		}
		if typ == MsgStatus {
			// The first sample link has every field set; "remote" is
			// omitted when empty.
			l := m["links"].([]any)[0].(map[string]any)
			if got := sortedKeys(l); !slices.Equal(got, linkKeys) {
				t.Errorf("link keys = %q, want %q", got, linkKeys)
			}
		}
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestMessageRoundTrip encodes every message type, by value and by
// pointer, with all fields set and all zero, and decodes it back into a
// fresh value: the frame has this build's version and the message's type,
// and the decoded value equals the original, uuids and []byte fields
// included (nil stays nil, empty stays empty).
func TestMessageRoundTrip(t *testing.T) {
	values := append(msgSamples(), msgZeros()...)
	values = append(values,
		Push{Points: []byte{}}, ExportPage{Next: []byte{}},
		Status{Links: []LinkStatus{}, Accepted: []LinkStatus{{}}},
		Hello{Instance: uuid.Max, Root: uuid.Nil, Proto: -1, Time: -1 << 63},
	)
	for _, v := range values {
		for _, in := range []any{v, msgAddr(v)} {
			name := fmt.Sprintf("%T", in)
			wantType, err := typeOf(in)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := Encode(in)
			if err != nil {
				t.Fatalf("%s: Encode: %v", name, err)
			}
			if msg[0] != Version || MsgType(msg[1]) != wantType {
				t.Fatalf("%s: header % x, want %d %d", name, msg[:2], Version, wantType)
			}
			out := msgPtr(in)
			if err := Decode(msg, len(msg), out); err != nil {
				t.Fatalf("%s: Decode: %v", name, err)
			}
			if !reflect.DeepEqual(msgElem(out), v) {
				t.Fatalf("%s: round trip\n got %#v\nwant %#v", name, msgElem(out), v)
			}
			again, err := Encode(out)
			if err != nil || !bytes.Equal(again, msg) {
				t.Fatalf("%s: re-encoding differs (%v)\n got % x\nwant % x", name, err, again, msg)
			}
		}
	}
}

// TestDecodeCopiesBytes: decoded []byte fields do not alias the frame, so
// a caller may reuse the buffer it received the frame in.
func TestDecodeCopiesBytes(t *testing.T) {
	msg, err := Encode(&Push{Points: []byte{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	var p Push
	if err := Decode(msg, 0, &p); err != nil {
		t.Fatal(err)
	}
	for i := range msg {
		msg[i] = 0
	}
	if !bytes.Equal(p.Points, []byte{1, 2, 3}) {
		t.Fatalf("Points = % x after the frame was overwritten", p.Points)
	}
}

func TestEncodeRefusesNonMessages(t *testing.T) {
	for _, v := range []any{nil, 42, "hello", []byte{1}, crdt.Point{}, &crdt.Point{}, LinkStatus{}, map[string]any{}} {
		if msg, err := Encode(v); err == nil {
			t.Errorf("Encode(%T) = % x, want an error", v, msg)
		}
		valid, _ := Encode(Ping{})
		if err := Decode(valid, 0, v); err == nil || !strings.Contains(err.Error(), "not a message") {
			t.Errorf("Decode into %T = %v, want a not-a-message error", v, err)
		}
	}
}

// TestRemoteError: EncodeError's frame decodes, whatever message the
// caller expected, to a *RemoteError carrying the text, and leaves the
// caller's value alone.
func TestRemoteError(t *testing.T) {
	for _, text := range []string{"no such node", "", "héllo ☃\n\x00", strings.Repeat("x", 100_000)} {
		msg := EncodeError(errors.New(text))
		if msg[0] != Version || MsgType(msg[1]) != MsgError {
			t.Fatalf("header % x", msg[:2])
		}
		for _, v := range msgSamples() {
			out := msgAddr(v)
			err := Decode(msg, 0, out)
			var re *RemoteError
			if !errors.As(err, &re) || re.Msg != text {
				t.Fatalf("Decode(error frame) into %T = %v, want *RemoteError %q", out, err, truncate(text, 20))
			}
			if !IsRemote(err) || !IsRemote(fmt.Errorf("request: %w", err)) {
				t.Fatalf("IsRemote(%v) = false", err)
			}
			if err.Error() != "remote: "+text {
				t.Fatalf("Error() = %q", truncate(err.Error(), 40))
			}
			if !reflect.DeepEqual(msgElem(out), v) {
				t.Fatalf("Decode(error frame) changed the %T it was given", v)
			}
		}
	}
	for _, err := range []error{nil, ErrVersion, crdt.ErrMalformed, errors.New("remote: x")} {
		if IsRemote(err) {
			t.Errorf("IsRemote(%v) = true", err)
		}
	}
	// A MsgError frame whose body is not a string is malformed, not remote.
	for _, body := range [][]byte{{0x01}, {0x80}, {0x90}, {0xc3}} {
		msg := append(AppendFrameHeader(nil, MsgError), body...)
		if err := Decode(msg, 0, &Ack{}); !errors.Is(err, crdt.ErrMalformed) || IsRemote(err) {
			t.Errorf("error frame with body % x: %v, want ErrMalformed", body, err)
		}
	}
}

func TestDecodeRefusesOtherTypes(t *testing.T) {
	samples := msgSamples()
	for i, v := range samples {
		msg, err := Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		for j, w := range samples {
			if i == j {
				continue
			}
			out := msgPtr(w)
			err := Decode(msg, 0, out)
			if !errors.Is(err, ErrUnknownType) || !strings.Contains(err.Error(), MsgType(msg[1]).String()) {
				t.Fatalf("%T frame into %T: err = %v, want ErrUnknownType naming %s", v, out, err, MsgType(msg[1]))
			}
		}
	}
	if err := Decode(EncodePoints(wireSensorPoints(2)), 0, &Push{}); !errors.Is(err, ErrUnknownType) {
		t.Errorf("points frame into *Push: %v, want ErrUnknownType", err)
	}
	for _, typ := range []byte{byte(MsgInvalid), byte(msgTypeEnd), 0xff} {
		if err := Decode([]byte{Version, typ, 0x80}, 0, &Ping{}); !errors.Is(err, ErrUnknownType) {
			t.Errorf("type %d: %v, want ErrUnknownType", typ, err)
		}
	}
}

func TestDecodeRefusesOtherVersions(t *testing.T) {
	for _, v := range msgSamples() {
		msg, _ := Encode(v)
		for _, ver := range []byte{0, Version + 1, 0xff} {
			bad := slices.Clone(msg)
			bad[0] = ver
			if err := Decode(bad, 0, msgPtr(v)); !errors.Is(err, ErrVersion) {
				t.Fatalf("%T, version %d: %v, want ErrVersion", v, ver, err)
			}
		}
	}
	if err := Decode(append([]byte{2}, EncodeError(errors.New("x"))[1:]...), 0, &Ack{}); !errors.Is(err, ErrVersion) || IsRemote(err) {
		t.Errorf("error frame of version 2: %v, want ErrVersion", err)
	}
}

// TestDecodeSizeLimit: a frame over the limit is refused as ErrTooLarge
// before anything else is looked at (the oversized garbage below has a bad
// version and a bad body; the size wins), and a frame at the limit is read.
func TestDecodeSizeLimit(t *testing.T) {
	big := Push{From: 1, Through: 2, Points: bytes.Repeat([]byte{0xab}, 5000)}
	msg, err := Encode(big)
	if err != nil {
		t.Fatal(err)
	}
	var p Push
	if err := Decode(msg, len(msg)-1, &p); !errors.Is(err, crdt.ErrTooLarge) {
		t.Errorf("frame of %d bytes, limit one less: %v, want ErrTooLarge", len(msg), err)
	}
	if err := Decode(msg, len(msg), &p); err != nil || !reflect.DeepEqual(p, big) {
		t.Errorf("frame of %d bytes at its own size: %v", len(msg), err)
	}
	garbage := bytes.Repeat([]byte{0xc1}, crdt.MaxMessageSize+1)
	for _, tc := range []struct{ limit, size int }{{0, crdt.MaxMessageSize + 1}, {-1, crdt.MaxMessageSize + 1}, {100, 101}} {
		err := Decode(garbage[:tc.size], tc.limit, &p)
		if !errors.Is(err, crdt.ErrTooLarge) || errors.Is(err, ErrVersion) || errors.Is(err, crdt.ErrMalformed) {
			t.Errorf("%d bytes, limit %d: %v, want ErrTooLarge only", tc.size, tc.limit, err)
		}
	}
	// The default limit is crdt.MaxMessageSize: a frame of exactly that
	// size decodes, one byte more does not.
	probe, _ := Encode(Push{Points: make([]byte, 1<<16)})
	body := crdt.MaxMessageSize - (len(probe) - 1<<16)
	atLimit, err := Encode(Push{Points: make([]byte, body)})
	if err != nil || len(atLimit) != crdt.MaxMessageSize {
		t.Fatalf("test frame is %d bytes (%v), want %d", len(atLimit), err, crdt.MaxMessageSize)
	}
	if err := Decode(atLimit, 0, &p); err != nil {
		t.Errorf("frame of crdt.MaxMessageSize, default limit: %v", err)
	}
	over, _ := Encode(Push{Points: make([]byte, body+1)})
	if err := Decode(over, 0, &p); !errors.Is(err, crdt.ErrTooLarge) {
		t.Errorf("frame of crdt.MaxMessageSize+1, default limit: %v, want ErrTooLarge", err)
	}
}

// TestDecodeRefusesTruncated: every strict prefix of every valid frame,
// and every frame with a byte appended, is refused as ErrMalformed.
func TestDecodeRefusesTruncated(t *testing.T) {
	for _, v := range append(msgSamples(), msgZeros()...) {
		msg, _ := Encode(v)
		for n := range len(msg) {
			if err := Decode(msg[:n], 0, msgPtr(v)); !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("%T cut to %d of %d bytes: %v, want ErrMalformed", v, n, len(msg), err)
			}
		}
		if err := Decode(append(slices.Clone(msg), 0xc0), 0, msgPtr(v)); !errors.Is(err, crdt.ErrMalformed) {
			t.Fatalf("%T with a trailing byte: %v, want ErrMalformed", v, err)
		}
	}
}

// mp builds msgpack bodies by hand, to write what Encode never would.
type mp []byte

func (m mp) raw(b ...byte) mp { return append(m, b...) }
func (m mp) fixmap(n int) mp  { return append(m, 0x80|byte(n)) }
func (m mp) fixarr(n int) mp  { return append(m, 0x90|byte(n)) }
func (m mp) str(s string) mp  { return append(append(m, 0xd9, byte(len(s))), s...) }
func (m mp) bin(b []byte) mp  { return append(append(m, 0xc4, byte(len(b))), b...) }
func (m mp) frame(t MsgType) []byte {
	return append(AppendFrameHeader(nil, t), m...)
}
func (m mp) arr32(n uint32) mp { return binary.BigEndian.AppendUint32(append(m, 0xdd), n) }
func (m mp) map32(n uint32) mp { return binary.BigEndian.AppendUint32(append(m, 0xdf), n) }
func (m mp) bin32(n uint32) mp { return binary.BigEndian.AppendUint32(append(m, 0xc6), n) }
func (m mp) str32(n uint32) mp { return binary.BigEndian.AppendUint32(append(m, 0xdb), n) }

// nestedArrays returns n nested one-element arrays around 0x01.
func nestedArrays(n int) []byte { return append(bytes.Repeat([]byte{0x91}, n), 0x01) }

type hostileCase struct {
	name string
	msg  []byte
	into any
}

// msgHostile lists frames under the size limit that lie about their
// contents. Decode must refuse each with crdt.ErrMalformed.
func msgHostile() []hostileCase {
	id3 := []byte{1, 2, 3}
	return []hostileCase{
		{"header only", AppendFrameHeader(nil, MsgHello), &Hello{}},
		{"map32 of 2^32-1 entries", mp{}.map32(1<<32 - 1).str("v").raw(0x01).frame(MsgHello), &Hello{}},
		{"map32 of 2^32-1 entries, nothing after", mp{}.map32(1<<32 - 1).frame(MsgStatus), &Status{}},
		{"map16 of 65535 entries", mp{}.raw(0xde, 0xff, 0xff, 0xa1, 'v', 0x01).frame(MsgHello), &Hello{}},
		{"bin32 of 1 GiB as points", mp{}.fixmap(1).str("pts").bin32(1<<30).raw(1, 2, 3).frame(MsgPush), &Push{}},
		{"bin32 of 4 GiB as after", mp{}.fixmap(1).str("after").bin32(1<<32 - 1).frame(MsgExportRequest), &ExportRequest{}},
		{"str32 of 1 GiB as a key", mp{}.fixmap(1).str32(1<<30).raw('a', 'b').frame(MsgAck), &Ack{}},
		{"str32 of 1 GiB as error text", mp{}.str32(1 << 30).raw('a').frame(MsgError), &Ack{}},
		{"array32 of 2^32-1 links", mp{}.fixmap(1).str("links").arr32(1<<32 - 1).raw(0xc0).frame(MsgStatus), &Status{}},
		{"fixmap of 3 with 2 entries", mp{}.fixmap(3).str("have").raw(1).str("gap").raw(0xc3).frame(MsgAck), &Ack{}},
		{"key without a value", mp{}.fixmap(1).str("have").frame(MsgStart), &Start{}},
		{"deeper than MaxDepth under an unknown key", mp{}.fixmap(1).str("x").raw(nestedArrays(crdt.MaxDepth)...).frame(MsgPing), &Ping{}},
		{"nesting of 65536", mp{}.fixmap(1).str("x").raw(nestedArrays(1 << 16)...).frame(MsgPing), &Ping{}},
		{"uuid of 3 bytes", mp{}.fixmap(1).str("inst").bin(id3).frame(MsgHello), &Hello{}},
		{"uuid of 17 bytes", mp{}.fixmap(1).str("root").bin(make([]byte, 17)).frame(MsgExportRequest), &ExportRequest{}},
		{"bin32 of 4 GiB as watch changes", mp{}.fixmap(1).str("chg").bin32(1<<32 - 1).frame(MsgWatchReply), &WatchReply{}},
		{"bin32 of 1 GiB as active flags", mp{}.fixmap(1).str("act").bin32(1 << 30).raw(1).frame(MsgEdgesPage), &EdgesPage{}},
		{"node of 15 bytes", mp{}.fixmap(1).str("node").bin(make([]byte, 15)).frame(MsgNodeRequest), &NodeRequest{}},
		{"wait as a string", mp{}.fixmap(1).str("wait").str("forever").frame(MsgWatchRequest), &WatchRequest{}},
		{"uuid as text", mp{}.fixmap(1).str("inst").str("00010203-0405-0607-0809-0a0b0c0d0e0f").frame(MsgWelcome), &Welcome{}},
		{"uuid as an int", mp{}.fixmap(1).str("inst").raw(0x07).frame(MsgHello), &Hello{}},
		{"int field holding a string", mp{}.fixmap(1).str("v").str("one").frame(MsgHello), &Hello{}},
		{"bool field holding a map", mp{}.fixmap(1).str("gap").fixmap(0).frame(MsgAck), &Ack{}},
		{"links holding ints", mp{}.fixmap(1).str("links").fixarr(2).raw(1, 2).frame(MsgStatus), &Status{}},
		{"key that is an int", mp{}.fixmap(1).raw(0x01, 0x02).frame(MsgStart), &Start{}},
		{"body that is an int", mp{}.raw(0x07).frame(MsgStart), &Start{}},
		{"struct as an array of the wrong length", mp{}.fixarr(2).raw(1, 2).frame(MsgStart), &Start{}},
		{"reserved code 0xc1", mp{}.fixmap(1).str("have").raw(0xc1).frame(MsgStart), &Start{}},
		{"two values", mp{}.fixmap(0).fixmap(0).frame(MsgPing), &Ping{}},
	}
}

// TestDecodeRefusesHostile checks each lying frame is refused as
// crdt.ErrMalformed and not taken for something else.
func TestDecodeRefusesHostile(t *testing.T) {
	for _, tc := range msgHostile() {
		t.Run(tc.name, func(t *testing.T) {
			err := Decode(tc.msg, 0, tc.into)
			if !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if errors.Is(err, crdt.ErrTooLarge) || IsRemote(err) {
				t.Fatalf("err = %v, want ErrMalformed only", err)
			}
		})
	}
}

// TestDecodeDepthLimit: nesting exactly crdt.MaxDepth deep (the body's map
// counts as one level) is read, one level more is refused.
func TestDecodeDepthLimit(t *testing.T) {
	ok := mp{}.fixmap(1).str("x").raw(nestedArrays(crdt.MaxDepth - 1)...).frame(MsgPing)
	if err := Decode(ok, 0, &Ping{}); err != nil {
		t.Errorf("nesting of %d: %v", crdt.MaxDepth, err)
	}
	deep := mp{}.fixmap(1).str("x").raw(nestedArrays(crdt.MaxDepth)...).frame(MsgPing)
	if err := Decode(deep, 0, &Ping{}); !errors.Is(err, crdt.ErrMalformed) || !strings.Contains(err.Error(), "deeper") {
		t.Errorf("nesting of %d: %v, want ErrMalformed for depth", crdt.MaxDepth+1, err)
	}
}

// TestDecodeIgnoresUnknownKeys: a newer peer may add fields; an older
// build skips them, whatever they hold, and reads the ones it knows.
func TestDecodeIgnoresUnknownKeys(t *testing.T) {
	for _, v := range msgSamples() {
		msg, _ := Encode(v)
		var m map[string]any
		if err := msgpack.Unmarshal(msg[headerLen:], &m); err != nil {
			t.Fatal(err)
		}
		m["zz-new-int"] = 12345
		m["zz-new-map"] = map[string]any{"a": []any{1, "two", []byte{3}, map[string]any{"b": nil}}}
		m["zz-new-bin"] = bytes.Repeat([]byte{0xee}, 300)
		m["zz-new-str"] = "héllo"
		m["zz-new-bool"] = true
		m["zz-new-nil"] = nil
		m[""] = 1.5
		m["zz-new-ext"] = msgpack.RawMessage{0xd6, 0x05, 1, 2, 3, 4} // fixext 4 of type 5
		body, err := msgpack.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		frame := append(AppendFrameHeader(nil, MsgType(msg[1])), body...)
		out := msgPtr(v)
		if err := Decode(frame, 0, out); err != nil {
			t.Fatalf("%T with unknown keys: %v", v, err)
		}
		if !reflect.DeepEqual(msgElem(out), v) {
			t.Fatalf("%T with unknown keys\n got %#v\nwant %#v", v, msgElem(out), v)
		}
	}
	// Unknown keys inside a nested LinkStatus are skipped too.
	body := mp{}.fixmap(1).str("links").fixarr(1).fixmap(2).str("url").str("nats://x").str("later").fixarr(1).raw(7)
	var st Status
	if err := Decode(body.frame(MsgStatus), 0, &st); err != nil || len(st.Links) != 1 || st.Links[0].URL != "nats://x" {
		t.Errorf("link with an unknown key: %+v, %v", st.Links, err)
	}
}

// msgAllocated returns the fewest bytes f allocated over a few runs:
// anything else in the process that allocates meanwhile (the runtime, the
// race detector) only ever adds to a run.
func msgAllocated(f func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 5 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// msgAllocBound is what Decode may allocate for n input bytes, however
// hostile: the crdt decoders' bound (crdt/codec_test.go wireAllocBound), a
// small multiple of the input plus a fixed overhead for the pooled msgpack
// decoder and error values.
func msgAllocBound(n int) uint64 { return 64*uint64(n) + 64<<10 }

// TestDecodeAllocationIsBounded proves bounded decoding for messages:
// whatever a frame declares, Decode allocates at most msgAllocBound of its
// size. The frames of msgHostile are refused by crdt.CheckMsgpack before
// msgpack/v5 sees them; the well-formed ones after them are 64 KiB to
// 1 MiB, so the fixed overhead is small next to the bound's multiple.
func TestDecodeAllocationIsBounded(t *testing.T) {
	for _, tc := range msgHostile() {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := msgAllocated(func() { err = Decode(tc.msg, 0, msgPtr(tc.into)) })
			if !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			t.Logf("%d input bytes, %d bytes allocated", len(tc.msg), n)
			if bound := msgAllocBound(len(tc.msg)); n > bound {
				t.Fatalf("%d bytes allocated for %d input bytes, bound %d", n, len(tc.msg), bound)
			}
		})
	}
	const size = 64 << 10
	for _, tc := range []struct {
		name string
		msg  []byte
		into any
	}{
		{"many unknown keys", manyUnknownKeys(size), &Ack{}},
		{"one-byte strings under an unknown key", mp{}.fixmap(1).str("x").arr32(size).raw(bytes.Repeat([]byte{0xa0}, size)...).frame(MsgAck), &Ack{}},
		{"long reason", mp{}.fixmap(1).str("why").str32(size).raw(make([]byte, size)...).frame(MsgAck), &Ack{}},
		{"points of 1 MiB", mp{}.fixmap(1).str("pts").bin32(crdt.MaxMessageSize - 16).raw(make([]byte, crdt.MaxMessageSize-16)...).frame(MsgPush), &Push{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := msgAllocated(func() { err = Decode(tc.msg, 0, msgPtr(tc.into)) })
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			t.Logf("%d input bytes, %d bytes allocated (%.1fx)", len(tc.msg), n, float64(n)/float64(len(tc.msg)))
			if bound := msgAllocBound(len(tc.msg)); n > bound {
				t.Fatalf("%d bytes allocated for %d input bytes, bound %d", n, len(tc.msg), bound)
			}
		})
	}
}

// TestDecodeStatusLinksAllocation measures the one message whose decoding
// exceeds msgAllocBound: a Status whose link lists hold one-byte entries
// (nil or an empty map). msgpack/v5 allocates a slice of the declared length
// up front, twice (growSliceValue makes a slice of n and appends it to the
// empty one; its sliceAllocLimit is never applied, because decode_slice.go
// tests flags&disableAllocLimitFlag != 1, which is always true), and a
// LinkStatus is unsafe.Sizeof(LinkStatus{}) = 104 bytes: about 208 bytes
// allocated per input byte, some 200 MiB for a 1 MiB frame.
//
// The bound below pins that cost so it cannot grow unnoticed. Once Status
// caps its link lists before allocating them (proposed with this test),
// such a frame is refused or cheap, and the bound should become
// msgAllocBound like every other message's.
func TestDecodeStatusLinksAllocation(t *testing.T) {
	// One entry more than MaxLinks: refused before the slice is allocated.
	const size = MaxLinks + 1
	for _, entry := range []byte{0xc0, 0x80} {
		for _, key := range []string{"links", "accepted"} {
			msg := mp{}.fixmap(1).str(key).arr32(size).raw(bytes.Repeat([]byte{entry}, size)...).frame(MsgStatus)
			var err error
			n := msgAllocated(func() { err = Decode(msg, 0, &Status{}) })
			if !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("%s of %d entries 0x%02x: %v", key, size, entry, err)
			}
			t.Logf("%s of %d entries 0x%02x: %d input bytes, %d bytes allocated (%.1fx), err %v",
				key, size, entry, len(msg), n, float64(n)/float64(len(msg)), err)
			if bound := msgAllocBound(len(msg)); n > bound {
				t.Fatalf("%d bytes allocated for %d input bytes, bound %d", n, len(msg), bound)
			}
		}
	}
}

// manyUnknownKeys returns an Ack frame of about size bytes holding only
// unknown keys with one-byte values.
func manyUnknownKeys(size int) []byte {
	const entry = 4 // fixstr of 2, fixint
	n := size / entry
	m := mp{}.map32(uint32(n))
	for i := range n {
		m = append(m, 0xa2, 'k'+byte(i>>8&7), byte(i), 0x01)
	}
	return m.frame(MsgAck)
}

func TestSubjects(t *testing.T) {
	seen := map[string]bool{}
	ids := []string{"0123456789abcdef0123456789abcdef", strings.Repeat("0", 32), strings.Repeat("f", 32)}
	for range 200 {
		ids = append(ids, NewSessionID())
	}
	dialer := Identity{Kind: KindKey, Node: uuid.MustParse("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b")}
	var fixed []string
	for _, name := range []string{NameHello, NameStatus, NameImport, NameExport, NameNode, NameEdges, NameWatch, NameToken} {
		fixed = append(fixed, Subject(dialer, name))
	}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("NewSessionID repeated %s", id)
		}
		seen[id] = true
		s, err := Subjects(dialer, id)
		if err != nil {
			t.Fatalf("Subjects(%q): %v", id, err)
		}
		subs := []string{s.Start, s.Up, s.Down, s.Ping, s.Repair}
		want := []string{"start", "up", "down", "ping", "repair"}
		for i, sub := range subs {
			if w := dialer.Prefix() + ".link." + id + "." + want[i]; sub != w {
				t.Errorf("subject %q, want %s", sub, w)
			}
			for _, tok := range strings.Split(sub, ".") {
				if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
					t.Errorf("subject %q has a bad token %q", sub, tok)
				}
			}
			if slices.Contains(fixed, sub) {
				t.Errorf("session subject %q collides with a request subject", sub)
			}
		}
		if len(slices.Compact(slices.Sorted(slices.Values(subs)))) != len(subs) {
			t.Errorf("session subjects not distinct: %q", subs)
		}
	}
	valid := "0123456789abcdef0123456789abcdef"
	bad := []string{
		"", "*", ">", "siot.link.hello",
		valid[:31], valid + "0", valid[:16],
		strings.ToUpper(valid), "0123456789ABCDEF0123456789abcdef",
		valid[:31] + "*", valid[:31] + ">", "*" + valid[1:], valid[:15] + "." + valid[16:],
		valid[:15] + " " + valid[16:], valid[:31] + "\n", valid[:31] + "g", valid[:30] + "é",
		valid[:30] + "\x00\x00", strings.Repeat("a", 10_000),
	}
	for _, id := range bad {
		s, err := Subjects(dialer, id)
		if err == nil {
			t.Errorf("Subjects(%q) = %+v, want an error", truncate(id, 40), s)
			continue
		}
		if s != (SessionSubjects{}) {
			t.Errorf("Subjects(%q) returned %+v with its error", truncate(id, 40), s)
		}
		if len(err.Error()) > 100 {
			t.Errorf("Subjects(%d bytes): error of %d bytes, want the id truncated", len(id), len(err.Error()))
		}
	}
}

// FuzzDecode feeds arbitrary frames to Decode for every message type. It
// checks Decode never panics and refuses only with its documented errors,
// returns a *RemoteError only for a MsgError frame, and that a message it
// accepts re-encodes into a frame that decodes to an equal value.
func FuzzDecode(f *testing.F) {
	for _, v := range append(msgSamples(), msgZeros()...) {
		msg, err := Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg)
	}
	f.Add(EncodeError(errors.New("no such node")))
	for _, s := range wireFrameSeeds() {
		f.Add(s)
	}
	for _, tc := range msgHostile() {
		f.Add(tc.msg)
	}
	f.Add(mp{}.fixmap(1).str("links").fixarr(1).fixmap(2).str("url").str("nats://x").str("later").fixarr(1).raw(7).frame(MsgStatus))
	for _, s := range repairSeeds(f) {
		f.Add(s)
	}
	targets := msgSamples()
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, target := range targets {
			v := msgPtr(target)
			err := Decode(msg, 0, v)
			if err != nil {
				var re *RemoteError
				if errors.As(err, &re) {
					if len(msg) < headerLen || MsgType(msg[1]) != MsgError {
						t.Fatalf("RemoteError %q from a frame of type % x", re.Msg, msg[:min(len(msg), 2)])
					}
					back := EncodeError(errors.New(re.Msg))
					var re2 *RemoteError
					if err := Decode(back, 0, v); !errors.As(err, &re2) || re2.Msg != re.Msg {
						t.Fatalf("error text %q does not survive EncodeError: %v", re.Msg, err)
					}
					continue
				}
				if !errors.Is(err, ErrVersion) && !errors.Is(err, ErrUnknownType) &&
					!errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, crdt.ErrTooLarge) {
					t.Fatalf("%T: undocumented error %v", v, err)
				}
				continue
			}
			if want, _ := typeOf(v); msg[0] != Version || MsgType(msg[1]) != want {
				t.Fatalf("accepted a frame with header % x as %T", msg[:2], v)
			}
			enc, err := Encode(v)
			if err != nil {
				t.Fatalf("%T: re-encode: %v", v, err)
			}
			v2 := msgPtr(target)
			if err := Decode(enc, len(enc), v2); err != nil {
				t.Fatalf("%T: re-encoded frame refused: %v\n%#v", v, err, msgElem(v))
			}
			if !reflect.DeepEqual(msgElem(v2), msgElem(v)) {
				t.Fatalf("%T: round trip\n got %#v\nwant %#v", v, msgElem(v2), msgElem(v))
			}
		}
	})
}

// A Bye's reason reaches logs and status: IsBye bounds it and keeps it to
// printable text.
func TestByeReasonBounded(t *testing.T) {
	msg, err := Encode(Bye{Reason: strings.Repeat("é", 1000) + "\n\x1b[31m"})
	if err != nil {
		t.Fatal(err)
	}
	b, ok := IsBye(msg)
	if !ok || len(b.Reason) > MaxByeReason+len("…") || !strings.HasSuffix(b.Reason, "…") {
		t.Fatalf("reason of %d bytes: %q", len(b.Reason), b.Reason)
	}
	if msg, err = Encode(Bye{Reason: "bye\n\x1b[31m\xff"}); err != nil {
		t.Fatal(err)
	}
	if b, ok = IsBye(msg); !ok || b.Reason != "bye??[31m?" {
		t.Fatalf("reason %q", b.Reason)
	}
}
