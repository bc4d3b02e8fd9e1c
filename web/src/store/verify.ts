// verify: recomputes every derived record of a store from its registers
// alone and compares, and checks how the registers and the feed are filed. The slow, obviously correct twin of the incremental
// maintenance in store.ts; tests call it after random write sequences.

import { addDigest, digestHex, pointDigest, type Digest } from "../crdt/digest.ts";
import { isEdge, type Point } from "../crdt/point.ts";
import { resolvePlacements } from "../crdt/placement.ts";
import { edgeKey, edgeRegisterOf, type EdgeRegister } from "../crdt/tree.ts";
import { getAll, req } from "./idb.ts";
import {
  bucketOf, decodePart, isSnapshot, Mirror, partOf, registerOrder,
  type NodeDigests, type RegisterRecord, type StoredPart, type TreeDelta, type TreeSnapshot,
} from "./layout.ts";
import { Stores, type FeedRecord, type RegisterKey, type Store } from "./store.ts";

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

/** Every register winner the store holds, by node, parent, type and key. It reads the whole database. */
export async function allPoints(s: Store): Promise<Point[]> {
  const tx = s.database().transaction([Stores.registers], "readonly");
  const [keys, recs] = await Promise.all([req(tx.objectStore(Stores.registers).getAllKeys()), getAll<StoredPart>(tx.objectStore(Stores.registers))]);
  return recs.flatMap((s, i) => decodePart((keys[i] as [string, number])[0], s)).sort(registerOrder).map((r) => r.point);
}

/**
 * verify reads the whole database in one transaction, recomputes what the
 * registers say (derive) and returns every difference with the stored
 * records and with the store's memory, every register filed in the wrong
 * record, and every inconsistency of the change feed, as readable lines.
 * An empty list: the store is consistent.
 */
export async function verify(s: Store): Promise<string[]> {
  const db = s.database();
  const tx = db.transaction(Object.values(Stores), "readonly");
  const store = (n: string) => tx.objectStore(n);
  const [regKeys, regRecs, feedKeys, feed, treeKeys, tree, seq, gen, snap] = await Promise.all([
    req(store(Stores.registers).getAllKeys()),
    getAll<StoredPart>(store(Stores.registers)),
    req(store(Stores.feed).getAllKeys()),
    getAll<FeedRecord>(store(Stores.feed)),
    req(store(Stores.tree).getAllKeys()),
    getAll<TreeSnapshot | TreeDelta>(store(Stores.tree)),
    req(store(Stores.meta).get("seq")) as Promise<number>,
    req(store(Stores.meta).get("gen")) as Promise<number>,
    req(store(Stores.meta).get("snap")) as Promise<number>,
  ]);
  const bad: string[] = [];
  const hex = (d: Digest | undefined) => (d === undefined ? "none" : digestHex(d));

  // The tree records as stored: the snapshot, then the deltas after it.
  const st = new Mirror();
  st.loadTree(tree);
  tree.forEach((r, i) => {
    const k = treeKeys[i] as number;
    if (isSnapshot(r) !== (k === 0)) bad.push(`tree: record ${k} is ${isSnapshot(r) ? "a snapshot" : "a delta"}`);
    else if (isSnapshot(r) && r.gen !== snap) bad.push(`tree: snapshot of write ${r.gen}, meta says ${snap}`);
    else if (!isSnapshot(r) && (k <= snap || k > gen)) bad.push(`tree: delta of write ${k} outside (${snap}, ${gen}]`);
  });

  // Each register in the record its node's part count names, each record in order.
  const regs: RegisterRecord[] = [];
  regRecs.forEach((stored, i) => {
    const [node, part] = regKeys[i] as [string, number];
    const rs = decodePart(node, stored);
    const parts = st.partsOf(node);
    if (part >= parts) bad.push(`registers: node ${node} part ${part} of ${parts}`);
    rs.forEach((r, j) => {
      const p = r.point;
      if (p.node !== node || partOf(parts, p.parent, p.type, p.key) !== part) {
        bad.push(`registers: ${JSON.stringify([p.node, p.parent, p.type, p.key])} filed under node ${node} part ${part}`);
      }
      if (j > 0 && registerOrder(rs[j - 1], r) >= 0) bad.push(`registers: node ${node} part ${part} out of order at ${j}`);
      regs.push(r);
    });
  });
  const want = derive(regs.map((r) => r.point));

  // Node digests: stored, in memory, recomputed.
  const stored = st.nodes;
  const mem = s.memory();
  for (const n of new Set([...stored.keys(), ...want.nodes.keys(), ...mem.nodes.keys()])) {
    const w = want.nodes.get(n), g = stored.get(n), m = mem.nodes.get(n);
    for (const f of ["own", "sub"] as const) {
      if (w?.[f] !== g?.[f]) bad.push(`node ${n} ${f}: stored ${hex(g?.[f])}, recomputed ${hex(w?.[f])}`);
      if (m?.[f] !== g?.[f]) bad.push(`node ${n} ${f}: in memory ${hex(m?.[f])}, stored ${hex(g?.[f])}`);
    }
  }
  // Buckets.
  const sb = st.buckets;
  for (const k of new Set([...sb.keys(), ...want.buckets.keys(), ...mem.buckets.keys()])) {
    if (sb.get(k) !== want.buckets.get(k)) bad.push(`bucket ${k}: stored ${hex(sb.get(k))}, recomputed ${hex(want.buckets.get(k))}`);
    if (sb.get(k) !== mem.buckets.get(k)) bad.push(`bucket ${k}: in memory ${hex(mem.buckets.get(k))}, stored ${hex(sb.get(k))}`);
  }
  // Edge states.
  const se = st.edges;
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
  // Part counts.
  for (const n of new Set([...st.split.keys(), ...mem.split.keys()])) {
    if (st.split.get(n) !== mem.split.get(n)) bad.push(`node ${n}: ${st.split.get(n) ?? 1} parts stored, ${mem.split.get(n) ?? 1} in memory`);
  }
  // The change feed: each local register once, at its change number, none beyond the last.
  const bySeq = new Map<number, FeedRecord>();
  feedKeys.forEach((k, i) => bySeq.set(k as number, feed[i]));
  const local = regs.filter((r) => r.local);
  if (bySeq.size !== local.length) bad.push(`feed: ${bySeq.size} entries for ${local.length} local registers`);
  const same = (a: RegisterKey, b: RegisterKey) => a.every((x, i) => x === b[i]);
  for (const r of regs) {
    const key: RegisterKey = [r.point.node, r.point.parent, r.point.type, r.point.key];
    if (r.seq > seq) bad.push(`register ${JSON.stringify(key)} at change ${r.seq}, beyond the last ${seq}`);
    if (!r.local) continue;
    const f = bySeq.get(r.seq);
    if (!f || !same(f.reg, key)) bad.push(`feed: change ${r.seq} does not name register ${JSON.stringify(key)}`);
  }
  return bad;
}
