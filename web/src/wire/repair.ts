// Digest repair messages: a port of transport/repair.go. The lists are
// fixed-layout binary records in msgpack bins (docs/protocol.md, "Digest
// repair"): UUIDs as 16 bytes, digests as 16 (short digests 8), integers
// big-endian, counts and lengths as uvarints. A decoder checks every count
// against the bytes left before it reads the records, so nothing it
// allocates exceeds its input. A nil and an empty list are the same bytes:
// decoded lists are always arrays, absent bytes an empty Uint8Array.

import { uuidBytes, uuidFromBytes } from "../crdt/ids.ts";
import { MaxKeyLen, MaxTypeLen } from "../crdt/point.ts";
import { frameHeader } from "./frame.ts";
import { frameBody, readStruct, writeStruct, type Field } from "./messages.ts";
import { MalformedError, Reader, Writer } from "./msgpack.ts";

/** The most a NodeSub's density may be (transport.MaxDensity). */
export const MaxDensity = 64;
/** The number of query kinds: the length of RepairReply.answered. */
export const AnsKinds = 7;
const maxCursor = MaxTypeLen + MaxKeyLen + 64;
const maxSketchCells = 16 * 1024; // crdt.MaxSketchCells
const maxChildSketchBytes = maxSketchCells * (1 + 16 + 4);
const childRecordLen = 16 + 1 + 8 + 8 + 8;

export interface NodeSub {
  node: string;
  sub: Uint8Array; // 16 bytes, a crdt digest big-endian
  own: Uint8Array;
  density: number;
}
export interface ListQuery {
  node: string;
  after: Uint8Array;
}
export interface BucketQuery {
  node: string;
  bucket: number;
}
export interface FetchQuery {
  node: string;
  hashes: bigint[];
}
export interface EdgeQuery {
  child: string;
  parent: string;
}
export interface ChildSketchQuery {
  node: string;
  buckets: Uint8Array; // 32 bytes: bit b%8 of byte b/8 for bucket b
  salt: number;
  sketch: Uint8Array;
}
export interface TagFetch {
  node: string;
  tags: number[];
}
export interface RepairRequest {
  root: string;
  compare: NodeSub[];
  list: ListQuery[];
  buckets: BucketQuery[];
  fetch: FetchQuery[];
  edges: EdgeQuery[];
  childSketch: ChildSketchQuery[];
  tagFetch: TagFetch[];
}
export interface ChildSum {
  id: string;
  active: boolean;
  edge: Uint8Array; // short digests, 8 bytes each
  own: Uint8Array;
  below: Uint8Array;
}
export interface BucketSum {
  bucket: number;
  digest: Uint8Array;
}
export interface Summary {
  node: string;
  own: Uint8Array;
  children: ChildSum[];
  buckets: BucketSum[];
  many: boolean;
  belowEqual: boolean;
  aggregated: boolean;
}
export interface ChildFlags {
  tag: bigint;
  edge: boolean;
  own: boolean;
  below: boolean;
  aggregated: boolean;
}
export interface ChildDiff {
  node: string;
  ok: boolean;
  both: ChildFlags[];
  children: ChildSum[];
  missing: bigint[];
}
export interface ListEntry {
  hash: bigint;
  digest: Uint8Array;
}
export interface Listing {
  node: string;
  entries: ListEntry[];
  more: boolean;
  next: Uint8Array;
  after: Uint8Array;
}
export interface BucketChildren {
  node: string;
  bucket: number;
  children: ChildSum[];
}
export interface RepairReply {
  summaries: Summary[];
  listings: Listing[];
  buckets: BucketChildren[];
  childDiffs: ChildDiff[];
  points: Uint8Array;
  answered: bigint[];
  aggregate: Uint8Array;
}

const b = (key: string, name: string): Field => ({ key, name, kind: "bin", omitEmpty: true });
const requestWire: Field[] = [
  { key: "root", name: "root", kind: "uuid" },
  b("cmp", "compare"),
  b("list", "list"),
  b("bkt", "buckets"),
  b("fetch", "fetch"),
  b("edges", "edges"),
  b("csk", "childSketch"),
  b("ftag", "tagFetch"),
];
const replyWire: Field[] = [
  b("sums", "summaries"),
  b("lists", "listings"),
  b("bkts", "buckets"),
  b("pts", "points"),
  { key: "done", name: "answered", kind: "ints" },
  b("cdiff", "childDiffs"),
  b("agg", "aggregate"),
];

function fixedLen(x: Uint8Array, n: number, what: string): Uint8Array {
  if (x.length !== n) throw new RangeError(`${what}: ${x.length} bytes, want ${n}`);
  return x;
}

function records(fill: (w: Writer) => void): Uint8Array {
  const w = new Writer();
  fill(w);
  return w.result();
}

function lenBytes(w: Writer, x: Uint8Array): void {
  w.uvarint(x.length);
  w.raw(x);
}

function writeChild(w: Writer, c: ChildSum): void {
  w.raw(uuidBytes(c.id));
  w.byte(c.active ? 1 : 0);
  w.raw(fixedLen(c.edge, 8, "edge"));
  w.raw(fixedLen(c.own, 8, "own"));
  w.raw(fixedLen(c.below, 8, "below"));
}

/** Returns the frame of r (Go's EncodeRepairRequest). */
export function encodeRepairRequest(r: RepairRequest): Uint8Array {
  const wire = {
    root: r.root,
    compare: records((w) => {
      for (const c of r.compare) {
        w.raw(uuidBytes(c.node));
        w.raw(fixedLen(c.sub, 16, "sub"));
        w.raw(fixedLen(c.own, 16, "own"));
        w.byte(c.density);
      }
    }),
    list: records((w) => {
      for (const l of r.list) {
        w.raw(uuidBytes(l.node));
        lenBytes(w, l.after);
      }
    }),
    buckets: records((w) => {
      for (const q of r.buckets) {
        w.raw(uuidBytes(q.node));
        w.byte(q.bucket);
      }
    }),
    fetch: records((w) => {
      for (const q of r.fetch) {
        w.raw(uuidBytes(q.node));
        w.uvarint(q.hashes.length);
        for (const h of q.hashes) w.fixed(8, h);
      }
    }),
    edges: records((w) => {
      for (const e of r.edges) {
        w.raw(uuidBytes(e.child));
        w.raw(uuidBytes(e.parent));
      }
    }),
    childSketch: records((w) => {
      for (const c of r.childSketch) {
        w.raw(uuidBytes(c.node));
        w.raw(fixedLen(c.buckets, 32, "buckets"));
        w.fixed(4, c.salt);
        lenBytes(w, c.sketch);
      }
    }),
    tagFetch: records((w) => {
      for (const t of r.tagFetch) {
        w.raw(uuidBytes(t.node));
        w.uvarint(t.tags.length);
        for (const x of t.tags) w.fixed(4, x);
      }
    }),
  };
  const w = new Writer();
  w.raw(frameHeader("repair"));
  writeStruct(w, requestWire, wire);
  return w.result();
}

/** Returns the frame of r (Go's EncodeRepairReply). */
export function encodeRepairReply(r: RepairReply): Uint8Array {
  if (r.answered.length !== AnsKinds) throw new RangeError(`answered: ${r.answered.length} counts, want ${AnsKinds}`);
  const wire = {
    summaries: records((w) => {
      for (const s of r.summaries) {
        w.raw(uuidBytes(s.node));
        w.raw(fixedLen(s.own, 16, "own"));
        const flags = s.aggregated ? sumAggregated : 0;
        if (s.belowEqual) w.byte(flags | sumBelowEqual);
        else if (s.many) {
          w.byte(flags | sumMany);
          w.uvarint(s.buckets.length);
          for (const x of s.buckets) {
            w.byte(x.bucket);
            w.raw(fixedLen(x.digest, 8, "digest"));
          }
        } else {
          w.byte(flags);
          w.uvarint(s.children.length);
          for (const c of s.children) writeChild(w, c);
        }
      }
    }),
    listings: records((w) => {
      for (const l of r.listings) {
        w.raw(uuidBytes(l.node));
        lenBytes(w, l.after);
        w.byte(l.more ? 1 : 0);
        lenBytes(w, l.next);
        w.uvarint(l.entries.length);
        for (const e of l.entries) {
          w.fixed(8, e.hash);
          w.raw(fixedLen(e.digest, 8, "digest"));
        }
      }
    }),
    buckets: records((w) => {
      for (const x of r.buckets) {
        w.raw(uuidBytes(x.node));
        w.byte(x.bucket);
        w.uvarint(x.children.length);
        for (const c of x.children) writeChild(w, c);
      }
    }),
    points: r.points,
    answered: r.answered,
    childDiffs: records((w) => {
      for (const d of r.childDiffs) {
        w.raw(uuidBytes(d.node));
        if (!d.ok) {
          w.byte(0);
          continue;
        }
        w.byte(1);
        w.uvarint(d.both.length);
        for (const c of d.both) {
          w.fixed(8, c.tag);
          w.byte((c.edge ? diffEdge : 0) | (c.own ? diffOwn : 0) | (c.below ? diffBelow : 0) | (c.aggregated ? diffAggregated : 0));
        }
        w.uvarint(d.children.length);
        for (const c of d.children) writeChild(w, c);
        w.uvarint(d.missing.length);
        for (const m of d.missing) w.fixed(8, m);
      }
    }),
    aggregate: r.aggregate,
  };
  const w = new Writer();
  w.raw(frameHeader("repair-reply"));
  writeStruct(w, replyWire, wire);
  return w.result();
}

const sumMany = 1;
const sumBelowEqual = 2;
const sumAggregated = 4;
const diffEdge = 1;
const diffOwn = 2;
const diffBelow = 4;
const diffAggregated = 8;

/** Reads records from a bin; every read is bounds-checked and throws a MalformedError naming the list and field. */
class Records {
  private readonly r: Reader;
  constructor(
    bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.r = new Reader(bytes);
  }

  fail(field: string): never {
    throw new MalformedError(`repair ${this.what}: bad ${field}`);
  }

  more(): boolean {
    return this.r.rest() > 0;
  }

  take(n: number, field: string): Uint8Array {
    if (this.r.rest() < n) this.fail(field);
    return this.r.take(n, field).slice();
  }

  id(): string {
    return uuidFromBytes(this.take(16, "uuid"));
  }

  byte(field = "byte"): number {
    return this.take(1, field)[0];
  }

  flag(field: string): boolean {
    const x = this.byte(field);
    if (x > 1) this.fail(field);
    return x === 1;
  }

  u64(): bigint {
    if (this.r.rest() < 8) this.fail("hash");
    return this.r.fixed64("hash");
  }

  u32(field: string): number {
    if (this.r.rest() < 4) this.fail(field);
    return this.r.fixed(4, field);
  }

  private uvarint(field: string): bigint {
    let x = 0n;
    for (let i = 0, s = 0n; i < 10; i++, s += 7n) {
      if (this.r.rest() === 0) this.fail(field);
      const c = this.r.code(field);
      if (c < 0x80) {
        if (i === 9 && c > 1) this.fail(field); // overflows 64 bits (Go's binary.Uvarint)
        return x | (BigInt(c) << s);
      }
      x |= BigInt(c & 0x7f) << s;
    }
    return this.fail(field);
  }

  /** A record count, refused when the bytes left cannot hold that many records of min bytes. */
  count(min: number): number {
    const n = this.uvarint("count");
    if (n > BigInt(Math.floor(this.r.rest() / min))) this.fail("count");
    return Number(n);
  }

  /** A length-prefixed byte string of at most limit bytes. */
  bytes(limit: number): Uint8Array {
    const n = this.uvarint("length");
    if (n > BigInt(limit) || n > BigInt(this.r.rest())) this.fail("length");
    return this.take(Number(n), "bytes");
  }

  child(): ChildSum {
    const id = this.id();
    const active = this.flag("child flag");
    return { id, active, edge: this.take(8, "digest"), own: this.take(8, "digest"), below: this.take(8, "digest") };
  }
}

function list<T>(b: Uint8Array, what: string, read: (rd: Records) => T): T[] {
  const rd = new Records(b, what);
  const out: T[] = [];
  while (rd.more()) out.push(read(rd));
  return out;
}

function repeat<T>(n: number, read: () => T): T[] {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(read());
  return out;
}

/** Decodes a repair frame of at most limit bytes (Go's DecodeRepairRequest). Throws what decodeMessage throws. */
export function decodeRepairRequest(frame: Uint8Array, limit = 0): RepairRequest {
  const w = readStruct(new Reader(frameBody(frame, "repair", limit)), requestWire, "repair") as Record<string, Uint8Array | null | string>;
  const bin = (k: string): Uint8Array => (w[k] as Uint8Array | null) ?? new Uint8Array(0);
  return {
    root: w.root as string,
    compare: list(bin("compare"), "compare", (rd) => {
      const c = { node: rd.id(), sub: rd.take(16, "digest"), own: rd.take(16, "digest"), density: rd.byte() };
      if (c.density > MaxDensity) rd.fail("density");
      return c;
    }),
    list: list(bin("list"), "list", (rd) => ({ node: rd.id(), after: rd.bytes(maxCursor) })),
    buckets: list(bin("buckets"), "buckets", (rd) => ({ node: rd.id(), bucket: rd.byte() })),
    fetch: list(bin("fetch"), "fetch", (rd) => ({ node: rd.id(), hashes: repeat(rd.count(8), () => rd.u64()) })),
    edges: list(bin("edges"), "edges", (rd) => ({ child: rd.id(), parent: rd.id() })),
    childSketch: list(bin("childSketch"), "child sketch", (rd) => ({
      node: rd.id(),
      buckets: rd.take(32, "buckets"),
      salt: rd.u32("salt"),
      sketch: rd.bytes(maxChildSketchBytes),
    })),
    tagFetch: list(bin("tagFetch"), "tag fetch", (rd) => ({ node: rd.id(), tags: repeat(rd.count(4), () => rd.u32("tag")) })),
  };
}

/** Decodes a repair-reply frame of at most limit bytes (Go's DecodeRepairReply). Throws what decodeMessage throws. */
export function decodeRepairReply(frame: Uint8Array, limit = 0): RepairReply {
  const w = readStruct(new Reader(frameBody(frame, "repair-reply", limit)), replyWire, "repair-reply");
  const bin = (k: string): Uint8Array => (w[k] as Uint8Array | null) ?? new Uint8Array(0);
  const answered = w.answered as bigint[];
  if (answered.length !== AnsKinds) throw new MalformedError(`repair reply: ${answered.length} answered counts`);
  if (answered.some((n) => n < 0n)) throw new MalformedError("repair reply: negative count");
  return {
    points: bin("points"),
    answered,
    aggregate: bin("aggregate"),
    summaries: list(bin("summaries"), "summaries", (rd) => {
      const s: Summary = { node: rd.id(), own: rd.take(16, "digest"), children: [], buckets: [], many: false, belowEqual: false, aggregated: false };
      const f = rd.byte();
      s.aggregated = (f & sumAggregated) !== 0;
      switch (f & ~sumAggregated) {
        case sumBelowEqual:
          s.belowEqual = true;
          break;
        case 0:
          s.children = repeat(rd.count(childRecordLen), () => rd.child());
          break;
        case sumMany:
          s.many = true;
          s.buckets = repeat(rd.count(9), () => ({ bucket: rd.byte(), digest: rd.take(8, "digest") }));
          break;
        default:
          rd.fail("summary kind");
      }
      return s;
    }),
    childDiffs: list(bin("childDiffs"), "child diffs", (rd) => {
      const d: ChildDiff = { node: rd.id(), ok: false, both: [], children: [], missing: [] };
      d.ok = rd.flag("child diff ok");
      if (d.ok) {
        d.both = repeat(rd.count(9), () => {
          const tag = rd.u64();
          const f = rd.byte();
          if ((f & ~(diffEdge | diffOwn | diffBelow | diffAggregated)) !== 0) rd.fail("child diff flags");
          return { tag, edge: (f & diffEdge) !== 0, own: (f & diffOwn) !== 0, below: (f & diffBelow) !== 0, aggregated: (f & diffAggregated) !== 0 };
        });
        d.children = repeat(rd.count(childRecordLen), () => rd.child());
        d.missing = repeat(rd.count(8), () => rd.u64());
      }
      return d;
    }),
    listings: list(bin("listings"), "listings", (rd) => {
      const node = rd.id();
      const after = rd.bytes(maxCursor);
      const more = rd.flag("listing more");
      const next = rd.bytes(maxCursor);
      const entries = repeat(rd.count(16), () => ({ hash: rd.u64(), digest: rd.take(8, "digest") }));
      return { node, entries, more, next, after };
    }),
    buckets: list(bin("buckets"), "buckets", (rd) => ({ node: rd.id(), bucket: rd.byte(), children: repeat(rd.count(childRecordLen), () => rd.child()) })),
  };
}
