// The browser replica's link to a siot server: a dialer of role "user"
// over NATS on WebSocket (docs/protocol.md, "Links"). It signs in with the
// user's login token, subscribes only under its inbox prefix
// siot.user.<user>.inbox, and follows the handshake a Go dialer follows
// (hello with no root, welcome, start, pushes both ways, ping, bye):
// replica/userlink_test.go's userClient is the same sequence in Go.
//
// What it keeps in the store, so a reload or a reconnect resumes where it
// stopped: the acceptor's feed position (the link's received mark, set in
// the transaction that applies each push) and how far the acceptor
// acknowledged this store's feed (the acked mark). Pushed points keep
// their time and origin; the origin of a local write is the store's
// instance, which the acceptor accepts as the user's.
//
// Digest repair (repair.ts) runs on every session once the initial resume
// is done and then about every minute, one round per scope root (each
// parent of the user): it finds and fixes what push and resume cannot see
// (a register lost from the store, a write that never went up), and the
// status's inSync says whether the last pass found the scope equal.

export * from "./link.ts";
export * from "./identity.ts";
export { childKey, childTag, repairPass, repairRound, scopeRoots, type RepairIO, type RepairPass, type RepairStats } from "./repair.ts";
