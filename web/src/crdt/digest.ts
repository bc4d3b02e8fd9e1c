// Point digests and their sums. A port of crdt/digest.go.
//
// A Digest is a 128-bit unsigned integer, held as a bigint in [0, 2^128):
// the sum, modulo 2^128, of the digests of the points a set covers. Add a
// point's digest when it enters the set, subtract it when it leaves; a point
// counted twice adds twice (it is not an XOR). 0n is the empty set.

import { getUint64, putUint64, utf8 } from "./bytes.ts";
import { uuidBytes } from "./ids.ts";
import { isEdge, type Point } from "./point.ts";
import { Sha256, sha256 } from "./sha256.ts";

export type Digest = bigint;

const mod = 1n << 128n;
const mask = mod - 1n;

/** Returns d + e modulo 2^128. */
export function addDigest(d: Digest, e: Digest): Digest {
  return (d + e) & mask;
}

/** Returns d − e modulo 2^128. */
export function subDigest(d: Digest, e: Digest): Digest {
  return (d - e) & mask; // & on a negative bigint takes two's complement: the result is in range
}

/** Returns d as 32 lowercase hex digits, big-endian. */
export function digestHex(d: Digest): string {
  return (d & mask).toString(16).padStart(32, "0");
}

/** Returns d as 16 bytes, big-endian. */
export function digestBytes(d: Digest): Uint8Array {
  const b = new Uint8Array(16);
  putUint64(b, 0, (d >> 64n) & 0xffffffffffffffffn);
  putUint64(b, 8, d & 0xffffffffffffffffn);
  return b;
}

/** The inverse of digestBytes; b must be 16 bytes. */
export function digestFromBytes(b: Uint8Array): Digest {
  if (b.length !== 16) throw new RangeError(`digest: ${b.length} bytes, want 16`);
  return (getUint64(b, 0) << 64n) | getUint64(b, 8);
}

/** Parses the digestHex form (32 hex digits, either case). Throws a RangeError. */
export function parseDigest(s: string): Digest {
  if (s.length !== 32 || !/^[0-9a-fA-F]{32}$/.test(s)) {
    throw new RangeError(`invalid digest ${JSON.stringify(s.slice(0, 40))}: want 32 hex digits`);
  }
  return BigInt("0x" + s);
}

/** Starts every digest input; a change of the layout gets a new version. */
const digestInputVersion = 1;

const zeroID = new Uint8Array(16);

/**
 * The bytes pointDigest hashes, integers big-endian:
 *
 *   u8 version (1) | node[16] | parent[16] (zeros for a node point)
 *   | u8 len(type) | type | u8 len(key) | key | u64 IEEE-754 bits of value
 *   | u32 len(text) | text | u8 tombstone (0/1) | u64 time | origin[16]
 *
 * The point must be valid and normalized (validate): the layout relies on
 * the length limits, and -0 would hash apart from 0.
 */
export function digestInput(p: Point): Uint8Array {
  const type = utf8(p.type);
  const key = utf8(p.key);
  const text = utf8(p.text);
  const out = new Uint8Array(1 + 16 + 16 + 1 + type.length + 1 + key.length + 8 + 4 + text.length + 1 + 8 + 16);
  const view = new DataView(out.buffer);
  let o = 0;
  out[o++] = digestInputVersion;
  out.set(uuidBytes(p.node), o);
  o += 16;
  out.set(isEdge(p) ? uuidBytes(p.parent) : zeroID, o);
  o += 16;
  out[o++] = type.length;
  out.set(type, o);
  o += type.length;
  out[o++] = key.length;
  out.set(key, o);
  o += key.length;
  view.setFloat64(o, p.value);
  o += 8;
  view.setUint32(o, text.length);
  o += 4;
  out.set(text, o);
  o += text.length;
  out[o++] = p.tombstone ? 1 : 0;
  view.setBigUint64(o, p.time);
  o += 8;
  out.set(uuidBytes(p.origin), o);
  return out;
}

/** The digest of one point: the first 16 bytes of SHA-256(digestInput(p)), big-endian. */
export function pointDigest(p: Point): Digest {
  return pointHasher.digest(p);
}

/**
 * Writes digestInput(p) into a buffer it reuses and hashes it there: the
 * same bytes as digestInput, without its allocations (a first sync hashes
 * every point it receives). One per module: pointDigest never yields, so
 * no two hashes share it at once.
 */
class PointHasher {
  private buf = new Uint8Array(512);
  private view = new DataView(this.buf.buffer);
  private readonly sha = new Sha256();

  digest(p: Point): Digest {
    const need = 1 + 16 + 16 + 1 + 3 * p.type.length + 1 + 3 * p.key.length + 8 + 4 + 3 * p.text.length + 1 + 8 + 16;
    if (need > this.buf.length) {
      this.buf = new Uint8Array(need * 2);
      this.view = new DataView(this.buf.buffer);
    }
    const b = this.buf;
    let o = 0;
    b[o++] = digestInputVersion;
    putID(b, o, p.node);
    o += 16;
    if (isEdge(p)) putID(b, o, p.parent);
    else b.fill(0, o, o + 16);
    o += 16;
    o = this.putString(o, p.type, 1);
    o = this.putString(o, p.key, 1);
    this.view.setFloat64(o, p.value);
    o += 8;
    o = this.putString(o, p.text, 4);
    b[o++] = p.tombstone ? 1 : 0;
    this.view.setBigUint64(o, p.time);
    o += 8;
    putID(b, o, p.origin);
    o += 16;
    const h = this.sha.sum(b, o);
    return (BigInt(h[0] >>> 0) << 96n) | (BigInt(h[1] >>> 0) << 64n) | (BigInt(h[2] >>> 0) << 32n) | BigInt(h[3] >>> 0);
  }

  // Writes s's UTF-8 bytes at o after their length (lenBytes: 1 or 4,
  // big-endian) and returns the offset after them.
  private putString(o: number, s: string, lenBytes: 1 | 4): number {
    const b = this.buf;
    const start = o + lenBytes;
    let n = 0;
    let ascii = true;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        ascii = false;
        break;
      }
      b[start + i] = c;
    }
    if (ascii) n = s.length;
    else {
      const u = utf8(s);
      b.set(u, start);
      n = u.length;
    }
    if (lenBytes === 1) b[o] = n;
    else this.view.setUint32(o, n);
    return start + n;
  }
}

const pointHasher = new PointHasher();

// Writes the 16 bytes of a canonical UUID (36 characters, lowercase hex)
// at o; anything else goes through uuidBytes, which checks it.
function putID(b: Uint8Array, o: number, id: string): void {
  if (id.length !== 36) {
    b.set(uuidBytes(id), o);
    return;
  }
  let j = 0;
  for (let i = 0; i < 16; i++) {
    if (j === 8 || j === 13 || j === 18 || j === 23) j++;
    const hi = nibble(id.charCodeAt(j));
    const lo = nibble(id.charCodeAt(j + 1));
    if (hi < 0 || lo < 0) {
      b.set(uuidBytes(id), o);
      return;
    }
    b[o + i] = (hi << 4) | lo;
    j += 2;
  }
}

function nibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/**
 * Identifies a node point's register within its node, for repair
 * listings: the first 8 bytes, big-endian, of SHA-256 over type 0x00 key.
 */
export function registerHash(type: string, key: string): bigint {
  const t = utf8(type);
  const k = utf8(key);
  const b = new Uint8Array(t.length + 1 + k.length);
  b.set(t);
  b.set(k, t.length + 1);
  return getUint64(sha256(b), 0);
}

