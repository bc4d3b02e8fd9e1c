// Loads the language-neutral vectors of testdata/crdt and testdata/wire
// (see their README.md).

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseUint64 } from "../src/crdt/bytes.ts";
import type { Point } from "../src/crdt/point.ts";

/** The repository root: the nearest directory above this file (or the working directory) with testdata/crdt. */
function repoRoot(): string {
  for (const start of [dirname(fileURLToPath(import.meta.url)), process.cwd()]) {
    for (let dir = start; ; dir = dirname(dir)) {
      if (existsSync(join(dir, "testdata", "crdt", "README.md"))) return dir;
      if (dirname(dir) === dir) break;
    }
  }
  throw new Error("vectors: no testdata/crdt above the test or the working directory");
}

/** Every case has a unique name; the rest is per file. */
export interface VectorCase {
  name: string;
  note?: string;
}

/** Returns the cases of testdata/<area>/<file>.json, checking that there are some and that names are unique. */
export function loadVectors<C extends VectorCase>(file: string, area: "crdt" | "wire" = "crdt"): C[] {
  const path = join(repoRoot(), "testdata", area, `${file}.json`);
  const doc = JSON.parse(readFileSync(path, "utf8")) as { description?: unknown; cases?: unknown };
  if (typeof doc.description !== "string" || !Array.isArray(doc.cases) || doc.cases.length === 0) {
    throw new Error(`${path}: want {"description": string, "cases": [...]} with at least one case`);
  }
  const seen = new Set<string>();
  for (const c of doc.cases as C[]) {
    if (typeof c.name !== "string" || seen.has(c.name)) throw new Error(`${path}: case name ${JSON.stringify(c.name)} missing or repeated`);
    seen.add(c.name);
  }
  return doc.cases as C[];
}

/** A point in the public record style of the vectors. */
export interface VecPoint {
  node: string;
  parent?: string;
  type: string;
  key: string;
  value: number;
  text: string;
  tombstone: boolean;
  hlc: string;
  origin: string;
}

/** Parses a decimal 64-bit vector value with BigInt; throws on anything else. */
export function u64(field: string, s: string): bigint {
  const v = parseUint64(s);
  if (v === undefined) throw new Error(`${field}: ${JSON.stringify(s)} is not an unsigned 64-bit decimal`);
  return v;
}

/** Converts a vector point to a Point (no parent: ""). */
export function toPoint(v: VecPoint): Point {
  return {
    node: v.node,
    parent: v.parent ?? "",
    type: v.type,
    key: v.key,
    value: v.value,
    text: v.text,
    tombstone: v.tombstone,
    time: u64("hlc", v.hlc),
    origin: v.origin,
  };
}
