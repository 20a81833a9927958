/**
 * The relay's counters: what happened since the process started (logins, session
 * setups, refusals, bytes). Gauges (devices online, sessions, links...) are not kept
 * here: they are read from the relay's tables when scraped (see `status.ts`).
 *
 * The relay core feeds a {@link RelayMetrics} it receives in its options. Every method
 * is a few map and number operations: cheap enough for the data path (`bytesRelayed`
 * once per forwarded chunk).
 *
 * Ownership: any loop may call the methods (JavaScript runs them to completion); only
 * the admin listener reads.
 *
 * @module
 */

import { ERROR_CODE_NAMES, ErrorCode } from "../../shared/protocol/constants.ts";

/** Name of an error code as in `ErrorCode` (`"AuthFailed"`, `"TargetBusy"`...). */
export type ErrorCodeName = Exclude<keyof typeof ErrorCode, "Ok">;

/** Outcome of a login or a session setup: `"ok"`, or the error code it was refused with. */
export type Outcome = "ok" | ErrorCodeName;

/** The error codes' names, `Ok` excluded, in code order. */
export const ERROR_CODE_NAME_LIST: readonly ErrorCodeName[] = Object.entries(ErrorCode)
  .filter(([name]) => name !== "Ok")
  .sort(([, a], [, b]) => a - b)
  .map(([name]) => name as ErrorCodeName);

/** A code number or name, normalised to the name (unknown numbers read `"Internal"`). */
export function codeName(code: ErrorCode | ErrorCodeName): ErrorCodeName {
  if (typeof code === "string") return code;
  const name = ERROR_CODE_NAMES[code];
  return name === undefined || name === "Ok" ? "Internal" : name as ErrorCodeName;
}

/** Counters of one relay process, each a monotonic total. */
export class RelayMetrics {
  /** Logins by outcome. */
  readonly logins: Map<Outcome, number> = new Map([["ok", 0]]);
  /** Session setups (CONNECT or ROUTE handled here) by outcome. */
  readonly setups: Map<Outcome, number> = new Map([["ok", 0]]);
  /** Error codes the relay sent to a peer (LOGIN_RESULT, REJECT or ERROR), by code. */
  readonly refusals: Map<ErrorCodeName, number> = new Map(
    ERROR_CODE_NAME_LIST.map((name) => [name, 0]),
  );
  /** Connections accepted by the listener (devices and relay links). */
  connectionsAccepted = 0;
  /** Bytes forwarded between the two sides of sessions, both directions together. */
  relayedBytes = 0;
  /** Process start, ms since the epoch. */
  readonly startedAt: number;

  /** Creates zeroed counters; `startedAt` defaults to now. */
  constructor(startedAt: number = Date.now()) {
    this.startedAt = startedAt;
  }

  /**
   * A login finished: `"ok"`, or refused with a code (a refusal is also counted by
   * {@link refusal}: call only this one for logins).
   *
   * @example
   * ```ts
   * import { RelayMetrics } from "./metrics.ts";
   * const m = new RelayMetrics();
   * m.loginResult("ok");
   * m.loginResult("AuthFailed");
   * console.assert(m.logins.get("AuthFailed") === 1 && m.refusals.get("AuthFailed") === 1);
   * ```
   */
  loginResult(result: Outcome | ErrorCode): void {
    const key = result === "ok" || result === ErrorCode.Ok ? "ok" : codeName(result);
    bump(this.logins, key);
    if (key !== "ok") bump(this.refusals, key);
  }

  /** A CONNECT or ROUTE was answered: `"ok"` (session started) or the REJECT code. */
  setup(result: Outcome | ErrorCode): void {
    const key = result === "ok" || result === ErrorCode.Ok ? "ok" : codeName(result);
    bump(this.setups, key);
    if (key !== "ok") bump(this.refusals, key);
  }

  /** Any other error code sent to a peer (ERROR frames: timeouts, limits, shutdown...). */
  refusal(code: ErrorCode | ErrorCodeName): void {
    bump(this.refusals, codeName(code));
  }

  /** `n` bytes of a session were forwarded (counted once, on the side that wrote them). */
  bytesRelayed(n: number): void {
    this.relayedBytes += n;
  }

  /** The listener accepted a connection. */
  accepted(): void {
    this.connectionsAccepted++;
  }
}

function bump<K>(map: Map<K, number>, key: K) {
  map.set(key, (map.get(key) ?? 0) + 1);
}
