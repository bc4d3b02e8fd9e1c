// testdata/crdt/digests.json: sums of point digests modulo 2^128.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { addDigest, digestBytes, digestFromBytes, digestHex, digestInput, parseDigest, pointDigest, subDigest, type Digest } from "../src/crdt/digest.ts";
import { sha256 } from "../src/crdt/sha256.ts";
import { validate } from "../src/crdt/point.ts";
import { loadVectors, toPoint, type VecPoint, type VectorCase } from "./vectors.ts";

interface DigestCase extends VectorCase {
  add: VecPoint[];
  sub?: VecPoint[];
  addRaw?: string[];
  subRaw?: string[];
  sameAs?: string;
  digest: string;
}

const cases = loadVectors<DigestCase>("digests");
const byName = new Map(cases.map((c) => [c.name, c.digest]));

describe("digests.json", () => {
  for (const c of cases) {
    test(c.name, () => {
      let sum: Digest = 0n;
      const digestOf = (v: VecPoint) => {
        const p = toPoint(v);
        validate(p);
        return pointDigest(p);
      };
      for (const v of c.add) sum = addDigest(sum, digestOf(v));
      for (const v of c.sub ?? []) sum = subDigest(sum, digestOf(v));
      for (const s of c.addRaw ?? []) sum = addDigest(sum, parseDigest(s));
      for (const s of c.subRaw ?? []) sum = subDigest(sum, parseDigest(s));
      assert.equal(digestHex(sum), c.digest, "digest");
      assert.equal(parseDigest(digestHex(sum)), sum, "hex round trip");
      assert.equal(digestFromBytes(digestBytes(sum)), sum, "bytes round trip");
      if (c.sameAs !== undefined) {
        assert.ok(byName.has(c.sameAs), `sameAs names no case: ${c.sameAs}`);
        assert.equal(c.digest, byName.get(c.sameAs), `same digest as ${c.sameAs}`);
      }
    });
  }
});

test("pointDigest's reused buffers give SHA-256 of digestInput, for any text", () => {
  const texts = ["", "boiler", "ü", "例え", "a".repeat(300), "x€".repeat(20_000), "😀 emoji", "\u0000nul"];
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const id = () => Array.from({ length: 32 }, () => Math.floor(rnd() * 16).toString(16)).join("").replace(/^(.{8})(.{4})(.{4})(.{4})/, "$1-$2-$3-$4-");
  for (let i = 0; i < 2000; i++) {
    const p = {
      node: id(),
      parent: i % 3 === 0 ? id() : "",
      type: i % 5 === 0 ? "tÿpe" : "temp",
      key: i % 7 === 0 ? "k€y" : String(i % 4),
      value: i % 2 ? rnd() * 1e6 : -i,
      text: texts[i % texts.length],
      tombstone: i % 11 === 0,
      time: BigInt(Math.floor(rnd() * 2 ** 47)) << 16n,
      origin: id(),
    };
    const want = digestFromBytes(sha256(digestInput(p)).subarray(0, 16));
    assert.equal(pointDigest(p), want, `point ${i}`);
  }
});
