// testdata/crdt/merge.json: the last-writer-wins merge.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { compare, merge } from "../src/crdt/lww.ts";
import { validate, type Point } from "../src/crdt/point.ts";
import { loadVectors, toPoint, type VectorCase } from "./vectors.ts";

interface Write {
  value: number;
  text: string;
  tombstone: boolean;
  hlc: string;
  origin: string;
}

interface MergeCase extends VectorCase {
  register: { node: string; parent?: string; type: string; key: string };
  writes: Write[];
  winner: number;
  winnerWrite: Write;
}

/** Every order of n items when there are at most 6, else the identity, the reverse and 22 seeded shuffles. */
function orders(n: number): number[][] {
  const ident = Array.from({ length: n }, (_, i) => i);
  if (n <= 6) {
    const out: number[][] = [];
    const rec = (prefix: number[], rest: number[]) => {
      if (rest.length === 0) out.push(prefix);
      rest.forEach((x, i) => rec([...prefix, x], [...rest.slice(0, i), ...rest.slice(i + 1)]));
    };
    rec([], ident);
    return out;
  }
  const out = [ident, [...ident].reverse()];
  let s = n * 0x9e3779b1; // seed: n, so a failure reproduces
  const next = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
  while (out.length < 24) {
    const p = [...ident];
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [p[i], p[j]] = [p[j], p[i]];
    }
    out.push(p);
  }
  return out;
}

const same = (a: Point, b: Point) => compare(a, b) === 0 && a.node === b.node && a.parent === b.parent && a.type === b.type && a.key === b.key;

describe("merge.json", () => {
  for (const c of loadVectors<MergeCase>("merge")) {
    test(c.name, () => {
      assert.ok(c.writes.length > 0, "no writes");
      const pts = c.writes.map((w) => toPoint({ ...c.register, ...w }));
      pts.forEach((p) => validate(p));
      let winner: Point | undefined;
      for (const order of orders(pts.length)) {
        let cur = pts[order[0]];
        for (const i of order.slice(1)) cur = merge(cur, pts[i]).winner;
        if (winner === undefined) winner = cur;
        else assert.ok(same(cur, winner), `order ${order} gives a different winner`);
      }
      const w = winner!;
      const index = pts.findIndex((p) => same(p, w));
      assert.equal(index, c.winner, "winner");
      assert.deepEqual(c.writes[index], c.winnerWrite, "winnerWrite");
      pts.forEach((p, i) => {
        const kept = merge(w, p);
        assert.ok(!kept.changed && kept.winner === w, `merging write ${i} into the winner changes nothing`);
        if (!same(p, w)) {
          const replaced = merge(p, w);
          assert.ok(replaced.changed && replaced.winner === w, `the winner replaces write ${i}`);
          assert.ok(compare(p, w) < 0 && compare(w, p) > 0, `compare is antisymmetric on write ${i}`);
        }
      });
    });
  }
});
