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
 * @module
 */

import { formatHostPort, type HostPort } from "../shared/address.ts";
import { backoffDelay, delay } from "../shared/backoff.ts";
import { LoginRefusedError, RelayError } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { ErrorCode, FILE_SERVICE } from "../shared/protocol/constants.ts";
import { connectRelay, type Notice, type RelayConnection } from "./relay_client.ts";
import { receiveFiles } from "./transfer.ts";

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
}

/** Thrown when the relay refuses our credentials: retrying cannot help. */
export class FatalLoginError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "FatalLoginError";
  }
}

/**
 * Runs until `signal` aborts. Resolves normally on abort; rejects with
 * {@link FatalLoginError} when the relay refuses the login (wrong ID or password).
 */
export async function runAgent(options: AgentOptions): Promise<void> {
  const want = options.idle ?? 2;
  const { logger, signal } = options;
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
    let lastPong = Date.now();
    let pinger: ReturnType<typeof setInterval> | undefined;
    const startPinging = () => {
      lastPong = Date.now();
      pinger = setInterval(() => {
        if (Date.now() - lastPong > 2 * conn.keepaliveMs + 1000) {
          logger.warn("relay stopped answering keep-alives", { relay: conn.relayName });
          conn.close();
          return;
        }
        conn.ping().catch(() => conn.close());
      }, conn.keepaliveMs);
    };
    const stopPinging = () => clearInterval(pinger);
    const onAbort = () => conn.close();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      startPinging();
      for (;;) {
        const m = await conn.framed.readMessage();
        if (m === null) return;
        if (m.kind === "pong") {
          lastPong = Date.now();
          continue;
        }
        if (m.kind === "error") {
          logger.warn("relay error", { code: m.code, message: m.message });
          return;
        }
        if (m.kind !== "notice") {
          logger.warn("unexpected message on idle connection", { kind: m.kind });
          return;
        }
        stopPinging();
        idle.delete(conn);
        poke(); // dial a replacement while this one serves the session
        const keep = await handleNotice(conn, m);
        if (!keep) return;
        if (idle.size >= want || signal.aborted) {
          logger.debug("closing surplus connection", { idle: idle.size });
          return;
        }
        idle.add(conn);
        startPinging();
      }
    } catch (e) {
      if (!signal.aborted) logger.debug("connection lost", { error: String(e) });
    } finally {
      stopPinging();
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
          { address, id: options.id, password: options.password, tlsCa: options.tlsCa },
          { signal },
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
}
