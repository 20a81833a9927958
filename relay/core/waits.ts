/**
 * Requests waiting for a busy target's pool to refill: a bounded FIFO per target device,
 * each waiter with a deadline. Pure bookkeeping on the relay's (injectable) timer; no I/O.
 *
 * Ownership: a waiter belongs to the requester's loop, which is suspended in
 * {@link TargetWaits.wait}. A target connection that becomes idle (RELEASE, REJECT, a
 * new login; conn.ts `onIdle`) calls {@link TargetWaits.wake} from its own loop, which
 * only resolves the first matching waiter's promise; the requester then picks and offers
 * from its own loop, as every request does. Each waiter is settled once: woken, timed
 * out, or refused because the queue was full.
 *
 * @module
 */

/** How a wait ended. */
export type WaitResult = "woken" | "timeout" | "full";

interface Waiter {
  readonly service: string;
  readonly resolve: (result: WaitResult) => void;
  cancelTimer: () => void;
}

/** The waiting requests of every target device on this relay. */
export class TargetWaits {
  readonly #queues = new Map<string, Waiter[]>();
  readonly #maxPerTarget: number;
  readonly #setTimer: (ms: number, fn: () => void) => () => void;

  /** Allows `maxPerTarget` waiters per target device; `setTimer` arms the deadlines. */
  constructor(maxPerTarget: number, setTimer: (ms: number, fn: () => void) => () => void) {
    this.#maxPerTarget = maxPerTarget;
    this.#setTimer = setTimer;
  }

  /** Requests waiting for `target` (for `service` only, if given). */
  waiting(target: string, service?: string): number {
    const queue = this.#queues.get(target);
    if (queue === undefined) return 0;
    return service === undefined
      ? queue.length
      : queue.reduce((n, w) => n + (w.service === service ? 1 : 0), 0);
  }

  /** Requests waiting, over all targets. */
  get size(): number {
    let n = 0;
    for (const q of this.#queues.values()) n += q.length;
    return n;
  }

  /**
   * Waits up to `ms` for a connection of `target` offering `service` to become idle.
   * Resolves "full" at once when `target` already has its maximum of waiters. `front`
   * puts the waiter first (a woken request that lost the connection to another claim).
   */
  wait(target: string, service: string, ms: number, front = false): Promise<WaitResult> {
    if (ms <= 0) return Promise.resolve("timeout");
    let queue = this.#queues.get(target);
    if ((queue?.length ?? 0) >= this.#maxPerTarget) return Promise.resolve("full");
    if (queue === undefined) {
      queue = [];
      this.#queues.set(target, queue);
    }
    const { promise, resolve } = Promise.withResolvers<WaitResult>();
    const waiter: Waiter = { service, resolve, cancelTimer: () => {} };
    if (front) queue.unshift(waiter);
    else queue.push(waiter);
    waiter.cancelTimer = this.#setTimer(ms, () => {
      if (this.#remove(target, waiter)) resolve("timeout");
    });
    return promise;
  }

  /**
   * A connection of `target` offering `services` became idle: wakes the longest-waiting
   * request for one of them. False when nobody waited for it.
   */
  wake(target: string, services: readonly string[]): boolean {
    const queue = this.#queues.get(target);
    if (queue === undefined) return false;
    const waiter = queue.find((w) => services.includes(w.service));
    if (waiter === undefined || !this.#remove(target, waiter)) return false;
    waiter.cancelTimer();
    waiter.resolve("woken");
    return true;
  }

  #remove(target: string, waiter: Waiter): boolean {
    const queue = this.#queues.get(target);
    const i = queue?.indexOf(waiter) ?? -1;
    if (queue === undefined || i < 0) return false;
    queue.splice(i, 1);
    if (queue.length === 0) this.#queues.delete(target);
    return true;
  }
}
