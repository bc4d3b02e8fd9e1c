// The canonical msgpack encoding of one point. A port of crdt.AppendPoint
// and crdt.DecodePoint (crdt/codec.go):
//
//   [node bin8(16), parent nil | bin8(16), type str, key str, value,
//    text str, tombstone bool, time uint, origin bin8(16)]
//
// Strings and unsigned integers take their shortest msgpack form. value is
// an integer (shortest form, unsigned when >= 0) when it is integral and
// -2^63 <= v < 2^63, else float32 when that holds it exactly, else float64.
//
// The batch encoding (AppendBatch/DecodeBatch) and CheckMsgpack are in
// ../wire/ (batch.ts, msgpack.ts), checked against testdata/wire.

import { uuidBytes, uuidFromBytes } from "./ids.ts";
import { Writer } from "./msgpack.ts";
import { isEdge, normalize, validate, type Point } from "./point.ts";

/** The default limit on one encoded message (the NATS default payload, 1 MiB). */
export const MaxMessageSize = 1 << 20;

const pointFields = 9;

/** Bytes that are not a well-formed encoding (Go's ErrMalformed). */
export class MalformedError extends Error {
  constructor(reason: string) {
    super(`malformed message: ${reason}`);
    this.name = "MalformedError";
  }
}


/**
 * Returns the canonical encoding of p (Go's AppendPoint). p should be valid
 * and normalized; encodePoint does not check.
 */
export function encodePoint(p: Point): Uint8Array {
  const w = new Writer();
  w.byte(0x90 | pointFields);
  w.bin(uuidBytes(p.node));
  if (isEdge(p)) w.bin(uuidBytes(p.parent));
  else w.byte(0xc0);
  w.str(p.type);
  w.str(p.key);
  w.value(p.value);
  w.str(p.text);
  w.byte(p.tombstone ? 0xc3 : 0xc2);
  w.uint(p.time);
  w.bin(uuidBytes(p.origin));
  return w.result();
}

/** Reads msgpack values from bytes; every read checks that the bytes are there. */
class Reader {
  private off = 0;
  private readonly view: DataView;
  constructor(private readonly b: Uint8Array) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  private need(n: number, what: string): void {
    if (n > this.b.length - this.off) throw new MalformedError(`${what}: truncated at byte ${this.off}`);
  }

  peek(what: string): number {
    this.need(1, what);
    return this.b[this.off];
  }

  code(what: string): number {
    this.need(1, what);
    return this.b[this.off++];
  }

  private uintN(n: 1 | 2 | 4 | 8, what: string): number | bigint {
    this.need(n, what);
    const o = this.off;
    this.off += n;
    if (n === 1) return this.b[o];
    if (n === 2) return this.view.getUint16(o);
    if (n === 4) return this.view.getUint32(o);
    return this.view.getBigUint64(o);
  }

  private intN(n: 1 | 2 | 4 | 8, what: string): number | bigint {
    this.need(n, what);
    const o = this.off;
    this.off += n;
    if (n === 1) return this.view.getInt8(o);
    if (n === 2) return this.view.getInt16(o);
    if (n === 4) return this.view.getInt32(o);
    return this.view.getBigInt64(o);
  }

  private raw(n: number, what: string): Uint8Array {
    this.need(n, what);
    const r = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return r;
  }

  bin(what: string): Uint8Array {
    const c = this.code(what);
    if (c === 0xc4) return this.raw(Number(this.uintN(1, what)), what);
    if (c === 0xc5) return this.raw(Number(this.uintN(2, what)), what);
    if (c === 0xc6) return this.raw(Number(this.uintN(4, what)), what);
    throw new MalformedError(`${what}: code 0x${c.toString(16)}, want bin`);
  }

  uuid(what: string): string {
    const b = this.bin(what);
    if (b.length !== 16) throw new MalformedError(`${what}: ${b.length} bytes, want 16`);
    return uuidFromBytes(b);
  }

  str(what: string): string {
    const c = this.code(what);
    let n: number;
    if (c >= 0xa0 && c <= 0xbf) n = c & 0x1f;
    else if (c === 0xd9) n = Number(this.uintN(1, what));
    else if (c === 0xda) n = Number(this.uintN(2, what));
    else if (c === 0xdb) n = Number(this.uintN(4, what));
    else throw new MalformedError(`${what}: code 0x${c.toString(16)}, want a string`);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(this.raw(n, what));
    } catch (e) {
      if (e instanceof MalformedError) throw e;
      throw new MalformedError(`${what}: not valid UTF-8`);
    }
  }

  bool(what: string): boolean {
    const c = this.code(what);
    if (c === 0xc2) return false;
    if (c === 0xc3) return true;
    throw new MalformedError(`${what}: code 0x${c.toString(16)}, want a bool`);
  }

  /** An unsigned integer in any form. */
  uint(what: string): bigint {
    const c = this.code(what);
    if (c <= 0x7f) return BigInt(c);
    if (c >= 0xcc && c <= 0xcf) return BigInt(this.uintN((1 << (c - 0xcc)) as 1 | 2 | 4 | 8, what));
    throw new MalformedError(`${what}: code 0x${c.toString(16)}, want an unsigned integer`);
  }

  /** Any msgpack number, as a float64 (Go's DecodeFloat64; 0xcf read as unsigned). */
  number(what: string): number {
    const c = this.code(what);
    if (c <= 0x7f) return c;
    if (c >= 0xe0) return c - 0x100;
    if (c >= 0xcc && c <= 0xcf) return Number(this.uintN((1 << (c - 0xcc)) as 1 | 2 | 4 | 8, what));
    if (c >= 0xd0 && c <= 0xd3) return Number(this.intN((1 << (c - 0xd0)) as 1 | 2 | 4 | 8, what));
    if (c === 0xca) {
      this.need(4, what);
      const v = this.view.getFloat32(this.off);
      this.off += 4;
      return v;
    }
    if (c === 0xcb) {
      this.need(8, what);
      const v = this.view.getFloat64(this.off);
      this.off += 8;
      return v;
    }
    throw new MalformedError(`${what}: code 0x${c.toString(16)}, want a number`);
  }

  rest(): number {
    return this.b.length - this.off;
  }
}

/**
 * Decodes one point from its canonical encoding (encodePoint), normalizes
 * and validates it. Refuses input over MaxMessageSize. Throws a
 * MalformedError, or the PointError of validate.
 *
 * It reads the forms encodePoint writes, any msgpack number for value
 * (as Go does) and the longer bin/str forms; Go's decoder, built on
 * vmihailenco/msgpack, also lets bin and str stand for each other and nil
 * for an empty string, which this one refuses. No canonical encoding is
 * affected.
 */
export function decodePoint(b: Uint8Array): Point {
  if (b.length > MaxMessageSize) throw new MalformedError(`${b.length} bytes, limit ${MaxMessageSize}`);
  const r = new Reader(b);
  const head = r.code("point");
  if (head !== (0x90 | pointFields)) throw new MalformedError(`point: code 0x${head.toString(16)}, want an array of ${pointFields}`);
  const node = r.uuid("node");
  let parent = "";
  if (r.peek("parent") === 0xc0) r.code("parent");
  else parent = r.uuid("parent");
  const type = r.str("type");
  const key = r.str("key");
  const value = r.number("value");
  const text = r.str("text");
  const tombstone = r.bool("tombstone");
  const time = r.uint("time");
  const origin = r.uuid("origin");
  if (r.rest() !== 0) throw new MalformedError(`${r.rest()} trailing bytes after the value`);
  const p = normalize({ node, parent, type, key, value, text, tombstone, time, origin });
  validate(p);
  return p;
}
