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
import {
  bucketKey, bucketOf, decodePart, deltaSize, encodePart, Mirror, partMax, partOf, partsFor, partTombstone, registerOrder,
  type EdgeState, type NodeDigests, type RegisterRecord, type StoredPart, type TreeDelta,
} from "./layout.ts";

export { bucketOf, partMax, type EdgeState, type NodeDigests, type RegisterRecord, type StoredPart, type TreeDelta, type TreeSnapshot } from "./layout.ts";

/**
 * The layout version, kept in meta "format" and checked on open. 2: the
 * registers of a node in one record (or a few parts), feed entries for
 * local writes only, the tree records as a snapshot and deltas. Layout 1
 * was never released (index.ts, "Versions").
 */
export const formatVersion = 2;
/** The IndexedDB version: opening a database of an older one drops its object stores (index.ts, "Versions"). */
const dbVersion = 2;

/** The object stores (index.ts describes their keys and values). */
export const Stores = {
  meta: "meta",
  registers: "registers",
  feed: "feed",
  tree: "tree",
  links: "links",
} as const;
const all = Object.values(Stores);

/** A register's key: node, parent ("" for a node point), type, key. */
export type RegisterKey = [string, string, string, string];

/** What the feed store holds under a change number: the register a local write changed. */
export interface FeedRecord {
  reg: RegisterKey;
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

/** One entry of the change feed: a local write. */
export interface Change {
  seq: number;
  /** Always "": the feed holds local writes only (index.ts, "The feed"). */
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
  /**
   * The registers one part of a node may hold before a write splits the
   * node over more parts (partMax by default; Infinity keeps every node in
   * one record). Parts already split stay as they are, so it may differ
   * from one open to the next.
   */
  partMax?: number;
}

/**
 * Opens (creating when needed) the store in IndexedDB database `name` of
 * idb (globalThis.indexedDB by default; tests pass fake-indexeddb's). It
 * loads the tree's records (edge states, node and bucket digests: a
 * snapshot and the deltas after it) into memory: resolving the tree rules
 * is synchronous, IndexedDB is not. A
 * database of the unreleased layout 1 is emptied and starts again
 * (index.ts, "Versions"); one of a newer layout is refused with a
 * StoreClosedError.
 */
export async function openStore(name: string, idb: IDBFactory = globalThis.indexedDB, opts: OpenOptions = {}): Promise<Store> {
  if (!idb) throw new TypeError("store: no IndexedDB factory");
  const keyRange = opts.keyRange ?? globalThis.IDBKeyRange;
  if (!keyRange) throw new TypeError("store: no IDBKeyRange");
  const max = opts.partMax ?? partMax;
  if (max !== Infinity && !(Number.isInteger(max) && max >= 2)) throw new TypeError(`store: partMax ${max}: want an integer from 2, or Infinity`);
  const open = idb.open(name, dbVersion);
  open.onupgradeneeded = () => {
    const db = open.result;
    // Nothing older than this layout was released: an older database's
    // stores are dropped, never read in another layout.
    for (const s of Array.from(db.objectStoreNames)) db.deleteObjectStore(s);
    for (const s of all) db.createObjectStore(s);
  };
  let db: IDBDatabase;
  try {
    db = await req(open);
  } catch (e) {
    if ((e as { name?: string } | null)?.name === "VersionError") throw new StoreClosedError(`database ${name} has a newer layout than this code reads`);
    throw e;
  }
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
      meta.put(0, "snap");
      meta.put(0n, "maxTime");
    }
    await fin;
    const s = new Store(db, name, instance, keyRange, max);
    await s.load();
    return s;
  } catch (e) {
    db.close();
    throw e;
  }
}

function regKey(p: Point): RegisterKey {
  return [p.node, p.parent, p.type, p.key];
}

/** A register's key as one string: node, parent, type, key. */
function regStr(node: string, parent: string, type: string, key: string): string {
  return node + "\n" + parent + "\n" + type + "\n" + key;
}

/** The key of part `part` of node's registers. */
function partKey(node: string, part: number): [string, number] {
  return [node, part];
}

/** The index of register (parent, type, key) in a record sorted by registerOrder, or -1. */
function findRegister(regs: readonly RegisterRecord[], parent: string, type: string, key: string): number {
  let lo = 0, hi = regs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const p = regs[mid].point;
    const c = p.parent !== parent ? (p.parent < parent ? -1 : 1) : p.type !== type ? (p.type < type ? -1 : 1) : p.key < key ? -1 : p.key > key ? 1 : 0;
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

/** The index of register (parent, type, key) in a stored part (its columns in registerOrder), or -1. */
function findStored(s: StoredPart, parent: string, type: string, key: string): number {
  for (let i = 0; i < s.parent.length; i++) if (s.parent[i] === parent && s.type[i] === type && s.key[i] === key) return i;
  return -1;
}

/**
 * The browser replica's store. One writer at a time: apply, writeLocal,
 * setLink and reload calls are queued and run one after another; reads
 * run concurrently, each in its own IndexedDB transaction (a consistent
 * snapshot of the registers; what they say of the tree, active edges,
 * comes from memory, as of the last write or reload). Another tab writing
 * the same database is noticed (meta "gen") and the tree records are
 * brought up to date before the next write.
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
  private snapshotQueued = false;
  private readonly partMax: number;

  /** Use openStore. */
  /**
   * The nodes' labels (nodeType and description texts, "" when absent or
   * deleted; undefined: not known here), kept from this store's commits
   * and reads, so that listing children reads nothing from IndexedDB once
   * their labels passed through (a first sync's tree does). Forgotten when
   * another tab wrote (load).
   */
  private labels = new Map<string, { nodeType?: string; description?: string }>();

  constructor(db: IDBDatabase, name: string, instance: string, keyRange: typeof IDBKeyRange, max: number) {
    this.db = db;
    this.partMax = max;
    this.kr = keyRange;
    this.name = name;
    this.instance = instance;
    // A newer layout opening the database (another tab, a new version of
    // the page) closes this one: later calls throw StoreClosedError.
    db.onversionchange = () => {
      db.close();
      this.db = null;
    };
  }

  /** Closes the database; later calls throw StoreClosedError. Pending writes finish first. */
  async close(): Promise<void> {
    await this.queue.catch(() => {});
    this.db?.close();
    this.db = null;
  }

  private tx(stores: string[], mode: IDBTransactionMode, durability: IDBTransactionDurability = "default"): IDBTransaction {
    if (!this.db) throw new StoreClosedError();
    return this.db.transaction(stores, mode, { durability });
  }

  /** Runs fn after every write queued before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => {});
    return p;
  }

  /**
   * Brings the tree records in memory up to date with the database, after
   * the writes queued before it: call it when another tab wrote. It reads
   * only the deltas written since the last load, unless a snapshot
   * replaced them meanwhile.
   */
  reload(): Promise<void> {
    return this.serial(() => this.load());
  }

  /** @internal The body of reload, for openStore and for a write that found the gen moved. */
  async load(): Promise<void> {
    this.labels.clear();
    const m = this.mirror;
    const tx = this.tx([Stores.meta, Stores.tree], "readonly");
    const meta = tx.objectStore(Stores.meta);
    const tree = tx.objectStore(Stores.tree);
    const [gen, maxTime, snap] = (await Promise.all([req(meta.get("gen")), req(meta.get("maxTime")), req(meta.get("snap"))])) as [number, bigint, number];
    if (m.gen >= 0 && gen >= m.gen && snap <= m.gen) {
      // The deltas after ours are all there.
      if (gen > m.gen) for (const d of await getAll<TreeDelta>(tree, this.kr.lowerBound(m.gen, true))) m.addDelta(d);
      m.gen = gen;
      m.snapGen = snap;
    } else {
      const n = new Mirror();
      n.loadTree(await getAll(tree));
      n.gen = gen;
      this.mirror = n;
    }
    this.maxTimeSeen = maxTime;
  }

  /**
   * Writes a snapshot of the tree records in memory in place of the
   * deltas, when they have grown past Mirror.wantsSnapshot's bound. Runs
   * queued after the write that crossed it; it costs about the whole tree
   * (BENCHMARKS.md, "browser replica"). Another tab's write since ours
   * leaves it to a later write.
   */
  private async snapshot(): Promise<void> {
    const m = this.mirror;
    if (!m.wantsSnapshot()) return;
    const tx = this.tx([Stores.meta, Stores.tree], "readwrite");
    const fin = done(tx);
    const meta = tx.objectStore(Stores.meta);
    const tree = tx.objectStore(Stores.tree);
    const [gen, snap] = (await Promise.all([req(meta.get("gen")), req(meta.get("snap"))])) as [number, number];
    if (gen !== m.gen || snap >= m.gen) {
      abortQuietly(tx);
      await fin.catch(() => {});
      return;
    }
    tree.put(m.snapshot(), 0);
    tree.delete(this.kr.bound(1, m.gen));
    meta.put(m.gen, "snap");
    await fin;
    m.snapGen = m.gen;
    m.deltaRecords = 0;
    m.deltaEntries = 0;
  }

  /**
   * Merges a batch of stamped points into their registers, in one
   * IndexedDB transaction: either all of it is written or nothing is.
   * Each point is normalized and validated first; an invalid or unstamped
   * point refuses the whole batch with an InvalidBatchError naming its
   * index, before anything is read or written. Digests, the tree's active
   * edges and (for a local write) the change feed are updated in the same
   * transaction.
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
          const q = normalizeParent(normalize(p));
          const k = regStr(q.node, q.parent, q.type, q.key);
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
    // A received batch is written with relaxed durability: one the
    // machine loses in a crash is lost with its received mark (one
    // transaction), so the link asks for it again. A local write is
    // nowhere else: it waits for the disk.
    const tx = this.tx(all, "readwrite", (opts.source ?? "") === "" ? "strict" : "relaxed");
    const fin = done(tx);
    const source = opts.source ?? "";
    let b: Batch;
    let res: ApplyResult;
    let maxNext = 0n;
    try {
      const meta = tx.objectStore(Stores.meta);
      const regs = tx.objectStore(Stores.registers);
      b = new Batch(this.mirror, 0, this.partMax);
      for (const p of points) b.reg(p);
      const [gen, seq, maxTime] = (await Promise.all([
        req(meta.get("gen")),
        req(meta.get("seq")),
        req(meta.get("maxTime")),
        b.read(regs),
      ])) as [number, number, bigint, void];
      if (gen !== this.mirror.gen) {
        // Another tab wrote: the tree records in memory are stale.
        abortQuietly(tx);
        await fin.catch(() => {});
        if (!retry) throw new Error("store: the database keeps changing under this tab");
        await this.load();
        return this.applyNow(points, opts, false);
      }
      b.seq = seq;
      res = b.merge(points);
      b.resolveTree();
      b.updateDigests();
      await b.records(regs, source);
      let max = maxTime;
      for (const p of res.changes) if (p.time > max) max = p.time;
      b.flush(tx, source, gen + 1);
      meta.put(b.seq, "seq");
      meta.put(max, "maxTime");
      meta.put(gen + 1, "gen");
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
    if (this.mirror.wantsSnapshot() && !this.snapshotQueued) {
      this.snapshotQueued = true;
      this.serial(() => this.snapshot())
        .catch(() => {}) // a later write tries again
        .finally(() => (this.snapshotQueued = false));
    }
    for (const p of res.changes) {
      if (p.parent !== "" || p.key !== "0" || (p.type !== "nodeType" && p.type !== "description")) continue;
      let l = this.labels.get(p.node);
      if (!l) this.labels.set(p.node, (l = {}));
      l[p.type] = p.tombstone ? "" : p.text;
    }
    for (const fn of this.commitFns) {
      try {
        fn(res, source);
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

  /** The last change number assigned, to a local or a received change (0 when nothing was written). */
  async lastSeq(): Promise<number> {
    const tx = this.tx([Stores.meta], "readonly");
    return (await req(tx.objectStore(Stores.meta).get("seq"))) as number;
  }

  /** Every register of node, in registerOrder, read in one request. */
  private async registersOf(tx: IDBTransaction, node: string): Promise<RegisterRecord[]> {
    const parts = await getAll<StoredPart>(tx.objectStore(Stores.registers), this.kr.bound([node], [node, []]));
    if (parts.length === 1) return decodePart(node, parts[0]);
    return parts.flatMap((s) => decodePart(node, s)).sort(registerOrder);
  }

  /**
   * Node n's own points and the edges above it with their points, from one
   * read of its record; whether an edge is active comes from memory.
   */
  async get(node: string): Promise<NodeView> {
    const recs = await this.registersOf(this.tx([Stores.registers], "readonly"), node);
    const view: NodeView = { node, points: [], parents: [] };
    let last: NodeView["parents"][number] | undefined;
    for (const r of recs) {
      const p = r.point;
      if (p.parent === "") view.points.push(p);
      else {
        if (last?.parent !== p.parent) {
          last = { parent: p.parent, active: this.mirror.edges.get(edgeKey(p.parent, node))?.active ?? false, points: [] };
          view.parents.push(last);
        }
        last.points.push(p);
      }
    }
    return view;
  }

  /**
   * The edges below node, live or not, in child ID order, with the
   * children's labels: the edges from memory, the labels from one read of
   * each child's record (two for a child of many registers).
   */
  /**
   * Node n's labels when this store knows them without reading (see
   * labels), else undefined: get or children reads them.
   */
  label(n: string): { nodeType: string; description: string } | undefined {
    const l = this.labels.get(n);
    return l && l.nodeType !== undefined && l.description !== undefined ? { nodeType: l.nodeType, description: l.description } : undefined;
  }

  async children(node: string): Promise<ChildView[]> {
    const kids = [...(this.mirror.kids.get(node) ?? [])].sort();
    if (kids.length === 0) return [];
    const m = this.mirror;
    const active = (child: string) => m.edges.get(edgeKey(node, child))?.active ?? false;
    if (kids.every((k) => this.label(k))) return kids.map((child) => ({ id: child, active: active(child), ...this.label(child)! }));
    const regs = this.tx([Stores.registers], "readonly").objectStore(Stores.registers);
    const gen = m.gen;
    return Promise.all(
      kids.map(async (child) => {
        const l = this.label(child);
        if (l) return { id: child, active: active(child), ...l };
        const parts = m.partsOf(child);
        const pt = partOf(parts, "", "nodeType", "0");
        const pd = partOf(parts, "", "description", "0");
        const [rt, rd] = await Promise.all([
          req(regs.get(partKey(child, pt))) as Promise<StoredPart | undefined>,
          pd === pt ? undefined : (req(regs.get(partKey(child, pd))) as Promise<StoredPart | undefined>),
        ]);
        const label = (s: StoredPart | undefined, type: string) => {
          const i = s ? findStored(s, "", type, "0") : -1;
          return i >= 0 && (s!.flags[i] & partTombstone) === 0 ? s!.text[i] : "";
        };
        const v = {
          id: child,
          active: active(child),
          nodeType: label(rt, "nodeType"),
          description: label(pd === pt ? rt : rd, "description"),
        };
        // Remembered only when no commit came between the read and now.
        if (this.mirror === m && m.gen === gen) this.labels.set(child, { nodeType: v.nodeType, description: v.description });
        return v;
      }),
    );
  }

  /**
   * Up to limit changes after change number after, in commit order, each
   * register once at its latest change, with its current winner. Only
   * local writes are in the feed (index.ts, "The feed"): a received change
   * has a change number but no entry.
   */
  async changesSince(after: number, limit = Infinity): Promise<Change[]> {
    const tx = this.tx([Stores.feed, Stores.registers], "readonly");
    const feed = tx.objectStore(Stores.feed);
    const range = this.kr.lowerBound(after, true);
    const n = Number.isFinite(limit) ? limit : undefined;
    const [seqs, wanted] = await Promise.all([req(feed.getAllKeys(range, n)), req(feed.getAll(range, n)) as Promise<FeedRecord[]>]);
    const regs = tx.objectStore(Stores.registers);
    const reads = new Map<string, Promise<RegisterRecord[]>>();
    const partFor = (k: RegisterKey) => partKey(k[0], partOf(this.mirror.partsOf(k[0]), k[1], k[2], k[3]));
    for (const f of wanted) {
      const pk = partFor(f.reg);
      const s = pk[0] + "\n" + pk[1];
      if (!reads.has(s)) reads.set(s, (req(regs.get(pk)) as Promise<StoredPart | undefined>).then((v) => decodePart(pk[0], v)));
    }
    const recs = new Map<string, RegisterRecord[] | undefined>();
    await Promise.all([...reads].map(async ([s, p]) => recs.set(s, await p)));
    const find = (f: FeedRecord) => {
      const pk = partFor(f.reg);
      const rs = recs.get(pk[0] + "\n" + pk[1]);
      const j = rs ? findRegister(rs, f.reg[1], f.reg[2], f.reg[3]) : -1;
      return j < 0 ? undefined : rs![j].point;
    };
    // A register not in the part memory names was moved by another tab's
    // split this store has not caught up with: its node is read whole.
    const whole = new Map<string, Promise<RegisterRecord[]>>();
    for (const f of wanted) if (!find(f) && !whole.has(f.reg[0])) whole.set(f.reg[0], this.registersOf(tx, f.reg[0]));
    const all = new Map<string, RegisterRecord[]>();
    await Promise.all([...whole].map(async ([n, p]) => all.set(n, await p)));
    return wanted.map((f, i) => {
      let point = find(f);
      if (!point) {
        const rs = all.get(f.reg[0])!;
        const j = rs.findIndex((r) => r.point.parent === f.reg[1] && r.point.type === f.reg[2] && r.point.key === f.reg[3]);
        if (j < 0) throw new Error(`store: corrupt: change ${seqs[i]} names a missing register`);
        point = rs[j].point;
      }
      return { seq: seqs[i] as number, source: "", point };
    });
  }

  /**
   * The changes a link must still send to remote: the local writes after
   * its acked mark (those made offline among them). Nothing received is
   * sent on: every change a replica receives comes from the one server it
   * links to (index.ts, "The feed").
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
    const recs = await this.registersOf(this.tx([Stores.registers], "readonly"), n);
    const out: Point[] = [];
    for (const r of recs) if (r.point.parent === "") out.push(r.point);
    return out;
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

  /** For verify: the tree records in memory, and the part counts of nodes of more than one part. */
  memory(): {
    edges: ReadonlyMap<string, EdgeState>;
    nodes: ReadonlyMap<string, NodeDigests>;
    buckets: ReadonlyMap<string, Digest>;
    split: ReadonlyMap<string, number>;
  } {
    return this.mirror;
  }
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

/** One record (a part of a node's registers) a batch read. */
interface PartState {
  node: string;
  part: number;
  /** As read, in registerOrder; empty when the record does not exist. */
  regs: RegisterRecord[];
  /** The registers of the batch in this part, by inPart. */
  want: Map<string, RegState>;
  /** What the batch writes in its place (records); undefined: unchanged. */
  next: RegisterRecord[] | undefined;
}

interface RegState {
  point: Point; // the first of the batch's points of this register: its key
  part: PartState;
  /** The register's index in part.regs; -1: a new register. */
  at: number;
  old: RegisterRecord | undefined;
  cur: Point | undefined;
  /** cur's change number when the batch changed it; 0: unchanged. */
  seq: number;
}

/** A register's key within its node's record: parent, type, key (neither type nor key holds a newline). */
function inPart(parent: string, type: string, key: string): string {
  return parent === "" ? type + "\n" + key : parent + "\n" + type + "\n" + key;
}

/**
 * The working state of one apply: the records of registers it read and
 * the tree records it changes, as copies of the committed ones (the
 * mirror is updated by remember, after the commit).
 */
class Batch {
  readonly m: Mirror;
  seq: number;
  parts = new Map<string, PartState>(); // node, or node "\n" part past 0 → state
  regs: RegState[] = [];
  /** Nodes this batch splits over more parts, with their new count. */
  split = new Map<string, number>();
  edges = new Map<string, EdgeState | null>();
  edgeDirty = new Set<string>();
  newParents = new Map<string, string[]>();
  nodes = new Map<string, NodeDigests>();
  buckets = new Map<string, Digest>();
  ownDelta = new Map<string, Digest>();
  edgeDelta = new Map<string, Digest>();
  regEdges = new Set<string>();
  flips = new Map<string, boolean>();
  delta: TreeDelta | undefined;

  constructor(
    m: Mirror,
    seq: number,
    private readonly partMax: number,
  ) {
    this.m = m;
    this.seq = seq;
  }

  private partState(node: string, part: number): PartState {
    const s = part === 0 ? node : node + "\n" + part;
    let ps = this.parts.get(s);
    if (!ps) this.parts.set(s, (ps = { node, part, regs: [], want: new Map(), next: undefined }));
    return ps;
  }

  /** The state of p's register (created when absent: its record is then read by read). */
  reg(p: Point): RegState {
    const ps = this.partState(p.node, partOf(this.m.partsOf(p.node), p.parent, p.type, p.key));
    const k = inPart(p.parent, p.type, p.key);
    let r = ps.want.get(k);
    if (!r) {
      r = { point: p, part: ps, at: -1, old: undefined, cur: undefined, seq: 0 };
      ps.want.set(k, r);
      this.regs.push(r);
    }
    return r;
  }

  /**
   * Reads the records of the registers wanted (reg), one request each,
   * and finds the registers' winners in them. A node the tree records
   * know nothing of (no own or subtree digest, no edge above it) has no
   * registers and is not read: a first sync's structure is all such
   * nodes. (A node whose own points' digests sum to exactly zero would be
   * taken for one: the chance is 2^-128, that of a digest collision.)
   */
  async read(store: IDBObjectStore): Promise<void> {
    await Promise.all(
      [...this.parts.values()].map(async (ps) => {
        if (!this.m.nodes.has(ps.node) && !this.m.parents.has(ps.node)) return;
        ps.regs = decodePart(ps.node, (await req(store.get(partKey(ps.node, ps.part)))) as StoredPart | undefined);
        if (ps.regs.length === 0) return;
        for (let i = 0; i < ps.regs.length; i++) {
          const q = ps.regs[i].point;
          const r = ps.want.get(inPart(q.parent, q.type, q.key));
          if (r) {
            r.at = i;
            r.old = ps.regs[i];
            r.cur = q;
          }
        }
      }),
    );
  }

  merge(points: Point[]): ApplyResult {
    const res: ApplyResult = { outcomes: [], applied: 0, stale: 0, changes: [], firstSeq: 0 };
    for (const p of points) {
      const r = this.reg(p);
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
    for (const r of this.regs) {
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

  /**
   * Builds the new records of the registers the batch changed. A node
   * whose part would outgrow partMax is split over more parts: its other
   * parts are read (in tx, through store) and every part is written again.
   */
  async records(store: IDBObjectStore, source: string): Promise<void> {
    const added = new Set<PartState>();
    for (const r of this.regs) {
      if (r.seq === 0) continue;
      const ps = r.part;
      ps.next ??= ps.regs.slice();
      const rec: RegisterRecord = source === "" ? { point: r.cur!, seq: r.seq, local: true } : { point: r.cur!, seq: r.seq };
      if (r.at >= 0) ps.next[r.at] = rec;
      else {
        ps.next.push(rec);
        added.add(ps);
      }
    }
    const grow = new Set<string>();
    for (const ps of added) {
      ps.next!.sort(registerOrder);
      if (ps.next!.length > this.partMax) grow.add(ps.node);
    }
    for (const node of grow) {
      const parts = this.m.partsOf(node);
      const mine = [...this.parts.values()].filter((ps) => ps.node === node);
      const others = await Promise.all(
        Array.from({ length: parts }, (_, i) => i)
          .filter((i) => !mine.some((ps) => ps.part === i))
          .map(async (i) => decodePart(node, (await req(store.get(partKey(node, i)))) as StoredPart | undefined)),
      );
      const every = [...mine.map((ps) => ps.next ?? ps.regs), ...others].flat();
      let n = partsFor(every.length, this.partMax);
      if (n <= parts) n = 2 * parts;
      const next: RegisterRecord[][] = Array.from({ length: n }, () => []);
      for (const r of every) next[partOf(n, r.point.parent, r.point.type, r.point.key)].push(r);
      for (let i = 0; i < n; i++) this.partState(node, i).next = next[i].sort(registerOrder);
      this.split.set(node, n);
    }
  }

  /** Writes every changed record into tx: the registers' records, the feed, the tree's delta under gen. */
  flush(tx: IDBTransaction, source: string, gen: number): void {
    const regs = tx.objectStore(Stores.registers);
    for (const ps of this.parts.values()) if (ps.next) regs.put(encodePart(ps.next), partKey(ps.node, ps.part));
    const feed = tx.objectStore(Stores.feed);
    for (const r of this.regs) {
      if (r.seq === 0) continue;
      if (r.old?.local) feed.delete(r.old.seq); // it needs no pushing any more
      if (source === "") feed.put({ reg: regKey(r.point) } satisfies FeedRecord, r.seq);
    }
    const d: TreeDelta = { edges: [], nodes: [], buckets: [], split: [] };
    for (const k of this.edgeDirty) d.edges.push(this.edges.get(k)!);
    for (const [id, m] of this.nodes) d.nodes.push({ id, own: m.own, sub: m.sub });
    for (const [k, digest] of this.buckets) {
      const i = k.indexOf("/");
      d.buckets.push({ parent: k.slice(0, i), bucket: Number(k.slice(i + 1)), digest });
    }
    for (const [id, parts] of this.split) d.split.push({ id, parts });
    if (deltaSize(d) > 0) {
      tx.objectStore(Stores.tree).put(d, gen);
      this.delta = d;
    }
  }

  /** Records, after the commit, what the batch changed of the tree in the mirror. */
  remember(m: Mirror): void {
    if (this.delta) m.addDelta(this.delta);
  }
}

function add(m: Map<string, Digest>, k: string, d: Digest): void {
  m.set(k, addDigest(m.get(k) ?? 0n, d));
}
