/**
 * The per-requester limit on connection requests: a token bucket per requesting device.
 * A device may send `burst` CONNECTs at once and `perSecond` on average; beyond that the
 * relay answers REJECT(RateLimited) without looking the target up. Pure: the clock is
 * passed in, nothing is scheduled.
 *
 * @module
 */

/** Buckets kept before full (idle) ones are dropped. */
const PRUNE_ABOVE = 10_000;

interface Bucket {
  tokens: number;
  at: number;
}

/** Token buckets by device ID. */
export class ConnectRate {
  readonly #buckets = new Map<string, Bucket>();
  readonly #perSecond: number;
  readonly #burst: number;

  /** `perSecond` tokens refill a bucket of `burst`; `perSecond` 0 turns the limit off. */
  constructor(perSecond: number, burst: number) {
    this.#perSecond = perSecond;
    this.#burst = Math.max(1, burst);
  }

  /** Requests per second allowed on average (0: no limit). */
  get perSecond(): number {
    return this.#perSecond;
  }

  /**
   * Takes a token for `id` at time `now` (ms). Returns 0 when the request may go on,
   * otherwise the ms until the next token.
   */
  take(id: string, now: number): number {
    if (this.#perSecond <= 0) return 0;
    let bucket = this.#buckets.get(id);
    if (bucket === undefined) {
      if (this.#buckets.size >= PRUNE_ABOVE) this.#prune(now);
      bucket = { tokens: this.#burst, at: now };
      this.#buckets.set(id, bucket);
    }
    bucket.tokens = Math.min(
      this.#burst,
      bucket.tokens + (Math.max(0, now - bucket.at) * this.#perSecond) / 1000,
    );
    bucket.at = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - bucket.tokens) * 1000) / this.#perSecond);
  }

  /** Drops buckets that have refilled: they hold nothing a fresh bucket would not. */
  #prune(now: number): void {
    for (const [id, b] of this.#buckets) {
      if (b.tokens + ((now - b.at) * this.#perSecond) / 1000 >= this.#burst) {
        this.#buckets.delete(id);
      }
    }
  }
}
