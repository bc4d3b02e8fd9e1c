// The subset of msgpack the wire format uses, written the way Go's
// transport writes it (vmihailenco/msgpack/v5 with compact integers) and
// read with bounds: a port of crdt.CheckMsgpack and a reader whose every
// declared length is checked against the bytes present before anything is
// read or allocated (docs/protocol.md, "Frames").
//
// Written by hand rather than taken from npm: Go's output is canonical
// (shortest forms, str8 for 32–255 bytes, positive integers in the
// unsigned forms) and the decoder must never allocate beyond its input.

import { MalformedError } from "../crdt/codec.ts";
import { Writer } from "../crdt/msgpack.ts";

export { MalformedError, Writer };

/** How deep containers may nest (crdt.MaxDepth). */
export const MaxDepth = 16;


function hex2(c: number): string {
  return "0x" + c.toString(16).padStart(2, "0");
}

/** The length a code declares, read from b at off, checked against the bytes after it. */
function readLen(b: Uint8Array, off: number, width: 1 | 2 | 4): number {
  if (b.length - off < width) throw new MalformedError(`truncated length at byte ${off}`);
  let n = 0;
  for (let i = 0; i < width; i++) n = n * 256 + b[off + i];
  const rest = b.length - off - width;
  if (n > rest) throw new MalformedError(`length ${n} at byte ${off - 1}, only ${rest} bytes follow`);
  return n;
}

/**
 * Returns the offset just past the msgpack value starting at b[off],
 * checking that every declared length is backed by bytes present, that
 * nesting is at most maxDepth and that no reserved code appears (the walk
 * of crdt.CheckMsgpack). Containers are walked with a counter per depth,
 * not by recursion. Throws a MalformedError.
 */
export function valueEnd(b: Uint8Array, off: number, maxDepth = MaxDepth): number {
  maxDepth = Math.min(maxDepth, MaxDepth);
  const pending = [1];
  while (pending.length > 0) {
    if (pending[pending.length - 1] === 0) {
      pending.pop();
      continue;
    }
    pending[pending.length - 1]--;
    if (off >= b.length) throw new MalformedError(`truncated at byte ${off}`);
    const c = b[off++];
    let size = 0;
    let count = 0;
    if (c <= 0x7f || c >= 0xe0 || c === 0xc0 || c === 0xc2 || c === 0xc3) {
      // fixints, nil, bools
    } else if (c >= 0x80 && c <= 0x8f) count = 2 * (c & 0x0f);
    else if (c >= 0x90 && c <= 0x9f) count = c & 0x0f;
    else if (c >= 0xa0 && c <= 0xbf) size = c & 0x1f;
    else if (c === 0xc1) throw new MalformedError(`reserved code 0xc1 at byte ${off - 1}`);
    else if (c === 0xc4 || c === 0xd9) {
      size = readLen(b, off, 1);
      off += 1;
    } else if (c === 0xc5 || c === 0xda) {
      size = readLen(b, off, 2);
      off += 2;
    } else if (c === 0xc6 || c === 0xdb) {
      size = readLen(b, off, 4);
      off += 4;
    } else if (c >= 0xc7 && c <= 0xc9) {
      const w = (1 << (c - 0xc7)) as 1 | 2 | 4;
      size = readLen(b, off, w) + 1;
      off += w;
    } else if (c === 0xca) size = 4;
    else if (c === 0xcb) size = 8;
    else if (c === 0xcc || c === 0xd0) size = 1;
    else if (c === 0xcd || c === 0xd1) size = 2;
    else if (c === 0xce || c === 0xd2) size = 4;
    else if (c === 0xcf || c === 0xd3) size = 8;
    else if (c >= 0xd4 && c <= 0xd8) size = 1 + (1 << (c - 0xd4));
    else if (c === 0xdc || c === 0xdd) {
      const w = (2 << (c - 0xdc)) as 2 | 4;
      count = readLen(b, off, w);
      off += w;
    } else if (c === 0xde || c === 0xdf) {
      const w = (2 << (c - 0xde)) as 2 | 4;
      count = 2 * readLen(b, off, w);
      off += w;
    }
    if (size > b.length - off) {
      throw new MalformedError(`value at byte ${off - 1} declares ${size} bytes, ${b.length - off} present`);
    }
    off += size;
    if (count > 0) {
      if (count > b.length - off) {
        throw new MalformedError(`container at byte ${off - 1} declares ${count} values, only ${b.length - off} bytes follow`);
      }
      if (pending.length > maxDepth) throw new MalformedError(`nested deeper than ${maxDepth}`);
      pending.push(count);
    }
  }
  return off;
}

/**
 * Checks that b is exactly one well-formed msgpack value (a port of
 * crdt.CheckMsgpack): see valueEnd, and nothing may follow the value.
 * Throws a MalformedError.
 */
export function checkMsgpack(b: Uint8Array, maxDepth = MaxDepth): void {
  const off = valueEnd(b, 0, maxDepth);
  if (off !== b.length) throw new MalformedError(`${b.length - off} trailing bytes after the value`);
}

const lenient = new TextDecoder("utf-8");
const strict = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads msgpack values. Every read checks that its bytes are present, and
 * every declared container length is checked against the bytes left
 * before a caller allocates for it (arrayLen, mapLen): the reader never
 * allocates more than its input. Throws a MalformedError.
 */
export class Reader {
  off = 0;
  private readonly view: DataView;
  constructor(readonly b: Uint8Array) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  rest(): number {
    return this.b.length - this.off;
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

  /** Reads an n-byte big-endian unsigned integer (no code). */
  fixed(n: 1 | 2 | 4, what: string): number {
    this.need(n, what);
    const o = this.off;
    this.off += n;
    return n === 1 ? this.b[o] : n === 2 ? this.view.getUint16(o) : this.view.getUint32(o);
  }

  fixed64(what: string): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.off);
    this.off += 8;
    return v;
  }

  /** n bytes, aliasing the input. */
  take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const r = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return r;
  }

  /** Reports whether the next value is nil, and consumes it if so. */
  nil(what: string): boolean {
    if (this.peek(what) !== 0xc0) return false;
    this.off++;
    return true;
  }

  /** Any msgpack integer, as a bigint (unsigned forms as unsigned, signed as signed). */
  integer(what: string): bigint {
    const c = this.code(what);
    if (c <= 0x7f) return BigInt(c);
    if (c >= 0xe0) return BigInt(c - 0x100);
    if (c >= 0xcc && c <= 0xcf) {
      if (c === 0xcf) return this.fixed64(what);
      return BigInt(this.fixed((1 << (c - 0xcc)) as 1 | 2 | 4, what));
    }
    if (c >= 0xd0 && c <= 0xd3) {
      if (c === 0xd3) return BigInt.asIntN(64, this.fixed64(what));
      const n = (1 << (c - 0xd0)) as 1 | 2 | 4;
      return BigInt.asIntN(8 * n, BigInt(this.fixed(n, what)));
    }
    throw new MalformedError(`${what}: code ${hex2(c)}, want an integer`);
  }

  /** True when the next code is an unsigned integer form (crdt isUint). */
  peekUint(what: string): boolean {
    const c = this.peek(what);
    return c <= 0x7f || (c >= 0xcc && c <= 0xcf);
  }

  /** Any msgpack number as a float64; 0xcf is read as unsigned (crdt decoder.value). */
  number(what: string): number {
    const c = this.peek(what);
    if (c === 0xca) {
      this.off++;
      this.need(4, what);
      const v = this.view.getFloat32(this.off);
      this.off += 4;
      return v;
    }
    if (c === 0xcb) {
      this.off++;
      this.need(8, what);
      const v = this.view.getFloat64(this.off);
      this.off += 8;
      return v;
    }
    if (c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3)) return Number(this.integer(what));
    throw new MalformedError(`${what}: code ${hex2(c)}, want a number`);
  }

  bool(what: string): boolean {
    const c = this.code(what);
    if (c === 0xc2) return false;
    if (c === 0xc3) return true;
    throw new MalformedError(`${what}: code ${hex2(c)}, want a bool`);
  }

  /** The bytes of a bin (aliasing the input). */
  bin(what: string): Uint8Array {
    const c = this.code(what);
    if (c === 0xc4) return this.take(this.fixed(1, what), what);
    if (c === 0xc5) return this.take(this.fixed(2, what), what);
    if (c === 0xc6) return this.take(this.fixed(4, what), what);
    throw new MalformedError(`${what}: code ${hex2(c)}, want bin`);
  }

  /** The bytes of a str. */
  strBytes(what: string): Uint8Array {
    const c = this.code(what);
    let n: number;
    if (c >= 0xa0 && c <= 0xbf) n = c & 0x1f;
    else if (c === 0xd9) n = this.fixed(1, what);
    else if (c === 0xda) n = this.fixed(2, what);
    else if (c === 0xdb) n = this.fixed(4, what);
    else throw new MalformedError(`${what}: code ${hex2(c)}, want a string`);
    return this.take(n, what);
  }

  /** A str; invalid UTF-8 becomes U+FFFD (Go keeps the bytes as they are). */
  str(what: string): string {
    return lenient.decode(this.strBytes(what));
  }

  /** A str that must be valid UTF-8; returns undefined when it is not. */
  strictStr(what: string): string | undefined {
    try {
      return strict.decode(this.strBytes(what));
    } catch (e) {
      if (e instanceof MalformedError) throw e;
      return undefined;
    }
  }

  /** An array header; the count is refused when fewer bytes than values follow. */
  arrayLen(what: string): number {
    const c = this.code(what);
    let n: number;
    if (c >= 0x90 && c <= 0x9f) n = c & 0x0f;
    else if (c === 0xdc) n = this.fixed(2, what);
    else if (c === 0xdd) n = this.fixed(4, what);
    else throw new MalformedError(`${what}: code ${hex2(c)}, want an array`);
    if (n > this.rest()) throw new MalformedError(`${what}: array of ${n}, only ${this.rest()} bytes follow`);
    return n;
  }

  /** A map header; the count is refused when fewer bytes than keys and values follow. */
  mapLen(what: string): number {
    const c = this.code(what);
    let n: number;
    if (c >= 0x80 && c <= 0x8f) n = c & 0x0f;
    else if (c === 0xde) n = this.fixed(2, what);
    else if (c === 0xdf) n = this.fixed(4, what);
    else throw new MalformedError(`${what}: code ${hex2(c)}, want a map`);
    if (2 * n > this.rest()) throw new MalformedError(`${what}: map of ${n}, only ${this.rest()} bytes follow`);
    return n;
  }

  /** Skips one value of any kind, nested at most MaxDepth deep. */
  skip(): void {
    this.off = valueEnd(this.b, this.off);
  }
}
