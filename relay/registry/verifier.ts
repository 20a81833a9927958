/**
 * Password verifiers in the registry (format version 2): what a relay stores to check
 * a SCRAM-SHA-256 login (shared/scram.ts) without ever knowing the password.
 *
 * A verifier is one self-describing string in the registration's `passwordHash` field:
 *
 *     scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>
 *
 * (base64 fields). A registration migrated from registry version 1, whose scrypt hash
 * was kept but whose password is unknown, carries the scrypt parameters after it:
 *
 *     scram-sha-256$4096$<salt>$<StoredKey>$<ServerKey>$scrypt$<N>$<r>$<p>$<scryptSalt>$<keyBytes>
 *
 * and its SCRAM "password" is the base64 of the old scrypt hash: the device derives it
 * from the password with the scrypt parameters the relay sends along (the prehash).
 *
 * @example
 * ```ts
 * import { makeVerifier, parseVerifier } from "./verifier.ts";
 *
 * const stored = await makeVerifier("s3cret", { iterations: 4096 });
 * console.assert(parseVerifier(stored)?.verifier.iterations === 4096);
 * ```
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import {
  bytesEqual,
  KEY_BYTES,
  MAX_ITERATIONS,
  prehashPassword,
  saltedPassword,
  type ScramVerifier,
  verifierOf,
} from "../../shared/scram.ts";
import { parseScryptHash } from "./password.ts";

/** PBKDF2 iterations of a new verifier (the device pays them once per process). */
export const DEFAULT_ITERATIONS = 100_000;
/** Iterations on top of a migrated scrypt hash (scrypt already made guessing slow). */
export const MIGRATED_ITERATIONS = 4096;
/** Fewest iterations {@link makeVerifier} accepts. */
export const MIN_VERIFIER_ITERATIONS = 4096;

const SALT_BYTES = 16;
const PREFIX = "scram-sha-256";

/** A parsed verifier: the SCRAM keys and the prehash a migrated one needs ("" if none). */
export interface ParsedVerifier {
  /** Salt, iterations, StoredKey, ServerKey. */
  verifier: ScramVerifier;
  /** `scrypt$N$r$p$salt$keyBytes` for a migrated registration, else "". */
  prehash: string;
}

/** Options for {@link makeVerifier}. */
export interface MakeVerifierOptions {
  /** PBKDF2 iterations, 4096 to 10,000,000 (default {@link DEFAULT_ITERATIONS}). */
  iterations?: number;
}

/** Builds the stored verifier of `password` with a fresh salt. */
export async function makeVerifier(
  password: string,
  options: MakeVerifierOptions = {},
): Promise<string> {
  const iterations = options.iterations ?? DEFAULT_ITERATIONS;
  checkIterations(iterations);
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  return formatVerifier(
    verifierOf(await saltedPassword(password, salt, iterations), salt, iterations),
  );
}

/**
 * Converts a version-1 scrypt hash (`scrypt$N$r$p$salt$hash`) into a verifier without the
 * password; null when `stored` is not a well-formed scrypt hash.
 */
export async function migrateScryptHash(stored: string): Promise<string | null> {
  const old = parseScryptHash(stored);
  if (old === null) return null;
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  const salted = await saltedPassword(old.hash.toBase64(), salt, MIGRATED_ITERATIONS);
  const prehash = ["scrypt", old.n, old.r, old.p, old.salt.toBase64(), old.hash.length].join("$");
  return formatVerifier(verifierOf(salted, salt, MIGRATED_ITERATIONS), prehash);
}

/** True when `stored` is a version-1 scrypt hash that {@link migrateScryptHash} converts. */
export function isScryptHash(stored: string): boolean {
  return stored.startsWith("scrypt$");
}

/** Parses a stored verifier; null when it is not one (e.g. an unmigrated scrypt hash). */
export function parseVerifier(stored: string): ParsedVerifier | null {
  if (typeof stored !== "string") return null;
  const parts = stored.split("$");
  if (parts[0] !== PREFIX || (parts.length !== 5 && parts.length !== 11)) return null;
  const iterations = /^[1-9][0-9]{3,7}$/.test(parts[1]) ? Number(parts[1]) : NaN;
  if (!(iterations >= MIN_VERIFIER_ITERATIONS && iterations <= MAX_ITERATIONS)) return null;
  const salt = base64(parts[2]);
  const storedKey = base64(parts[3]);
  const serverKey = base64(parts[4]);
  if (salt === null || salt.length < 8 || salt.length > 64) return null;
  if (storedKey?.length !== KEY_BYTES || serverKey?.length !== KEY_BYTES) return null;
  const prehash = parts.length === 11 ? parts.slice(5).join("$") : "";
  if (prehash !== "" && parts[5] !== "scrypt") return null;
  return { verifier: { salt, iterations, storedKey, serverKey }, prehash };
}

/** The stored form of a verifier (`prehash` "" for one that is not migrated). */
export function formatVerifier(v: ScramVerifier, prehash = ""): string {
  const fields = [
    PREFIX,
    v.iterations,
    v.salt.toBase64(),
    v.storedKey.toBase64(),
    v.serverKey.toBase64(),
  ];
  return prehash === "" ? fields.join("$") : `${fields.join("$")}$${prehash}`;
}

function checkIterations(iterations: number) {
  if (
    !Number.isInteger(iterations) || iterations < MIN_VERIFIER_ITERATIONS ||
    iterations > MAX_ITERATIONS
  ) {
    throw new RangeError(
      `Cannot make verifier: ${iterations} iterations is not an integer from ${MIN_VERIFIER_ITERATIONS} to ${MAX_ITERATIONS}`,
    );
  }
}

/** Canonical padded base64 only. */
function base64(text: string): Uint8Array | null {
  try {
    const bytes = Uint8Array.fromBase64(text);
    return bytes.toBase64() === text ? bytes : null;
  } catch {
    return null;
  }
}

/**
 * True when `password` matches the stored verifier (runs the device's slow derivation:
 * for tools and tests, never for a relay's login check).
 */
export async function verifierMatches(password: string, stored: string): Promise<boolean> {
  const parsed = parseVerifier(stored);
  if (parsed === null) return false;
  const { salt, iterations, storedKey } = parsed.verifier;
  const secret = parsed.prehash === "" ? password : await prehashPassword(password, parsed.prehash);
  return bytesEqual(
    verifierOf(await saltedPassword(secret, salt, iterations), salt, iterations).storedKey,
    storedKey,
  );
}
