package transport

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// A credential file holds one JSON object:
//
//	{"siot":"credential","kind":"key","node":"<uuid>","seed":"SU…"}
//	{"siot":"credential","kind":"admin","seed":"SU…"}
//	{"siot":"credential","kind":"user","node":"<uuid>","token":"v1.…","expires":"<RFC 3339>"}
//
// kind "admin" is the local administrator (DATA/admin.creds), "key" a
// device's or peer's nkey (siot device add, siot peer add), "user" a
// token from siot login. A seed is an nkey user seed: the public key is
// derived from it and the seed never leaves the file. Files are written
// mode 0600 and read with a size bound; unknown fields are refused.

// MaxCredsFile bounds a credential file's size.
const MaxCredsFile = 16 << 10

// credsTag is the value of a credential file's "siot" field.
const credsTag = "credential"

// Creds is a parsed credential file. It holds a secret: never log it.
type Creds struct {
	Kind    Kind      // KindAdmin, KindKey or KindUser
	Node    uuid.UUID // the key's or user's node; uuid.Nil for KindAdmin
	Seed    []byte    // nkey user seed (KindAdmin, KindKey)
	Token   string    // login token (KindUser)
	Expires time.Time // when Token expires (KindUser)
}

type credsJSON struct {
	Siot    string `json:"siot"`
	Kind    string `json:"kind"`
	Node    string `json:"node,omitempty"`
	Seed    string `json:"seed,omitempty"`
	Token   string `json:"token,omitempty"`
	Expires string `json:"expires,omitempty"`
}

// ErrCreds is wrapped by every error ParseCreds returns.
var ErrCreds = errors.New("bad credential file")

// NewKeyCreds returns credentials of kind (KindAdmin or KindKey, for node)
// with a new random nkey.
func NewKeyCreds(kind Kind, node uuid.UUID) (*Creds, error) {
	if kind != KindAdmin && kind != KindKey {
		return nil, fmt.Errorf("%w: a %q credential holds no key", ErrCreds, kind)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("transport: new nkey: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("transport: new nkey: %w", err)
	}
	c := &Creds{Kind: kind, Node: node, Seed: seed}
	if _, err := c.Identity(); err != nil {
		return nil, err
	}
	return c, nil
}

// Identity is the identity the server grants these credentials when it
// accepts them: its subjects are under Identity().Prefix().
func (c *Creds) Identity() (Identity, error) {
	id := Identity{Kind: c.Kind, Node: c.Node}
	if c.Kind != KindAdmin && c.Kind != KindKey && c.Kind != KindUser || !id.valid() {
		return Identity{}, fmt.Errorf("%w: kind %q with node %v", ErrCreds, c.Kind, c.Node)
	}
	return id, nil
}

// PublicKey returns the nkey public key of seed credentials.
func (c *Creds) PublicKey() (string, error) {
	kp, err := nkeys.FromSeed(c.Seed)
	if err != nil {
		return "", fmt.Errorf("%w: seed: %v", ErrCreds, err)
	}
	defer kp.Wipe()
	return kp.PublicKey()
}

// Marshal encodes the credentials as a file's content.
func (c *Creds) Marshal() ([]byte, error) {
	if _, err := c.Identity(); err != nil {
		return nil, err
	}
	j := credsJSON{Siot: credsTag, Kind: string(c.Kind), Seed: string(c.Seed), Token: c.Token}
	if c.Node != uuid.Nil {
		j.Node = c.Node.String()
	}
	if !c.Expires.IsZero() {
		j.Expires = c.Expires.UTC().Format(time.RFC3339)
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseCreds decodes a credential file's content. It refuses content over
// MaxCredsFile, unknown fields, a kind without its secret, a seed that is
// not an nkey user seed and a malformed token, all with ErrCreds.
func ParseCreds(b []byte) (*Creds, error) {
	if len(b) > MaxCredsFile {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrCreds, len(b), MaxCredsFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j credsJSON
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCreds, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: more than one JSON object", ErrCreds)
	}
	if j.Siot != credsTag {
		return nil, fmt.Errorf("%w: not a siot credential (\"siot\":%q)", ErrCreds, truncate(j.Siot, 20))
	}
	c := &Creds{Kind: Kind(j.Kind)}
	if j.Node != "" {
		n, err := uuid.Parse(j.Node)
		if err != nil || len(j.Node) != 36 || n == uuid.Nil {
			return nil, fmt.Errorf("%w: node %q", ErrCreds, truncate(j.Node, 40))
		}
		c.Node = n
	}
	if _, err := c.Identity(); err != nil {
		return nil, err
	}
	switch c.Kind {
	case KindAdmin, KindKey:
		if j.Token != "" || j.Expires != "" {
			return nil, fmt.Errorf("%w: a %s credential holds a seed, not a token", ErrCreds, c.Kind)
		}
		c.Seed = []byte(j.Seed)
		kp, err := nkeys.FromSeed(c.Seed)
		if err != nil {
			return nil, fmt.Errorf("%w: seed: %v", ErrCreds, err)
		}
		kp.Wipe()
		if !bytes.HasPrefix(c.Seed, []byte("SU")) {
			return nil, fmt.Errorf("%w: seed is not an nkey user seed", ErrCreds)
		}
	case KindUser:
		if j.Seed != "" {
			return nil, fmt.Errorf("%w: a user credential holds a token, not a seed", ErrCreds)
		}
		t, err := ParseToken(j.Token)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCreds, err)
		}
		if t.User != c.Node {
			return nil, fmt.Errorf("%w: token is for user %v, file says %v", ErrCreds, t.User, c.Node)
		}
		if j.Expires != "" {
			// Informational (the token says when it expires), but a
			// file that says something else is not one we wrote.
			e, err := time.Parse(time.RFC3339, j.Expires)
			if err != nil || e.Unix() != t.Expires.Unix() {
				return nil, fmt.Errorf("%w: expires %q does not match the token's", ErrCreds, truncate(j.Expires, 40))
			}
		}
		c.Token, c.Expires = j.Token, t.Expires
	}
	return c, nil
}

// ReadCreds reads and parses a credential file. A file readable by others
// than its owner is refused: it would leak the secret.
func ReadCreds(path string) (*Creds, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credentials %s: mode %v lets others read it: chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxCredsFile+1))
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	c, err := ParseCreds(b)
	if err != nil {
		return nil, fmt.Errorf("credentials %s: %w", path, err)
	}
	return c, nil
}

// WriteCreds writes c to path with mode 0600, atomically: a temporary file
// in the same directory renamed into place. It refuses to overwrite an
// existing file unless replace is set.
func WriteCreds(path string, c *Creds, replace bool) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	if !replace {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("credentials %s: file exists", path)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".creds-*")
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if !replace {
		// Link fails if path appeared meanwhile; rename would replace it.
		if err := os.Link(tmp.Name(), path); err != nil {
			return fmt.Errorf("credentials: %w", err)
		}
		return nil
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	return nil
}

// options returns the nats.go options that authenticate a connection with
// these credentials: an nkey signature of the server's nonce with the
// node (or "admin") as user name, or the token; and the identity's inbox.
func (c *Creds) options() ([]nats.Option, error) {
	id, err := c.Identity()
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{nats.CustomInboxPrefix(id.Inbox())}
	switch c.Kind {
	case KindUser:
		return append(opts, nats.Token(c.Token)), nil
	default:
		kp, err := nkeys.FromSeed(c.Seed)
		if err != nil {
			return nil, fmt.Errorf("%w: seed: %v", ErrCreds, err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, err
		}
		user := string(KindAdmin)
		if c.Kind == KindKey {
			user = c.Node.String()
		}
		return append(opts, nats.UserInfo(user, ""), nats.Nkey(pub, kp.Sign)), nil
	}
}

// Login tokens. A token is "v1." + base64url(payload) + "." +
// base64url(mac): the payload is the user's node (16 bytes), the HLC of
// the password point it was issued against (8, big-endian), its expiry
// (8, Unix ms) and a random ID (16); the mac is HMAC-SHA-256 over
// "siot-token-v1" and the payload, keyed with the issuing server's token
// key. A token is valid on the instance that issued it until it expires
// or the user's password point changes (a new password or a tombstone).

const (
	tokenPrefix     = "v1."
	tokenPayloadLen = 16 + 8 + 8 + 16
	tokenMACLen     = sha256.Size
	// MaxTokenLen bounds an encoded token.
	MaxTokenLen = 160
)

// Token is a decoded login token.
type Token struct {
	User     uuid.UUID
	Password uint64 // HLC of the password point it was issued against
	Expires  time.Time
	ID       [16]byte
	payload  []byte
	mac      []byte
}

// NewToken issues a token for user, bound to the password point written at
// pwTime, expiring at expires, signed with key.
func NewToken(key []byte, user uuid.UUID, pwTime uint64, expires time.Time) string {
	p := make([]byte, 0, tokenPayloadLen)
	p = append(p, user[:]...)
	p = binary.BigEndian.AppendUint64(p, pwTime)
	p = binary.BigEndian.AppendUint64(p, uint64(expires.UnixMilli()))
	var id [16]byte
	_, _ = rand.Read(id[:])
	p = append(p, id[:]...)
	enc := base64.RawURLEncoding
	return tokenPrefix + enc.EncodeToString(p) + "." + enc.EncodeToString(tokenMAC(key, p))
}

func tokenMAC(key, payload []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("siot-token-v1"))
	h.Write(payload)
	return h.Sum(nil)
}

// ParseToken decodes a token's fields without checking its signature
// (Verify does). It refuses anything longer than MaxTokenLen before
// decoding.
func ParseToken(s string) (Token, error) {
	if len(s) > MaxTokenLen {
		return Token{}, fmt.Errorf("token: %d bytes, more than %d", len(s), MaxTokenLen)
	}
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return Token{}, errors.New("token: not a v1 token")
	}
	ps, ms, ok := strings.Cut(rest, ".")
	if !ok {
		return Token{}, errors.New("token: no signature")
	}
	// Strict, and no CR or LF (which the decoder skips): a token has
	// one spelling, so no two strings carry the same signature.
	if strings.ContainsAny(rest, "\r\n") {
		return Token{}, errors.New("token: bad encoding")
	}
	enc := base64.RawURLEncoding.Strict()
	p, err := enc.DecodeString(ps)
	if err != nil || len(p) != tokenPayloadLen {
		return Token{}, errors.New("token: bad payload")
	}
	m, err := enc.DecodeString(ms)
	if err != nil || len(m) != tokenMACLen {
		return Token{}, errors.New("token: bad signature")
	}
	t := Token{payload: p, mac: m}
	copy(t.User[:], p[:16])
	t.Password = binary.BigEndian.Uint64(p[16:24])
	t.Expires = time.UnixMilli(int64(binary.BigEndian.Uint64(p[24:32])))
	copy(t.ID[:], p[32:48])
	if t.User == uuid.Nil {
		return Token{}, errors.New("token: no user")
	}
	return t, nil
}

// Verify reports whether the token was signed with key, in constant time.
func (t Token) Verify(key []byte) bool {
	return len(t.payload) == tokenPayloadLen && hmac.Equal(t.mac, tokenMAC(key, t.payload))
}
