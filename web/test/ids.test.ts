// testdata/crdt/ids.json: crdt.ParseID.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { toHex } from "../src/crdt/bytes.ts";
import { InvalidIDError, parseID, uuidBytes, uuidFromBytes } from "../src/crdt/ids.ts";
import { loadVectors, type VectorCase } from "./vectors.ts";

interface IDCase extends VectorCase {
  input: string;
  id?: string;
  hex?: string;
  error?: string;
}

describe("ids.json", () => {
  for (const c of loadVectors<IDCase>("ids")) {
    test(c.name, () => {
      if (c.error !== undefined) {
        assert.equal(c.error, "invalid", "the only ID error is invalid");
        assert.throws(() => parseID(c.input), InvalidIDError);
        return;
      }
      const id = parseID(c.input);
      assert.equal(id, c.id, "id");
      assert.equal(toHex(uuidBytes(id)), c.hex, "hex");
      assert.equal(uuidFromBytes(uuidBytes(id)), id, "bytes round trip");
    });
  }
});
