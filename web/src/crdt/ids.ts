// Node and origin IDs: UUIDs in one textual form. A port of crdt.ParseID.

import { fromHex, toHex } from "./bytes.ts";
import { NilUUID } from "./point.ts";

/** An ID that is not in the canonical 36-character UUID form, or is nil. */
export class InvalidIDError extends Error {
  readonly input: string;
  constructor(input: string, reason: string) {
    const shown = input.length > 64 ? input.slice(0, 64) + "…" : input;
    super(`invalid ID ${JSON.stringify(shown)}: ${reason}`);
    this.name = "InvalidIDError";
    this.input = input;
  }
}

const hyphens = [8, 13, 18, 23];

/**
 * Parses a node or origin ID in the 36-character form
 * xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex digits in either case, any
 * version and variant bits) and returns its canonical lowercase form. It
 * refuses the nil UUID and the URN and brace forms, so that every ID has
 * exactly one textual form. Throws an InvalidIDError.
 */
export function parseID(s: string): string {
  if (s.length !== 36) {
    throw new InvalidIDError(s, "want 36 characters like 6ba7b810-9dad-11d1-80b4-00c04fd430c8");
  }
  for (let i = 0; i < 36; i++) {
    const c = s.charCodeAt(i);
    if (hyphens.includes(i)) {
      if (c !== 0x2d) throw new InvalidIDError(s, `want "-" at ${i}`);
      continue;
    }
    const hex = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
    if (!hex) throw new InvalidIDError(s, `not a hex digit at ${i}`);
  }
  const id = s.toLowerCase();
  if (id === NilUUID) throw new InvalidIDError(s, "the nil UUID is not an ID");
  return id;
}

/** Returns the 16 bytes of a UUID in the 36-character form (no checks beyond the hex). */
export function uuidBytes(id: string): Uint8Array {
  if (id.length !== 36) throw new RangeError(`uuid ${JSON.stringify(id)}: want 36 characters`);
  return fromHex(id.slice(0, 8) + id.slice(9, 13) + id.slice(14, 18) + id.slice(19, 23) + id.slice(24));
}

/** Returns the canonical lowercase form of 16 bytes. */
export function uuidFromBytes(b: Uint8Array): string {
  if (b.length !== 16) throw new RangeError(`uuid: ${b.length} bytes, want 16`);
  const h = toHex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * A random (version 4) UUID from crypto.getRandomValues, which, unlike
 * crypto.randomUUID, exists outside a secure context too.
 */
export function randomID(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return uuidFromBytes(b);
}

