/**
 * What a device remembers between its logins, so that only the first one pays for the
 * slow key derivation: the SCRAM salted password per (password, salt, iterations,
 * prehash), and the relay's ticket for further connections, per (relay, ID, instance).
 *
 * One process-wide cache ({@link defaultLoginCache}) serves every connection of an
 * agent: the supervisor opens its pool through `connectRelay` without knowing about it.
 * Nothing is written to disk.
 *
 * @module
 */

import { prehashPassword, saltedPassword, sha256 } from "../shared/scram.ts";

/** A relay's ticket and the resumption key that goes with it. */
export interface CachedTicket {
  /** Ticket ID from LOGIN_RESULT. */
  ticket: string;
  /** Resumption key derived at the full login. */
  key: Uint8Array;
  /** Local clock time after which the ticket is not offered, ms. */
  expires: number;
}

/** Salted passwords and tickets of this process. */
export class LoginCache {
  readonly #salted = new Map<string, Promise<Uint8Array>>();
  readonly #tickets = new Map<string, CachedTicket>();
  readonly #now: () => number;
  readonly #max: number;

  /** Creates a cache keeping at most `max` entries of each kind. */
  constructor(options: { now?: () => number; max?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#max = options.max ?? 64;
  }

  /**
   * The SCRAM salted password, derived once per (password, salt, iterations, prehash);
   * parallel callers share one derivation. A failed derivation is not kept.
   */
  salted(
    password: string,
    salt: Uint8Array,
    iterations: number,
    prehash: string,
  ): Promise<Uint8Array> {
    const key = [
      sha256(new TextEncoder().encode(password)).toBase64(),
      salt.toBase64(),
      iterations,
      prehash,
    ].join("$");
    let entry = this.#salted.get(key);
    if (entry === undefined) {
      entry = (async () => {
        const secret = prehash === "" ? password : await prehashPassword(password, prehash);
        return await saltedPassword(secret, salt, iterations);
      })();
      entry.catch(() => this.#salted.delete(key));
      this.#put(this.#salted, key, entry);
    }
    return entry;
  }

  /** The live ticket for `where`, if any. */
  ticket(where: string): CachedTicket | undefined {
    const t = this.#tickets.get(where);
    if (t !== undefined && t.expires <= this.#now()) {
      this.#tickets.delete(where);
      return undefined;
    }
    return t;
  }

  /** Keeps a ticket valid for `ttlMs` (offered until 90% of it has passed). */
  storeTicket(where: string, ticket: string, key: Uint8Array, ttlMs: number): void {
    this.#put(this.#tickets, where, { ticket, key, expires: this.#now() + ttlMs * 0.9 });
  }

  /** Forgets the ticket for `where` (the relay no longer knows it). */
  dropTicket(where: string): void {
    this.#tickets.delete(where);
  }

  #put<V>(map: Map<string, V>, key: string, value: V) {
    map.delete(key);
    map.set(key, value);
    while (map.size > this.#max) map.delete(map.keys().next().value!);
  }
}

/** The cache every `connectRelay` call of this process uses unless given another. */
export const defaultLoginCache: LoginCache = new LoginCache();
