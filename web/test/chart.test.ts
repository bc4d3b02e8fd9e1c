// web/src/ui/chart.ts's HistoryCharts against a fake server: what it asks
// for, how it pages, what it refuses, and when it asks again. The page's
// clock is the test's; the drawing is checked in Chromium (ui.test.ts).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { newTimestamp } from "../src/crdt/hlc.ts";
import { OfflineError } from "../src/link/link.ts";
import { RemoteError, type HistoryPage, type HistoryRequest } from "../src/wire/messages.ts";
import { chartSteps, HistoryCharts, refreshMs, spans, type Chart } from "../src/ui/chart.ts";

interface Rec {
  start: number;
  count: number;
  min: number;
  max: number;
  sum: number;
  last: number;
  lastTime: bigint;
}

/** The step records of a page, as transport.AppendHistoryStep writes them. */
function records(rs: Rec[]): Uint8Array {
  const b = new Uint8Array(56 * rs.length);
  const dv = new DataView(b.buffer);
  rs.forEach((r, i) => {
    const o = 56 * i;
    dv.setBigInt64(o, BigInt(r.start));
    dv.setBigUint64(o + 8, BigInt(r.count));
    [r.min, r.max, r.sum, r.last].forEach((v, j) => dv.setFloat64(o + 16 + 8 * j, v));
    dv.setBigUint64(o + 48, r.lastTime);
  });
  return b;
}

const page = (rs: Rec[], more = false, next: Uint8Array | null = null): HistoryPage => ({ known: true, samples: null, steps: records(rs), next, more });

const span = spans[1]; // 24 h
const step = span.ms / chartSteps;
const node = "0a0a0a0a-0000-4000-8000-00000000000a";

/** A HistoryCharts whose server answers with the pages of answer, at time now (ms). */
function setup(answer: (req: HistoryRequest, n: number) => HistoryPage | Promise<HistoryPage>, t0 = 1_700_000_000_000) {
  const asked: HistoryRequest[] = [];
  let wake: () => void = () => {};
  const clock = { now: t0 };
  const charts = new HistoryCharts(
    async (req) => {
      asked.push(req);
      return answer(req, asked.length);
    },
    () => wake(),
    () => clock.now,
  );
  /** get, and when it fetched, the chart once the fetch ended. */
  const get = async (seen: bigint, online = true): Promise<Chart | undefined> => {
    const before = asked.length;
    const done = new Promise<void>((res) => (wake = res));
    const c = charts.get(node, "level", "0", span, seen, online);
    await new Promise((r) => setTimeout(r, 0));
    if (asked.length === before) return c;
    await done;
    return charts.get(node, "level", "0", span, seen, false); // offline: a look, no fetch
  };
  return { asked, get, clock, charts };
}

describe("history charts", () => {
  test("asks for whole steps over the span, and pages through more and next", async () => {
    const t0 = 1_700_000_000_123;
    const end = (Math.floor(t0 / step) + 1) * step;
    const from = end - span.ms;
    const cursor = new Uint8Array([0, 0, 1, 2, 3, 4, 5, 6]);
    const { asked, get } = setup((_req, n) =>
      n === 1
        ? page(
            [
              { start: from, count: 2, min: 1, max: 3, sum: 4, last: 3, lastTime: 5n },
              { start: from + 7 * step, count: 1, min: 2, max: 2, sum: 2, last: 2, lastTime: 9n },
            ],
            true,
            cursor,
          )
        : page([{ start: from + 239 * step, count: 4, min: -1, max: 8, sum: 10, last: 0, lastTime: 99n }]),
    t0);
    const c = await get(99n);
    assert.equal(asked.length, 2);
    assert.deepEqual(
      { ...asked[0], after: null },
      { node, type: "level", key: "0", from: BigInt(from), to: 0n, step: BigInt(step), after: null, max: 0n },
    );
    assert.equal(BigInt(from) % BigInt(step), 0n, "steps aligned");
    assert.equal(asked[0].after, null);
    assert.deepEqual(asked[1].after, cursor);
    assert.ok(c?.loaded && c.error === undefined);
    assert.equal(c.count, 7);
    assert.deepEqual(c.steps.map((s) => s.mean), [2, 2, 2.5]);
    assert.equal(c.latest, 99n);
    // Fetched and current: nothing more is asked.
    await get(99n);
    assert.equal(asked.length, 2);
  });

  test("a page that repeats its cursor, or steps out of order, is refused", async () => {
    const t0 = 1_700_000_000_000;
    const from = (Math.floor(t0 / step) + 1) * step - span.ms;
    const again = setup(() => page([], true, new Uint8Array(8)));
    const a = await again.get(1n);
    assert.equal(again.asked.length, 2, "the second page repeats the first's cursor");
    assert.ok(!a?.loaded && /without a new cursor/.test(a?.error ?? ""), a?.error);
    const rec = (start: number) => ({ start, count: 1, min: 1, max: 1, sum: 1, last: 1, lastTime: 1n });
    const order = setup((_r, n) => (n === 1 ? page([rec(from + 5 * step)], true, new Uint8Array([1])) : page([rec(from + 5 * step)])), t0);
    assert.match((await order.get(1n))?.error ?? "", /does not follow/);
    const off = setup(() => page([rec(from + step / 2)]), t0);
    assert.match((await off.get(1n))?.error ?? "", /does not follow/, "a step off the grid");
  });

  test("refused: the reason is shown and not asked again until the point changes", async () => {
    const s = setup(() => {
      throw new RemoteError("permission denied: node 0a0a… is outside what user:… may read");
    });
    const c = await s.get(1n);
    assert.match(c?.error ?? "", /may not read this point's history/);
    assert.ok(!c?.retry);
    s.clock.now += refreshMs;
    await s.get(1n);
    assert.equal(s.asked.length, 1);
    await s.get(2n);
    assert.equal(s.asked.length, 2, "the point changed");
  });

  test("offline: nothing is asked; a fetch that found no link is tried again a second later", async () => {
    let online = false;
    const s = setup(() => {
      if (!online) throw new OfflineError("offline");
      return page([]);
    });
    assert.equal(await s.get(1n, false), undefined);
    assert.equal(s.asked.length, 0);
    const c = await s.get(1n);
    assert.ok(c?.retry && /needs the server/.test(c.error ?? ""));
    online = true;
    s.clock.now += 1_000;
    const d = await s.get(1n);
    assert.ok(d?.loaded && d.error === undefined && d.steps.length === 0);
  });

  test("a chart that lacks its point's latest value asks again, a few times", async () => {
    const t0 = 1_700_000_000_000;
    const from = (Math.floor(t0 / step) + 1) * step - span.ms;
    const seen = newTimestamp(t0 - 1000, 0);
    let has = 0n;
    const s = setup(() => (has ? page([{ start: from + 239 * step, count: 1, min: 1, max: 1, sum: 1, last: 1, lastTime: has }]) : page([])), t0);
    await s.get(seen);
    assert.equal(s.asked.length, 1);
    for (let i = 2; i <= 6; i++) {
      s.clock.now += refreshMs;
      await s.get(seen);
      assert.equal(s.asked.length, i);
    }
    s.clock.now += refreshMs;
    await s.get(seen);
    assert.equal(s.asked.length, 6, "six tries, then it waits for a change");
    has = seen;
    const next = newTimestamp(t0, 0);
    s.clock.now += refreshMs;
    await s.get(next);
    assert.equal(s.asked.length, 7);
    has = next;
    s.clock.now += refreshMs;
    const c = await s.get(next);
    assert.equal(s.asked.length, 8);
    assert.equal(c?.latest, next);
    s.clock.now += refreshMs;
    await s.get(next);
    assert.equal(s.asked.length, 8, "it has the latest value");
  });
});
