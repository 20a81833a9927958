/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677): the arithmetic of tsunagi's login, shared by the
 * device (which knows the password) and the relay (which knows only a verifier).
 *
 *     SaltedPassword  = PBKDF2-HMAC-SHA-256(password, salt, iterations, 32)
 *     ClientKey       = HMAC(SaltedPassword, "Client Key")
 *     StoredKey       = SHA-256(ClientKey)
 *     ServerKey       = HMAC(SaltedPassword, "Server Key")
 *     AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
 *     ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)
 *     ServerSignature = HMAC(ServerKey, AuthMessage)
 *
 * The relay stores `salt`, `iterations`, `StoredKey`, `ServerKey`: enough to check a
 * proof and to prove itself, not enough to log in. tsunagi carries the SCRAM fields in
 * binary frames (docs/protocol.md section 6.1) but computes AuthMessage exactly as the
 * RFC spells the text messages, so the RFC 7677 test vector holds (see scram_test.ts).
 * The password is used as its UTF-8 bytes (no SASLprep).
 *
 * Everything here is computation: no I/O. The relay side is synchronous (a few HMACs),
 * so a login check has no await inside it to race. The HMACs and hashes are the
 * TypeScript ones of sha256.ts: for inputs this short, `node:crypto` costs several times
 * more per call than the hashing itself.
 *
 * @module
 */

import { scrypt, timingSafeEqual } from "node:crypto";
import { hmacSha256, sha256 as sha256Of } from "./sha256.ts";

/** Bytes of SHA-256 output: keys, proofs and signatures. */
export const KEY_BYTES = 32;

/** The relay's stored verifier of one password. */
export interface ScramVerifier {
  /** PBKDF2 salt. */
  salt: Uint8Array;
  /** PBKDF2 iteration count. */
  iterations: number;
  /** SHA-256(ClientKey). */
  storedKey: Uint8Array;
  /** HMAC(SaltedPassword, "Server Key"). */
  serverKey: Uint8Array;
}

/** The fields an AuthMessage is built from. */
export interface ScramExchange {
  /** Device ID (SCRAM username). */
  id: string;
  /** The client's nonce. */
  clientNonce: string;
  /** Client nonce followed by the server's. */
  nonce: string;
  /** Salt sent in the challenge. */
  salt: Uint8Array;
  /** Iterations sent in the challenge. */
  iterations: number;
}

const utf8 = new TextEncoder();

/** HMAC-SHA-256 of `data` (a string as its UTF-8 bytes). */
export function hmac(key: Uint8Array, data: Uint8Array | string): Uint8Array {
  return hmacSha256(key, typeof data === "string" ? utf8.encode(data) : data);
}

/** SHA-256. */
export function sha256(data: Uint8Array): Uint8Array {
  return sha256Of(data);
}

/** `a XOR b` (same lengths). */
export function xor(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length !== b.length) throw new RangeError(`Cannot xor ${a.length} and ${b.length} bytes`);
  const out = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

/** Constant-time equality of two byte strings (false when the lengths differ). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** PBKDF2-HMAC-SHA-256 of the password's UTF-8 bytes: the slow step, on the device. */
export async function saltedPassword(
  password: string | Uint8Array,
  salt: Uint8Array,
  iterations: number,
): Promise<Uint8Array> {
  // Copies: WebCrypto wants ArrayBuffer-backed views.
  const raw = new Uint8Array(typeof password === "string" ? utf8.encode(password) : password);
  const key = await crypto.subtle.importKey("raw", raw, "PBKDF2", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt: new Uint8Array(salt), iterations },
    key,
    KEY_BYTES * 8,
  );
  return new Uint8Array(bits);
}

/** ClientKey = HMAC(SaltedPassword, "Client Key"). */
export function clientKey(salted: Uint8Array): Uint8Array {
  return hmac(salted, "Client Key");
}

/** ServerKey = HMAC(SaltedPassword, "Server Key"). */
export function serverKey(salted: Uint8Array): Uint8Array {
  return hmac(salted, "Server Key");
}

/** The verifier a relay stores for a salted password. */
export function verifierOf(
  salted: Uint8Array,
  salt: Uint8Array,
  iterations: number,
): ScramVerifier {
  return { salt, iterations, storedKey: sha256(clientKey(salted)), serverKey: serverKey(salted) };
}

/** RFC 5802 saslname: `=` becomes `=3D`, `,` becomes `=2C`. */
export function saslName(id: string): string {
  return id.replaceAll("=", "=3D").replaceAll(",", "=2C");
}

/**
 * AuthMessage for an exchange, as RFC 5802 section 3 builds it from the text messages,
 * with the GS2 header `n,,` (no channel binding), whose base64 is `biws`.
 */
export function authMessage(x: ScramExchange): Uint8Array {
  const clientFirstBare = `n=${saslName(x.id)},r=${x.clientNonce}`;
  const serverFirst = `r=${x.nonce},s=${x.salt.toBase64()},i=${x.iterations}`;
  const clientFinalWithoutProof = `c=biws,r=${x.nonce}`;
  return utf8.encode(`${clientFirstBare},${serverFirst},${clientFinalWithoutProof}`);
}

/** The device's proof: ClientKey XOR HMAC(StoredKey, AuthMessage). */
export function clientProof(salted: Uint8Array, auth: Uint8Array): Uint8Array {
  const key = clientKey(salted);
  return xor(key, hmac(sha256(key), auth));
}

/** ServerSignature = HMAC(ServerKey, AuthMessage). */
export function serverSignature(serverKeyBytes: Uint8Array, auth: Uint8Array): Uint8Array {
  return hmac(serverKeyBytes, auth);
}

/**
 * Checks a client proof against a verifier. Returns the recovered ClientKey when the
 * proof is right, null otherwise; always does the same work.
 */
export function checkProof(
  v: { storedKey: Uint8Array },
  auth: Uint8Array,
  proof: Uint8Array,
): Uint8Array | null {
  const signature = hmac(v.storedKey, auth);
  const key = proof.length === KEY_BYTES ? xor(proof, signature) : new Uint8Array(KEY_BYTES);
  const ok = bytesEqual(sha256(key), v.storedKey) && proof.length === KEY_BYTES;
  return ok ? key : null;
}

const RESUME_KEY_LABEL = utf8.encode("tsunagi-resume-v1\0");
const RESUME_CLIENT_LABEL = utf8.encode("tsunagi-resume-client\0");
const RESUME_SERVER_LABEL = utf8.encode("tsunagi-resume-server\0");

/**
 * The resumption key both sides derive after a full login, from what only the device
 * and the relay know (ClientKey): the secret behind a pool-connection ticket.
 */
export function resumeKey(clientKeyBytes: Uint8Array, auth: Uint8Array): Uint8Array {
  return hmacSha256(clientKeyBytes, RESUME_KEY_LABEL, auth);
}

/** A ticket login's proof (device side) over the exchange's AuthMessage. */
export function resumeProof(key: Uint8Array, auth: Uint8Array): Uint8Array {
  return hmacSha256(key, RESUME_CLIENT_LABEL, auth);
}

/** A ticket login's server signature (relay side). */
export function resumeSignature(key: Uint8Array, auth: Uint8Array): Uint8Array {
  return hmacSha256(key, RESUME_SERVER_LABEL, auth);
}

/** A fresh nonce: 18 random bytes as base64 (24 printable characters, no comma). */
export function newScramNonce(): string {
  return crypto.getRandomValues(new Uint8Array(18)).toBase64();
}

/** True when `nonce` is a nonce this protocol accepts: 16-64 base64 characters. */
export function isValidNonce(nonce: string): boolean {
  return /^[A-Za-z0-9+/=]{16,64}$/.test(nonce);
}

/** Fewest PBKDF2 iterations a device accepts in a challenge (RFC 7677's minimum). */
export const MIN_ITERATIONS = 4096;
/** Most PBKDF2 iterations a device accepts: bounds what a hostile relay can make it do. */
export const MAX_ITERATIONS = 10_000_000;
/**
 * Fewest PBKDF2 iterations a device accepts by default when the challenge has no scrypt
 * prehash: the count `registry add` writes. A relay that does not know the device's
 * verifier (an impostor) chooses salt and count; the proof the device then sends lets
 * it guess the password offline at that count's cost, so the device refuses a cheap one.
 */
export const DEFAULT_MIN_ITERATIONS = 100_000;
/** scrypt N x r of a version-1 hash at its default cost (2^14 x 8), the prehash floor. */
const MIN_PREHASH_WORK = 2 ** 14 * 8;

/**
 * Why the device must not answer a challenge asking for `iterations` PBKDF2 rounds over
 * `prehash` ("" if none), or null if it may. Key derivation must cost at least
 * `minIterations` rounds, or a prehash of at least a default version-1 scrypt cost:
 * otherwise an impostor relay could make the proof cheap to attack offline.
 *
 * @example
 * ```ts
 * import { challengeCostError } from "./scram.ts";
 * console.assert(challengeCostError(100_000, "", 100_000) === null);
 * console.assert(challengeCostError(4096, "", 100_000) !== null);
 * ```
 */
export function challengeCostError(
  iterations: number,
  prehash: string,
  minIterations: number,
): string | null {
  if (!Number.isSafeInteger(iterations) || iterations > MAX_ITERATIONS) {
    return `Relay asked for ${iterations} PBKDF2 iterations (at most ${MAX_ITERATIONS} accepted)`;
  }
  const parsed = prehash === "" ? null : parsePrehash(prehash);
  if (prehash !== "" && parsed === null) {
    return `Relay asked for an unsupported password prehash "${prehash.slice(0, 80)}"`;
  }
  const floor = Math.max(MIN_ITERATIONS, minIterations);
  if (iterations >= floor) return null;
  if (parsed !== null && iterations >= MIN_ITERATIONS && parsed.n * parsed.r >= MIN_PREHASH_WORK) {
    return null;
  }
  return `Relay asked for ${iterations} PBKDF2 iterations${
    prehash === "" ? "" : " over a cheap scrypt prehash"
  }, fewer than this agent accepts (${floor}): a relay that does not know this device's ` +
    "password may be trying to make it cheap to guess";
}

const SCRYPT_PREHASH_RE =
  /^scrypt\$([1-9][0-9]{0,7})\$([1-9][0-9]?)\$([1-9][0-9]?)\$([A-Za-z0-9+/=]{4,88})\$([1-9][0-9]{1,2})$/;

/**
 * Largest scrypt N of a prehash a device derives (128 MiB and about half a second with
 * r = 8). Version-1 registries wrote r = 8, p = 1 and N = 2^14 by default; a larger N
 * from a relay costs the device memory and CPU it cannot take back (the derivation runs
 * on after a login timeout), so an impostor could tie a device up for minutes.
 */
const MAX_PREHASH_COST = 2 ** 17;

/** A prehash's scrypt parameters, or null outside what a device accepts (see above). */
function parsePrehash(
  prehash: string,
): { n: number; r: number; p: number; salt: Uint8Array; keyBytes: number } | null {
  const m = SCRYPT_PREHASH_RE.exec(prehash);
  if (m === null) return null;
  const [n, r, p, keyBytes] = [m[1], m[2], m[3], m[5]].map(Number);
  if (
    n < 1024 || n > MAX_PREHASH_COST || (n & (n - 1)) !== 0 || r !== 8 || p !== 1 ||
    keyBytes < 16 || keyBytes > 128
  ) {
    return null;
  }
  try {
    return { n, r, p, salt: Uint8Array.fromBase64(m[4]), keyBytes };
  } catch {
    return null;
  }
}

/**
 * The password a migrated registration's SCRAM verifier was built over: the base64 of
 * its old scrypt hash, `prehash` being `scrypt$N$r$p$saltBase64$keyBytes`. Rejects a
 * prehash other than version 1 wrote (r = 8, p = 1) or above N = 2^17, so a hostile relay
 * can make the device spend at most 128 MiB and about half a second.
 */
export async function prehashPassword(password: string, prehash: string): Promise<string> {
  const parsed = parsePrehash(prehash);
  if (parsed === null) {
    throw new RangeError(`Cannot pre-hash the password: unsupported prehash "${prehash}"`);
  }
  const { n, r, p, keyBytes } = parsed;
  const salt = parsed.salt;
  const key = await new Promise<Uint8Array>((resolve, reject) => {
    scrypt(password, salt, keyBytes, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 }, (e, k) => {
      if (e) reject(e);
      else resolve(new Uint8Array(k));
    });
  });
  return key.toBase64();
}
