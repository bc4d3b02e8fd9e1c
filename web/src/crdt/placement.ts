// The tree rules of placements (docs/design.md, "Tree rules: placements"):
// a port of crdt/placement.go. A node is in one or more placements: the
// edge it was created under, and each mirror (an edge added without a
// move), starts one. A move moves one placement, so only moves of the same
// placement are exclusive: of two concurrent moves of a node out of the
// same parent the greater wins and the node ends in one place.
//
// resolvePlacements decides over a whole set of registers; resolveRegion
// (region.ts) decides after a change over the part it touched, as the
// store does, and gives the same result.
//
// Where the Go code ranges over a map, the outcome never depends on the
// order (it sorts, or takes a maximum under a total order); the Maps and
// Sets here iterate in insertion order, which is deterministic anyway.

import { NilUUID, compareUUID, type Point } from "./point.ts";
import {
  EdgeMoved, compareEdges, cyclicComponents, edgeFromKey, edgeKey, rankCompare, winsEdge,
  type Edge, type EdgeRegister,
} from "./tree.ts";
import { decisions, isAncestor, rescue, type Decision, type TreeRegion } from "./region.ts";

/**
 * maxPlaces bounds the placement ids one edge write may name (a move that
 * merges several placements): more makes the write's text invalid.
 */
export const maxPlaces = 64;

const mask64 = 0xffffffffffffffffn;

/**
 * placeID returns the id of the placement that a plain edge parent→child
 * written at t starts: the parent and the write's HLC in 16 lowercase hex
 * digits, "<parent>/<hlc>". t is taken as an unsigned 64-bit integer.
 */
export function placeID(parent: string, t: bigint): string {
  return parent + "/" + (t & mask64).toString(16).padStart(16, "0");
}

const placeIDPattern =
  /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/([0-9a-f]{16})$/;

/**
 * parsePlaceID parses one placement id: a UUID in canonical lowercase form
 * (the nil UUID included, as Go's uuid.Parse accepts it), "/", and 16
 * lowercase hex digits. It returns null when id is not one.
 */
export function parsePlaceID(id: string): { parent: string; time: bigint } | null {
  const m = placeIDPattern.exec(id);
  if (m === null) return null;
  return { parent: m[1], time: BigInt("0x" + m[2]) };
}

/**
 * parsePlaces returns the placement ids an edge write's text names,
 * separated by commas, sorted and without repeats, or null when the text
 * is not such a list (empty, malformed or over maxPlaces ids): the write
 * then names no placement.
 */
export function parsePlaces(text: string): string[] | null {
  if (text === "") return null;
  const ids = text.split(",");
  if (ids.length > maxPlaces) return null;
  for (const id of ids) {
    if (parsePlaceID(id) === null) return null;
  }
  ids.sort(); // ASCII only: code unit order is byte order
  return ids.filter((id, i) => i === 0 || id !== ids[i - 1]);
}

/**
 * placesOf returns the placements the edge register r belongs to: those
 * its text names, or, for a plain live edge (a live edge that names none),
 * the one it starts. A tombstone that names none belongs to none.
 */
export function placesOf(r: EdgeRegister): string[] {
  const ids = parsePlaces(r.place);
  if (ids !== null && (r.tombstone || r.moved)) return ids;
  if (!r.tombstone) return [placeID(r.parent, r.time)];
  return [];
}

/**
 * placeOf returns the placement id that the live edge point p holds its
 * child in: the one its text names when a move placed it there (value
 * EdgeMoved), else the one it starts. A move of the child away from p and
 * a deletion of p name it in their text.
 */
export function placeOf(p: Point): string {
  if (parsePlaces(p.text) !== null && p.value === EdgeMoved) return p.text;
  return placeID(p.parent, p.time);
}

/** deletion reports whether r is a tombstone that deletes (not one a move wrote). */
function deletion(r: EdgeRegister): boolean {
  return r.tombstone && !r.moved;
}

/** sameOp reports whether a and b were written by one operation: the same HLC and origin. */
function sameOp(a: EdgeRegister, b: EdgeRegister): boolean {
  return a.time === b.time && a.origin === b.origin;
}

/**
 * Place is one placement while the rules run: its child and id, its
 * registers, greatest (time, origin) first, the edges it has been
 * withdrawn from (edge keys) and the number of active edges it holds.
 */
export class Place {
  regs: EdgeRegister[] = [];
  withdrawn = new Set<string>();
  held = 0;

  constructor(readonly child: string, readonly id: string) {}

  /**
   * current returns the placement's candidate by rules 1 and 2: the live
   * edge of its greatest operation, or null.
   */
  current(): EdgeRegister | null {
    if (this.regs.length === 0 || this.deleted()) {
      return null; // a deletion in the operation wins, as a tombstone wins a tie
    }
    for (const r of this.regs) {
      if (!sameOp(r, this.regs[0])) break;
      if (!r.tombstone) return r; // regs are sorted: the first live one has the greatest rank
    }
    return null;
  }

  /** deleted reports whether the placement's current operation deletes it. */
  deleted(): boolean {
    for (const r of this.regs) {
      if (!sameOp(r, this.regs[0])) break;
      if (deletion(r)) return true;
    }
    return false;
  }

  /**
   * oldFormat reports whether the placement holds no register a
   * placement-format move wrote: a plain edge, which a move written before
   * placements may have placed, so the child's tombstones that name no
   * placement are its history too.
   */
  oldFormat(): boolean {
    return !this.regs.some((r) => r.moved);
  }
}

/**
 * Holder is a placement holding an active edge through a register (for the
 * fallback to a placement's origin, a register made up from its id).
 */
interface Holder {
  pl: Place;
  reg: EdgeRegister;
}

/**
 * Resolver is the state of one resolvePlacements or resolveRegion run.
 * Edges are keyed by edgeKey. A view that throws makes the run throw.
 */
export class Resolver {
  /** Nodes whose registers are loaded. */
  loaded = new Set<string>();
  /** Edges of the loaded children that have a register. */
  known = new Set<string>();
  places: Place[] = [];
  byChild = new Map<string, Place[]>();
  /** The number of active edges into each node. */
  parents = new Map<string, number>();
  /** The parents of those edges. */
  up = new Map<string, Set<string>>();
  active = new Map<string, EdgeRegister>();
  holders = new Map<string, Holder[]>();
  /**
   * The moved-away tombstones that name no placement (moves written before
   * placements), by child: a plain edge withdrawn from a cycle falls back
   * to those its own operation wrote.
   */
  oldTombs = new Map<string, EdgeRegister[]>();

  /** view is null when every child is loaded up front. */
  constructor(readonly view: TreeRegion | null) {}

  parentCount(n: string): number {
    return this.parents.get(n) ?? 0;
  }

  /**
   * addChild loads the registers of every edge into child (one per edge):
   * its placements, each holding its current operation's edge (rules 1, 2).
   */
  addChild(child: string, regs: EdgeRegister[]): void {
    this.loaded.add(child);
    const byKey = new Map<string, Place>();
    const places: Place[] = [];
    for (const r of regs) {
      if (r.child !== child || r.parent === child) continue;
      this.known.add(edgeKey(r.parent, r.child));
      const ids = placesOf(r);
      if (ids.length === 0 && r.tombstone && r.moved) {
        const old = this.oldTombs.get(child);
        if (old) old.push(r);
        else this.oldTombs.set(child, [r]);
      }
      for (const id of ids) {
        let pl = byKey.get(id);
        if (pl === undefined) {
          pl = new Place(child, id);
          byKey.set(id, pl);
          places.push(pl);
        }
        pl.regs.push(r);
      }
    }
    places.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)); // ids are ASCII
    for (const pl of places) {
      this.places.push(pl);
      const mine = this.byChild.get(child);
      if (mine) mine.push(pl);
      else this.byChild.set(child, [pl]);
      pl.regs.sort((a, b) => rankCompare(b, a));
      const c = pl.current();
      if (c !== null) this.hold(pl, c);
    }
  }

  /** hold makes r's edge active for pl. */
  hold(pl: Place, r: EdgeRegister): void {
    const k = edgeKey(r.parent, pl.child);
    const cur = this.active.get(k);
    if (cur === undefined) {
      this.parents.set(pl.child, this.parentCount(pl.child) + 1);
      let ps = this.up.get(pl.child);
      if (ps === undefined) {
        ps = new Set();
        this.up.set(pl.child, ps);
      }
      ps.add(r.parent);
    }
    if (cur === undefined || rankCompare(r, cur) > 0) this.active.set(k, r);
    const hs = this.holders.get(k);
    if (hs) hs.push({ pl, reg: r });
    else this.holders.set(k, [{ pl, reg: r }]);
    pl.held++;
  }

  /**
   * withdraw takes the edge k out of the active edges (it closed a cycle)
   * and makes each placement that held it fall back (rule 3).
   */
  withdraw(k: string): void {
    const e = edgeFromKey(k);
    const hs = this.holders.get(k) ?? [];
    this.active.delete(k);
    this.holders.delete(k);
    this.parents.set(e.child, this.parentCount(e.child) - 1);
    this.up.get(e.child)?.delete(e.parent);
    for (const h of hs) {
      h.pl.held--;
      h.pl.withdrawn.add(k);
      for (const r of this.fallback(h.pl, h.reg)) this.hold(h.pl, r);
    }
    if (this.parentCount(e.child) > 0) return;
    // The node has no place left. Its placements that hold none because
    // the live edge of their last move was overwritten since (by a write
    // of another placement, now withdrawn) fall back as if that move were
    // undone; deleted ones stay deleted.
    for (const pl of this.byChild.get(e.child) ?? []) {
      if (pl.regs.length === 0 || pl.held > 0 || pl.deleted()) continue;
      for (const r of this.fallback(pl, pl.regs[0])) this.hold(pl, r);
    }
  }

  /**
   * victim returns the key of the edge to withdraw from a cycle component
   * comp, the one whose withdrawal loses least. Class 3: an edge into a
   * node that has another active edge from outside comp (the node stays
   * where it also is). Class 2: an edge whose child would fall back (or
   * revive) to a parent outside comp that is not below it. Class 1: one
   * that would fall back outside comp at all. Class 0: any other. The
   * highest class present wins, and within it the greatest (time, origin),
   * then edge bytes.
   */
  victim(comp: Set<string>): string {
    const entered = new Set<string>(); // nodes with an active edge from outside comp
    for (const k of this.active.keys()) {
      const e = edgeFromKey(k);
      if (comp.has(e.child) && !comp.has(e.parent)) entered.add(e.child);
    }
    let best: EdgeRegister | null = null;
    let be: Edge = { parent: "", child: "" };
    let bestClass = -1;
    for (const [k, r] of this.active) {
      const e = edgeFromKey(k);
      if (!comp.has(e.parent) || !comp.has(e.child)) continue;
      let cls = 0;
      if (entered.has(e.child)) {
        cls = 3;
      } else {
        const { out, safe } = this.fallsOutside(e, comp);
        if (safe) cls = 2;
        else if (out) cls = 1;
      }
      if (cls > bestClass || (cls === bestClass &&
          (rankCompare(r, best!) > 0 || (rankCompare(r, best!) === 0 && compareEdges(e, be) > 0)))) {
        best = r;
        be = e;
        bestClass = cls;
      }
    }
    return edgeKey(be.parent, be.child);
  }

  /**
   * fallsOutside reports whether e's child, were e withdrawn, has a place
   * to fall back to outside comp (out), and one that is not below the
   * child either (safe: falling back there closes no cycle, judged over the
   * edges as they are, e included, which can only say no too often), at
   * any step of rule 3's fallback order: through a placement that held e,
   * or through a placement of the child that holds nothing now and would
   * revive (withdraw).
   */
  fallsOutside(e: Edge, comp: Set<string>): { out: boolean; safe: boolean } {
    let out = false;
    let safe = false;
    const check = (pl: Place, r: EdgeRegister): void => {
      for (const x of this.fallbackAll(pl, r, e)) {
        if (comp.has(x.parent)) continue;
        out = true;
        if (!isAncestor(this, e.child, x.parent)) {
          safe = true;
          return;
        }
      }
    };
    for (const h of this.holders.get(edgeKey(e.parent, e.child)) ?? []) {
      check(h.pl, h.reg);
      if (safe) return { out, safe };
    }
    if (this.parentCount(e.child) > 1) {
      return { out, safe }; // no revival: the child keeps an edge inside comp
    }
    for (const pl of this.byChild.get(e.child) ?? []) {
      if (pl.regs.length > 0 && pl.held === 0 && !pl.deleted()) {
        check(pl, pl.regs[0]);
        if (safe) return { out, safe };
      }
    }
    return { out, safe };
  }

  /**
   * fallbackAll returns every place rule 3 could make pl fall back to, at
   * any of its steps, were its edge held through r withdrawn along with
   * the edge without. It leaves pl as it found it.
   */
  fallbackAll(pl: Place, r: EdgeRegister, without: Edge): EdgeRegister[] {
    const added: string[] = [];
    const mark = (k: string): void => {
      if (!pl.withdrawn.has(k)) {
        pl.withdrawn.add(k);
        added.push(k);
      }
    };
    mark(edgeKey(without.parent, without.child));
    const out: EdgeRegister[] = [];
    const bound = pl.regs.length + (this.oldTombs.get(pl.child)?.length ?? 0) + 1;
    while (out.length <= bound) {
      const got = this.fallback(pl, r);
      if (got.length === 0) break;
      out.push(...got);
      for (const x of got) mark(edgeKey(x.parent, pl.child));
    }
    for (const k of added) pl.withdrawn.delete(k);
    return out;
  }

  /**
   * fallback returns where placement pl goes when its edge held through r
   * is withdrawn, in the order of rule 3. It never returns an edge pl was
   * withdrawn from, or one pl holds already.
   */
  fallback(pl: Place, r: EdgeRegister): EdgeRegister[] {
    const usable = (x: EdgeRegister): boolean => {
      const k = edgeKey(x.parent, pl.child);
      if (pl.withdrawn.has(k) || x.parent === pl.child) return false;
      for (const h of this.holders.get(k) ?? []) {
        if (h.pl === pl) return false;
      }
      return true;
    };
    // 1. Its greatest other live edge: an older concurrent move.
    for (const x of pl.regs) {
      if (!x.tombstone && usable(x)) return [x];
    }
    // 2. Every moved-away tombstone of the withdrawn operation: an undone
    // move restores what it took away.
    const old = this.oldTombs.get(pl.child) ?? [];
    const out: EdgeRegister[] = [];
    for (const x of pl.regs) {
      if (x.tombstone && x.moved && sameOp(x, r) && usable(x)) out.push(x);
    }
    if (pl.oldFormat()) {
      for (const x of old) {
        if (sameOp(x, r) && usable(x)) out.push(x);
      }
    }
    if (out.length > 0) return out;
    // 3. Its greatest moved-away tombstone; for a plain edge (which an
    // older move may have written), also the greatest moved-away tombstone
    // of the child that names no placement.
    let best: EdgeRegister | null = null;
    for (const x of pl.regs) {
      if (x.tombstone && x.moved && usable(x)) {
        best = x;
        break;
      }
    }
    if (pl.oldFormat()) {
      for (const x of old) {
        if (usable(x) && (best === null || rankCompare(x, best) > 0)) best = x;
      }
    }
    if (best !== null) return [best];
    // 4. The parent its id names, ranked as the write that started it, when
    // that edge has a register: a text cannot attach a node to a parent it
    // was never under.
    const id = parsePlaceID(pl.id);
    if (id !== null && this.known.has(edgeKey(id.parent, pl.child))) {
      const x: EdgeRegister = {
        parent: id.parent, child: pl.child, tombstone: false, moved: false, place: "",
        time: id.time, origin: NilUUID,
      };
      if (usable(x)) return [x];
    }
    return [];
  }
}

/**
 * mergeEdgeRegisters keeps one register per edge, the LWW winner (winsEdge),
 * sorted by edge. Self-loops are dropped.
 */
export function mergeEdgeRegisters(regs: readonly EdgeRegister[]): EdgeRegister[] {
  const byEdge = new Map<string, EdgeRegister>();
  for (const r of regs) {
    if (r.parent === r.child) continue; // never valid; validation refuses it
    const k = edgeKey(r.parent, r.child);
    const cur = byEdge.get(k);
    if (cur === undefined || winsEdge(r, cur)) byEdge.set(k, r);
  }
  return [...byEdge.values()].sort(compareEdges);
}

/** resolve runs the rules over a whole set of registers and returns their final state. */
function resolve(regs: readonly EdgeRegister[]): Resolver {
  const all = mergeEdgeRegisters(regs);
  const rs = new Resolver(null);
  // all is sorted by (parent, child): group by child, then go in child order.
  const byChild = new Map<string, EdgeRegister[]>();
  for (const r of all) {
    const rs0 = byChild.get(r.child);
    if (rs0) rs0.push(r);
    else byChild.set(r.child, [r]);
  }
  for (const c of [...byChild.keys()].sort(compareUUID)) rs.addChild(c, byChild.get(c)!);
  for (;;) {
    const comps = cyclicComponents(rs.active.keys());
    if (comps.length === 0) break;
    const victims = comps.map((comp) => edgeFromKey(rs.victim(comp))).sort(compareEdges);
    for (const e of victims) rs.withdraw(edgeKey(e.parent, e.child));
  }
  rescue(rs);
  return rs;
}

/**
 * resolvePlacements computes the active edges of the tree from edge
 * registers by the rules of placements (docs/design.md). The result is
 * sorted by (parent, child) and depends only on the set of registers:
 * several registers for one edge are merged by the LWW rule first.
 *
 *  1. A register belongs to the placements its text names (a move's writes
 *     and a deletion's), or, as a plain live edge, starts one. A
 *     placement's current operation is its registers' greatest (time,
 *     origin).
 *  2. The current operation's live edge is the placement's candidate; a
 *     current deletion leaves it none, and so does an operation whose live
 *     edge was overwritten since.
 *  3. While candidates form a cycle, in each cycle component one is
 *     withdrawn, the one whose withdrawal loses least: an edge into a node
 *     entered from outside the component by another active edge; else one
 *     whose child falls back to a parent outside it; else any; within that
 *     class the greatest (time, origin), then parent and child bytes. Each
 *     placement that held it falls back: to its greatest other live edge;
 *     else to every moved-away tombstone of the withdrawn operation; else
 *     to its greatest moved-away tombstone; else to the parent its id
 *     names.
 *
 * A node's active edges therefore depend only on its own registers and on
 * the cycles through it. Visibility (a root reaches the node over active
 * edges) is the caller's: a deleted node hides its subtree.
 */
export function resolvePlacements(regs: readonly EdgeRegister[]): Edge[] {
  return [...resolve(regs).active.keys()].map(edgeFromKey).sort(compareEdges);
}

/**
 * decidePlacements is resolvePlacements with the Decision on every edge
 * that has a register (and on an active edge that has none): what a
 * replica that resolves regionally must hold after any sequence of
 * changes. The Map is keyed by edgeKey, in edge order.
 */
export function decidePlacements(regs: readonly EdgeRegister[]): Map<string, Decision> {
  return decisions(resolve(regs));
}
