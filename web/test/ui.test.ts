// The web UI in a real Chromium (Debian's, driven by playwright-core),
// against real servers built from this repository: a cloud serving the UI
// on --http and an edge provisioned under one site of it. A user of that
// site (an admin there) signs in to the page, which holds its replica in
// IndexedDB and links over NATS on WebSocket.
//
// Screenshots of the tree and of a node page, wide and phone-width, are
// written to web/.build/screenshots/.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect } from "nats.ws";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { WebSocket } from "ws";
import { decodeHistorySteps } from "../src/wire/history.ts";
import { decodeMessage, encodeMessage, RemoteError } from "../src/wire/messages.ts";
import { launch, screenshot } from "./browser.ts";
import { buildSiot, killAll, run, serve, waitFor, type Serving } from "./siot.ts";

(globalThis as { WebSocket?: unknown }).WebSocket ??= WebSocket;

const password = "correct horse battery staple";

interface Rec {
  node: string;
  parent?: string;
  type: string;
  key: string;
  value: number;
  text?: string;
  tombstone?: boolean;
}

describe("web UI in Chromium", { timeout: 300_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), "siot-ui-"));
  const bin = join(tmp, "siot");
  const cdata = join(tmp, "cloud");
  const edata = join(tmp, "edge");
  let cloud: Serving;
  let edge: Serving;
  let browser: Browser;
  let ctx: BrowserContext;
  let page: Page;
  let base = "";
  let site = "";
  let other = "";
  let device = "";
  let sensor = "";
  let user = "";
  const admin = () => ({ SIOT_SERVER: cloud.nats, SIOT_CREDS: join(cdata, "admin.creds") });
  const edgeAdmin = () => ({ SIOT_SERVER: edge.nats, SIOT_CREDS: join(edata, "admin.creds") });
  const onCloud = (...args: string[]) => run(bin, args, admin());
  const onEdge = (...args: string[]) => run(bin, args, edgeAdmin());
  const added = (out: string) => (JSON.parse(out) as { node: string }).node;
  const records = async (env: Record<string, string>, node: string): Promise<Rec[]> => {
    const out = await run(bin, ["get", node, "--json"], env).catch(() => "");
    return out
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as Rec);
  };
  const holds = async (env: Record<string, string>, node: string, type: string, value: number) =>
    (await records(env, node)).some((r) => r.type === type && r.value === value && !r.tombstone);
  const startCloud = async (port = "0", http = "127.0.0.1:0") => {
    cloud = await serve(bin, cdata, `127.0.0.1:${port}`, http);
  };

  const openPage = async (c: BrowserContext): Promise<Page> => {
    const p = await c.newPage();
    p.on("pageerror", (e) => console.log(`# page error: ${e.message}`));
    await p.goto(base);
    return p;
  };
  const signIn = async (p: Page) => {
    await p.getByTestId("email").fill("ann@example.com");
    await p.getByTestId("password").fill(password);
    await p.getByTestId("signin").click();
    await p.getByTestId("tree").waitFor();
  };
  const linkState = (p: Page) => p.getByTestId("link-state").textContent();
  const value = (p: Page, type: string) => p.locator(`section[data-testid=node] tr[data-type="${type}"] td[data-testid=value]`);
  const setInPage = async (p: Page, node: string, type: string, v: string) => {
    if (!p.url().endsWith(`#/n/${node}`)) await p.goto(`${base}#/n/${node}`);
    await p.locator(`section[data-node="${node}"]`).waitFor();
    await p.getByTestId("new-type").fill(type);
    await p.getByTestId("new-value").fill(v);
    await p.getByTestId("add-point").click();
    await value(p, type).filter({ hasText: v }).waitFor();
  };
  const expand = async (p: Page, node: string) => {
    const li = p.locator(`li[data-node="${node}"]`).first();
    await li.waitFor();
    if ((await li.getAttribute("aria-expanded")) !== "true") await li.locator(".toggle").first().click();
    await p.locator(`li[data-node="${node}"][aria-expanded=true]`).first().waitFor();
  };

  before(async () => {
    await buildSiot(bin);
    await startCloud();
    base = `http://${cloud.http}/`;
    site = added(await onCloud("node", "add", "--type", "site", "--desc", "Plant", "--json"));
    other = added(await onCloud("node", "add", "--type", "site", "--desc", "Elsewhere", "--json"));
    await onCloud("set", other, "secret=42");
    user = added(await run(bin, ["user", "add", "--parent", site, "--email", "ann@example.com", "--admin", "--json"], admin(), password + "\n"));
    const creds = join(tmp, "device.creds");
    device = added(await onCloud("device", "add", "--parent", site, "--desc", "boiler room", "--out", creds, "--json"));
    // Repair passes every second or two: the history round that carries a
    // late write (readings with past times) up follows the next one.
    edge = await serve(bin, edata, "127.0.0.1:0", "", ["--upstream", cloud.nats, "--creds", creds, "--repair-interval", "1s", "--repair-max-interval", "2s"]);
    sensor = added(await onEdge("node", "add", "--type", "sensor", "--desc", "boiler temperature", "--json"));
    await onEdge("set", sensor, "temp=20");
    await waitFor("the sensor on the cloud", () => holds(admin(), sensor, "temp", 20), 30_000);
    browser = await launch();
    ctx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
    page = await openPage(ctx);
  });

  after(async () => {
    await browser?.close();
    await killAll();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("serves the UI with its security headers", async () => {
    const res = await fetch(base, { headers: { "Accept-Encoding": "gzip" } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-security-policy") ?? "", /default-src 'none'.*connect-src 'self'/);
    assert.equal(res.headers.get("x-frame-options"), "DENY");
    const etag = res.headers.get("etag")!;
    const again = await fetch(base, { headers: { "If-None-Match": etag } });
    assert.equal(again.status, 304);
    assert.equal((await fetch(`${base}nope.js`)).status, 404);
  });

  test("a wrong password is refused; the right one shows the tree", async () => {
    await page.getByTestId("email").fill("ann@example.com");
    await page.getByTestId("password").fill("wrong");
    await page.getByTestId("signin").click();
    await page.getByTestId("signin-error").filter({ hasText: "Wrong email address or password" }).waitFor({ timeout: 20_000 });
    await signIn(page);
    await page.locator(`li[data-node="${site}"]`).filter({ hasText: "Plant" }).waitFor();
    await expand(page, site);
    await expand(page, device);
    await page.locator(`li[data-node="${sensor}"]`).filter({ hasText: "boiler temperature" }).waitFor();
    assert.equal(await page.locator(`li[data-node="${device}"] [data-testid=count]`).first().textContent(), "1", "the device's child count");
    await waitFor("online", async () => (await linkState(page)) === "online");
    // The digest repair after the first resume finds the page's replica
    // equal to the server's view of it.
    await page.getByTestId("in-sync").waitFor({ timeout: 20_000 });
    assert.match((await page.getByTestId("who").textContent()) ?? "", /ann@example\.com/);
    await screenshot(page, "tree");
  });

  test("a change written on the edge appears in the open page", async () => {
    await page.goto(`${base}#/n/${sensor}`);
    await value(page, "temp").filter({ hasText: "20" }).waitFor();
    await onEdge("set", sensor, "temp=21.5");
    await value(page, "temp").filter({ hasText: "21.5" }).waitFor({ timeout: 15_000 });
    await screenshot(page, "node");
  });

  test("a value edited in the page appears on the edge", async () => {
    await page.locator('tr[data-type="temp"] [data-testid=edit]').click();
    await page.getByTestId("edit-input").fill("22.25");
    await page.getByTestId("save").click();
    await value(page, "temp").filter({ hasText: "22.25" }).waitFor();
    await setInPage(page, sensor, "setpoint", "19");
    await waitFor("setpoint=19 on the edge", () => holds(edgeAdmin(), sensor, "setpoint", 19), 15_000);
    await waitFor("temp=22.25 on the edge", () => holds(edgeAdmin(), sensor, "temp", 22.25), 15_000);
  });

  test("a point's history charts on its node page, live, over the span chosen", async () => {
    // 50 readings of level over the last 20 hours, written on the edge with
    // their times. The register's push carries the last; the edge's next
    // history round the rest (windows more than an hour old: a late write).
    const t0 = Date.now();
    const file = join(tmp, "level.jsonl");
    const reading = (i: number) => Math.round((300 + 12 * Math.sin(i / 4) + 0.3 * i) * 100) / 100;
    writeFileSync(
      file,
      Array.from({ length: 50 }, (_, i) =>
        JSON.stringify({ node: sensor, type: "level", key: "0", value: reading(i), hlc: String(BigInt(t0 - 20 * 3_600_000 + i * 24 * 60_000) << 16n) }),
      ).join("\n") + "\n",
    );
    await onEdge("import", file, "--quiet");
    const samples = async () => (await onCloud("history", sensor, "level", "--json").catch(() => "")).split("\n").filter((l) => l.trim() !== "").length;
    await waitFor("50 readings of level on the cloud", async () => (await samples()) === 50, 15_000);
    await page.goto(`${base}#/n/${sensor}`);
    await value(page, "level").waitFor();
    await page.locator('[data-testid=chart-point][data-type="level"]').click();
    const count = page.getByTestId("chart-count");
    await page.locator('[data-testid=chart-count][data-count="50"]').waitFor();
    assert.equal(await page.getByTestId("span-24h").getAttribute("aria-pressed"), "true", "24 h by default");
    assert.match((await page.locator("svg[data-testid=chart] path.mean").getAttribute("d")) ?? "", /^M[\d.]+ [\d.]+(L[\d.]+ [\d.]+){10,}/, "a line through the readings");
    assert.equal(await page.locator("svg[data-testid=chart] path.band").count(), 1);
    assert.match((await count.textContent()) ?? "", /^50 samples$/);
    await screenshot(page, "node-history");
    // A value written on the edge reaches the chart: the page's replica
    // hears of it, and the chart asks the server again.
    const t1 = Date.now();
    await onEdge("set", sensor, "level=318.5");
    await page.locator('[data-testid=chart-count][data-count="51"]').waitFor({ timeout: 15_000 });
    console.log(`# the chart followed a reading in ${Date.now() - t1} ms`);
    // The last hour holds the two latest imported readings and the new one.
    await page.getByTestId("span-1h").click();
    await page.locator('[data-testid=chart-count][data-count="3"]').waitFor();
    assert.equal(await page.getByTestId("span-1h").getAttribute("aria-pressed"), "true");
    await page.getByTestId("span-7d").click();
    await page.locator('[data-testid=chart-count][data-count="51"]').waitFor();
    await page.getByTestId("span-24h").click();
    await page.locator('[data-testid=chart-count][data-count="51"]').waitFor();
  });

  test("two tabs converge: another profile, and a second tab of this one", async () => {
    const ctx2 = await browser.newContext();
    const other2 = await openPage(ctx2);
    await signIn(other2);
    await other2.goto(`${base}#/n/${sensor}`);
    await value(other2, "setpoint").filter({ hasText: "19" }).waitFor({ timeout: 15_000 });
    await setInPage(other2, sensor, "mode", "eco");
    await page.goto(`${base}#/n/${sensor}`);
    await value(page, "mode").filter({ hasText: "eco" }).waitFor({ timeout: 15_000 });
    await setInPage(page, sensor, "mode", "boost");
    await value(other2, "mode").filter({ hasText: "boost" }).waitFor({ timeout: 15_000 });
    // A second tab of the first profile shares its replica: the first tab
    // links, this one follows it and writes to the same store.
    const tab2 = await openPage(ctx);
    await tab2.getByTestId("tree").waitFor();
    await setInPage(tab2, sensor, "fan", "3");
    await value(page, "fan").filter({ hasText: "3" }).waitFor({ timeout: 15_000 });
    await waitFor("fan=3 on the edge", () => holds(edgeAdmin(), sensor, "fan", 3), 15_000);
    // Its charts ask the server through the first tab's link.
    await tab2.locator('[data-testid=chart-point][data-type="level"]').click();
    await tab2.locator('[data-testid=chart-count][data-count="51"]').waitFor();
    await value(other2, "fan").filter({ hasText: "3" }).waitFor({ timeout: 15_000 });
    await tab2.close();
    await ctx2.close();
  });

  test("offline: edit with the server stopped, reload, restart: it converges everywhere", async () => {
    // The service worker controls the page: a reload works without the server.
    await waitFor("a service worker", () => page.evaluate(() => navigator.serviceWorker.controller !== null));
    const port = new URL(cloud.nats).port;
    const http = cloud.http;
    cloud.proc.kill("SIGKILL");
    await cloud.exited;
    await waitFor("the page offline", async () => (await linkState(page)) === "offline", 15_000);
    await setInPage(page, sensor, "setpoint", "17");
    await page.reload();
    await value(page, "setpoint").filter({ hasText: "17" }).waitFor();
    assert.equal(await linkState(page), "offline");
    // The replica keeps no history: the chart needs the server.
    await page.getByTestId("chart-state").filter({ hasText: "History needs the server" }).waitFor();
    await startCloud(port, http);
    await waitFor("setpoint=17 on the cloud", () => holds(admin(), sensor, "setpoint", 17), 30_000);
    await waitFor("setpoint=17 on the edge", () => holds(edgeAdmin(), sensor, "setpoint", 17), 30_000);
    await waitFor("online again", async () => (await linkState(page)) === "online", 15_000);
    await page.locator("svg[data-testid=chart]").waitFor({ timeout: 15_000 });
  });

  test("the user sees only their scope, and the server refuses the rest", async () => {
    // The page's replica holds nothing of the other site.
    const leaked = await page.evaluate(async (o) => {
      const db = await new Promise<IDBDatabase>((res, rej) => {
        const names = indexedDB.databases();
        names.then((ns) => {
          const n = ns.find((d) => d.name?.startsWith("siot."));
          if (!n?.name) return rej(new Error("no siot database"));
          const r = indexedDB.open(n.name);
          r.onsuccess = () => res(r.result);
          r.onerror = () => rej(r.error);
        });
      });
      // Each record holds a node's registers, column by column (web/src/store/index.ts).
      const tx = db.transaction(["registers"], "readonly");
      const get = <T,>(r: IDBRequest) => new Promise<T>((res) => (r.onsuccess = () => res(r.result as T)));
      const [keys, recs] = await Promise.all([
        get<[string, number][]>(tx.objectStore("registers").getAllKeys()),
        get<{ parent: string[] }[]>(tx.objectStore("registers").getAll()),
      ]);
      db.close();
      let outside = 0, total = 0;
      recs.forEach((r, i) => {
        total += r.parent.length;
        outside += keys[i][0] === o ? r.parent.length : r.parent.filter((p) => p === o).length;
      });
      return outside + ":" + total;
    }, other);
    const [outside, total] = leaked.split(":").map(Number);
    assert.equal(outside, 0, "registers of the other site in the page's replica");
    assert.ok(total > 5, `the replica holds ${total} registers`);
    await page.goto(base);
    await page.getByTestId("tree").waitFor();
    assert.equal(await page.getByText("Elsewhere").count(), 0);

    // Ask the server directly, with the page's own token.
    const session = JSON.parse((await page.evaluate(() => localStorage.getItem("siot.session")))!) as { token: string; user: string };
    assert.equal(session.user, user);
    const nc = await connect({ servers: `ws://${cloud.http}/nats`, token: session.token, inboxPrefix: `siot.user.${user}.inbox`, reconnect: false });
    try {
      const prefix = `siot.user.${user}`;
      const ask = async (node: string) => {
        const m = await nc.request(`${prefix}.api.node`, encodeMessage("node-request", { node, after: null, maxBytes: 0n }), { timeout: 10_000 });
        return decodeMessage(m.data, "node-page");
      };
      const mine = await ask(sensor);
      assert.ok(mine.points && mine.points.length > 0, "its own scope answers");
      await assert.rejects(ask(other), (e: unknown) => e instanceof RemoteError && /permission denied/i.test(e.remote), "a node of the other site");
      // History is read the same way, and refused the same way.
      const history = async (node: string, type: string) => {
        const req = { node, type, key: "0", from: 0n, to: 0n, step: 3_600_000n, after: null, max: 0n };
        const m = await nc.request(`${prefix}.api.history`, encodeMessage("history-request", req), { timeout: 10_000 });
        return decodeMessage(m.data, "history-page");
      };
      const level = await history(sensor, "level");
      assert.ok(level.known && decodeHistorySteps(level.steps).length > 0, "its own points' history");
      await assert.rejects(history(other, "secret"), (e: unknown) => e instanceof RemoteError && /permission denied/i.test(e.remote), "the other site's history");
      // Subscribing outside its prefix is a permissions violation: the
      // server says so and the subscription gets nothing.
      const errs: string[] = [];
      const sub = nc.subscribe("siot.>", { callback: (err) => err && errs.push(err.message) });
      await nc.flush();
      await waitFor("a permissions violation for siot.>", () => errs.some((e) => /permissions violation/i.test(e)), 10_000);
      sub.unsubscribe();
    } finally {
      await nc.close();
    }
  });

  test("add, delete, show deleted and restore a node", async () => {
    await page.goto(`${base}#/n/${device}`);
    await page.getByTestId("child-type").fill("valve");
    await page.getByTestId("child-description").fill("inlet valve");
    await page.getByTestId("add-child").click();
    const row = page.locator(`[data-testid=children] li`).filter({ hasText: "inlet valve" });
    await row.waitFor();
    const valve = (await row.getAttribute("data-node"))!;
    await waitFor("the valve on the edge", async () => (await onEdge("node", "ls", device)).includes(valve), 15_000);
    await page.goto(`${base}#/n/${valve}`);
    await page.getByTestId("delete").click();
    await page.goto(`${base}#/n/${device}`);
    await page.locator(`section[data-node="${device}"]`).waitFor();
    assert.equal(await page.locator(`[data-testid=children] li[data-node="${valve}"]`).count(), 0, "deleted: hidden");
    await waitFor("the valve deleted on the edge", async () => !(await onEdge("node", "ls", device)).includes(valve), 15_000);
    await page.getByTestId("show-deleted").check();
    const gone = page.locator(`[data-testid=children] li.gone[data-node="${valve}"]`);
    await gone.waitFor();
    await gone.getByTestId("restore").click();
    await page.locator(`[data-testid=children] li:not(.gone)[data-node="${valve}"]`).waitFor();
    await waitFor("the valve back on the edge", async () => (await onEdge("node", "ls", device)).includes(valve), 15_000);
    await page.getByTestId("show-deleted").uncheck();
  });

  test("concurrent moves in the page and on the edge resolve the same everywhere", async () => {
    const a = added(await onEdge("node", "add", "--parent", device, "--type", "group", "--desc", "group A", "--json"));
    const b = added(await onEdge("node", "add", "--parent", device, "--type", "group", "--desc", "group B", "--json"));
    const x = added(await onEdge("node", "add", "--parent", device, "--type", "sensor", "--desc", "sensor X", "--json"));
    await page.goto(`${base}#/n/${x}`);
    await page.locator(`section[data-node="${x}"]`).waitFor({ timeout: 15_000 });
    // Cut the cloud so neither side sees the other's move.
    const port = new URL(cloud.nats).port;
    const http = cloud.http;
    cloud.proc.kill("SIGKILL");
    await cloud.exited;
    await waitFor("the page offline", async () => (await linkState(page)) === "offline", 15_000);
    await page.getByTestId("move-to").fill(a);
    await page.getByTestId("move").click();
    await page.locator(".crumbs").filter({ hasText: "group A" }).waitFor();
    await new Promise((r) => setTimeout(r, 20)); // the edge's move is the later one
    await onEdge("node", "mv", x, b);
    await startCloud(port, http);
    // The live parents as the tree rules decide them (a superseded move
    // keeps a live edge register, but not an active edge).
    const parentsOn = async (env: Record<string, string>) =>
      (await run(bin, ["node", "ls", device, "--depth", "2", "--json"], env).catch(() => ""))
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as { node: string; parent?: string; active?: boolean })
        .filter((r) => r.node === x && r.active !== false)
        .map((r) => r.parent)
        .sort()
        .join(",");
    let last = "";
    await waitFor(`the cloud and the edge agree on one parent (a ${a}, b ${b})`, async () => {
      const [c, e] = await Promise.all([parentsOn(admin()), parentsOn(edgeAdmin())]);
      last = `cloud [${c}] edge [${e}]`;
      return c === e && c !== "" && !c.includes(",");
    }, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}: ${last}`);
    });
    const settled = await parentsOn(admin());
    assert.equal(settled, b, "the later move wins");
    await page.locator(".crumbs").filter({ hasText: "group B" }).waitFor({ timeout: 15_000 });
    assert.equal(await page.locator(".crumbs a").filter({ hasText: "group A" }).count(), 0, "the page shows one parent");
  });

  test("phone width: nothing wider than the screen", async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const p = await openPage(phone);
    await signIn(p);
    await expand(p, site);
    await expand(p, device);
    const overflow = () => p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok((await overflow()) <= 0, "the tree scrolls sideways");
    await screenshot(p, "tree-phone");
    await p.goto(`${base}#/n/${sensor}`);
    await value(p, "temp").waitFor();
    await p.locator('[data-testid=chart-point][data-type="level"]').click();
    await p.locator("svg[data-testid=chart] path.mean").waitFor();
    assert.ok((await overflow()) <= 0, "the node page scrolls sideways");
    await screenshot(p, "node-phone");
    await phone.close();
  });

  test("sign out deletes the replica and shows the sign-in form", async () => {
    await page.goto(base);
    await page.getByTestId("signout").click();
    await page.getByTestId("signin").waitFor();
    const dbs = await page.evaluate(async () => (await indexedDB.databases()).map((d) => d.name));
    assert.deepEqual(dbs.filter((n) => n?.startsWith("siot.")), [], "databases left");
    assert.equal(await page.evaluate(() => localStorage.getItem("siot.session")), null);
  });

  test("a revoked user's page stops linking and asks to sign in, keeping its replica", async () => {
    const bob = added(await run(bin, ["user", "add", "--parent", site, "--email", "bob@example.com", "--json"], admin(), password + "\n"));
    const c = await browser.newContext();
    const p = await openPage(c);
    await p.getByTestId("email").fill("bob@example.com");
    await p.getByTestId("password").fill(password);
    await p.getByTestId("signin").click();
    await p.getByTestId("tree").waitFor();
    await waitFor("bob online", async () => (await linkState(p)) === "online", 15_000);
    await onCloud("user", "rm", bob);
    await p.getByTestId("signin-error").filter({ hasText: "Your session has ended" }).waitFor({ timeout: 20_000 });
    assert.equal(await linkState(p), "signed out by the server");
    assert.equal(await p.getByTestId("email").inputValue(), "bob@example.com", "the address is filled in");
    const dbs = await p.evaluate(async () => (await indexedDB.databases()).map((d) => d.name));
    assert.ok(dbs.includes(`siot.${bob}`), `the replica is kept: ${dbs.join(" ")}`);
    await c.close();
  });

  test("screenshots were written", () => {
    for (const n of ["tree", "node", "node-history", "tree-phone", "node-phone"]) {
      const png = readFileSync(join(process.cwd(), "web", ".build", "screenshots", `${n}.png`));
      assert.equal(png.subarray(1, 4).toString(), "PNG", `${n}.png`);
      assert.ok(png.length > 5_000, `${n}.png is ${png.length} bytes`);
    }
  });
});
