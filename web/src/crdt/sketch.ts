// Repair sketches: a port of crdt/sketch.go (the algorithm is in
// docs/protocol.md, "Digest repair"). 64-bit arithmetic is on BigInt,
// masked to 64 bits after every step that can overflow, so it wraps as
// Go's uint64 does.

import { getUint64, putUint64 } from "./bytes.ts";
import { registerHash } from "./digest.ts";
import { uuidBytes } from "./ids.ts";
import type { Point } from "./point.ts";

/** SketchHashes is the number of cells each key touches. */
export const SketchHashes = 3;
/** MaxSketchKeyLen is the longest key a sketch holds. */
export const MaxSketchKeyLen = 20;
/**
 * MaxSketchCells bounds a sketch's size: at 25 bytes a cell, a sketch is at
 * most 400 KiB, well under a message.
 */
export const MaxSketchCells = 16 * 1024;
/** PointKeyLen is the length of a pointKey. */
export const PointKeyLen = 20;

const mask64 = 0xffffffffffffffffn;

/**
 * mix64 is the SplitMix64 finalizer: a cheap bijective mix of 64 bits.
 * Sketches and repair tags use it; any implementation of the protocol must
 * compute it bit for bit (docs/protocol.md). z is taken modulo 2^64; the
 * result is in [0, 2^64).
 */
export function mix64(z: bigint): bigint {
  z &= mask64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & mask64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & mask64;
  return z ^ (z >> 31n);
}

/** sketchCellLen is the encoded size of a cell of keyLen-byte keys: count, key, check. */
export function sketchCellLen(keyLen: number): number {
  return 1 + keyLen + 4;
}

/** BadSketchError reports an encoded sketch of an impossible size (Go's ErrBadSketch). */
export class BadSketchError extends Error {
  constructor(detail: string) {
    super(`sketch: bad encoding: ${detail}`);
    this.name = "BadSketchError";
  }
}

function putUint32BE(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 24;
  b[off + 1] = v >>> 16;
  b[off + 2] = v >>> 8;
  b[off + 3] = v;
}

function getUint32BE(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

/**
 * Sketch is an invertible Bloom lookup table of fixed-length keys: a table
 * of cells that, after subtracting another replica's sketch of the same
 * set, yields the keys present on one side only, when there are not too
 * many of them for its size (about two thirds of a key per cell). Repair
 * sketches a set of nodes' points (pointKey) to find the few that differ
 * without listing them, and a node's children to find the ones whose
 * digests differ.
 *
 * Each key goes to one cell in each of SketchHashes equal parts of the
 * table, chosen by a 64-bit mix of the whole key (so keys need not be
 * uniform, and a key with a predictable part still spreads). A cell holds a
 * count (modulo 256, read as a signed byte), the XOR of its keys and the
 * XOR of a check word of each key.
 *
 * Keys are Uint8Arrays; a sketch of key length k reads the first k bytes of
 * the keys it is given and returns keys of exactly k bytes.
 */
export class Sketch {
  readonly keyLen: number;
  private readonly counts: Int8Array; // wraps: only differences of a few keys are decoded
  private readonly keys: Uint8Array; // cell i's key at i*keyLen
  private readonly checks: Uint32Array;

  /**
   * Returns an empty sketch of keys of keyLen bytes (1 to MaxSketchKeyLen)
   * with cells cells, rounded up to a multiple of SketchHashes and clamped
   * to [SketchHashes, MaxSketchCells]. A keyLen out of range is a
   * programming error, never input: it throws a RangeError.
   */
  constructor(cells: number, keyLen: number) {
    if (!Number.isInteger(keyLen) || keyLen < 1 || keyLen > MaxSketchKeyLen) {
      throw new RangeError(`crdt: sketch key length ${keyLen}`);
    }
    const n = Math.min(
      Math.max(SketchHashes, Math.trunc((cells + SketchHashes - 1) / SketchHashes) * SketchHashes),
      MaxSketchCells,
    );
    this.keyLen = keyLen;
    this.counts = new Int8Array(n);
    this.keys = new Uint8Array(n * keyLen);
    this.checks = new Uint32Array(n);
  }

  /** cells returns the sketch's size in cells. */
  get cells(): number {
    return this.counts.length;
  }

  /**
   * keyHash mixes a key's bytes, 8 at a time, big-endian, with a final
   * zero-padded word for the rest (4 bytes when the length is 20).
   */
  private keyHash(k: Uint8Array): bigint {
    let h = 0x9e3779b97f4a7c15n;
    let i = 0;
    for (; i + 8 <= this.keyLen; i += 8) h = mix64(h ^ getUint64(k, i));
    if (i < this.keyLen) {
      const tail = new Uint8Array(8);
      tail.set(k.subarray(i, this.keyLen));
      h = mix64(h ^ getUint64(tail, 0));
    }
    return h;
  }

  /** place returns key k's cell in each part and its check word. */
  private place(k: Uint8Array): { idx: number[]; check: number } {
    const h = this.keyHash(k);
    const g = mix64(h);
    const part = this.cells / SketchHashes;
    const lo = (x: bigint): number => Number(x & 0xffffffffn);
    return {
      idx: [lo(h) % part, part + (lo(h >> 32n) % part), 2 * part + (lo(g) % part)],
      check: (lo(g >> 32n) | 1) >>> 0,
    };
  }

  /** add puts key k (at least keyLen bytes; only those are read) in the sketch. */
  add(k: Uint8Array): void {
    this.toggle(this.own(k), 1);
  }

  /** own returns a copy of k's first keyLen bytes. */
  private own(k: Uint8Array): Uint8Array {
    if (k.length < this.keyLen) throw new RangeError(`sketch: a ${k.length}-byte key in a sketch of ${this.keyLen}-byte keys`);
    return k.slice(0, this.keyLen);
  }

  private toggle(k: Uint8Array, n: number): void {
    const { idx, check } = this.place(k);
    for (const i of idx) {
      this.counts[i] += n;
      const off = i * this.keyLen;
      for (let j = 0; j < this.keyLen; j++) this.keys[off + j] ^= k[j];
      this.checks[i] ^= check;
    }
  }

  /**
   * subtract removes o's keys from this sketch, cell by cell; both must
   * have the same size and key length, else it throws and changes nothing.
   */
  subtract(o: Sketch): void {
    if (this.cells !== o.cells || this.keyLen !== o.keyLen) {
      throw new RangeError(`sketch: ${this.cells} cells of ${this.keyLen}-byte keys minus ${o.cells} of ${o.keyLen}`);
    }
    for (let i = 0; i < this.cells; i++) {
      this.counts[i] -= o.counts[i];
      this.checks[i] ^= o.checks[i];
    }
    for (let i = 0; i < this.keys.length; i++) this.keys[i] ^= o.keys[i];
  }

  private isEmpty(i: number): boolean {
    if (this.counts[i] !== 0 || this.checks[i] !== 0) return false;
    const off = i * this.keyLen;
    for (let j = 0; j < this.keyLen; j++) if (this.keys[off + j] !== 0) return false;
    return true;
  }

  /**
   * decode lists the keys of a subtracted sketch: plus were only in the
   * sketch subtracted from, minus only in the one subtracted. ok is false
   * when the sketch holds too many keys to list (it is left peeled partway
   * and the keys found so far are not reliable). Keys come out in peeling
   * order, keyLen bytes each.
   */
  decode(): { plus: Uint8Array[]; minus: Uint8Array[]; ok: boolean } {
    const plus: Uint8Array[] = [];
    const minus: Uint8Array[] = [];
    const part = this.cells / SketchHashes;
    // An honest sketch peels each key once; a hostile one could make
    // peeling go back and forth, so the number of peels is bounded.
    let budget = 2 * this.cells + SketchHashes;
    for (let progress = true; progress;) {
      progress = false;
      for (let i = 0; i < this.cells; i++) {
        const n = this.counts[i];
        if (n !== 1 && n !== -1) continue;
        const k = this.keys.slice(i * this.keyLen, (i + 1) * this.keyLen);
        const { idx, check } = this.place(k);
        // A pure cell's key checks, and maps back here.
        if (check !== this.checks[i] || idx[Math.floor(i / part)] !== i) continue;
        if (--budget < 0) return { plus, minus, ok: false };
        (n === 1 ? plus : minus).push(k);
        this.toggle(k, -n);
        progress = true;
      }
    }
    for (let i = 0; i < this.cells; i++) {
      if (!this.isEmpty(i)) return { plus, minus, ok: false };
    }
    return { plus, minus, ok: true };
  }

  /**
   * nonEmpty counts the cells that hold anything. After a decode that
   * failed it estimates how many keys are left: with n keys in m cells
   * about m·(1 − e^(−3n/m)) cells are non-empty.
   */
  nonEmpty(): number {
    let n = 0;
    for (let i = 0; i < this.cells; i++) if (!this.isEmpty(i)) n++;
    return n;
  }

  /** encodedLen returns the size of the sketch's encoding. */
  encodedLen(): number {
    return this.cells * sketchCellLen(this.keyLen);
  }

  /**
   * appendBinary returns dst followed by the sketch's encoding: its cells
   * in order, each a count byte, the key and the check word (big-endian).
   * dst is not changed.
   */
  appendBinary(dst: Uint8Array = new Uint8Array(0)): Uint8Array {
    const cl = sketchCellLen(this.keyLen);
    const out = new Uint8Array(dst.length + this.encodedLen());
    out.set(dst);
    for (let i = 0, off = dst.length; i < this.cells; i++, off += cl) {
      out[off] = this.counts[i] & 0xff;
      out.set(this.keys.subarray(i * this.keyLen, (i + 1) * this.keyLen), off + 1);
      putUint32BE(out, off + 1 + this.keyLen, this.checks[i]);
    }
    return out;
  }

  /**
   * fromBinary (Go's DecodeSketch) parses an encoding made by
   * appendBinary of a sketch of keyLen-byte keys. It allocates in
   * proportion to b.length only. It throws a BadSketchError for a key
   * length out of range, or a length that is not a whole number of cells,
   * a multiple of SketchHashes between SketchHashes and MaxSketchCells.
   */
  static fromBinary(b: Uint8Array, keyLen: number): Sketch {
    if (!Number.isInteger(keyLen) || keyLen < 1 || keyLen > MaxSketchKeyLen) {
      throw new BadSketchError(`key length ${keyLen}`);
    }
    const cl = sketchCellLen(keyLen);
    const n = Math.floor(b.length / cl);
    if (b.length % cl !== 0 || n < SketchHashes || n % SketchHashes !== 0 || n > MaxSketchCells) {
      throw new BadSketchError(`${b.length} bytes`);
    }
    const s = new Sketch(n, keyLen);
    for (let i = 0, off = 0; i < n; i++, off += cl) {
      s.counts[i] = b[off] << 24 >> 24;
      s.keys.set(b.subarray(off + 1, off + 1 + keyLen), i * keyLen);
      s.checks[i] = getUint32BE(b, off + 1 + keyLen);
    }
    return s;
  }
}

/** newSketch is `new Sketch(cells, keyLen)`, named as in Go. */
export function newSketch(cells: number, keyLen: number): Sketch {
  return new Sketch(cells, keyLen);
}

/** decodeSketch is Sketch.fromBinary, named as in Go. */
export function decodeSketch(b: Uint8Array, keyLen: number): Sketch {
  return Sketch.fromBinary(b, keyLen);
}

/**
 * nodeTag is a 32-bit tag of an ID: mix64 of its first 8 bytes XOR its last
 * 8 (big-endian), mixed again, high 32 bits. id is in the 36-character
 * form; uuidBytes throws on another length.
 */
export function nodeTag(id: string): number {
  const b = uuidBytes(id);
  return Number(mix64(mix64(getUint64(b, 0)) ^ getUint64(b, 8)) >> 32n);
}

/**
 * makePointKey is pointKey from its parts: the node's tag, the register
 * hash (registerHash), the HLC and the origin.
 */
export function makePointKey(node: number, regHash: bigint, t: bigint, origin: string): Uint8Array {
  const k = new Uint8Array(PointKeyLen);
  putUint32BE(k, 0, node >>> 0);
  putUint32BE(k, 4, Number((regHash >> 32n) & 0xffffffffn));
  putUint64(k, 8, t & mask64);
  putUint32BE(k, 16, nodeTag(origin));
  return k;
}

/**
 * pointKey is a node point's key in a repair sketch, 20 bytes:
 * nodeTag(node) (4), the high 32 bits of registerHash(type, key) (4), the
 * HLC (8) and nodeTag(origin) (4), big-endian. A sketch over several
 * nodes' points tells from a decoded key which node and register it is, and
 * from a decoded pair which version wins; the origin tag keeps two
 * versions stamped with one HLC by two writers apart.
 */
export function pointKey(p: Point): Uint8Array {
  return makePointKey(nodeTag(p.node), registerHash(p.type, p.key), p.time, p.origin);
}

/**
 * pointKeyParts splits a pointKey (at least 20 bytes) into node tag,
 * register tag, HLC and origin tag.
 */
export function pointKeyParts(k: Uint8Array): { node: number; reg: number; time: bigint; origin: number } {
  return {
    node: getUint32BE(k, 0), reg: getUint32BE(k, 4), time: getUint64(k, 8), origin: getUint32BE(k, 16),
  };
}
