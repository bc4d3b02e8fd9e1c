// testdata/crdt/sketches.json: repair sketches of point keys. For each
// case: every point's 20-byte key, the encoding of the sketch of the
// points, and the decoding of that sketch minus the sketch of `minus`. A
// failure names the case.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { loadVectors, u64, type VectorCase } from "./vectors.ts";
import { toHex as hex } from "../src/crdt/bytes.ts";
import { PointKeyLen, Sketch, decodeSketch, pointKey } from "../src/crdt/sketch.ts";
import type { Point } from "../src/crdt/point.ts";

interface VecSketchPoint {
  node: string;
  type: string;
  key: string;
  hlc: string;
  origin: string;
}

interface SketchCase extends VectorCase {
  cells: number;
  points: VecSketchPoint[];
  minus?: VecSketchPoint[];
  keys: string[];
  sketch: string;
  decode: { ok: boolean; plus: string[]; minus: string[] };
}

/** sketchOf returns the sketch of pts' keys in `cells` cells, and the keys in hex. */
function sketchOf(pts: VecSketchPoint[], cells: number): { sk: Sketch; keys: string[] } {
  const sk = new Sketch(cells, PointKeyLen);
  const keys: string[] = [];
  for (const v of pts) {
    const p: Point = {
      node: v.node, parent: "", type: v.type, key: v.key, value: 0, text: "", tombstone: false,
      time: u64("hlc", v.hlc), origin: v.origin,
    };
    const k = pointKey(p);
    sk.add(k);
    keys.push(hex(k));
  }
  return { sk, keys };
}

const cases = loadVectors<SketchCase>("sketches");

describe("sketches.json", () => {
  for (const c of cases) {
    test(c.name, () => {
      const name = JSON.stringify(c.name);
      const { sk, keys } = sketchOf(c.points, c.cells);
      assert.deepEqual(keys, c.keys, `case ${name}: keys`);
      const enc = hex(sk.appendBinary());
      assert.equal(enc, c.sketch, `case ${name}: sketch encoding`);
      const back = decodeSketch(sk.appendBinary(), PointKeyLen);
      assert.equal(hex(back.appendBinary()), c.sketch, `case ${name}: the encoding does not decode back to itself`);

      sk.subtract(sketchOf(c.minus ?? [], c.cells).sk);
      const { plus, minus, ok } = sk.decode();
      const got = ok
        ? { ok, plus: plus.map(hex).sort(), minus: minus.map(hex).sort() }
        : { ok, plus: [], minus: [] };
      assert.deepEqual(got, c.decode, `case ${name}: decode`);
    });
  }
});
