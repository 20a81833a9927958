/**
 * Counts connections that have not logged in yet, per remote address and in total, so
 * that no address (and no crowd) can make the relay hold more than the limits. Pure.
 *
 * @module
 */

/** Admission of unauthenticated connections. */
export class UnauthLimiter {
  readonly #perAddress = new Map<string, number>();
  #total = 0;

  /** Creates a limiter with the given limits. */
  constructor(readonly maxPerAddress: number, readonly maxTotal: number) {}

  /** Connections not yet logged in. */
  get total(): number {
    return this.#total;
  }

  /**
   * Admits one more connection from `address`, or says why not: "address" or "total".
   * An admitted connection must be {@link release}d exactly once.
   */
  admit(address: string): "ok" | "address" | "total" {
    if (this.#total >= this.maxTotal) return "total";
    const n = this.#perAddress.get(address) ?? 0;
    if (n >= this.maxPerAddress) return "address";
    this.#perAddress.set(address, n + 1);
    this.#total++;
    return "ok";
  }

  /** The connection from `address` logged in or closed. */
  release(address: string): void {
    const n = this.#perAddress.get(address);
    if (n === undefined) return;
    if (n <= 1) this.#perAddress.delete(address);
    else this.#perAddress.set(address, n - 1);
    this.#total--;
  }
}
