// The browser replica's benchmarks (issue 15), in a real Chromium (Debian's,
// driven by playwright-core) against real servers built from this
// repository on loopback: a cloud serving the UI on --http and an edge
// provisioned under one site of it, as in web/test/ui.test.ts.
//
//   - propagation: a point written on the edge (web/bench/writer, one
//     long-lived client, a write every SIOT_UI_EVERY_MS) until the open
//     node page's DOM shows it. The value is the write's wall-clock time
//     in ms; the page takes the time it saw the value (a MutationObserver,
//     performance.timeOrigin + performance.now()) on the same machine's
//     clock, so no round trip to this runner is counted. The same value
//     found in a WebSocket frame, the store's next commit (the replica's
//     own "committed" note on its BroadcastChannel) and the next animation
//     frame split it into arrived, stored, shown, painted.
//   - first load: a scope of SIOT_UI_GROUPS × SIOT_UI_PER_GROUP nodes of
//     SIOT_UI_READINGS readings each (plus edge, nodeType, description),
//     imported on the cloud; a fresh browser context (empty IndexedDB)
//     signs in; from the sign-in form's submit to the tree showing the
//     site and its groups with their final counts (usable), and to the
//     store's last commit once it holds every point (synced).
//   - warm reload: the same page reloaded; from navigation start to the
//     tree usable again, from IndexedDB.
//   - bundle: web/dist gzipped (level 9).
//
// Each result is one line in the format of `go test -bench` (a name, a
// count, then value-unit pairs), so `grep ^BenchmarkUI bench.out` finds
// them and benchstat reads them; lines starting with # are context.
//
// Environment: SIOT_UI_RUNS (3: propagation rounds, first loads, and
// reloads after each), SIOT_UI_SAMPLES (300 writes a round),
// SIOT_UI_EVERY_MS (40), SIOT_UI_GROUPS (100), SIOT_UI_PER_GROUP (100),
// SIOT_UI_READINGS (10), SIOT_UI_SEED (the scope's IDs; printed), GO,
// CHROMIUM. SIOT_UI_PROFILE=DIR writes a CPU profile of the page (Chrome's
// .cpuprofile, which DevTools opens) of the first first load and of the
// first reload into DIR; SIOT_UI_SIOT=FILE runs that siot binary instead
// of building one (a build with an unminified web/dist names the
// functions in the profiles).
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { launch } from "../test/browser.ts";
import { buildSiot, killAll, repo, run, serve, waitFor, type Serving } from "../test/siot.ts";
import { rng } from "../test/rng.ts";

const num = (name: string, def: number): number => {
  const v = process.env[name];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}=${v}: want a positive integer`);
  return n;
};
const runs = num("SIOT_UI_RUNS", 3);
const samples = num("SIOT_UI_SAMPLES", 300);
const everyMs = num("SIOT_UI_EVERY_MS", 40);
const groups = num("SIOT_UI_GROUPS", 100);
const perGroup = num("SIOT_UI_PER_GROUP", 100);
const readings = num("SIOT_UI_READINGS", 10);
const seed = num("SIOT_UI_SEED", (Date.now() % 2 ** 31) + 1);
const profileDir = process.env.SIOT_UI_PROFILE ?? "";
const prebuilt = process.env.SIOT_UI_SIOT ?? "";

/** Starts Chrome's CPU profiler in page when profiling; the returned function stops it and writes DIR/name.cpuprofile. */
async function profile(page: Page, name: string): Promise<() => Promise<void>> {
  if (profileDir === "") return async () => {};
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
  await cdp.send("Profiler.start");
  return async () => {
    const { profile: p } = await cdp.send("Profiler.stop");
    mkdirSync(profileDir, { recursive: true });
    const file = join(profileDir, `${name}.cpuprofile`);
    writeFileSync(file, JSON.stringify(p));
    console.log(`# profile: ${file}`);
    await cdp.detach();
  };
}

const email = "bench@example.com";
const password = "correct horse battery staple";

/** What the init script keeps in each page, as window.__bench. */
interface PageState {
  recording: boolean;
  frames: { t: number; d: Uint8Array }[];
  rxBytes: number;
  txBytes: number;
  commits: number[];
  /** When each WebSocket opened (the sign-in's, then the link's). */
  sockets: number[];
  submit: number;
  tree: number;
  groups: number;
  counts: number;
  shown: { v: number; t: number; painted: number }[];
}
type BenchWindow = Window & { __bench: PageState };

interface InitArg {
  user: string;
  site: string;
  groupIDs: string[];
  perGroup: number;
}

/**
 * Runs first in every document of a benchmark's context: counts the
 * WebSocket's bytes (and keeps the frames while recording), notes the
 * replica's commits (its BroadcastChannel, whose notes reach every other
 * channel of the same name, this one included), expands the site, and
 * notes when the tree first shows the site (tree), its groups each with a
 * count (groups) and the groups' final counts (counts), in ms since
 * navigation start (performance.now()).
 */
function initPage(a: InitArg): void {
  const B: PageState = {
    recording: false, frames: [], rxBytes: 0, txBytes: 0, commits: [], sockets: [], submit: -1, tree: -1, groups: -1, counts: -1, shown: [],
  };
  (window as unknown as BenchWindow).__bench = B;
  const WS = window.WebSocket;
  class CountingWebSocket extends WS {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      this.addEventListener("open", () => B.sockets.push(performance.now()));
      this.addEventListener("message", (e: MessageEvent) => {
        const t = performance.now();
        const d = e.data as ArrayBuffer | string | Blob;
        const n = d instanceof ArrayBuffer ? d.byteLength : typeof d === "string" ? d.length : d.size;
        B.rxBytes += n;
        if (B.recording && d instanceof ArrayBuffer && n <= 1 << 16) B.frames.push({ t, d: new Uint8Array(d.slice(0)) });
      });
    }
    send(x: string | Blob | BufferSource): void {
      B.txBytes += typeof x === "string" ? x.length : x instanceof Blob ? x.size : x.byteLength;
      super.send(x);
    }
  }
  window.WebSocket = CountingWebSocket;
  const bc = new BroadcastChannel(`siot.tabs.${a.user}`);
  bc.onmessage = (e: MessageEvent<{ t?: string }>) => {
    if (e.data?.t === "committed") B.commits.push(performance.now());
  };
  sessionStorage.setItem("siot.expanded", JSON.stringify([a.site]));
  document.addEventListener("submit", () => {
    if (B.submit < 0) B.submit = performance.now();
  }, true);
  const want = new Set(a.groupIDs);
  const check = () => {
    const site = document.querySelector(`ul[data-testid=tree] > li[data-node="${a.site}"]`);
    if (!site) return;
    const t = performance.now();
    if (B.tree < 0) B.tree = t;
    let listed = 0;
    let full = 0;
    for (const li of site.querySelectorAll(":scope > ul > li")) {
      if (!want.has(li.getAttribute("data-node") ?? "")) continue;
      const c = li.querySelector(":scope > .row > [data-testid=count]")?.textContent ?? "";
      if (c !== "") listed++;
      if (c === String(a.perGroup)) full++;
    }
    if (B.groups < 0 && listed === want.size) B.groups = t;
    if (full === want.size) {
      B.counts = t;
      mo.disconnect();
    }
  };
  const mo = new MutationObserver(check);
  mo.observe(document, { childList: true, subtree: true, characterData: true });
}


function uuidFrom(r: () => number): string {
  const b = Array.from({ length: 16 }, () => Math.floor(r() * 256));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const readingTypes = ["temp", "humidity", "pressure", "co2", "voltage", "current", "power", "energy", "rssi", "battery"];

/** The import file of the scope under site: groups first, then each group's nodes. */
function scopeRecords(site: string): { lines: string[]; groupIDs: string[] } {
  const r = rng(seed);
  const lines: string[] = [];
  const rec = (o: Record<string, unknown>) => lines.push(JSON.stringify({ key: "0", tombstone: false, ...o }));
  const node = (id: string, parent: string, type: string, desc: string) => {
    rec({ node: id, parent, type: "edge", value: 0 });
    rec({ node: id, type: "nodeType", text: type });
    rec({ node: id, type: "description", text: desc });
  };
  const groupIDs = Array.from({ length: groups }, () => uuidFrom(r));
  groupIDs.forEach((g, i) => node(g, site, "group", `group ${String(i).padStart(3, "0")}`));
  groupIDs.forEach((g, i) => {
    for (let j = 0; j < perGroup; j++) {
      const id = uuidFrom(r);
      node(id, g, "sensor", `sensor ${i}.${j}`);
      for (let k = 0; k < readings; k++) {
        rec({ node: id, type: readingTypes[k % readingTypes.length] + (k >= readingTypes.length ? k : ""), value: Math.round(r() * 100_000) / 100 });
      }
    }
  });
  return { lines, groupIDs };
}

/** Nearest-rank percentile of sorted xs. */
function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  return xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(p * xs.length) - 1))];
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "NaN");
const load1 = () => loadavg()[0].toFixed(2);

/** Prints one result line in the format of go test -bench. */
function result(name: string, n: number, pairs: [number | string, string][]): void {
  console.log(`${name}\t${n}\t${pairs.map(([v, u]) => `${typeof v === "number" ? f1(v) : v} ${u}`).join("\t")}`);
}

function execOut(file: string, args: string[], opts: { cwd?: string; timeout?: number } = {}): Promise<string> {
  return new Promise((res, rej) =>
    execFile(file, args, { cwd: opts.cwd, timeout: opts.timeout ?? 300_000, maxBuffer: 1 << 24 }, (err, out, stderr) =>
      err ? rej(new Error(`${file} ${args.join(" ")}: ${err.message}\n${stderr}`)) : res(out),
    ),
  );
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), "siot-uibench-"));
  const bin = join(tmp, "siot");
  const writerBin = join(tmp, "writer");
  const cdata = join(tmp, "cloud");
  const edata = join(tmp, "edge");
  let browser: Browser | undefined;
  try {
    console.log(`# ui bench: runs ${runs}, samples ${samples} every ${everyMs} ms, scope ${groups}x${perGroup} nodes x ${readings} readings, seed ${seed}`);
    console.log(`# uptime: ${(await execOut("uptime", [])).trim()}`);
    bundle();
    if (prebuilt !== "") copyFileSync(prebuilt, bin);
    else await buildSiot(bin);
    await execOut(process.env.GO || "go", ["build", "-o", writerBin, "./web/bench/writer"], { cwd: repo });

    const cloud: Serving = await serve(bin, cdata, "127.0.0.1:0", "127.0.0.1:0");
    const base = `http://${cloud.http}/`;
    const admin = { SIOT_SERVER: cloud.nats, SIOT_CREDS: join(cdata, "admin.creds") };
    const added = (out: string) => (JSON.parse(out) as { node: string }).node;
    const site = added(await run(bin, ["node", "add", "--type", "site", "--desc", "Plant", "--json"], admin));
    const user = added(await run(bin, ["user", "add", "--parent", site, "--email", email, "--admin", "--json"], admin, password + "\n"));
    const creds = join(tmp, "device.creds");
    added(await run(bin, ["device", "add", "--parent", site, "--desc", "boiler room", "--out", creds, "--json"], admin));
    const edge: Serving = await serve(bin, edata, "127.0.0.1:0", "", ["--upstream", cloud.nats, "--creds", creds]);
    const edgeAdmin = { SIOT_SERVER: edge.nats, SIOT_CREDS: join(edata, "admin.creds") };
    const sensor = added(await run(bin, ["node", "add", "--type", "sensor", "--desc", "bench sensor", "--json"], edgeAdmin));
    await run(bin, ["set", sensor, "bench=1"], edgeAdmin);
    await waitFor("the sensor on the cloud", async () => (await run(bin, ["get", sensor, "--json"], admin).catch(() => "")).includes('"bench"'), 30_000);

    const { lines, groupIDs } = scopeRecords(site);
    const init: InitArg = { user, site, groupIDs, perGroup };
    browser = await launch();
    console.log(`# chromium ${browser.version()}, node ${process.version}`);

    const signIn = async (ctx: BrowserContext): Promise<Page> => {
      const page = await ctx.newPage();
      page.on("pageerror", (e) => console.log(`# page error: ${e.message}`));
      await page.goto(base);
      await page.getByTestId("email").fill(email);
      await page.getByTestId("password").fill(password);
      await page.getByTestId("signin").click();
      await page.getByTestId("tree").waitFor({ timeout: 120_000 });
      return page;
    };

    // The edge writes, the open page shows.
    const propagation = async (page: Page, replica: string) => {
      await page.goto(`${base}#/n/${sensor}`);
      await page.locator(`section[data-node="${sensor}"]`).waitFor();
      await waitFor("the page online", async () => (await page.getByTestId("link-state").textContent()) === "online", 30_000);
      const writer = (n: number) =>
        execOut(writerBin, ["--server", edge.nats, "--creds", edgeAdmin.SIOT_CREDS, "--node", sensor, "--keys", "8", "--n", String(n), "--every", `${everyMs}ms`]);
      await writer(10); // warm-up, not measured
      for (let round = 0; round < runs; round++) {
        const start = Date.now();
        await page.evaluate(() => {
          const B = (window as unknown as BenchWindow).__bench;
          B.recording = true;
          B.frames = [];
          B.commits = [];
          B.shown = [];
          const sel = 'section[data-testid=node] tr[data-type="bench"] td[data-testid=value]';
          const texts = () => [...document.querySelectorAll(sel)].map((el) => el.textContent ?? "");
          const seen = new Set(texts());
          const mo = new MutationObserver(() => {
            const t = performance.timeOrigin + performance.now();
            const fresh = texts().filter((x) => x !== "" && !seen.has(x));
            if (fresh.length === 0) return;
            const now = fresh.map((x) => ({ v: Number(x), t, painted: -1 }));
            for (const x of fresh) seen.add(x);
            B.shown.push(...now);
            requestAnimationFrame(() => {
              const p = performance.timeOrigin + performance.now();
              for (const s of now) s.painted = p;
            });
          });
          mo.observe(document.getElementById("view")!, { childList: true, subtree: true, characterData: true });
          (B as PageState & { stop?: () => void }).stop = () => mo.disconnect();
        });
        const load = load1();
        await writer(samples);
        // The last write's time plus a second: every value has arrived or never will.
        await new Promise((r) => setTimeout(r, 1000));
        const got = await page.evaluate((startWall) => {
          const B = (window as unknown as BenchWindow).__bench as PageState & { stop?: () => void };
          B.stop?.();
          B.recording = false;
          const o = performance.timeOrigin;
          const pattern = (v: number) => {
            const b = new Uint8Array(9);
            b[0] = 0xcb;
            new DataView(b.buffer).setFloat64(1, v);
            return b;
          };
          const has = (d: Uint8Array, p: Uint8Array) => {
            outer: for (let i = 0; i + p.length <= d.length; i++) {
              for (let j = 0; j < p.length; j++) if (d[i + j] !== p[j]) continue outer;
              return true;
            }
            return false;
          };
          return B.shown
            .filter((s) => s.v >= startWall)
            .map((s) => {
              const p = pattern(s.v);
              const f = B.frames.find((fr) => o + fr.t >= s.v - 1 && o + fr.t <= s.t && has(fr.d, p));
              const arrived = f ? o + f.t : NaN;
              const c = B.commits.find((ct) => o + ct >= (f ? arrived : s.v) && o + ct <= s.t);
              return { arrived: arrived - s.v, stored: c === undefined ? NaN : o + c - s.v, shown: s.t - s.v, painted: s.painted < 0 ? NaN : s.painted - s.v };
            });
        }, start);
        const col = (k: "arrived" | "stored" | "shown" | "painted") => got.map((g) => g[k]).filter(Number.isFinite).sort((a, b) => a - b);
        const shown = col("shown");
        const arrived = col("arrived");
        const stored = col("stored");
        const painted = col("painted");
        result(`BenchmarkUIPropagation/replica=${replica}`, shown.length, [
          [pct(shown, 0.5), "p50-ms"], [pct(shown, 0.9), "p90-ms"], [pct(shown, 0.99), "p99-ms"], [shown[shown.length - 1], "max-ms"],
          [String(samples - shown.length), "missing"], [load, "load1"],
        ]);
        result(`BenchmarkUIPropagationParts/replica=${replica}`, shown.length, [
          [pct(arrived, 0.5), "arrived-p50-ms"], [pct(arrived, 0.99), "arrived-p99-ms"],
          [pct(stored, 0.5), "stored-p50-ms"], [pct(stored, 0.99), "stored-p99-ms"],
          [pct(painted, 0.5), "painted-p50-ms"], [pct(painted, 0.99), "painted-p99-ms"],
          [String(arrived.length), "arrived-n"], [String(stored.length), "stored-n"],
        ]);
      }
    };

    // 1. Propagation into a page whose replica is small (the site, the device, the sensor).
    {
      const ctx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
      await ctx.addInitScript(initPage, init);
      const page = await signIn(ctx);
      await propagation(page, "small");
      await ctx.close();
    }

    // 2. The scope, imported on the cloud.
    const file = join(tmp, "scope.jsonl");
    writeFileSync(file, lines.join("\n") + "\n");
    const t0 = Date.now();
    await run(bin, ["import", file, "--quiet"], admin);
    console.log(`# imported ${lines.length} records (${groups + groups * perGroup} nodes) in ${Date.now() - t0} ms`);
    const expected = lines.length + 2; // and the site's nodeType and description

    // 3. First loads into fresh contexts, then warm reloads of each.
    for (let round = 0; round < runs; round++) {
      const ctx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
      await ctx.addInitScript(initPage, init);
      const page = await ctx.newPage();
      page.on("pageerror", (e) => console.log(`# page error: ${e.message}`));
      await page.goto(base);
      await page.getByTestId("email").fill(email);
      await page.getByTestId("password").fill(password);
      const load = load1();
      const stopProfile = round === 0 ? await profile(page, "firstload") : async () => {};
      await page.getByTestId("signin").click();
      await page.waitForFunction(() => (window as unknown as BenchWindow).__bench.counts >= 0, null, { timeout: 300_000, polling: 250 });
      // Synced: the store holds every point and no commit came for 2 s;
      // the time is its last commit's.
      const db = `siot.${user}`;
      let registers = 0;
      await waitFor("the replica synced", async () => {
        const quiet = await page.evaluate(() => {
          const B = (window as unknown as BenchWindow).__bench;
          return performance.now() - (B.commits[B.commits.length - 1] ?? 0);
        });
        if (quiet < 2000) return false;
        registers = await page.evaluate(async (name) => {
          const d = await new Promise<IDBDatabase>((res, rej) => {
            const r = indexedDB.open(name);
            r.onsuccess = () => res(r.result);
            r.onerror = () => rej(r.error);
          });
          // A record holds a node's registers, column by column (web/src/store/index.ts).
          const n = await new Promise<number>((res, rej) => {
            const r = d.transaction(["registers"], "readonly").objectStore("registers").getAll();
            r.onsuccess = () => res((r.result as { parent: string[] }[]).reduce((a, rs) => a + rs.parent.length, 0));
            r.onerror = () => rej(r.error);
          });
          d.close();
          return n;
        }, db);
        return registers >= expected;
      }, 600_000);
      await stopProfile();
      const st = await page.evaluate(() => {
        const B = (window as unknown as BenchWindow).__bench;
        return { submit: B.submit, link: B.sockets[1] ?? NaN, first: B.commits[0] ?? NaN, tree: B.tree, groups: B.groups, counts: B.counts, synced: B.commits[B.commits.length - 1], commits: B.commits.length, rx: B.rxBytes, tx: B.txBytes };
      });
      if (process.env.SIOT_UI_COMMITS) {
        const c = await page.evaluate(() => {
          const B = (window as unknown as BenchWindow).__bench;
          return B.commits.map((t) => Math.round(t - B.submit));
        });
        console.log(`# commits (ms after submit): ${c.join(" ")}`);
      }
      result("BenchmarkUIFirstLoad", 1, [
        [st.link - st.submit, "linked-ms"], [st.first - st.submit, "first-commit-ms"], [st.tree - st.submit, "tree-ms"], [st.groups - st.submit, "groups-ms"], [st.counts - st.submit, "usable-ms"], [st.synced - st.submit, "synced-ms"],
        [String(registers), "points"], [String(st.commits), "commits"], [(st.rx / 1e6).toFixed(2), "rx-MB"], [(st.tx / 1e6).toFixed(3), "tx-MB"], [load, "load1"],
      ]);
      for (let i = 0; i < runs; i++) {
        const l = load1();
        const stop = round === 0 && i === 0 ? await profile(page, "reload") : async () => {};
        await page.reload();
        await page.waitForFunction(() => (window as unknown as BenchWindow).__bench.counts >= 0, null, { timeout: 60_000, polling: 100 });
        await stop();
        const w = await page.evaluate(() => {
          const B = (window as unknown as BenchWindow).__bench;
          const nav = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming | undefined;
          return { tree: B.tree, groups: B.groups, counts: B.counts, dcl: nav?.domContentLoadedEventEnd ?? NaN };
        });
        // What the store's open reads (its tree records: a snapshot and
        // the deltas written after it), read again the same way now that
        // the page is up.
        const records = await page.evaluate(async (name) => {
          const t0 = performance.now();
          const d = await new Promise<IDBDatabase>((res, rej) => {
            const r = indexedDB.open(name);
            r.onsuccess = () => res(r.result);
            r.onerror = () => rej(r.error);
          });
          const n = await new Promise<number>((res, rej) => {
            const r = d.transaction(["tree"], "readonly").objectStore("tree").getAll();
            r.onsuccess = () => res((r.result as unknown[]).length);
            r.onerror = () => rej(r.error);
          });
          d.close();
          return { ms: performance.now() - t0, n };
        }, `siot.${user}`);
        result("BenchmarkUIWarmReload", 1, [
          [w.dcl, "domcontentloaded-ms"], [w.tree, "tree-ms"], [w.groups, "groups-ms"], [w.counts, "usable-ms"],
          [records.ms, "tree-records-read-ms"], [String(records.n), "tree-records"], [l, "load1"],
        ]);
      }
      if (round === runs - 1) await propagation(page, "scope");
      await ctx.close();
    }
    console.log(`# uptime: ${(await execOut("uptime", [])).trim()}`);
  } finally {
    await browser?.close().catch(() => {});
    await killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Sizes of web/dist, the page as served: app.js alone and the page's four files, gzipped at level 9. */
function bundle(): void {
  const dist = join(repo, "web", "dist");
  const files = ["index.html", "app.js", "app.css", "sw.js"];
  const raw = files.map((f) => readFileSync(join(dist, f)));
  const gz = raw.map((b) => gzipSync(b, { level: 9 }).length);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  result("BenchmarkUIBundle", 1, [
    [String(raw[1].length), "app.js-B"], [String(gz[1]), "app.js-gz-B"], [String(sum(raw.map((b) => b.length))), "page-B"], [String(sum(gz)), "page-gz-B"],
  ]);
}

await main().catch((e: unknown) => {
  console.error(`ui bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exitCode = 1;
});
