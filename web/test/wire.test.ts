// testdata/wire: frames, point batches and every message, byte for byte as
// Go's transport writes them, and the hostile frames Go refuses. A failure
// names the case.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fromHex, toHex } from "../src/crdt/bytes.ts";
import { MalformedError } from "../src/crdt/codec.ts";
import { PointError, type Point } from "../src/crdt/point.ts";
import { decodeBatch, encodeBatch } from "../src/wire/batch.ts";
import { MsgType, parseFrame, TooLargeError, UnknownTypeError, VersionError, type MsgName } from "../src/wire/frame.ts";
import { decodeHistorySteps, MaxHistorySteps } from "../src/wire/history.ts";
import { decodeMessage, encodeMessage, RemoteError, schemas, linkStatusFields, type Field, type MessageName } from "../src/wire/messages.ts";
import { checkMsgpack, Reader } from "../src/wire/msgpack.ts";
import { decodeRepairReply, decodeRepairRequest, encodeRepairReply, encodeRepairRequest, type RepairReply, type RepairRequest } from "../src/wire/repair.ts";
import { loadVectors, toPoint, type VecPoint, type VectorCase } from "./vectors.ts";

/** The class of an error, as testdata/wire/README.md names them. */
function errorClass(e: unknown): string {
  if (e instanceof RemoteError) return "remote";
  if (e instanceof PointError) return "invalid-point";
  if (e instanceof TooLargeError) return "too-large";
  if (e instanceof VersionError) return "version";
  if (e instanceof UnknownTypeError) return "unknown-type";
  if (e instanceof MalformedError) return "malformed";
  return `other: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
}

function refused(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return errorClass(e);
  }
  return "";
}

describe("types.json", () => {
  const cases = loadVectors<VectorCase & { code: number }>("types", "wire");
  for (const c of cases) {
    test(c.name, () => assert.equal(MsgType[c.name as MsgName], c.code));
  }
  test("no other types", () => assert.equal(Object.keys(MsgType).length, cases.length));
});

describe("frames.json", () => {
  interface FrameCase extends VectorCase {
    frame: string;
    limit?: number;
    type?: string;
    body?: string;
    error?: string;
  }
  for (const c of loadVectors<FrameCase>("frames", "wire")) {
    test(c.name, () => {
      const frame = fromHex(c.frame);
      if (c.error) {
        assert.equal(refused(() => parseFrame(frame, c.limit)), c.error);
        return;
      }
      const { type, body } = parseFrame(frame, c.limit);
      assert.equal(type, c.type);
      assert.equal(toHex(body), c.body);
    });
  }
});

describe("batches.json", () => {
  interface BatchCase extends VectorCase {
    points?: VecPoint[];
    encoding: string;
    unstamped?: boolean;
    error?: string;
  }
  for (const c of loadVectors<BatchCase>("batches", "wire")) {
    test(c.name, () => {
      const enc = fromHex(c.encoding);
      if (c.error) {
        assert.equal(refused(() => decodeBatch(enc, 0, c.unstamped)), c.error);
        return;
      }
      const pts: Point[] = (c.points ?? []).map(toPoint);
      assert.deepEqual(decodeBatch(enc, 0, c.unstamped), pts, "decode");
      if (!c.unstamped) assert.equal(toHex(encodeBatch(pts)), c.encoding, "encode");
    });
  }
});

// JSON ↔ values: map messages by their schemas; repair messages by key
// (their JSON never holds null, and no key means two things).

function fieldFromJSON(kind: Field["kind"], j: unknown): unknown {
  // An omitempty list: Go's nil and empty are the same bytes (none), and decode as [] here.
  if (j === null && kind === "strs") return [];
  if (j === null) return null;
  switch (kind) {
    case "uint":
    case "int":
      return BigInt(j as string);
    case "bin":
      return fromHex(j as string);
    case "ints":
      return (j as string[]).map((x) => BigInt(x));
    case "links":
      return (j as Record<string, unknown>[]).map((x) => structFromJSON(linkStatusFields, x));
    default:
      return j;
  }
}

function structFromJSON(fields: readonly Field[], j: Record<string, unknown>): Record<string, unknown> {
  const v: Record<string, unknown> = {};
  for (const f of fields) {
    assert.ok(f.name in j, `field ${f.name} in the vector`);
    v[f.name] = fieldFromJSON(f.kind, j[f.name]);
  }
  assert.equal(Object.keys(j).length, fields.length, `fields of ${JSON.stringify(Object.keys(j))}`);
  return v;
}

const repairBig = new Set(["hashes", "tag", "missing", "answered", "hash"]);
const repairHex = new Set(["sub", "own", "edge", "below", "buckets", "sketch", "after", "next", "digest", "points", "aggregate"]);

function repairFromJSON(j: unknown, key = ""): unknown {
  if (Array.isArray(j)) return j.map((x) => repairFromJSON(x, key));
  if (typeof j === "string" && repairBig.has(key)) return BigInt(j);
  if (typeof j === "string" && repairHex.has(key)) return fromHex(j);
  if (j !== null && typeof j === "object") {
    return Object.fromEntries(Object.entries(j).map(([k, v]) => [k, repairFromJSON(v, k)]));
  }
  return j;
}

describe("messages.json", () => {
  interface MsgCase extends VectorCase {
    type: string;
    value?: Record<string, unknown>;
    frame: string;
    canonical?: boolean;
    limit?: number;
    error?: string;
  }
  const seen = new Set<string>();
  for (const c of loadVectors<MsgCase>("messages", "wire")) {
    seen.add(c.type);
    test(c.name, () => {
      const frame = fromHex(c.frame);
      let encode: (v: unknown) => Uint8Array;
      let decode: () => unknown;
      let want: unknown;
      if (c.type === "repair") {
        encode = (v) => encodeRepairRequest(v as RepairRequest);
        decode = () => decodeRepairRequest(frame, c.limit);
        want = c.value && repairFromJSON(c.value);
      } else if (c.type === "repair-reply") {
        encode = (v) => encodeRepairReply(v as RepairReply);
        decode = () => decodeRepairReply(frame, c.limit);
        want = c.value && repairFromJSON(c.value);
      } else {
        const type = c.type as MessageName;
        assert.ok(type in schemas, `message type ${type}`);
        encode = (v) => encodeMessage(type, v as never);
        decode = () => decodeMessage(frame, type, c.limit);
        want = c.value && structFromJSON(schemas[type], c.value);
      }
      if (c.error) {
        assert.equal(refused(decode), c.error);
        return;
      }
      assert.deepEqual(decode(), want, "decode");
      const again = toHex(encode(want));
      if (c.canonical === false) assert.notEqual(again, c.frame, "Go would write other bytes");
      else assert.equal(again, c.frame, "encode");
    });
  }
  test("every message the browser speaks has a case", () => {
    for (const t of ["hello", "welcome", "start", "push", "ack", "ping", "bye", "repair", "repair-reply", "status-request", "status",
      "node-request", "node-page", "edges-request", "edges-page", "watch-request", "watch-reply", "import", "import-result",
      "token-request", "token-reply", "export-request", "export-page", "history-request", "history-page"]) {
      assert.ok(seen.has(t), t);
    }
  });
});

describe("historysteps.json", () => {
  interface StepsCase extends VectorCase {
    steps: string;
    records?: Record<string, string | number>[];
    error?: string;
  }
  const num = (v: string | number) => (typeof v === "number" ? v : Number(v.replace("+Inf", "Infinity").replace("-Inf", "-Infinity")));
  for (const c of loadVectors<StepsCase>("historysteps", "wire")) {
    test(c.name, () => {
      const b = fromHex(c.steps);
      if (c.error) {
        assert.equal(refused(() => decodeHistorySteps(b)), c.error);
        return;
      }
      const want = (c.records ?? []).map((r) => ({
        start: BigInt(r.start),
        count: BigInt(r.count),
        min: num(r.min),
        max: num(r.max),
        sum: num(r.sum),
        last: num(r.last),
        lastTime: BigInt(r.lastTime),
      }));
      assert.deepEqual(decodeHistorySteps(b), want);
    });
  }
  test("more steps than a page holds, refused before any is read", () => {
    assert.throws(() => decodeHistorySteps(new Uint8Array(56 * (MaxHistorySteps + 1))), /8193 steps, limit 8192/);
    assert.equal(decodeHistorySteps(null).length, 0);
  });
});

describe("bounded decoding", () => {
  // Each declares far more than is present: a decoder that allocated what
  // is declared would take gigabytes or throw a RangeError, not a
  // MalformedError.
  const hostile: [string, string][] = [
    ["bin32 of 4 GiB", "c6ffffffff0000"],
    ["str32 of 4 GiB", "dbffffffff6f6b"],
    ["array32 of 2^32-1", "ddffffffff80"],
    ["map32 of 2^32-1", "dfffffffffa16980"],
    ["array16 of 65535", "dcffff" + "c0".repeat(10)],
  ];
  for (const [name, h] of hostile) {
    test(name, () => {
      const b = fromHex(h);
      const before = process.memoryUsage().arrayBuffers;
      assert.throws(() => checkMsgpack(b), MalformedError, "checkMsgpack");
      // The reader alone, without the walk first, refuses the same before allocating.
      const r = new Reader(b);
      const c = b[0];
      const read =
        c === 0xc6 ? () => r.bin("x") : c === 0xdb ? () => r.str("x") : c === 0xdf ? () => r.mapLen("x") : () => r.arrayLen("x");
      assert.throws(read, MalformedError, "reader");
      assert.throws(() => decodeBatch(fromHex("93" + h)), MalformedError, "batch");
      assert.throws(() => decodeMessage(fromHex("010a81a56c696e6b73" + h), "status"), MalformedError, "status links");
      assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20, "no allocation of the declared size");
    });
  }
  test("a batch declaring more points than its bytes can hold", () => {
    // array16 of 1000 points, each at least 10 bytes, with 1000 bytes present.
    assert.throws(() => decodeBatch(fromHex("93c40090dc03e8" + "c0".repeat(1000))), /points: 1000 declared/);
  });
  test("repair counts beyond the bytes", () => {
    // A fetch of 2^62 hashes in a 26-byte record.
    const frame = fromHex("010f81a56665746368c41a" + "00".repeat(16) + "80808080808080804000");
    assert.throws(() => decodeRepairRequest(frame), /bad count/);
  });
});
