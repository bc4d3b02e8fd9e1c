package replica

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// subtreeFilter keeps the points an edge may write upstream: those of its
// own subtree, as it is or ever was (over deleted edges too). An edge session's acceptor runs every incoming batch
// through it, so a device, whatever it sends, changes nothing outside the
// subtree it was given:
//
//   - a node point is kept when its node is in the subtree, or is created
//     under it by a live edge of the same batch;
//   - an edge point is kept when its parent is such a node, its child is
//     not the subtree's root (the edge above a device is the upstream's to
//     write: a device cannot re-attach itself once detached), and its child
//     was never placed under a node outside the subtree (a device cannot
//     pull other nodes, and their data, under itself).
//
// Refused points are counted and reported in the ack, like points with a
// clock too far ahead. Node points of a node that has no edge yet are
// refused too: send a node's edge with or before its points.
type subtreeFilter struct {
	st   *store.Store
	root uuid.UUID
	// emailTaken reports whether another user than user signs in as
	// email (nil: not checked).
	emailTaken func(email string, user uuid.UUID) (bool, error)
	// keys allows authKey points: only for a link signed in as the local
	// administrator. A device may not mint credentials, not even below
	// itself: a key it made would outlive its own revocation.
	keys bool
}

func (f subtreeFilter) keep(pts []crdt.Point) (kept []crdt.Point, rejected int, reason string, err error) {
	// Membership over any edge, deleted ones too: while replicas
	// diverge, a node the device placed under one it deleted, or that the
	// upstream deleted, is still the device's.
	//
	// But a node the upstream placed elsewhere in the live tree, outside
	// the subtree (moved to another device or site), is no longer the
	// device's: a device writes only its own subtree, and cannot take a
	// node back by writing to it or an edge above it. So: in the subtree
	// now, or in it before and in no live part of the tree since.
	sc := newDeviceScope(f.st, f.root)
	in := func(n uuid.UUID) (bool, error) { return sc.containsNode(n) }
	foreign := func(n uuid.UUID) (bool, error) {
		// Placed, now or before, under a node outside the subtree: the
		// upstream's, not the device's. A node the device deleted from
		// its own subtree stays the device's to undelete.
		if ok, err := in(n); err != nil || ok {
			return false, err
		}
		alien := false
		err := f.st.Parents(n, func(c store.Child) error {
			pin, err := in(c.ID)
			if err != nil {
				return err
			}
			if !pin {
				alien = true
				return store.ErrStop
			}
			return nil
		})
		return alien, err
	}
	// Nodes this batch creates under the subtree, to a fixed point (a new
	// node may hang under another new node).
	created := map[uuid.UUID]bool{}
	for changed := true; changed; {
		changed = false
		for i := range pts {
			p := &pts[i]
			if p.Type != crdt.TypeEdge || p.Tombstone || created[p.Node] || p.Node == f.root || p.Node == f.st.Root() {
				continue
			}
			ok := created[p.Parent]
			if !ok {
				if ok, err = in(p.Parent); err != nil {
					return nil, 0, "", err
				}
			}
			if !ok {
				continue
			}
			// New to this store: no point, no edge. A node that
			// exists here and is not the device's (the root, a node
			// with no parent yet) is not the device's to take.
			old, err := nodeHasState(f.st, p.Node)
			if err != nil {
				return nil, 0, "", err
			}
			inNow, err := in(p.Node)
			if err != nil {
				return nil, 0, "", err
			}
			if !old || inNow {
				created[p.Node] = true
				changed = true
			}
		}
	}
	kept = pts[:0:0]
	for i := range pts {
		p := &pts[i]
		ok, why := false, ""
		if p.IsEdge() {
			switch parentIn, err := in(p.Parent); {
			case err != nil:
				return nil, 0, "", err
			case p.Node == f.root:
				why = "the edge above the device's root is the upstream's"
			case !parentIn && !created[p.Parent]:
				why = "parent outside the device's subtree"
			case p.Node == f.st.Root():
				why = "the child is the upstream's root"
			default:
				// The child is the device's (now, or deleted from its
				// subtree and placed nowhere since), created by this
				// push, or new to this store. Nothing else: a device
				// cannot pull other nodes, and their data, under itself.
				alien, err := foreign(p.Node)
				if err != nil {
					return nil, 0, "", err
				}
				ok, why = !alien, "child is a node outside the device's subtree"
				if ok && !created[p.Node] {
					nodeIn, err := in(p.Node)
					if err != nil {
						return nil, 0, "", err
					}
					if !nodeIn {
						old, err := nodeHasState(f.st, p.Node)
						if err != nil {
							return nil, 0, "", err
						}
						ok = !old
					}
				}
			}
		} else {
			nodeIn, err := in(p.Node)
			if err != nil {
				return nil, 0, "", err
			}
			ok, why = nodeIn || created[p.Node], "node outside the device's subtree"
			if ok && crdt.IsCredential(p.Type) {
				if ok, why, err = f.credentialOK(p, in, created); err != nil {
					return nil, 0, "", err
				}
			}
		}
		if ok {
			kept = append(kept, *p)
			continue
		}
		if rejected == 0 {
			reason = fmt.Sprintf("point %v/%v/%s/%s: %s", p.Node, p.Parent, p.Type, p.Key, why)
		}
		rejected++
	}
	return kept, rejected, reason, nil
}

// credentialOK applies the API's rule for credentials to a device's push:
// a password or sign-in address grants what the user's parents reach, so
// every parent must be in the device's subtree; an address another user
// signs in with already is refused (it would lock that user out).
func (f subtreeFilter) credentialOK(p *crdt.Point, in func(uuid.UUID) (bool, error), created map[uuid.UUID]bool) (bool, string, error) {
	if p.Type == crdt.TypeAuthKey {
		// A device may pass on a revocation, nothing else: a live
		// version could mint a key, revive a revoked one, or (with a
		// later time) outrun a revocation on its way.
		if !f.keys && !p.Tombstone || p.Node == f.st.Root() {
			return false, "keys are the local administrator's to write", nil
		}
		return true, "", nil
	}
	why := ""
	err := f.st.Parents(p.Node, func(c store.Child) error {
		pin, err := in(c.ID)
		if err != nil {
			return err
		}
		if !pin && !created[c.ID] {
			why = fmt.Sprintf("credential of a user also under %v, outside the device's subtree", c.ID)
			return store.ErrStop
		}
		return nil
	})
	if err != nil && err != store.ErrStop {
		return false, "", err
	}
	if why != "" {
		return false, why, nil
	}
	if p.Type == crdt.TypeEmail && !p.Tombstone && p.Text != "" && f.emailTaken != nil {
		taken, err := f.emailTaken(p.Text, p.Node)
		if err != nil {
			return false, "", err
		}
		if taken {
			return false, "another user signs in with this address", nil
		}
	}
	return true, "", nil
}

func (f subtreeFilter) refusal() string { return ReasonOutsideScope }

// nodeHasState reports whether node n has any point or edge in st.
func nodeHasState(st *store.Store, n uuid.UUID) (bool, error) {
	found := false
	stop := func(store.Child) error { found = true; return store.ErrStop }
	if err := st.Parents(n, stop); err != nil || found {
		return found, err
	}
	if err := st.Children(n, stop); err != nil || found {
		return found, err
	}
	pts, _, err := st.PageNode(n, "", "", 1)
	return len(pts) > 0, err
}
