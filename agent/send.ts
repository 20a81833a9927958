/**
 * The one-shot side of the agent: open a connection for a command, and `tsunagi send`
 * with its retries and deadlines.
 *
 * `send` has one budget, `timeoutMs`, used twice. Setting up (dial, login, CONNECT and
 * the retries of transient refusals) must finish within it overall. Once the target
 * accepted, a long transfer is not capped: instead the session must make progress at
 * least every `timeoutMs` (an idle deadline), and its release gets the same bound.
 *
 * @module
 */

import type { HostPort } from "../shared/address.ts";
import { backoffDelay, delay } from "../shared/backoff.ts";
import {
  ConnectionClosedError,
  LoginRefusedError,
  PeerUnavailableError,
  RelayError,
  TruncatedFrameError,
} from "../shared/errors.ts";
import { isClosedError } from "../shared/framed_conn.ts";
import { ERROR_CODE_NAMES, ErrorCode, FILE_SERVICE } from "../shared/protocol/constants.ts";
import { connectRelay, type RelayConnection } from "./relay_client.ts";
import type { Session, SessionOptions } from "./session.ts";
import { type OutgoingFile, type ProgressFn, type Receipt, sendFiles } from "./transfer.ts";

/** Default budget of a one-shot command: 60 s (see the module doc for `send`). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

/** Who to log in as, where. */
export interface OneShotLogin {
  /** Relays, preferred first. */
  relays: HostPort[];
  /** Device ID. */
  id: string;
  /** Device password. */
  password: string;
  /** PEM CA for TLS. */
  tlsCa?: string;
  /** Fewest PBKDF2 iterations a login challenge may ask for (TSUNAGI_MIN_ITERATIONS). */
  minIterations?: number;
}

/** Options for {@link openRelay}. */
export interface OpenOptions {
  /** Gives up on dial + login when it aborts. */
  signal?: AbortSignal;
  /** Deadlines of sessions on the connection. */
  session?: SessionOptions;
  /** Called when a relay failed and the next one is tried. */
  onFallback?: (address: HostPort, error: unknown) => void;
}

/**
 * Logs in to the first relay that answers (no instance token: a one-shot connection
 * adds to the device's connections and replaces nothing). A refused login is final.
 */
export async function openRelay(
  login: OneShotLogin,
  options: OpenOptions = {},
): Promise<RelayConnection> {
  let lastError: unknown = new ConnectionClosedError("No relay given");
  for (const [i, address] of login.relays.entries()) {
    try {
      return await loginWithShortWaits(
        () =>
          connectRelay(
            {
              address,
              id: login.id,
              password: login.password,
              tlsCa: login.tlsCa,
              minIterations: login.minIterations,
            },
            { signal: options.signal, session: options.session },
          ),
        options.signal,
      );
    } catch (e) {
      // A refused ID or password is the same on every relay; a relay whose directory
      // is down is not, so the next one is worth a try.
      if (e instanceof LoginRefusedError && e.code !== ErrorCode.DirectoryUnavailable) throw e;
      lastError = e;
      if (i + 1 < login.relays.length) options.onFallback?.(address, e);
    }
  }
  throw lastError;
}

/** How long `send` waits for a target that is offline (it may be reconnecting), ms. */
const OFFLINE_GRACE_MS = 5000;

/** A Throttled answer this short means "too many logins at once", not a lockout. */
const SHORT_THROTTLE_MS = 2000;

/**
 * Runs `login`, waiting out short Throttled answers (the relay bounds how many logins of
 * one device may be pending at once, so many parallel one-shot commands of one device
 * can get one); a real lockout (a longer wait) is the caller's to report.
 */
async function loginWithShortWaits(
  login: () => Promise<RelayConnection>,
  signal: AbortSignal | undefined,
): Promise<RelayConnection> {
  for (let attempt = 0;; attempt++) {
    try {
      return await login();
    } catch (e) {
      // A relay busy with connections not logged in drops the oldest: try again soon.
      const crowded = e instanceof RelayError && e.code === ErrorCode.TooManyUnauthenticated;
      const shortThrottle = e instanceof LoginRefusedError && e.code === ErrorCode.Throttled &&
        e.retryAfterMs <= SHORT_THROTTLE_MS;
      if (!(crowded || shortThrottle) || attempt >= 5 || signal?.aborted) throw e;
      const wait = shortThrottle ? (e as LoginRefusedError).retryAfterMs : 100 * 2 ** attempt;
      await delay(wait + Math.floor(Math.random() * 250), { signal });
    }
  }
}

/**
 * Why a failed session setup is worth retrying, for the "waiting" line; null when the
 * failure is permanent (unknown target, refused, service unsupported, auth...).
 *
 * @example
 * ```ts
 * import { retryReason } from "./send.ts";
 * import { PeerUnavailableError } from "../shared/errors.ts";
 * import { ErrorCode } from "../shared/protocol/constants.ts";
 * const busy = new PeerUnavailableError(ErrorCode.TargetBusy, "busy");
 * console.assert(retryReason(busy, "fax1") === "fax1 is busy (TargetBusy)");
 * ```
 */
export function retryReason(e: unknown, target: string, elapsedMs = 0): string | null {
  if (e instanceof RelayError) {
    const name = ERROR_CODE_NAMES[e.code] ?? String(e.code);
    switch (e.code) {
      case ErrorCode.TargetOffline:
        // A device between two connections (its last one just failed with a session, or
        // its NAT lost state and it is logging in again) is offline for a moment: worth
        // a few seconds, not the whole budget.
        return elapsedMs < OFFLINE_GRACE_MS ? `${target} is not logged in yet (${name})` : null;
      case ErrorCode.TargetBusy:
        return `${target} is busy (${name})`;
      case ErrorCode.TargetTimeout:
        return `${target} did not answer in time (${name})`;
      case ErrorCode.SessionLimit:
        return `the relay's session limit is reached (${name})`;
      case ErrorCode.RateLimited:
        return `the relay limits this device's connection requests (${name})`;
      case ErrorCode.ShuttingDown:
        return `the relay is shutting down (${name})`;
      default:
        return null;
    }
  }
  if (isClosedError(e) || e instanceof TruncatedFrameError) {
    return "the relay connection dropped";
  }
  return null;
}

/** What {@link sendToDevice} needs. */
export interface SendRequest extends OneShotLogin {
  /** Receiving device. */
  to: string;
  /** Files, in order. */
  files: OutgoingFile[];
  /** Budget, ms (default {@link DEFAULT_COMMAND_TIMEOUT_MS}); see the module doc. */
  timeoutMs?: number;
  /** Progress of the current file. */
  onProgress?: ProgressFn;
  /** Called before waiting to retry: why, and for how long. */
  onWait?: (reason: string, inMs: number) => void;
  /** Called when a relay failed and the next one is tried. */
  onFallback?: (address: HostPort, error: unknown) => void;
  /** Random source for the backoff jitter (default Math.random). */
  random?: () => number;
}

/**
 * Sends files to `to` and returns the receipts. Retries transient refusals (see
 * {@link retryReason}) with backoff until the setup budget runs out; anything else
 * fails at once with its own error.
 */
export async function sendToDevice(request: SendRequest): Promise<Receipt[]> {
  const timeoutMs = request.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const started = performance.now();
  const setup = AbortSignal.timeout(timeoutMs);
  const session: SessionOptions = { idleTimeoutMs: timeoutMs };
  let conn: RelayConnection | null = null;
  try {
    for (let attempt = 0;; attempt++) {
      if (conn === null) {
        conn = await openRelay(request, { signal: setup, session, onFallback: request.onFallback });
      }
      let accepted: Session;
      try {
        accepted = await conn.connect(request.to, FILE_SERVICE, { signal: setup });
      } catch (e) {
        const why = setup.aborted ? null : retryReason(e, request.to, performance.now() - started);
        if (why === null) throw giveUp(e, setup.aborted, timeoutMs);
        const wait = backoffDelay(attempt, { baseMs: 250, maxMs: 5000, random: request.random });
        if (performance.now() - started + wait >= timeoutMs) throw giveUp(e, true, timeoutMs);
        // After a REJECT the connection is idle again and is reused; a dropped one is redialled.
        if (!(e instanceof PeerUnavailableError)) {
          conn.close();
          conn = null;
        }
        request.onWait?.(why, wait);
        try {
          await delay(wait, { signal: setup });
        } catch {
          throw giveUp(e, true, timeoutMs);
        }
        continue;
      }
      // Accepted: no retry from here on (a file may have arrived); progress deadlines only.
      const receipts = await sendFiles(accepted, request.files, { onProgress: request.onProgress });
      await accepted.release({ timeoutMs });
      return receipts;
    }
  } finally {
    conn?.close();
  }
}

/** The error to report: the last failure, saying it was retried until the budget ran out. */
function giveUp(e: unknown, outOfTime: boolean, timeoutMs: number): unknown {
  if (!outOfTime) return e;
  const suffix = `; gave up after ${Math.round(timeoutMs / 100) / 10} s (--timeout)`;
  if (e instanceof PeerUnavailableError) {
    return new PeerUnavailableError(e.code, e.message + suffix);
  }
  if (e instanceof RelayError) return new RelayError(e.code, e.message + suffix);
  if (e instanceof Error) return new ConnectionClosedError(e.message + suffix, { cause: e });
  return e;
}
