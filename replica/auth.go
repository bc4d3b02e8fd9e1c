package replica

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// Authentication: who a connection is. The embedded NATS server asks the
// replica (transport.Authenticator) once per connection, and again every
// RevalidateInterval for every open connection, so a credential
// tombstoned here or on any instance that syncs it closes the sessions
// that used it.
//
//   - an nkey signed by the local administrator's key (Config.AdminKey),
//     user name "admin": KindAdmin;
//   - an nkey whose public key is a live TypeAuthKey point on the node the
//     user name names: KindKey for that node;
//   - a token this instance issued (siot login), while the user's
//     password point is the one it was issued against: KindUser;
//   - an email address and a password matching a user's argon2id hash:
//     KindLogin, which may only ask for a token. Failed attempts slow the
//     next ones from the same source.

// ErrForbidden is returned for a request its identity may not make.
var ErrForbidden = errors.New("permission denied")

// errAuth is what a refused connection is logged with: it names the
// reason and never the secret.
var errAuth = errors.New("authentication failed")

// loginSlowdown is the delay before the n-th consecutive failed login
// from one source is checked: none for the first two, then 250 ms doubling
// up to 8 s.
func loginSlowdown(fails int) time.Duration {
	if fails < 2 {
		return 0
	}
	return min(250*time.Millisecond<<min(fails-2, 10), 8*time.Second)
}

// maxLoginSources bounds the sources whose failures are remembered.
const maxLoginSources = 10_000

type loginFails struct {
	n        int // failures in a row
	inflight int // sign-ins being checked now
	last     time.Time
}

// maxLoginsPerSource bounds the sign-ins one source has checked at once:
// parallel guesses would each wait only the slowdown of the failures
// before them.
const maxLoginsPerSource = 2

// loginRecord is a password sign-in the server accepted: the user and the
// password point it matched, until the login connection's deadline.
type loginRecord struct {
	user  uuid.UUID
	pw    uint64 // HLC of the password point the sign-in matched
	until time.Time
}

// authority is the replica's Authenticator.
type authority struct {
	r        *Replica
	adminKey string
	tokenKey []byte
	sleep    func(time.Duration) // time.Sleep; tests may replace it (under mu)

	hashes chan struct{} // bounds concurrent password hashes (each takes ~19 MiB)

	mu     sync.Mutex
	fails  map[string]*loginFails    // by source host
	logins map[uuid.UUID]loginRecord // accepted sign-ins, by EmailID

	emailMu sync.Mutex
	emails  emailIndex

	dummyOnce sync.Once
	dummyHash string
}

func newAuthority(r *Replica) *authority {
	return &authority{r: r, adminKey: r.cfg.AdminKey, tokenKey: r.cfg.TokenKey, sleep: time.Sleep,
		hashes: make(chan struct{}, 2), fails: map[string]*loginFails{}, logins: map[uuid.UUID]loginRecord{}}
}

var _ transport.Authenticator = (*authority)(nil)

// Authenticate implements transport.Authenticator.
func (a *authority) Authenticate(req transport.AuthRequest) (transport.Grant, error) {
	switch {
	case req.Key != "":
		// A client that sends no user name with its nkey (the nats CLI's
		// --nkey) signs in as the administrator when the key is the
		// administrator's; a device's key needs its node as the user.
		if req.User == string(transport.KindAdmin) || req.User == "" && a.adminKey != "" && req.Key == a.adminKey {
			if a.adminKey == "" || subtle.ConstantTimeCompare([]byte(req.Key), []byte(a.adminKey)) != 1 {
				return transport.Grant{}, fmt.Errorf("%w: not this instance's administrator key", errAuth)
			}
			return transport.Grant{Identity: transport.Identity{Kind: transport.KindAdmin}, Credential: req.Key}, nil
		}
		if req.User == "" {
			return transport.Grant{}, fmt.Errorf("%w: nkey without a user name: only the administrator's key signs in so; a device's key needs its node UUID as the user name", errAuth)
		}
		node, err := uuid.Parse(req.User)
		if err != nil || node == uuid.Nil {
			return transport.Grant{}, fmt.Errorf("%w: nkey with user %q: want a node UUID or \"admin\"", errAuth, truncate(req.User, 40))
		}
		g := transport.Grant{Identity: transport.Identity{Kind: transport.KindKey, Node: node}, Credential: req.Key}
		return g, a.revalidate(g)
	case req.Token != "":
		t, err := transport.ParseToken(req.Token)
		if err != nil {
			return transport.Grant{}, fmt.Errorf("%w: %v", errAuth, err)
		}
		g := transport.Grant{Identity: transport.Identity{Kind: transport.KindUser, Node: t.User}, Deadline: t.Expires,
			Credential: req.Token}
		return g, a.revalidate(g)
	case req.User != "" && req.Password != "":
		return a.login(req)
	}
	return transport.Grant{}, fmt.Errorf("%w: anonymous connections are refused: give credentials (--creds)", errAuth)
}

// revalidate reports whether g still holds: its key point is live, its
// token unexpired and issued against the current password.
func (a *authority) revalidate(g transport.Grant) error {
	id := g.Identity
	switch id.Kind {
	case transport.KindAdmin:
		if a.adminKey == "" || g.Credential != a.adminKey {
			return fmt.Errorf("%w: administrator key replaced", errAuth)
		}
		return nil
	case transport.KindKey:
		p, ok, err := a.r.st.Get(crdt.Register{Node: id.Node, Type: crdt.TypeAuthKey, Key: g.Credential})
		switch {
		case err != nil:
			return fmt.Errorf("%w: %v", errAuth, err)
		case !ok:
			return fmt.Errorf("%w: key %s is not a credential of node %v", errAuth, shortKey(g.Credential), id.Node)
		case p.Tombstone:
			return fmt.Errorf("%w: key %s of node %v is revoked", errAuth, shortKey(g.Credential), id.Node)
		}
		return nil
	case transport.KindUser:
		t, err := transport.ParseToken(g.Credential)
		if err != nil {
			return fmt.Errorf("%w: %v", errAuth, err)
		}
		if !t.Verify(a.tokenKey) {
			return fmt.Errorf("%w: token not issued by this instance (or its token key changed)", errAuth)
		}
		if !a.r.physicalNow().Before(t.Expires) {
			return fmt.Errorf("%w: token of user %v expired at %s", errAuth, t.User, t.Expires.UTC().Format(time.RFC3339))
		}
		pw, ok, err := a.r.st.Get(crdt.Register{Node: t.User, Type: crdt.TypePassword, Key: crdt.DefaultKey})
		switch {
		case err != nil:
			return fmt.Errorf("%w: %v", errAuth, err)
		case !ok || pw.Tombstone:
			return fmt.Errorf("%w: user %v is revoked", errAuth, t.User)
		case uint64(pw.Time) != t.Password:
			return fmt.Errorf("%w: the password of user %v changed since the token was issued", errAuth, t.User)
		}
		return nil
	case transport.KindLogin:
		// A login connection lives two minutes (its deadline), long
		// enough to ask for its token, and only while the password it
		// matched is the user's.
		u, pw, ok := strings.Cut(g.Credential, "/")
		user, err := uuid.Parse(u)
		if !ok || err != nil {
			return fmt.Errorf("%w: login credential", errAuth)
		}
		p, found, err := a.r.st.Get(crdt.Register{Node: user, Type: crdt.TypePassword, Key: crdt.DefaultKey})
		if err != nil {
			return fmt.Errorf("%w: %v", errAuth, err)
		}
		if !found || p.Tombstone || strconv.FormatUint(uint64(p.Time), 10) != pw {
			return fmt.Errorf("%w: the password of user %v changed since it signed in", errAuth, user)
		}
		return nil
	}
	return fmt.Errorf("%w: identity %v", errAuth, id)
}

// login checks an email address and password, slowing repeated failures
// from one source. It grants KindLogin for two minutes.
func (a *authority) login(req transport.AuthRequest) (transport.Grant, error) {
	src := "unknown"
	if req.Remote != nil {
		src = req.Remote.String()
		if h, _, err := net.SplitHostPort(src); err == nil {
			src = h
		}
	}
	a.mu.Lock()
	f := a.fails[src]
	if f != nil && f.inflight == 0 && time.Since(f.last) > 15*time.Minute {
		delete(a.fails, src)
		f = nil
	}
	if f == nil {
		if len(a.fails) >= maxLoginSources {
			a.evictOldestFail()
		}
		f = &loginFails{last: time.Now()}
		a.fails[src] = f
	}
	if n := f.inflight; n >= maxLoginsPerSource {
		a.mu.Unlock()
		a.r.metrics.loginFailed()
		return transport.Grant{}, fmt.Errorf("%w: %d sign-ins from %s in progress already", errAuth, n, src)
	}
	// Sign-ins in progress count as failures for the wait: parallel
	// guesses wait as long as sequential ones.
	wait := loginSlowdown(f.n + f.inflight)
	f.inflight++
	sleep := a.sleep
	a.mu.Unlock()
	if wait > 0 {
		sleep(wait)
	}
	user, pw, err := a.checkPassword(req.User, req.Password)
	a.mu.Lock()
	defer a.mu.Unlock()
	f.inflight--
	if err != nil {
		f.n++
		f.last = time.Now()
		a.r.metrics.loginFailed()
		return transport.Grant{}, err
	}
	f.n = 0
	if f.inflight == 0 {
		delete(a.fails, src)
	}
	id := transport.Identity{Kind: transport.KindLogin, Node: transport.EmailID(req.User)}
	until := time.Now().Add(2 * time.Minute)
	for k, rec := range a.logins {
		if time.Now().After(rec.until) {
			delete(a.logins, k)
		}
	}
	a.logins[id.Node] = loginRecord{user: user, pw: pw, until: until}
	return transport.Grant{Identity: id, Deadline: until, Credential: fmt.Sprintf("%s/%d", user, pw)}, nil
}

func (a *authority) evictOldestFail() {
	var oldest string
	var at time.Time
	for k, f := range a.fails {
		if f.inflight > 0 {
			continue
		}
		if oldest == "" || f.last.Before(at) {
			oldest, at = k, f.last
		}
	}
	delete(a.fails, oldest)
}

// dummy returns a hash of a random password, made once, verified when no
// user has the address: a miss costs what a wrong password costs and does
// not reveal whether the address exists.
func (a *authority) dummy() string {
	a.dummyOnce.Do(func() {
		var pw [16]byte
		_, _ = rand.Read(pw[:])
		a.dummyHash, _ = transport.HashPassword(hex.EncodeToString(pw[:]), rand.Reader)
	})
	return a.dummyHash
}

// checkPassword returns the user whose address and password these are,
// and the HLC of the password point they matched.
func (a *authority) checkPassword(email, password string) (uuid.UUID, uint64, error) {
	if len(email) > 254 || len(password) > 1024 {
		return uuid.Nil, 0, fmt.Errorf("%w: email or password too long", errAuth)
	}
	users, err := a.lookupEmail(email)
	if err != nil {
		return uuid.Nil, 0, fmt.Errorf("%w: %v", errAuth, err)
	}
	hash, user, pw := a.dummy(), uuid.Nil, uint64(0)
	if len(users) == 1 {
		p, ok, err := a.r.st.Get(crdt.Register{Node: users[0], Type: crdt.TypePassword, Key: crdt.DefaultKey})
		if err != nil {
			return uuid.Nil, 0, fmt.Errorf("%w: %v", errAuth, err)
		}
		if ok && !p.Tombstone {
			hash, user, pw = p.Text, users[0], uint64(p.Time)
		}
	}
	// A hash slot, or a refusal: sign-ins queued without end would hold
	// every client that tries.
	select {
	case a.hashes <- struct{}{}:
	case <-time.After(5 * time.Second):
		return uuid.Nil, 0, fmt.Errorf("%w: too many sign-ins being checked; try again", errAuth)
	}
	ok, verr := transport.VerifyPassword(hash, password)
	<-a.hashes
	switch {
	case len(users) > 1:
		return uuid.Nil, 0, fmt.Errorf("%w: %d users sign in as %q: ask an administrator to remove all but one", errAuth, len(users), email)
	case user == uuid.Nil:
		return uuid.Nil, 0, fmt.Errorf("%w: wrong email or password", errAuth)
	case verr != nil:
		return uuid.Nil, 0, fmt.Errorf("%w: user %v: stored hash: %v", errAuth, user, verr)
	case !ok:
		return uuid.Nil, 0, fmt.Errorf("%w: wrong email or password", errAuth)
	}
	return user, pw, nil
}

// lookupEmail returns the users whose live email point is email. The index
// is built from a scan of the store at the first login and kept current
// from the change feed at each later one.
func (a *authority) lookupEmail(email string) ([]uuid.UUID, error) {
	a.emailMu.Lock()
	defer a.emailMu.Unlock()
	if err := a.emails.refresh(a.r.st); err != nil {
		return nil, err
	}
	var out []uuid.UUID
	for u := range a.emails.byEmail[transport.NormalizeEmail(email)] {
		out = append(out, u)
	}
	return out, nil
}

// emailIndex maps sign-in addresses to user nodes.
type emailIndex struct {
	built   bool
	seq     uint64 // changes up to here are indexed
	byEmail map[string]map[uuid.UUID]bool
	byUser  map[uuid.UUID]string
}

// maxEmailCatchUp is the most changes refresh reads from the feed; with
// more behind, it scans the store again. Catching up reads the changes'
// keys and only the email registers' values, a few million changes a
// second.
const maxEmailCatchUp = 2_000_000

func (x *emailIndex) refresh(st *store.Store) error {
	if x.built && st.LastSeq()-x.seq > maxEmailCatchUp {
		x.built = false
	}
	if !x.built {
		x.byEmail, x.byUser = map[string]map[uuid.UUID]bool{}, map[uuid.UUID]string{}
		x.seq = st.LastSeq()
		if err := st.ScanAll(func(p *crdt.Point) error {
			x.set(p)
			return nil
		}); err != nil {
			return fmt.Errorf("email index: %w", err)
		}
		x.built = true
	}
	last := x.seq
	err := st.FeedWhere(x.seq, func(c *store.Change) (bool, error) {
		last = c.Seq
		return c.Point.Type == crdt.TypeEmail && !c.Point.IsEdge(), nil
	}, func(c *store.Change) error {
		x.set(&c.Point)
		return nil
	})
	if err != nil {
		return err
	}
	x.seq = last
	return nil
}

func (x *emailIndex) set(p *crdt.Point) {
	if p.Type != crdt.TypeEmail || p.IsEdge() || p.Key != crdt.DefaultKey {
		return
	}
	if old, ok := x.byUser[p.Node]; ok {
		delete(x.byEmail[old], p.Node)
		if len(x.byEmail[old]) == 0 {
			delete(x.byEmail, old)
		}
		delete(x.byUser, p.Node)
	}
	if p.Tombstone || p.Text == "" {
		return
	}
	e := transport.NormalizeEmail(p.Text)
	if x.byEmail[e] == nil {
		x.byEmail[e] = map[uuid.UUID]bool{}
	}
	x.byEmail[e][p.Node] = true
	x.byUser[p.Node] = e
}

// issueToken answers a login connection's TokenRequest: a token for the
// user its sign-in matched, bound to the password it matched, refused when
// that password changed since.
func (a *authority) issueToken(id transport.Identity, req transport.TokenRequest) (transport.TokenReply, error) {
	if id.Kind != transport.KindLogin {
		return transport.TokenReply{}, fmt.Errorf("%w: only a connection signed in with a password gets a token", ErrForbidden)
	}
	a.mu.Lock()
	rec, ok := a.logins[id.Node]
	a.mu.Unlock()
	if !ok || time.Now().After(rec.until) {
		return transport.TokenReply{}, fmt.Errorf("%w: no sign-in of this address in the last two minutes", ErrForbidden)
	}
	pw, found, err := a.r.st.Get(crdt.Register{Node: rec.user, Type: crdt.TypePassword, Key: crdt.DefaultKey})
	if err != nil {
		return transport.TokenReply{}, err
	}
	if !found || pw.Tombstone || uint64(pw.Time) != rec.pw {
		return transport.TokenReply{}, fmt.Errorf("%w: the password changed since this sign-in", ErrForbidden)
	}
	ttl := a.r.cfg.TokenTTL
	if req.TTL > 0 && time.Duration(req.TTL)*time.Second < ttl {
		ttl = time.Duration(req.TTL) * time.Second
	}
	exp := a.r.physicalNow().Add(ttl)
	return transport.TokenReply{Token: transport.NewToken(a.tokenKey, rec.user, rec.pw, exp), User: rec.user, Expires: exp.UnixMilli()}, nil
}

func shortKey(k string) string {
	if len(k) > 12 {
		return k[:12] + "…"
	}
	return k
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
