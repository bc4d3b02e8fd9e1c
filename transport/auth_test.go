package transport

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/argon2"
)

// authSeedEnv names the variable that replays a run of the seeded tests.
const authSeedEnv = "SIOT_AUTH_SEED"

// authRand returns a ChaCha8 generator, a reader for salts, keys and
// node IDs, seeded from SIOT_AUTH_SEED or else the clock. It logs the
// seed so that a failure reproduces.
func authRand(t testing.TB) *rand.ChaCha8 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(authSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", authSeedEnv, s, err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with %s=%d)", seed, authSeedEnv, seed)
	return authRandFrom(seed)
}

// authRandFrom returns the generator of seed.
func authRandFrom(seed uint64) *rand.ChaCha8 {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return rand.NewChaCha8(key)
}

// authUUID reads a random node ID from r.
func authUUID(t testing.TB, r io.Reader) uuid.UUID {
	t.Helper()
	u, err := uuid.NewRandomFromReader(r)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// authKeyCreds returns seed credentials of kind for node with an nkey
// read from r: NewKeyCreds, but reproducible.
func authKeyCreds(t testing.TB, r io.Reader, kind Kind, node uuid.UUID) *Creds {
	t.Helper()
	kp, err := nkeys.CreatePairWithRand(nkeys.PrefixByteUser, r)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	c := &Creds{Kind: kind, Node: node, Seed: seed}
	if _, err := c.Identity(); err != nil {
		t.Fatal(err)
	}
	return c
}

// authPublicKey returns the nkey public key of seed credentials.
func authPublicKey(t testing.TB, c *Creds) string {
	t.Helper()
	pub, err := c.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// authIdentities returns one identity of each kind, nodes read from r.
func authIdentities(t testing.TB, r io.Reader) []Identity {
	return []Identity{
		{Kind: KindSystem}, {Kind: KindAdmin},
		{Kind: KindKey, Node: authUUID(t, r)}, {Kind: KindUser, Node: authUUID(t, r)}, {Kind: KindLogin, Node: authUUID(t, r)},
	}
}

// authNames are the request names, for subjects built from them.
var authNames = []string{NameHello, NameStatus, NameImport, NameExport, NameNode, NameEdges, NameWatch, NameToken}

func TestParseSubject(t *testing.T) {
	r := authRand(t)
	node := authUUID(t, r)
	n := node.String()
	good := []struct {
		subject string
		id      Identity
		rest    string
	}{
		{"siot.system.local.api.status", Identity{Kind: KindSystem}, "api.status"},
		{"siot.admin.local.link.hello", Identity{Kind: KindAdmin}, "link.hello"},
		{"siot.key." + n + ".link.0123456789abcdef0123456789abcdef.up", Identity{Kind: KindKey, Node: node}, "link.0123456789abcdef0123456789abcdef.up"},
		{"siot.user." + n + ".api.node", Identity{Kind: KindUser, Node: node}, "api.node"},
		{"siot.login." + n + ".api.token", Identity{Kind: KindLogin, Node: node}, "api.token"},
		{"siot.key." + n + ".x", Identity{Kind: KindKey, Node: node}, "x"},
	}
	for _, tc := range good {
		id, rest, err := ParseSubject(tc.subject)
		if err != nil || id != tc.id || rest != tc.rest {
			t.Errorf("ParseSubject(%q) = %v, %q, %v; want %v, %q", tc.subject, id, rest, err, tc.id, tc.rest)
		}
	}

	// Every identity's prefix and every name round-trip.
	for _, id := range authIdentities(t, r) {
		for _, name := range append(slices.Clone(authNames), "link."+NewSessionID()+".down", "a.b.c.d") {
			for _, s := range []string{id.Prefix() + "." + name, Subject(id, name)} {
				got, rest, err := ParseSubject(s)
				if err != nil || got != id || rest != name {
					t.Errorf("ParseSubject(%q) = %v, %q, %v; want %v, %q", s, got, rest, err, id, name)
				}
			}
		}
	}

	upper := strings.ToUpper(n)
	bad := []string{
		// wrong first token
		"nats.key." + n + ".x", "SIOT.key." + n + ".x", "siotx.admin.local.x", ".admin.local.x",
		// unknown kind
		"siot.root.local.x", "siot.KEY." + n + ".x", "siot..local.x", "siot.*.local.x", "siot.>.local.x",
		"siot.device." + n + ".x",
		// a node kind without a node
		"siot.key.local.x", "siot.user.local.x", "siot.login.local.x",
		"siot.key." + uuid.Nil.String() + ".x",
		// a local kind with a node
		"siot.admin." + n + ".x", "siot.system." + n + ".x",
		"siot.admin." + uuid.Nil.String() + ".x", "siot.system." + uuid.Nil.String() + ".x",
		// a node that is not a lowercase UUID of 36 characters
		"siot.key." + upper + ".x", "siot.user." + n[:35] + ".x", "siot.key." + n + "0.x",
		"siot.key." + strings.ReplaceAll(n, "-", "") + ".x", "siot.key.{" + n + "}.x",
		"siot.key.urn:uuid:" + n + ".x", "siot.key.*.x", "siot.key.>.x", "siot.key..x",
		"siot.admin.LOCAL.x", "siot.admin.*.x",
		// empty rest, too few tokens
		"siot.key." + n + ".", "siot.admin.local.", "siot.key." + n, "siot.admin.local", "siot.admin", "siot", "",
	}
	if upper == n {
		t.Fatalf("node %s has no letter to uppercase", n)
	}
	for _, s := range bad {
		id, rest, err := ParseSubject(s)
		if err == nil {
			t.Errorf("ParseSubject(%q) = %v, %q; want an error", s, id, rest)
			continue
		}
		if id != (Identity{}) || rest != "" {
			t.Errorf("ParseSubject(%q) returned %v, %q with its error", s, id, rest)
		}
	}
	long := "siot.key." + strings.Repeat("x", 10_000) + ".x"
	if _, _, err := ParseSubject(long); err == nil || len(err.Error()) > 200 {
		t.Errorf("ParseSubject(%d bytes): %v; want an error with the subject truncated", len(long), err)
	}
}

// TestSubjectsUnderDialerPrefix: a session's subjects are under its
// dialer's prefix, so that only the dialer may publish them, and
// ParseSubject reads the dialer back from each.
func TestSubjectsUnderDialerPrefix(t *testing.T) {
	r := authRand(t)
	for _, dialer := range authIdentities(t, r) {
		var b [16]byte
		_, _ = r.Read(b[:])
		id := fmt.Sprintf("%x", b)
		s, err := Subjects(dialer, id)
		if err != nil {
			t.Fatalf("Subjects(%v, %q): %v", dialer, id, err)
		}
		subs := []string{s.Start, s.Up, s.Down, s.Ping, s.Repair}
		for _, sub := range subs {
			if !strings.HasPrefix(sub, dialer.Prefix()+".link."+id+".") {
				t.Errorf("%v: subject %q not under %s.link.%s", dialer, sub, dialer.Prefix(), id)
			}
			for _, tok := range strings.Split(sub, ".") {
				if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
					t.Errorf("%v: subject %q has a bad token %q", dialer, sub, tok)
				}
			}
			got, rest, err := ParseSubject(sub)
			if err != nil || got != dialer || !strings.HasPrefix(rest, "link."+id+".") {
				t.Errorf("ParseSubject(%q) = %v, %q, %v; want %v", sub, got, rest, err, dialer)
			}
			for _, name := range authNames {
				if sub == Subject(dialer, name) {
					t.Errorf("%v: session subject %q is the request subject of %s", dialer, sub, name)
				}
			}
		}
		if len(slices.Compact(slices.Sorted(slices.Values(subs)))) != len(subs) {
			t.Errorf("%v: session subjects not distinct: %q", dialer, subs)
		}
	}
	valid := "0123456789abcdef0123456789abcdef"
	dialer := Identity{Kind: KindKey, Node: authUUID(t, r)}
	for _, id := range []string{
		"", "*", ">", valid[:31] + "*", valid[:31] + ">", "*." + valid[2:], ">" + valid[1:],
		valid[:15] + "." + valid[16:], "." + valid[1:], valid[:31] + ".",
		valid[:31], valid + "0", valid + valid,
		strings.ToUpper(valid), valid[:31] + "A", "0123456789ABCDEF0123456789abcdef",
	} {
		s, err := Subjects(dialer, id)
		if err == nil || s != (SessionSubjects{}) {
			t.Errorf("Subjects(%v, %q) = %+v, %v; want only an error", dialer, id, s, err)
		}
	}
}

// credsEqual reports whether two parsed credentials hold the same fields.
func credsEqual(a, b *Creds) bool {
	return a.Kind == b.Kind && a.Node == b.Node && bytes.Equal(a.Seed, b.Seed) && a.Token == b.Token &&
		a.Expires.Equal(b.Expires)
}

// credsJSONOf encodes fields as a credential file would hold them, with
// nothing checked, for files ParseCreds must refuse.
func credsJSONOf(fields ...string) []byte {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i+1 < len(fields); i += 2 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%q:%s", fields[i], fields[i+1])
	}
	b.WriteString("}")
	return []byte(b.String())
}

func TestCredsRoundTrip(t *testing.T) {
	r := authRand(t)
	node := authUUID(t, r)
	for _, tc := range []struct {
		kind Kind
		node uuid.UUID
	}{{KindAdmin, uuid.Nil}, {KindKey, node}} {
		c, err := NewKeyCreds(tc.kind, tc.node)
		if err != nil {
			t.Fatalf("NewKeyCreds(%s, %v): %v", tc.kind, tc.node, err)
		}
		b, err := c.Marshal()
		if err != nil {
			t.Fatalf("%s: Marshal: %v", tc.kind, err)
		}
		got, err := ParseCreds(b)
		if err != nil {
			t.Fatalf("%s: ParseCreds(%s): %v", tc.kind, b, err)
		}
		if !credsEqual(got, c) {
			t.Errorf("%s: round trip %+v, want %+v", tc.kind, got, c)
		}
		id, err := got.Identity()
		if err != nil || id != (Identity{Kind: tc.kind, Node: tc.node}) {
			t.Errorf("%s: Identity() = %v, %v", tc.kind, id, err)
		}
		p1, err1 := c.PublicKey()
		p2, err2 := got.PublicKey()
		if err1 != nil || err2 != nil || p1 != p2 || !strings.HasPrefix(p1, "U") {
			t.Errorf("%s: public keys %q, %q (%v, %v); want one user key", tc.kind, p1, p2, err1, err2)
		}
	}
	// NewKeyCreds makes seed credentials of a kind that names its node
	// as the kind requires, and nothing else.
	for _, tc := range []struct {
		kind Kind
		node uuid.UUID
	}{{KindAdmin, node}, {KindKey, uuid.Nil}, {KindUser, node}, {KindSystem, uuid.Nil}, {KindLogin, node}, {"", uuid.Nil}} {
		if c, err := NewKeyCreds(tc.kind, tc.node); err == nil || !errors.Is(err, ErrCreds) {
			t.Errorf("NewKeyCreds(%q, %v) = %+v, %v; want ErrCreds", tc.kind, tc.node, c, err)
		}
	}

	// A user's token round-trips; its expiry is the token's.
	key := make([]byte, 32)
	_, _ = r.Read(key)
	expires := time.UnixMilli(1_900_000_000_123)
	c := &Creds{Kind: KindUser, Node: node, Token: NewToken(key, node, 77, expires), Expires: expires}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCreds(b)
	if err != nil {
		t.Fatalf("ParseCreds(%s): %v", b, err)
	}
	if !credsEqual(got, c) {
		t.Errorf("user round trip %+v, want %+v", got, c)
	}
	if id, err := got.Identity(); err != nil || id != (Identity{Kind: KindUser, Node: node}) {
		t.Errorf("user Identity() = %v, %v", id, err)
	}
}

func TestParseCredsRefuses(t *testing.T) {
	r := authRand(t)
	node, other := authUUID(t, r), authUUID(t, r)
	user := string(authKeyCreds(t, r, KindAdmin, uuid.Nil).Seed)
	akp, err := nkeys.CreatePairWithRand(nkeys.PrefixByteAccount, r)
	if err != nil {
		t.Fatal(err)
	}
	account, _ := akp.Seed()
	key := make([]byte, 32)
	_, _ = r.Read(key)
	token := NewToken(key, node, 1, time.UnixMilli(1_900_000_000_000))
	q := strconv.Quote
	n := q(node.String())
	valid := credsJSONOf("siot", q("credential"), "kind", q("key"), "node", n, "seed", q(user))
	if _, err := ParseCreds(valid); err != nil {
		t.Fatalf("the valid file the cases start from: %v", err)
	}
	oversized := append(slices.Clone(valid), bytes.Repeat([]byte(" "), MaxCredsFile+1-len(valid))...)
	for _, tc := range []struct {
		name string
		file []byte
	}{
		{"empty", nil},
		{"not JSON", []byte("SUAB")},
		{"null", []byte("null")},
		{"array", []byte("[]")},
		{"unknown field", credsJSONOf("siot", q("credential"), "kind", q("key"), "node", n, "seed", q(user), "extra", "1")},
		{"no tag", credsJSONOf("kind", q("key"), "node", n, "seed", q(user))},
		{"wrong tag", credsJSONOf("siot", q("credentials"), "kind", q("key"), "node", n, "seed", q(user))},
		{"tag not a string", credsJSONOf("siot", "1", "kind", q("key"), "node", n, "seed", q(user))},
		{"unknown kind", credsJSONOf("siot", q("credential"), "kind", q("device"), "node", n, "seed", q(user))},
		{"system kind", credsJSONOf("siot", q("credential"), "kind", q("system"), "seed", q(user))},
		{"login kind", credsJSONOf("siot", q("credential"), "kind", q("login"), "node", n, "seed", q(user))},
		{"bad node", credsJSONOf("siot", q("credential"), "kind", q("key"), "node", q("node-1"), "seed", q(user))},
		{"node without dashes", credsJSONOf("siot", q("credential"), "kind", q("key"), "node", q(strings.ReplaceAll(node.String(), "-", "")), "seed", q(user))},
		{"nil node", credsJSONOf("siot", q("credential"), "kind", q("key"), "node", q(uuid.Nil.String()), "seed", q(user))},
		{"admin with a node", credsJSONOf("siot", q("credential"), "kind", q("admin"), "node", n, "seed", q(user))},
		{"key without a node", credsJSONOf("siot", q("credential"), "kind", q("key"), "seed", q(user))},
		{"key without a seed", credsJSONOf("siot", q("credential"), "kind", q("key"), "node", n)},
		{"account seed", credsJSONOf("siot", q("credential"), "kind", q("key"), "node", n, "seed", q(string(account)))},
		{"public key as seed", credsJSONOf("siot", q("credential"), "kind", q("admin"), "seed", q(authPublicKey(t, &Creds{Seed: []byte(user)})))},
		{"seed with a bad checksum", credsJSONOf("siot", q("credential"), "kind", q("admin"), "seed", q(badChecksum(user)))},
		{"key with a token", credsJSONOf("siot", q("credential"), "kind", q("key"), "node", n, "seed", q(user), "token", q(token))},
		{"user with a seed", credsJSONOf("siot", q("credential"), "kind", q("user"), "node", n, "seed", q(user), "token", q(token))},
		{"user without a token", credsJSONOf("siot", q("credential"), "kind", q("user"), "node", n)},
		{"user with a bad token", credsJSONOf("siot", q("credential"), "kind", q("user"), "node", n, "token", q(token[:len(token)-2]))},
		{"token of another user", credsJSONOf("siot", q("credential"), "kind", q("user"), "node", q(other.String()), "token", q(token))},
		{"oversized", oversized},
		{"two objects", append(slices.Clone(valid), valid...)},
		{"object and junk", append(slices.Clone(valid), "x"...)},
	} {
		c, err := ParseCreds(tc.file)
		if err == nil || !errors.Is(err, ErrCreds) || c != nil {
			t.Errorf("%s: ParseCreds = %+v, %v; want ErrCreds", tc.name, c, err)
			continue
		}
		if strings.Contains(err.Error(), user) {
			t.Errorf("%s: error %q shows the seed", tc.name, err)
		}
	}
	// The size bound is exact.
	atLimit := append(slices.Clone(valid), bytes.Repeat([]byte(" "), MaxCredsFile-len(valid))...)
	if _, err := ParseCreds(atLimit); err != nil {
		t.Errorf("ParseCreds of %d bytes: %v", len(atLimit), err)
	}
}

func TestWriteReadCreds(t *testing.T) {
	r := authRand(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.creds")
	first := authKeyCreds(t, r, KindAdmin, uuid.Nil)
	second := authKeyCreds(t, r, KindKey, authUUID(t, r))
	if err := WriteCreds(path, first, false); err != nil {
		t.Fatalf("WriteCreds: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	got, err := ReadCreds(path)
	if err != nil || !credsEqual(got, first) {
		t.Fatalf("ReadCreds = %+v, %v; want %+v", got, err, first)
	}

	// No replace: the file stays as it was.
	if err := WriteCreds(path, second, false); err == nil {
		t.Error("WriteCreds over an existing file without replace succeeded")
	}
	if got, err := ReadCreds(path); err != nil || !credsEqual(got, first) {
		t.Errorf("after a refused write: %+v, %v; want the first credentials", got, err)
	}
	if err := WriteCreds(path, second, true); err != nil {
		t.Fatalf("WriteCreds with replace: %v", err)
	}
	if got, err := ReadCreds(path); err != nil || !credsEqual(got, second) {
		t.Errorf("after replace: %+v, %v; want the second credentials", got, err)
	}
	if err := WriteCreds(filepath.Join(dir, "bad.creds"), &Creds{Kind: KindKey}, false); err == nil {
		t.Error("WriteCreds of a key without a node succeeded")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "admin.creds" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only admin.creds (no temporary files)", names)
	}

	// A file others may read is refused, with the fix in the message.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := ReadCreds(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("ReadCreds of a 0644 file = %+v, %v; want an error that says chmod 600", c, err)
	}
	if _, err := ReadCreds(filepath.Join(dir, "missing.creds")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadCreds of a missing file: %v, want os.ErrNotExist", err)
	}
	big := filepath.Join(dir, "big.creds")
	if err := os.WriteFile(big, bytes.Repeat([]byte(" "), MaxCredsFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCreds(big); !errors.Is(err, ErrCreds) {
		t.Errorf("ReadCreds of an oversized file: %v, want ErrCreds", err)
	}
}

// tokenString re-encodes a parsed token from its payload and mac.
func tokenString(tk Token) string {
	enc := base64.RawURLEncoding
	return tokenPrefix + enc.EncodeToString(tk.payload) + "." + enc.EncodeToString(tk.mac)
}

func TestToken(t *testing.T) {
	r := authRand(t)
	key, other := make([]byte, 32), make([]byte, 32)
	_, _ = r.Read(key)
	_, _ = r.Read(other)
	user := authUUID(t, r)
	expires := time.UnixMilli(1_900_000_000_123)
	s := NewToken(key, user, 1<<40+5, expires)
	if len(s) > MaxTokenLen {
		t.Fatalf("token of %d bytes, more than MaxTokenLen %d", len(s), MaxTokenLen)
	}
	tk, err := ParseToken(s)
	if err != nil {
		t.Fatalf("ParseToken(%q): %v", s, err)
	}
	if tk.User != user || tk.Password != 1<<40+5 || !tk.Expires.Equal(expires) {
		t.Errorf("token fields %v, %d, %v; want %v, %d, %v", tk.User, tk.Password, tk.Expires, user, 1<<40+5, expires)
	}
	if !tk.Verify(key) {
		t.Error("Verify with the issuing key = false")
	}
	if tk.Verify(other) || tk.Verify(nil) || tk.Verify(key[:31]) {
		t.Error("Verify with another key = true")
	}
	if (Token{User: user}).Verify(key) {
		t.Error("Verify of a Token not from ParseToken = true")
	}
	if s2 := NewToken(key, user, 1<<40+5, expires); s2 == s {
		t.Error("two tokens with the same fields are equal: no random ID")
	}

	// Any other byte at any position: refused, or a token whose
	// signature does not verify.
	for i := range len(s) {
		for b := range 256 {
			if byte(b) == s[i] {
				continue
			}
			m := s[:i] + string([]byte{byte(b)}) + s[i+1:]
			if tk, err := ParseToken(m); err == nil && tk.Verify(key) {
				t.Fatalf("token with byte %d changed from %q to %q verifies", i, s[i], byte(b))
			}
		}
	}

	enc := base64.RawURLEncoding
	ps, ms, _ := strings.Cut(strings.TrimPrefix(s, tokenPrefix), ".")
	nilUser := NewToken(key, uuid.Nil, 1, expires)
	for _, tc := range []struct{ name, token string }{
		{"empty", ""},
		{"no prefix", strings.TrimPrefix(s, tokenPrefix)},
		{"v2", "v2." + ps + "." + ms},
		{"V1", "V1." + ps + "." + ms},
		{"no signature", tokenPrefix + ps},
		{"empty signature", tokenPrefix + ps + "."},
		{"short signature", tokenPrefix + ps + "." + ms[:40]},
		{"long signature", tokenPrefix + ps + "." + ms + "AAAA"},
		{"short payload", tokenPrefix + ps[:60] + "." + ms},
		{"long payload", tokenPrefix + ps + "AAAA." + ms},
		{"padded", tokenPrefix + enc.EncodeToString([]byte("x")) + "==." + ms},
		{"standard alphabet", tokenPrefix + strings.NewReplacer("-", "+", "_", "/").Replace(ps) + "+/." + ms},
		{"three parts", s + ".x"},
		{"newline in payload", tokenPrefix + ps[:10] + "\n" + ps[10:] + "." + ms},
		{"newline in signature", tokenPrefix + ps + "." + ms[:10] + "\r\n" + ms[10:]},
		{"nil user", nilUser},
		{"over MaxTokenLen", s + strings.Repeat("A", MaxTokenLen-len(s)+1)},
	} {
		if tk, err := ParseToken(tc.token); err == nil {
			t.Errorf("%s: ParseToken(%q) = %+v, want an error", tc.name, tc.token, tk)
		}
	}
	// The length bound comes before decoding: a huge token costs its
	// error, not its size.
	huge := tokenPrefix + strings.Repeat("A", 1<<20) + "." + ms
	var herr error
	if n := msgAllocated(func() { _, herr = ParseToken(huge) }); herr == nil || n > 4<<10 {
		t.Errorf("ParseToken of %d bytes: %v, %d bytes allocated; want an error costing under 4 KiB", len(huge), herr, n)
	}
	if !strings.Contains(herr.Error(), strconv.Itoa(MaxTokenLen)) {
		t.Errorf("ParseToken of %d bytes: %q, want the bound in the error", len(huge), herr)
	}
}

// authPHC returns the PHC string of an argon2id hash of password made with
// the given parameters, salt and key length: cheap ones for tests.
func authPHC(password string, m, tm uint32, p uint8, salt []byte, keyLen uint32) string {
	h := PasswordHash{Memory: m, Time: tm, Threads: p, Salt: salt,
		Key: argon2.IDKey([]byte(password), salt, tm, m, p, keyLen)}
	return h.encode()
}

var phcShape = regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestPassword(t *testing.T) {
	var seed [8]byte
	r := authRand(t)
	_, _ = r.Read(seed[:])
	salts := authRandFrom(binary.LittleEndian.Uint64(seed[:]))
	const pw = "correct horse battery staple"
	phc, err := HashPassword(pw, salts)
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	if !phcShape.MatchString(phc) {
		t.Fatalf("HashPassword = %q, want $argon2id$v=19$m=19456,t=2,p=1$<22>$<43>", phc)
	}
	h, err := ParsePasswordHash(phc)
	if err != nil || h.Memory != 19456 || h.Time != 2 || h.Threads != 1 || len(h.Salt) != 16 || len(h.Key) != 32 {
		t.Fatalf("ParsePasswordHash(%q) = %+v, %v", phc, h, err)
	}
	for _, tc := range []struct {
		password string
		want     bool
	}{
		{pw, true}, {pw + " ", false}, {"Correct horse battery staple", false}, {"", false},
		{strings.Repeat("x", MaxPasswordLen+1), false},
	} {
		if ok, err := VerifyPassword(phc, tc.password); ok != tc.want || err != nil {
			t.Errorf("VerifyPassword(%.20q) = %v, %v; want %v", tc.password, ok, err, tc.want)
		}
	}
	// The salt is what differs: a second hash differs, and the same
	// salts give the same hash.
	phc2, err := HashPassword(pw, salts)
	if err != nil || phc2 == phc {
		t.Errorf("second HashPassword = %q, %v; want another hash than %q", phc2, err, phc)
	}
	again, err := HashPassword(pw, authRandFrom(binary.LittleEndian.Uint64(seed[:])))
	if err != nil || again != phc {
		t.Errorf("HashPassword with the same salt = %q, %v; want %q", again, err, phc)
	}
	if ok, err := VerifyPassword(phc2, pw); !ok || err != nil {
		t.Errorf("VerifyPassword of the second hash = %v, %v", ok, err)
	}

	for _, p := range []string{"", strings.Repeat("x", MaxPasswordLen+1)} {
		if phc, err := HashPassword(p, salts); err == nil {
			t.Errorf("HashPassword of %d bytes = %q, want an error", len(p), phc)
		}
	}
	broken := errors.New("no entropy")
	if phc, err := HashPassword(pw, iotest.ErrReader(broken)); !errors.Is(err, broken) {
		t.Errorf("HashPassword with a failing reader = %q, %v; want its error", phc, err)
	}
	if phc, err := HashPassword(pw, strings.NewReader("short")); err == nil {
		t.Errorf("HashPassword with 5 bytes of salt = %q, want an error", phc)
	}
	if phc, err := HashPassword(pw, nil); err == nil {
		t.Errorf("HashPassword with a nil reader = %q, want an error", phc)
	}

	// Verification runs the parameters the hash declares.
	salt := []byte("saltsaltsalt")
	for _, tc := range []struct {
		m, t uint32
		p    uint8
		key  uint32
	}{{8, 1, 1, 16}, {32, 1, 4, 64}, {64, 3, 2, 20}} {
		phc := authPHC(pw, tc.m, tc.t, tc.p, salt, tc.key)
		if ok, err := VerifyPassword(phc, pw); !ok || err != nil {
			t.Errorf("VerifyPassword(%q) = %v, %v; want true", phc, ok, err)
		}
		if ok, err := VerifyPassword(phc, "wrong"); ok || err != nil {
			t.Errorf("VerifyPassword(%q, wrong) = %v, %v; want false", phc, ok, err)
		}
	}
	// A malformed hash is an error, not a wrong password.
	for _, bad := range []string{"", "secret", "$argon2id$v=19$m=70000,t=2,p=1$c2FsdHNhbHQ$" + strings.Repeat("A", 43)} {
		if ok, err := VerifyPassword(bad, pw); ok || !errors.Is(err, ErrPasswordHash) {
			t.Errorf("VerifyPassword(%q) = %v, %v; want ErrPasswordHash", bad, ok, err)
		}
	}
}

// phcOf formats a PHC string from its parts, unchecked.
func phcOf(params string, salt, key int) string {
	return "$argon2id$v=19$" + params + "$" + phcB64.EncodeToString(bytes.Repeat([]byte{0xa5}, salt)) +
		"$" + phcB64.EncodeToString(bytes.Repeat([]byte{0x5a}, key))
}

func TestParsePasswordHashBounds(t *testing.T) {
	salt16 := phcB64.EncodeToString(bytes.Repeat([]byte{0xa5}, 16))
	key32 := phcB64.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	good := []string{
		phcOf("m=19456,t=2,p=1", 16, 32),
		phcOf("m=65536,t=10,p=4", 64, 64), // every bound at its top
		phcOf("m=8,t=1,p=1", 8, 16),       // and at its bottom
		phcOf("m=32,t=1,p=4", 8, 16),
	}
	for _, s := range good {
		h, err := ParsePasswordHash(s)
		if err != nil {
			t.Errorf("ParsePasswordHash(%q): %v", s, err)
			continue
		}
		if h.encode() != s {
			t.Errorf("ParsePasswordHash(%q) re-encodes as %q", s, h.encode())
		}
	}
	bad := []struct{ name, phc string }{
		{"over 256 bytes", phcOf("m=19456,t=2,p=1", 16, 32) + strings.Repeat("A", 256)},
		{"257 bytes", strings.Repeat("$", 257)},
		{"empty", ""},
		{"argon2i", strings.Replace(phcOf("m=19456,t=2,p=1", 16, 32), "argon2id", "argon2i", 1)},
		{"argon2d", strings.Replace(phcOf("m=19456,t=2,p=1", 16, 32), "argon2id", "argon2d", 1)},
		{"bcrypt", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"},
		{"v=16", strings.Replace(phcOf("m=19456,t=2,p=1", 16, 32), "v=19", "v=16", 1)},
		{"v=019", strings.Replace(phcOf("m=19456,t=2,p=1", 16, 32), "v=19", "v=019", 1)},
		{"no version", "$argon2id$m=19456,t=2,p=1$" + salt16 + "$" + key32},
		{"memory over 64 MiB", phcOf("m=65537,t=2,p=1", 16, 32)},
		{"memory 4 GiB", phcOf("m=4294967295,t=2,p=1", 16, 32)},
		{"memory overflows", phcOf("m=4294967296,t=2,p=1", 16, 32)},
		{"memory under 8", phcOf("m=7,t=2,p=1", 16, 32)},
		{"memory under 8 per thread", phcOf("m=31,t=2,p=4", 16, 32)},
		{"memory 0", phcOf("m=0,t=2,p=1", 16, 32)},
		{"time 0", phcOf("m=19456,t=0,p=1", 16, 32)},
		{"time 11", phcOf("m=19456,t=11,p=1", 16, 32)},
		{"time 2^32-1", phcOf("m=19456,t=4294967295,p=1", 16, 32)},
		{"threads 0", phcOf("m=19456,t=2,p=0", 16, 32)},
		{"threads 5", phcOf("m=19456,t=2,p=5", 16, 32)},
		{"threads 257", phcOf("m=19456,t=2,p=257", 16, 32)}, // 1 as a uint8
		{"salt 7 bytes", phcOf("m=19456,t=2,p=1", 7, 32)},
		{"salt 65 bytes", phcOf("m=19456,t=2,p=1", 65, 32)},
		{"no salt", phcOf("m=19456,t=2,p=1", 0, 32)},
		{"key 15 bytes", phcOf("m=19456,t=2,p=1", 16, 15)},
		{"key 65 bytes", phcOf("m=19456,t=2,p=1", 16, 65)},
		{"no key", phcOf("m=19456,t=2,p=1", 16, 0)},
		{"leading zero", phcOf("m=019456,t=2,p=1", 16, 32)},
		{"plus sign", phcOf("m=+19456,t=2,p=1", 16, 32)},
		{"minus sign", phcOf("m=19456,t=-2,p=1", 16, 32)},
		{"space", phcOf("m=19456, t=2,p=1", 16, 32)},
		{"hex", phcOf("m=0x4c00,t=2,p=1", 16, 32)},
		{"parameters reordered", phcOf("t=2,m=19456,p=1", 16, 32)},
		{"parameter missing", phcOf("m=19456,t=2", 16, 32)},
		{"extra parameter", phcOf("m=19456,t=2,p=1,k=1", 16, 32)},
		{"keyid parameter", phcOf("m=19456,t=2,p=1,keyid=AAAA", 16, 32)},
		{"empty value", phcOf("m=,t=2,p=1", 16, 32)},
		{"padded salt", "$argon2id$v=19$m=19456,t=2,p=1$" + salt16 + "==$" + key32},
		{"URL alphabet", "$argon2id$v=19$m=19456,t=2,p=1$" + strings.Repeat("_", 22) + "$" + key32},
		{"trailing bits", "$argon2id$v=19$m=19456,t=2,p=1$" + salt16[:21] + "B$" + key32},
		{"newline in salt", "$argon2id$v=19$m=19456,t=2,p=1$" + salt16[:8] + "\n" + salt16[8:] + "$" + key32},
		{"CRLF in key", "$argon2id$v=19$m=19456,t=2,p=1$" + salt16 + "$" + key32[:8] + "\r\n" + key32[8:]},
		{"trailing dollar", phcOf("m=19456,t=2,p=1", 16, 32) + "$"},
		{"leading junk", "x" + phcOf("m=19456,t=2,p=1", 16, 32)},
		{"no leading dollar", strings.TrimPrefix(phcOf("m=19456,t=2,p=1", 16, 32), "$")},
		{"trailing newline", phcOf("m=19456,t=2,p=1", 16, 32) + "\n"},
	}
	if salt16[21] == 'B' {
		t.Fatal("the trailing-bits case needs another last character")
	}
	for _, tc := range bad {
		var h PasswordHash
		var err error
		// Whatever the hash declares, refusing it costs little.
		n := msgAllocated(func() { h, err = ParsePasswordHash(tc.phc) })
		if !errors.Is(err, ErrPasswordHash) {
			t.Errorf("%s: ParsePasswordHash(%.80q) = %+v, %v; want ErrPasswordHash", tc.name, tc.phc, h, err)
			continue
		}
		if n > 4<<10 {
			t.Errorf("%s: refusal allocated %d bytes", tc.name, n)
		}
		if len(err.Error()) > 200 {
			t.Errorf("%s: error of %d bytes, want the input truncated", tc.name, len(err.Error()))
		}
	}
}

// TestVerifyPasswordWorstCase: the costliest hash ParsePasswordHash
// accepts allocates no more than the 64 MiB bound (and a little for the
// rest) when verified.
func TestVerifyPasswordWorstCase(t *testing.T) {
	if testing.Short() {
		t.Skip("runs argon2 at its bounds")
	}
	phc := authPHC("x", 8, 1, 1, make([]byte, 64), 64)
	h, _ := ParsePasswordHash(phc)
	h.Memory, h.Time, h.Threads = 64<<10, 10, 4
	worst := h.encode()
	// One run (msgAllocated's five would take seconds under -race): no
	// test runs in parallel with this one, so little else allocates.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	ok, err := VerifyPassword(worst, "x")
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	n := after.TotalAlloc - before.TotalAlloc
	t.Logf("worst-case verification (%s): %d bytes allocated in %v", worst[:33], n, took.Round(time.Millisecond))
	if ok || err != nil {
		t.Fatalf("VerifyPassword(%q) = %v, %v; want false", worst, ok, err)
	}
	if n > 64<<20+1<<20 {
		t.Errorf("worst-case verification allocated %d bytes, bound 64 MiB", n)
	}
}

// authCredsSeeds returns credential files for the fuzz corpus: valid ones
// of each kind and refused ones, from a fixed seed.
func authCredsSeeds(tb testing.TB) [][]byte {
	r := authRandFrom(1)
	node := authUUID(tb, r)
	var out [][]byte
	for _, c := range []*Creds{authKeyCreds(tb, r, KindAdmin, uuid.Nil), authKeyCreds(tb, r, KindKey, node),
		{Kind: KindUser, Node: node, Token: NewToken([]byte("k"), node, 3, time.UnixMilli(1_900_000_000_000))}} {
		b, err := c.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	out = append(out,
		credsJSONOf("siot", `"credential"`, "kind", `"admin"`, "node", `"`+node.String()+`"`, "seed", `"SUAB"`),
		credsJSONOf("siot", `"credential"`, "kind", `"key"`, "seed", `"SUAB"`),
		credsJSONOf("siot", `"credential"`, "kind", `"user"`, "node", `"`+node.String()+`"`, "token", `"v1.x.y"`, "expires", `"2030-01-01T00:00:00Z"`),
		[]byte(`{"siot":"credential"}{"siot":"credential"}`), []byte("null"), []byte(""), []byte(`{"x":1}`))
	return out
}

// FuzzParseCreds: ParseCreds never panics, refuses only with ErrCreds, and
// what it accepts marshals into a file that parses to the same fields.
func FuzzParseCreds(f *testing.F) {
	for _, s := range authCredsSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCreds(b)
		if err != nil {
			if !errors.Is(err, ErrCreds) || c != nil {
				t.Fatalf("ParseCreds = %+v, %v; want nil and ErrCreds", c, err)
			}
			return
		}
		if len(b) > MaxCredsFile {
			t.Fatalf("accepted %d bytes, more than MaxCredsFile", len(b))
		}
		if _, err := c.Identity(); err != nil {
			t.Fatalf("accepted credentials without an identity: %v", err)
		}
		if (len(c.Seed) > 0) == (c.Token != "") {
			t.Fatalf("accepted %s credentials with seed %t and token %t", c.Kind, len(c.Seed) > 0, c.Token != "")
		}
		enc, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal of accepted credentials: %v", err)
		}
		c2, err := ParseCreds(enc)
		if err != nil {
			t.Fatalf("ParseCreds of the re-marshaled file %q: %v", enc, err)
		}
		if !credsEqual(c2, c) {
			t.Fatalf("round trip %+v, want %+v", c2, c)
		}
	})
}

// FuzzParseToken: ParseToken never panics, and a token it accepts is
// canonical (re-encoding its payload and signature gives the input), so a
// token has one spelling; its fields are the payload's.
func FuzzParseToken(f *testing.F) {
	key := []byte("fuzz token key")
	r := authRandFrom(2)
	user := authUUID(f, r)
	s := NewToken(key, user, 9, time.UnixMilli(1_900_000_000_000))
	for _, seed := range []string{s, s[:len(s)-1], s + "A", "v1." + strings.Repeat("A", 64) + "." + strings.Repeat("A", 43),
		"v1.", "v1..", "", "v2." + s[3:], NewToken(key, uuid.Nil, 0, time.Time{}), strings.Repeat("v1.", 60)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := ParseToken(s)
		if err != nil {
			return
		}
		if len(s) > MaxTokenLen {
			t.Fatalf("accepted %d bytes, more than MaxTokenLen", len(s))
		}
		if back := tokenString(tk); back != s {
			t.Fatalf("token %q re-encodes as %q", s, back)
		}
		if tk.User == uuid.Nil || !bytes.Equal(tk.User[:], tk.payload[:16]) ||
			tk.Password != binary.BigEndian.Uint64(tk.payload[16:24]) ||
			tk.Expires.UnixMilli() != int64(binary.BigEndian.Uint64(tk.payload[24:32])) ||
			!bytes.Equal(tk.ID[:], tk.payload[32:48]) {
			t.Fatalf("fields %+v do not match the payload % x", tk, tk.payload)
		}
		tk2, err := ParseToken(s)
		if err != nil || tk2.User != tk.User || tk2.Password != tk.Password || !tk2.Expires.Equal(tk.Expires) ||
			tk2.ID != tk.ID || tk2.Verify(key) != tk.Verify(key) {
			t.Fatalf("second parse %+v, %v; want %+v", tk2, err, tk)
		}
	})
}

// FuzzParsePasswordHash: ParsePasswordHash never panics, refuses only with
// ErrPasswordHash, and what it accepts is within the bounds and
// re-encodes to the input. It only parses: verifying at up to 64 MiB per
// input would make each iteration cost what the bounds allow.
func FuzzParsePasswordHash(f *testing.F) {
	phc, err := HashPassword("fuzz", authRandFrom(3))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		phc, authPHC("x", 8, 1, 1, []byte("saltsalt"), 16),
		phcOf("m=65536,t=10,p=4", 64, 64), phcOf("m=65537,t=2,p=1", 16, 32), phcOf("m=19456,t=0,p=1", 16, 32),
		phcOf("m=019456,t=2,p=1", 16, 32), phcOf("m=19456,t=2,p=5", 7, 65), phc + "\n", "$argon2id$v=19$$$",
		"$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$c2FsdHNhbHRzYWx0c2FsdA", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParsePasswordHash(s)
		if err != nil {
			if !errors.Is(err, ErrPasswordHash) {
				t.Fatalf("ParsePasswordHash(%q): %v, want ErrPasswordHash", s, err)
			}
			return
		}
		if len(s) > maxPasswordHashLen || h.Memory > maxPasswordMemory || h.Memory < 8*uint32(h.Threads) ||
			h.Time < 1 || h.Time > maxPasswordTime || h.Threads < 1 || h.Threads > maxPasswordThreads ||
			len(h.Salt) < minPasswordSalt || len(h.Salt) > maxPasswordSalt ||
			len(h.Key) < minPasswordKey || len(h.Key) > maxPasswordKey {
			t.Fatalf("ParsePasswordHash(%q) accepted %+v, out of bounds", s, h)
		}
		if back := h.encode(); back != s {
			t.Fatalf("ParsePasswordHash(%q) re-encodes as %q", s, back)
		}
	})
}

// badChecksum returns seed with one character in its middle changed to
// another of the base32 alphabet: its data bits change, so its checksum no
// longer matches. (The last character carries unused bits: changing it
// may change nothing.)
func badChecksum(seed string) string {
	i := len(seed) / 2
	c := byte('A')
	if seed[i] == 'A' {
		c = 'B'
	}
	return seed[:i] + string(c) + seed[i+1:]
}
