// Regional resolution of the tree rules and the last steps of every run:
// a port of crdt/region.go. Errors of a TreeRegion are exceptions here:
// a view that throws makes resolveRegion throw the same error.

import { compareUUID } from "./point.ts";
import { Place, Resolver } from "./placement.ts";
import {
  compareEdges, cyclicComponents, edgeFromKey, edgeKey, rankCompare, type EdgeRegister,
} from "./tree.ts";

/**
 * TreeRegion is what resolveRegion reads of a replica's tree: the edge
 * registers into a node, and the active parents of a node as they were
 * decided before (for the nodes it does not load). Both are synchronous;
 * either may throw, and resolveRegion then throws the same error.
 */
export interface TreeRegion {
  /** into returns the register of every edge into child, one per edge. */
  into(child: string): EdgeRegister[];
  /** activeParents returns the parents of child's active edges, as last decided. */
  activeParents(child: string): string[];
}

/** Decision is the outcome for one edge into a loaded node. */
export interface Decision {
  /** The edge is part of the tree. */
  active: boolean;
  /**
   * The state is not what the edge's register says by itself — active
   * while tombstoned or not the current operation of its placement (fallen
   * back, rescued), inactive while live — or the edge is into a node left
   * with no place. A later change must look at the edge's node again
   * (resolveRegion's seeds).
   */
  irregular: boolean;
}

/**
 * resolveRegion decides the active edges after a change without reading
 * the whole tree, and gives exactly what resolvePlacements over every
 * register would give, provided that:
 *   - the active edges the region reports for the nodes outside seeds are
 *     what resolvePlacements gave before the change (an acyclic tree);
 *   - seeds holds every node with an edge whose register changed, and every
 *     node with an edge the last decision called irregular.
 *
 * It loads the seeds' registers and resets their placements to their
 * current operations; a cycle can then only pass through a seed, and it is
 * found by walking up from it. Each cycle's nodes are loaded too and rule 3
 * runs on exactly the components the global run would find. It returns the
 * decision on every edge into every node it loaded (keyed by edgeKey, in
 * edge order); the edges into other nodes keep theirs. The cost is the
 * seeds' registers and their ancestors, not the tree.
 */
export function resolveRegion(view: TreeRegion, seeds: readonly string[]): Map<string, Decision> {
  const rs = new Resolver(view);
  const sorted = [...new Set(seeds)].sort(compareUUID);
  for (const c of sorted) load(rs, c);
  for (;;) {
    const comps = regionComponents(rs);
    if (comps.length === 0) break;
    let grew = false;
    for (const comp of comps) {
      for (const n of [...comp].sort(compareUUID)) {
        if (!rs.loaded.has(n)) {
          load(rs, n);
          grew = true;
        }
      }
    }
    if (grew) continue; // the components again, over loaded nodes only
    const victims = comps.map((comp) => edgeFromKey(rs.victim(comp))).sort(compareEdges);
    for (const e of victims) rs.withdraw(edgeKey(e.parent, e.child));
  }
  rescue(rs);
  return decisions(rs);
}

/**
 * decisions returns the Decision of every edge into a loaded node, keyed by
 * edgeKey, in edge order.
 */
export function decisions(rs: Resolver): Map<string, Decision> {
  const natural = new Set<string>();
  const live = new Set<string>();
  for (const n of rs.loaded) {
    for (const pl of rs.byChild.get(n) ?? []) {
      const c = pl.current();
      if (c !== null) natural.add(edgeKey(c.parent, c.child));
      for (const r of pl.regs) {
        if (!r.tombstone) live.add(edgeKey(r.parent, r.child));
      }
    }
  }
  const lost = new Set(lostNodes(rs));
  const out = new Map<string, Decision>();
  for (const k of rs.known) {
    const a = rs.active.has(k);
    out.set(k, { active: a, irregular: a !== live.has(k) || a !== natural.has(k) || lost.has(edgeFromKey(k).child) });
  }
  for (const k of rs.active.keys()) {
    if (!out.has(k)) out.set(k, { active: true, irregular: true });
  }
  const keys = [...out.keys()].sort((a, b) => compareEdges(edgeFromKey(a), edgeFromKey(b)));
  return new Map(keys.map((k) => [k, out.get(k)!]));
}

/** load reads child's registers from the view and loads them. */
function load(rs: Resolver, child: string): void {
  const regs = rs.view!.into(child).filter((r) => r.child === child);
  regs.sort(compareEdges);
  rs.addChild(child, regs);
}

/**
 * activeParents returns n's active parents, in byte order for a loaded
 * node: the resolver's for a loaded node, the view's for another.
 */
export function activeParents(rs: Resolver, n: string): string[] {
  if (!rs.loaded.has(n)) {
    if (rs.view === null) return []; // a global run loads every node with a register
    return rs.view.activeParents(n);
  }
  return [...(rs.up.get(n) ?? [])].sort(compareUUID);
}

/**
 * regionComponents returns the cycle components of the active edges that
 * pass through a loaded node: every one there is, when the nodes not
 * loaded hold an acyclic tree. A component through node c lies among c's
 * ancestors, so each is found by a walk up from c and a Tarjan over what
 * the walk saw.
 */
function regionComponents(rs: Resolver): Set<string>[] {
  const starts = [...rs.loaded].sort(compareUUID);
  const seen = new Set<string>();
  const comps: Set<string>[] = [];
  for (const c of starts) {
    if (seen.has(c) || rs.parentCount(c) === 0) continue;
    // The walk up from c: every ancestor, and the active edges among them.
    const sub = new Set<string>();
    const anc = new Set<string>([c]);
    const stack = [c];
    while (stack.length > 0) {
      const n = stack.pop()!;
      for (const p of activeParents(rs, n)) {
        sub.add(edgeKey(p, n));
        if (!anc.has(p)) {
          anc.add(p);
          stack.push(p);
        }
      }
    }
    for (const comp of cyclicComponents(sub)) {
      if (!comp.has(c)) continue; // found again from one of its own nodes
      for (const n of comp) seen.add(n);
      comps.push(comp);
    }
  }
  return comps;
}

/**
 * rescue is the last step of rule 3: a loaded node left with no active
 * edge, though not every placement of it is deleted, is placed by its
 * greatest register (a deletion aside) that closes no cycle. Its
 * placements' histories were overwritten past what the fallback order
 * reaches (moves written before placements name none). Nodes go in byte
 * order; each check walks up from the candidate parent. A node that no
 * register can place stays where nothing reaches it, and is reported by
 * lostNodes so that the next change looks at it again.
 */
export function rescue(rs: Resolver): void {
  for (const n of lostNodes(rs)) {
    const regs: EdgeRegister[] = [];
    const seen = new Set<EdgeRegister>();
    for (const pl of rs.byChild.get(n) ?? []) {
      for (const r of pl.regs) {
        if (!seen.has(r) && !(r.tombstone && !r.moved)) {
          seen.add(r);
          regs.push(r);
        }
      }
    }
    for (const r of rs.oldTombs.get(n) ?? []) {
      if (!seen.has(r)) {
        seen.add(r);
        regs.push(r);
      }
    }
    regs.sort((a, b) => rankCompare(b, a) || compareEdges(a, b));
    for (const r of regs) {
      if (!isAncestor(rs, n, r.parent)) {
        let pls = rs.byChild.get(n);
        if (pls === undefined || pls.length === 0) {
          pls = [new Place(n, "")];
          rs.byChild.set(n, pls);
        }
        rs.hold(pls[0], r);
        break;
      }
    }
  }
}

/**
 * lostNodes returns the loaded nodes that have no active edge though they
 * should have one (placeable), in byte order.
 */
export function lostNodes(rs: Resolver): string[] {
  const lost: string[] = [];
  for (const n of rs.loaded) {
    if (rs.parentCount(n) === 0 && placeable(rs, n)) lost.push(n);
  }
  return lost.sort(compareUUID);
}

/**
 * placeable reports whether n should have a place: a placement of it is
 * not deleted, or an older move's tombstone names a place it held.
 */
function placeable(rs: Resolver, n: string): boolean {
  if ((rs.oldTombs.get(n)?.length ?? 0) > 0) return true;
  for (const pl of rs.byChild.get(n) ?? []) {
    if (pl.regs.length > 0 && !pl.deleted()) return true;
  }
  return false;
}

/** isAncestor reports whether a is p or one of p's ancestors over active edges. */
export function isAncestor(rs: Resolver, a: string, p: string): boolean {
  const seen = new Set<string>([p]);
  const stack = [p];
  while (stack.length > 0) {
    const x = stack.pop()!;
    if (x === a) return true;
    for (const q of activeParents(rs, x)) {
      if (!seen.has(q)) {
        seen.add(q);
        stack.push(q);
      }
    }
  }
  return false;
}
