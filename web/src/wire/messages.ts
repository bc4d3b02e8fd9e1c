// The link protocol and local API messages: a port of
// transport/messages.go and transport/api.go. Each message is a frame of
// its type whose body is a msgpack map with short keys, written the way
// Go's vmihailenco/msgpack writes a struct: keys in field order, omitempty
// fields left out when zero, integers in their shortest form. Decoding
// reads keys in any order (the last of a repeated key wins), skips unknown
// keys and reads any integer width, as Go does.
//
// Field names are those of the Go structs in lower camel case. Integers
// of 64 bits are bigints. A bytes field that Go can send as msgpack nil is
// `Uint8Array | null`: null and an empty array are different bytes on the
// wire.

import { NilUUID } from "../crdt/point.ts";
import { uuidBytes, uuidFromBytes } from "../crdt/ids.ts";
import { frameHeader, parseFrame, UnknownTypeError, type MsgName } from "./frame.ts";
import { checkMsgpack, MalformedError, Reader, Writer } from "./msgpack.ts";

/** Roles a dialer asks for in a Hello. */
export const RoleEdge = "edge";
export const RolePeer = "peer";
/** A user's replica (a browser's): no root of its own, signed in with a login token. */
export const RoleUser = "user";
/** The link protocol version a Hello carries. */
export const LinkProto = 1n;
/** The most links of each list of a Status a decoder accepts (transport.MaxLinks). */
export const MaxLinks = 1 << 14;

export interface Hello {
  proto: bigint;
  instance: string;
  root: string;
  role: string;
  time: bigint;
}
export interface Welcome {
  instance: string;
  root: string;
  time: bigint;
  session: string;
  have: bigint;
  holds: boolean;
  last: bigint;
}
export interface Start {
  have: bigint;
}
export interface Push {
  from: bigint;
  through: bigint;
  idle: boolean;
  points: Uint8Array | null;
}
export interface Ack {
  have: bigint;
  gap: boolean;
  rejected: bigint;
  reason: string;
}
export type Ping = Record<string, never>;
export interface Bye {
  reason: string;
}
export interface LinkStatus {
  url: string;
  role: string;
  remote: string;
  connected: boolean;
  inSync: boolean;
  pending: bigint;
  lastError: string;
  bytesSent: bigint;
  bytesRecv: bigint;
  rejected: bigint;
  lastSeen: string;
}
export interface Status {
  id: string;
  instance: string;
  version: string;
  lastSeq: bigint;
  hlc: string;
  disk: bigint;
  links: LinkStatus[] | null;
  accepted: LinkStatus[] | null;
  refused: bigint;
  you: string;
  scope: string[];
}
export type StatusRequest = Record<string, never>;
export interface Import {
  points: Uint8Array | null;
  oneTime: boolean;
}
export interface ImportResult {
  applied: bigint;
  stale: bigint;
}
export interface ExportRequest {
  root: string;
  after: Uint8Array | null;
  maxBytes: bigint;
}
export interface ExportPage {
  points: Uint8Array | null;
  next: Uint8Array | null;
  more: boolean;
}
export interface TokenRequest {
  ttl: bigint;
}
export interface TokenReply {
  token: string;
  user: string;
  expires: bigint;
}
export interface NodeRequest {
  node: string;
  after: Uint8Array | null;
  maxBytes: bigint;
}
export interface NodePage {
  known: boolean;
  points: Uint8Array | null;
  next: Uint8Array | null;
  more: boolean;
}
export interface EdgesRequest {
  node: string;
  up: boolean;
  after: string;
  max: bigint;
}
export interface EdgesPage {
  points: Uint8Array | null;
  active: Uint8Array | null;
  next: string;
  more: boolean;
}
export interface WatchRequest {
  after: bigint;
  root: string;
  wait: bigint;
  maxBytes: bigint;
}
export interface WatchReply {
  points: Uint8Array | null;
  changes: Uint8Array | null;
  next: bigint;
  last: bigint;
}
export interface NodesRequest {
  nodes: Uint8Array | null;
}
export interface NodesReply {
  known: Uint8Array | null;
}
export type VerifyRequest = Record<string, never>;
export interface VerifyReply {
  registers: bigint;
  nodes: bigint;
  edges: bigint;
  problems: bigint;
  seconds: number;
  error: string;
}

/**
 * One page of a register's history (the local API's api.history): the
 * samples whose HLC's physical time (ms) is in [from, to) (to 0: no
 * end), raw (step 0) or summarized per step of step ms, after the cursor
 * after; max bounds the samples or steps (0: the server's limit).
 */
export interface HistoryRequest {
  node: string;
  type: string;
  key: string;
  from: bigint;
  to: bigint;
  step: bigint;
  after: Uint8Array | null;
  max: bigint;
}
/**
 * A page of history: samples a history block (Go's package history),
 * steps the step records (decodeHistorySteps in history.ts); when more,
 * ask again with after = next.
 */
export interface HistoryPage {
  known: boolean;
  samples: Uint8Array | null;
  steps: Uint8Array | null;
  next: Uint8Array | null;
  more: boolean;
}

/**
 * How one field is written: uint (Go uint64), int (Go int, int64), bool,
 * str, bin (Go []byte, nil as msgpack nil), uuid (bin of 16), f64, strs
 * (Go []string), ints (Go []int), links (a list of LinkStatus).
 */
export type Kind = "uint" | "int" | "bool" | "str" | "bin" | "uuid" | "f64" | "strs" | "ints" | "links";

/** One field of a message: its msgpack key, its name here, its kind, and whether a zero value is left out. */
export interface Field {
  key: string;
  name: string;
  kind: Kind;
  omitEmpty?: boolean;
}

const f = (key: string, name: string, kind: Kind, omitEmpty = false): Field => ({ key, name, kind, omitEmpty });

export const linkStatusFields: Field[] = [
  f("url", "url", "str"),
  f("role", "role", "str"),
  f("remote", "remote", "str", true),
  f("connected", "connected", "bool"),
  f("inSync", "inSync", "bool"),
  f("pending", "pending", "uint"),
  f("lastError", "lastError", "str"),
  f("bytesSent", "bytesSent", "uint"),
  f("bytesReceived", "bytesRecv", "uint"),
  f("rejected", "rejected", "uint"),
  f("lastSeen", "lastSeen", "str", true),
];

/** The value type of each map message, by type name. */
export interface Messages {
  hello: Hello;
  welcome: Welcome;
  start: Start;
  push: Push;
  ack: Ack;
  ping: Ping;
  bye: Bye;
  "status-request": StatusRequest;
  status: Status;
  import: Import;
  "import-result": ImportResult;
  "export-request": ExportRequest;
  "export-page": ExportPage;
  "token-request": TokenRequest;
  "token-reply": TokenReply;
  "node-request": NodeRequest;
  "node-page": NodePage;
  "edges-request": EdgesRequest;
  "edges-page": EdgesPage;
  "watch-request": WatchRequest;
  "watch-reply": WatchReply;
  "nodes-request": NodesRequest;
  "nodes-reply": NodesReply;
  "verify-request": VerifyRequest;
  "verify-reply": VerifyReply;
  "history-request": HistoryRequest;
  "history-page": HistoryPage;
}

/** The name of a map message type. */
export type MessageName = keyof Messages;

/** The fields of every map message, in the Go struct's order. */
export const schemas: { [K in MessageName]: Field[] } = {
  hello: [f("v", "proto", "int"), f("inst", "instance", "uuid"), f("root", "root", "uuid"), f("role", "role", "str"), f("t", "time", "int")],
  welcome: [
    f("inst", "instance", "uuid"),
    f("root", "root", "uuid"),
    f("t", "time", "int"),
    f("sess", "session", "str"),
    f("have", "have", "uint"),
    f("holds", "holds", "bool", true),
    f("last", "last", "uint", true),
  ],
  start: [f("have", "have", "uint")],
  push: [f("from", "from", "uint"), f("thru", "through", "uint"), f("idle", "idle", "bool", true), f("pts", "points", "bin")],
  ack: [f("have", "have", "uint"), f("gap", "gap", "bool", true), f("rej", "rejected", "int", true), f("why", "reason", "str", true)],
  ping: [],
  bye: [f("why", "reason", "str", true)],
  "status-request": [],
  status: [
    f("id", "id", "str"),
    f("instance", "instance", "str"),
    f("version", "version", "str"),
    f("lastSeq", "lastSeq", "uint"),
    f("hlc", "hlc", "str"),
    f("diskBytes", "disk", "int"),
    f("links", "links", "links"),
    f("accepted", "accepted", "links"),
    f("refused", "refused", "uint"),
    f("you", "you", "str", true),
    f("scope", "scope", "strs", true),
  ],
  import: [f("pts", "points", "bin"), f("one", "oneTime", "bool", true)],
  "import-result": [f("applied", "applied", "int"), f("stale", "stale", "int")],
  "export-request": [f("root", "root", "uuid"), f("after", "after", "bin"), f("max", "maxBytes", "int", true)],
  "export-page": [f("pts", "points", "bin"), f("next", "next", "bin"), f("more", "more", "bool")],
  "token-request": [f("ttl", "ttl", "int", true)],
  "token-reply": [f("token", "token", "str"), f("user", "user", "uuid"), f("exp", "expires", "int")],
  "node-request": [f("node", "node", "uuid"), f("after", "after", "bin"), f("max", "maxBytes", "int", true)],
  "node-page": [f("known", "known", "bool"), f("pts", "points", "bin"), f("next", "next", "bin"), f("more", "more", "bool")],
  "edges-request": [f("node", "node", "uuid"), f("up", "up", "bool", true), f("after", "after", "uuid"), f("max", "max", "int", true)],
  "edges-page": [f("pts", "points", "bin"), f("act", "active", "bin"), f("next", "next", "uuid"), f("more", "more", "bool")],
  "watch-request": [f("after", "after", "uint"), f("root", "root", "uuid"), f("wait", "wait", "int"), f("max", "maxBytes", "int", true)],
  "watch-reply": [f("pts", "points", "bin"), f("chg", "changes", "bin"), f("next", "next", "uint"), f("last", "last", "uint")],
  "nodes-request": [f("nodes", "nodes", "bin")],
  "nodes-reply": [f("known", "known", "bin")],
  "verify-request": [],
  "verify-reply": [
    f("registers", "registers", "int"),
    f("nodes", "nodes", "int"),
    f("edges", "edges", "int"),
    f("problems", "problems", "int"),
    f("seconds", "seconds", "f64"),
    f("error", "error", "str"),
  ],
  "history-request": [
    f("node", "node", "uuid"),
    f("type", "type", "str"),
    f("key", "key", "str"),
    f("from", "from", "int"),
    f("to", "to", "int"),
    f("step", "step", "int", true),
    f("after", "after", "bin"),
    f("max", "max", "int", true),
  ],
  "history-page": [f("known", "known", "bool"), f("smp", "samples", "bin"), f("steps", "steps", "bin"), f("next", "next", "bin"), f("more", "more", "bool")],
};

type Rec = Record<string, unknown>;

function zero(kind: Kind): unknown {
  switch (kind) {
    case "uint":
    case "int":
      return 0n;
    case "bool":
      return false;
    case "str":
      return "";
    case "bin":
    case "links":
      return null;
    case "uuid":
      return NilUUID;
    case "f64":
      return 0;
    case "strs":
    case "ints":
      return [];
  }
}

function isEmpty(kind: Kind, v: unknown): boolean {
  switch (kind) {
    case "bin":
    case "links":
    case "strs":
    case "ints":
      return v === null || (v as ArrayLike<unknown>).length === 0;
    case "uuid":
      return v === NilUUID;
    default:
      return v === zero(kind);
  }
}

function writeValue(w: Writer, kind: Kind, v: unknown): void {
  switch (kind) {
    case "uint":
      return w.uint(v as bigint);
    case "int":
      return w.int(v as bigint);
    case "bool":
      return w.bool(v as boolean);
    case "str":
      return w.str(v as string);
    case "bin":
      return v === null ? w.nil() : w.bin(v as Uint8Array);
    case "uuid":
      return w.bin(uuidBytes(v as string));
    case "f64":
      return w.float64(v as number);
    case "strs":
    case "ints":
    case "links": {
      if (v === null) return w.nil();
      const a = v as unknown[];
      w.arrayLen(a.length);
      for (const x of a) {
        if (kind === "strs") w.str(x as string);
        else if (kind === "ints") w.int(x as bigint);
        else writeStruct(w, linkStatusFields, x as Rec);
      }
    }
  }
}

/** Writes a struct as Go's msgpack does: a map of its fields in order, omitEmpty ones left out when zero. */
export function writeStruct(w: Writer, fields: readonly Field[], v: Rec): void {
  const present = fields.filter((fl) => !(fl.omitEmpty && isEmpty(fl.kind, v[fl.name])));
  w.mapLen(present.length);
  for (const fl of present) {
    w.str(fl.key);
    writeValue(w, fl.kind, v[fl.name]);
  }
}

function readValue(r: Reader, kind: Kind, what: string): unknown {
  if (r.nil(what)) return zero(kind); // Go decodes nil into any field as its zero value
  switch (kind) {
    case "uint":
      return BigInt.asUintN(64, r.integer(what));
    case "int":
      return BigInt.asIntN(64, r.integer(what));
    case "bool":
      return r.bool(what);
    case "str":
      return r.str(what);
    case "bin":
      return r.bin(what).slice(); // a copy: the frame's buffer may be reused
    case "uuid": {
      const b = r.bin(what);
      if (b.length !== 16) throw new MalformedError(`${what}: ${b.length} bytes, want 16`);
      return uuidFromBytes(b);
    }
    case "f64":
      return r.number(what);
    case "strs":
    case "ints":
    case "links": {
      const n = r.arrayLen(what);
      if (kind === "links" && n > MaxLinks) throw new MalformedError(`${n} links, limit ${MaxLinks}`);
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) {
        if (kind === "strs") out.push(r.str(what));
        else if (kind === "ints") out.push(BigInt.asIntN(64, r.integer(what)));
        else out.push(readStruct(r, linkStatusFields, what));
      }
      return out;
    }
  }
}

/** Reads a struct written by writeStruct (or by Go): keys in any order, unknown keys skipped, missing fields zero. */
export function readStruct(r: Reader, fields: readonly Field[], what: string): Rec {
  const v: Rec = {};
  for (const fl of fields) v[fl.name] = zero(fl.kind);
  if (r.nil(what)) return v;
  const n = r.mapLen(what);
  for (let i = 0; i < n; i++) {
    const key = r.str(`${what} key`);
    const fl = fields.find((x) => x.key === key);
    if (fl === undefined) r.skip();
    else v[fl.name] = readValue(r, fl.kind, `${what}.${key}`);
  }
  return v;
}

/** An error the other side sent in an error frame (Go's RemoteError). */
export class RemoteError extends Error {
  readonly remote: string;
  constructor(msg: string) {
    super(`remote: ${msg}`);
    this.name = "RemoteError";
    this.remote = msg;
  }
}

/** Returns the frame of a message (Go's transport.Encode). */
export function encodeMessage<K extends MessageName>(type: K, v: Messages[K]): Uint8Array {
  const w = new Writer();
  w.raw(frameHeader(type));
  writeStruct(w, schemas[type], v as unknown as Rec);
  return w.result();
}

/** Returns an error frame carrying msg (Go's EncodeError). */
export function encodeError(msg: string): Uint8Array {
  const w = new Writer();
  w.raw(frameHeader("error"));
  w.str(msg);
  return w.result();
}

/**
 * Checks a frame of at most limit bytes (MaxMessageSize when limit <= 0)
 * and returns its msgpack body, after the bounded walk of checkMsgpack;
 * an error frame is thrown as a RemoteError, another type than want as an
 * UnknownTypeError. Throws what parseFrame throws, or a MalformedError.
 */
export function frameBody(frame: Uint8Array, want: MsgName, limit = 0): Uint8Array {
  const { type, body } = parseFrame(frame, limit);
  try {
    checkMsgpack(body);
  } catch (e) {
    if (e instanceof Error) e.message = `${type} body: ${e.message}`;
    throw e;
  }
  if (type === "error") throw new RemoteError(new Reader(body).str("error"));
  if (type !== want) throw new UnknownTypeError(`got ${type}, want ${want}`);
  return body;
}

/**
 * Decodes a frame of at most limit bytes (MaxMessageSize when limit <= 0)
 * as a message of the given type (Go's transport.Decode). Bytes fields are
 * copies. Throws a TooLargeError, VersionError, UnknownTypeError,
 * MalformedError or RemoteError.
 */
export function decodeMessage<K extends MessageName>(frame: Uint8Array, type: K, limit = 0): Messages[K] {
  const body = frameBody(frame, type, limit);
  return readStruct(new Reader(body), schemas[type], type) as unknown as Messages[K];
}
