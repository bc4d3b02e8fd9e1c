// SHA-256 (FIPS 180-4), synchronous.
//
// Written here rather than taken from WebCrypto or a package: WebCrypto's
// digest is asynchronous and the crdt core is synchronous like the Go one
// (a merge or a digest update must not yield); @noble/hashes 2.x would do
// but requires Node >= 20.19 and adds a runtime dependency to the browser
// bundle for ~70 lines. It is checked against node:crypto on random inputs
// and, through the point digests, against testdata/crdt.

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);

/**
 * A SHA-256 state with its buffers, reused from hash to hash: a store
 * applying a first sync hashes hundreds of thousands of short inputs, and
 * allocating per hash cost more than the compression itself.
 */
export class Sha256 {
  /** The state after sum(): the hash as eight big-endian words. */
  readonly h = new Int32Array(8);
  private readonly w = new Int32Array(64);
  private pad = new Uint8Array(128);

  /** Hashes data[0:n] (all of data by default) into h. */
  sum(data: Uint8Array, n = data.length): Int32Array {
    const blocks = Math.ceil((n + 9) / 64);
    if (this.pad.length < blocks * 64) this.pad = new Uint8Array(blocks * 128);
    const buf = this.pad;
    const len = blocks * 64;
    buf.set(n === data.length ? data : data.subarray(0, n));
    buf.fill(0, n, len);
    buf[n] = 0x80;
    const bits = n * 8; // exact below 2^53
    const hi = Math.floor(bits / 2 ** 32);
    const lo = bits >>> 0;
    buf[len - 8] = hi >>> 24;
    buf[len - 7] = hi >>> 16;
    buf[len - 6] = hi >>> 8;
    buf[len - 5] = hi;
    buf[len - 4] = lo >>> 24;
    buf[len - 3] = lo >>> 16;
    buf[len - 2] = lo >>> 8;
    buf[len - 1] = lo;
    const h = this.h;
    h.set(IV);
    const w = this.w;
    for (let off = 0; off < len; off += 64) {
      for (let t = 0; t < 16; t++) {
        const i = off + 4 * t;
        w[t] = (buf[i] << 24) | (buf[i + 1] << 16) | (buf[i + 2] << 8) | buf[i + 3];
      }
      for (let t = 16; t < 64; t++) {
        const x = w[t - 15];
        const y = w[t - 2];
        const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
      }
      let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
      for (let t = 0; t < 64; t++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const ch = (e & f) ^ (~e & g);
        const t1 = (hh + S1 + ch + K[t] + w[t]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const maj = (a & b) ^ (a & c) ^ (b & c);
        const t2 = (S0 + maj) | 0;
        hh = g;
        g = f;
        f = e;
        e = (d + t1) | 0;
        d = c;
        c = b;
        b = a;
        a = (t1 + t2) | 0;
      }
      h[0] = (h[0] + a) | 0;
      h[1] = (h[1] + b) | 0;
      h[2] = (h[2] + c) | 0;
      h[3] = (h[3] + d) | 0;
      h[4] = (h[4] + e) | 0;
      h[5] = (h[5] + f) | 0;
      h[6] = (h[6] + g) | 0;
      h[7] = (h[7] + hh) | 0;
    }
    return h;
  }
}

/** Returns the 32-byte SHA-256 of data. */
export function sha256(data: Uint8Array): Uint8Array {
  const h = new Sha256().sum(data);
  const out = new Uint8Array(32);
  for (let i = 0; i < 8; i++) {
    out[4 * i] = h[i] >>> 24;
    out[4 * i + 1] = h[i] >>> 16;
    out[4 * i + 2] = h[i] >>> 8;
    out[4 * i + 3] = h[i];
  }
  return out;
}
