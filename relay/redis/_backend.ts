/**
 * The two kinds of Redis deployment behind one small interface, for
 * {@link RedisConnection}: a single server (`createClient`) and a Redis Cluster
 * (`createCluster`, which routes each command by the hash slot of its key, follows
 * `MOVED`/`ASK` redirections and rediscovers the slot map itself).
 *
 * Which one a URL names is found out on every (re)connection: a probe connection asks
 * `INFO cluster`, so operators give the same `redis://HOST:PORT` for a server and for
 * any node of a cluster, and a server replaced by a cluster (or back) needs no change.
 *
 * Internal to relay/redis/.
 *
 * @module
 */

import { createClient, createCluster } from "@redis/client";

/** A connected deployment: the only way the connection sends commands. */
export interface Backend {
  /** `server` or `cluster`. */
  readonly kind: "server" | "cluster";
  /** Sends `args`, routed by `key` (ignored by a single server). */
  send(key: string, args: string[]): Promise<unknown>;
  /** Runs `commands` in one MULTI/EXEC on the node of `key`: every key must share its slot. */
  multi(key: string, commands: string[][]): Promise<unknown[]>;
  /** Resolves with the reason once the backend can no longer be used. */
  readonly lost: Promise<unknown>;
  /** Closes gracefully (replies already due arrive). */
  close(): Promise<void>;
  /** Closes at once. */
  destroy(): void;
}

/** What {@link openBackend} needs. */
export interface BackendOptions {
  /** `redis://` URL (it may hold a password). */
  url: string;
  /** Database number from the URL: a cluster has only 0. */
  db: number;
  /** Deadline of one TCP connection attempt, ms; the whole opening gets twice that. */
  connectTimeoutMs: number;
  /** Gives up the attempt (the connection is closing). */
  signal?: AbortSignal;
}

/** Races `promise` against `signal`; on abort, `cleanup` runs and the abort reason is thrown. */
async function bounded<T>(
  promise: Promise<T>,
  signal: AbortSignal,
  cleanup: () => void,
): Promise<T> {
  promise.catch(() => {});
  const { promise: aborted, reject } = Promise.withResolvers<never>();
  const onAbort = () => reject(signal.reason);
  if (signal.aborted) onAbort();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await Promise.race([promise, aborted]);
  } catch (e) {
    if (signal.aborted) cleanup();
    throw e;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

function clientOptions(url: string | undefined, connectTimeoutMs: number) {
  return {
    ...(url === undefined ? {} : { url }),
    // Fail fast: a command while disconnected is rejected, not queued.
    disableOfflineQueue: true,
    // The connection's own supervisor reconnects; the library's retries cannot be cancelled.
    socket: { connectTimeout: connectTimeoutMs, reconnectStrategy: false as const },
  };
}

function newClient(url: string, connectTimeoutMs: number) {
  return createClient(clientOptions(url, connectTimeoutMs));
}

type Client = ReturnType<typeof newClient>;

/** Resolves `lost` once `client` errors into a not-ready state or ends. */
function watchClient(client: Client, lost: (reason: unknown) => void): void {
  client.on("error", (e: unknown) => {
    // Without client-side reconnection, an error that leaves it not ready ends it.
    queueMicrotask(() => {
      if (!client.isReady) lost(e);
    });
  });
  client.on("end", () => lost(new Error("connection closed")));
}

/**
 * Connects to the deployment at `options.url`, whichever kind it is. Rejects when it
 * cannot be reached, or with a `RangeError` for a cluster URL naming a database other
 * than 0.
 */
export async function openBackend(options: BackendOptions): Promise<Backend> {
  // A server that accepts but never answers (SIGSTOP) must not hold the attempt forever.
  const deadline = AbortSignal.timeout(options.connectTimeoutMs * 2);
  const signal = options.signal === undefined
    ? deadline
    : AbortSignal.any([options.signal, deadline]);
  const lost = Promise.withResolvers<unknown>();
  const client = newClient(options.url, options.connectTimeoutMs);
  watchClient(client, lost.resolve);
  try {
    const cleanup = () => destroy(client);
    await bounded(client.connect(), signal, cleanup);
    const info = String(await bounded(client.sendCommand(["INFO", "cluster"]), signal, cleanup));
    if (!/^cluster_enabled:1\b/m.test(info)) return serverBackend(client, lost.promise);
  } catch (e) {
    destroy(client);
    throw e;
  }
  // A cluster node: the probe connection has done its job.
  destroy(client);
  if (options.db !== 0) {
    throw new RangeError(`Redis Cluster has only database 0, the URL names database ${options.db}`);
  }
  return await clusterBackend(options, signal);
}

function destroy(client: { destroy(): void }): void {
  try {
    client.destroy();
  } catch {
    // Already closed.
  }
}

function serverBackend(client: Client, lost: Promise<unknown>): Backend {
  return {
    kind: "server",
    lost,
    send: (_key, args) => client.sendCommand(args),
    multi: async (_key, commands) => {
      const multi = client.multi();
      for (const args of commands) multi.addCommand(args);
      return await multi.exec() as unknown[];
    },
    close: async () => {
      if (client.isReady) await client.close();
    },
    destroy: () => {
      if (client.isOpen) destroy(client);
    },
  };
}

/**
 * A cluster client. Its node connections do not reconnect by themselves (same
 * fail-fast rule as a server): the loss of any node connection ends the backend, and
 * the supervisor builds a new one, which rediscovers the slot map (after a fail-over,
 * the promoted replica's).
 */
async function clusterBackend(options: BackendOptions, signal: AbortSignal): Promise<Backend> {
  const lost = Promise.withResolvers<unknown>();
  const cluster = createCluster({
    rootNodes: [{ url: options.url }],
    defaults: {
      ...clientOptions(undefined, options.connectTimeoutMs),
      // Node clients inherit the credentials of the seed URL.
      ...credentials(options.url),
    },
  });
  cluster.on("error", (e: unknown) => lost.resolve(e));
  cluster.on("node-error", (e: unknown) => lost.resolve(e));
  cluster.on("node-disconnect", () => lost.resolve(new Error("cluster node connection closed")));
  try {
    await bounded(cluster.connect(), signal, () => destroy(cluster));
  } catch (e) {
    destroy(cluster);
    throw e;
  }
  return {
    kind: "cluster",
    lost: lost.promise,
    send: (key, args) => cluster.sendCommand(key, false, args),
    multi: async (key, commands) => {
      const multi = cluster.multi(key);
      for (const args of commands) multi.addCommand(key, false, args);
      return await multi.exec() as unknown[];
    },
    close: async () => {
      if (cluster.isOpen) await cluster.close();
    },
    destroy: () => {
      if (cluster.isOpen) destroy(cluster);
    },
  };
}

function credentials(url: string): { username?: string; password?: string } {
  const parsed = new URL(url);
  const out: { username?: string; password?: string } = {};
  if (parsed.username !== "") out.username = decodeURIComponent(parsed.username);
  if (parsed.password !== "") out.password = decodeURIComponent(parsed.password);
  return out;
}
