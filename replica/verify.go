package replica

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

// handleVerify answers a VerifyRequest: the local administrator's check of
// the running store, the same as siot verify offline. Every table's
// checksums are read (store.VerifyTables), then every index and digest is
// recomputed from one snapshot of the points and compared
// (store.VerifyCount). Both only read, so writes and links go on; the
// recomputation holds a summary of the tree in memory (about 100 bytes per
// node and edge). One check runs at a time, in a goroutine of its own.
func (r *Replica) handleVerify(m *nats.Msg) {
	id, ok := r.requester(m)
	if !ok {
		return
	}
	var req transport.VerifyRequest
	if err := transport.Decode(m.Data, 0, &req); err != nil {
		r.metrics.refuse(ReasonInvalid)
		replyErr(m, err)
		return
	}
	if !exempt(id) {
		r.metrics.refuse(ReasonForbidden)
		replyErr(m, fmt.Errorf("%w: only the local administrator may verify the store", ErrForbidden))
		return
	}
	r.apiMu.Lock()
	busy := r.verifying
	r.verifying = true
	r.apiMu.Unlock()
	if busy {
		r.metrics.refuse(ReasonLimited)
		replyErr(m, fmt.Errorf("%w: a verify is already running on this server", ErrLimited))
		return
	}
	done := func() {
		r.apiMu.Lock()
		r.verifying = false
		r.apiMu.Unlock()
	}
	if err := r.goRequest(func() {
		var out transport.VerifyReply
		func() {
			defer done()
			out = r.verifyStore()
		}()
		// Done before the answer: a client that asks again once answered
		// is not told one is running.
		reply(m, out)
	}); err != nil {
		done()
		replyErr(m, err)
	}
}

// verifyStore runs the checks of handleVerify.
func (r *Replica) verifyStore() transport.VerifyReply {
	start := time.Now()
	var out transport.VerifyReply
	err := r.st.VerifyTables()
	if err == nil {
		var sum store.VerifySummary
		sum, err = r.st.VerifyCount(r.ctx)
		out.Registers, out.Nodes, out.Edges, out.Problems = sum.Registers, sum.Nodes, sum.Edges, sum.Problems
	}
	out.Seconds = time.Since(start).Seconds()
	if err != nil && r.ctx.Err() != nil {
		out.Error = "the server stopped before the check ended: nothing was found wrong up to there"
		return out
	}
	if err != nil {
		out.Error = err.Error()
		if !errors.Is(err, store.ErrMismatch) {
			out.Problems = max(out.Problems, 1)
		}
		r.log.Error("verify found a problem in the store", "err", err)
	}
	return out
}
