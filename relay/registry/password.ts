/**
 * Password hashing for device registrations, with scrypt.
 *
 * A stored hash is one self-describing string,
 * `scrypt$<N>$<r>$<p>$<saltBase64>$<hashBase64>`, so the cost can be raised later
 * without breaking existing registrations: {@link verifyPassword} reads the parameters
 * from the string, never from the current defaults.
 *
 * @example
 * ```ts
 * import { hashPassword, verifyPassword } from "./password.ts";
 *
 * const stored = await hashPassword("s3cret", { cost: 2 ** 10 });
 * console.assert(await verifyPassword("s3cret", stored));
 * console.assert(!(await verifyPassword("guess", stored)));
 * ```
 *
 * @module
 */

import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** Default scrypt cost N (CPU/memory cost, 16 MiB with r = 8). */
export const DEFAULT_SCRYPT_COST = 2 ** 14;
/** Smallest cost {@link hashPassword} and {@link verifyPassword} accept. */
export const MIN_SCRYPT_COST = 2 ** 10;
/** Largest cost accepted (1 GiB with r = 8); bounds the memory a stored string can demand. */
export const MAX_SCRYPT_COST = 2 ** 20;

const BLOCK_SIZE = 8; // r
const PARALLELISM = 1; // p
const SALT_BYTES = 16;
const KEY_BYTES = 32;
// Bounds for parameters read back from a stored string: anything outside is "malformed",
// so a damaged or hostile registry entry cannot make verification allocate gigabytes.
const MAX_BLOCK_SIZE = 32;
const MAX_PARALLELISM = 16;
const MIN_KEY_BYTES = 16;
const MAX_KEY_BYTES = 128;
const MAX_MEMORY = 1.5 * 1024 ** 3;

/** Options for {@link hashPassword}. */
export interface HashPasswordOptions {
  /** scrypt cost N: a power of two from 2**10 to 2**20 (default 2**14). */
  cost?: number;
}

/**
 * Hashes `password` with scrypt and a fresh 16-byte salt.
 *
 * Resolves to `scrypt$<N>$<r>$<p>$<saltBase64>$<hashBase64>`; throws a `RangeError` if
 * `options.cost` is not a power of two in the accepted range.
 */
export async function hashPassword(
  password: string,
  options: HashPasswordOptions = {},
): Promise<string> {
  const cost = options.cost ?? DEFAULT_SCRYPT_COST;
  if (!isValidCost(cost)) {
    throw new RangeError(
      `Cannot hash password: cost ${cost} is not a power of two from ${MIN_SCRYPT_COST} to ${MAX_SCRYPT_COST}`,
    );
  }
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  const key = await derive(password, salt, cost, BLOCK_SIZE, PARALLELISM, KEY_BYTES);
  return ["scrypt", cost, BLOCK_SIZE, PARALLELISM, salt.toBase64(), key.toBase64()].join("$");
}

/**
 * Checks `password` against a string made by {@link hashPassword}.
 *
 * Compares in constant time. Resolves to false, never rejects, when `stored` is
 * malformed, so a damaged registration simply refuses logins.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const params = parseStored(stored);
  if (params === null) return false;
  try {
    const key = await derive(
      password,
      params.salt,
      params.n,
      params.r,
      params.p,
      params.hash.length,
    );
    return timingSafeEqual(key, params.hash);
  } catch {
    return false;
  }
}

/** The parameters of a stored scrypt hash. */
export interface StoredParams {
  /** Cost N. */
  n: number;
  /** Block size r. */
  r: number;
  /** Parallelism p. */
  p: number;
  /** Salt. */
  salt: Uint8Array;
  /** The scrypt output. */
  hash: Uint8Array;
}

/** Parses a stored `scrypt$N$r$p$salt$hash` string; null when malformed or out of bounds. */
export function parseScryptHash(stored: string): StoredParams | null {
  return parseStored(stored);
}

function isValidCost(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_SCRYPT_COST && n <= MAX_SCRYPT_COST &&
    (n & (n - 1)) === 0;
}

/** Parses a stored hash; null when any part is missing, out of range or not canonical. */
function parseStored(stored: string): StoredParams | null {
  if (typeof stored !== "string") return null;
  const parts = stored.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return null;
  const [n, r, p] = parts.slice(1, 4).map(parseDecimal);
  if (!isValidCost(n)) return null;
  if (!(r >= 1 && r <= MAX_BLOCK_SIZE) || !(p >= 1 && p <= MAX_PARALLELISM)) return null;
  if (128 * n * r > MAX_MEMORY) return null;
  const salt = parseBase64(parts[4]);
  const hash = parseBase64(parts[5]);
  if (salt === null || salt.length === 0) return null;
  if (hash === null || hash.length < MIN_KEY_BYTES || hash.length > MAX_KEY_BYTES) return null;
  return { n, r, p, salt, hash };
}

/** Decimal integer without sign, leading zeros or spaces; NaN otherwise. */
function parseDecimal(text: string): number {
  return /^[1-9][0-9]{0,9}$/.test(text) ? Number(text) : NaN;
}

/** Canonical padded base64 only, so one hash has exactly one spelling. */
function parseBase64(text: string): Uint8Array | null {
  try {
    const bytes = Uint8Array.fromBase64(text);
    return bytes.toBase64() === text ? bytes : null;
  } catch {
    return null;
  }
}

function derive(
  password: string,
  salt: Uint8Array,
  n: number,
  r: number,
  p: number,
  keyBytes: number,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    // scrypt needs about 128 * N * r bytes; the default maxmem (32 MiB) is too small above N = 2**14.
    const maxmem = 256 * n * r + 1024 * 1024;
    scrypt(password, salt, keyBytes, { N: n, r, p, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(new Uint8Array(key));
    });
  });
}
