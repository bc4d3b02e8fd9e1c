// The store's records as IndexedDB holds them (index.ts describes the
// layout): a node's registers split over parts, and the tree records kept
// as a snapshot and the deltas written since. Pure functions and types;
// store.ts does the reading and writing.

import type { Digest } from "../crdt/digest.ts";
import type { Point } from "../crdt/point.ts";
import { edgeKey } from "../crdt/tree.ts";

/** One register in its node's record: the winner and the change number it arrived with. */
export interface RegisterRecord {
  point: Point;
  seq: number;
  /** The change was written here (source ""): the feed holds it under seq until the register changes again. */
  local?: true;
}

/**
 * A part of a node's registers as IndexedDB holds it: column by column,
 * in registerOrder, the node left out (it is in the record's key) and
 * each origin once: a structured clone of a few arrays writes no field
 * names. (Typed arrays cost more than plain ones here: most records hold
 * a few registers, and each typed array is a buffer of its own.)
 */
export interface StoredPart {
  parent: string[];
  type: string[];
  key: string[];
  text: string[];
  value: number[];
  time: bigint[];
  seq: number[];
  /** partTombstone, partLocal. */
  flags: number[];
  /** Register i's origin is origins[origin[i]]. */
  origins: string[];
  origin: number[];
}

/** StoredPart flags. */
export const partTombstone = 1, partLocal = 2;

/** The stored form of regs, the registers of one part of a node, in registerOrder. */
export function encodePart(regs: readonly RegisterRecord[]): StoredPart {
  const n = regs.length;
  const s: StoredPart = {
    parent: new Array(n), type: new Array(n), key: new Array(n), text: new Array(n),
    value: new Array(n), time: new Array(n), seq: new Array(n), flags: new Array(n),
    origins: [], origin: new Array(n),
  };
  const origins = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = regs[i], p = r.point;
    s.parent[i] = p.parent;
    s.type[i] = p.type;
    s.key[i] = p.key;
    s.text[i] = p.text;
    s.value[i] = p.value;
    s.time[i] = p.time;
    s.seq[i] = r.seq;
    s.flags[i] = (p.tombstone ? partTombstone : 0) | (r.local ? partLocal : 0);
    let o = origins.get(p.origin);
    if (o === undefined) {
      o = s.origins.length;
      s.origins.push(p.origin);
      origins.set(p.origin, o);
    }
    s.origin[i] = o;
  }
  return s;
}

/** The registers of a stored part of node (none for a missing record). */
export function decodePart(node: string, s: StoredPart | undefined): RegisterRecord[] {
  if (!s) return [];
  const n = s.parent.length;
  const out: RegisterRecord[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const f = s.flags[i];
    const point: Point = {
      node, parent: s.parent[i], type: s.type[i], key: s.key[i], value: s.value[i], text: s.text[i],
      tombstone: (f & partTombstone) !== 0, time: s.time[i], origin: s.origins[s.origin[i]],
    };
    out[i] = f & partLocal ? { point, seq: s.seq[i], local: true } : { point, seq: s.seq[i] };
  }
  return out;
}

/**
 * A node's registers split over parts once one of them would hold more
 * than this many: a batch reads and writes only the parts its points fall
 * in, so a write to a node of any size clones at most about this many
 * registers each way (index.ts, "A node with many registers").
 */
export const partMax = 512;

/**
 * The part of a node of `parts` parts that holds register (parent, type,
 * key): 0 for a node of one part, else an FNV-1a hash of the three modulo
 * parts.
 */
export function partOf(parts: number, parent: string, type: string, key: string): number {
  if (parts <= 1) return 0;
  let h = 0x811c9dc5;
  const s = parent + "\n" + type + "\n" + key;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0) % parts;
}

/** How many parts hold n registers: 1 up to max, else the least power of two that leaves them half full. */
export function partsFor(n: number, max = partMax): number {
  if (n <= max) return 1;
  let p = 2;
  while (n / p > max / 2) p *= 2;
  return p;
}

/** Orders the registers of a record as the old key [node, parent, type, key] did: a node's own points (parent "") first. */
export function registerOrder(a: RegisterRecord, b: RegisterRecord): number {
  const x = a.point, y = b.point;
  if (x.parent !== y.parent) return x.parent < y.parent ? -1 : 1;
  if (x.type !== y.type) return x.type < y.type ? -1 : 1;
  return x.key < y.key ? -1 : x.key > y.key ? 1 : 0;
}

/** What the store keeps about one parent→child pair that has at least one edge point. */
export interface EdgeState {
  parent: string;
  child: string;
  /** A TypeEdge register exists; the next five fields are its summary. */
  hasReg: boolean;
  tombstone: boolean;
  moved: boolean;
  place: string;
  time: bigint;
  origin: string;
  /** The edge is part of the tree (the tree rules decided so). */
  active: boolean;
  /** The active state is not what the register alone says (crdt Decision). */
  irregular: boolean;
  /** The sum of the digests of the edge's points. */
  digest: Digest;
}

/** A node's digests. */
export interface NodeDigests {
  /** The sum of the digests of the node's own points, tombstones included. */
  own: Digest;
  /** own + Σ edge digests below + Σ sub of active children. */
  sub: Digest;
}

/**
 * What one write changed of the tree records, stored under the write's
 * gen: whole records, the later delta's winning. A node whose digests are
 * both zero, and a zero bucket, are gone.
 */
export interface TreeDelta {
  edges: EdgeState[];
  nodes: { id: string; own: Digest; sub: Digest }[];
  buckets: { parent: string; bucket: number; digest: Digest }[];
  /** Nodes whose registers were split over more parts: their new part count. */
  split: { id: string; parts: number }[];
}

/**
 * Every tree record as of write gen, column by column: strings once in
 * strs and referred to by index, numbers in typed arrays (one structured
 * clone of a few large arrays reads far faster than thousands of small
 * records). Digests are split into their high and low 64 bits.
 */
export interface TreeSnapshot {
  gen: number;
  strs: string[];
  /** A node: its ID; digests: own hi, own lo, sub hi, sub lo. */
  nodes: Uint32Array;
  nodeDigests: BigUint64Array;
  /** An edge: parent, child, place, origin; flags (edgeFlag); time, digest hi, digest lo. */
  edges: Uint32Array;
  edgeFlags: Uint8Array;
  edgeNums: BigUint64Array;
  /** A bucket: parent, bucket; digest hi, lo. */
  buckets: Uint32Array;
  bucketDigests: BigUint64Array;
  /** A node of more than one part: its ID, its part count. */
  split: Uint32Array;
}

const flagHasReg = 1, flagTombstone = 2, flagMoved = 4, flagActive = 8, flagIrregular = 16;
const low = (1n << 64n) - 1n;

/** The tree records held in memory (index.ts, "Memory"): loaded on open, updated after each commit. */
export class Mirror {
  /** The meta "gen" these records are as of; -1 before the first load. */
  gen = -1;
  edges = new Map<string, EdgeState>(); // edgeKey → state
  parents = new Map<string, Set<string>>(); // child → every parent with an edge state
  kids = new Map<string, Set<string>>(); // parent → every child with an edge state
  irregular = new Set<string>(); // edgeKeys
  nodes = new Map<string, NodeDigests>();
  buckets = new Map<string, Digest>(); // bucketKey → digest
  /** Nodes whose registers fill more than one part, with their part count. */
  split = new Map<string, number>();
  /** The gen of the stored snapshot (0: none), and the records in the deltas stored after it. */
  snapGen = 0;
  deltaRecords = 0;
  deltaEntries = 0;

  parentsOf(n: string): Iterable<string> {
    return this.parents.get(n) ?? [];
  }

  partsOf(n: string): number {
    return this.split.get(n) ?? 1;
  }

  addEdge(st: EdgeState): void {
    const k = edgeKey(st.parent, st.child);
    this.edges.set(k, st);
    let ps = this.parents.get(st.child);
    if (!ps) this.parents.set(st.child, (ps = new Set()));
    ps.add(st.parent);
    let ks = this.kids.get(st.parent);
    if (!ks) this.kids.set(st.parent, (ks = new Set()));
    ks.add(st.child);
    if (st.irregular) this.irregular.add(k);
    else this.irregular.delete(k);
  }

  setNode(id: string, d: NodeDigests): void {
    if (d.own === 0n && d.sub === 0n) this.nodes.delete(id);
    else this.nodes.set(id, d);
  }

  setBucket(k: string, d: Digest): void {
    if (d === 0n) this.buckets.delete(k);
    else this.buckets.set(k, d);
  }

  /** Applies a delta (store.ts writes one per write). */
  applyDelta(d: TreeDelta): void {
    for (const e of d.edges) this.addEdge(e);
    for (const n of d.nodes) this.setNode(n.id, { own: n.own, sub: n.sub });
    for (const b of d.buckets) this.setBucket(bucketKey(b.parent, b.bucket), b.digest);
    for (const s of d.split) this.split.set(s.id, s.parts);
  }

  /** How many records a snapshot of this holds. */
  size(): number {
    return this.edges.size + this.nodes.size + this.buckets.size;
  }

  /** The snapshot of these records, as of gen. */
  snapshot(): TreeSnapshot {
    const strs: string[] = [];
    const ix = new Map<string, number>();
    const s = (x: string): number => {
      let i = ix.get(x);
      if (i === undefined) {
        i = strs.length;
        strs.push(x);
        ix.set(x, i);
      }
      return i;
    };
    const nodes = new Uint32Array(this.nodes.size);
    const nodeDigests = new BigUint64Array(4 * this.nodes.size);
    let i = 0;
    for (const [id, d] of this.nodes) {
      nodes[i] = s(id);
      nodeDigests[4 * i] = d.own >> 64n;
      nodeDigests[4 * i + 1] = d.own & low;
      nodeDigests[4 * i + 2] = d.sub >> 64n;
      nodeDigests[4 * i + 3] = d.sub & low;
      i++;
    }
    const edges = new Uint32Array(4 * this.edges.size);
    const edgeFlags = new Uint8Array(this.edges.size);
    const edgeNums = new BigUint64Array(3 * this.edges.size);
    i = 0;
    for (const e of this.edges.values()) {
      edges[4 * i] = s(e.parent);
      edges[4 * i + 1] = s(e.child);
      edges[4 * i + 2] = s(e.place);
      edges[4 * i + 3] = s(e.origin);
      edgeFlags[i] =
        (e.hasReg ? flagHasReg : 0) | (e.tombstone ? flagTombstone : 0) | (e.moved ? flagMoved : 0) | (e.active ? flagActive : 0) | (e.irregular ? flagIrregular : 0);
      edgeNums[3 * i] = e.time;
      edgeNums[3 * i + 1] = e.digest >> 64n;
      edgeNums[3 * i + 2] = e.digest & low;
      i++;
    }
    const buckets = new Uint32Array(2 * this.buckets.size);
    const bucketDigests = new BigUint64Array(2 * this.buckets.size);
    i = 0;
    for (const [k, d] of this.buckets) {
      const j = k.lastIndexOf("/");
      buckets[2 * i] = s(k.slice(0, j));
      buckets[2 * i + 1] = Number(k.slice(j + 1));
      bucketDigests[2 * i] = d >> 64n;
      bucketDigests[2 * i + 1] = d & low;
      i++;
    }
    const split = new Uint32Array(2 * this.split.size);
    i = 0;
    for (const [id, p] of this.split) {
      split[2 * i] = s(id);
      split[2 * i + 1] = p;
      i++;
    }
    return { gen: this.gen, strs, nodes, nodeDigests, edges, edgeFlags, edgeNums, buckets, bucketDigests, split };
  }

  /** Loads a snapshot into this (empty) mirror. */
  loadSnapshot(t: TreeSnapshot): void {
    const { strs } = t;
    const d = t.nodeDigests;
    for (let i = 0; i < t.nodes.length; i++) {
      this.nodes.set(strs[t.nodes[i]], { own: (d[4 * i] << 64n) | d[4 * i + 1], sub: (d[4 * i + 2] << 64n) | d[4 * i + 3] });
    }
    const n = t.edgeNums;
    for (let i = 0; i < t.edgeFlags.length; i++) {
      const f = t.edgeFlags[i];
      this.addEdge({
        parent: strs[t.edges[4 * i]],
        child: strs[t.edges[4 * i + 1]],
        hasReg: (f & flagHasReg) !== 0,
        tombstone: (f & flagTombstone) !== 0,
        moved: (f & flagMoved) !== 0,
        place: strs[t.edges[4 * i + 2]],
        time: n[3 * i],
        origin: strs[t.edges[4 * i + 3]],
        active: (f & flagActive) !== 0,
        irregular: (f & flagIrregular) !== 0,
        digest: (n[3 * i + 1] << 64n) | n[3 * i + 2],
      });
    }
    for (let i = 0; i < t.buckets.length / 2; i++) {
      const bd = t.bucketDigests;
      this.buckets.set(bucketKey(strs[t.buckets[2 * i]], t.buckets[2 * i + 1]), (bd[2 * i] << 64n) | bd[2 * i + 1]);
    }
    for (let i = 0; i < t.split.length / 2; i++) this.split.set(strs[t.split[2 * i]], t.split[2 * i + 1]);
    this.snapGen = t.gen;
  }

  /**
   * Loads the records of the tree store, in key order (a snapshot under
   * 0, if any, then the deltas), into this (empty) mirror.
   */
  loadTree(records: readonly (TreeSnapshot | TreeDelta)[]): void {
    for (const r of records) {
      if (isSnapshot(r)) this.loadSnapshot(r);
      else this.addDelta(r);
    }
  }

  /** Applies a stored delta and counts it. */
  addDelta(d: TreeDelta): void {
    this.applyDelta(d);
    this.deltaRecords++;
    this.deltaEntries += deltaSize(d);
  }

  /**
   * Whether the deltas are worth folding into a new snapshot: opening
   * reads each delta's records as objects, several times slower a record
   * than a snapshot's columns, and a record changed by many writes is in
   * each of their deltas.
   */
  wantsSnapshot(): boolean {
    return this.deltaRecords >= 1024 || this.deltaEntries >= 2048 + this.size() / 4;
  }
}

export function isSnapshot(r: TreeSnapshot | TreeDelta): r is TreeSnapshot {
  return (r as TreeSnapshot).strs !== undefined;
}

export function deltaSize(d: TreeDelta): number {
  return d.edges.length + d.nodes.length + d.buckets.length + d.split.length;
}

/** The bucket of child under a parent: the first byte of its ID. */
export function bucketOf(child: string): number {
  return parseInt(child.slice(0, 2), 16);
}

export function bucketKey(parent: string, b: number): string {
  return parent + "/" + b;
}
