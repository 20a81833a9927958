/**
 * Password checks at login, with a cache so a device's extra idle connections do not
 * each pay for a slow scrypt verification.
 *
 * The cache keeps, per device, an HMAC of the last verified password under a key that
 * lives only in this process, tied to the stored hash it was verified against: a
 * password change (new hash) invalidates it at once.
 *
 * @module
 */

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { verifyPassword } from "../registry/password.ts";
import type { Registration } from "../registry/registry.ts";

/** Verifies passwords against registrations, caching successes. */
export class CredentialCache {
  readonly #key = randomBytes(32);
  readonly #cache = new Map<string, { hash: string; mac: Uint8Array }>();
  readonly #maxEntries: number;

  /** Creates a cache holding at most `maxEntries` devices. */
  constructor(maxEntries = 100_000) {
    this.#maxEntries = maxEntries;
  }

  /** True when `password` matches the registration's stored hash. */
  async verify(reg: Registration, password: string): Promise<boolean> {
    const mac = createHmac("sha256", this.#key).update(reg.id).update("\0").update(password)
      .digest();
    const cached = this.#cache.get(reg.id);
    if (cached !== undefined && cached.hash === reg.passwordHash) {
      return timingSafeEqual(cached.mac, mac);
    }
    if (!(await verifyPassword(password, reg.passwordHash))) return false;
    if (this.#cache.size >= this.#maxEntries) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    this.#cache.set(reg.id, { hash: reg.passwordHash, mac });
    return true;
  }
}
