// testdata/crdt/sketches.json: repair sketches of point keys. For each
// case: every point's 20-byte key, the encoding of the sketch of the
// points, and the decoding of that sketch minus the sketch of `minus`. A
// failure names the case.

import { test } from "node:test";
import assert from "node:assert/strict";

import { loadCases } from "./vectors.ts";
import { PointKeyLen, Sketch, decodeSketch, pointKey } from "../src/crdt/sketch.ts";
import type { Point } from "../src/crdt/point.ts";

interface VecSketchPoint {
  node: string;
  type: string;
  key: string;
  hlc: string;
  origin: string;
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** sketchOf returns the sketch of pts' keys in `cells` cells, and the keys in hex. */
function sketchOf(pts: VecSketchPoint[], cells: number): { sk: Sketch; keys: string[] } {
  const sk = new Sketch(cells, PointKeyLen);
  const keys: string[] = [];
  for (const v of pts) {
    if (!/^(0|[1-9][0-9]{0,19})$/.test(v.hlc)) throw new Error(`hlc ${JSON.stringify(v.hlc)} is not a decimal integer`);
    const p: Point = {
      node: v.node, parent: "", type: v.type, key: v.key, value: 0, text: "", tombstone: false,
      time: BigInt(v.hlc), origin: v.origin,
    };
    const k = pointKey(p);
    sk.add(k);
    keys.push(hex(k));
  }
  return { sk, keys };
}

const cases = loadCases("sketches");

test("sketches.json has cases", () => {
  assert.ok(cases.length > 0);
});

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
