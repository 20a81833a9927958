/**
 * One connection to the Redis server that holds the shared directory (patent [0054]-[0060]:
 * the second embodiment's database server), shared by {@link RedisRegistry} and
 * {@link RedisDirectory}.
 *
 * It fails fast: commands are never queued while the connection is down (the client's
 * offline queue is off) and every command has a reply deadline, so a caller gets a
 * {@link DirectoryUnavailableError} at once, or after at most `commandTimeoutMs` when
 * Redis hangs, never an endless wait. The client reconnects by itself (unless
 * `reconnect: false`); `onReady` listeners run after every (re)connection.
 *
 * It works against a single server and against a Redis Cluster alike (`_backend.ts` finds
 * out which on every connection). Every command is routed by its key: the first argument
 * after the command name, the first of a script's `KEYS`, and a transaction's keys must
 * all share one hash slot (`redis_keys.ts` tags the keys that go together).
 *
 * Uses the official Node.js client (`@redis/client`, node-redis v5) through Deno's npm
 * support.
 *
 * @module
 */

import { ErrorReply } from "@redis/client";
import { createHash } from "node:crypto";
import { backoffDelay, delay } from "../../shared/backoff.ts";
import { Logger } from "../../shared/log.ts";
import { type Backend, openBackend } from "./_backend.ts";

import { DirectoryUnavailableError } from "../../shared/errors.ts";

export { DirectoryUnavailableError };

/** Where a Redis server is: parsed from `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`. */
export interface RedisAddress {
  /** Host name or IP address. */
  hostname: string;
  /** TCP port (default 6379). */
  port: number;
  /** Database number (default 0). */
  db: number;
  /** The URL as given, for the client (it may hold a password). */
  url: string;
  /** The URL without user or password, for logs and messages. */
  display: string;
}

/**
 * Parses a `--directory` value. Throws a `RangeError` naming the bad value.
 *
 * @example
 * ```ts
 * import { parseRedisUrl } from "./redis_conn.ts";
 * console.assert(parseRedisUrl("redis://127.0.0.1:6380/2").db === 2);
 * ```
 */
export function parseRedisUrl(value: string): RedisAddress {
  const bad = (why: string) =>
    new RangeError(
      `Invalid directory "${value}": ${why}; expected redis://HOST:PORT[/DB], e.g. redis://127.0.0.1:6379`,
    );
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw bad("not a URL");
  }
  if (url.protocol !== "redis:") throw bad(`unsupported scheme "${url.protocol}"`);
  if (url.hostname === "") throw bad("no host");
  if (url.search !== "" || url.hash !== "") throw bad("no query or fragment allowed");
  const port = url.port === "" ? 6379 : Number(url.port);
  const path = url.pathname.replace(/^\//, "");
  if (path !== "" && !/^\d{1,5}$/.test(path)) throw bad(`database "${path}" is not a number`);
  const db = path === "" ? 0 : Number(path);
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  return { hostname, port, db, url: value, display: `redis://${host}:${port}/${db}` };
}

/** Options for {@link RedisConnection}. */
export interface RedisConnectionOptions {
  /** Logger for connection events (default: silent). */
  logger?: Logger;
  /** Reply deadline of every command, ms (default 2000). */
  commandTimeoutMs?: number;
  /** Deadline of one TCP connection attempt, ms (default 2000). */
  connectTimeoutMs?: number;
  /** Reconnect after a loss (default true); false fails for good instead (CLI use). */
  reconnect?: boolean;
  /** Longest pause between reconnection attempts, ms (default 1000). */
  maxReconnectDelayMs?: number;
}

/** A Lua script with its SHA-1, run with EVALSHA and, when Redis lacks it, EVAL. */
export class LuaScript {
  /** The script's source. */
  readonly source: string;
  /** SHA-1 of the source, as Redis names it. */
  readonly sha: string;
  /** Creates the script. */
  constructor(source: string) {
    this.source = source;
    this.sha = createHash("sha1").update(source).digest("hex");
  }
}

/** A reply as the client hands it over. */
export type RedisReply = unknown;

/**
 * A fail-fast Redis connection with its own reconnect supervisor.
 *
 * The client library's built-in reconnection is off: its retry sleeps cannot be
 * cancelled, which would leave timers behind on close. Instead {@link #supervise}
 * owns the loop: one client object per connection, and a cancellable backoff
 * (`shared/backoff.ts`) between attempts. `#client` is set only by that loop, and only
 * while the client is ready.
 */
export class RedisConnection implements AsyncDisposable {
  /** Where it connects to. */
  readonly address: RedisAddress;
  readonly #logger: Logger;
  readonly #commandTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #reconnect: boolean;
  readonly #maxDelayMs: number;
  readonly #readyListeners = new Set<() => void>();
  readonly #stop = new AbortController();
  #client: Backend | null = null;
  #supervisor: Promise<void> | null = null;
  readonly #firstReady = Promise.withResolvers<void>();
  #everReady = false;

  /** Creates the connection object; call {@link connect} to open it. */
  constructor(url: string, options: RedisConnectionOptions = {}) {
    this.address = parseRedisUrl(url);
    this.#logger = options.logger ?? Logger.silent();
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 2000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 2000;
    this.#reconnect = options.reconnect ?? true;
    this.#maxDelayMs = options.maxReconnectDelayMs ?? 1000;
    this.#firstReady.promise.catch(() => {});
  }

  /** True while commands can be sent. */
  get isReady(): boolean {
    return this.#client !== null;
  }

  /** `server` or `cluster` while connected; null otherwise. */
  get kind(): "server" | "cluster" | null {
    return this.#client?.kind ?? null;
  }

  /** Calls `listener` after every successful (re)connection. Returns a remover. */
  onReady(listener: () => void): () => void {
    this.#readyListeners.add(listener);
    return () => this.#readyListeners.delete(listener);
  }

  /**
   * Opens the connection. With `reconnect: false` it rejects with a
   * {@link DirectoryUnavailableError} when Redis cannot be reached. Otherwise it
   * waits at most `waitMs` (default: until connected) for the first connection and
   * keeps trying in the background after that.
   */
  async connect(options: { waitMs?: number } = {}): Promise<void> {
    if (this.#stop.signal.aborted) throw new Error("RedisConnection is closed");
    this.#supervisor ??= this.#supervise();
    if (options.waitMs === undefined) return await this.#firstReady.promise;
    const { promise, resolve } = Promise.withResolvers<void>();
    const timer = setTimeout(resolve, options.waitMs);
    try {
      await Promise.race([this.#firstReady.promise, promise]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The reconnect loop: connect, wait for the loss, back off, again; until closed. */
  async #supervise(): Promise<void> {
    const signal = this.#stop.signal;
    let failures = 0;
    while (!signal.aborted) {
      let client: Backend | null = null;
      let reason: unknown = null;
      try {
        client = await openBackend({
          url: this.address.url,
          db: this.address.db,
          connectTimeoutMs: this.#connectTimeoutMs,
          signal,
        });
      } catch (e) {
        reason = e;
      }
      if (client !== null) {
        if (signal.aborted) {
          await this.#shutDown(client);
          return;
        }
        failures = 0;
        this.#client = client;
        const kind = client.kind;
        if (this.#everReady) {
          this.#logger.info("redis reconnected", { redis: this.address.display, kind });
        } else this.#logger.debug("redis connected", { redis: this.address.display, kind });
        this.#everReady = true;
        this.#firstReady.resolve();
        for (const listener of this.#readyListeners) listener();
        const stopped = Promise.withResolvers<null>();
        const onStop = () => stopped.resolve(null);
        signal.addEventListener("abort", onStop, { once: true });
        reason = await Promise.race([client.lost, stopped.promise]);
        signal.removeEventListener("abort", onStop);
        if (this.#client === client) this.#client = null;
        if (signal.aborted) {
          await this.#shutDown(client);
          return;
        }
        client.destroy();
      }
      if (failures++ === 0) {
        this.#logger.warn("redis unavailable", {
          redis: this.address.display,
          error: reason instanceof Error ? reason.message : String(reason),
        });
      }
      if (!this.#reconnect) {
        // Stay stopped: every command fails with "not connected".
        this.#firstReady.reject(this.#unavailable(reason));
        return;
      }
      const wait = backoffDelay(failures - 1, { baseMs: 50, maxMs: this.#maxDelayMs });
      await delay(wait, { signal }).catch(() => {});
    }
  }

  /** Closes `client` gracefully (replies already due arrive), within the command timeout. */
  async #shutDown(client: Backend): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    const timer = setTimeout(resolve, this.#commandTimeoutMs);
    try {
      await Promise.race([client.close().catch(() => {}), promise]);
    } finally {
      clearTimeout(timer);
    }
    client.destroy();
  }

  /**
   * Sends one command (`["HGETALL", key]`), routed by its key, `args[1]`. Rejects with a
   * {@link DirectoryUnavailableError} when disconnected, on a reply deadline, or when
   * Redis answers with an error.
   */
  async command(args: string[]): Promise<RedisReply> {
    const client = this.#ready();
    return await this.#withDeadline(args[0], () => client.send(args[1] ?? "", args));
  }

  /**
   * Sends many commands at once (pipelined; on a cluster, to their nodes in parallel)
   * under one reply deadline; resolves to their replies in order.
   */
  async commands(list: string[][]): Promise<RedisReply[]> {
    if (list.length === 0) return [];
    const client = this.#ready();
    return await this.#withDeadline(
      list[0][0],
      () => Promise.all(list.map((args) => client.send(args[1] ?? "", args))),
    );
  }

  /**
   * Runs `script` with `keys` and `args` (EVALSHA, falling back to EVAL), routed by
   * `keys[0]`: on a cluster every key must be in its slot.
   */
  async eval(script: LuaScript, keys: string[], args: (string | number)[]): Promise<RedisReply> {
    const client = this.#ready();
    const key = keys[0] ?? "";
    const rest = [String(keys.length), ...keys, ...args.map(String)];
    return await this.#withDeadline("EVALSHA", async () => {
      try {
        return await client.send(key, ["EVALSHA", script.sha, ...rest]);
      } catch (e) {
        // A restarted (empty) Redis has forgotten every script.
        if (!(e instanceof ErrorReply && e.message.startsWith("NOSCRIPT"))) throw e;
        return await client.send(key, ["EVAL", script.source, ...rest]);
      }
    });
  }

  /**
   * Runs `commands` as one MULTI/EXEC transaction; resolves to their replies. Routed by
   * the key of the first command: on a cluster all keys must share its slot.
   */
  async transaction(commands: string[][]): Promise<RedisReply[]> {
    const client = this.#ready();
    return await this.#withDeadline(
      "MULTI",
      () => client.multi(commands[0]?.[1] ?? "", commands),
    );
  }

  /** The client if ready; else throws at once. */
  #ready(): Backend {
    const client = this.#client;
    if (client === null) {
      throw this.#unavailable(new Error("not connected"));
    }
    return client;
  }

  async #withDeadline<T>(what: string, run: () => Promise<T>): Promise<T> {
    const { promise: expired, reject } = Promise.withResolvers<never>();
    const timer = setTimeout(
      () =>
        reject(
          new DirectoryUnavailableError(
            `Redis at ${this.address.display} did not answer ${what} within ${this.#commandTimeoutMs} ms`,
          ),
        ),
      this.#commandTimeoutMs,
    );
    const running = run();
    // The command may still settle after the deadline; nobody waits for it then.
    running.catch(() => {});
    try {
      return await Promise.race([running, expired]);
    } catch (e) {
      throw this.#unavailable(e);
    } finally {
      clearTimeout(timer);
    }
  }

  #unavailable(e: unknown): DirectoryUnavailableError {
    if (e instanceof DirectoryUnavailableError) return e;
    const reason = e instanceof Error ? e.message : String(e);
    return new DirectoryUnavailableError(
      `Cannot use Redis at ${this.address.display}: ${reason}`,
      { cause: e },
    );
  }

  /** Closes the connection (gracefully if connected) and stops reconnecting. Idempotent. */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#firstReady.reject(new DirectoryUnavailableError("Redis connection closed"));
    await this.#supervisor;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
