// web/src/link/repair.ts without a server: child sketch keys against Go's
// (replica TestChildKeyVectors pins the same values), and the pass
// schedule of runRepairs against a scripted acceptor, the test driving
// time through the loop's sleep. link.test.ts runs repair against a real
// `siot serve`.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { IDBFactory, IDBKeyRange } from "fake-indexeddb";
import { toHex } from "../src/crdt/bytes.ts";
import { parseDigest } from "../src/crdt/digest.ts";
import { childKey, childTag, runRepairs, type RepairIO, type RepairPass } from "../src/link/repair.ts";
import { openStore, type Store } from "../src/store/index.ts";
import { encodeError } from "../src/wire/messages.ts";
import { decodeRepairRequest, encodeRepairReply, type RepairReply } from "../src/wire/repair.ts";

describe("child sketch keys", () => {
  // The values of replica.childKey and childTag for these records.
  const cases = [
    {
      c: { id: "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0", active: true, edge: "00112233445566778899aabbccddeeff", own: "0123456789abcdef0123456789abcdef", sub: "fedcba9876543210fedcba9876543210" },
      keys: { 0: "b15cef18e80fd0c631bc612d896c3144", 0xdeadbeef: "b15cef18e80fd0c6dab1f4b6ef4d2279" },
    },
    {
      c: { id: "ffeeddcc-bbaa-4988-b766-554433221100", active: false, edge: "80000000000000000000000000000001", own: "0".repeat(32), sub: "0".repeat(32) },
      keys: { 0: "73848b65f95719f63489f88db30a02d5", 0xdeadbeef: "73848b65f95719f6bdb874da24af1768" },
    },
  ];
  for (const { c, keys } of cases) {
    test(c.id, () => {
      const cd = { id: c.id, active: c.active, edge: parseDigest(c.edge), own: parseDigest(c.own), sub: parseDigest(c.sub) };
      for (const [salt, want] of Object.entries(keys)) {
        assert.equal(toHex(childKey(cd, Number(salt))), want, `salt ${salt}`);
      }
      assert.equal(childTag(c.id).toString(16).padStart(16, "0"), keys[0].slice(0, 16));
    });
  }
});

const user = "0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0a";
const site = "1b1b1b1b-1b1b-4b1b-8b1b-1b1b1b1b1b1b";
let dbs = 0;

/** A store holding the user's edge under site (its scope root) and nothing else. */
async function userStore(): Promise<Store> {
  const st = await openStore(`repair-${dbs++}`, new IDBFactory(), { keyRange: IDBKeyRange });
  const origin = "2c2c2c2c-2c2c-4c2c-8c2c-2c2c2c2c2c2c";
  await st.apply([{ node: user, parent: site, type: "edge", key: "0", value: 0, text: "", tombstone: false, time: 1n << 20n, origin }]);
  return st;
}

/** An acceptor that answers every request with answer(request number). */
function scripted(store: Store, answer: (i: number) => RepairReply | string): { io: RepairIO; roots: string[] } {
  const roots: string[] = [];
  let i = 0;
  const io: RepairIO = {
    store,
    remote: "3d3d3d3d-3d3d-4d3d-8d3d-3d3d3d3d3d3d",
    request: async (b) => {
      roots.push(decodeRepairRequest(b).root);
      const a = answer(i++);
      return typeof a === "string" ? encodeError(a) : encodeRepairReply(a);
    },
    push: async () => {
      throw new Error("no push expected");
    },
    checkTime: () => {},
    observe: () => {},
  };
  return { io, roots };
}

const reply = (r: Partial<RepairReply>): RepairReply => ({
  summaries: [],
  listings: [],
  buckets: [],
  childDiffs: [],
  points: new Uint8Array(0),
  aggregate: new Uint8Array(0),
  answered: [1n, 0n, 0n, 0n, 0n, 0n, 0n],
  ...r,
});
const equal = reply({});
// The root differs, but neither its points nor anything below: a round of one exchange that is not equal.
const differs = reply({
  summaries: [{ node: site, own: new Uint8Array(16), children: [], buckets: [], many: false, belowEqual: true, aggregated: false }],
});

/** Runs runRepairs until its sleeps number stopAfter; returns the passes and the sleeps asked. */
async function schedule(io: RepairIO, stopAfter: number): Promise<{ passes: RepairPass[]; sleeps: number[] }> {
  const passes: RepairPass[] = [];
  const sleeps: number[] = [];
  let r = 0;
  const rnd = [0, 1, 0.5];
  await runRepairs({
    io,
    user,
    intervalMs: 60_000,
    random: () => rnd[r++ % rnd.length],
    waitIdle: async () => true,
    sleep: async (ms) => {
      sleeps.push(ms);
      return sleeps.length < stopAfter;
    },
    onPass: (p) => passes.push(p),
  });
  return { passes, sleeps };
}

describe("runRepairs", () => {
  test("an equal scope: one pass of one exchange per interval, 60 s ± 10%", async () => {
    const st = await userStore();
    const { io, roots } = scripted(st, () => equal);
    const { passes, sleeps } = await schedule(io, 3);
    assert.deepEqual(roots, [site, site, site], "one round of the scope root per pass");
    assert.ok(passes.every((p) => p.equal && p.rounds.length === 1 && p.rounds[0].roundTrips === 1));
    assert.deepEqual(sleeps, [54_000, 66_000, 60_000]);
    await st.close();
  });

  test("differences: passes follow at once, at most three in a row", async () => {
    const st = await userStore();
    // Differences twice, then equal; then always different.
    const { io } = scripted(st, (i) => (i === 0 || i === 1 ? differs : i === 2 ? equal : differs));
    const { passes, sleeps } = await schedule(io, 2);
    assert.deepEqual(
      passes.map((p) => p.equal),
      [false, false, true, false, false, false],
    );
    assert.equal(sleeps.length, 2);
    await st.close();
  });

  test("a refused round ends its pass, not the loop", async () => {
    const st = await userStore();
    const { io } = scripted(st, (i) => (i === 0 ? "repair: refused on a user's link: not a parent" : equal));
    const { passes } = await schedule(io, 1);
    assert.equal(passes[0].equal, false);
    assert.match(passes[0].error ?? "", /not a parent/);
    assert.equal(passes[1].equal, true);
    await st.close();
  });

  test("a replica that knows no scope root has nothing to compare", async () => {
    const st = await openStore(`repair-${dbs++}`, new IDBFactory(), { keyRange: IDBKeyRange });
    const { io, roots } = scripted(st, () => equal);
    const { passes } = await schedule(io, 1);
    assert.deepEqual(roots, []);
    assert.ok(passes[0].equal);
    await st.close();
  });
});
