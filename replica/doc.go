// Package replica is the replication engine: the local write path, the
// change feed, and the links that keep replicas converged over NATS.
//
// A link is a session between a dialer (an edge dialing its upstream, or an
// instance dialing a peer) and the acceptor it dialed. Each side pushes the
// changes of its store's change feed (store.Feed) that fall in the other
// side's scope, in order, batched and acknowledged, with a bounded number of
// pushes in flight. The receiver records how far it holds the sender's feed
// in the same transaction as the points, so after any disconnect or crash
// the sender resumes exactly there: push and resume are one mechanism, and a
// slow link costs nothing but its position in the feed. docs/protocol.md
// describes the messages.
//
// Each session half is a pure state machine (pushState) driven by one
// goroutine that owns it; Replica.Close cancels and joins every goroutine.
package replica
