// testdata/crdt/points.json: canonical encoding, digest input and digest
// of single points.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { toHex } from "../src/crdt/bytes.ts";
import { decodePoint, encodePoint, MalformedError } from "../src/crdt/codec.ts";
import { digestHex, digestInput, pointDigest } from "../src/crdt/digest.ts";
import { parseID } from "../src/crdt/ids.ts";
import { normalize, PointError, validate, type Point } from "../src/crdt/point.ts";
import { Sha256, sha256 } from "../src/crdt/sha256.ts";
import { loadVectors, toPoint, type VecPoint, type VectorCase } from "./vectors.ts";
import { rng } from "./rng.ts";

interface PointCase extends VectorCase {
  point: VecPoint;
  encoding: string;
  digestInput: string;
  digest: string;
}

describe("points.json", () => {
  for (const c of loadVectors<PointCase>("points")) {
    test(c.name, () => {
      const p = toPoint(c.point);
      for (const id of [p.node, p.origin, ...(p.parent ? [p.parent] : [])]) {
        assert.equal(parseID(id), id, "vector IDs are canonical");
      }
      assert.deepEqual(normalize(p), p, "vector points are normalized");
      validate(p);
      const enc = encodePoint(p);
      assert.equal(toHex(enc), c.encoding, "encoding");
      const input = digestInput(p);
      assert.equal(toHex(input), c.digestInput, "digestInput");
      assert.equal(digestHex(pointDigest(p)), c.digest, "digest");
      assert.equal(toHex(sha256(input).subarray(0, 16)), c.digest, "digest is the first 16 bytes of SHA-256(digestInput)");
      assert.deepEqual(decodePoint(enc), p, "the encoding decodes back to the point");
    });
  }
});


test("sha256 agrees with node:crypto", () => {
  const seed = 0x5107;
  const r = rng(seed);
  // Every length across the padding boundaries (55, 56, 63, 64, ...), then some long ones.
  const lengths = [...Array.from({ length: 200 }, (_, i) => i), 1000, 4095, 65_536 + 7];
  for (const n of lengths) {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
    const want = createHash("sha256").update(b).digest("hex");
    assert.equal(toHex(sha256(b)), want, `length ${n} (seed ${seed})`);
  }
});

test("one Sha256 reused across inputs of every length gives each input's hash", () => {
  const r = rng(0x5108);
  const h = new Sha256();
  for (const n of [300, 64, 55, 200, 0, 56, 1000, 1, 119, 120]) {
    const b = new Uint8Array(n + 5).map(() => Math.floor(r() * 256));
    const words = h.sum(b, n);
    const got = Array.from(words, (w) => (w >>> 0).toString(16).padStart(8, "0")).join("");
    assert.equal(got, createHash("sha256").update(b.subarray(0, n)).digest("hex"), `length ${n}`);
  }
});

const base: Point = {
  node: "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
  parent: "",
  type: "temperature",
  key: "0",
  value: 21.5,
  text: "",
  tombstone: false,
  time: 1n,
  origin: "c0ffee00-1234-4abc-8def-0123456789ab",
};

test("validate refuses points that break the rules", () => {
  const bad: [string, Partial<Point>, string][] = [
    ["nil node", { node: "00000000-0000-0000-0000-000000000000" }, "node"],
    ["uppercase node", { node: base.node.toUpperCase() }, "node"],
    ["own parent", { parent: base.node }, "parent"],
    ["no type", { type: "" }, "type"],
    ["type with a space", { type: "a b" }, "type"],
    ["type of 65 bytes", { type: "t".repeat(65) }, "type"],
    ["edge without parent", { type: "edge" }, "type"],
    ["blank key", { key: "" }, "key"],
    ["key with a space", { key: "a b" }, "key"],
    ["key of 129 bytes", { key: "k".repeat(129) }, "key"],
    ["NaN", { value: NaN }, "value"],
    ["infinity", { value: -Infinity }, "value"],
    ["negative zero", { value: -0 }, "value"],
    ["text over 64 KiB", { text: "é".repeat(32 * 1024 + 1) }, "text"],
    ["lone surrogate", { text: "a\ud800b" }, "text"],
    ["zero time", { time: 0n }, "time"],
    ["time of 2^64", { time: 1n << 64n }, "time"],
    ["no origin", { origin: "" }, "origin"],
    ["nil origin", { origin: "00000000-0000-0000-0000-000000000000" }, "origin"],
  ];
  validate(base);
  for (const [name, change, field] of bad) {
    assert.throws(() => validate({ ...base, ...change }), (e: unknown) => e instanceof PointError && e.field === field, name);
  }
  validate({ ...base, text: "x".repeat(64 * 1024) }); // the limit itself is allowed
});

test("decodePoint refuses malformed and invalid encodings", () => {
  const enc = encodePoint(base);
  for (let n = 0; n < enc.length; n++) {
    assert.throws(() => decodePoint(enc.subarray(0, n)), MalformedError, `truncated to ${n} bytes`);
  }
  assert.throws(() => decodePoint(Uint8Array.of(...enc, 0xc0)), MalformedError, "trailing byte");
  const badTime = encodePoint({ ...base, time: 1n });
  assert.equal(badTime[badTime.length - 19], 0x01, "time, before the origin bin8(16)");
  badTime[badTime.length - 19] = 0x00; // time 1 -> 0: not stamped
  assert.throws(() => decodePoint(badTime), PointError, "zero time");
});
