// Builds the browser benchmarks for `make bench` (scripts/bench.sh): every
// web/bench/**/*.bench.ts is bundled with what it imports (web/src and the
// tests' helpers in web/test) into web/.build/bench/<name>.bench.js, an ES
// module for node, the way build-tests.mjs builds the tests. It replaces
// web/.build/bench only; `tsc -p web` checks the types.
import { build } from "esbuild";
import { readdirSync, rmSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(web, ".build", "bench");

const entries = readdirSync(join(web, "bench"), { withFileTypes: true, recursive: true })
  .filter((e) => e.isFile() && e.name.endsWith(".bench.ts"))
  .map((e) => join(e.parentPath ?? e.path, e.name));
if (entries.length === 0) {
  console.error("build-bench: no web/bench/**/*.bench.ts");
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: entries,
  outdir: out,
  outbase: join(web, "bench"),
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: "inline",
  external: ["ws", "playwright-core", "esbuild"],
  logLevel: "warning",
});
console.log(`build-bench: ${entries.length} benchmark files -> ${relative(process.cwd(), out) || "."}`);
