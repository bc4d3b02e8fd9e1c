// Builds the tests for `node --test`: every web/test/**/*.test.ts is bundled
// with what it imports from web/src into web/.build/test/<name>.test.js, an
// ES module (Node 20 cannot run TypeScript). esbuild only strips types;
// `npm run typecheck` (tsc) checks them.
import { build } from "esbuild";
import { readdirSync, rmSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(web, ".build");

function find(dir, suffix) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(suffix))
    .map((e) => join(e.parentPath ?? e.path, e.name));
}

const entries = find(join(web, "test"), ".test.ts");
if (entries.length === 0) {
  console.error("build-tests: no web/test/**/*.test.ts");
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: entries,
  outdir: join(out, "test"),
  outbase: join(web, "test"),
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: "inline",
  // Node-only CommonJS packages (ws: the WebSocket of the link tests) are
  // imported at run time from web/node_modules, not bundled.
  external: ["ws", "playwright-core"],
  logLevel: "warning",
});
console.log(`build-tests: ${entries.length} test files -> ${relative(process.cwd(), join(out, "test")) || "."}`);
