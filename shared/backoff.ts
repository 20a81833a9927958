/**
 * Reconnect backoff: a pure function of the attempt number, tested without timers.
 *
 * @module
 */

/** Options for {@link backoffDelay}. */
export interface BackoffOptions {
  /** Delay before the first retry, ms (default 250). */
  baseMs?: number;
  /** Largest delay, ms (default 15000). */
  maxMs?: number;
  /** Random source in [0, 1) for jitter (default Math.random). */
  random?: () => number;
}

/**
 * Delay before retry number `attempt` (0-based): exponential growth capped at `maxMs`,
 * with "equal jitter" (half fixed, half random) so a fleet of agents does not reconnect
 * in lockstep after a relay restart.
 *
 * @example
 * ```ts
 * import { backoffDelay } from "./backoff.ts";
 * const ms = backoffDelay(3, { baseMs: 100, maxMs: 10_000, random: () => 0 });
 * console.assert(ms === 400);
 * ```
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const base = options.baseMs ?? 250;
  const max = options.maxMs ?? 15_000;
  const random = options.random ?? Math.random;
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function delay(ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
