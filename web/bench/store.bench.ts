// The browser store's cost for a node of many registers (web/src/store,
// index.ts "A node with many registers"), in a real Chromium (Debian's,
// driven by playwright-core): a page on a loopback HTTP server loads the
// store alone (web/src/store bundled by esbuild) and, for each size N,
// fills one node with N registers (received, in batches of 500), then
// times SIOT_STORE_WRITES writes of one point to that node (a local write,
// as a person's edit or a live reading would be) and one get of the node.
// Each size runs twice: with the store's default split (partMax registers
// a part) and with the node kept in one record (partMax Infinity).
//
// Each result is one line in the format of `go test -bench`; lines
// starting with # are context. Environment: SIOT_STORE_SIZES
// (16,512,2048,8192), SIOT_STORE_WRITES (50), CHROMIUM.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { loadavg } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { launch } from "../test/browser.ts";
import { repo } from "../test/siot.ts";

const sizes = (process.env.SIOT_STORE_SIZES ?? "16,512,2048,8192").split(",").map(Number);
const writes = Number(process.env.SIOT_STORE_WRITES ?? 50);
if (sizes.some((n) => !Number.isInteger(n) || n < 1) || !Number.isInteger(writes) || writes < 1) {
  throw new Error("SIOT_STORE_SIZES: positive integers, comma-separated; SIOT_STORE_WRITES: a positive integer");
}

interface Row {
  n: number;
  split: boolean;
  parts: number;
  writeP50: number;
  writeP90: number;
  getMs: number;
}

/** Runs in the page: one size, one split setting. */
async function measure(a: { n: number; split: boolean; writes: number }): Promise<Row> {
  type StoreModule = typeof import("../src/store/index.ts");
  const S = (window as unknown as { siotStore: StoreModule }).siotStore;
  const node = "0a000000-0000-4000-8000-000000000001";
  const origin = "00000000-0000-4000-8000-0000000000a1";
  const name = `big-${a.n}-${a.split}`;
  await new Promise((res) => {
    const r = indexedDB.deleteDatabase(name);
    r.onsuccess = r.onerror = res;
  });
  const s = await S.openStore(name, indexedDB, { partMax: a.split ? undefined : Infinity });
  const pt = (i: number, time: bigint) => ({
    node, parent: "", type: "reading", key: `k${i}`, value: i, text: "", tombstone: false, time, origin,
  });
  for (let i = 0; i < a.n; i += 500) {
    await s.apply(Array.from({ length: Math.min(500, a.n - i) }, (_, j) => pt(i + j, 1n)), { source: origin });
  }
  const took: number[] = [];
  for (let w = 0; w < a.writes; w++) {
    const t0 = performance.now();
    await s.apply([pt((w * 7919) % a.n, BigInt(2 + w))]);
    took.push(performance.now() - t0);
  }
  took.sort((x, y) => x - y);
  const t0 = performance.now();
  const v = await s.get(node);
  const getMs = performance.now() - t0;
  if (v.points.length !== a.n) throw new Error(`get: ${v.points.length} points, want ${a.n}`);
  const parts = s.memory().split.get(node) ?? 1;
  await s.close();
  return { n: a.n, split: a.split, parts, writeP50: took[Math.floor(took.length / 2)], writeP90: took[Math.floor(took.length * 0.9)], getMs };
}

async function main(): Promise<void> {
  const bundle = await build({
    stdin: { contents: `import * as s from "./src/store/index.ts"; (window as any).siotStore = s;`, resolveDir: join(repo, "web"), loader: "ts" },
    bundle: true,
    format: "esm",
    write: false,
    target: "es2022",
  });
  const js = bundle.outputFiles[0].contents;
  const srv = createServer((req, res) => {
    if (req.url === "/store.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(js);
      return;
    }
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!doctype html><script type="module" src="/store.js"></script>`);
  });
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/`);
    await page.waitForFunction(() => "siotStore" in window);
    console.log(`# store bench: sizes ${sizes.join(",")}, ${writes} one-point writes each; ${browser.version()}`);
    for (const n of sizes) {
      for (const split of [true, false]) {
        const r = await page.evaluate(measure, { n, split, writes });
        console.log(
          `BenchmarkStoreBigNode/registers=${n}/split=${split}\t${writes}\t${r.parts} parts\t${r.writeP50.toFixed(2)} write-p50-ms\t${r.writeP90.toFixed(2)} write-p90-ms\t${r.getMs.toFixed(1)} get-ms\t${loadavg()[0].toFixed(2)} load1`,
        );
      }
    }
  } finally {
    await browser.close();
    srv.close();
  }
}

await main().catch((e: unknown) => {
  console.error(`store bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exitCode = 1;
});
