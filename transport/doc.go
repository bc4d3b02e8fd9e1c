// Package transport carries siot messages over NATS: the framing of every
// message (format version and message type in front of a msgpack body), the
// size limits applied before anything is decoded, and, in later layers, the
// embedded server, client connections and subject names.
//
// Framing follows one contract: a frame is two header bytes, the format
// version and the message type, then the body. Message types come from an
// append-only enum; a receiver refuses a version or type it does not know
// with a typed error instead of guessing.
package transport
