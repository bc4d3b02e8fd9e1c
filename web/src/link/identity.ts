// The identity a browser needs before it holds a token: the login prefix
// of an email address (docs/protocol.md, "Subjects": the name-based UUID
// of the address, SHA-1, version 5). It works outside a secure context,
// where crypto.subtle is missing (a page served over plain HTTP on a LAN
// address).

import { utf8 } from "../crdt/bytes.ts";
import { uuidBytes, uuidFromBytes } from "../crdt/ids.ts";

/** The namespace of login IDs (transport.EmailID). */
const emailSpace = "5b0e7f7e-6c1a-4b8e-9d57-0c6b1f0a2f43";

/** An address as the server compares it: trimmed and lowercased. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** The login identity's ID of an email address: siot.login.<emailID> is its prefix. */
export function emailID(email: string): string {
  const name = utf8(normalizeEmail(email));
  const ns = uuidBytes(emailSpace);
  const b = new Uint8Array(16 + name.length);
  b.set(ns);
  b.set(name, 16);
  const h = sha1(b).subarray(0, 16);
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  return uuidFromBytes(h);
}

/** SHA-1 of b (FIPS 180-4): only for name-based UUIDs, never for security. */
export function sha1(b: Uint8Array): Uint8Array {
  const ml = b.length;
  const n = (((ml + 8) >> 6) + 1) << 6;
  const m = new Uint8Array(n);
  m.set(b);
  m[ml] = 0x80;
  const dv = new DataView(m.buffer);
  dv.setUint32(n - 8, Math.floor(ml / 0x20000000));
  dv.setUint32(n - 4, (ml << 3) >>> 0);
  let h0 = 0x67452301, h1 = 0xefcdab89, h2 = 0x98badcfe, h3 = 0x10325476, h4 = 0xc3d2e1f0;
  const w = new Uint32Array(80);
  for (let off = 0; off < n; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = dv.getUint32(off + 4 * i);
    for (let i = 16; i < 80; i++) {
      const x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
      w[i] = (x << 1) | (x >>> 31);
    }
    let a = h0, bb = h1, c = h2, d = h3, e = h4;
    for (let i = 0; i < 80; i++) {
      let f: number, k: number;
      if (i < 20) (f = (bb & c) | (~bb & d)), (k = 0x5a827999);
      else if (i < 40) (f = bb ^ c ^ d), (k = 0x6ed9eba1);
      else if (i < 60) (f = (bb & c) | (bb & d) | (c & d)), (k = 0x8f1bbcdc);
      else (f = bb ^ c ^ d), (k = 0xca62c1d6);
      const t = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) >>> 0;
      e = d;
      d = c;
      c = (bb << 30) | (bb >>> 2);
      bb = a;
      a = t;
    }
    h0 = (h0 + a) >>> 0;
    h1 = (h1 + bb) >>> 0;
    h2 = (h2 + c) >>> 0;
    h3 = (h3 + d) >>> 0;
    h4 = (h4 + e) >>> 0;
  }
  const out = new Uint8Array(20);
  const o = new DataView(out.buffer);
  [h0, h1, h2, h3, h4].forEach((h, i) => o.setUint32(4 * i, h));
  return out;
}
