// verify: recomputes every derived record of a store from its registers
// alone and compares. The slow, obviously correct twin of the incremental
// maintenance in store.ts; tests call it after random write sequences.

import { addDigest, digestHex, pointDigest, type Digest } from "../crdt/digest.ts";
import { isEdge, type Point } from "../crdt/point.ts";
import { resolvePlacements } from "../crdt/placement.ts";
import { edgeKey, edgeRegisterOf, type EdgeRegister } from "../crdt/tree.ts";
import { getAll, req } from "./idb.ts";
import { bucketOf, Stores, type EdgeState, type FeedRecord, type NodeDigests, type RegisterKey, type RegisterRecord, type Store } from "./store.ts";

/** What the registers alone say every derived record must be. */
export interface Derived {
  nodes: Map<string, NodeDigests>; // non-zero only
  edges: Map<string, { digest: Digest; active: boolean; reg: EdgeRegister | undefined }>;
  buckets: Map<string, Digest>; // "parent/bucket" → digest, non-zero only
}

/**
 * derive computes, from a set of register winners, every node's own and
 * subtree digests, every edge's digest and active state (the tree rules
 * over all edge registers at once) and every bucket digest, by the
 * definitions of index.ts. It costs the whole set.
 */
export function derive(points: Iterable<Point>): Derived {
  const own = new Map<string, Digest>();
  const edges: Derived["edges"] = new Map();
  const below = new Map<string, string[]>(); // parent → children with an edge state
  const regs: EdgeRegister[] = [];
  const nodes = new Set<string>();
  for (const p of points) {
    nodes.add(p.node);
    const d = pointDigest(p);
    if (!isEdge(p)) {
      own.set(p.node, addDigest(own.get(p.node) ?? 0n, d));
      continue;
    }
    nodes.add(p.parent);
    const k = edgeKey(p.parent, p.node);
    let e = edges.get(k);
    if (!e) {
      edges.set(k, (e = { digest: 0n, active: false, reg: undefined }));
      below.set(p.parent, [...(below.get(p.parent) ?? []), p.node]);
    }
    e.digest = addDigest(e.digest, d);
    if (p.type === "edge") {
      e.reg = edgeRegisterOf(p);
      regs.push(e.reg);
    }
  }
  for (const a of resolvePlacements(regs)) {
    const e = edges.get(edgeKey(a.parent, a.child));
    if (e) e.active = true;
  }
  const sub = new Map<string, Digest>();
  const subOf = (n: string): Digest => {
    let s = sub.get(n);
    if (s !== undefined) return s;
    s = own.get(n) ?? 0n;
    for (const c of below.get(n) ?? []) {
      const e = edges.get(edgeKey(n, c))!;
      s = addDigest(s, e.digest);
      if (e.active) s = addDigest(s, subOf(c)); // active edges never form a cycle
    }
    sub.set(n, s);
    return s;
  };
  const out: Derived = { nodes: new Map(), edges, buckets: new Map() };
  for (const n of nodes) {
    const d = { own: own.get(n) ?? 0n, sub: subOf(n) };
    if (d.own !== 0n || d.sub !== 0n) out.nodes.set(n, d);
  }
  for (const [p, cs] of below) {
    for (const c of cs) {
      const e = edges.get(edgeKey(p, c))!;
      const k = p + "/" + bucketOf(c);
      out.buckets.set(k, addDigest(out.buckets.get(k) ?? 0n, e.active ? addDigest(e.digest, subOf(c)) : e.digest));
    }
  }
  for (const [k, d] of out.buckets) if (d === 0n) out.buckets.delete(k);
  return out;
}

/**
 * verify reads the whole database in one transaction, recomputes what the
 * registers say (derive) and returns every difference with the stored
 * records and with the store's memory, and every inconsistency of the
 * change feed, as readable lines. An empty list: the store is consistent.
 */
export async function verify(s: Store): Promise<string[]> {
  const db = s.database();
  const tx = db.transaction(Object.values(Stores), "readonly");
  const store = (n: string) => tx.objectStore(n);
  const [regs, feedKeys, feed, edges, nodeKeys, nodeVals, bucketKeys, bucketVals, seq] = await Promise.all([
    getAll<RegisterRecord>(store(Stores.registers)),
    req(store(Stores.feed).getAllKeys()),
    getAll<FeedRecord>(store(Stores.feed)),
    getAll<EdgeState>(store(Stores.edges)),
    req(store(Stores.nodes).getAllKeys()),
    getAll<NodeDigests>(store(Stores.nodes)),
    req(store(Stores.buckets).getAllKeys()),
    getAll<Digest>(store(Stores.buckets)),
    req(store(Stores.meta).get("seq")),
  ]);
  const bad: string[] = [];
  const want = derive(regs.map((r) => r.point));
  const hex = (d: Digest | undefined) => (d === undefined ? "none" : digestHex(d));

  // Node digests: stored, in memory, recomputed.
  const stored = new Map<string, NodeDigests>();
  nodeKeys.forEach((k, i) => stored.set(k as string, nodeVals[i]));
  const mem = s.memory();
  for (const n of new Set([...stored.keys(), ...want.nodes.keys(), ...mem.nodes.keys()])) {
    const w = want.nodes.get(n), g = stored.get(n), m = mem.nodes.get(n);
    for (const f of ["own", "sub"] as const) {
      if (w?.[f] !== g?.[f]) bad.push(`node ${n} ${f}: stored ${hex(g?.[f])}, recomputed ${hex(w?.[f])}`);
      if (m?.[f] !== g?.[f]) bad.push(`node ${n} ${f}: in memory ${hex(m?.[f])}, stored ${hex(g?.[f])}`);
    }
  }
  // Buckets.
  const sb = new Map<string, Digest>();
  bucketKeys.forEach((k, i) => {
    const [p, b] = k as [string, number];
    sb.set(p + "/" + b, bucketVals[i]);
  });
  for (const k of new Set([...sb.keys(), ...want.buckets.keys(), ...mem.buckets.keys()])) {
    if (sb.get(k) !== want.buckets.get(k)) bad.push(`bucket ${k}: stored ${hex(sb.get(k))}, recomputed ${hex(want.buckets.get(k))}`);
    if (sb.get(k) !== mem.buckets.get(k)) bad.push(`bucket ${k}: in memory ${hex(mem.buckets.get(k))}, stored ${hex(sb.get(k))}`);
  }
  // Edge states.
  const se = new Map(edges.map((e) => [edgeKey(e.parent, e.child), e]));
  for (const k of new Set([...se.keys(), ...want.edges.keys(), ...mem.edges.keys()])) {
    const g = se.get(k), w = want.edges.get(k), m = mem.edges.get(k);
    if (!g || !w) {
      bad.push(`edge ${k}: ${g ? "stored but has no points" : "has points but no stored state"}`);
      continue;
    }
    if (g.digest !== w.digest) bad.push(`edge ${k} digest: stored ${hex(g.digest)}, recomputed ${hex(w.digest)}`);
    if (g.active !== w.active) bad.push(`edge ${k} active: stored ${g.active}, the tree rules say ${w.active}`);
    const r = w.reg;
    if (g.hasReg !== (r !== undefined) || (r && (g.tombstone !== r.tombstone || g.moved !== r.moved || g.place !== r.place || g.time !== r.time || g.origin !== r.origin))) {
      bad.push(`edge ${k}: stored register summary differs from its edge point`);
    }
    if (!m || m.digest !== g.digest || m.active !== g.active || m.irregular !== g.irregular) bad.push(`edge ${k}: in memory differs from stored`);
  }
  // The change feed: each register once, at its change number, none beyond the last.
  const bySeq = new Map<number, FeedRecord>();
  feedKeys.forEach((k, i) => bySeq.set(k as number, feed[i]));
  if (bySeq.size !== regs.length) bad.push(`feed: ${bySeq.size} entries for ${regs.length} registers`);
  const same = (a: RegisterKey, b: RegisterKey) => a.every((x, i) => x === b[i]);
  for (const r of regs) {
    const f = bySeq.get(r.seq);
    const key: RegisterKey = [r.point.node, r.point.parent, r.point.type, r.point.key];
    if (!f || !same(f.reg, key)) bad.push(`feed: change ${r.seq} does not name register ${JSON.stringify(key)}`);
    if (r.seq > (seq as number)) bad.push(`feed: register ${JSON.stringify(key)} at change ${r.seq}, beyond the last ${seq}`);
  }
  return bad;
}
