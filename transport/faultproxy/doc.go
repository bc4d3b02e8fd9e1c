// Package faultproxy is test infrastructure: an in-process TCP proxy on
// loopback that sits between a client and a server (a NATS server in the
// replication tests) and injects the faults a network would, for kernels
// without netem. A test points its client at Proxy.URL instead of the
// server, then cuts the link (every connection closed, new ones refused),
// blackholes it (connections stay open but nothing moves, so TCP
// backpressure builds as on a silent partition), adds one-way latency, or
// caps the bandwidth of each direction, and undoes it all with Restore. The
// proxy listens on loopback only, owns every goroutine it starts, and Close
// waits for all of them, so goleak-style checks pass after it.
package faultproxy
