/**
 * Slows down password guessing without letting a guesser lock anyone else out.
 *
 * Two rules, both decided synchronously, so a burst of logins cannot race past them:
 *
 * 1. **Concurrency.** A login holds a slot from its LOGIN to its result. At most
 *    `maxPendingPerAddress` (64) logins from one address, and `maxPending` (1024) in all,
 *    may be pending; one more is refused at once. {@link LoginThrottle.begin} takes the
 *    slot before the relay awaits anything (registry lookup, the device's proof).
 * 2. **Failures.** Failures are counted per (address, ID) pair and per address, never
 *    per ID alone: guessing `fax1`'s password from one address cannot lock `fax1` out
 *    of another address. A key is refused once it has its free failures (5 for a pair,
 *    20 for an address, so that a NAT address shared by many devices survives a few
 *    typos), until `baseDelayMs * 2 ** (failures - free)` (1 s, 2 s, 4 s, ...) capped
 *    at `maxDelayMs` (5 minutes) has passed since its last failure. A key's count resets
 *    after `windowMs` (10 minutes) without failure; the cap is shorter, so a persistent
 *    guesser never gets a fresh set of free tries.
 *
 * A pending login counts as a failure of its pair until it ends, once that pair has
 * failed before: then 300 logins sent together get at most its remaining free tries,
 * not 300. A pair with no failure gets a burst of `cleanBurst` (16) pending logins, so
 * a device that opens many connections at once (parallel sends, a pool refilling) is
 * not refused; a guesser's first burst is thus at most 16 tries, after which its pair
 * and soon its address are locked. A success clears its pair (not the address: one
 * valid account must not reset an address's guessing budget).
 *
 * @example
 * ```ts
 * import { LoginThrottle } from "./throttle.ts";
 *
 * let now = 0;
 * const throttle = new LoginThrottle({ now: () => now });
 * for (let i = 0; i < 5; i++) {
 *   const attempt = throttle.begin("203.0.113.7", "fax-01");
 *   if (attempt.kind === "ok") attempt.fail();
 * }
 * const refused = throttle.begin("203.0.113.7", "fax-01");
 * console.assert(refused.kind === "wait" && refused.waitMs === 1000);
 * console.assert(throttle.begin("198.51.100.2", "fax-01").kind === "ok");
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
  /** Failures of one (address, ID) pair allowed before lockouts start (default 5). */
  freeFailures?: number;
  /** Failures of one address (any IDs) allowed before lockouts start (default 20). */
  addressFreeFailures?: number;
  /** First lockout; doubles with each further failure (default 1 s). */
  baseDelayMs?: number;
  /** Longest lockout (default 5 minutes). */
  maxDelayMs?: number;
  /** Most keys tracked; the least recently failed are forgotten first (default 10,000). */
  maxKeys?: number;
  /** Logins pending at once from one address (default 64). */
  maxPendingPerAddress?: number;
  /** Logins pending at once in total (default 1024). */
  maxPending?: number;
  /** Wait suggested when a concurrency limit refuses a login (default 1 s). */
  busyRetryMs?: number;
  /** Pending logins allowed at once for a pair that has never failed (default 16). */
  cleanBurst?: number;
}

/** A login allowed to proceed; exactly one of its methods must end it. */
export interface LoginAttempt {
  /** Allowed. */
  readonly kind: "ok";
  /** Milliseconds this pair or address must now wait (0: go on to check the proof). */
  recheck(): number;
  /** The key check failed: counts against the pair and the address; frees the slot. */
  fail(): void;
  /** The key check passed: clears the pair; frees the slot. */
  succeed(): void;
  /** Ended without a key check (closed, shutting down): frees the slot only. */
  release(): void;
}

/** A refused login: wait this long. `reason` says which rule refused it. */
export interface LoginRefusal {
  /** Refused. */
  readonly kind: "wait";
  /** Milliseconds before trying again. */
  readonly waitMs: number;
  /** `failures` (too many failures) or `busy` (too many pending logins). */
  readonly reason: "failures" | "busy";
}

interface Entry {
  failures: number;
  lastFailure: number;
}

/** Login admission: concurrency slots plus per-pair and per-address failure lockouts. */
export class LoginThrottle {
  readonly #now: () => number;
  readonly #windowMs: number;
  readonly #freeFailures: number;
  readonly #cleanBurst: number;
  readonly #addressFreeFailures: number;
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #maxKeys: number;
  readonly #maxPendingPerAddress: number;
  readonly #maxPending: number;
  readonly #busyRetryMs: number;
  /** Keyed `a:<address>` / `p:<address>\0<id>`; in order of last failure, oldest first. */
  readonly #entries = new Map<string, Entry>();
  /** Pending logins per key (addresses and pairs). */
  readonly #pending = new Map<string, number>();
  #pendingTotal = 0;

  /** Creates a throttle; see {@link LoginThrottleOptions} for the defaults. */
  constructor(options: LoginThrottleOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#windowMs = options.windowMs ?? 10 * 60_000;
    this.#freeFailures = options.freeFailures ?? 5;
    this.#addressFreeFailures = options.addressFreeFailures ?? 20;
    this.#baseDelayMs = options.baseDelayMs ?? 1000;
    this.#maxDelayMs = options.maxDelayMs ?? 5 * 60_000;
    this.#maxKeys = options.maxKeys ?? 10_000;
    this.#maxPendingPerAddress = options.maxPendingPerAddress ?? 64;
    this.#maxPending = options.maxPending ?? 1024;
    this.#busyRetryMs = options.busyRetryMs ?? 1000;
    this.#cleanBurst = options.cleanBurst ?? 16;
    if (!(this.#maxKeys >= 2)) {
      throw new RangeError(`maxKeys must be at least 2, got ${this.#maxKeys}`);
    }
  }

  /** Number of failure keys (addresses plus pairs) currently tracked. */
  get size(): number {
    return this.#entries.size;
  }

  /** Logins pending (between {@link begin} and their end). */
  get pending(): number {
    return this.#pendingTotal;
  }

  /**
   * Admits a login of `id` from `address`, taking a slot, or refuses it. Synchronous:
   * call it before the first await of the login.
   */
  begin(address: string, id: string): LoginAttempt | LoginRefusal {
    const now = this.#now();
    this.#prune(now);
    const a = addressKey(address);
    const p = pairKey(address, id);
    const wait = this.#waitFor(a, p, now);
    if (wait > 0) return { kind: "wait", waitMs: wait, reason: "failures" };
    if (
      this.#pendingTotal >= this.#maxPending ||
      (this.#pending.get(a) ?? 0) >= this.#maxPendingPerAddress
    ) {
      return { kind: "wait", waitMs: this.#busyRetryMs, reason: "busy" };
    }
    this.#hold(a, 1);
    this.#hold(p, 1);
    this.#pendingTotal++;
    let open = true;
    const end = (outcome: "fail" | "succeed" | "release") => {
      if (!open) return;
      open = false;
      this.#hold(a, -1);
      this.#hold(p, -1);
      this.#pendingTotal--;
      const t = this.#now();
      if (outcome === "fail") {
        this.#fail(a, t);
        this.#fail(p, t);
      } else if (outcome === "succeed") {
        this.#entries.delete(p);
      }
    };
    return {
      kind: "ok",
      // The attempt's own slot is not held against itself.
      recheck: () => this.#waitFor(a, p, this.#now(), open ? 1 : 0),
      fail: () => end("fail"),
      succeed: () => end("succeed"),
      release: () => end("release"),
    };
  }

  /** Milliseconds before a login of `id` from `address` may be tried; 0 means now. */
  check(address: string, id: string): number {
    const now = this.#now();
    this.#prune(now);
    return this.#waitFor(addressKey(address), pairKey(address, id), now);
  }

  /**
   * The longer wait of the address and the pair. A pair's pending logins (but `own`)
   * count as failures, since any of them may fail; an address's do not, its pending
   * logins being bounded by `maxPendingPerAddress` already.
   */
  #waitFor(a: string, p: string, now: number, own = 0): number {
    const pending = (this.#pending.get(p) ?? 0) - own;
    return Math.max(
      this.#wait(a, this.#addressFreeFailures, now, 0),
      this.#wait(p, this.#freeFailures, now, pending),
    );
  }

  #wait(key: string, free: number, now: number, pending: number): number {
    const entry = this.#entries.get(key);
    const failures = entry?.failures ?? 0;
    if (failures >= free) {
      const exponent = Math.min(failures - free, 52);
      const lockout = Math.min(this.#baseDelayMs * 2 ** exponent, this.#maxDelayMs);
      const wait = entry!.lastFailure + lockout - now;
      if (wait > 0) return wait;
    }
    // Pending logins that may all fail would take the key past its free failures; a key
    // that never failed gets a larger burst (see the module doc).
    if (pending > 0 && failures === 0 && pending < Math.max(free, this.#cleanBurst)) return 0;
    if (pending > 0 && failures + pending >= free) return this.#baseDelayMs;
    return 0;
  }

  #hold(key: string, delta: number) {
    const n = (this.#pending.get(key) ?? 0) + delta;
    if (n <= 0) this.#pending.delete(key);
    else this.#pending.set(key, n);
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

function pairKey(address: string, id: string): string {
  return `p:${address}\0${id}`;
}
