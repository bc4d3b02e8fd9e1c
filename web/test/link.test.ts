// web/src/link against a real `siot serve`, built from this repository
// (go build, to a temporary directory): a user's replica in fake-indexeddb
// links over NATS on WebSocket, receives its scope and nothing else,
// pushes its local writes, and resumes after the server was killed and
// restarted. Needs the Go toolchain.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { IDBFactory, IDBKeyRange } from "fake-indexeddb";
import { WebSocket } from "ws";
import { Clock } from "../src/crdt/hlc.ts";
import type { Point } from "../src/crdt/point.ts";
import { Link, type LinkStatus, type RepairPass } from "../src/link/index.ts";
import { allPoints, openStore, type Store } from "../src/store/index.ts";
import { buildSiot, killAll, run, serve, waitFor, type Serving } from "./siot.ts";

// Node 20 has no global WebSocket; nats.ws uses the global one.
(globalThis as { WebSocket?: unknown }).WebSocket ??= WebSocket;

function pt(node: string, type: string, value: number): Point {
  return { node, parent: "", type, key: "0", value, text: "", tombstone: false, time: 0n, origin: "" };
}

/** JSON.stringify's replacer for bigints. */
const big = (_k: string, v: unknown) => (typeof v === "bigint" ? v.toString() : v);

async function holds(st: Store, node: string, type: string, value: number): Promise<boolean> {
  return (await st.get(node)).points.some((p) => p.type === type && p.value === value && !p.tombstone);
}

describe("link", { timeout: 180_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), "siot-link-"));
  const bin = join(tmp, "siot");
  const data = join(tmp, "data");
  let srv: Serving;
  let env: Record<string, string>;
  let site = "";
  let other = "";
  let user = "";
  let token = "";
  let store: Store;
  let link: Link;
  const clock = new Clock({ physical: Date.now });
  const seen: LinkStatus[] = [];
  const siot = (stdin: string, ...args: string[]) => run(bin, args, env, stdin);
  const serverHolds = async (node: string, type: string, value: number) =>
    (await siot("", "get", node, "--json"))
      .split("\n")
      .filter((l) => l.trim() !== "")
      .some((l) => {
        const r = JSON.parse(l) as { type: string; value: number; tombstone: boolean };
        return r.type === type && r.value === value && !r.tombstone;
      });

  before(async () => {
    await buildSiot(bin);
    srv = await serve(bin, data, "127.0.0.1:0", "127.0.0.1:0");
    env = { SIOT_SERVER: srv.nats, SIOT_CREDS: join(data, "admin.creds") };
    const added = (out: string) => (JSON.parse(out) as { node: string }).node;
    site = added(await siot("", "node", "add", "--parent", srv.id, "--type", "site", "--json"));
    other = added(await siot("", "node", "add", "--parent", srv.id, "--type", "site", "--json"));
    await siot("", "set", site, "temp=1");
    await siot("", "set", other, "temp=2");
    user = added(await siot("correct horse\n", "user", "add", "--parent", site, "--email", "ann@example.com", "--json"));
    const creds = join(tmp, "ann.creds");
    await siot("correct horse\n", "login", "--email", "ann@example.com", "--out", creds);
    token = (JSON.parse(readFileSync(creds, "utf8")) as { token: string }).token;
    store = await openStore("replica", new IDBFactory(), { keyRange: IDBKeyRange });
    link = new Link({ url: `ws://${srv.http}/nats`, token, user, store, clock, pollMs: 100 });
    link.subscribe((s) => seen.push(s));
    link.start();
  });

  after(async () => {
    await link?.close();
    await killAll();
    await store?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("receives the site's points written before and after it links", async () => {
    await waitFor("temp=1 of the site in the store", () => holds(store, site, "temp", 1));
    await waitFor("the link online", () => link.status().state === "online");
    await siot("", "set", site, "temp=3");
    await waitFor("temp=3 of the site in the store", () => holds(store, site, "temp", 3));
    const mark = (await store.links()).find((l) => l.remote !== "");
    assert.ok(mark && mark.received > 0, `received mark: ${JSON.stringify(mark)}`);
  });

  test("pushes a local write; the server holds it", async () => {
    await store.writeLocal([pt(site, "setpoint", 7)], clock);
    link.notify();
    await waitFor("setpoint=7 on the server", () => serverHolds(site, "setpoint", 7));
    await waitFor("the link online again", () => link.status().state === "online");
    const [mark] = await store.links();
    assert.equal(mark.acked, await store.lastSeq(), "acked mark at the store's last change");
  });

  test("an edit made while the server is stopped syncs after the restart", async () => {
    const port = new URL(srv.nats).port;
    const http = srv.http;
    srv.proc.kill("SIGKILL");
    await srv.exited;
    await waitFor("the link offline", () => link.status().state === "offline");
    await store.writeLocal([pt(site, "setpoint", 8)], clock);
    link.notify();
    srv = await serve(bin, data, `127.0.0.1:${port}`, http);
    await waitFor("setpoint=8 on the restarted server", () => serverHolds(site, "setpoint", 8), 30_000);
    await siot("", "set", site, "temp=4");
    await waitFor("temp=4 written after the restart", () => holds(store, site, "temp", 4));
    const states = seen.map((s) => s.state);
    assert.ok(states.includes("offline") && states.lastIndexOf("online") > states.indexOf("offline"), `states: ${states.join(" ")}`);
  });

  test("the server's bye ends the session; it resumes when the server is back", async () => {
    const port = new URL(srv.nats).port;
    const http = srv.http;
    await waitFor("the link online", () => link.status().state === "online");
    srv.proc.kill("SIGTERM");
    await srv.exited;
    await waitFor("the link offline", () => link.status().state === "offline");
    const s = link.status();
    assert.ok(s.state === "offline" && s.error.includes("said bye: server shutting down"), `offline: ${JSON.stringify(s)}`);
    srv = await serve(bin, data, `127.0.0.1:${port}`, http);
    await siot("", "set", site, "temp=6");
    await waitFor("temp=6 after the second restart", () => holds(store, site, "temp", 6), 30_000);
  });

  test("a point outside the user's scope never arrives", async () => {
    await siot("", "set", other, "temp=5");
    // A barrier in scope, written after: once it is here, so would the other be.
    await siot("", "set", site, "barrier=1");
    await waitFor("the barrier", () => holds(store, site, "barrier", 1));
    assert.deepEqual((await store.get(other)).points, [], "points of a node outside the user's scope");
    assert.deepEqual((await store.get(other)).parents, []);
  });

  test("close says bye and stops; a new link on the same store resumes from its marks", async () => {
    await link.close();
    assert.equal(link.status().state, "offline");
    await siot("", "set", site, "temp=7");
    await store.writeLocal([pt(site, "setpoint", 9)], clock);
    const before = (await store.links())[0];
    link = new Link({ url: `ws://${srv.http}/nats`, token, user, store, clock, pollMs: 100 });
    link.start();
    await waitFor("temp=7 down the new link", () => holds(store, site, "temp", 7));
    await waitFor("setpoint=9 up the new link", () => serverHolds(site, "setpoint", 9));
    const after = (await store.links())[0];
    assert.ok(after.received > before.received && after.acked > before.acked, `marks ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
  });

  // The repair pass of a link's connect, once it has one found equal.
  const equalPass = async (l: Link): Promise<RepairPass> => {
    await waitFor("a repair pass that found the scope equal", () => l.lastRepair()?.equal === true, 30_000);
    return l.lastRepair()!;
  };

  test("repair finds an equal scope in one exchange, secrets below it and all", async () => {
    // The site holds ann (a password): the server answers with its
    // digests less the secrets, and they match the store's.
    const p = await equalPass(link);
    assert.equal(p.rounds.length, 1, `rounds: ${JSON.stringify(p.rounds)}`);
    const [r] = p.rounds;
    assert.equal(r.root, site);
    assert.equal(r.roundTrips, 1);
    assert.equal(r.fetched + r.sent, 0);
    console.log(`# repair of an equal scope: ${r.roundTrips} round trip, ${r.bytesOut} bytes out, ${r.bytesIn} bytes in`);
    await waitFor("inSync in the status", () => (link.status() as { inSync?: boolean }).inSync === true);
  });

  /**
   * A second replica of ann's: a copy of the first one's registers with
   * its marks, less those drop names, plus points of its own applied as
   * if received (so its sender never pushes them). Resume sees nothing
   * missing; only repair can. It links, and resolves with its passes once
   * one found the scope equal.
   */
  async function converge(name: string, drop: (p: Point) => boolean, own: (instance: string) => Point[]) {
    const remote = (await store.links()).find((l) => l.remote !== "")!;
    const st = await openStore(name, new IDBFactory(), { keyRange: IDBKeyRange });
    const all = await allPoints(store);
    const copy = all.filter((p) => !drop(p));
    assert.ok(copy.length < all.length, "a register to drop is in the first replica");
    await st.apply([...copy, ...own(st.instance)], { source: remote.remote, received: { remote: remote.remote, seq: remote.received } });
    const passes: RepairPass[] = [];
    const l = new Link({ url: `ws://${srv.http}/nats`, token, user, store: st, clock, pollMs: 100, onRepair: (p) => passes.push(p) });
    l.start();
    try {
      await equalPass(l);
    } finally {
      await l.close();
    }
    const [first] = passes;
    assert.ok(!first.equal && first.rounds[0].fetched >= 1 && first.rounds[0].sent >= 1, `first pass: ${JSON.stringify(first, big)}`);
    assert.ok(passes.length <= 3, `${passes.length} passes to converge`);
    const r = first.rounds[0];
    console.log(
      `# repair (${name}): ${r.roundTrips} round trips, ${r.bytesOut} bytes out, ${r.bytesIn} bytes in, fetched ${r.fetched}, sent ${r.sent} (${r.refused} refused); then ${passes.length - 1} pass(es) to equal`,
    );
    return st;
  }

  test("repair converges a replica that lacks points and holds points push cannot see", async () => {
    const st = await converge(
      "replica-2",
      (p) => p.node === site && p.parent === "" && p.type === "temp",
      (inst) => [{ ...pt(site, "repaired", 1), time: clock.now(), origin: inst }],
    );
    try {
      assert.ok(await holds(st, site, "temp", 7), "the site's temp=7 fetched by repair");
      assert.ok(await serverHolds(site, "repaired", 1), "the replica's own point pushed by repair");
    } finally {
      await st.close();
    }
  });

  test("repair descends through child buckets and sketches", async () => {
    // A fleet of 300 children under the site: its summary is by bucket,
    // its differing children found by a child sketch.
    const fleet = crypto.randomUUID();
    const kids = Array.from({ length: 300 }, () => crypto.randomUUID());
    const lines = [JSON.stringify({ node: fleet, parent: site, type: "edge" })];
    kids.forEach((k, i) => lines.push(JSON.stringify({ node: k, parent: fleet, type: "edge" }), JSON.stringify({ node: k, type: "temp", value: i })));
    await siot(lines.join("\n") + "\n", "import");
    await waitFor("the fleet in the first replica", async () => (await holds(store, kids[299], "temp", 299)) && store.childDigests(fleet).length === 300);
    const st = await converge(
      "replica-3",
      (p) => p.node === kids[7] && p.type === "temp",
      (inst) => [{ ...pt(kids[200], "repaired", 2), time: clock.now(), origin: inst }],
    );
    try {
      assert.ok(await holds(st, kids[7], "temp", 7), "a fleet child's temp fetched by repair");
      assert.ok(await serverHolds(kids[200], "repaired", 2), "the replica's point on a fleet child pushed by repair");
    } finally {
      await st.close();
    }
  });
});
