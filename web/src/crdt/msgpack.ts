// A growable byte buffer with the msgpack writers of the canonical
// encodings: the point encoding (codec.ts) and the wire format
// (../wire/). Shortest forms throughout, as Go's msgpack writes them with
// compact integers.

import { utf8 } from "./bytes.ts";

/** A growable byte buffer with msgpack writers. */
export class Writer {
  private buf = new Uint8Array(64);
  private view = new DataView(this.buf.buffer);
  len = 0;

  private grow(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }

  byte(c: number): void {
    this.grow(1);
    this.buf[this.len++] = c;
  }

  raw(b: Uint8Array): void {
    this.grow(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** A code byte and an n-byte big-endian integer (taken modulo 2^(8n)). */
  private codeN(code: number, n: 1 | 2 | 4 | 8, v: bigint | number): void {
    this.grow(1 + n);
    this.buf[this.len++] = code;
    this.fixed(n, v);
  }

  /** An n-byte big-endian integer, no code (the repair records). */
  fixed(n: 1 | 2 | 4 | 8, v: bigint | number): void {
    this.grow(n);
    const o = this.len;
    if (n === 8) this.view.setBigUint64(o, BigInt.asUintN(64, BigInt(v)));
    else {
      const x = Number(BigInt.asUintN(8 * n, BigInt(v)));
      if (n === 1) this.view.setUint8(o, x);
      else if (n === 2) this.view.setUint16(o, x);
      else this.view.setUint32(o, x);
    }
    this.len += n;
  }

  /** An unsigned integer in its shortest form (Go's EncodeUint). */
  uint(v: bigint): void {
    v = BigInt.asUintN(64, v);
    if (v <= 0x7fn) this.byte(Number(v));
    else if (v <= 0xffn) this.codeN(0xcc, 1, v);
    else if (v <= 0xffffn) this.codeN(0xcd, 2, v);
    else if (v <= 0xffffffffn) this.codeN(0xce, 4, v);
    else this.codeN(0xcf, 8, v);
  }

  /** A signed integer in its shortest form; non-negative values take the unsigned forms (Go's compact EncodeInt). */
  int(v: bigint): void {
    v = BigInt.asIntN(64, v);
    if (v >= 0n) this.uint(v);
    else if (v >= -32n) this.byte(Number(BigInt.asUintN(8, v)));
    else if (v >= -128n) this.codeN(0xd0, 1, v);
    else if (v >= -32768n) this.codeN(0xd1, 2, v);
    else if (v >= -2147483648n) this.codeN(0xd2, 4, v);
    else this.codeN(0xd3, 8, v);
  }

  /** A point value: an integer when integral and in int64, else float32 when exact, else float64 (crdt encodeValue). */
  value(v: number): void {
    if (Number.isInteger(v) && v >= -(2 ** 63) && v < 2 ** 63) this.int(BigInt(v));
    else if (Math.fround(v) === v) {
      this.grow(5);
      this.buf[this.len++] = 0xca;
      this.view.setFloat32(this.len, v);
      this.len += 4;
    } else this.float64(v);
  }

  float64(v: number): void {
    this.grow(9);
    this.buf[this.len++] = 0xcb;
    this.view.setFloat64(this.len, v);
    this.len += 8;
  }

  nil(): void {
    this.byte(0xc0);
  }

  bool(v: boolean): void {
    this.byte(v ? 0xc3 : 0xc2);
  }

  bin(b: Uint8Array): void {
    if (b.length <= 0xff) this.codeN(0xc4, 1, b.length);
    else if (b.length <= 0xffff) this.codeN(0xc5, 2, b.length);
    else this.codeN(0xc6, 4, b.length);
    this.raw(b);
  }

  str(s: string): void {
    const b = utf8(s);
    const n = b.length;
    if (n < 32) this.byte(0xa0 | n);
    else if (n <= 0xff) this.codeN(0xd9, 1, n);
    else if (n <= 0xffff) this.codeN(0xda, 2, n);
    else this.codeN(0xdb, 4, n);
    this.raw(b);
  }

  arrayLen(n: number): void {
    if (n < 16) this.byte(0x90 | n);
    else if (n <= 0xffff) this.codeN(0xdc, 2, n);
    else this.codeN(0xdd, 4, n);
  }

  mapLen(n: number): void {
    if (n < 16) this.byte(0x80 | n);
    else if (n <= 0xffff) this.codeN(0xde, 2, n);
    else this.codeN(0xdf, 4, n);
  }

  /** Go's binary.AppendUvarint. */
  uvarint(v: bigint | number): void {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.byte(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.byte(Number(x));
  }

  /** The bytes written, copied. */
  result(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}
