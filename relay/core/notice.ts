/**
 * A connection-request notice in flight: sent on one of the target's idle connections,
 * waiting for ACCEPT or REJECT. Its outcome is decided exactly once, by whichever comes
 * first (the answer, the answer timeout, the target connection closing, a crossing
 * CONNECT), through the synchronous {@link Notice.settle}; every later claim is refused
 * and its caller knows it lost. This is what makes an ACCEPT that races the timeout safe.
 *
 * @module
 */

import type { RelaySession, SessionSide } from "./session.ts";

/** How a notice ended. */
export type NoticeOutcome =
  | { kind: "accepted"; session: RelaySession<SessionSide> }
  | { kind: "rejected"; message: string }
  | { kind: "timeout" }
  | { kind: "gone" }
  | { kind: "crossed" };

/** What a notice carries to the target. */
export interface NoticeRequest {
  /** Requesting device. */
  readonly requester: string;
  /** Its type. */
  readonly requesterType: string;
  /** Requested service. */
  readonly service: string;
}

/** One notice, from its sending to its single outcome. */
export class Notice<C> {
  /** Session ID offered in NOTICE. */
  readonly id: string;
  /** The requester's relay-side connection (a device's, or a data link's). */
  readonly requester: C;
  /** What the target is told. */
  readonly request: NoticeRequest;
  readonly #outcome = Promise.withResolvers<NoticeOutcome>();
  #settled: NoticeOutcome | null = null;
  #cancelTimer: () => void = () => {};

  /** Creates a notice; {@link startTimer} arms its deadline. */
  constructor(id: string, requester: C, request: NoticeRequest) {
    this.id = id;
    this.requester = requester;
    this.request = request;
  }

  /** Resolves with the outcome, once. */
  get outcome(): Promise<NoticeOutcome> {
    return this.#outcome.promise;
  }

  /** The outcome, or null while pending. */
  get settled(): NoticeOutcome | null {
    return this.#settled;
  }

  /**
   * Settles with `timeout` after `ms`, calling `onTimeout` if that won. `setTimer` is the
   * relay's (injectable) timer.
   */
  startTimer(
    ms: number,
    onTimeout: () => void,
    setTimer: (ms: number, fn: () => void) => () => void,
  ): void {
    this.#cancelTimer = setTimer(ms, () => {
      if (this.settle({ kind: "timeout" })) onTimeout();
    });
  }

  /** Decides the outcome; false when it was already decided (the caller lost the race). */
  settle(outcome: NoticeOutcome): boolean {
    if (this.#settled !== null) return false;
    this.#settled = outcome;
    this.#cancelTimer();
    this.#outcome.resolve(outcome);
    return true;
  }
}
