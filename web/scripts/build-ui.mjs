// Builds the web UI into web/dist (or the folder given as the first
// argument): app.js, the bundle of src/ui/main.ts with what it imports,
// minified, and the chunks it imports later (nats-<hash>.js: the NATS
// client); index.html and app.css from web/static; and sw.js, the service
// worker that keeps them all for offline reloads, from web/static with
// the list of files filled in. web/dist is
// committed, since `go build` embeds it (web/ui.go); `make web-check`
// builds into a temporary folder and fails when the two differ. esbuild
// is pinned in package-lock.json, so the same sources give the same bytes.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = resolve(process.argv[2] ?? join(web, "dist"));
mkdirSync(out, { recursive: true });
// Earlier builds' chunks go first: web/dist holds exactly one build.
for (const f of readdirSync(out)) if (/^nats-.*\.js$/.test(f)) rmSync(join(out, f));
await build({
  entryPoints: { app: join(web, "src", "ui", "main.ts") },
  outdir: out,
  // nats.ws, most of the bundle, is its own chunk, imported when the link
  // first connects: a reload draws the tree from IndexedDB before it is
  // parsed. Its name carries its content's hash.
  splitting: true,
  chunkNames: "nats-[hash]",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["chrome110", "firefox115", "safari16"],
  minify: true,
  legalComments: "none",
  // nats.ws carries tweetnacl, whose Node fallback requires "crypto"; a
  // browser takes its crypto.getRandomValues branch first.
  external: ["crypto"],
  charset: "utf8",
  logLevel: "warning",
});
const chunks = readdirSync(out).filter((f) => /^nats-.*\.js$/.test(f)).sort();
for (const f of ["index.html", "app.css"]) copyFileSync(join(web, "static", f), join(out, f));
// The service worker keeps every file of the page, the chunks included.
const files = ["/", "/app.js", "/app.css", ...chunks.map((f) => "/" + f)];
const sw = readFileSync(join(web, "static", "sw.js"), "utf8");
if (!sw.includes("/* FILES */")) throw new Error("web/static/sw.js: no /* FILES */ placeholder");
writeFileSync(join(out, "sw.js"), sw.replace(/\/\* FILES \*\/[^\n]*/, `${JSON.stringify(files)};`));
const js = readFileSync(join(out, "app.js"));
const total = ["app.js", "index.html", "app.css", "sw.js", ...chunks].reduce((n, f) => n + gzipSync(readFileSync(join(out, f)), { level: 9 }).length, 0);
console.log(`build-ui: app.js ${js.length} B (${gzipSync(js, { level: 9 }).length} B gzipped); page total ${total} B gzipped -> ${out}`);
