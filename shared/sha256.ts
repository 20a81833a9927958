/**
 * SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104) for short inputs, in TypeScript.
 *
 * Why not `node:crypto`: a login's hashes are over a few hundred bytes, and there the
 * call costs more than the hashing. In Deno, `createHmac` builds two `Hash` objects
 * (each a Node stream) and Buffers from a pooled allocator for every call: measured at
 * 8-12 µs CPU per HMAC in a loop and 25-35 µs inside a relay serving logins (garbage and
 * allocator work included), against about 3 µs here. Large inputs (files, relay link
 * frames) stay with `node:crypto`, whose native code hashes bulk data several times faster.
 *
 * The code has no branch and no memory access that depends on the data, only on its
 * length, so its timing reveals nothing of a key. Tests check it against FIPS 180-4 and
 * RFC 4231 vectors and against `node:crypto` for every length up to several blocks.
 *
 * @example
 * ```ts
 * import { hmacSha256, sha256 } from "./sha256.ts";
 *
 * const utf8 = new TextEncoder();
 * console.assert(sha256(utf8.encode("abc")).toHex().startsWith("ba7816bf"));
 * console.assert(hmacSha256(utf8.encode("key"), utf8.encode("message")).length === 32);
 * ```
 *
 * @module
 */

/** Bytes of a SHA-256 digest. */
export const SHA256_BYTES = 32;

const BLOCK = 64;

// Round constants: the first 32 bits of the fractional parts of the cube roots of the
// first 64 primes (FIPS 180-4 section 4.2.2).
const K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);

// Initial hash value (FIPS 180-4 section 5.3.3).
const IV = new Int32Array([
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
]);

// Scratch state of the one hash being computed. Every exported function runs to the end
// synchronously, so no two computations ever share it (a worker has its own module copy).
const state = new Int32Array(8);
const schedule = new Int32Array(64);
const block = new Uint8Array(BLOCK);
let filled = 0;
let total = 0;
const pad = new Uint8Array(BLOCK);
const inner = new Uint8Array(SHA256_BYTES);

/** Processes the 64-byte block of `bytes` at `offset`. */
function compress(bytes: Uint8Array, offset: number): void {
  const w = schedule;
  for (let i = 0; i < 16; i++, offset += 4) {
    w[i] = (bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) |
      bytes[offset + 3];
  }
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15];
    const y = w[i - 2];
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
  }
  let a = state[0], b = state[1], c = state[2], d = state[3];
  let e = state[4], f = state[5], g = state[6], h = state[7];
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0] + a) | 0;
  state[1] = (state[1] + b) | 0;
  state[2] = (state[2] + c) | 0;
  state[3] = (state[3] + d) | 0;
  state[4] = (state[4] + e) | 0;
  state[5] = (state[5] + f) | 0;
  state[6] = (state[6] + g) | 0;
  state[7] = (state[7] + h) | 0;
}

function start(): void {
  state.set(IV);
  filled = 0;
  total = 0;
}

function update(bytes: Uint8Array): void {
  total += bytes.length;
  let i = 0;
  if (filled > 0) {
    i = Math.min(BLOCK - filled, bytes.length);
    block.set(bytes.subarray(0, i), filled);
    filled += i;
    if (filled < BLOCK) return;
    compress(block, 0);
    filled = 0;
  }
  for (; i + BLOCK <= bytes.length; i += BLOCK) compress(bytes, i);
  if (i < bytes.length) {
    block.set(bytes.subarray(i), 0);
    filled = bytes.length - i;
  }
}

/** Pads, processes the last block(s) and writes the digest into `out`. */
function finish(out: Uint8Array): Uint8Array {
  block[filled++] = 0x80;
  if (filled > BLOCK - 8) {
    block.fill(0, filled);
    compress(block, 0);
    filled = 0;
  }
  block.fill(0, filled, BLOCK - 8);
  // The message length in bits, big-endian in the last 8 bytes.
  const high = Math.floor(total / 0x20000000);
  const low = (total * 8) >>> 0;
  block[56] = high >>> 24;
  block[57] = high >>> 16;
  block[58] = high >>> 8;
  block[59] = high;
  block[60] = low >>> 24;
  block[61] = low >>> 16;
  block[62] = low >>> 8;
  block[63] = low;
  compress(block, 0);
  for (let i = 0; i < 8; i++) {
    const v = state[i];
    out[4 * i] = v >>> 24;
    out[4 * i + 1] = v >>> 16;
    out[4 * i + 2] = v >>> 8;
    out[4 * i + 3] = v;
  }
  return out;
}

/** SHA-256 of the concatenation of `parts`. */
export function sha256(...parts: Uint8Array[]): Uint8Array {
  start();
  for (const p of parts) update(p);
  return finish(new Uint8Array(SHA256_BYTES));
}

/** HMAC-SHA-256 under `key` of the concatenation of `parts`. */
export function hmacSha256(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  // A key longer than a block is replaced by its hash (RFC 2104 section 2).
  const k = key.length > BLOCK ? sha256(key) : key;
  pad.fill(0);
  pad.set(k);
  for (let i = 0; i < BLOCK; i++) pad[i] ^= 0x36;
  start();
  update(pad);
  for (const p of parts) update(p);
  finish(inner);
  for (let i = 0; i < BLOCK; i++) pad[i] ^= 0x36 ^ 0x5c;
  start();
  update(pad);
  update(inner);
  const out = finish(new Uint8Array(SHA256_BYTES));
  pad.fill(0); // no key material left behind in module state
  inner.fill(0);
  return out;
}
