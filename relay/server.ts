/**
 * The relay server: listener, connection registry, keep-alive sweeper, shutdown.
 *
 * @module
 */

import { type ByteConn, FramedConn } from "../shared/framed_conn.ts";
import { NodeTlsListener } from "../shared/tls_listener.ts";
import { formatHostPort, type HostPort } from "../shared/address.ts";
import { Logger } from "../shared/log.ts";
import { DeviceState, ErrorCode } from "../shared/protocol/constants.ts";
import { RelayConn, type RelayContext, serveConnection } from "./core/connection.ts";
import { CredentialCache } from "./login/credentials.ts";
import type { Directory } from "./directory.ts";
import { LocalDevices } from "./core/local_devices.ts";
import { LoginThrottle } from "./login/throttle.ts";
import { LinkPool } from "./mesh/links.ts";
import {
  type AdminHandle,
  type AdminOptions,
  checkAdminOptions,
  RelayMetrics,
  type RelaySnapshot,
  startAdmin,
  TableObserver,
  takeSnapshot,
} from "./admin/mod.ts";

/** TLS material for the listener, as PEM text. */
export interface TlsMaterial {
  /** Certificate chain, PEM. */
  cert: string;
  /** Private key, PEM. */
  key: string;
}

/** Options for {@link startRelay}. */
export interface RelayOptions {
  /** Address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** Port (default 7800; 0 picks a free one). */
  port?: number;
  /** Relay name, shown in the directory (default `relay-<port>`). */
  name?: string;
  /** Directory (registry and presence). */
  directory: Directory;
  /** Serve TLS instead of plain TCP. */
  tls?: TlsMaterial;
  /** Keep-alive interval asked of devices, ms (default 15000). */
  keepaliveMs?: number;
  /** Idle connection silent this long is closed, ms (default 3 × keepaliveMs). */
  keepaliveTimeoutMs?: number;
  /** A new connection must log in within this, ms (default 10000). */
  loginTimeoutMs?: number;
  /** A target must answer a notice within this, ms (default 10000). */
  answerTimeoutMs?: number;
  /** Logger (default: silent). */
  logger?: Logger;
  /** Clock, ms (default Date.now). */
  now?: () => number;
  /** Address other relays dial to reach this one (default: the bound address). */
  advertise?: HostPort;
  /** Mesh secret: enables links with other relays (forwarding, mesh). */
  meshSecret?: Uint8Array;
  /** PEM CA used to dial other relays with TLS. */
  linkTlsCa?: string;
  /** Login throttle (default: a fresh one on the same clock). */
  throttle?: LoginThrottle;
  /** Counters the relay feeds (default: fresh ones; read them from the handle). */
  metrics?: RelayMetrics;
  /** Serve the admin HTTP listener (metrics, health, status page); off by default. */
  admin?: AdminOptions;
}

/** A running relay, shaped like `Deno.serve`'s handle. */
export interface RelayHandle extends AsyncDisposable {
  /** The address actually bound. */
  readonly addr: Deno.NetAddr;
  /** The relay's name. */
  readonly name: string;
  /** Resolves when the relay has stopped. */
  readonly finished: Promise<void>;
  /** Number of devices logged in here. */
  readonly deviceCount: number;
  /** The relay's counters. */
  readonly metrics: RelayMetrics;
  /** The admin listener, when {@link RelayOptions.admin} was given. */
  readonly admin: AdminHandle | null;
  /** The relay's tables and counters at this instant. */
  snapshot(): RelaySnapshot;
  /** Stops accepting, closes every connection, waits for their loops. */
  shutdown(): Promise<void>;
}

/** What the accept loop needs of a listener (plain `Deno.Listener` or the TLS one). */
interface Acceptor {
  readonly addr: Deno.Addr;
  accept(): Promise<ByteConn & { remoteAddr: Deno.Addr }>;
  close(): void;
}

/** Default TCP port of a relay. */
export const DEFAULT_PORT = 7800;

/** Starts a relay and returns once it listens. */
export async function startRelay(options: RelayOptions): Promise<RelayHandle> {
  if (options.admin) checkAdminOptions(options.admin);
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? DEFAULT_PORT;
  // TLS through node:tls: its sockets can turn Nagle off (see shared/tls_listener.ts).
  const listener: Acceptor = options.tls
    ? await NodeTlsListener.listen({ hostname, port, cert: options.tls.cert, key: options.tls.key })
    : Deno.listen({ hostname, port });
  const addr = listener.addr as Deno.NetAddr;
  const name = options.name ?? `relay-${addr.port}`;
  const logger = options.logger ?? Logger.silent();
  const now = options.now ?? Date.now;
  const keepaliveMs = options.keepaliveMs ?? 15_000;
  const keepaliveTimeoutMs = options.keepaliveTimeoutMs ?? 3 * keepaliveMs;
  const loginTimeoutMs = options.loginTimeoutMs ?? 10_000;
  const directory = options.directory;
  const conns = new Set<RelayConn>();
  const advertised = options.advertise ?? { hostname: addr.hostname, port: addr.port };
  const links = options.meshSecret
    ? new LinkPool(
      { name, address: advertised, secret: options.meshSecret, tlsCa: options.linkTlsCa },
      { logger },
    )
    : null;
  const loops = new Set<Promise<void>>();
  let shuttingDown = false;
  const metrics = options.metrics ?? new RelayMetrics();
  // Interim, until the core feeds logins, setups and bytes itself (see table_observer.ts).
  const observer = new TableObserver<RelayConn>(metrics);

  const ctx: RelayContext = {
    name,
    directory,
    devices: new LocalDevices<RelayConn>(name, (entry) => {
      directory.publish(entry);
      observer.deviceChanged(ctx.devices.get(entry.id)?.conns ?? []);
      if (entry.state === DeviceState.Offline) logger.info("offline", { device: entry.id });
    }, now),
    throttle: options.throttle ?? new LoginThrottle({ now }),
    credentials: new CredentialCache(),
    logger,
    now,
    keepaliveMs,
    answerTimeoutMs: options.answerTimeoutMs ?? 10_000,
    get shuttingDown() {
      return shuttingDown;
    },
    linkSecret: options.meshSecret ?? null,
    advertisedAddress: formatHostPort(advertised),
    links,
    onControlLink: directory.acceptControlLink
      ? (conn, peer) => directory.acceptControlLink!(conn.framed, peer)
      : null,
  };

  // One sweeper for all connections instead of a timer per connection.
  const sweepMs = Math.max(20, Math.min(1000, Math.floor(keepaliveTimeoutMs / 4)));
  const sweeper = setInterval(() => {
    const t = now();
    for (const conn of conns) {
      if (conn.state === "hello" && t - conn.openedAt > loginTimeoutMs) {
        logger.info("login timeout", { remote: conn.remote });
        closeWithError(conn, ErrorCode.LoginTimeout, "No login in time");
      } else if (
        conn.state === "idle" && conn.kind === "device" && t - conn.lastSeen > keepaliveTimeoutMs
      ) {
        logger.info("keep-alive missed", { device: conn.deviceId, remote: conn.remote });
        closeWithError(conn, ErrorCode.KeepaliveTimeout, "No keep-alive in time");
      }
    }
  }, sweepMs);

  // Connections already told why they are closed; the next sweep closes them outright
  // in case a peer that never reads keeps the error frame from draining.
  const told = new WeakSet<RelayConn>();
  function closeWithError(conn: RelayConn, code: ErrorCode, message: string) {
    if (told.has(conn)) return conn.framed.close();
    told.add(conn);
    metrics.refusal(code);
    void conn.framed.trySend({ kind: "error", code, message }).finally(() => conn.framed.close());
  }

  const accepting = (async () => {
    for (;;) {
      let socket: ByteConn & { remoteAddr: Deno.Addr };
      try {
        socket = await listener.accept();
      } catch (e) {
        if (shuttingDown) return;
        if (e instanceof Deno.errors.BadResource) return;
        logger.warn("accept failed", { error: String(e) });
        continue;
      }
      if ("setNoDelay" in socket) (socket as Deno.TcpConn).setNoDelay(true);
      metrics.accepted();
      const remoteAddr = socket.remoteAddr as Deno.NetAddr;
      const conn = new RelayConn(
        // Small first reads: an idle connection holds its pending read buffer for hours
        // (10,000 of them on a busy relay); the size grows while reads come back full.
        new FramedConn(socket, { readSize: 128 }),
        formatHostPort(remoteAddr),
        now,
      );
      conns.add(conn);
      const loop = serveConnection(conn, ctx).finally(() => {
        conns.delete(conn);
        loops.delete(loop);
        observer.connClosed(conn);
      });
      loops.add(loop);
    }
  })();

  await directory.start({
    name,
    address: advertised,
    snapshot: () => [...ctx.devices.devices()].map((d) => ctx.devices.entry(d.id)!),
    local: (id) => ctx.devices.entry(id),
  });
  logger.info("listening", { name, address: formatHostPort(addr), tls: !!options.tls });
  const finished = Promise.withResolvers<void>();
  let stopping: Promise<void> | null = null;
  let admin: AdminHandle | null = null;

  const snapshot = () => {
    observer.sync();
    return takeSnapshot({
      name,
      address: formatHostPort(addr),
      shuttingDown,
      devices: ctx.devices.devices(),
      conns,
      directory: directory.health?.() ?? { backend: "custom", up: true },
      topology: directory.topology?.() ?? null,
      metrics,
      now: now(),
    });
  };
  const notReady = () => {
    if (shuttingDown) return "shutting down";
    const health = directory.health?.();
    return health === undefined || health.up ? null : `directory (${health.backend}) unavailable`;
  };

  const shutdown = () => {
    stopping ??= (async () => {
      shuttingDown = true;
      clearInterval(sweeper);
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      await accepting;
      const notices = [...conns].map((conn) =>
        conn.framed.trySend({
          kind: "error",
          code: ErrorCode.ShuttingDown,
          message: "Relay is shutting down",
        })
      );
      const grace = Promise.withResolvers<void>();
      const graceTimer = setTimeout(grace.resolve, 200);
      await Promise.race([Promise.allSettled(notices), grace.promise]);
      clearTimeout(graceTimer);
      for (const conn of conns) conn.framed.close();
      await Promise.allSettled([...loops]);
      links?.close();
      await directory.close();
      // Last: /readyz answers 503 to load balancers for the whole shutdown.
      await admin?.shutdown();
      logger.info("stopped", { name });
      finished.resolve();
    })();
    return stopping;
  };

  if (options.admin) {
    try {
      admin = await startAdmin(options.admin, { snapshot, notReady }, logger);
    } catch (e) {
      await shutdown();
      throw e;
    }
    logger.info("admin listening", { address: formatHostPort(admin.addr) });
  }

  return {
    addr,
    name,
    finished: finished.promise,
    get deviceCount() {
      return ctx.devices.size;
    },
    metrics,
    admin,
    snapshot,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
