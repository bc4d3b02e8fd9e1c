// The login identity of an address (transport.EmailID) and the SHA-1 it
// needs, which the page computes itself (crypto.subtle is missing outside
// a secure context).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { randomID } from "../src/crdt/ids.ts";
import { emailID, sha1 } from "../src/link/index.ts";

test("sha1 matches node:crypto at every length across block boundaries", () => {
  for (let n = 0; n < 300; n++) {
    const b = new Uint8Array(n).map((_, i) => (i * 31 + n) & 0xff);
    assert.equal(Buffer.from(sha1(b)).toString("hex"), createHash("sha1").update(b).digest("hex"), `length ${n}`);
  }
});

test("emailID is transport.EmailID: trimmed, lowercased, name-based", () => {
  // Printed by transport.EmailID for the same inputs.
  assert.equal(emailID(" Ann@Example.com "), "42b2d9ef-32e8-5f63-9953-31fd49c3c2a3");
  assert.equal(emailID("bob@example.com"), "d6acbaa4-4111-51d2-be45-3889e5825c87");
  assert.equal(emailID("ü@例え.jp"), "505c5d21-7cd6-5cdf-a043-1eb8047c1b90");
});

test("randomID is a version 4 UUID, different every time", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const id = randomID();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    seen.add(id);
  }
  assert.equal(seen.size, 1000);
});
