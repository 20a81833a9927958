/**
 * Slows down password guessing without letting a guesser lock anyone else out.
 *
 * Two rules, both decided synchronously, so a burst of logins cannot race past them:
 *
 * 1. **Concurrency.** A login holds a slot from its LOGIN to its result. At most
 *    `maxPendingPerAddress` (64) logins from one address, and `maxPending` (1024) in all,
 *    may be pending. {@link LoginThrottle.begin} takes the slot before the relay awaits
 *    anything (registry lookup, the device's proof). When a limit is reached, the oldest
 *    pending login of that address (or in all) makes room if it has waited `staleMs`
 *    (2 s) or more: it is told to end (its connection is closed). A real device answers
 *    its challenge within a round trip and its key derivation, so logins that say HELLO
 *    and LOGIN and then stall (17 addresses x 64 would fill every slot for the 10 s login
 *    deadline) cannot lock anyone out; the new login is refused "busy" only while every
 *    slot is younger than that. A stall the relay ends is not counted as a failure (a
 *    restart storm from one NAT address must not lock that address out), but a client
 *    that closes its connection with the challenge unanswered counts one failure of its
 *    address: stalls recycled before they grow stale then lock their own addresses out.
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
 * An "address" is an IPv4 address, or an IPv6 /64 prefix (shared/address.ts
 * `addressGroup`). Addresses and pairs are kept in two tables of at most `maxKeys` each,
 * oldest failure forgotten first: failures of many (address, ID) pairs cannot push an
 * address's lockout out; forgetting a locked address takes `maxKeys` other addresses
 * failing within its lockout.
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

import { addressGroup } from "../../shared/address.ts";

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
  /**
   * Most addresses, and most (address, ID) pairs, tracked; the least recently failed are
   * forgotten first (default 100,000 each; measured: 120,000 failures with 64-byte IDs from
   * as many addresses held about 80 MB of heap, freed as they expire).
   */
  maxKeys?: number;
  /** Logins pending at once from one address (default 64). */
  maxPendingPerAddress?: number;
  /** Logins pending at once in total (default 1024). */
  maxPending?: number;
  /** Wait suggested when a concurrency limit refuses a login (default 1 s). */
  busyRetryMs?: number;
  /** Pending logins allowed at once for a pair that has never failed (default 16). */
  cleanBurst?: number;
  /** A pending login this old makes room for a new one when a limit is reached (2 s). */
  staleMs?: number;
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
  /**
   * The client went away with its challenge unanswered: counts one failure against the
   * address only (never the pair, never an ID), and frees the slot.
   */
  abandon(): void;
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

/** A pending login: its start, and how to end it early. */
interface Pending {
  readonly started: number;
  /** Ends the attempt and asks its owner to stop; null if it cannot be ended early. */
  readonly evict: (() => void) | null;
}

/**
 * Failure counts keyed by address or pair, in order of last failure (oldest first), at
 * most `cap` of them: pruning and eviction only ever look at the front.
 */
class FailureTable {
  readonly #entries = new Map<string, Entry>();
  constructor(readonly cap: number, readonly windowMs: number) {}

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): Entry | undefined {
    return this.#entries.get(key);
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  fail(key: string, now: number): void {
    const entry = this.#entries.get(key);
    const failures = entry && !this.#expired(entry, now) ? entry.failures + 1 : 1;
    this.#entries.delete(key);
    this.#entries.set(key, { failures, lastFailure: now });
    while (this.#entries.size > this.cap) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }

  /** Drops expired entries from the front. */
  prune(now: number): void {
    for (const [key, entry] of this.#entries) {
      if (!this.#expired(entry, now)) break;
      this.#entries.delete(key);
    }
  }

  #expired(entry: Entry, now: number): boolean {
    return now - entry.lastFailure >= this.windowMs;
  }
}

/** Login admission: concurrency slots plus per-pair and per-address failure lockouts. */
export class LoginThrottle {
  readonly #now: () => number;
  readonly #freeFailures: number;
  readonly #cleanBurst: number;
  readonly #addressFreeFailures: number;
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #maxPendingPerAddress: number;
  readonly #maxPending: number;
  readonly #busyRetryMs: number;
  readonly #staleMs: number;
  /** Failures per address (group) and per `<address>\0<id>` pair. */
  readonly #addresses: FailureTable;
  readonly #pairs: FailureTable;
  /** Pending logins, oldest first: in all, and per address. */
  readonly #open = new Set<Pending>();
  /** Pending logins per address key and per pair key, oldest first. */
  readonly #openBy = new Map<string, Set<Pending>>();

  /** Creates a throttle; see {@link LoginThrottleOptions} for the defaults. */
  constructor(options: LoginThrottleOptions = {}) {
    this.#now = options.now ?? Date.now;
    const windowMs = options.windowMs ?? 10 * 60_000;
    this.#freeFailures = options.freeFailures ?? 5;
    this.#addressFreeFailures = options.addressFreeFailures ?? 20;
    this.#baseDelayMs = options.baseDelayMs ?? 1000;
    this.#maxDelayMs = options.maxDelayMs ?? 5 * 60_000;
    const maxKeys = options.maxKeys ?? 100_000;
    this.#maxPendingPerAddress = options.maxPendingPerAddress ?? 64;
    this.#maxPending = options.maxPending ?? 1024;
    this.#busyRetryMs = options.busyRetryMs ?? 1000;
    this.#cleanBurst = options.cleanBurst ?? 16;
    this.#staleMs = options.staleMs ?? 2000;
    if (!(maxKeys >= 1)) throw new RangeError(`maxKeys must be at least 1, got ${maxKeys}`);
    this.#addresses = new FailureTable(maxKeys, windowMs);
    this.#pairs = new FailureTable(maxKeys, windowMs);
  }

  /** Number of failure keys (addresses plus pairs) currently tracked. */
  get size(): number {
    return this.#addresses.size + this.#pairs.size;
  }

  /** Logins pending (between {@link begin} and their end). */
  get pending(): number {
    return this.#open.size;
  }

  /**
   * Admits a login of `id` from `address`, taking a slot, or refuses it. Synchronous:
   * call it before the first await of the login. `onEvict`, if given, lets the attempt
   * make room for a newer one once it is stale (see the module doc): the attempt is then
   * ended (released) and `onEvict` must stop the login (close its connection).
   */
  begin(address: string, id: string, onEvict?: () => void): LoginAttempt | LoginRefusal {
    const now = this.#now();
    this.#prune(now);
    const a = addressGroup(address);
    const p = pairKey(a, id);
    let wait = this.#waitFor(a, p, now);
    if (wait > 0 && this.#waitFor(a, p, now, 0, false) === 0) {
      // Only this pair's pending logins hold it back: stale ones make room, so logins
      // stalled for this ID from its own address cannot keep the device out.
      const pairs = this.#openBy.get(p);
      while (wait > 0 && pairs !== undefined && this.#evictOldest(pairs, now)) {
        wait = this.#waitFor(a, p, now);
      }
      if (wait > 0) return { kind: "wait", waitMs: this.#busyRetryMs, reason: "busy" };
    }
    if (wait > 0) return { kind: "wait", waitMs: wait, reason: "failures" };
    const mine = this.#openBy.get(a);
    if (
      (mine !== undefined && mine.size >= this.#maxPendingPerAddress &&
        !this.#evictOldest(mine, now)) ||
      (this.#open.size >= this.#maxPending && !this.#evictOldest(this.#open, now))
    ) {
      return { kind: "wait", waitMs: this.#busyRetryMs, reason: "busy" };
    }
    let open = true;
    const end = (outcome: "fail" | "succeed" | "release" | "abandon") => {
      if (!open) return;
      open = false;
      this.#open.delete(pending);
      for (const key of [a, p]) {
        const set = this.#openBy.get(key)!;
        set.delete(pending);
        if (set.size === 0) this.#openBy.delete(key);
      }
      const t = this.#now();
      if (outcome === "fail") {
        this.#addresses.fail(a, t);
        this.#pairs.fail(p, t);
      } else if (outcome === "abandon") {
        this.#addresses.fail(a, t);
      } else if (outcome === "succeed") {
        this.#pairs.delete(p);
      }
    };
    const pending: Pending = {
      started: now,
      evict: onEvict === undefined ? null : () => {
        end("release");
        onEvict();
      },
    };
    this.#open.add(pending);
    for (const key of [a, p]) {
      let set = this.#openBy.get(key);
      if (set === undefined) this.#openBy.set(key, set = new Set());
      set.add(pending);
    }
    return {
      kind: "ok",
      // The attempt's own slot is not held against itself.
      recheck: () => this.#waitFor(a, p, this.#now(), open ? 1 : 0),
      fail: () => end("fail"),
      succeed: () => end("succeed"),
      release: () => end("release"),
      abandon: () => end("abandon"),
    };
  }

  /** Milliseconds before a login of `id` from `address` may be tried; 0 means now. */
  check(address: string, id: string): number {
    const now = this.#now();
    this.#prune(now);
    const a = addressGroup(address);
    return this.#waitFor(a, pairKey(a, id), now);
  }

  /** Ends the oldest of `pending` if it is stale and can be ended; says whether it did. */
  #evictOldest(pending: Set<Pending>, now: number): boolean {
    const oldest = pending.values().next().value;
    if (oldest === undefined || oldest.evict === null) return false;
    if (now - oldest.started < this.#staleMs) return false;
    oldest.evict();
    return true;
  }

  /**
   * The longer wait of the address and the pair. A pair's pending logins (but `own`)
   * count as failures, since any of them may fail; an address's do not, its pending
   * logins being bounded by `maxPendingPerAddress` already.
   */
  #waitFor(a: string, p: string, now: number, own = 0, countPending = true): number {
    const pending = countPending ? (this.#openBy.get(p)?.size ?? 0) - own : 0;
    return Math.max(
      this.#wait(this.#addresses.get(a), this.#addressFreeFailures, now, 0),
      this.#wait(this.#pairs.get(p), this.#freeFailures, now, pending),
    );
  }

  #wait(entry: Entry | undefined, free: number, now: number, pending: number): number {
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

  #prune(now: number): void {
    this.#addresses.prune(now);
    this.#pairs.prune(now);
  }
}

function pairKey(address: string, id: string): string {
  return `${address}\0${id}`;
}
