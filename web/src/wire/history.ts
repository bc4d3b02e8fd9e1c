// The step records of a history page (docs/protocol.md, "Local API",
// history): a port of transport.DecodeHistorySteps, checked against
// testdata/wire/historysteps.json.

import { MalformedError } from "./msgpack.ts";

/** The size of one step record: start, count, min, max, sum, last and the last's HLC, 8 bytes each, big-endian. */
export const HistoryStepLen = 56;
/** The most steps of one page (transport.MaxHistorySteps). */
export const MaxHistorySteps = 8192;

/**
 * The summary of one step's numeric samples (tombstones aside): the step
 * starts at start (ms since the Unix epoch); count samples, their least,
 * greatest and sum (the mean is sum/count), and the value and HLC of the
 * latest.
 */
export interface HistoryStep {
  start: bigint;
  count: bigint;
  min: number;
  max: number;
  sum: number;
  last: number;
  lastTime: bigint;
}

/**
 * Decodes the steps of a HistoryPage (null or empty: none). Throws a
 * MalformedError for a length that is not a multiple of HistoryStepLen,
 * more than MaxHistorySteps records (before reading any), and a record no
 * server writes: a negative start, starts not increasing, a count of 0, a
 * min, max or last that is NaN or infinite, min above max or last outside
 * them. A sum may be infinite or NaN (values near the limits of float64).
 */
export function decodeHistorySteps(b: Uint8Array | null): HistoryStep[] {
  if (b === null) return [];
  if (b.length % HistoryStepLen !== 0) throw new MalformedError(`history steps: ${b.length} bytes, not a multiple of ${HistoryStepLen}`);
  const n = b.length / HistoryStepLen;
  if (n > MaxHistorySteps) throw new MalformedError(`history steps: ${n} steps, limit ${MaxHistorySteps}`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: HistoryStep[] = [];
  for (let i = 0; i < n; i++) {
    const o = i * HistoryStepLen;
    const s: HistoryStep = {
      start: dv.getBigInt64(o),
      count: dv.getBigUint64(o + 8),
      min: dv.getFloat64(o + 16),
      max: dv.getFloat64(o + 24),
      sum: dv.getFloat64(o + 32),
      last: dv.getFloat64(o + 40),
      lastTime: dv.getBigUint64(o + 48),
    };
    const bad = (why: string) => new MalformedError(`history step ${i}: ${why}`);
    if (s.start < 0n || (i > 0 && s.start <= out[i - 1].start)) throw bad(`start ${s.start} out of order`);
    if (s.count === 0n) throw bad("no sample");
    if (!Number.isFinite(s.min) || !Number.isFinite(s.max) || !Number.isFinite(s.last)) throw bad("a number that is not finite");
    if (s.min > s.max || s.last < s.min || s.last > s.max) throw bad(`min ${s.min}, max ${s.max}, last ${s.last}`);
    out.push(s);
  }
  return out;
}
