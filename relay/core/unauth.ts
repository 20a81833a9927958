/**
 * Connections that have not logged in yet, per remote address and in total, so that no
 * address (and no crowd) can make the relay hold more than the limits. Pure.
 *
 * When a limit is reached, the **oldest** such connection makes room for the new one
 * (sshd's MaxStartups and nginx drop early in the same spirit): a real device logs in
 * within one round trip, so a flood of silent connections from its NAT address cannot
 * lock it out by holding every slot; it only churns through slots it cannot keep.
 *
 * @example
 * ```ts
 * import { UnauthLimiter } from "./unauth.ts";
 * const limiter = new UnauthLimiter<string>(2, 100);
 * limiter.admit("10.0.0.1", "a");
 * limiter.admit("10.0.0.1", "b");
 * console.assert(limiter.admit("10.0.0.1", "c") === "a"); // "a" must go
 * ```
 *
 * @module
 */

/** Admission of unauthenticated connections; `T` identifies a connection. */
export class UnauthLimiter<T> {
  readonly #perAddress = new Map<string, Set<T>>();
  /** Every admitted connection, oldest first, with its address. */
  readonly #all = new Map<T, string>();

  /** Creates a limiter with the given limits. */
  constructor(readonly maxPerAddress: number, readonly maxTotal: number) {}

  /** Connections not yet logged in. */
  get total(): number {
    return this.#all.size;
  }

  /**
   * Admits `conn` from `address`. Returns the connection that must now be closed to keep
   * within the limits (the oldest of that address, or the oldest overall), or null.
   * Every admitted connection must be {@link release}d exactly once (an evicted one is
   * released here).
   */
  admit(address: string, conn: T): T | null {
    let victim: T | null = null;
    const mine = this.#perAddress.get(address);
    if (mine !== undefined && mine.size >= this.maxPerAddress) {
      victim = mine.values().next().value!;
    } else if (this.#all.size >= this.maxTotal) {
      victim = this.#all.keys().next().value!;
    }
    if (victim !== null) this.release(victim);
    let set = this.#perAddress.get(address);
    if (set === undefined) this.#perAddress.set(address, set = new Set());
    set.add(conn);
    this.#all.set(conn, address);
    return victim;
  }

  /** `conn` logged in or closed; a second call is a no-op. */
  release(conn: T): void {
    const address = this.#all.get(conn);
    if (address === undefined) return;
    this.#all.delete(conn);
    const set = this.#perAddress.get(address)!;
    set.delete(conn);
    if (set.size === 0) this.#perAddress.delete(address);
  }
}
