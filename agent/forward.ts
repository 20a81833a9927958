/**
 * `tsunagi forward`: local TCP listeners whose connections each become one session to a
 * device's service, over a warm pool of logged-in relay connections (no login per local
 * connection).
 *
 * A refused request (unknown target, service not offered, policy, the device's local
 * connect failing) resets the local connection at once (RST: local sockets are accepted
 * with `node:net`, whose `resetAndDestroy` can do that), so the client sees a refusal,
 * not a hang; and it starts a per-target backoff during which further local
 * connections are reset without asking the relay, so a client retrying in a tight loop
 * does not turn into a storm of requests. A busy target (all its connections in
 * sessions) is retried briefly first: its pool refills within milliseconds.
 *
 * @module
 */

import net from "node:net";
import { formatHostPort, type HostPort } from "../shared/address.ts";
import { backoffDelay, delay } from "../shared/backoff.ts";
import {
  ConnectionClosedError,
  RelayError,
  TruncatedFrameError,
  UsageError,
} from "../shared/errors.ts";
import { isClosedError } from "../shared/framed_conn.ts";
import type { Logger } from "../shared/log.ts";
import { ERROR_CODE_NAMES, ErrorCode } from "../shared/protocol/constants.ts";
import { adoptStream, NodeSocketConn } from "./_node_socket.ts";
import type { Session } from "./session.ts";
import { type DeviceSupervisor, superviseDevice } from "./supervisor.ts";
import { type LocalConn, pipeSession } from "./tunnel.ts";

/** One `--listen HOST:PORT --to ID --service NAME`. */
export interface ForwardRule {
  /** Local address to listen on (port 0: any free port, logged). */
  listen: HostPort;
  /** Target device. */
  to: string;
  /** Service on the target. */
  service: string;
}

/** Options for {@link runForwarder}. */
export interface ForwardOptions {
  /** Relays, preferred first. */
  relays: HostPort[];
  /** This device's ID. */
  id: string;
  /** Its password. */
  password: string;
  /** PEM CA: connect with TLS. */
  tlsCa?: string;
  /** Fewest PBKDF2 iterations a login challenge may ask for (TSUNAGI_MIN_ITERATIONS). */
  minIterations?: number;
  /** Listeners. */
  rules: ForwardRule[];
  /** Idle logged-in connections kept warm (default 4). */
  pool?: number;
  /** A busy target is retried for this long before the local connection is reset, ms (default 10 s). */
  busyRetryMs?: number;
  /** Per-target backoff after a refusal: base and ceiling, ms (default 250, 5000). */
  backoffBaseMs?: number;
  /** See `backoffBaseMs`. */
  backoffMaxMs?: number;
  /** Keep-alive interval, ms. */
  keepaliveMs?: number;
  /** A tunnel with no progress either way this long fails, ms (default: never). */
  sessionIdleMs?: number;
  /** Logger. */
  logger: Logger;
  /** Stops the forwarder. */
  signal: AbortSignal;
  /**
   * The data path of an accepted session. "node" (default): the bytes go through
   * `node:net`, and a tunnel that fails midway resets the local connection, so its client
   * can tell a cut stream from a finished one. "deno": the socket's stream moves to a
   * native `Deno.TcpConn` (about a quarter of `node:net`'s CPU per byte received), but a
   * failure midway can then only close it with a FIN. Refusals are an RST in both.
   */
  sockets?: "node" | "deno";
  /** Called once per rule when its listener is up, with the real address. */
  onListening?: (rule: ForwardRule, address: HostPort) => void;
}

/** Backoff state of one target/service pair. */
interface TargetState {
  /** Refusals in a row. */
  attempt: number;
  /** Relay clock (performance.now) until which new connections are reset at once. */
  until: number;
  /** Why, for the log. */
  reason: string;
}

/**
 * Runs the listeners until `signal` aborts; rejects like `superviseDevice`'s `finished`
 * (a refused login is final).
 */
export async function runForwarder(options: ForwardOptions): Promise<void> {
  const { logger } = options;
  const pool = options.pool ?? 4;
  const agent = superviseDevice({
    relays: options.relays,
    id: options.id,
    password: options.password,
    tlsCa: options.tlsCa,
    minIterations: options.minIterations,
    idle: pool,
    maxIdle: pool * 4,
    instance: null, // adds connections beside a `tsunagi run` of the same ID
    services: {},
    logger,
    signal: options.signal,
    keepaliveMs: options.keepaliveMs,
    sessionIdleMs: options.sessionIdleMs ?? 0,
  });
  const targets = new Map<string, TargetState>();
  const tunnels = new Set<Promise<void>>();
  const servers: net.Server[] = [];
  const bound: [ForwardRule, HostPort][] = [];
  const adopt = options.sockets === "deno" ? adoptStream : null;
  try {
    for (const rule of options.rules) {
      // Paused on connect: nothing is read before the session exists, so a refusal's RST
      // finds the socket untouched and an accepted one can hand its stream to Deno.
      const server = net.createServer(
        { allowHalfOpen: true, noDelay: true, pauseOnConnect: true },
        (socket) => {
          socket.on("error", () => {}); // a client reset before adoption: the read reports it
          const remote = `${socket.remoteAddress}:${socket.remotePort}`;
          const t = tunnel(agent, rule, socket, adopt, remote, targets, options).finally(() =>
            tunnels.delete(t)
          );
          tunnels.add(t);
        },
      );
      servers.push(server);
      bound.push([rule, await listen(server, rule.listen)]);
      // Accept failures (EMFILE) must not crash the forwarder: the listener goes on.
      server.on("error", (e) => logger.warn("listener error", { error: String(e) }));
    }
    // Said once every listener is bound: a busy second --listen is the only message.
    for (const [rule, address] of bound) {
      logger.info("forwarding", {
        listen: formatHostPort(address),
        to: rule.to,
        service: rule.service,
      });
      options.onListening?.(rule, address);
    }
    await agent.finished;
  } finally {
    for (const s of servers) s.close();
    await agent.shutdown();
    await Promise.allSettled([...tunnels]);
  }
}

function listen(server: net.Server, at: HostPort): Promise<HostPort> {
  return new Promise((resolve, reject) => {
    server.once("error", (e: Error & { code?: string }) => {
      const where = formatHostPort(at);
      // Deno's node:net reports an address this host does not have as EINVAL.
      const codes = ["EADDRINUSE", "EACCES", "EADDRNOTAVAIL", "EINVAL", "ENOTFOUND", "EAI_AGAIN"];
      if (codes.includes(e.code ?? "")) {
        const why = e.code === "EADDRINUSE"
          ? "the address is in use"
          : e.code === "EACCES"
          ? "permission denied"
          : e.code === "ENOTFOUND" || e.code === "EAI_AGAIN"
          ? "no such host"
          : "no such local address";
        reject(
          new UsageError(
            `Cannot listen on ${where}: ${why}`,
            "pick another --listen HOST:PORT (port 0 picks a free port)",
          ),
        );
      } else reject(e);
    });
    server.listen(at.port, at.hostname, () => {
      server.removeAllListeners("error");
      const a = server.address() as net.AddressInfo;
      resolve({ hostname: a.address, port: a.port });
    });
  });
}

/** One local connection: a session, piped; or an RST. */
async function tunnel(
  agent: DeviceSupervisor,
  rule: ForwardRule,
  socket: net.Socket,
  adopt: ((socket: net.Socket) => Promise<Deno.TcpConn | null>) | null,
  remote: string,
  targets: Map<string, TargetState>,
  options: ForwardOptions,
): Promise<void> {
  const { logger } = options;
  const key = `${rule.to}\0${rule.service}`;
  const state = targets.get(key);
  if (state !== undefined && performance.now() < state.until) {
    socket.resetAndDestroy();
    logger.debug("connection reset", { remote, to: rule.to, reason: state.reason, backoff: true });
    return;
  }
  let session: Session;
  try {
    session = await open(agent, rule, options);
  } catch (e) {
    socket.resetAndDestroy();
    const code = e instanceof RelayError ? ERROR_CODE_NAMES[e.code] ?? String(e.code) : undefined;
    const reason = e instanceof Error ? e.message : String(e);
    const attempt = (targets.get(key)?.attempt ?? 0) + 1;
    const wait = backoffDelay(attempt - 1, {
      baseMs: options.backoffBaseMs ?? 250,
      maxMs: options.backoffMaxMs ?? 5000,
    });
    targets.set(key, { attempt, until: performance.now() + wait, reason });
    logger.warn("tunnel refused", { remote, to: rule.to, service: rule.service, code, reason });
    return;
  }
  targets.delete(key);
  const native = adopt === null ? null : await adopt(socket);
  const local: LocalConn = native ?? new NodeSocketConn(socket);
  try {
    const moved = await pipeSession(session, local);
    await session.release();
    logger.debug("tunnel closed", {
      remote,
      to: rule.to,
      bytesOut: moved.sent,
      bytesIn: moved.received,
      sockets: native === null ? "node" : "deno",
    });
  } catch (e) {
    session.close(); // pipeSession closed (or reset) the local side already
    logger.info("tunnel failed", { remote, to: rule.to, error: String(e) });
  }
}

/** Without a relay connection, a local connection waits this long for one, ms. */
const OFFLINE_WAIT_MS = 1000;

/**
 * Asks for the session. Only a busy target (its idle connections all taken: the pool
 * refills within milliseconds) and a relay connection that dropped are retried, briefly;
 * every other refusal (offline, policy, limits, rate) resets the local connection at
 * once and starts the per-target backoff, so a client's retries never turn into requests.
 */
async function open(
  agent: DeviceSupervisor,
  rule: ForwardRule,
  options: ForwardOptions,
): Promise<Session> {
  const online = agent.status().online;
  const budgetMs = online ? options.busyRetryMs ?? 10_000 : OFFLINE_WAIT_MS;
  const started = performance.now();
  const signal = AbortSignal.any([options.signal, AbortSignal.timeout(budgetMs)]);
  for (let attempt = 0;; attempt++) {
    try {
      return await agent.connect(rule.to, rule.service, { signal });
    } catch (e) {
      if (signal.aborted && !options.signal.aborted && !(e instanceof RelayError)) {
        throw new ConnectionClosedError(
          online
            ? `no answer from the relay within ${budgetMs} ms`
            : `no relay connection within ${budgetMs} ms (is the relay reachable?)`,
          { cause: e },
        );
      }
      if (signal.aborted || !worthRetrying(e)) throw e;
      const wait = backoffDelay(attempt, { baseMs: 10, maxMs: 500 });
      if (performance.now() - started + wait >= budgetMs) throw e;
      await delay(wait, { signal }).catch(() => {
        throw e;
      });
    }
  }
}

function worthRetrying(e: unknown): boolean {
  if (e instanceof RelayError) return e.code === ErrorCode.TargetBusy;
  return isClosedError(e) || e instanceof TruncatedFrameError;
}
