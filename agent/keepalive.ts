/**
 * Keep-alive and dead-connection detection for one idle relay connection.
 *
 * A NAT box that flushes its state drops packets silently: no RST, no FIN, and a read
 * on the socket just waits. The monitor sends a PING every `intervalMs` and requires
 * something from the relay (the PONG, or any other frame) within `intervalMs / 2` of it.
 * A connection that dies right after an answer is thus noticed at most 1.5 intervals
 * later: at the next PING plus half an interval. The wait for an answer is at least
 * {@link MIN_ANSWER_WAIT_MS}, so a very short interval on a busy machine does not turn a
 * slow PONG into a reconnect (detection then takes at most one interval plus that).
 *
 * The monitor owns only its timer; the connection's read loop tells it what arrived
 * (`heard`) and the monitor tells the loop, through `onDead`, that it must close.
 *
 * @module
 */

import { type Clock, systemClock } from "./clock.ts";

/** Shortest wait for the relay's answer to a PING, ms. */
export const MIN_ANSWER_WAIT_MS = 1000;

/** Options for {@link KeepaliveMonitor}. */
export interface KeepaliveOptions {
  /** Ping interval, ms (> 0). */
  intervalMs: number;
  /** Sends one PING; a rejection counts as a dead connection. */
  ping: () => Promise<void>;
  /** Called once when the connection is declared dead, with the ms since it was last heard. */
  onDead: (silentMs: number) => void;
  /** Time source (default {@link systemClock}). */
  clock?: Clock;
  /** Shortest wait for an answer, ms (default {@link MIN_ANSWER_WAIT_MS}). */
  minAnswerWaitMs?: number;
}

/** The ping interval an agent uses: its own, or the relay's if that is shorter (0 = unset). */
export function pingInterval(ownMs: number, relayMs: number): number {
  return relayMs > 0 ? Math.min(ownMs, relayMs) : ownMs;
}

/** Pings a connection on a timer and declares it dead when answers stop. */
export class KeepaliveMonitor {
  readonly #intervalMs: number;
  readonly #minAnswerWaitMs: number;
  readonly #ping: () => Promise<void>;
  readonly #onDead: (silentMs: number) => void;
  readonly #clock: Clock;
  #timer: unknown;
  #check: unknown;
  /** Send time of the oldest PING with nothing heard since, or null. */
  #unansweredSince: number | null = null;
  #lastHeard: number;
  #dead = false;

  /** Creates a stopped monitor; call {@link start}. */
  constructor(options: KeepaliveOptions) {
    if (!(options.intervalMs > 0)) {
      throw new RangeError(`Keep-alive interval must be positive, got ${options.intervalMs}`);
    }
    this.#intervalMs = options.intervalMs;
    this.#minAnswerWaitMs = options.minAnswerWaitMs ?? MIN_ANSWER_WAIT_MS;
    this.#ping = options.ping;
    this.#onDead = options.onDead;
    this.#clock = options.clock ?? systemClock;
    this.#lastHeard = this.#clock.now();
  }

  /** True once the connection was declared dead. */
  get dead(): boolean {
    return this.#dead;
  }

  /** (Re)starts pinging: the first PING goes out one interval from now. */
  start(): void {
    this.stop();
    if (this.#dead) return;
    this.#lastHeard = this.#clock.now();
    this.#timer = this.#clock.setTimeout(() => this.#sendPing(), this.#intervalMs);
  }

  /** Stops the timers (the connection went into a session or is closing). */
  stop(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    if (this.#check !== undefined) this.#clock.clearTimeout(this.#check);
    this.#timer = undefined;
    this.#check = undefined;
    this.#unansweredSince = null;
  }

  /** Records that a frame arrived from the relay. */
  heard(): void {
    this.#lastHeard = this.#clock.now();
  }

  /**
   * Sends a PING every interval. The oldest PING not answered yet (nothing heard since it
   * was sent) must be answered within the answer wait; one check timer watches it.
   */
  #sendPing() {
    const sentAt = this.#clock.now();
    if (this.#unansweredSince !== null && this.#lastHeard >= this.#unansweredSince) {
      this.#unansweredSince = null;
    }
    this.#ping().catch(() => this.#declareDead());
    this.#timer = this.#clock.setTimeout(() => this.#sendPing(), this.#intervalMs);
    if (this.#unansweredSince === null) {
      this.#unansweredSince = sentAt;
      this.#armCheck();
    }
  }

  #armCheck() {
    if (this.#check !== undefined) this.#clock.clearTimeout(this.#check);
    const since = this.#unansweredSince!;
    const answerWait = Math.max(Math.floor(this.#intervalMs / 2), this.#minAnswerWaitMs);
    this.#check = this.#clock.setTimeout(() => {
      this.#check = undefined;
      if (this.#lastHeard < since) return this.#declareDead();
      // Answered: watch the oldest PING sent after the answer, if any.
      this.#unansweredSince = null;
    }, since + answerWait - this.#clock.now());
  }

  #declareDead() {
    if (this.#dead) return;
    this.#dead = true;
    this.stop();
    this.#onDead(this.#clock.now() - this.#lastHeard);
  }
}
