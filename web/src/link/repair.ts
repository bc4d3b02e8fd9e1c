// Digest repair, the dialer's side: a port of replica/repair.go for a
// user's link (docs/protocol.md, "Digest repair"). The browser replica
// compares its store with the acceptor's readable view, one round per
// scope root (each parent of the user over an active edge), descending
// through node summaries, child buckets and child sketches to the nodes
// whose points differ; one sketch of all their points per reply (the
// aggregate) then says which points to push and which to fetch. Every step
// is one batched request; its reply is compared with the store and queues
// the next. A round visits each node at most once and ends; writes may
// continue meanwhile (what changed is caught by push or by the next round).
//
// On a user's link the record of an inactive child carries no own or
// below digest on either side (the acceptor's readable view: the child's
// points are not in the view through that edge); only its edge is
// compared.

import { compareBytes, equalBytes, getUint64, putUint64, utf8 } from "../crdt/bytes.ts";
import { digestBytes, digestFromBytes, pointDigest, registerHash, subDigest, type Digest } from "../crdt/digest.ts";
import { SkewError } from "../crdt/hlc.ts";
import { uuidBytes } from "../crdt/ids.ts";
import type { Point } from "../crdt/point.ts";
import { decodeSketch, MaxSketchCells, mix64, nodeTag, pointKey, pointKeyParts, PointKeyLen, Sketch, SketchHashes, sketchCellLen } from "../crdt/sketch.ts";
import type { ChildDigest, Store } from "../store/index.ts";
import { decodeBatch, encodeBatch } from "../wire/batch.ts";
import { decodeMessage, encodeMessage, RemoteError } from "../wire/messages.ts";
import {
  decodeRepairReply,
  encodeRepairRequest,
  MaxDensity,
  type BucketSum,
  type ChildDiff,
  type ChildSketchQuery,
  type ChildSum,
  type EdgeQuery,
  type FetchQuery,
  type Listing,
  type ListQuery,
  type NodeSub,
  type RepairReply,
  type RepairRequest,
  type TagFetch,
  type BucketQuery,
} from "../wire/repair.ts";

// Limits, as replica/repair.go and repair_sketch.go have them.
const repairReplyBudget = 512 << 10; // bytes a reply aims to stay under
const repairSendBudget = 256 << 10; // local points go in pushes of about this size
const maxQueries = 8192; // queries of one kind per request
const childKeyLen = 16;
const childRecordLen = 41;
const aggregateSlack = 30;
const maxAggPoints = 4096; // a node with more points is listed, not sketched
const cellsPerNode = 3;
const childCellsPer = 3.3;
const bucketsPerNode = 256;
const childSketchMin = aggregateSlack + 3;
/** Most rounds in a row while they find differences. */
export const MaxRoundsInRow = 3;

/** What one repair round did (Go's RepairStats). */
export interface RepairStats {
  /** The scope root compared. */
  root: string;
  /** The root's digests matched at the first comparison. */
  equal: boolean;
  /** Request/reply exchanges (and a last push waited for on its own). */
  roundTrips: number;
  /** Request and push frames sent, bytes. */
  bytesOut: number;
  /** Reply frames received, bytes. */
  bytesIn: number;
  /** Points received and applied. */
  fetched: number;
  /** Points pushed. */
  sent: number;
  /** Points the acceptor refused of those pushed (the acks' rej). */
  refused: number;
  tookMs: number;
}

/** What a round needs of its session. */
export interface RepairIO {
  store: Store;
  /** The acceptor's instance: fetched points are applied as received from it. */
  remote: string;
  /** Sends a repair request frame; resolves with the reply frame. */
  request(frame: Uint8Array): Promise<Uint8Array>;
  /** Sends a push frame on the up subject; resolves with the ack frame. */
  push(frame: Uint8Array): Promise<Uint8Array>;
  /** Throws a SkewError for a time too far ahead of our clock. */
  checkTime(t: bigint): void;
  /** Raises our clock past t, the latest time applied. */
  observe(t: bigint): void;
}

/**
 * The scope roots of user's link in store: the parents of the user's node
 * over active edges, as the store holds them (the acceptor sends the
 * user's own edges down), sorted.
 */
export async function scopeRoots(store: Store, user: string): Promise<string[]> {
  const v = await store.get(user);
  return v.parents
    .filter((p) => p.active)
    .map((p) => p.parent)
    .sort();
}

/**
 * Runs one repair round of root against the acceptor behind io and
 * resolves with what it did. It rejects with a RemoteError when the
 * acceptor refused a request (another root, a tree that kept changing),
 * and with the transport's error when a request failed; pushes of the
 * round are waited for in either case. random draws child sketch salts.
 */
export function repairRound(io: RepairIO, root: string, random: () => number = Math.random): Promise<RepairStats> {
  return new Round(io, root, random).run();
}

interface AggNode {
  id: string;
  density: number;
}

interface ChildGroup {
  listed: number;
  differ: number;
  own: number[]; // indexes of compares of children whose own points differ
}

function short(d: Digest): Uint8Array {
  return digestBytes(d).subarray(0, 8);
}

/** The record of child c in the acceptor's view: an inactive child carries no own or below digest. */
function record(c: ChildDigest): ChildDigest {
  return c.active ? c : { ...c, own: 0n, sub: 0n };
}

function bucketOf(id: string): number {
  return parseInt(id.slice(0, 2), 16);
}

function hasBucket(set: Uint8Array, b: number): boolean {
  return (set[b >> 3] & (1 << (b & 7))) !== 0;
}

function bucketCount(set: Uint8Array): number {
  let n = 0;
  for (let b = 0; b < 256; b++) if (hasBucket(set, b)) n++;
  return n;
}

/** A child's 64-bit tag: mix64(mix64(first 8 bytes) XOR last 8 bytes), big-endian (Go's childTag). */
export function childTag(id: string): bigint {
  const b = uuidBytes(id);
  return mix64(mix64(getUint64(b, 0)) ^ getUint64(b, 8));
}

/**
 * A child's key in a child sketch salted with salt (Go's childKey): its
 * tag, then 16, 24 and 24 bits of tags of its edge (with whether it is
 * active), its own points and what is below it.
 */
export function childKey(c: ChildDigest, salt: number): Uint8Array {
  const tag = (s: Uint8Array, part: bigint): bigint => mix64(getUint64(s, 0) ^ mix64((BigInt(salt >>> 0) << 8n) | part));
  const act = c.active ? 1n : 0n;
  const st =
    ((tag(short(c.edge), 1n ^ (act << 1n)) >> 48n) << 48n) |
    ((tag(short(c.own), 4n) >> 40n) << 24n) |
    (tag(short(subDigest(c.sub, c.own)), 8n) >> 40n);
  const k = new Uint8Array(childKeyLen);
  putUint64(k, 0, childTag(c.id));
  putUint64(k, 8, st);
  return k;
}

/** A child sketch's cells for nb differing buckets with kids children there (Go's childSketchCells). */
function childSketchCells(nb: number, kids: number): number {
  let c = kids;
  if (nb < bucketsPerNode) {
    let e = bucketsPerNode - nb;
    e = Math.max(e - Math.sqrt(e * (1 - e / bucketsPerNode)), 0.5);
    c = Math.log(e / bucketsPerNode) / Math.log(1 - 1 / bucketsPerNode);
  }
  return Math.ceil(childCellsPer * c) + childSketchMin;
}

/** The density to compare agg's nodes again with after their aggregate failed to decode (Go's retryDensity). */
function retryDensity(agg: AggNode[], sk: Sketch, peeled: number): number {
  let old = 1;
  for (const a of agg) old = Math.max(old, a.density);
  const m = sk.cells;
  const z = sk.nonEmpty();
  if (z >= m * 0.98) return old * 8;
  const keys = peeled - (m / SketchHashes) * Math.log(1 - z / m);
  return Math.max(2 * old, Math.ceil((1.5 * keys) / (cellsPerNode * agg.length)));
}

/** What a point costs in a push, roughly (Go's pointCost). */
function pointCost(p: Point): number {
  return 16 + Math.floor(utf8(p.key).length / 2) + utf8(p.text).length;
}

/** A node point's register key as the Go store orders it: node, 16 zero bytes, type 0x00 key (store.RegisterKey). */
function registerKey(p: Point): Uint8Array {
  const t = utf8(p.type);
  const k = utf8(p.key === "" ? "0" : p.key);
  const out = new Uint8Array(32 + t.length + 1 + k.length);
  out.set(uuidBytes(p.node));
  out.set(t, 32);
  out.set(k, 33 + t.length);
  return out;
}

/** One round's descent (Go's repairer). */
class Round {
  private compare: NodeSub[] = [];
  private list: ListQuery[] = [];
  private buckets: BucketQuery[] = [];
  private fetch: FetchQuery[] = [];
  private edges: EdgeQuery[] = [];
  private childSketches: ChildSketchQuery[] = [];
  private children = new Map<string, Map<bigint, ChildDigest>>();
  private tagFetch: TagFetch[] = [];
  private visited = new Set<string>();
  private send: Point[] = [];
  private sendLen = 0;
  private pushes: Promise<void>[] = [];
  private pushErr: unknown;
  private sendAfter = false;
  private stats: RepairStats;

  constructor(
    private readonly io: RepairIO,
    private readonly root: string,
    private readonly random: () => number,
  ) {
    this.stats = { root, equal: false, roundTrips: 0, bytesOut: 0, bytesIn: 0, fetched: 0, sent: 0, refused: 0, tookMs: 0 };
  }

  async run(): Promise<RepairStats> {
    const start = Date.now();
    this.visited.add(this.root);
    this.recompare(this.root, 0);
    try {
      let first = true;
      while (this.queued() > 0) {
        const req = this.takeRequest();
        this.flushSend(); // overlaps this request
        this.sendAfter = false;
        const reply = await this.exchange(req);
        if (first) {
          this.stats.equal = reply.summaries.length === 0 && reply.answered[0] === 1n;
          first = false;
        }
        this.requeue(req, reply.answered);
        await this.process(req, reply);
      }
      this.flushSend();
    } finally {
      await Promise.allSettled(this.pushes); // no push outlives its round
    }
    if (this.pushErr !== undefined) throw this.pushErr;
    if (this.sendAfter) this.stats.roundTrips++; // the last push was waited for on its own
    this.stats.tookMs = Date.now() - start;
    return this.stats;
  }

  private queued(): number {
    return (
      this.compare.length + this.list.length + this.buckets.length + this.fetch.length + this.edges.length +
      this.childSketches.length + this.tagFetch.length
    );
  }

  /** Moves up to maxQueries queries of each kind into a request, child sketches and fetches by size too. */
  private takeRequest(): RepairRequest {
    const cut = <T>(q: T[], n: number): [T[], T[]] => [q.slice(0, n), q.slice(n)];
    const req: RepairRequest = { root: this.root, compare: [], list: [], buckets: [], fetch: [], edges: [], childSketch: [], tagFetch: [] };
    [req.compare, this.compare] = cut(this.compare, maxQueries);
    let n = 0;
    let size = 0;
    while (n < this.childSketches.length && (n === 0 || size + this.childSketches[n].sketch.length < repairReplyBudget)) {
      size += 64 + this.childSketches[n].sketch.length;
      n++;
    }
    [req.childSketch, this.childSketches] = cut(this.childSketches, n);
    n = 0;
    size = 0;
    while (n < this.tagFetch.length && n < maxQueries / 32 && size < repairReplyBudget / 2) {
      size += 24 + 4 * this.tagFetch[n].tags.length;
      n++;
    }
    [req.tagFetch, this.tagFetch] = cut(this.tagFetch, n);
    [req.list, this.list] = cut(this.list, maxQueries / 32);
    [req.buckets, this.buckets] = cut(this.buckets, maxQueries / 32);
    n = 0;
    size = 0;
    while (n < this.fetch.length && n < maxQueries / 32 && size < repairReplyBudget / 2) {
      size += 24 + 8 * this.fetch[n].hashes.length;
      n++;
    }
    [req.fetch, this.fetch] = cut(this.fetch, n);
    [req.edges, this.edges] = cut(this.edges, maxQueries);
    return req;
  }

  /** Puts back the queries the reply did not get to. */
  private requeue(req: RepairRequest, answered: bigint[]): void {
    const rest = <T>(i: number, q: T[]): T[] => q.slice(Math.min(Number(answered[i]), q.length));
    this.compare = [...rest(0, req.compare), ...this.compare];
    this.list = [...rest(1, req.list), ...this.list];
    this.buckets = [...rest(2, req.buckets), ...this.buckets];
    this.fetch = [...rest(3, req.fetch), ...this.fetch];
    this.edges = [...rest(4, req.edges), ...this.edges];
    this.childSketches = [...rest(5, req.childSketch), ...this.childSketches];
    this.tagFetch = [...rest(6, req.tagFetch), ...this.tagFetch];
  }

  private async exchange(req: RepairRequest): Promise<RepairReply> {
    const b = encodeRepairRequest(req);
    this.stats.bytesOut += b.length;
    const m = await this.io.request(b);
    this.stats.bytesIn += m.length;
    this.stats.roundTrips++;
    const reply = decodeRepairReply(m);
    const asked =
      req.compare.length + req.list.length + req.buckets.length + req.fetch.length + req.edges.length + req.childSketch.length + req.tagFetch.length;
    if (asked > 0 && reply.answered.every((n) => n === 0n)) throw new Error("repair: the remote answered nothing");
    return reply;
  }

  /** Compares a reply to req with the store and queues the next step. */
  private async process(req: RepairRequest, reply: RepairReply): Promise<void> {
    const asked = new Map<string, NodeSub>();
    for (const q of req.compare.slice(0, Number(reply.answered[0]))) asked.set(q.node, q);
    let agg: AggNode[] = [];
    const groups = new Map<string, ChildGroup>();
    const group = (n: string): ChildGroup => {
      let g = groups.get(n);
      if (!g) groups.set(n, (g = { listed: 0, differ: 0, own: [] }));
      return g;
    };
    const listed = new Set(reply.listings.map((l) => l.node));
    for (const sm of reply.summaries) {
      const q = asked.get(sm.node);
      if (!q) throw new Error(`repair: summary of ${sm.node}, which was not asked`);
      const smOwn = digestFromBytes(sm.own);
      const qOwn = digestFromBytes(q.own);
      if (sm.aggregated) agg.push({ id: sm.node, density: q.density });
      else if (smOwn !== qOwn && smOwn !== 0n && qOwn !== 0n && !listed.has(sm.node)) {
        this.recompare(sm.node, q.density); // did not fit this reply's aggregate: again
      }
      if (smOwn === 0n && qOwn !== 0n) await this.sendNodePoints(sm.node); // the remote holds none
      if (sm.belowEqual) continue;
      if (sm.many) this.compareBuckets(sm.node, sm.buckets);
      else await this.compareChildren(sm.node, -1, sm.children, group(sm.node));
    }
    for (const b of reply.buckets) await this.compareChildren(b.node, b.bucket, b.children, group(b.node));
    this.sizeGroups(groups);
    const answered = req.childSketch.slice(0, Number(reply.answered[5]));
    if (reply.childDiffs.length !== answered.length) {
      throw new Error(`repair: ${reply.childDiffs.length} child diffs for ${answered.length} child sketches`);
    }
    for (let i = 0; i < reply.childDiffs.length; i++) {
      const d = reply.childDiffs[i];
      const q = answered[i];
      if (d.node !== q.node) throw new Error(`repair: child diff of ${d.node} for a sketch of ${q.node}`);
      if (!d.ok) {
        // More children differ than the sketch was sized for: twice the cells.
        this.sketchChildren(d.node, q.buckets, Math.floor((2 * q.sketch.length) / sketchCellLen(childKeyLen)));
        continue;
      }
      agg = await this.childDiff(d, agg);
    }
    for (const l of reply.listings) await this.compareListing(l);
    if (reply.points.length > 0) await this.applyFetched(decodeBatch(reply.points));
    if (agg.length > 0) await this.reconcile(agg, reply.aggregate);
  }

  /** Applies fetched points as a push from the acceptor would be: a point too far ahead of our clock is refused. */
  private async applyFetched(pts: Point[]): Promise<void> {
    const kept: Point[] = [];
    let max = 0n;
    for (const p of pts) {
      try {
        this.io.checkTime(p.time);
      } catch (e) {
        if (e instanceof SkewError) continue;
        throw e;
      }
      kept.push(p);
      if (p.time > max) max = p.time;
    }
    if (kept.length > 0) await this.io.store.apply(kept, { source: this.io.remote });
    if (max > 0n) this.io.observe(max);
    this.stats.fetched += kept.length;
  }

  private async sendNodePoints(n: string): Promise<void> {
    for (const p of await this.io.store.nodePoints(n)) this.queueSend(p);
  }

  /** Queues, for the differing child buckets of n, a sketch of our children there (or their listings). */
  private compareBuckets(n: string, remote: BucketSum[]): void {
    const local = new Map<number, Uint8Array>();
    for (const b of this.io.store.buckets(n)) local.set(b.bucket, short(b.digest));
    const differ = new Uint8Array(32);
    const add = (b: number) => (differ[b >> 3] |= 1 << (b & 7));
    for (const b of remote) {
      const d = local.get(b.bucket);
      if (!d || !equalBytes(d, b.digest)) add(b.bucket);
      local.delete(b.bucket);
    }
    for (const b of local.keys()) add(b); // buckets only we have
    if (bucketCount(differ) > 0) this.sketchChildren(n, differ, 0);
  }

  private sketchChildren(n: string, differ: Uint8Array, retry: number): void {
    const q = this.childSketch(n, differ, retry);
    if (q) {
      this.childSketches.push(q);
      return;
    }
    for (let b = 0; b < 256; b++) if (hasBucket(differ, b)) this.buckets.push({ node: n, bucket: b });
  }

  /** A sketch of our children of n in the buckets of differ, or undefined when listing them costs less. */
  private childSketch(n: string, differ: Uint8Array, retry: number): ChildSketchQuery | undefined {
    const kids = this.io.store
      .childDigests(n)
      .filter((c) => hasBucket(differ, bucketOf(c.id)))
      .map(record);
    const cells = retry > 0 ? retry : childSketchCells(bucketCount(differ), kids.length);
    if (cells > MaxSketchCells || cells * sketchCellLen(childKeyLen) >= childRecordLen * kids.length) return undefined;
    const sk = new Sketch(cells, childKeyLen);
    const salt = Math.floor(this.random() * 2 ** 32) >>> 0;
    const byTag = new Map<bigint, ChildDigest>();
    for (const c of kids) {
      sk.add(childKey(c, salt));
      byTag.set(childTag(c.id), c);
    }
    this.children.set(n, byTag);
    return { node: n, buckets: differ.slice(), salt, sketch: sk.appendBinary() };
  }

  /** Acts on the children a child sketch showed differ; adds those whose points the reply sketched to agg. */
  private async childDiff(d: ChildDiff, agg: AggNode[]): Promise<AggNode[]> {
    const byTag = this.children.get(d.node) ?? new Map<bigint, ChildDigest>();
    const ours = (tag: bigint): ChildDigest => {
      const c = byTag.get(tag);
      if (!c) throw new Error(`repair: child tag ${tag.toString(16)} of ${d.node} is not ours`);
      return c;
    };
    for (const f of d.both) {
      const c = ours(f.tag);
      if (f.edge) await this.exchangeEdge(c.id, d.node);
      if (f.aggregated) agg.push({ id: c.id, density: 0 });
      if (f.below || (f.own && !f.aggregated)) this.descend(c.id, 0);
      else this.visited.add(c.id);
    }
    for (const rc of d.children) {
      if (byTag.has(childTag(rc.id))) throw new Error(`repair: child ${rc.id} of ${d.node} reported as only the remote's`);
      this.edges.push({ child: rc.id, parent: d.node });
      this.descend(rc.id, 0);
    }
    for (const tag of d.missing) {
      const c = ours(tag);
      await this.exchangeEdge(c.id, d.node);
      this.descend(c.id, 0);
    }
    this.children.delete(d.node);
    return agg;
  }

  /**
   * Compares the remote's children of n (all, or one bucket) with ours: a
   * differing edge is exchanged, a child whose own points or what is
   * below it differ is compared.
   */
  private async compareChildren(n: string, bucket: number, remote: ChildSum[], g: ChildGroup): Promise<void> {
    const rem = new Map(remote.map((c) => [c.id, c]));
    for (const c of this.io.store.childDigests(n, bucket).map(record)) {
      g.listed++;
      const rc = rem.get(c.id);
      rem.delete(c.id);
      if (!rc || !equalBytes(rc.edge, short(c.edge))) await this.exchangeEdge(c.id, n);
      if (rc && !equalBytes(rc.own, short(c.own)) && c.own !== 0n) {
        g.differ++;
        const at = this.compare.length;
        this.descend(c.id, 0);
        if (this.compare.length > at) g.own.push(at);
        continue;
      }
      if (!rc || !equalBytes(rc.own, short(c.own)) || !equalBytes(rc.below, short(subDigest(c.sub, c.own)))) this.descend(c.id, 0);
    }
    for (const rc of rem.values()) {
      this.edges.push({ child: rc.id, parent: n }); // (we hold none of its edge points)
      this.descend(rc.id, 0);
    }
  }

  /** Sets the density of the compares of children whose own points differ from how many siblings differ (Go's childGroups.size). */
  private sizeGroups(groups: Map<string, ChildGroup>): void {
    for (const g of groups.values()) {
      if (g.own.length === 0 || g.differ >= g.listed) continue;
      const per = (-g.listed * Math.log(1 - g.differ / g.listed)) / g.differ;
      const d = Math.min(Math.ceil(per - 0.15), MaxDensity);
      for (const i of g.own) this.compare[i].density = Math.max(d, 1);
    }
  }

  /** Fetches the remote's points of the edge parent → child and queues ours. */
  private async exchangeEdge(child: string, parent: string): Promise<void> {
    this.edges.push({ child, parent });
    const v = await this.io.store.get(child);
    for (const e of v.parents) if (e.parent === parent) for (const p of e.points) this.queueSend(p);
  }

  private descend(n: string, density: number): void {
    if (this.visited.has(n)) return;
    this.visited.add(n);
    this.recompare(n, density);
  }

  private recompare(n: string, density: number): void {
    const d = this.io.store.nodeDigest(n);
    this.compare.push({ node: n, sub: digestBytes(d.sub), own: digestBytes(d.own), density });
  }

  /** Our sketch of the points of nodes, cells cells (Go's sketchPoints with keep). */
  private async sketchPoints(nodes: string[], cells: number): Promise<{ sk: Sketch; big: Set<string>; byKey: Map<string, Point> }> {
    const ids = [...new Set(nodes)].sort();
    const sk = new Sketch(cells, PointKeyLen);
    const big = new Set<string>();
    const byKey = new Map<string, Point>();
    for (const n of ids) {
      const pts = await this.io.store.nodePoints(n);
      if (pts.length > maxAggPoints) {
        big.add(n);
        continue;
      }
      for (const p of pts) {
        const k = pointKey(p);
        sk.add(k);
        byKey.set(keyString(k), p);
      }
    }
    return { sk, big, byKey };
  }

  /**
   * Subtracts our sketch of the points of agg from the remote's: ours that
   * win are pushed, theirs that win fetched by tag. When it does not
   * decode, the nodes are compared again denser, or listed.
   */
  private async reconcile(agg: AggNode[], theirsB: Uint8Array): Promise<void> {
    const theirs = decodeSketch(theirsB, PointKeyLen);
    const mine = await this.sketchPoints(
      agg.map((a) => a.id),
      theirs.cells,
    );
    let ok = false;
    let plus: Uint8Array[] = [];
    let minus: Uint8Array[] = [];
    const ours: Point[] = [];
    if (mine.big.size === 0) {
      mine.sk.subtract(theirs);
      ({ plus, minus, ok } = mine.sk.decode());
      if (ok) {
        for (const k of plus) {
          const p = mine.byKey.get(keyString(k));
          if (!p) {
            ok = false; // not a key of ours: a hostile or colliding sketch
            break;
          }
          ours.push(p);
        }
      }
    }
    if (!ok) {
      const next = retryDensity(agg, mine.sk, plus.length + minus.length);
      for (const a of agg) {
        if (mine.big.has(a.id) || next > MaxDensity) this.list.push({ node: a.id, after: new Uint8Array(0) });
        else this.recompare(a.id, next);
      }
      return;
    }
    // Their versions by node and register tag: a register on both sides
    // crosses once, toward its later write.
    const theirTime = new Map<string, bigint>();
    for (const k of minus) {
      const x = pointKeyParts(k);
      theirTime.set(`${x.node}/${x.reg}`, x.time);
    }
    for (const p of ours) {
      const x = pointKeyParts(pointKey(p));
      const r = `${x.node}/${x.reg}`;
      const tt = theirTime.get(r);
      if (tt !== undefined && tt > x.time) continue; // theirs is later: fetched below
      this.queueSend(p);
      if (tt !== undefined && tt < x.time) theirTime.delete(r); // ours is later
    }
    const byTag = new Map<number, string[]>();
    for (const a of agg) {
      const t = nodeTag(a.id);
      byTag.set(t, [...(byTag.get(t) ?? []), a.id]);
    }
    const want = new Map<string, number[]>();
    for (const r of theirTime.keys()) {
      const [node, reg] = r.split("/").map(Number);
      for (const n of byTag.get(node) ?? []) want.set(n, [...(want.get(n) ?? []), reg]);
    }
    for (const [node, tags] of want) this.tagFetch.push({ node, tags: tags.sort((a, b) => a - b) });
  }

  /**
   * Compares a page of the remote's listing of a node's points with ours
   * over the same range of registers: points it lacks or holds older are
   * pushed, points we lack or hold older fetched.
   */
  private async compareListing(l: Listing): Promise<void> {
    const rem = new Map<bigint, Uint8Array>();
    for (const e of l.entries) rem.set(e.hash, e.digest);
    const pts = (await this.io.store.nodePoints(l.node))
      .map((p) => ({ p, k: registerKey(p) }))
      .sort((a, b) => compareBytes(a.k, b.k));
    for (const { p, k } of pts) {
      if (l.after.length > 0 && compareBytes(k, l.after) <= 0) continue;
      if (l.more && compareBytes(k, l.next) > 0) break; // beyond this page
      const h = registerHash(p.type, p.key);
      const d = rem.get(h);
      rem.delete(h);
      if (d && equalBytes(d, short(pointDigest(p)))) continue;
      if (d) this.addFetch(l.node, h); // both hold a version: LWW keeps the winner on each side
      this.queueSend(p);
    }
    for (const h of rem.keys()) this.addFetch(l.node, h);
    if (l.more) this.list.push({ node: l.node, after: l.next });
  }

  private addFetch(n: string, h: bigint): void {
    const last = this.fetch[this.fetch.length - 1];
    if (last && last.node === n && last.hashes.length < 4096) last.hashes.push(h);
    else this.fetch.push({ node: n, hashes: [h] });
  }

  private queueSend(p: Point): void {
    this.send.push(p);
    this.sendLen += pointCost(p);
    if (this.sendLen >= repairSendBudget) this.flushSend();
  }

  /**
   * Pushes the queued points outside the feed's positions (from = through
   * = 0): the acceptor applies them and keeps its position. It does not
   * wait for the ack; the round waits for every push before it ends.
   */
  private flushSend(): void {
    if (this.send.length === 0) return;
    const b = encodeMessage("push", { from: 0n, through: 0n, idle: false, points: encodeBatch(this.send) });
    this.stats.bytesOut += b.length;
    this.stats.sent += this.send.length;
    this.send = [];
    this.sendLen = 0;
    this.sendAfter = true;
    this.pushes.push(
      this.io.push(b).then(
        (m) => {
          this.stats.refused += Number(decodeMessage(m, "ack").rejected);
        },
        (e) => {
          this.pushErr ??= e instanceof Error ? new Error(`repair push: ${e.message}`, { cause: e }) : e;
        },
      ),
    );
  }
}

function keyString(k: Uint8Array): string {
  let s = "";
  for (const x of k) s += x.toString(16).padStart(2, "0");
  return s;
}

/** One pass: a round for every scope root. */
export interface RepairPass {
  /** Every root's round found it equal (true when the replica knows no scope root). */
  equal: boolean;
  rounds: RepairStats[];
  /** The acceptor refused a round (a RemoteError's text); the pass is not equal. */
  error?: string;
}

/** Configures runRepairs. */
export interface RepairLoopConfig {
  io: RepairIO;
  /** The user's node: its parents are the scope roots. */
  user: string;
  /** The mean time between passes that found the scope equal (60 s); each wait is drawn ±10%. */
  intervalMs: number;
  random: () => number;
  /** Resolves when the initial resume is done (or it waited long enough); false when the session ended. */
  waitIdle(): Promise<boolean>;
  /** Resolves after ms, true, or false as soon as the session ends. */
  sleep(ms: number): Promise<boolean>;
  /** Called with every pass, in order. */
  onPass(p: RepairPass): void;
}

/** Runs one pass: a round for each scope root, in order. A RemoteError ends the pass, not the session. */
export async function repairPass(io: RepairIO, user: string, random: () => number = Math.random): Promise<RepairPass> {
  const pass: RepairPass = { equal: true, rounds: [] };
  for (const root of await scopeRoots(io.store, user)) {
    try {
      const st = await repairRound(io, root, random);
      pass.rounds.push(st);
      pass.equal &&= st.equal;
    } catch (e) {
      if (!(e instanceof RemoteError)) throw e;
      pass.equal = false;
      pass.error = e.message;
      break;
    }
  }
  return pass;
}

/**
 * Runs repair for a session as Go dialers do: once the initial resume is
 * done, then every intervalMs ± 10%; a pass that found differences is
 * followed at once by another, at most MaxRoundsInRow in a row. Resolves
 * when the session ends (waitIdle or sleep says so); rejects with the
 * error of a round that failed for another reason than the acceptor's
 * refusal (a timeout, a lost connection), which ends the session.
 */
export async function runRepairs(cfg: RepairLoopConfig): Promise<void> {
  if (!(await cfg.waitIdle())) return;
  for (;;) {
    for (let i = 0; i < MaxRoundsInRow; i++) {
      const p = await repairPass(cfg.io, cfg.user, cfg.random);
      cfg.onPass(p);
      if (p.equal) break;
    }
    const wait = cfg.intervalMs * (0.9 + 0.2 * cfg.random());
    if (!(await cfg.sleep(wait))) return;
  }
}
