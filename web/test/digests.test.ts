// testdata/crdt/digests.json: sums of point digests modulo 2^128.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { addDigest, digestBytes, digestFromBytes, digestHex, parseDigest, pointDigest, subDigest, type Digest } from "../src/crdt/digest.ts";
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
