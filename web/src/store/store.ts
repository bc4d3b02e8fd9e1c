// The browser replica's store: a user's scope in IndexedDB. See index.ts
// for the layout and the digest algebra.

import { addDigest, pointDigest, subDigest, type Digest } from "../crdt/digest.ts";
import type { Clock } from "../crdt/hlc.ts";
import { compare } from "../crdt/lww.ts";
import { isEdge, normalize, NilUUID, TypeEdge, validate, type Point } from "../crdt/point.ts";
import { randomID } from "../crdt/ids.ts";
import { resolveRegion, type TreeRegion } from "../crdt/region.ts";
import { edgeFromKey, edgeKey, edgeRegisterOf, type EdgeRegister } from "../crdt/tree.ts";
import { abortQuietly, done, getAll, req } from "./idb.ts";

/** The layout version, kept in meta "format" and checked on open. */
export const formatVersion = 1;
const dbVersion = 1;

/** The object stores (index.ts describes their keys and values). */
export const Stores = {
  meta: "meta",
  registers: "registers",
  feed: "feed",
  edges: "edges",
  nodes: "nodes",
  buckets: "buckets",
  links: "links",
} as const;
const all = Object.values(Stores);

/** A register's key: node, parent ("" for a node point), type, key. */
export type RegisterKey = [string, string, string, string];

/** What the registers store holds: the winner and the change number it arrived with. */
export interface RegisterRecord {
  point: Point;
  seq: number;
}

/** What the feed store holds under a change number. */
export interface FeedRecord {
  reg: RegisterKey;
  /** The instance the change was received from; "" for a local write. */
  source: string;
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

/** One edge below a node with the digests a repair compares (Go's store.ChildDigest). */
export interface ChildDigest {
  id: string;
  /** The edge is part of the tree. */
  active: boolean;
  /** The sum of the edge's points. */
  edge: Digest;
  /** The child's own and subtree digests (zero when the store knows nothing of it). */
  own: Digest;
  sub: Digest;
}

/** What the store keeps about a link to one remote instance. */
export interface LinkState {
  remote: string;
  /** The local change number up to which the remote has acknowledged this store's feed. */
  acked: number;
  /** The remote's change number up to which this store holds the remote's feed. */
  received: number;
}

/** One entry of the change feed. */
export interface Change {
  seq: number;
  /** The instance the change was received from; "" for a local write. */
  source: string;
  /** The register's current winner. */
  point: Point;
}

/** What apply did with a batch. */
export interface ApplyResult {
  /** One entry per point of the batch, in order. */
  outcomes: ("applied" | "stale")[];
  applied: number;
  stale: number;
  /** The points that won their register, normalized, in batch order. */
  changes: Point[];
  /** The change number of changes[0] (changes[i] is firstSeq + i); 0 when nothing changed. */
  firstSeq: number;
}

/** Qualifies a batch for apply. */
export interface ApplyOptions {
  /** The instance the batch was received from; "" (the default) for a local write. */
  source?: string;
  /** Sets the link's received mark in the same transaction as the points. */
  received?: { remote: string; seq: number };
}

/** A node as get reports it. */
export interface NodeView {
  node: string;
  /** The node's own points, by type and key. */
  points: Point[];
  /** The edges above it, by parent: their points and whether they are active. */
  parents: { parent: string; active: boolean; points: Point[] }[];
}

/** One edge below a node, as children reports it. */
export interface ChildView {
  id: string;
  active: boolean;
  /** The child's nodeType and description texts ("" when absent or deleted). */
  nodeType: string;
  description: string;
}

/** A batch that breaks the data contract; nothing of it was written. */
export class InvalidBatchError extends Error {
  readonly index: number;
  constructor(index: number, cause: unknown, why?: string) {
    super(`store: invalid batch: point ${index}: ${why ?? (cause instanceof Error ? cause.message : String(cause))}`, { cause });
    this.name = "InvalidBatchError";
    this.index = index;
  }
}

/** The store was closed, or its database was opened by a newer layout. */
export class StoreClosedError extends Error {
  constructor(why = "closed") {
    super(`store: ${why}`);
    this.name = "StoreClosedError";
  }
}

/** Options of openStore. */
export interface OpenOptions {
  /**
   * The instance ID of a new database (the origin of local writes).
   * Absent: a random one. A database that has one keeps it; giving
   * another is an error.
   */
  instance?: string;
  /**
   * The IDBKeyRange constructor of the same implementation as the factory
   * (globalThis.IDBKeyRange by default; tests pass fake-indexeddb's).
   */
  keyRange?: typeof IDBKeyRange;
}

/**
 * Opens (creating when needed) the store in IndexedDB database `name` of
 * idb (globalThis.indexedDB by default; tests pass fake-indexeddb's). It
 * loads the tree's records (edge states, node and bucket digests) into
 * memory: resolving the tree rules is synchronous, IndexedDB is not.
 */
export async function openStore(name: string, idb: IDBFactory = globalThis.indexedDB, opts: OpenOptions = {}): Promise<Store> {
  if (!idb) throw new TypeError("store: no IndexedDB factory");
  const keyRange = opts.keyRange ?? globalThis.IDBKeyRange;
  if (!keyRange) throw new TypeError("store: no IDBKeyRange");
  const open = idb.open(name, dbVersion);
  open.onupgradeneeded = () => {
    const db = open.result;
    for (const s of all) if (!db.objectStoreNames.contains(s)) db.createObjectStore(s);
  };
  const db = await req(open);
  try {
    const tx = db.transaction([Stores.meta], "readwrite");
    const fin = done(tx);
    const meta = tx.objectStore(Stores.meta);
    const [fmt, inst] = await Promise.all([req(meta.get("format")), req(meta.get("instance"))]);
    if (fmt !== undefined && fmt !== formatVersion) {
      abortQuietly(tx);
      throw new StoreClosedError(`database ${name} has layout ${fmt}, this code reads ${formatVersion}`);
    }
    let instance = inst as string | undefined;
    if (instance !== undefined && opts.instance !== undefined && opts.instance !== instance) {
      abortQuietly(tx);
      throw new Error(`store: database ${name} belongs to instance ${instance}, not ${opts.instance}`);
    }
    if (instance === undefined) {
      instance = opts.instance ?? randomID();
      meta.put(formatVersion, "format");
      meta.put(instance, "instance");
      meta.put(0, "seq");
      meta.put(0, "gen");
      meta.put(0n, "maxTime");
    }
    await fin;
    const s = new Store(db, name, instance, keyRange);
    await s.reload();
    return s;
  } catch (e) {
    db.close();
    throw e;
  }
}

/** The committed tree records, held in memory (see index.ts, "Memory"). */
class Mirror {
  gen = -1;
  edges = new Map<string, EdgeState>(); // edgeKey → state
  parents = new Map<string, Set<string>>(); // child → every parent with an edge state
  kids = new Map<string, Set<string>>(); // parent → every child with an edge state
  irregular = new Set<string>(); // edgeKeys
  nodes = new Map<string, NodeDigests>();
  buckets = new Map<string, Digest>(); // bucketKey → digest

  parentsOf(n: string): Iterable<string> {
    return this.parents.get(n) ?? [];
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
}

/** The bucket of child under a parent: the first byte of its ID. */
export function bucketOf(child: string): number {
  return parseInt(child.slice(0, 2), 16);
}

function bucketKey(parent: string, b: number): string {
  return parent + "/" + b;
}

function regKey(p: Point): RegisterKey {
  return [p.node, p.parent, p.type, p.key];
}

/**
 * The browser replica's store. One writer at a time: apply, writeLocal
 * and setLink calls are queued and run one after another; reads run
 * concurrently, each in its own IndexedDB transaction (a consistent
 * snapshot). Another tab writing the same database is noticed (meta
 * "gen") and the tree records are reloaded before the next write.
 */
export class Store {
  readonly name: string;
  /** This replica's instance ID: the origin of its local writes. */
  readonly instance: string;
  private db: IDBDatabase | null;
  private mirror = new Mirror();
  private queue: Promise<unknown> = Promise.resolve();
  private maxTimeSeen = 0n;
  private readonly kr: typeof IDBKeyRange;
  private commitFns = new Set<(res: ApplyResult, source: string) => void>();
  private counts: { gen: number; by: Map<string, { live: number; gone: number }> } | undefined;

  /** Use openStore. */
  constructor(db: IDBDatabase, name: string, instance: string, keyRange: typeof IDBKeyRange) {
    this.db = db;
    this.kr = keyRange;
    this.name = name;
    this.instance = instance;
  }

  /** Closes the database; later calls throw StoreClosedError. Pending writes finish first. */
  async close(): Promise<void> {
    await this.queue.catch(() => {});
    this.db?.close();
    this.db = null;
  }

  private tx(stores: string[], mode: IDBTransactionMode): IDBTransaction {
    if (!this.db) throw new StoreClosedError();
    return this.db.transaction(stores, mode);
  }

  /** Runs fn after every write queued before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => {});
    return p;
  }

  /** Loads the tree records into memory (on open, and after another tab wrote). */
  async reload(): Promise<void> {
    const tx = this.tx([Stores.meta, Stores.edges, Stores.nodes, Stores.buckets], "readonly");
    const [gen, maxTime, edges, nodeKeys, nodeVals, bucketKeys, bucketVals] = await Promise.all([
      req(tx.objectStore(Stores.meta).get("gen")),
      req(tx.objectStore(Stores.meta).get("maxTime")),
      getAll<EdgeState>(tx.objectStore(Stores.edges)),
      req(tx.objectStore(Stores.nodes).getAllKeys()),
      getAll<NodeDigests>(tx.objectStore(Stores.nodes)),
      req(tx.objectStore(Stores.buckets).getAllKeys()),
      getAll<Digest>(tx.objectStore(Stores.buckets)),
    ]);
    const m = new Mirror();
    m.gen = gen as number;
    for (const st of edges) m.addEdge(st);
    nodeKeys.forEach((k, i) => m.nodes.set(k as string, nodeVals[i]));
    bucketKeys.forEach((k, i) => {
      const [p, b] = k as [string, number];
      m.buckets.set(bucketKey(p, b), bucketVals[i]);
    });
    this.mirror = m;
    this.maxTimeSeen = maxTime as bigint;
  }

  /**
   * Merges a batch of stamped points into their registers, in one
   * IndexedDB transaction: either all of it is written or nothing is.
   * Each point is normalized and validated first; an invalid or unstamped
   * point refuses the whole batch with an InvalidBatchError naming its
   * index, before anything is read or written. Digests, the tree's active
   * edges and the change feed are updated in the same transaction.
   */
  apply(points: readonly Point[], opts: ApplyOptions = {}): Promise<ApplyResult> {
    let batch: Point[];
    try {
      batch = points.map((p, i) => checkPoint(p, i));
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serial(() => this.applyNow(batch, opts, true));
  }

  /**
   * Stamps and applies local writes: a point whose time is 0n gets a new
   * timestamp of clock, one whose origin is "" gets this instance's ID.
   * With oneTime (a move: the new edge and the old edge's tombstone) every
   * point gets the same timestamp, and two points of one register are
   * refused. The clock is first raised past every timestamp the store
   * holds, so a reload with a fresh clock never stamps into the past.
   */
  writeLocal(points: readonly Point[], clock: Clock, opts: { oneTime?: boolean } = {}): Promise<ApplyResult> {
    return this.serial(async () => {
      clock.observe(this.maxTimeSeen);
      const seen = new Set<string>();
      let now = 0n;
      const stamped = points.map((p, i) => {
        if (opts.oneTime) {
          const k = JSON.stringify(regKey(normalizeParent(normalize(p))));
          if (seen.has(k)) throw new InvalidBatchError(i, null, "writes the register of an earlier point of one operation");
          seen.add(k);
        }
        let time = p.time;
        if (time === 0n) {
          if (now === 0n || !opts.oneTime) now = clock.now();
          time = now;
        }
        return checkPoint({ ...p, time, origin: p.origin === "" ? this.instance : p.origin }, i);
      });
      return this.applyNow(stamped, {}, true);
    });
  }

  private async applyNow(points: Point[], opts: ApplyOptions, retry: boolean): Promise<ApplyResult> {
    const tx = this.tx(all, "readwrite");
    const fin = done(tx);
    let b: Batch;
    let res: ApplyResult;
    let maxNext = 0n;
    try {
      const meta = tx.objectStore(Stores.meta);
      const regs = tx.objectStore(Stores.registers);
      const keys = new Map<string, RegisterKey>();
      for (const p of points) keys.set(JSON.stringify(regKey(p)), regKey(p));
      const ks = [...keys.keys()];
      const [gen, seq, maxTime, olds] = await Promise.all([
        req(meta.get("gen")),
        req(meta.get("seq")),
        req(meta.get("maxTime")),
        readRegisters(regs, this.kr, ks.map((k) => keys.get(k)!)),
      ]);
      if (gen !== this.mirror.gen) {
        // Another tab wrote: the tree records in memory are stale.
        abortQuietly(tx);
        await fin.catch(() => {});
        if (!retry) throw new Error("store: the database keeps changing under this tab");
        await this.reload();
        return this.applyNow(points, opts, false);
      }
      b = new Batch(this.mirror, seq as number);
      ks.forEach((k, i) => b.regs.set(k, { key: keys.get(k)!, old: olds[i], cur: olds[i]?.point, seq: 0 }));
      res = b.merge(points);
      b.resolveTree();
      b.updateDigests();
      let max = maxTime as bigint;
      for (const p of res.changes) if (p.time > max) max = p.time;
      b.flush(tx, opts.source ?? "");
      meta.put(b.seq, "seq");
      meta.put(max, "maxTime");
      meta.put((gen as number) + 1, "gen");
      if (opts.received) {
        const links = tx.objectStore(Stores.links);
        const cur = (await req(links.get(opts.received.remote))) as LinkState | undefined;
        links.put({ remote: opts.received.remote, acked: cur?.acked ?? 0, received: opts.received.seq }, opts.received.remote);
      }
      maxNext = max;
    } catch (e) {
      abortQuietly(tx);
      throw e;
    }
    await fin;
    b.remember(this.mirror);
    this.mirror.gen++;
    this.maxTimeSeen = maxNext;
    for (const fn of this.commitFns) {
      try {
        fn(res, opts.source ?? "");
      } catch {
        // a listener's failure is not the write's
      }
    }
    return res;
  }

  /** The greatest timestamp the store holds (0n when empty). */
  maxTime(): bigint {
    return this.maxTimeSeen;
  }

  /** The last change number assigned (0 when nothing was written). */
  async lastSeq(): Promise<number> {
    const tx = this.tx([Stores.meta], "readonly");
    return (await req(tx.objectStore(Stores.meta).get("seq"))) as number;
  }

  /** Node n's own points and the edges above it with their points. */
  async get(node: string): Promise<NodeView> {
    const tx = this.tx([Stores.registers, Stores.edges], "readonly");
    const recs = await getAll<RegisterRecord>(tx.objectStore(Stores.registers), this.kr.bound([node], [node, []]));
    const view: NodeView = { node, points: [], parents: [] };
    const byParent = new Map<string, Point[]>();
    for (const r of recs) {
      if (r.point.parent === "") view.points.push(r.point);
      else {
        let ps = byParent.get(r.point.parent);
        if (!ps) byParent.set(r.point.parent, (ps = []));
        ps.push(r.point);
      }
    }
    const states = await Promise.all(
      [...byParent.keys()].map((p) => req(tx.objectStore(Stores.edges).get([p, node])) as Promise<EdgeState | undefined>),
    );
    [...byParent].forEach(([parent, points], i) => view.parents.push({ parent, active: states[i]?.active ?? false, points }));
    return view;
  }

  /** The edges below node, live or not, in child ID order, with the children's labels. */
  async children(node: string): Promise<ChildView[]> {
    const tx = this.tx([Stores.registers, Stores.edges], "readonly");
    const edges = await getAll<EdgeState>(tx.objectStore(Stores.edges), this.kr.bound([node], [node, []]));
    const regs = tx.objectStore(Stores.registers);
    const label = async (child: string, type: string) => {
      const r = (await req(regs.get([child, "", type, "0"]))) as RegisterRecord | undefined;
      return r && !r.point.tombstone ? r.point.text : "";
    };
    return Promise.all(
      edges.map(async (e) => ({
        id: e.child,
        active: e.active,
        nodeType: await label(e.child, "nodeType"),
        description: await label(e.child, "description"),
      })),
    );
  }

  /**
   * Up to limit changes after change number after, in commit order, each
   * register once at its latest change, with its current winner.
   */
  async changesSince(after: number, limit = Infinity): Promise<Change[]> {
    const tx = this.tx([Stores.feed, Stores.registers], "readonly");
    const feed = tx.objectStore(Stores.feed);
    const range = this.kr.lowerBound(after, true);
    const n = Number.isFinite(limit) ? limit : undefined;
    const [seqs, wanted] = await Promise.all([req(feed.getAllKeys(range, n)), req(feed.getAll(range, n)) as Promise<FeedRecord[]>]);
    const regs = tx.objectStore(Stores.registers);
    const winners = await Promise.all(wanted.map((f) => req(regs.get(f.reg)) as Promise<RegisterRecord | undefined>));
    return wanted.map((f, i) => {
      const w = winners[i];
      if (!w) throw new Error(`store: corrupt: change ${seqs[i]} names a missing register`);
      return { seq: seqs[i] as number, source: f.source, point: w.point };
    });
  }

  /**
   * The changes a link must still send to remote: those after its acked
   * mark that did not come from remote (local writes made offline, and
   * changes received from other links).
   */
  async pending(remote: string, limit = Infinity): Promise<Change[]> {
    const l = await this.link(remote);
    const out: Change[] = [];
    let after = l.acked;
    for (;;) {
      const page = await this.changesSince(after, 1024);
      for (const c of page) {
        if (c.source !== remote) out.push(c);
        if (out.length >= limit) return out;
      }
      if (page.length < 1024) return out;
      after = page[page.length - 1].seq;
    }
  }

  /** The link state of remote; zero marks when never set. */
  async link(remote: string): Promise<LinkState> {
    const tx = this.tx([Stores.links], "readonly");
    const l = (await req(tx.objectStore(Stores.links).get(remote))) as LinkState | undefined;
    return l ?? { remote, acked: 0, received: 0 };
  }

  /** Every link state, by remote. */
  async links(): Promise<LinkState[]> {
    const tx = this.tx([Stores.links], "readonly");
    return getAll<LinkState>(tx.objectStore(Stores.links));
  }

  /**
   * Moves remote's marks forward: a mark below the stored one is kept as
   * it is (an acknowledgement that arrives late never resends what was
   * acknowledged). acked beyond lastSeq() is refused.
   */
  setLink(remote: string, marks: { acked?: number; received?: number }): Promise<LinkState> {
    return this.serial(async () => {
      const tx = this.tx([Stores.links, Stores.meta], "readwrite");
      const fin = done(tx);
      const links = tx.objectStore(Stores.links);
      const [cur, seq] = await Promise.all([
        req(links.get(remote)) as Promise<LinkState | undefined>,
        req(tx.objectStore(Stores.meta).get("seq")) as Promise<number>,
      ]);
      if (marks.acked !== undefined && marks.acked > seq) {
        abortQuietly(tx);
        throw new RangeError(`store: link ${remote}: acked ${marks.acked} beyond the last change ${seq}`);
      }
      const next: LinkState = {
        remote,
        acked: Math.max(cur?.acked ?? 0, marks.acked ?? 0),
        received: Math.max(cur?.received ?? 0, marks.received ?? 0),
      };
      links.put(next, remote);
      await fin;
      return next;
    });
  }

  /** Node n's digests (zero for a node the store knows nothing about). */
  nodeDigest(n: string): NodeDigests {
    return this.mirror.nodes.get(n) ?? { own: 0n, sub: 0n };
  }

  /** The non-empty child buckets of parent with their digests, by bucket. */
  buckets(parent: string): { bucket: number; digest: Digest }[] {
    const out: { bucket: number; digest: Digest }[] = [];
    for (let b = 0; b < 256; b++) {
      const d = this.mirror.buckets.get(bucketKey(parent, b));
      if (d !== undefined) out.push({ bucket: b, digest: d });
    }
    return out;
  }

  /**
   * The edges below parent, live or not, in child ID order, with the
   * digests repair compares: all of them, or those in child bucket
   * bucket (bucketOf) when it is 0 to 255. From memory, as of the last
   * committed write; the records are copies.
   */
  childDigests(parent: string, bucket = -1): ChildDigest[] {
    const out: ChildDigest[] = [];
    for (const child of this.mirror.kids.get(parent) ?? []) {
      if (bucket >= 0 && bucketOf(child) !== bucket) continue;
      const st = this.mirror.edges.get(edgeKey(parent, child));
      if (!st) continue;
      const d = this.nodeDigest(child);
      out.push({ id: child, active: st.active, edge: st.digest, own: d.own, sub: d.sub });
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Node n's own points (not the edges above it), by type and key, in one read. */
  async nodePoints(n: string): Promise<Point[]> {
    const tx = this.tx([Stores.registers], "readonly");
    const recs = await getAll<RegisterRecord>(tx.objectStore(Stores.registers), this.kr.bound([n, ""], [n, "", []]));
    return recs.map((r) => r.point);
  }

  /** The committed edge state parent→child, if any edge point exists. */
  edge(parent: string, child: string): EdgeState | undefined {
    return this.mirror.edges.get(edgeKey(parent, child));
  }

  /**
   * Calls fn after each write this store object commits (not another
   * tab's: see index.ts, "Writers"), with what changed and the instance
   * the batch came from ("" for a local write). A listener's failure is
   * not the write's. Returns a function that stops it.
   */
  onCommit(fn: (res: ApplyResult, source: string) => void): () => void {
    this.commitFns.add(fn);
    return () => this.commitFns.delete(fn);
  }

  /**
   * How many children each parent has over live edges and over edges that
   * are not (deleted, moved away), from the tree records in memory.
   */
  childCounts(): ReadonlyMap<string, { live: number; gone: number }> {
    if (this.counts && this.counts.gen === this.mirror.gen) return this.counts.by;
    const by = new Map<string, { live: number; gone: number }>();
    for (const e of this.mirror.edges.values()) {
      let c = by.get(e.parent);
      if (!c) by.set(e.parent, (c = { live: 0, gone: 0 }));
      if (e.active) c.live++;
      else c.gone++;
    }
    this.counts = { gen: this.mirror.gen, by };
    return by;
  }

  /** The parents of node over live edges, from the tree records in memory. */
  liveParents(node: string): string[] {
    return [...this.mirror.parentsOf(node)].filter((p) => this.mirror.edges.get(edgeKey(p, node))?.active);
  }

  /** For verify: the database, open. */
  database(): IDBDatabase {
    if (!this.db) throw new StoreClosedError();
    return this.db;
  }

  /** For verify: the tree records in memory. */
  memory(): { edges: ReadonlyMap<string, EdgeState>; nodes: ReadonlyMap<string, NodeDigests>; buckets: ReadonlyMap<string, Digest> } {
    return this.mirror;
  }
}

/**
 * Reads the registers of keys, in order, in the transaction of regs. Keys
 * that share a node and a parent (a batch usually writes several registers
 * of a node) are read with one getAll over that prefix instead of a get
 * each: each IndexedDB request costs far more than the few records it
 * returns (BENCHMARKS.md, "browser replica"). The getAll is bounded; a
 * prefix that holds more registers than that is read a key at a time.
 */
async function readRegisters(regs: IDBObjectStore, kr: typeof IDBKeyRange, keys: RegisterKey[]): Promise<(RegisterRecord | undefined)[]> {
  const byPrefix = new Map<string, number[]>();
  keys.forEach((k, i) => {
    const pk = JSON.stringify([k[0], k[1]]);
    const is = byPrefix.get(pk);
    if (is) is.push(i);
    else byPrefix.set(pk, [i]);
  });
  const out: (RegisterRecord | undefined)[] = new Array(keys.length);
  const one = async (i: number) => {
    out[i] = (await req(regs.get(keys[i]))) as RegisterRecord | undefined;
  };
  await Promise.all(
    [...byPrefix.values()].map(async (is) => {
      if (is.length < 2) return one(is[0]);
      const [node, parent] = keys[is[0]];
      const limit = 4 * is.length + 16;
      const recs = await getAll<RegisterRecord>(regs, kr.bound([node, parent], [node, parent, []]), limit);
      if (recs.length >= limit) return Promise.all(is.map(one));
      const held = new Map<string, RegisterRecord>();
      for (const r of recs) held.set(r.point.type + "\0" + r.point.key, r);
      for (const i of is) out[i] = held.get(keys[i][2] + "\0" + keys[i][3]);
    }),
  );
  return out;
}

function normalizeParent(p: Point): Point {
  return p.parent === NilUUID ? { ...p, parent: "" } : p;
}

function checkPoint(p: Point, i: number): Point {
  const q = normalizeParent(normalize(p));
  try {
    validate(q);
  } catch (e) {
    throw new InvalidBatchError(i, e);
  }
  return q === p ? { ...p } : q;
}

interface RegState {
  key: RegisterKey;
  old: RegisterRecord | undefined;
  cur: Point | undefined;
  /** cur's change number when the batch changed it; 0: unchanged. */
  seq: number;
}

/**
 * The working state of one apply: the registers it read and the tree
 * records it changes, as copies of the committed ones (the mirror is
 * updated by remember, after the commit).
 */
class Batch {
  readonly m: Mirror;
  seq: number;
  regs = new Map<string, RegState>();
  edges = new Map<string, EdgeState | null>();
  edgeDirty = new Set<string>();
  newParents = new Map<string, string[]>();
  nodes = new Map<string, NodeDigests>();
  buckets = new Map<string, Digest>();
  ownDelta = new Map<string, Digest>();
  edgeDelta = new Map<string, Digest>();
  regEdges = new Set<string>();
  flips = new Map<string, boolean>();

  constructor(m: Mirror, seq: number) {
    this.m = m;
    this.seq = seq;
  }

  merge(points: Point[]): ApplyResult {
    const res: ApplyResult = { outcomes: [], applied: 0, stale: 0, changes: [], firstSeq: 0 };
    for (const p of points) {
      const r = this.regs.get(JSON.stringify(regKey(p)))!;
      if (r.cur !== undefined && compare(p, r.cur) <= 0) {
        res.outcomes.push("stale");
        res.stale++;
        continue;
      }
      res.outcomes.push("applied");
      res.applied++;
      this.seq++;
      if (res.firstSeq === 0) res.firstSeq = this.seq;
      r.cur = p;
      r.seq = this.seq;
      res.changes.push(p);
      if (isEdge(p)) {
        const k = edgeKey(p.parent, p.node);
        const st = this.edge(k, true)!;
        this.edgeDirty.add(k);
        if (p.type === TypeEdge) {
          const reg = edgeRegisterOf(p);
          Object.assign(st, { hasReg: true, tombstone: reg.tombstone, moved: reg.moved, place: reg.place, time: reg.time, origin: reg.origin });
          this.regEdges.add(k);
        }
      }
    }
    // Each changed register adds digest(final winner) − digest(old winner)
    // to its node or edge.
    for (const r of this.regs.values()) {
      if (r.seq === 0) continue;
      const p = r.cur!;
      let d = pointDigest(p);
      if (r.old) d = subDigest(d, pointDigest(r.old.point));
      if (isEdge(p)) add(this.edgeDelta, edgeKey(p.parent, p.node), d);
      else add(this.ownDelta, p.node, d);
    }
    return res;
  }

  /** The working state of edge k; created when create is set and none exists. */
  edge(k: string, create: boolean): EdgeState | null {
    let st = this.edges.get(k);
    if (st === undefined) {
      const c = this.m.edges.get(k);
      st = c ? { ...c } : null;
      this.edges.set(k, st);
    }
    if (st === null && create) {
      const e = edgeFromKey(k);
      st = {
        parent: e.parent, child: e.child, hasReg: false, tombstone: false, moved: false, place: "",
        time: 0n, origin: "", active: false, irregular: false, digest: 0n,
      };
      this.edges.set(k, st);
      const ps = this.newParents.get(e.child) ?? [];
      ps.push(e.parent);
      this.newParents.set(e.child, ps);
    }
    return st;
  }

  allParents(n: string): string[] {
    return [...this.m.parentsOf(n), ...(this.newParents.get(n) ?? [])];
  }

  activeParents(n: string): string[] {
    return this.allParents(n).filter((p) => this.edge(edgeKey(p, n), false)?.active);
  }

  /**
   * Decides the active state of the edges into the nodes whose edge
   * registers changed and into the nodes of irregular edges (crdt
   * resolveRegion), recording the flips for updateDigests.
   */
  resolveTree(): void {
    if (this.regEdges.size === 0) return;
    const seeds = new Set<string>();
    for (const k of this.regEdges) seeds.add(edgeFromKey(k).child);
    for (const k of this.m.irregular) seeds.add(edgeFromKey(k).child);
    const view: TreeRegion = {
      into: (child) => {
        const out: EdgeRegister[] = [];
        for (const p of this.allParents(child)) {
          const st = this.edge(edgeKey(p, child), false);
          if (st?.hasReg) {
            out.push({ parent: p, child, tombstone: st.tombstone, moved: st.moved, place: st.place, time: st.time, origin: st.origin });
          }
        }
        return out;
      },
      activeParents: (child) => this.activeParents(child),
    };
    for (const [k, d] of resolveRegion(view, [...seeds])) {
      const st = this.edge(k, false);
      if (!st) continue;
      if (st.active !== d.active) this.flips.set(k, d.active);
      if (st.irregular !== d.irregular) {
        st.irregular = d.irregular;
        this.edgeDirty.add(k);
      }
    }
  }

  /**
   * Applies the digest deltas and the flips, keeping sub(n) = own(n) +
   * Σ edge(n→c) + Σ active sub(c) true at every step: the edges that turn
   * off (with the old subtree digests), the point deltas, then the edges
   * that turn on (with the new ones).
   */
  updateDigests(): void {
    const keys = [...this.flips.keys()].sort();
    for (const k of keys) {
      if (this.flips.get(k)) continue;
      const st = this.edge(k, false)!;
      st.active = false;
      this.edgeDirty.add(k);
      this.addBelow(st.parent, st.child, subDigest(0n, this.meta(st.child).sub));
    }
    for (const [n, d] of this.ownDelta) {
      const m = this.meta(n);
      m.own = addDigest(m.own, d);
      this.addSub(n, d);
    }
    for (const [k, d] of this.edgeDelta) {
      const st = this.edge(k, false)!;
      st.digest = addDigest(st.digest, d);
      this.edgeDirty.add(k);
      this.addBelow(st.parent, st.child, d);
    }
    for (const k of keys) {
      if (!this.flips.get(k)) continue;
      const st = this.edge(k, false)!;
      st.active = true;
      this.edgeDirty.add(k);
      this.addBelow(st.parent, st.child, this.meta(st.child).sub);
    }
  }

  meta(n: string): NodeDigests {
    let m = this.nodes.get(n);
    if (!m) {
      const c = this.m.nodes.get(n);
      m = c ? { ...c } : { own: 0n, sub: 0n };
      this.nodes.set(n, m);
    }
    return m;
  }

  /** Adds d to parent's subtree digest on behalf of child: to child's bucket, then upwards. */
  addBelow(parent: string, child: string, d: Digest): void {
    const bk = bucketKey(parent, bucketOf(child));
    this.buckets.set(bk, addDigest(this.buckets.get(bk) ?? this.m.buckets.get(bk) ?? 0n, d));
    this.addSub(parent, d);
  }

  /** Adds d to sub(n) and, through every active parent, to every ancestor's: once per path. */
  addSub(n: string, d: Digest): void {
    const m = this.meta(n);
    m.sub = addDigest(m.sub, d);
    for (const p of this.activeParents(n)) this.addBelow(p, n, d);
  }

  /** Writes every changed record into tx. */
  flush(tx: IDBTransaction, source: string): void {
    const regs = tx.objectStore(Stores.registers);
    const feed = tx.objectStore(Stores.feed);
    for (const r of this.regs.values()) {
      if (r.seq === 0) continue;
      if (r.old) feed.delete(r.old.seq);
      regs.put({ point: r.cur!, seq: r.seq } satisfies RegisterRecord, r.key);
      feed.put({ reg: r.key, source } satisfies FeedRecord, r.seq);
    }
    const nodes = tx.objectStore(Stores.nodes);
    for (const [n, m] of this.nodes) {
      if (m.own === 0n && m.sub === 0n) nodes.delete(n);
      else nodes.put(m, n);
    }
    const edges = tx.objectStore(Stores.edges);
    for (const k of this.edgeDirty) {
      const st = this.edges.get(k)!;
      edges.put(st, [st.parent, st.child]);
    }
    const buckets = tx.objectStore(Stores.buckets);
    for (const [k, d] of this.buckets) {
      const i = k.indexOf("/");
      const key = [k.slice(0, i), Number(k.slice(i + 1))];
      if (d === 0n) buckets.delete(key);
      else buckets.put(d, key);
    }
  }

  /** Records, after the commit, what the batch changed of the tree in the mirror. */
  remember(m: Mirror): void {
    for (const k of this.edgeDirty) m.addEdge(this.edges.get(k)!);
    for (const [n, d] of this.nodes) {
      if (d.own === 0n && d.sub === 0n) m.nodes.delete(n);
      else m.nodes.set(n, d);
    }
    for (const [k, d] of this.buckets) {
      if (d === 0n) m.buckets.delete(k);
      else m.buckets.set(k, d);
    }
  }
}

function add(m: Map<string, Digest>, k: string, d: Digest): void {
  m.set(k, addDigest(m.get(k) ?? 0n, d));
}
