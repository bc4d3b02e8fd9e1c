// The hybrid logical clock. A port of crdt/hlc.go: a Timestamp is an
// unsigned 64-bit integer (a bigint here) with physical milliseconds since
// the Unix epoch in the high 48 bits and a logical counter in the low 16.
// Timestamps compare as plain unsigned integers; 0 means "not stamped".

import { MaxUint64, parseUint64 } from "./bytes.ts";

export type Timestamp = bigint;

const logicalBits = 16n;
const logicalMask = (1n << logicalBits) - 1n;

/** The largest physical time a Timestamp carries, in ms since the epoch. */
export const MaxPhysical = 2 ** 48 - 1;

/** How far ahead of local physical time a remote timestamp may be, in ms. */
export const DefaultMaxOffsetMs = 60_000;

function clampPhysical(ms: number): number {
  if (!(ms > 0)) return 0; // also NaN
  if (ms > MaxPhysical) return MaxPhysical;
  return Math.floor(ms);
}

/**
 * Builds a Timestamp from physical milliseconds and a logical counter.
 * Physical time outside [0, MaxPhysical] is clamped; a fractional
 * millisecond is dropped.
 */
export function newTimestamp(physicalMs: number, logical = 0): Timestamp {
  return (BigInt(clampPhysical(physicalMs)) << logicalBits) | (BigInt(logical) & logicalMask);
}

/** The physical part of t, in milliseconds since the Unix epoch. */
export function physicalOf(t: Timestamp): number {
  return Number(t >> logicalBits);
}

/** The logical counter of t. */
export function logicalOf(t: Timestamp): number {
  return Number(t & logicalMask);
}

/** A decimal timestamp that is not 1 to 20 digits below 2^64 without a leading zero. */
export class InvalidTimestampError extends Error {
  constructor(input: string) {
    const shown = input.length > 32 ? input.slice(0, 32) + "…" : input;
    super(`invalid hlc ${JSON.stringify(shown)}: want a decimal integer below 2^64, no sign, spaces or leading zeros`);
    this.name = "InvalidTimestampError";
  }
}

/**
 * Parses the decimal form of a Timestamp ("hlc" in point records). Throws
 * an InvalidTimestampError. `String(t)` is the inverse.
 */
export function parseTimestamp(s: string): Timestamp {
  const v = parseUint64(s);
  if (v === undefined) throw new InvalidTimestampError(s);
  return v;
}

/**
 * A remote timestamp more than the max offset ahead of local (corrected)
 * physical time (Go's *SkewError, matching ErrClockSkew). The write that
 * carried it must be refused.
 */
export class SkewError extends Error {
  readonly remote: Timestamp;
  readonly physicalMs: number;
  readonly maxOffsetMs: number;
  constructor(remote: Timestamp, physicalMs: number, maxOffsetMs: number) {
    super(
      `remote clock too far ahead: hlc ${remote} is ${physicalOf(remote) - physicalMs} ms ahead of local time ` +
        `${physicalMs} ms (max offset ${maxOffsetMs} ms)`,
    );
    this.name = "SkewError";
    this.remote = remote;
    this.physicalMs = physicalMs;
    this.maxOffsetMs = maxOffsetMs;
  }
}

/**
 * The pure acceptance rule of Clock.update: remote is accepted when
 * remote < ((physical.ms + maxOffsetMs) << 16 | 0xffff), and when that
 * limit reaches the end of the range, when remote < 2^64 − 1. physical's
 * logical part is ignored.
 */
export function skewOK(remote: Timestamp, physical: Timestamp, maxOffsetMs: number): boolean {
  const limitMs = BigInt(physicalOf(physical)) + BigInt(maxOffsetMs);
  if (limitMs >= BigInt(MaxPhysical)) return remote < MaxUint64;
  return remote < ((limitMs << logicalBits) | logicalMask);
}

/**
 * The pure HLC step of now and update: max(physical, last+1, remote+1),
 * saturating at 2^64 − 1. A zero remote means "no remote timestamp".
 */
export function tick(last: Timestamp, physical: Timestamp, remote: Timestamp): Timestamp {
  let next = physical;
  if (last !== MaxUint64 && last + 1n > next) next = last + 1n;
  if (remote !== 0n && remote !== MaxUint64 && remote + 1n > next) next = remote + 1n;
  return next < last ? last : next;
}

/** Configures a Clock. */
export interface ClockConfig {
  /** Returns the physical time in ms since the Unix epoch (Date.now in production). Required. */
  physical: () => number;
  /** Bounds how far ahead of physical a remote timestamp may be, in ms. 0 or absent: DefaultMaxOffsetMs. */
  maxOffsetMs?: number;
}

/**
 * A hybrid logical clock. Every timestamp it returns is greater than every
 * timestamp it returned or accepted before. Single-threaded, like all
 * JavaScript; no locking needed.
 *
 * The skew check of update compares remote timestamps with the physical
 * clock plus a correction (setCorrection), never with the clock's last
 * timestamp: a device in 1970 refuses the present until corrected
 * (testdata/crdt/README.md, open questions).
 */
export class Clock {
  readonly maxOffsetMs: number;
  private readonly physicalMs: () => number;
  private lastTs: Timestamp = 0n;
  private correctionMs = 0;

  /** Throws a TypeError/RangeError for a missing physical clock or a bad offset. */
  constructor(cfg: ClockConfig) {
    if (typeof cfg.physical !== "function") throw new TypeError("hlc: ClockConfig.physical is required");
    const off = cfg.maxOffsetMs ?? 0;
    if (!Number.isSafeInteger(off) || off < 0) throw new RangeError(`hlc: maxOffsetMs ${off}: want a non-negative integer`);
    this.physicalMs = cfg.physical;
    this.maxOffsetMs = off === 0 ? DefaultMaxOffsetMs : off;
  }

  /** A new timestamp for a local event: max(physical << 16, last + 1). */
  now(): Timestamp {
    this.lastTs = tick(this.lastTs, this.physicalTimestamp(), 0n);
    return this.lastTs;
  }

  /**
   * Merges a timestamp received from another replica and returns a new one
   * for the receive event: max(physical << 16, last + 1, remote + 1).
   * Throws a SkewError, leaving the clock unchanged, when remote is too far
   * ahead (skewOK).
   */
  update(remote: Timestamp): Timestamp {
    const pt = this.physicalTimestamp();
    this.checkAt(remote, pt);
    this.lastTs = tick(this.lastTs, pt, remote);
    return this.lastTs;
  }

  /** Throws the SkewError update would throw for remote, without changing the clock. */
  check(remote: Timestamp): void {
    this.checkAt(remote, this.physicalTimestamp());
  }

  /**
   * Raises the clock to at least t without a skew check and without ticking:
   * for timestamps the replica already holds durably.
   */
  observe(t: Timestamp): void {
    if (t > this.lastTs) this.lastTs = t;
  }

  /** The greatest timestamp issued or observed. */
  last(): Timestamp {
    return this.lastTs;
  }

  /** Sets milliseconds added to the physical clock from now on (0 removes it). */
  setCorrection(ms: number): void {
    if (!Number.isSafeInteger(ms)) throw new RangeError(`hlc: correction ${ms}: want an integer number of ms`);
    this.correctionMs = ms;
  }

  /** The correction set by setCorrection, in ms. */
  correction(): number {
    return this.correctionMs;
  }

  /** The corrected physical time in ms, the reference for now and for the skew check. */
  physical(): number {
    return this.physicalMs() + this.correctionMs;
  }

  private physicalTimestamp(): Timestamp {
    return newTimestamp(this.physical(), 0);
  }

  private checkAt(remote: Timestamp, pt: Timestamp): void {
    if (!skewOK(remote, pt, this.maxOffsetMs)) throw new SkewError(remote, physicalOf(pt), this.maxOffsetMs);
  }
}
