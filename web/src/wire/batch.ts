// Point batches: a port of crdt.AppendBatch and crdt.DecodeBatch
// (crdt/codec.go; docs/protocol.md, "Point batches"). A batch is the
// msgpack array
//
//   [ids bin(16·n), strings array(str), points array(array(9))]
//
// ids holds every distinct node, origin and parent UUID once, in order of
// first use (per point: node, origin, then parent); strings every distinct
// type and key (type first). Each point is
//
//   [node uint, parent uint, type uint, key uint, value number, text str,
//    tombstone bool, time int, origin uint]
//
// with parent 0 for none or 1 + an index, and time the difference from the
// previous point's (the first from 0), modulo 2^64.

import { MaxMessageSize } from "../crdt/codec.ts";
import { uuidBytes, uuidFromBytes } from "../crdt/ids.ts";
import { isEdge, normalize, PointError, validate, validateUnstamped, type Point } from "../crdt/point.ts";
import { TooLargeError } from "./frame.ts";
import { checkMsgpack, MalformedError, Reader, Writer } from "./msgpack.ts";

const pointFields = 9;

/** The fewest bytes one batch point takes: it bounds what a declared count may allocate. */
const minPointBytes = 1 + pointFields;

/** Writes the batch of pts to w (Go's AppendBatch). Points should be valid and normalized. */
export function writeBatch(w: Writer, pts: readonly Point[]): void {
  const ids = new Map<string, number>();
  const idList: string[] = [];
  const strs = new Map<string, number>();
  const strList: string[] = [];
  const id = (u: string): number => {
    let i = ids.get(u);
    if (i === undefined) {
      i = idList.length;
      ids.set(u, i);
      idList.push(u);
    }
    return i;
  };
  const str = (s: string): number => {
    let i = strs.get(s);
    if (i === undefined) {
      i = strList.length;
      strs.set(s, i);
      strList.push(s);
    }
    return i;
  };
  const refs = pts.map((p) => {
    const r = { node: id(p.node), typ: str(p.type), key: str(p.key), origin: id(p.origin), parent: 0 };
    if (isEdge(p)) r.parent = 1 + id(p.parent);
    return r;
  });
  w.arrayLen(3);
  const idBytes = new Uint8Array(16 * idList.length);
  idList.forEach((u, i) => idBytes.set(uuidBytes(u), 16 * i));
  w.bin(idBytes);
  w.arrayLen(strList.length);
  for (const s of strList) w.str(s);
  w.arrayLen(pts.length);
  let prev = 0n;
  pts.forEach((p, i) => {
    const r = refs[i];
    w.arrayLen(pointFields);
    w.uint(BigInt(r.node));
    w.uint(BigInt(r.parent));
    w.uint(BigInt(r.typ));
    w.uint(BigInt(r.key));
    w.value(p.value);
    w.str(p.text);
    w.bool(p.tombstone);
    w.int(BigInt.asIntN(64, p.time - prev)); // wraps; the decoder adds it back modulo 2^64
    w.uint(BigInt(r.origin));
    prev = p.time;
  });
}

/** Returns the encoding of pts (Go's AppendBatch onto nothing). */
export function encodeBatch(pts: readonly Point[]): Uint8Array {
  const w = new Writer();
  writeBatch(w, pts);
  return w.result();
}

/**
 * Decodes a batch and validates every point (Go's DecodeBatch, or
 * DecodeBatchUnstamped with unstamped: a zero time or nil origin
 * allowed). Refuses input over limit bytes (MaxMessageSize when limit <= 0)
 * before reading it; allocates no more than a small multiple of b's
 * length, whatever lengths b declares. Throws a TooLargeError, a
 * MalformedError, or a PointError naming the point's index.
 */
export function decodeBatch(b: Uint8Array, limit = 0, unstamped = false): Point[] {
  if (limit <= 0) limit = MaxMessageSize;
  if (b.length > limit) throw new TooLargeError(`batch of ${b.length} bytes, limit ${limit}`);
  checkMsgpack(b);
  const r = new Reader(b);
  if (r.arrayLen("batch") !== 3) throw new MalformedError("batch: want an array of 3");
  const idBytes = r.bin("ids");
  if (idBytes.length % 16 !== 0) throw new MalformedError(`ids: ${idBytes.length} bytes, not a multiple of 16`);
  const ids: string[] = [];
  for (let i = 0; i < idBytes.length; i += 16) ids.push(uuidFromBytes(idBytes.subarray(i, i + 16)));
  const ns = r.arrayLen("strings");
  const strs: string[] = [];
  // Invalid UTF-8 in a type or key fails the point's character rules when used, as in Go.
  for (let i = 0; i < ns; i++) strs.push(r.str("strings"));
  const np = r.arrayLen("points");
  if (np * minPointBytes > r.rest()) throw new MalformedError(`points: ${np} declared, only ${r.rest()} bytes follow`);
  const pts: Point[] = [];
  let prev = 0n;
  for (let i = 0; i < np; i++) {
    try {
      const p = readPoint(r, ids, strs, prev, unstamped);
      prev = p.time;
      pts.push(p);
    } catch (e) {
      if (e instanceof Error) e.message = `point ${i}: ${e.message}`;
      throw e;
    }
  }
  return pts;
}

function readPoint(r: Reader, ids: string[], strs: string[], prev: bigint, unstamped: boolean): Point {
  if (r.arrayLen("point") !== pointFields) throw new MalformedError(`point: want an array of ${pointFields}`);
  const index = (what: string, table: number): number => {
    if (!r.peekUint(what)) throw new MalformedError(`${what}: want an unsigned integer`);
    const i = r.integer(what);
    if (i >= BigInt(table)) throw new MalformedError(`${what}: index ${i} out of range (${table} entries)`);
    return Number(i);
  };
  const node = ids[index("node", ids.length)];
  const pi = index("parent", ids.length + 1);
  const parent = pi > 0 ? ids[pi - 1] : "";
  const type = strs[index("type", strs.length)];
  const key = strs[index("key", strs.length)];
  const value = r.number("value");
  const text = r.strictStr("text");
  if (text === undefined) throw new PointError("text", "not valid UTF-8");
  const tombstone = r.bool("tombstone");
  const delta = r.integer("time"); // refuses floats; 0xcf reads as unsigned and wraps below
  const time = BigInt.asUintN(64, prev + delta);
  const origin = ids[index("origin", ids.length)];
  const p = normalize({ node, parent, type, key, value, text, tombstone, time, origin });
  if (unstamped) validateUnstamped(p);
  else validate(p);
  return p;
}
