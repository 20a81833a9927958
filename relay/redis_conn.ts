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
 * Uses the official Node.js client (`@redis/client`, node-redis v5) through Deno's npm
 * support.
 *
 * @module
 */

import { createClient, ErrorReply } from "@redis/client";
import { createHash } from "node:crypto";
import { Logger } from "../shared/log.ts";

/** Redis is unreachable or did not answer in time; the caller should retry later. */
export class DirectoryUnavailableError extends Error {
  /** Creates the error; `cause` is the client's own error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DirectoryUnavailableError";
  }
}

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

type Client = ReturnType<typeof createClient>;

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
 * A fail-fast Redis connection. The client object and its event handlers are owned by
 * this class; `#ready` mirrors the client's state from its events.
 */
export class RedisConnection implements AsyncDisposable {
  /** Where it connects to. */
  readonly address: RedisAddress;
  readonly #client: Client;
  readonly #logger: Logger;
  readonly #commandTimeoutMs: number;
  readonly #readyListeners = new Set<() => void>();
  #ready = false;
  /** True between the first failure and the next ready: log an outage once. */
  #down = false;
  #closed = false;
  #connecting: Promise<void> | null = null;

  /** Creates the connection object; call {@link connect} to open it. */
  constructor(url: string, options: RedisConnectionOptions = {}) {
    this.address = parseRedisUrl(url);
    this.#logger = options.logger ?? Logger.silent();
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 2000;
    const maxDelay = options.maxReconnectDelayMs ?? 1000;
    this.#client = createClient({
      url,
      // Fail fast: a command while disconnected is rejected, not queued.
      disableOfflineQueue: true,
      socket: {
        connectTimeout: options.connectTimeoutMs ?? 2000,
        reconnectStrategy: options.reconnect === false
          ? false
          : (retries: number) => Math.min(50 * 2 ** Math.min(retries, 10), maxDelay),
      },
    });
    this.#client.on("ready", () => {
      this.#ready = true;
      if (this.#down) this.#logger.info("redis reconnected", { redis: this.address.display });
      else this.#logger.debug("redis connected", { redis: this.address.display });
      this.#down = false;
      for (const listener of this.#readyListeners) listener();
    });
    this.#client.on("end", () => {
      this.#ready = false;
    });
    this.#client.on("error", (e: unknown) => {
      // The client emits an error per failed attempt; report an outage once.
      this.#ready = this.#client.isReady;
      if (this.#closed || this.#down) return;
      this.#down = true;
      this.#logger.warn("redis unavailable", {
        redis: this.address.display,
        error: e instanceof Error ? e.message : String(e),
      });
    });
  }

  /** True while commands can be sent. */
  get isReady(): boolean {
    return this.#ready && this.#client.isReady && !this.#closed;
  }

  /** Calls `listener` after every successful (re)connection. Returns a remover. */
  onReady(listener: () => void): () => void {
    this.#readyListeners.add(listener);
    return () => this.#readyListeners.delete(listener);
  }

  /**
   * Opens the connection. With `reconnect: false` it rejects with a
   * {@link DirectoryUnavailableError} when Redis cannot be reached. Otherwise it
   * waits at most `waitMs` (default: forever) for the first connection and keeps
   * trying in the background after that.
   */
  async connect(options: { waitMs?: number } = {}): Promise<void> {
    this.#connecting ??= this.#client.connect().then(() => {}, (e: unknown) => {
      throw this.#unavailable(e);
    });
    if (options.waitMs === undefined) return await this.#connecting;
    const { promise, resolve } = Promise.withResolvers<void>();
    const timer = setTimeout(resolve, options.waitMs);
    try {
      await Promise.race([this.#connecting, promise]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends one command (`["HGETALL", key]`). Rejects with a
   * {@link DirectoryUnavailableError} when disconnected, on a reply deadline, or when
   * Redis answers with an error.
   */
  async command(args: string[]): Promise<RedisReply> {
    if (!this.isReady) throw this.#unavailable(new Error("not connected"));
    return await this.#withDeadline(args[0], () => this.#client.sendCommand(args));
  }

  /** Runs `script` with `keys` and `args` (EVALSHA, falling back to EVAL). */
  async eval(script: LuaScript, keys: string[], args: (string | number)[]): Promise<RedisReply> {
    if (!this.isReady) throw this.#unavailable(new Error("not connected"));
    const rest = [String(keys.length), ...keys, ...args.map(String)];
    return await this.#withDeadline("EVALSHA", async () => {
      try {
        return await this.#client.sendCommand(["EVALSHA", script.sha, ...rest]);
      } catch (e) {
        // A restarted (empty) Redis has forgotten every script.
        if (!(e instanceof ErrorReply && e.message.startsWith("NOSCRIPT"))) throw e;
        return await this.#client.sendCommand(["EVAL", script.source, ...rest]);
      }
    });
  }

  /** Runs `commands` as one MULTI/EXEC transaction; resolves to their replies. */
  async transaction(commands: string[][]): Promise<RedisReply[]> {
    if (!this.isReady) throw this.#unavailable(new Error("not connected"));
    return await this.#withDeadline("MULTI", async () => {
      const multi = this.#client.multi();
      for (const args of commands) multi.addCommand(args);
      return await multi.exec() as RedisReply[];
    });
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

  /** Closes the connection; commands still waiting are rejected. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#ready = false;
    this.#readyListeners.clear();
    if (this.#client.isOpen) {
      try {
        // Graceful when connected: waits for replies already due, then QUIT.
        if (this.#client.isReady) await this.#withDeadline("QUIT", () => this.#client.close());
      } catch {
        // Fall through to destroy.
      }
      if (this.#client.isOpen) this.#client.destroy();
    }
    await this.#connecting?.catch(() => {});
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
