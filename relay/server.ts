/**
 * The relay server: listener, connection registry, keep-alive sweeper, shutdown.
 *
 * @module
 */

import { type ByteConn, FramedConn } from "../shared/framed_conn.ts";
import { type TunableSocket, tuneSocket } from "../shared/dial.ts";
import { NodeTlsListener } from "../shared/tls_listener.ts";
import { addressGroup, formatHostPort, type HostPort } from "../shared/address.ts";
import { Logger } from "../shared/log.ts";
import { DeviceState, ErrorCode, MAX_PRELOGIN_PAYLOAD } from "../shared/protocol/constants.ts";
import {
  applyRegistration,
  ConnectRate,
  DEFAULT_LIMITS,
  evictDevice,
  LocalDevices,
  RelayConn,
  type RelayContext,
  type RelayLimits,
  serveConnection,
  TargetWaits,
  UnauthLimiter,
} from "./core/mod.ts";
import { LoginAuthority } from "./login/credentials.ts";
import { RegistryWatch } from "./login/registry_watch.ts";
import { hmac } from "../shared/scram.ts";
import type { Directory } from "./directory.ts";
import { LoginThrottle } from "./login/throttle.ts";
import { LinkPool } from "./mesh/links.ts";
import {
  type AdminHandle,
  type AdminOptions,
  checkAdminOptions,
  RelayMetrics,
  type RelaySnapshot,
  startAdmin,
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
  /** Lifetime of the tickets pool connections log in with, ms (default 5 minutes). */
  ticketTtlMs?: number;
  /**
   * How often the registry is checked for changes that end logins here (a removed
   * device, a new password), ms (default 1000).
   */
  registryPollMs?: number;
  /** Resource limits (defaults: {@link DEFAULT_LIMITS}). */
  limits?: Partial<RelayLimits>;
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

/** Largest socket read before login, bytes (raised with the payload limit at login). */
const PRELOGIN_READ_SIZE = 1024;

/** A pooled data link from another relay idle this long is closed, ms. */
const LINK_IDLE_TIMEOUT_MS = 120_000;

/** Default TCP port of a relay. */
export const DEFAULT_PORT = 7800;

/** Starts a relay and returns once it listens. */
export async function startRelay(options: RelayOptions): Promise<RelayHandle> {
  if (options.admin) checkAdminOptions(options.admin);
  const hostname = options.hostname ?? "127.0.0.1";
  const port = options.port ?? DEFAULT_PORT;
  // Before listening: a registry that cannot give its login secret fails the start.
  const fakeKey = await fakeSaltKey(options.meshSecret, options.directory);
  // TLS through node:tls: its sockets can turn Nagle off (see shared/tls_listener.ts).
  const listener: Acceptor = options.tls
    ? await NodeTlsListener.listen({
      hostname,
      port,
      cert: options.tls.cert,
      key: options.tls.key,
      onClientError: (e, remote) => {
        // OpenSSL's words for a first record that is not TLS: a plain tsunagi HELLO.
        const plain = /wrong version number|http request|unknown protocol|packet length too long/i
          .test(e.message);
        options.logger?.warn("TLS handshake failed", {
          remote,
          error: e.message,
          ...(plain
            ? {
              hint: "the client speaks plain TCP: this relay speaks TLS, give the agent --tls-ca",
            }
            : {}),
        });
      },
    })
    : Deno.listen({ hostname, port });
  const addr = listener.addr as Deno.NetAddr;
  const name = options.name ?? `relay-${addr.port}`;
  const logger = options.logger ?? Logger.silent();
  const now = options.now ?? Date.now;
  const keepaliveMs = options.keepaliveMs ?? 15_000;
  const keepaliveTimeoutMs = options.keepaliveTimeoutMs ?? 3 * keepaliveMs;
  const loginTimeoutMs = options.loginTimeoutMs ?? 10_000;
  const directory = options.directory;
  // Absent (undefined) limits keep their defaults.
  const given = Object.entries(options.limits ?? {}).filter(([, v]) => v !== undefined);
  const limits: RelayLimits = { ...DEFAULT_LIMITS, ...Object.fromEntries(given) };
  const unauth = new UnauthLimiter<RelayConn>(limits.maxUnauthPerAddress, limits.maxUnauth);
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
  const logins = new LoginAuthority({
    fakeKey,
    now,
    ticketTtlMs: options.ticketTtlMs,
  });

  // Its callbacks run from the first poll on, once `ctx` exists.
  const registryWatch = new RegistryWatch({
    registry: directory.registry,
    held: function* () {
      for (const d of ctx.devices.devices()) yield d.id;
      yield* logins.holders();
    },
    apply: (id, reg) => applyRegistration(ctx, id, reg),
    logger,
  });

  const setTimer = (ms: number, fn: () => void) => {
    const timer = setTimeout(fn, ms);
    return () => clearTimeout(timer);
  };
  const ctx: RelayContext = {
    name,
    directory,
    devices: new LocalDevices<RelayConn>(name, (entry) => {
      directory.publish(entry);
      if (entry.state === DeviceState.Offline) logger.info("offline", { device: entry.id });
    }, now),
    throttle: options.throttle ?? new LoginThrottle({ now }),
    logins,
    registryWatch,
    metrics,
    logger,
    now,
    setTimer,
    keepaliveMs,
    answerTimeoutMs: options.answerTimeoutMs ?? 10_000,
    limits,
    waits: new TargetWaits(limits.maxWaitingPerTarget, setTimer),
    connectRate: new ConnectRate(limits.connectRate, limits.connectBurst),
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

  const registryPoller = setInterval(
    () => void registryWatch.poll(),
    options.registryPollMs ?? 1000,
  );

  // One sweeper for all connections instead of a timer per connection. Every state has
  // a deadline: login, keep-alive (idle), the session idle timeout (session, ending),
  // and the answer timeout (noticed/connecting, held by the notice itself).
  const sessionIdleMs = limits.sessionIdleTimeoutMs;
  const sweepMs = Math.max(
    20,
    Math.min(1000, Math.floor(Math.min(keepaliveTimeoutMs, sessionIdleMs || Infinity) / 4)),
  );
  const sweeper = setInterval(() => {
    const t = now();
    for (const conn of conns) {
      const state = conn.state;
      if (state === "hello" && t - conn.openedAt > loginTimeoutMs) {
        logger.info("login timeout", { remote: conn.remote });
        closeWithError(conn, ErrorCode.LoginTimeout, "No login in time");
      } else if (
        state === "idle" && conn.kind === "device" && t - conn.lastSeen > keepaliveTimeoutMs
      ) {
        logger.info("keep-alive missed", { device: conn.deviceId, remote: conn.remote });
        closeWithError(conn, ErrorCode.KeepaliveTimeout, "No keep-alive in time");
      } else if (
        state === "idle" && conn.kind === "link" && conn.linkPurpose === "data" &&
        t - conn.lastSeen > LINK_IDLE_TIMEOUT_MS
      ) {
        // The dialling relay reuses a pooled link only while it is younger than a quarter of this
        // (mesh/links.ts), so closing it here never races a reuse.
        logger.debug("idle relay link closed", { relay: conn.linkPeer });
        conn.framed.close();
      } else if (
        sessionIdleMs > 0 && conn.session !== null &&
        t - conn.session.lastActivity > sessionIdleMs
      ) {
        logger.info("session idle timeout", {
          session: conn.session.id,
          device: conn.deviceId,
          relay: conn.kind === "link" ? conn.linkPeer : undefined,
        });
        closeWithError(conn, ErrorCode.SessionTimeout, "Session idle for too long");
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
    let failures = 0;
    for (;;) {
      let socket: ByteConn & { remoteAddr: Deno.Addr };
      try {
        socket = await listener.accept();
        failures = 0;
      } catch (e) {
        if (shuttingDown) return;
        if (e instanceof Deno.errors.BadResource) return;
        // Out of file descriptors (EMFILE) and the like: back off instead of spinning;
        // the logger rate-limits the repeated line.
        const wait = Math.min(1000, 5 * 2 ** Math.min(failures++, 8));
        logger.warn("accept failed", { error: String(e), retryInMs: wait });
        await new Promise((r) => setTimeout(r, wait));
        continue;
      }
      if ("setKeepAlive" in socket) tuneSocket(socket as unknown as TunableSocket);
      metrics.accepted();
      const remoteAddr = socket.remoteAddr as Deno.NetAddr;
      const conn = new RelayConn(
        // Small first reads: an idle connection holds its pending read buffer for hours
        // (10,000 of them on a busy relay); the size grows while reads come back full.
        // Before login a frame may declare only a few KiB, and reads stay small: what an
        // unauthenticated peer makes the relay hold is its partial frame and little more.
        new FramedConn(socket, {
          readSize: 128,
          maxReadSize: PRELOGIN_READ_SIZE,
          maxPayload: MAX_PRELOGIN_PAYLOAD,
        }),
        formatHostPort(remoteAddr),
        remoteAddr.hostname,
        now,
      );
      // Over a limit, the oldest connection not logged in makes room (core/unauth.ts).
      const victim = unauth.admit(addressGroup(remoteAddr.hostname), conn);
      if (victim !== null) dropUnauthenticated(victim);
      conns.add(conn);
      const loop = serveConnection(conn, ctx, () => unauth.release(conn)).finally(() => {
        unauth.release(conn);
        conns.delete(conn);
        loops.delete(loop);
      });
      loops.add(loop);
    }
  })();

  /** A connection not logged in makes room for a newer one: say so in one frame, close. */
  function dropUnauthenticated(conn: RelayConn) {
    logger.warn("connection dropped", {
      remote: conn.remoteHost,
      reason: "too many connections not logged in (from its address or in total)",
    });
    metrics.refusal(ErrorCode.TooManyUnauthenticated);
    void conn.framed.trySend({
      kind: "error",
      code: ErrorCode.TooManyUnauthenticated,
      message: "Too many connections that have not logged in; the oldest are dropped: retry",
    }).finally(() => conn.framed.close());
  }

  await directory.start({
    name,
    address: advertised,
    snapshot: () => [...ctx.devices.devices()].map((d) => ctx.devices.entry(d.id)!),
    local: (id) => ctx.devices.entry(id),
    instance: (id) => ctx.devices.get(id)?.instance ?? "",
    evict: (id, by) => evictDevice(ctx, id, by),
  });
  logger.info("listening", { name, address: formatHostPort(addr), tls: !!options.tls });
  const finished = Promise.withResolvers<void>();
  let stopping: Promise<void> | null = null;
  let admin: AdminHandle | null = null;

  const snapshot = () => {
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
      clearInterval(registryPoller);
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
      await registryWatch.close();
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
      if (e instanceof Deno.errors.AddrInUse) {
        const where = formatHostPort({
          hostname: options.admin.hostname,
          port: options.admin.port,
        });
        throw new Deno.errors.AddrInUse(`Cannot listen on ${where} (--admin)`);
      }
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

/**
 * The key unknown IDs' fake salts derive from. Every relay an attacker can ask must give
 * an unknown ID the same salt, or comparing two relays would tell registered IDs apart:
 * relays of a mesh derive it from the mesh secret, relays sharing a registry (Redis,
 * or one data directory) from the registry's login secret.
 */
async function fakeSaltKey(
  meshSecret: Uint8Array | undefined,
  directory: Directory,
): Promise<Uint8Array> {
  if (meshSecret !== undefined) return hmac(meshSecret, "tsunagi-fake-salt-key-v1");
  const secret = await directory.registry.loginSecret?.();
  return secret ?? crypto.getRandomValues(new Uint8Array(32));
}
