/**
 * `tsunagi run`: keeps N idle, logged-in connections to the relay, answers
 * connection-request notices by policy, receives files, and reconnects with backoff.
 *
 * The supervisor owns the set of idle connections; each connection has its own loop
 * (the only reader of that socket). When a notice dedicates a connection to a session,
 * the supervisor dials a replacement right away (patent Fig. 4 steps 19-25); when the
 * session is released, the connection rejoins the idle set or, if there are enough idle
 * connections already, is closed.
 *
 * Each idle connection pings at the shorter of the agent's and the relay's keep-alive
 * interval and is declared dead (closed, then redialled) when the relay stays silent
 * for half an interval after a PING (see keepalive.ts). Every `run` process logs in with
 * its own random instance token; when another instance with the same device ID logs
 * in, the relay answers `Replaced` and this one stops for good ({@link AgentReplacedError}).
 *
 * @module
 */

import { formatHostPort, type HostPort } from "../shared/address.ts";
import { backoffDelay, delay } from "../shared/backoff.ts";
import { LoginRefusedError, RelayError } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { ErrorCode, FILE_SERVICE } from "../shared/protocol/constants.ts";
import { type Clock, systemClock } from "./clock.ts";
import { KeepaliveMonitor, pingInterval } from "./keepalive.ts";
import { connectRelay, type Notice, type RelayConnection } from "./relay_client.ts";
import { FileTooLargeError, receiveFiles, removeStalePartials } from "./transfer.ts";

/** Default keep-alive interval of the agent, ms (the relay may ask for a shorter one). */
export const DEFAULT_KEEPALIVE_MS = 15_000;

/** Default largest file `run` accepts: 4 GiB. */
export const DEFAULT_MAX_FILE_SIZE = 4 * 1024 ** 3;

/** Options for {@link runAgent}. */
export interface AgentOptions {
  /** Relays to use, in order of preference; the agent fails over to the next. */
  relays: HostPort[];
  /** Device ID. */
  id: string;
  /** Device password. */
  password: string;
  /** Idle connections to keep (default 2). */
  idle?: number;
  /** Folder for received files (file service). */
  inbox: string;
  /** Only these requesters are accepted (default: everyone the relay lets through). */
  acceptFrom?: ReadonlySet<string>;
  /** PEM CA: connect with TLS. */
  tlsCa?: string;
  /** Logger. */
  logger: Logger;
  /** Stops the agent. */
  signal: AbortSignal;
  /** Backoff base, ms (default 250). */
  backoffBaseMs?: number;
  /** Backoff ceiling, ms (default 15000). */
  backoffMaxMs?: number;
  /** Own keep-alive interval, ms (default {@link DEFAULT_KEEPALIVE_MS}). */
  keepaliveMs?: number;
  /** Largest file received, bytes (default {@link DEFAULT_MAX_FILE_SIZE}; 0 = no limit). */
  maxFileSize?: number;
  /** A session with no progress this long fails, ms (default 2 min). */
  sessionIdleMs?: number;
  /** Instance token sent in LOGIN (default: a random UUID per call). */
  instance?: string;
  /** Time source for keep-alives and session deadlines (default the system clock). */
  clock?: Clock;
}

/** Thrown when the relay refuses our credentials: retrying cannot help. */
export class FatalLoginError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "FatalLoginError";
  }
}

/** Another agent logged in with this device ID and took over: this one must stop. */
export class AgentReplacedError extends Error {
  /** Creates the error with the relay's message. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AgentReplacedError";
  }
}

/**
 * Runs until `signal` aborts. Resolves normally on abort; rejects with
 * {@link FatalLoginError} when the relay refuses the login (wrong ID or password), and
 * with {@link AgentReplacedError} when another instance took over the device ID.
 */
export async function runAgent(options: AgentOptions): Promise<void> {
  const want = options.idle ?? 2;
  const { logger } = options;
  const clock = options.clock ?? systemClock;
  const ownKeepaliveMs = options.keepaliveMs ?? DEFAULT_KEEPALIVE_MS;
  const maxFileSize = options.maxFileSize ?? DEFAULT_MAX_FILE_SIZE;
  const instance = options.instance ?? crypto.randomUUID();
  /** Set once, by whichever loop learns that this instance was replaced; stops everything. */
  let fatal: AgentReplacedError | null = null;
  const stopAll = new AbortController();
  const signal = AbortSignal.any([options.signal, stopAll.signal]);
  const replaced = (message: string, cause?: unknown) => {
    if (fatal !== null) return;
    fatal = new AgentReplacedError(
      `Another agent logged in as "${options.id}" and took over (relay: ${message})`,
      { cause },
    );
    logger.error("replaced by another agent", { id: options.id, message });
    stopAll.abort(fatal);
  };
  const isReplaced = (e: unknown) => e instanceof RelayError && e.code === ErrorCode.Replaced;
  const stale = await removeStalePartials(options.inbox);
  if (stale > 0) logger.info("removed stale partial files", { count: stale });
  const idle = new Set<RelayConnection>();
  const loops = new Set<Promise<void>>();
  let relayIndex = 0;
  let attempt = 0;
  /** Consecutive AuthFailed answers (from different relays when several are given). */
  let refusals = 0;
  let wake = Promise.withResolvers<void>();
  const poke = () => wake.resolve();
  signal.addEventListener("abort", poke, { once: true });

  const serve = (conn: RelayConnection) => {
    const loop = serveIdle(conn).finally(() => {
      idle.delete(conn);
      loops.delete(loop);
      if (loops.size === 0 && !signal.aborted) {
        logger.warn("relay lost", { relay: conn.relayName });
      }
      poke();
    });
    loops.add(loop);
  };

  /** The idle connection's loop: keep-alive, notices, sessions. */
  async function serveIdle(conn: RelayConnection): Promise<void> {
    const intervalMs = pingInterval(ownKeepaliveMs, conn.keepaliveMs);
    const monitor = new KeepaliveMonitor({
      intervalMs,
      clock,
      ping: () => conn.ping(),
      onDead: (silentMs) => {
        logger.warn("relay connection dead", {
          relay: conn.relayName,
          address: formatHostPort(conn.login.address),
          silentMs: Math.round(silentMs),
          keepaliveMs: intervalMs,
        });
        conn.close();
      },
    });
    const onAbort = () => conn.close();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      monitor.start();
      for (;;) {
        const m = await conn.framed.readMessage();
        if (m === null) return;
        monitor.heard();
        if (m.kind === "pong") continue;
        if (m.kind === "error") {
          if (m.code === ErrorCode.Replaced) return replaced(m.message);
          logger.warn("relay error", { code: m.code, message: m.message });
          return;
        }
        if (m.kind !== "notice") {
          logger.warn("unexpected message on idle connection", { kind: m.kind });
          return;
        }
        monitor.stop();
        idle.delete(conn);
        poke(); // dial a replacement while this one serves the session
        const keep = await handleNotice(conn, m);
        if (!keep) return;
        if (idle.size >= want || signal.aborted) {
          logger.debug("closing surplus connection", { idle: idle.size });
          return;
        }
        idle.add(conn);
        monitor.start();
      }
    } catch (e) {
      if (!signal.aborted) logger.debug("connection lost", { error: String(e) });
    } finally {
      monitor.stop();
      signal.removeEventListener("abort", onAbort);
      conn.close();
    }
  }

  /** Answers one notice; true when the connection is idle again afterwards. */
  async function handleNotice(conn: RelayConnection, notice: Notice): Promise<boolean> {
    const from = notice.requester;
    let refusal = "";
    if (options.acceptFrom && !options.acceptFrom.has(from)) {
      refusal = `${options.id} does not accept connections from ${from}`;
    } else if (notice.service !== FILE_SERVICE) {
      refusal = `${options.id} offers no service "${notice.service}"`;
    }
    if (refusal !== "") {
      logger.info("session rejected", { from, service: notice.service, reason: refusal });
      await conn.reject(notice, refusal);
      return true;
    }
    const session = await conn.accept(notice);
    logger.info("session accepted", { from, session: notice.session });
    try {
      await receiveFiles(session, options.inbox, {
        maxFileSize: maxFileSize > 0 ? maxFileSize : undefined,
        onFileStart: (name, size) => logger.info("receiving file", { from, name, bytes: size }),
        onFile: (f) =>
          logger.info("file received", {
            from,
            name: f.announced,
            path: f.path,
            bytes: f.size,
            sha256: f.sha256,
          }),
      });
      await session.release({ signal });
      logger.info("session ended", { from, session: notice.session });
      return true;
    } catch (e) {
      if (isReplaced(e)) {
        replaced((e as Error).message, e);
        return false;
      }
      if (e instanceof FileTooLargeError) {
        logger.warn("file refused", { from, session: notice.session, reason: e.message });
        return false;
      }
      logger.warn("session failed", { from, session: notice.session, error: String(e) });
      return false; // the caller closes the connection; the relay aborts the peer's side
    }
  }

  try {
    while (!signal.aborted) {
      if (idle.size >= want) {
        await wake.promise;
        wake = Promise.withResolvers<void>();
        continue;
      }
      const address = options.relays[relayIndex % options.relays.length];
      try {
        const conn = await connectRelay(
          { address, id: options.id, password: options.password, tlsCa: options.tlsCa, instance },
          { signal, session: { idleTimeoutMs: options.sessionIdleMs, clock } },
        );
        if (loops.size === 0) {
          logger.info("logged in", {
            id: options.id,
            relay: conn.relayName,
            address: formatHostPort(address),
          });
        }
        attempt = 0;
        refusals = 0;
        idle.add(conn);
        serve(conn);
      } catch (e) {
        if (signal.aborted) break;
        if (isReplaced(e)) {
          replaced((e as Error).message, e);
          break;
        }
        if (e instanceof LoginRefusedError && e.code === ErrorCode.AuthFailed) {
          // Retrying cannot fix a wrong ID or password, but one relay of several may not
          // have learnt a new registration yet: give up once every relay refused in a row.
          if (++refusals >= options.relays.length) {
            throw new FatalLoginError(e.message, { cause: e });
          }
        } else {
          refusals = 0;
        }
        const wait = e instanceof LoginRefusedError && e.retryAfterMs > 0
          ? e.retryAfterMs
          : backoffDelay(attempt, { baseMs: options.backoffBaseMs, maxMs: options.backoffMaxMs });
        attempt++;
        logger.info("reconnecting", {
          address: formatHostPort(address),
          inMs: wait,
          error: e instanceof RelayError ? e.message : String(e instanceof Error ? e.message : e),
        });
        // Fail over to the next relay when this one keeps failing.
        if (options.relays.length > 1 && idle.size === 0) relayIndex++;
        try {
          await delay(wait, { signal });
        } catch {
          break;
        }
      }
    }
  } finally {
    signal.removeEventListener("abort", poke);
    for (const conn of idle) conn.close();
    await Promise.allSettled([...loops]);
  }
  if (fatal !== null) throw fatal;
}
