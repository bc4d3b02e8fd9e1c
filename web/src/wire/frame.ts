// The frame header: a format version byte and a message type byte, then
// the body. A port of transport/frame.go; docs/protocol.md, "Frames".

import { MaxMessageSize } from "../crdt/codec.ts";
import { MalformedError } from "./msgpack.ts";

/** The frame format version this code writes and reads. */
export const Version = 1;

/** The size of the frame header. */
export const HeaderLen = 2;

/**
 * Message types: the second byte of a frame. Append-only: a code is never
 * renumbered or reused (transport.MsgType).
 */
export const MsgType = {
  points: 1,
  error: 2,
  hello: 3,
  welcome: 4,
  start: 5,
  push: 6,
  ack: 7,
  ping: 8,
  "status-request": 9,
  status: 10,
  import: 11,
  "import-result": 12,
  "export-request": 13,
  "export-page": 14,
  repair: 15,
  "repair-reply": 16,
  "node-request": 17,
  "node-page": 18,
  "edges-request": 19,
  "edges-page": 20,
  "watch-request": 21,
  "watch-reply": 22,
  "token-request": 23,
  "token-reply": 24,
  "nodes-request": 25,
  "nodes-reply": 26,
  bye: 27,
  "verify-request": 28,
  "verify-reply": 29,
  "history-round": 30,
  "history-round-reply": 31,
  "history-request": 32,
  "history-page": 33,
} as const;

/** The name of a message type, as Go's MsgType.String gives it. */
export type MsgName = keyof typeof MsgType;

const names = new Map<number, MsgName>(Object.entries(MsgType).map(([k, v]) => [v, k as MsgName]));

/** The name of a known type code, or undefined. */
export function msgName(code: number): MsgName | undefined {
  return names.get(code);
}

/** A frame over its size limit (Go's crdt.ErrTooLarge). */
export class TooLargeError extends Error {
  constructor(reason: string) {
    super(`too large: ${reason}`);
    this.name = "TooLargeError";
  }
}

/** A frame in a format version this code does not read (Go's ErrVersion). */
export class VersionError extends Error {
  readonly version: number;
  constructor(version: number) {
    super(`unsupported frame version ${version} (this code reads ${Version})`);
    this.name = "VersionError";
    this.version = version;
  }
}

/** A message type this code does not know, or not the one expected (Go's ErrUnknownType). */
export class UnknownTypeError extends Error {
  constructor(reason: string) {
    super(`unknown message type: ${reason}`);
    this.name = "UnknownTypeError";
  }
}

/** Returns the header of a frame of the given type. */
export function frameHeader(type: MsgName): Uint8Array {
  return Uint8Array.of(Version, MsgType[type]);
}

/**
 * Splits a frame into its type and body after checking the size limit
 * (MaxMessageSize when limit <= 0), the length, the version and the type,
 * in that order (Go's ParseFrame). The body aliases the frame. Throws a
 * TooLargeError, MalformedError, VersionError or UnknownTypeError.
 */
export function parseFrame(frame: Uint8Array, limit = 0): { type: MsgName; body: Uint8Array } {
  if (limit <= 0) limit = MaxMessageSize;
  if (frame.length > limit) throw new TooLargeError(`frame of ${frame.length} bytes, limit ${limit}`);
  if (frame.length < HeaderLen) throw new MalformedError(`frame of ${frame.length} bytes: shorter than its header`);
  if (frame[0] !== Version) throw new VersionError(frame[0]);
  const type = msgName(frame[1]);
  if (type === undefined) throw new UnknownTypeError(`${frame[1]}`);
  return { type, body: frame.subarray(HeaderLen) };
}
