// testdata/crdt/tree.json: the tree rules of placements. Each case's
// registers, in several orders, must resolve to exactly its live edges; a
// failure names the case. As the Go test does (crdt/vectors_test.go), every
// order of up to four registers is tried, and for more, the given order, its
// reverse and 22 shuffles from a fixed seed (printed on failure).

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import { loadVectors, u64, type VectorCase } from "./vectors.ts";
import { decidePlacements, mergeEdgeRegisters, resolvePlacements } from "../src/crdt/placement.ts";
import { resolveRegion, type TreeRegion } from "../src/crdt/region.ts";
import { edgeFromKey, type EdgeRegister } from "../src/crdt/tree.ts";
import { rng } from "./rng.ts";

interface VecRegister {
  parent: string;
  child: string;
  tombstone: boolean;
  moved: boolean;
  place?: string;
  hlc: string;
  origin: string;
}

interface VecEdge {
  parent: string;
  child: string;
}

interface TreeCase extends VectorCase {
  registers: VecRegister[];
  live: VecEdge[];
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function register(r: VecRegister, i: number): EdgeRegister {
  for (const f of ["parent", "child", "origin"] as const) {
    if (!uuidPattern.test(r[f])) throw new Error(`register ${i}: ${f} ${JSON.stringify(r[f])} is not a canonical UUID`);
  }
  const time = u64(`register ${i}: hlc`, r.hlc);
  return {
    parent: r.parent, child: r.child, tombstone: r.tombstone, moved: r.moved,
    place: r.place ?? "", time, origin: r.origin,
  };
}


const seed = 0x5107;

/** orders returns the index orders to try for n registers. */
function orders(n: number): number[][] {
  const ident = Array.from({ length: n }, (_, i) => i);
  if (n <= 4) {
    const out: number[][] = [];
    const rec = (prefix: number[], rest: number[]): void => {
      if (rest.length === 0) out.push(prefix);
      rest.forEach((x, i) => rec([...prefix, x], [...rest.slice(0, i), ...rest.slice(i + 1)]));
    };
    rec([], ident);
    return out;
  }
  const out = [ident, [...ident].reverse()];
  const next = rng(seed + n);
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

function show(edges: VecEdge[]): string {
  return edges.map((e) => `${e.parent.slice(-2)}→${e.child.slice(-2)}`).join(" ") || "(none)";
}

const cases = loadVectors<TreeCase>("tree");

describe("tree.json", () => {
  for (const c of cases) {
    test(c.name, () => {
      const regs = c.registers.map(register);
      const want = c.live.map((e) => ({ parent: e.parent, child: e.child }));
      for (const order of orders(regs.length)) {
        const got = resolvePlacements(order.map((i) => regs[i]));
        assert.deepEqual(got, want,
          `case ${JSON.stringify(c.name)}: registers in order [${order}] (seed ${seed}) give ${show(got)}, want ${show(want)}`);
      }
    });
  }
});

// resolveRegion with every child as a seed loads every register, so it
// must decide exactly as decidePlacements does. Not part of the vectors: a
// check of region.ts, which the store's regional path will use.
describe("tree.json, by resolveRegion with every child a seed", () => {
  for (const c of cases) {
    test(c.name, () => {
      const regs = mergeEdgeRegisters(c.registers.map(register)); // one per edge, as a store holds
      const view: TreeRegion = {
        into: (child) => regs.filter((r) => r.child === child),
        activeParents: () => [], // never asked: every node with a register is loaded
      };
      const got = resolveRegion(view, regs.map((r) => r.child));
      assert.deepEqual([...got], [...decidePlacements(regs)],
        `case ${JSON.stringify(c.name)}: resolveRegion disagrees with decidePlacements`);
      const active = [...got].filter(([, d]) => d.active).map(([k]) => edgeFromKey(k));
      assert.deepEqual(active, c.live, `case ${JSON.stringify(c.name)}: resolveRegion's active edges`);
    });
  }
});
