// Byte, hex and 64-bit helpers shared by the crdt port. The vectors write
// bytes as lowercase hex and 64-bit integers as decimal strings
// (testdata/crdt/README.md); these convert both ways, strictly.

const hexDigits = "0123456789abcdef";

/** Returns b as lowercase hex. */
export function toHex(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += hexDigits[b[i] >> 4] + hexDigits[b[i] & 15];
  return s;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * Parses hex digits (either case) into bytes. Throws a RangeError on an
 * odd length or a character that is not a hex digit.
 */
export function fromHex(s: string): Uint8Array {
  if (s.length % 2 !== 0) throw new RangeError(`invalid hex: odd length ${s.length}`);
  const b = new Uint8Array(s.length / 2);
  for (let i = 0; i < b.length; i++) {
    const hi = hexValue(s.charCodeAt(2 * i));
    const lo = hexValue(s.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) throw new RangeError(`invalid hex: character at ${hi < 0 ? 2 * i : 2 * i + 1}`);
    b[i] = (hi << 4) | lo;
  }
  return b;
}

const encoder = new TextEncoder();

/** Returns the UTF-8 bytes of s (a lone surrogate becomes U+FFFD). */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Compares two byte strings lexicographically, like Go's bytes.Compare. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** Reports whether two byte strings are equal. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return compareBytes(a, b) === 0;
}

/** 2^64 − 1, the greatest unsigned 64-bit integer. */
export const MaxUint64 = (1n << 64n) - 1n;

/** Reports whether v is an unsigned 64-bit integer. */
export function isUint64(v: bigint): boolean {
  return v >= 0n && v <= MaxUint64;
}

/**
 * Parses the decimal form of an unsigned 64-bit integer: 1 to 20 ASCII
 * digits, no sign, no spaces, no leading zero (except "0"), below 2^64.
 * Returns undefined for anything else. (BigInt() alone would accept
 * " 1", "0x10" and "-1".)
 */
export function parseUint64(s: string): bigint | undefined {
  if (s.length === 0 || s.length > 20) return undefined;
  if (s.length > 1 && s.charCodeAt(0) === 0x30) return undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return undefined;
  }
  const v = BigInt(s);
  return v <= MaxUint64 ? v : undefined;
}

/** Writes v (unsigned 64-bit) big-endian into b at off. */
export function putUint64(b: Uint8Array, off: number, v: bigint): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setBigUint64(off, v, false);
}

/** Reads an unsigned 64-bit big-endian integer from b at off. */
export function getUint64(b: Uint8Array, off: number): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(off, false);
}
