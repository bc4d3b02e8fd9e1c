// Package bus is a minimal message broker that speaks the subset of the
// NATS client protocol nats.go uses: INFO, CONNECT, PUB, HPUB, SUB (with
// queue groups), UNSUB (with a maximum), MSG, HMSG, PING, PONG, +OK and
// -ERR. It is what a lean siot build (-tags lean) embeds instead of
// nats-server, which alone weighs more than the lean build's size target.
//
// It has no clustering, no JetStream, no accounts, no monitoring port and
// no configuration file. What it keeps is what siot relies on: subject
// wildcards (* and >), queue groups (one member per message), no-responders
// status messages, a maximum payload, authentication through a hook
// (Config.Authorize) that sees the CONNECT options and the nonce of the
// INFO, per-connection publish and subscribe permissions worded as
// nats-server words them (nats.go turns them into ErrPermissionViolation),
// replies allowed to the requests a connection received, keepalive PINGs
// with a stale-connection close, a bound on every client's pending output
// (a slow consumer is disconnected), and a maximum number of connections.
//
// Every byte a client sends goes through one parser (readOp), which bounds
// control lines and payloads before it allocates, and which closes the
// connection with -ERR on anything it does not understand. It is fuzzed.
package bus
