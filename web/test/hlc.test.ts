// testdata/crdt/hlc.json: the hybrid logical clock and crdt.ParseTimestamp.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Clock, InvalidTimestampError, newTimestamp, parseTimestamp, SkewError, skewOK } from "../src/crdt/hlc.ts";
import { loadVectors, u64, type VectorCase } from "./vectors.ts";

interface HLCCase extends VectorCase {
  op: "now" | "update" | "parse";
  last?: string;
  physicalMs?: number;
  maxOffsetMs?: number;
  correctionMs?: number;
  remote?: string;
  input?: string;
  result?: string;
  error?: string;
  lastAfter?: string;
}

describe("hlc.json", () => {
  for (const c of loadVectors<HLCCase>("hlc")) {
    test(c.name, () => {
      if (c.op === "parse") {
        assert.equal(typeof c.input, "string", "a parse case has an input");
        if (c.error !== undefined) {
          assert.equal(c.error, "invalid");
          assert.throws(() => parseTimestamp(c.input!), InvalidTimestampError);
          return;
        }
        const ts = parseTimestamp(c.input!);
        assert.equal(String(ts), c.input, "prints back as the input");
        assert.equal(String(ts), c.result, "result");
        return;
      }
      assert.ok(c.op === "now" || c.op === "update", `unknown op ${c.op}`);
      const physical = c.physicalMs!;
      const maxOffset = c.maxOffsetMs!;
      const correction = c.correctionMs ?? 0;
      const last = u64("last", c.last!);
      const clock = new Clock({ physical: () => physical, maxOffsetMs: maxOffset });
      clock.setCorrection(correction);
      clock.observe(last);
      assert.equal(clock.last(), last, "after observe(last)");
      if (c.op === "now") {
        assert.equal(String(clock.now()), c.result, "result");
      } else {
        const remote = u64("remote", c.remote!);
        let checkErr: unknown;
        try {
          clock.check(remote);
        } catch (e) {
          checkErr = e;
        }
        const ok = skewOK(remote, newTimestamp(physical + correction, 0), maxOffset);
        if (c.error !== undefined) {
          assert.equal(c.error, "skew");
          assert.throws(() => clock.update(remote), SkewError);
          assert.ok(checkErr instanceof SkewError, "check refuses too");
          assert.equal(ok, false, "skewOK refuses too");
        } else {
          assert.equal(String(clock.update(remote)), c.result, "result");
          assert.equal(checkErr, undefined, "check accepts too");
          assert.equal(ok, true, "skewOK accepts too");
        }
      }
      assert.equal(String(clock.last()), c.lastAfter, "lastAfter");
    });
  }
});
