// Builds the web UI into web/dist (or the folder given as the first
// argument): app.js, the bundle of src/ui/main.ts with what it imports,
// minified; and index.html, app.css and sw.js (the service worker that
// keeps them for offline reloads) from web/static. web/dist is
// committed, since `go build` embeds it (web/ui.go); `make web-check`
// builds into a temporary folder and fails when the two differ. esbuild
// is pinned in package-lock.json, so the same sources give the same bytes.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = resolve(process.argv[2] ?? join(web, "dist"));
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(web, "src", "ui", "main.ts")],
  outfile: join(out, "app.js"),
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
for (const f of ["index.html", "app.css", "sw.js"]) copyFileSync(join(web, "static", f), join(out, f));
const js = readFileSync(join(out, "app.js"));
const total = ["app.js", "index.html", "app.css", "sw.js"].reduce((n, f) => n + gzipSync(readFileSync(join(out, f)), { level: 9 }).length, 0);
console.log(`build-ui: app.js ${js.length} B (${gzipSync(js, { level: 9 }).length} B gzipped); page total ${total} B gzipped -> ${out}`);
