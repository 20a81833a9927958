/**
 * The device supervisor: keeps N idle, logged-in connections to the relay, hands
 * connection requests to service handlers, carries the caller's own requests over the
 * same warm connections, and reconnects with backoff. `tsunagi run` and `tsunagi
 * forward` are thin wrappers over it.
 *
 * Ownership: each connection has one owner loop ({@link DeviceSupervisor}'s `#serve`),
 * the only reader of its socket. While idle the loop reads notices and PONGs; a caller's
 * {@link DeviceSupervisor.connect} does not read: it registers a pending request on the
 * connection, sends CONNECT, and the loop hands it the ACCEPT or REJECT. After an ACCEPT
 * the loop stops reading until the session is done (released or closed), then the
 * connection rejoins the idle set or, if enough are idle, is closed. The supervisor's
 * dial loop owns the idle set's size: whenever a connection leaves it, it dials a
 * replacement (patent Fig. 4 steps 19-25).
 *
 * Liveness is the caller's to see: {@link DeviceSupervisor.status} (online, idle,
 * sessions, last message heard) and `onStatus`, called on every change.
 *
 * @example
 * ```ts ignore
 * // An echo service in a few lines.
 * await using agent = superviseDevice({
 *   relays: [{ hostname: "127.0.0.1", port: 7800 }], id: "dev1", password: "pw",
 *   services: {
 *     echo: async (request) => {
 *       const session = await request.accept();
 *       await session.readable.pipeTo(session.writable);
 *     },
 *   },
 * });
 * await agent.finished;
 * ```
 *
 * @module
 */

import { formatHostPort, type HostPort } from "../shared/address.ts";
import { backoffDelay, delay } from "../shared/backoff.ts";
import {
  ConnectionClosedError,
  LoginRefusedError,
  PeerUnavailableError,
  RelayError,
} from "../shared/errors.ts";
import { Logger } from "../shared/log.ts";
import { ErrorCode } from "../shared/protocol/constants.ts";
import { type Clock, systemClock } from "./clock.ts";
import { KeepaliveMonitor, pingInterval } from "./keepalive.ts";
import { connectRelay, type RelayConnection } from "./relay_client.ts";
import type { Session } from "./session.ts";
import {
  AgentReplacedError,
  type AgentStatus,
  answerNotice,
  FatalLoginError,
  type Services,
  type ServiceSpec,
} from "./service.ts";

export {
  AgentReplacedError,
  type AgentStatus,
  FatalLoginError,
  type ServiceHandler,
  type ServiceRequest,
  type Services,
  type ServiceSpec,
} from "./service.ts";

/** Default keep-alive interval of the agent, ms (the relay may ask for a shorter one). */
export const DEFAULT_KEEPALIVE_MS = 15_000;

/** Options for {@link superviseDevice}. */
export interface SupervisorOptions {
  /** Relays to use, in order of preference; the supervisor fails over to the next. */
  relays: HostPort[];
  /** Device ID. */
  id: string;
  /** Device password. */
  password: string;
  /** PEM CA: connect with TLS. */
  tlsCa?: string;
  /** Fewest PBKDF2 iterations a login challenge may ask for (TSUNAGI_MIN_ITERATIONS). */
  minIterations?: number;
  /** Idle connections to keep (default 2). */
  idle?: number;
  /** Idle connections kept after sessions end, at most (default twice `idle`). */
  maxIdle?: number;
  /**
   * An idle connection beyond `idle` that has not been used for this long is closed at
   * its next keep-alive, so a burst's extra connections do not stay forever (default
   * 60 s).
   */
  idleTrimMs?: number;
  /**
   * Instance token sent in LOGIN: a later login with another token replaces this agent
   * (default: a random UUID). `null` sends none: the connections add to the device's
   * and replace nothing (a forwarder beside `tsunagi run`).
   */
  instance?: string | null;
  /** Services offered, by name. */
  services?: Services;
  /** Only these requesters, for every service (default: all). */
  acceptFrom?: ReadonlySet<string>;
  /** Logger (default: warnings and errors on stderr). */
  logger?: Logger;
  /** Stops the supervisor. */
  signal?: AbortSignal;
  /** Backoff base, ms (default 250). */
  backoffBaseMs?: number;
  /** Backoff ceiling, ms (default 15000). */
  backoffMaxMs?: number;
  /** Own keep-alive interval, ms (default {@link DEFAULT_KEEPALIVE_MS}). */
  keepaliveMs?: number;
  /** A session with no progress this long fails, ms (default 2 min). */
  sessionIdleMs?: number;
  /** Time source for keep-alives and session deadlines (default the system clock). */
  clock?: Clock;
  /** Called whenever {@link AgentStatus} changes. */
  onStatus?: (status: AgentStatus) => void;
}

/** A running supervisor, shaped like `Deno.serve`'s handle. */
export interface DeviceSupervisor extends AsyncDisposable {
  /**
   * Resolves when stopped; rejects with {@link FatalLoginError} when every relay refused
   * the login, with {@link AgentReplacedError} when another instance took over.
   */
  readonly finished: Promise<void>;
  /** Current liveness and load. */
  status(): AgentStatus;
  /**
   * Asks `target` for `service` over a warm connection (a fresh login only when none is
   * idle). Throws {@link PeerUnavailableError} with the relay's reason when refused.
   * Release or close the session when done: its connection then returns to the pool.
   */
  connect(target: string, service: string, options?: { signal?: AbortSignal }): Promise<Session>;
  /** Stops: closes every connection; resolves when all loops ended. */
  shutdown(): Promise<void>;
}

/** One pooled connection and the request its owner loop is answering, if any. */
interface Pooled {
  conn: RelayConnection;
  /** Handed to a caller of `connect` (set synchronously, before any await). */
  reserved: boolean;
  request: PromiseWithResolvers<Session> | null;
  /** Clock time it last joined the idle set. */
  idleSince: number;
}

/** Starts a supervisor; see the module doc. */
export function superviseDevice(options: SupervisorOptions): DeviceSupervisor {
  const want = options.idle ?? 2;
  // Some slack above `want`: a connection freed by a session is kept rather than closed
  // while its replacement logs in, so steady traffic causes no login per session.
  const maxIdle = Math.max(want, options.maxIdle ?? want * 2);
  const idleTrimMs = options.idleTrimMs ?? 60_000;
  const logger = options.logger ?? new Logger({ component: "tsunagi", level: "warn" });
  const clock = options.clock ?? systemClock;
  const ownKeepaliveMs = options.keepaliveMs ?? DEFAULT_KEEPALIVE_MS;
  const instance = options.instance === null ? undefined : options.instance ?? crypto.randomUUID();
  const services = new Map<string, ServiceSpec>(
    Object.entries(options.services ?? {}).map((
      [name, s],
    ) => [name, typeof s === "function" ? { handler: s } : s]),
  );
  let fatal: Error | null = null;
  const stopAll = new AbortController();
  const signal = AbortSignal.any([...(options.signal ? [options.signal] : []), stopAll.signal]);
  const idle = new Set<Pooled>();
  const loops = new Set<Promise<void>>();
  /** Callers waiting for an idle connection while the dial loop makes one. */
  const waiting: PromiseWithResolvers<Pooled>[] = [];
  let relayName = "";
  let lastHeardAt = 0;
  /** The relay's reason when it ended this device's logins (`ERROR AuthFailed`), until a login succeeds. */
  let revoked = "";
  let wake = Promise.withResolvers<void>();
  const poke = () => wake.resolve();
  signal.addEventListener("abort", poke, { once: true });

  const status = (): AgentStatus => ({
    online: loops.size > 0,
    relay: relayName,
    idle: idle.size,
    busy: loops.size - idle.size,
    lastHeardAt,
  });
  const changed = () => options.onStatus?.(status());

  const stop = (e: Error) => {
    if (fatal !== null) return;
    fatal = e;
    stopAll.abort(e);
  };
  const replaced = (message: string, cause?: unknown) => {
    logger.error("replaced by another agent", { id: options.id, message });
    stop(
      new AgentReplacedError(
        `Another agent logged in as "${options.id}" and took over (relay: ${message})`,
        { cause },
      ),
    );
  };
  const isReplaced = (e: unknown) => e instanceof RelayError && e.code === ErrorCode.Replaced;

  const noticeContext = { options, services, logger, signal, replaced };

  /** Puts a connection in the idle set, or straight into a waiting caller's hands. */
  const makeIdle = (p: Pooled): boolean => {
    const waiter = waiting.shift();
    if (waiter !== undefined) {
      p.reserved = true;
      waiter.resolve(p);
      return true;
    }
    p.reserved = false;
    if (idle.size >= maxIdle) return false;
    p.idleSince = clock.now();
    idle.add(p);
    return true;
  };

  const start = (conn: RelayConnection) => {
    const p: Pooled = { conn, reserved: false, request: null, idleSince: clock.now() };
    const loop = serve(p).finally(() => {
      idle.delete(p);
      loops.delete(loop);
      p.request?.reject(new ConnectionClosedError("Relay connection closed during the request"));
      if (loops.size === 0 && !signal.aborted) logger.warn("relay lost", { relay: conn.relayName });
      changed();
      poke();
    });
    loops.add(loop);
    if (!makeIdle(p)) conn.close();
    changed();
  };

  /** The connection's owner loop: keep-alive, notices, answers to requests, sessions. */
  async function serve(p: Pooled): Promise<void> {
    const { conn } = p;
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
        const m = await conn.nextMessage();
        monitor.heard();
        lastHeardAt = clock.now();
        let session: Session | null = null;
        switch (m.kind) {
          case "pong":
            if (idle.has(p) && idle.size > want && clock.now() - p.idleSince >= idleTrimMs) {
              idle.delete(p);
              logger.debug("closing a surplus idle connection", { idle: idle.size });
              changed();
              return;
            }
            continue;
          case "notice":
            // A notice that crossed our own CONNECT is void (docs/protocol.md 6.4).
            if (p.reserved) continue;
            monitor.stop();
            idle.delete(p);
            poke(); // dial a replacement while this one serves the request
            changed();
            if (!(await answerNotice(conn, m, noticeContext))) return;
            break;
          case "accept":
          case "reject": {
            const request = p.request;
            if (request === null) throw new RelayError(ErrorCode.UnexpectedMessage, m.kind);
            p.request = null;
            if (m.kind === "reject") {
              request.reject(new PeerUnavailableError(m.code, m.message));
              break;
            }
            monitor.stop();
            session = conn.sessionFor(m);
            request.resolve(session);
            if ((await session.done) === "closed") return;
            break;
          }
          default:
            logger.warn("unexpected message on idle connection", { kind: m.kind });
            return;
        }
        if (signal.aborted || !makeIdle(p)) {
          logger.debug("closing surplus connection", { idle: idle.size });
          return;
        }
        changed();
        monitor.start();
      }
    } catch (e) {
      if (isReplaced(e)) replaced((e as Error).message, e);
      else if (e instanceof RelayError && e.code === ErrorCode.AuthFailed) {
        // The password was changed or the device removed: the next login tells whether
        // the password still fits, and if it does not, the agent stops with this reason.
        revoked = e.message;
        logger.warn("logged out by the relay", { relay: conn.relayName, message: e.message });
      } else if (!signal.aborted) logger.debug("connection lost", { error: String(e) });
    } finally {
      monitor.stop();
      signal.removeEventListener("abort", onAbort);
      conn.close();
    }
  }

  /** An idle connection for a request: from the pool, or the next one dialed. */
  async function take(wait: AbortSignal | undefined): Promise<Pooled> {
    for (const p of idle) {
      idle.delete(p);
      p.reserved = true;
      return p;
    }
    const waiter = Promise.withResolvers<Pooled>();
    waiting.push(waiter);
    poke();
    const onAbort = () => {
      const i = waiting.indexOf(waiter);
      if (i >= 0) waiting.splice(i, 1);
      waiter.reject(wait?.reason ?? signal.reason);
    };
    const signals = [signal, ...(wait ? [wait] : [])];
    for (const s of signals) s.addEventListener("abort", onAbort, { once: true });
    try {
      if (signals.some((s) => s.aborted)) onAbort();
      return await waiter.promise;
    } finally {
      for (const s of signals) s.removeEventListener("abort", onAbort);
    }
  }

  async function connect(
    target: string,
    service: string,
    requestOptions: { signal?: AbortSignal } = {},
  ): Promise<Session> {
    if (fatal !== null) throw fatal;
    signal.throwIfAborted();
    const p = await take(requestOptions.signal);
    const request = Promise.withResolvers<Session>();
    p.request = request;
    changed();
    poke(); // keep the idle set full
    const onAbort = () => p.conn.close();
    requestOptions.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await p.conn.request(target, service);
      return await request.promise;
    } catch (e) {
      // After a REJECT the owner loop has put the connection back already (it owns that);
      // anything else leaves the connection in an unknown state.
      if (!(e instanceof PeerUnavailableError)) p.conn.close();
      throw e;
    } finally {
      requestOptions.signal?.removeEventListener("abort", onAbort);
    }
  }

  const finished = (async () => {
    let relayIndex = 0;
    let attempt = 0;
    /** Consecutive AuthFailed answers (from different relays when several are given). */
    let refusals = 0;
    try {
      while (!signal.aborted) {
        if (idle.size >= want && waiting.length === 0) {
          await wake.promise;
          wake = Promise.withResolvers<void>();
          continue;
        }
        const address = options.relays[relayIndex % options.relays.length];
        try {
          const conn = await connectRelay(
            {
              address,
              id: options.id,
              password: options.password,
              tlsCa: options.tlsCa,
              minIterations: options.minIterations,
              instance,
              services: [...services.keys()],
            },
            { signal, session: { idleTimeoutMs: options.sessionIdleMs, clock } },
          );
          if (loops.size === 0) {
            logger.info("logged in", {
              id: options.id,
              relay: conn.relayName,
              address: formatHostPort(address),
            });
          }
          relayName = conn.relayName;
          lastHeardAt = clock.now();
          attempt = 0;
          refusals = 0;
          revoked = "";
          start(conn);
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
              stop(
                revoked === ""
                  ? new FatalLoginError(e.message, { cause: e })
                  : new FatalLoginError(`${revoked} (then refused: ${e.message})`, {
                    cause: e,
                    revoked,
                  }),
              );
              break;
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
            error: e instanceof Error ? e.message : String(e),
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
      for (const w of waiting.splice(0)) {
        w.reject(fatal ?? new ConnectionClosedError("Agent stopped"));
      }
      for (const p of idle) p.conn.close();
      await Promise.allSettled([...loops]);
    }
    const failure = fatal as Error | null;
    if (failure instanceof FatalLoginError || failure instanceof AgentReplacedError) throw failure;
  })();

  const shutdown = async () => {
    stopAll.abort();
    await finished.catch(() => {});
  };

  return {
    finished,
    status,
    connect,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
