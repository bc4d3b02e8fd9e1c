// Points: the unit of data siot replicates, and the rules every point
// obeys. A port of crdt/point.go; the contract is testdata/crdt/README.md.

/**
 * One value of a node or of an edge, as held in one register.
 *
 * UUIDs (`node`, `parent`, `origin`) are canonical lowercase 36-character
 * strings. A node point has no parent: `parent` is `""` (the vectors omit
 * the field). The nil UUID is also read as "no parent" by {@link isEdge},
 * as Go's uuid.Nil is, but `""` is the canonical form. `time` is the HLC
 * as an unsigned 64-bit integer.
 */
export interface Point {
  node: string;
  parent: string;
  type: string;
  key: string;
  value: number;
  text: string;
  tombstone: boolean;
  time: bigint;
  origin: string;
}

/** The nil UUID: never an ID; as a parent it means "none". */
export const NilUUID = "00000000-0000-0000-0000-000000000000";

/** The edge point that says whether the edge parent→child exists. */
export const TypeEdge = "edge";
/** The node point whose text names the node's type. */
export const TypeNodeType = "nodeType";

/** The key of a point written without one. */
export const DefaultKey = "0";

/** Limits of the data contract, in bytes (UTF-8 for text). */
export const MaxTypeLen = 64;
export const MaxKeyLen = 128;
export const MaxTextLen = 64 << 10;

/**
 * Orders two UUIDs as 16 unsigned bytes: negative when a < b, zero when
 * equal, positive when a > b. For canonical lowercase strings this is the
 * order of the strings (hex digits and dashes sit at the same positions);
 * uppercase input is folded first so the byte order still holds.
 */
export function compareUUID(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Reports whether p is an edge point (it has a parent). */
export function isEdge(p: Point): boolean {
  return p.parent !== "" && p.parent !== NilUUID;
}

/** Which field of a point breaks a rule, and why. */
export type PointField = "node" | "parent" | "type" | "key" | "value" | "text" | "tombstone" | "time" | "origin";

/**
 * A point that breaks a rule of the data model (Go's *PointError matching
 * ErrInvalidPoint). `tooLarge` is set for size limits (ErrTooLarge).
 */
export class PointError extends Error {
  readonly field: PointField;
  readonly reason: string;
  readonly tooLarge: boolean;
  constructor(field: PointField, reason: string, tooLarge = false) {
    super(`invalid point: ${field}: ${reason}`);
    this.name = "PointError";
    this.field = field;
    this.reason = reason;
    this.tooLarge = tooLarge;
  }
}

/**
 * Returns p in canonical form: a blank key becomes DefaultKey and -0
 * becomes 0. Replicas normalize every point they accept, so equal writes
 * encode and hash identically. p itself is not changed.
 */
export function normalize(p: Point): Point {
  const key = p.key === "" ? DefaultKey : p.key;
  const value = p.value === 0 ? 0 : p.value; // -0 === 0 in JS, so this turns -0 into +0
  return key === p.key && Object.is(value, p.value) ? p : { ...p, key, value };
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Reports whether s is a canonical lowercase UUID other than the nil one. */
function isID(s: string): boolean {
  return s !== NilUUID && uuidPattern.test(s);
}

/**
 * The number of UTF-8 bytes of s, or -1 when s holds a lone surrogate
 * (which has no UTF-8 form: Go's utf8.ValidString would refuse the bytes).
 */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (d < 0xdc00 || d > 0xdfff) return -1;
      n += 4;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return -1;
    else n += 3;
  }
  return n;
}

const maxTime = (1n << 64n) - 1n;

/**
 * Checks every rule of the data model except that the point is stamped
 * (Go's ValidateUnstamped): for points a server stamps on arrival. It
 * expects a normalized point. Throws a PointError.
 */
export function validateUnstamped(p: Point): void {
  if (!isID(p.node)) throw new PointError("node", p.node === NilUUID ? "missing (nil UUID)" : "not a canonical lowercase UUID");
  if (p.parent !== "" && p.parent !== NilUUID && !uuidPattern.test(p.parent)) {
    throw new PointError("parent", "not a canonical lowercase UUID");
  }
  if (p.parent === p.node) throw new PointError("parent", "a node cannot be its own parent");
  checkType(p.type);
  if (p.type === TypeEdge && !isEdge(p)) throw new PointError("type", `"edge" points need a parent`);
  checkKey(p.key);
  if (typeof p.value !== "number" || !Number.isFinite(p.value)) throw new PointError("value", "must be a finite number");
  if (Object.is(p.value, -0)) throw new PointError("value", "negative zero (normalize first)");
  const n = utf8Length(p.text);
  if (n < 0) throw new PointError("text", "not valid UTF-8 (lone surrogate)");
  if (n > MaxTextLen) throw new PointError("text", `${n} bytes, limit ${MaxTextLen}`, true);
  if (typeof p.tombstone !== "boolean") throw new PointError("tombstone", "not a boolean");
  if (typeof p.time !== "bigint" || p.time < 0n || p.time > maxTime) {
    throw new PointError("time", "not an unsigned 64-bit integer");
  }
}

/**
 * Checks every rule of the data model, including that the point is stamped
 * (non-zero time, an origin). Throws a PointError.
 */
export function validate(p: Point): void {
  validateUnstamped(p);
  if (p.time === 0n) throw new PointError("time", "missing");
  if (!isID(p.origin)) throw new PointError("origin", p.origin === NilUUID || p.origin === "" ? "missing" : "not a canonical lowercase UUID");
}

function checkType(s: string): void {
  if (s === "") throw new PointError("type", "missing");
  const n = utf8Length(s); // -1 (a lone surrogate) fails the character check below
  if (n > MaxTypeLen) throw new PointError("type", `${n} bytes, limit ${MaxTypeLen}`, true);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f || c === 0x2e || c === 0x2d;
    if (!ok) throw new PointError("type", `character ${JSON.stringify(s[i])} at ${i} not allowed (use A-Z a-z 0-9 _ . -)`);
  }
}

function checkKey(s: string): void {
  if (s === "") throw new PointError("key", "blank (normalize first)");
  const n = utf8Length(s); // -1 (a lone surrogate) fails the character check below
  if (n > MaxKeyLen) throw new PointError("key", `${n} bytes, limit ${MaxKeyLen}`, true);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) throw new PointError("key", `character ${JSON.stringify(s[i])} at ${i} not allowed (printable ASCII without space)`);
  }
}
