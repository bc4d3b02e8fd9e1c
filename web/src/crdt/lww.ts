// The last-writer-wins register. A port of crdt/lww.go.

import { compareUUID, type Point } from "./point.ts";

const f64 = new DataView(new ArrayBuffer(8));

/** Maps a float64 to a key whose unsigned order is the IEEE-754 total order. */
function totalOrderKey(f: number): bigint {
  f64.setFloat64(0, f);
  const b = f64.getBigUint64(0);
  return b >> 63n === 1n ? ~b & ((1n << 64n) - 1n) : b | (1n << 63n);
}

function compareValues(a: number, b: number): number {
  if (a < b) return -1;
  if (a > b) return 1;
  if (a === b && Object.is(a, b)) return 0;
  // -0 against 0, or a NaN: normalized valid points never get here.
  const ka = totalOrderKey(a);
  const kb = totalOrderKey(b);
  return ka === kb ? 0 : ka > kb ? 1 : -1;
}

/**
 * Compares two strings by their UTF-8 bytes, which is code point order.
 * JavaScript's < compares UTF-16 code units and puts U+10000..U+10FFFF
 * (surrogate pairs, 0xD800–0xDFFF) below U+E000..U+FFFF; this does not.
 */
export function compareUTF8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs && !ys && y >= 0xe000) return 1;
    if (ys && !xs && x >= 0xe000) return -1;
    return x < y ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/**
 * Orders two writes to the same register: positive when a beats b,
 * negative when b beats a, zero only when they are equal in every payload
 * field. Most significant first: time (unsigned), origin (16 bytes),
 * tombstone (true wins), value (IEEE-754 total order), text (UTF-8 bytes).
 * The identity fields (node, parent, type, key) are ignored.
 */
export function compare(a: Point, b: Point): number {
  if (a.time !== b.time) return a.time > b.time ? 1 : -1;
  const c = compareUUID(a.origin, b.origin);
  if (c !== 0) return c;
  if (a.tombstone !== b.tombstone) return a.tombstone ? 1 : -1;
  const v = compareValues(a.value, b.value);
  if (v !== 0) return v;
  return compareUTF8(a.text, b.text);
}

/**
 * The winner of the register holding cur after incoming arrives, and
 * whether it differs from cur (a stale or duplicate write changes
 * nothing). Both must be writes to the same register. Neither is copied.
 */
export function merge(cur: Point, incoming: Point): { winner: Point; changed: boolean } {
  return compare(incoming, cur) > 0 ? { winner: incoming, changed: true } : { winner: cur, changed: false };
}
