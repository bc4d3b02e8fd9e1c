package replica

import (
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/rules"
)

// Device state (docs/design.md, "Device state").
//
// An upstream keeps the state of each device linked to it as points on the
// device's node, so they replicate like any other:
//
//   - when the device's link comes up: online 1, lastSeen (now) and
//     linkedVia (this instance's ID);
//   - when it ends, unless the device is back within linkGrace (or its
//     offlineAfter): lastSeen (when the device last spoke), and linkedVia
//     tombstoned;
//   - once the device has gone unseen for its offlineAfter (15 min without
//     one): online 0.
//
// Nothing is written while a link stays up, so an idle device costs no
// bytes. Peers agree: a device whose linkedVia names a linked peer is held
// by that peer and is online; a holder no longer linked (a peer down, or
// this instance after a restart) counts as seen until it was last known
// up. The online 0 is written by the device's owner among the peers (as
// for rules), so a device linked to one cloud is never marked offline by
// the other.

// deviceState is what the engine holds of a device's state points.
type deviceState struct {
	online       int8 // -1: no point; else 0 or 1
	lastSeen     time.Time
	holder       uuid.UUID // linkedVia; uuid.Nil when tombstoned or absent
	offlineAfter time.Duration
	dirty        bool
}

func isDeviceType(typ string) bool {
	switch typ {
	case rules.TypeOnline, rules.TypeLastSeen, rules.TypeLinkedVia, rules.TypeOfflineAfter:
		return true
	}
	return false
}

// deviceSaw takes a device state point into account.
func (e *ruleEngine) deviceSaw(p *crdt.Point) {
	d := e.devices[p.Node]
	if d == nil {
		d = &deviceState{online: -1}
		e.devices[p.Node] = d
	}
	switch p.Type {
	case rules.TypeOnline:
		switch {
		case p.Tombstone:
			d.online = -1
		case p.Value != 0:
			d.online = 1
		default:
			d.online = 0
		}
	case rules.TypeLastSeen:
		if !p.Tombstone {
			d.lastSeen = time.UnixMilli(int64(p.Value))
		}
	case rules.TypeLinkedVia:
		d.holder = uuid.Nil
		if !p.Tombstone {
			if id, err := uuid.Parse(p.Text); err == nil {
				d.holder = id
			}
		}
	case rules.TypeOfflineAfter:
		d.offlineAfter = 0
		if !p.Tombstone && p.Value > 0 {
			d.offlineAfter = time.Duration(p.Value * float64(time.Second))
		}
	}
	d.dirty = true
}

// keySaw notes a node that holds a device's credential: it is a device,
// whose rules run on it.
func (e *ruleEngine) keySaw(p *crdt.Point) {
	if !p.Tombstone && p.Text == "device" {
		e.edgeKeys[p.Node] = true
	}
}

// isDevice reports whether node n is a device: an edge's root.
func (e *ruleEngine) isDevice(n uuid.UUID) bool {
	return e.edgeKeys[n] || e.devices[n] != nil || e.liveEdges[n]
}

// deviceFlush checks the devices whose points changed.
func (e *ruleEngine) deviceFlush() {
	for id, d := range e.devices {
		if d.dirty {
			d.dirty = false
			e.deviceCheck(id)
		}
	}
}

// edgeDown records that this instance's link to device id ended at now.
func (e *ruleEngine) edgeDown(id uuid.UUID, now time.Time) {
	if e.downAt == nil {
		e.downAt = map[uuid.UUID]time.Time{}
	}
	e.downAt[id] = now
}

// deviceCheck brings device id's state points to what this instance
// knows, and sets a timer for its offline deadline.
func (e *ruleEngine) deviceCheck(id uuid.UUID) {
	if id == e.root {
		return // an edge's own state is its upstream's to keep
	}
	d := e.devices[id]
	now := e.now()
	if e.liveEdges[id] {
		var pts []crdt.Point
		if d == nil || d.online != 1 {
			pts = append(pts,
				crdt.Point{Node: id, Type: rules.TypeOnline, Value: 1},
				crdt.Point{Node: id, Type: rules.TypeLastSeen, Value: float64(now.UnixMilli())})
		}
		// Another holder that is linked (a peer the device also links
		// to) is left alone: two holders asserting would flap.
		if d == nil || d.holder == uuid.Nil || !e.isMember(d.holder) {
			pts = append(pts, crdt.Point{Node: id, Type: rules.TypeLinkedVia, Text: e.self.String()})
		}
		e.writeDevice(id, pts)
		return
	}
	if d == nil {
		return
	}
	if d.holder == e.self {
		// This instance held the link and does not any more: the end of
		// a session, or of the process before this one. A device back
		// within linkGrace changes nothing (a write now and another at
		// its return would cost its link both, and their histories); a
		// restart of this instance counts from when it started.
		seen, ok := e.downAt[id]
		if !ok {
			seen = e.linkLastSeen(id)
		}
		from := later(seen, e.start)
		if wait := from.Add(min(linkGrace, offlineAfter(d))); now.Before(wait) {
			e.setTimer(timerKey{uuid.Nil, id}, wait)
			return
		}
		e.writeDevice(id, []crdt.Point{
			{Node: id, Type: rules.TypeLastSeen, Value: float64(seen.UnixMilli())},
			{Node: id, Type: rules.TypeLinkedVia, Tombstone: true},
		})
		return
	}
	if d.online != 1 {
		return
	}
	if d.holder != uuid.Nil && e.isMember(d.holder) {
		return // a linked peer holds it
	}
	base := d.lastSeen
	if d.holder != uuid.Nil {
		// A holder that is gone: the device was seen until the holder
		// was last known up, or, unknown, until this instance started.
		if t, ok := e.peerSeen[d.holder]; ok {
			base = later(base, t)
		} else {
			base = later(base, e.start)
		}
	}
	deadline := base.Add(offlineAfter(d))
	if now.Before(deadline) {
		e.setTimer(timerKey{uuid.Nil, id}, deadline)
		return
	}
	if !e.owns(id) {
		return // the owner writes it; a change of peers looks again
	}
	e.writeDevice(id, []crdt.Point{{Node: id, Type: rules.TypeOnline, Value: 0}})
}

// linkGrace is how long after its link ends a device may come back with
// nothing written.
const linkGrace = 2 * time.Minute

// offlineAfter is how long device d may go unseen.
func offlineAfter(d *deviceState) time.Duration {
	if d.offlineAfter > 0 {
		return d.offlineAfter
	}
	return rules.DefaultOfflineAfter
}

// linkLastSeen is when the link book last saw device id's link (this
// instance's previous process held it), or when this one started.
func (e *ruleEngine) linkLastSeen(id uuid.UUID) time.Time {
	for _, st := range e.r.links.snapshot() {
		if st.Kind == KindEdge && st.Name == id.String() && !st.LastSeenAt.IsZero() {
			return st.LastSeenAt
		}
	}
	return e.start
}

func (e *ruleEngine) writeDevice(id uuid.UUID, pts []crdt.Point) {
	if len(pts) == 0 {
		return
	}
	if _, err := e.r.Write(pts); err != nil {
		e.r.log.Warn("device state: write", "device", id, "err", err)
		e.setTimer(timerKey{uuid.Nil, id}, e.now().Add(time.Second))
		return
	}
	for i := range pts {
		e.deviceSaw(&pts[i])
	}
	e.devices[id].dirty = false
}
