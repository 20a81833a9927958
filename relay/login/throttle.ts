/**
 * Slows down password guessing: repeated login failures from one remote address, or
 * against one device ID, lock further attempts out for a growing time.
 *
 * Rule, per key (an address or an ID): failures are counted until the key has seen no
 * failure for `windowMs` (10 minutes), then the count starts again. Once a key has
 * `freeFailures` (5) failures, attempts are refused until
 * `baseDelayMs * 2 ** (failures - freeFailures)` (1 s, 2 s, 4 s, ...) capped at
 * `maxDelayMs` (5 minutes) has passed since its last failure. Because the cap is
 * shorter than the window, a persistent guesser never gets a fresh set of free tries.
 * The wait for an (address, ID) pair is the longer of the two keys' waits.
 *
 * @example
 * ```ts
 * import { LoginThrottle } from "./throttle.ts";
 *
 * let now = 0;
 * const throttle = new LoginThrottle({ now: () => now });
 * for (let i = 0; i < 5; i++) throttle.recordFailure("203.0.113.7", "fax-01");
 * console.assert(throttle.check("203.0.113.7", "fax-01") === 1000);
 * now += 1000;
 * console.assert(throttle.check("203.0.113.7", "fax-01") === 0);
 * ```
 *
 * @module
 */

/** Options for {@link LoginThrottle}; the defaults implement the documented rule. */
export interface LoginThrottleOptions {
  /** Clock in ms (default `Date.now`). */
  now?: () => number;
  /** A key's count resets after this long without a failure (default 10 minutes). */
  windowMs?: number;
  /** Failures allowed before lockouts start (default 5). */
  freeFailures?: number;
  /** First lockout; doubles with each further failure (default 1 s). */
  baseDelayMs?: number;
  /** Longest lockout (default 5 minutes). */
  maxDelayMs?: number;
  /** Most keys tracked; the least recently failed are forgotten first (default 10,000). */
  maxKeys?: number;
}

interface Entry {
  failures: number;
  lastFailure: number;
}

/** Per-address and per-ID login failure counter with exponential lockouts. */
export class LoginThrottle {
  readonly #now: () => number;
  readonly #windowMs: number;
  readonly #freeFailures: number;
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #maxKeys: number;
  /** Keyed `a:<address>` / `i:<id>`; in order of last failure, oldest first. */
  readonly #entries = new Map<string, Entry>();

  /** Creates a throttle; see {@link LoginThrottleOptions} for the defaults. */
  constructor(options: LoginThrottleOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#windowMs = options.windowMs ?? 10 * 60_000;
    this.#freeFailures = options.freeFailures ?? 5;
    this.#baseDelayMs = options.baseDelayMs ?? 1000;
    this.#maxDelayMs = options.maxDelayMs ?? 5 * 60_000;
    this.#maxKeys = options.maxKeys ?? 10_000;
    if (!(this.#maxKeys >= 2)) {
      throw new RangeError(`maxKeys must be at least 2, got ${this.#maxKeys}`);
    }
  }

  /** Number of keys (addresses plus IDs) currently tracked. */
  get size(): number {
    return this.#entries.size;
  }

  /** Milliseconds before a login of `id` from `address` may be tried; 0 means now. */
  check(address: string, id: string): number {
    const now = this.#now();
    this.#prune(now);
    return Math.max(this.#wait(addressKey(address), now), this.#wait(idKey(id), now));
  }

  /** Counts a failed login of `id` from `address` against both keys. */
  recordFailure(address: string, id: string): void {
    const now = this.#now();
    this.#prune(now);
    this.#fail(addressKey(address), now);
    this.#fail(idKey(id), now);
  }

  /** Clears the counters of `id` and of `address` after a successful login. */
  recordSuccess(address: string, id: string): void {
    this.#entries.delete(addressKey(address));
    this.#entries.delete(idKey(id));
  }

  #wait(key: string, now: number): number {
    const entry = this.#entries.get(key);
    if (!entry || entry.failures < this.#freeFailures) return 0;
    const exponent = Math.min(entry.failures - this.#freeFailures, 52);
    const lockout = Math.min(this.#baseDelayMs * 2 ** exponent, this.#maxDelayMs);
    return Math.max(0, entry.lastFailure + lockout - now);
  }

  #fail(key: string, now: number): void {
    const entry = this.#entries.get(key);
    const failures = entry && !this.#expired(entry, now) ? entry.failures + 1 : 1;
    // Re-insert so the map stays ordered by last failure: pruning and eviction then
    // only ever look at the front.
    this.#entries.delete(key);
    this.#entries.set(key, { failures, lastFailure: now });
    while (this.#entries.size > this.#maxKeys) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }

  #expired(entry: Entry, now: number): boolean {
    return now - entry.lastFailure >= this.#windowMs;
  }

  /** Drops expired entries from the front (oldest last failure first). */
  #prune(now: number): void {
    for (const [key, entry] of this.#entries) {
      if (!this.#expired(entry, now)) break;
      this.#entries.delete(key);
    }
  }
}

function addressKey(address: string): string {
  return `a:${address}`;
}

function idKey(id: string): string {
  return `i:${id}`;
}
