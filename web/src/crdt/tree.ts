// The edge registers of the node tree and the graph helpers the tree rules
// use: a port of crdt/tree.go. UUIDs are canonical lowercase strings, so
// comparing two of them as strings orders them as their 16 bytes do.

import { compareUTF8 } from "./lww.ts";
import { compareUUID, type Point } from "./point.ts";

/** A parent→child link of the node tree. */
export interface Edge {
  parent: string;
  child: string;
}

/**
 * EdgeMoved is the value of the tombstone that a move writes on the edge
 * it takes a node away from. A tombstone with any other value (0 by
 * convention) is a deletion. The tree rules tell the two apart: a deleted
 * node stays deleted, a moved one never drops out of the tree.
 */
export const EdgeMoved = 1;

/**
 * EdgeRegister is the winning write of one edge's TypeEdge point: what the
 * tree rules need to know about the edge. The rules never modify a
 * register they are given.
 */
export interface EdgeRegister {
  parent: string;
  child: string;
  tombstone: boolean;
  /**
   * The write has value EdgeMoved. On a tombstone, a move wrote it on the
   * edge it took the child away from; on a live edge (in the placement
   * format, with place), a move placed the child there.
   */
  moved: boolean;
  /**
   * The write's text: the placement ids a move or a deletion names
   * (resolvePlacements); empty on a plain edge.
   */
  place: string;
  /** The write's HLC, an unsigned 64-bit integer. */
  time: bigint;
  origin: string;
}

/**
 * edgeRegisterOf returns the EdgeRegister that the TypeEdge point p holds.
 * The caller checks isEdge(p).
 */
export function edgeRegisterOf(p: Point): EdgeRegister {
  return {
    parent: p.parent, child: p.node, tombstone: p.tombstone,
    moved: p.value === EdgeMoved, place: p.text, time: p.time, origin: p.origin,
  };
}

/** edgeOf returns the edge r describes. */
export function edgeOf(r: EdgeRegister): Edge {
  return { parent: r.parent, child: r.child };
}

/**
 * edgeKey is the Map key of the edge parent→child (Go uses the Edge struct
 * itself as a map key). edgeFromKey inverts it.
 */
export function edgeKey(parent: string, child: string): string {
  return parent + ">" + child;
}

/** edgeFromKey returns the edge whose key is k (made by edgeKey). */
export function edgeFromKey(k: string): Edge {
  const i = k.indexOf(">");
  return { parent: k.slice(0, i), child: k.slice(i + 1) };
}

function compareTime(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * rankCompare orders edges by (time, origin), then by parent and child
 * bytes so that even writes sharing a time and origin have a fixed order.
 */
export function rankCompare(a: EdgeRegister, b: EdgeRegister): number {
  return compareTime(a.time, b.time) || compareUUID(a.origin, b.origin) ||
    compareUUID(a.parent, b.parent) || compareUUID(a.child, b.child);
}

/**
 * winsEdge reports whether a beats b as writes to the same edge register,
 * by the LWW rule of Compare restricted to the fields an EdgeRegister
 * holds: (time, origin), then tombstone beats live, then moved beats not,
 * then the greater place (UTF-8 bytes).
 */
export function winsEdge(a: EdgeRegister, b: EdgeRegister): boolean {
  if (a.time !== b.time) return a.time > b.time;
  const c = compareUUID(a.origin, b.origin);
  if (c !== 0) return c > 0;
  if (a.tombstone !== b.tombstone) return a.tombstone;
  if (a.moved !== b.moved) return a.moved;
  return compareUTF8(a.place, b.place) > 0;
}

/** compareEdges orders edges by parent bytes, then child bytes. */
export function compareEdges(a: Edge, b: Edge): number {
  return compareUUID(a.parent, b.parent) || compareUUID(a.child, b.child);
}

/**
 * cyclicComponents returns the strongly connected components of the graph
 * of the given edges (keys made by edgeKey) that contain a cycle: more
 * than one node (self-loops are never active). It uses an iterative Tarjan
 * so deep trees cannot overflow the stack. Components are sets, so the
 * order of the edges changes at most the order of the result.
 */
export function cyclicComponents(edges: Iterable<string>): Set<string>[] {
  const adj = new Map<string, string[]>();
  for (const k of edges) {
    const e = edgeFromKey(k);
    const out = adj.get(e.parent);
    if (out) out.push(e.child);
    else adj.set(e.parent, [e.child]);
  }
  // Sorting is not needed for correctness (components are unique) but
  // keeps the traversal reproducible when debugging.
  const nodes = [...adj.keys()].sort(compareUUID);

  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const comps: Set<string>[] = [];
  let next = 0;

  for (const start of nodes) {
    if (index.has(start)) continue;
    const call: { node: string; edge: number }[] = [{ node: start, edge: 0 }];
    index.set(start, next);
    low.set(start, next);
    next++;
    stack.push(start);
    onStack.add(start);
    while (call.length > 0) {
      const f = call[call.length - 1];
      const out = adj.get(f.node) ?? [];
      if (f.edge < out.length) {
        const w = out[f.edge];
        f.edge++;
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next);
          next++;
          stack.push(w);
          onStack.add(w);
          call.push({ node: w, edge: 0 });
        } else if (onStack.has(w) && index.get(w)! < low.get(f.node)!) {
          low.set(f.node, index.get(w)!);
        }
        continue;
      }
      const v = f.node;
      call.pop();
      if (call.length > 0) {
        const p = call[call.length - 1].node;
        if (low.get(v)! < low.get(p)!) low.set(p, low.get(v)!);
      }
      if (low.get(v) === index.get(v)) {
        const comp = new Set<string>();
        for (;;) {
          const w = stack.pop()!;
          onStack.delete(w);
          comp.add(w);
          if (w === v) break;
        }
        if (comp.size > 1) comps.push(comp);
      }
    }
  }
  return comps;
}
