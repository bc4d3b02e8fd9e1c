package replica

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// Kinds of link in the link book, the kind label of its metrics.
const (
	KindUpstream = "upstream" // a link this instance dials as an edge; named by URL
	KindPeer     = "peer"     // a peer link, dialed (named by URL) or accepted (named by the peer's instance)
	KindEdge     = "edge"     // an edge that links here; named by its root node
)

// linkStore is what the link book needs of the store: local records, one
// per name (store.Store).
type linkStore interface {
	SetLinkRecords(recs map[string][]byte) error
	LinkRecords(fn func(name string, data []byte) error) error
}

// linkRecord is what the book keeps of a link, and what it stores (as a
// msgpack map) under its name.
type linkRecord struct {
	Kind      string `msgpack:"kind"`
	Name      string `msgpack:"-"`                // the link's identity: URL, edge root or peer instance
	Role      string `msgpack:"role"`             // the role of its sessions
	URL       string `msgpack:"url,omitempty"`    // a dialed link's URL (credentials removed)
	Remote    string `msgpack:"remote,omitempty"` // the remote instance it last reached
	LastSeen  int64  `msgpack:"seen"`             // Unix ms the remote last spoke; for a link up, when the book last heard of it
	Connected bool   `msgpack:"up"`
}

// linkBook remembers each link this instance has known: its last state
// and when its remote was last seen, after its session ends and across
// restarts (in the store, one record per link identity). A session that
// comes up or ends is recorded at once; a live session's last-seen time is
// read from it. Safe for concurrent use.
type linkBook struct {
	st  linkStore
	log *slog.Logger

	mu   sync.Mutex
	recs map[string]*linkRecord // by recordName
	live map[string]*session    // the session of each connected link
	// changed receives (coalesced) when a link comes up or goes down:
	// the rule engine keeps device state and its peers from it.
	changed chan struct{}
}

// recordName is the store's name of link (kind, name)'s record. A name
// that would make it longer than store.MaxLinkName (a long dialed URL) is cut and completed with a hash of the whole, so it
// still names one link: the record keeps the full URL.
func recordName(kind, name string) string {
	key := kind + "/" + name
	if len(key) <= store.MaxLinkName {
		return key
	}
	sum := sha256.Sum256([]byte(name))
	tail := "#" + hex.EncodeToString(sum[:8])
	return key[:store.MaxLinkName-len(tail)] + tail
}

// loadLinkBook reads the stored records. Every link is offline after a
// restart: its record keeps the time it was last seen.
func loadLinkBook(st linkStore, log *slog.Logger) (*linkBook, error) {
	b := &linkBook{st: st, log: log, recs: make(map[string]*linkRecord), live: make(map[string]*session),
		changed: make(chan struct{}, 1)}
	err := st.LinkRecords(func(name string, data []byte) error {
		var rec linkRecord
		if err := msgpack.Unmarshal(data, &rec); err != nil {
			log.Warn("link record unreadable; dropped", "name", name, "err", err)
			return nil
		}
		if rec.Kind == "" || len(name) <= len(rec.Kind)+1 || name[:len(rec.Kind)+1] != rec.Kind+"/" {
			log.Warn("link record unreadable; dropped", "name", name, "kind", rec.Kind)
			return nil
		}
		rec.Name, rec.Connected = name[len(rec.Kind)+1:], false
		b.recs[name] = &rec
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replica: load link records: %w", err)
	}
	return b, nil
}

// up records that link (kind, name) has session s, which reached remote.
func (b *linkBook) up(kind, name, role, url string, s *session) {
	key := recordName(kind, name)
	b.mu.Lock()
	rec := &linkRecord{Kind: kind, Name: name, Role: role, URL: url, Remote: s.remote.String(),
		LastSeen: time.Now().UnixMilli(), Connected: true}
	b.recs[key], b.live[key] = rec, s
	saved := map[string]linkRecord{key: *rec}
	b.mu.Unlock()
	b.save(saved)
	b.kick()
}

func (b *linkBook) kick() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// liveLinks reports the links up now: the root of each edge linked here,
// and each peer's instance with whether its session is through its
// initial sync (neither side has more to send).
func (b *linkBook) liveLinks() (edges map[uuid.UUID]bool, peers map[uuid.UUID]*session) {
	edges, peers = make(map[uuid.UUID]bool), make(map[uuid.UUID]*session)
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, s := range b.live {
		rec := b.recs[key]
		switch rec.Kind {
		case KindEdge:
			if id, err := uuid.Parse(rec.Name); err == nil {
				edges[id] = true
			}
		case KindPeer:
			peers[s.remote] = s
		}
	}
	return edges, peers
}

// isPeer reports whether instance id is a peer this instance has linked
// with (now or before).
func (b *linkBook) isPeer(id uuid.UUID) bool {
	if id == uuid.Nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, rec := range b.recs {
		if rec.Kind != KindPeer {
			continue
		}
		if rec.Remote == id.String() {
			return true
		}
		if s := b.live[key]; s != nil && s.remote == id {
			return true
		}
	}
	return false
}

// knownPeers counts the peer links this instance has ever had (records
// survive restarts).
func (b *linkBook) knownPeers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, rec := range b.recs {
		if rec.Kind == KindPeer {
			n++
		}
	}
	return n
}

// down records that session s of link (kind, name) ended: the link is
// offline since its remote last spoke. A session already replaced by a
// newer one changes nothing.
func (b *linkBook) down(kind, name string, s *session) {
	b.downAll([]linkEnd{{kind, name, s}})
}

// linkEnd is a session that ended, with its link's identity.
type linkEnd struct {
	kind, name string
	s          *session
}

// downAll is down for many sessions, saved in one store write: a cloud
// that shuts down ends every edge's session at once.
func (b *linkBook) downAll(ends []linkEnd) {
	saved := make(map[string]linkRecord, len(ends))
	b.mu.Lock()
	for _, e := range ends {
		key := recordName(e.kind, e.name)
		if b.live[key] != e.s {
			continue
		}
		delete(b.live, key)
		rec := b.recs[key]
		rec.Connected = false
		rec.LastSeen = time.Unix(0, e.s.lastSeen.Load()).UnixMilli()
		saved[key] = *rec
	}
	b.mu.Unlock()
	b.save(saved)
	if len(saved) > 0 {
		b.kick()
	}
}

// save stores records. A store that refuses (closed, disk full) loses
// only the records' latest state: the links themselves are unaffected.
func (b *linkBook) save(recs map[string]linkRecord) {
	if len(recs) == 0 {
		return
	}
	data := make(map[string][]byte, len(recs))
	for key, rec := range recs {
		d, err := msgpack.Marshal(&rec)
		if err != nil {
			b.log.Debug("link record not saved", "name", key, "err", err)
			continue
		}
		data[key] = d
	}
	if err := b.st.SetLinkRecords(data); err != nil {
		b.log.Debug("link records not saved", "count", len(data), "err", err)
	}
}

// Refreshing the stored last-seen times of live links, so that after a
// crash (no session ended cleanly) a link shows offline since about when
// it was last seen, not since its session started.
const (
	seenRefresh    = 5 * time.Minute // a live link's stored time is at most this old
	seenRefreshMax = 500             // records saved per refresh, in one commit
)

// refresh saves the last-seen time of live links whose stored one is older
// than seenRefresh, at most seenRefreshMax of them, in one store write.
// Called on a timer; links that came up together are spread over the
// calls that follow.
func (b *linkBook) refresh(now time.Time) {
	saved := make(map[string]linkRecord)
	b.mu.Lock()
	for key, s := range b.live {
		rec := b.recs[key]
		if now.Sub(time.UnixMilli(rec.LastSeen)) < seenRefresh {
			continue
		}
		if seen := time.Unix(0, s.lastSeen.Load()).UnixMilli(); seen > rec.LastSeen {
			rec.LastSeen = seen
		} else {
			continue // silent since the last save: nothing new to keep
		}
		saved[key] = *rec
		if len(saved) == seenRefreshMax {
			break
		}
	}
	b.mu.Unlock()
	b.save(saved)
}

// linkState is a link of the book as status and metrics show it.
type linkState struct {
	linkRecord
	LastSeenAt time.Time
}

// snapshot returns every link the book knows, sorted by kind and name; a
// connected one's last-seen time is its session's.
func (b *linkBook) snapshot() []linkState {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]linkState, 0, len(b.recs))
	for key, rec := range b.recs {
		st := linkState{linkRecord: *rec, LastSeenAt: time.UnixMilli(rec.LastSeen)}
		if s := b.live[key]; s != nil {
			st.LastSeenAt = time.Unix(0, s.lastSeen.Load())
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y linkState) int {
		return cmp.Or(cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.Name, y.Name))
	})
	return out
}

// formatSeen is a last-seen time as status shows it: RFC 3339, UTC,
// milliseconds.
func formatSeen(t time.Time) string {
	if t.IsZero() || t.UnixMilli() <= 0 {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// withHistory completes a status's links from the book: a dialed link
// that is down gets the time its remote was last seen, and every accepted
// link the book knows that has no session now is listed as offline since
// then.
func (b *linkBook) withHistory(st *transport.Status) {
	known := b.snapshot()
	byName := make(map[string]linkState, len(known))
	for _, k := range known {
		byName[recordName(k.Kind, k.Name)] = k
	}
	for i := range st.Links {
		l := &st.Links[i]
		kind := KindPeer
		if l.Role == transport.RoleEdge {
			kind = KindUpstream
		}
		if k, ok := byName[recordName(kind, l.URL)]; ok && l.LastSeen == "" {
			l.LastSeen = formatSeen(k.LastSeenAt)
			if l.Remote == "" {
				l.Remote = k.Remote
			}
		}
	}
	live := make(map[string]bool, len(st.Accepted))
	for _, l := range st.Accepted {
		live[l.Remote] = true
	}
	var offline []linkState
	for _, k := range known {
		if k.URL != "" || k.Connected || live[k.Remote] {
			continue
		}
		offline = append(offline, k)
	}
	// The most recently seen first, as many as fit beside the live ones.
	slices.SortStableFunc(offline, func(x, y linkState) int { return y.LastSeenAt.Compare(x.LastSeenAt) })
	offline = offline[:min(len(offline), max(0, maxStatusAccepted-len(st.Accepted)))]
	for _, k := range offline {
		st.Accepted = append(st.Accepted, transport.LinkStatus{Role: k.Role, Remote: k.Remote, LastSeen: formatSeen(k.LastSeenAt)})
	}
}

// maxStatusAccepted bounds the accepted links a status lists with the
// offline ones (the live ones are all listed): a status is one frame of
// at most 1 MiB, and a LinkStatus takes some 130 bytes. The metrics list
// every link.
const maxStatusAccepted = 4096
