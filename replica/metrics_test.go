package replica

import (
	"errors"
	"fmt"
	"testing"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

func TestRejectionReasons(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("point 3: %w", crdt.ErrClockSkew), ReasonClockSkew},
		{fmt.Errorf("%w: point 0: %w", store.ErrInvalid, &crdt.PointError{Field: "type", Reason: "bad"}), ReasonInvalid},
		{fmt.Errorf("text: %w", crdt.ErrTooLarge), ReasonTooLarge},
		{fmt.Errorf("apply: %w", store.ErrDiskFull), ReasonDiskFull},
		{fmt.Errorf("decode: %w", crdt.ErrMalformed), ReasonInvalid},
		{transport.ErrUnknownType, ReasonInvalid},
		{store.ErrClosed, ReasonOther},
		{errors.New("io"), ReasonOther},
	} {
		if got := rejectReason(c.err); got != c.want {
			t.Errorf("rejectReason(%v) = %s, want %s", c.err, got, c.want)
		}
	}
	var m metrics
	m.write(PathLocal, 5, store.Result{}, fmt.Errorf("x: %w", store.ErrDiskFull))
	m.remote(map[string]uint64{"recv/x": 1}, 2, 3, store.Result{Outcomes: []store.Outcome{store.Applied, store.Applied, 0}}, nil)
	m.remote(nil, 0, 1, store.Result{Outcomes: []store.Outcome{store.Applied}}, nil)
	if w, p := m.rejectedWrites[reasonIndex(ReasonDiskFull)].Load(), m.rejectedPoints[reasonIndex(ReasonDiskFull)].Load(); w != 1 || p != 5 {
		t.Errorf("disk full: %d writes, %d points", w, p)
	}
	if n := m.rejectedPoints[reasonIndex(ReasonClockSkew)].Load(); n != 2 {
		t.Errorf("clock skew points = %d", n)
	}
	if a, s := m.applied[pathIndex(PathPush)].Load(), m.stale[pathIndex(PathPush)].Load(); a != 2 || s != 1 {
		t.Errorf("push: %d applied, %d stale", a, s)
	}
	if a := m.applied[pathIndex(PathRepair)].Load(); a != 1 {
		t.Errorf("repair applied = %d", a)
	}
}
