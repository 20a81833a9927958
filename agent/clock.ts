/**
 * Time for the agent's timers (keep-alive, session deadlines), injected so tests advance
 * a {@link ManualClock} instead of sleeping.
 *
 * @module
 */

/** A source of time and one-shot timers. */
export interface Clock {
  /** Current time, ms (any origin; only differences matter). */
  now(): number;
  /** Calls `fn` once after `ms`; returns a handle for {@link Clock.clearTimeout}. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancels a timer; unknown or fired handles are ignored. */
  clearTimeout(handle: unknown): void;
}

/** The real clock: `performance.now()` and the runtime's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * A clock that only moves when told to, for tests: {@link advance} fires the timers that
 * fall due, in time order.
 *
 * @example
 * ```ts
 * import { ManualClock } from "./clock.ts";
 * const clock = new ManualClock();
 * let fired = 0;
 * clock.setTimeout(() => fired++, 100);
 * clock.advance(99);
 * console.assert(fired === 0);
 * clock.advance(1);
 * console.assert(fired === 1);
 * ```
 */
export class ManualClock implements Clock {
  #now = 0;
  #next = 1;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  /** Current time, ms. */
  now(): number {
    return this.#now;
  }

  /** Schedules `fn` at now + `ms`. */
  setTimeout(fn: () => void, ms: number): number {
    const handle = this.#next++;
    this.#timers.set(handle, { at: this.#now + Math.max(0, ms), fn });
    return handle;
  }

  /** Cancels a timer. */
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Timers scheduled and not yet fired or cancelled. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Moves time forward by `ms`, firing every timer due on the way (in order). */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].at <= end && (due === undefined || entry[1].at < due[1].at)) due = entry;
      }
      if (due === undefined) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].at;
      due[1].fn();
    }
    this.#now = end;
  }
}
