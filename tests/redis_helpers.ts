/**
 * A real `redis-server` per test: on a free loopback port, without persistence, killed
 * by PID on dispose. It can be stopped and started again on the same port (empty, as
 * after a crash), and paused (SIGSTOP) to play a Redis that hangs.
 *
 * A missing `redis-server` fails the test: Redis mode is never skipped.
 *
 * @module
 */

import { registryMain } from "../relay/registry/main.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Where `redis-server` is looked up (`REDIS_SERVER` overrides). */
const REDIS_SERVER = Deno.env.get("REDIS_SERVER") ?? "redis-server";

/** A port that was free a moment ago (bound on 127.0.0.1:0, then released). */
export function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return (listener.addr as Deno.NetAddr).port;
}

/** Sends PING and checks for +PONG; false on any failure. */
export async function ping(port: number, timeoutMs = 1000): Promise<boolean> {
  let conn: Deno.TcpConn | undefined;
  const timer = setTimeout(() => conn?.close(), timeoutMs);
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(encoder.encode("PING\r\n"));
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    return n !== null && decoder.decode(buf.subarray(0, n)).startsWith("+PONG");
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // closed by the timer
    }
  }
}

/** A running `redis-server` owned by a test. */
export class RedisServer implements AsyncDisposable {
  /** Its port on 127.0.0.1. */
  readonly port: number;
  #child: Deno.ChildProcess | null = null;
  #pump: Promise<void> | null = null;
  #log: string[] = [];

  private constructor(port: number) {
    this.port = port;
  }

  /** `redis://127.0.0.1:PORT` (database 0), or with `/db`. */
  url(db = 0): string {
    return `redis://127.0.0.1:${this.port}/${db}`;
  }

  /** PID of the running server. */
  get pid(): number {
    if (this.#child === null) throw new Error("redis-server is not running");
    return this.#child.pid;
  }

  /** True while the process runs. */
  get running(): boolean {
    return this.#child !== null;
  }

  /** Starts a server on a free port; tries a few ports if one was taken in between. */
  static async start(): Promise<RedisServer> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const server = new RedisServer(freePort());
      try {
        await server.#spawn();
        return server;
      } catch (e) {
        lastError = e;
        if (e instanceof RedisMissingError) throw e;
      }
    }
    throw lastError;
  }

  /** Starts the server again on the same port, empty (after {@link stop}). */
  async restart(): Promise<void> {
    if (this.#child !== null) await this.stop();
    await this.#spawn();
  }

  /** Kills the server (SIGKILL: a crash, nothing saved) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (child === null) return;
    this.#child = null;
    try {
      Deno.kill(child.pid, "SIGCONT");
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await this.#pump;
    this.#pump = null;
  }

  /** Freezes the server (SIGSTOP): connections stay open, nothing answers. */
  pause(): void {
    Deno.kill(this.pid, "SIGSTOP");
  }

  /** Thaws a paused server. */
  resume(): void {
    Deno.kill(this.pid, "SIGCONT");
  }

  /** Runs one command through `redis-cli`-free RESP over a fresh socket; returns the raw reply. */
  async raw(...args: string[]): Promise<string> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
    try {
      let request = `*${args.length}\r\n`;
      for (const a of args) request += `$${encoder.encode(a).length}\r\n${a}\r\n`;
      await conn.write(encoder.encode(request));
      const buf = new Uint8Array(65536);
      const n = await conn.read(buf);
      return n === null ? "" : decoder.decode(buf.subarray(0, n));
    } finally {
      conn.close();
    }
  }

  async #spawn(): Promise<void> {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(REDIS_SERVER, {
        args: [
          "--port",
          String(this.port),
          "--bind",
          "127.0.0.1",
          "--save",
          "",
          "--appendonly",
          "no",
          "--protected-mode",
          "no",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).spawn();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new RedisMissingError({ cause: e });
      throw e;
    }
    this.#child = child;
    this.#log = [];
    const ready = Promise.withResolvers<void>();
    this.#pump = (async () => {
      let buf = "";
      for await (const chunk of child.stdout) {
        buf += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (this.#log.length < 200) this.#log.push(line);
          if (line.includes("Ready to accept connections")) ready.resolve();
        }
      }
      ready.reject(new Error(`redis-server exited:\n${this.#log.join("\n")}`));
    })();
    const timer = setTimeout(
      () => ready.reject(new Error(`redis-server not ready within 10 s:\n${this.#log.join("\n")}`)),
      10_000,
    );
    try {
      await ready.promise;
      if (!(await ping(this.port))) throw new Error("redis-server does not answer PING");
    } catch (e) {
      await this.stop();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills the server. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** `redis-server` is not installed: the Redis tests need it. */
export class RedisMissingError extends Error {
  /** Creates the error. */
  constructor(options?: { cause?: unknown }) {
    super(
      `${REDIS_SERVER} not found: the Redis tests need a real server ` +
        "(Debian: apt-get install -y redis-server; deno task test installs it)",
      options,
    );
    this.name = "RedisMissingError";
  }
}

/**
 * Registers a device in the Redis directory at `url` with a cheap hash, through the
 * admin CLI; the password file goes to `dir`. Returns its path.
 */
export async function registerInRedis(
  url: string,
  dir: string,
  id: string,
  type: string,
  attrs: string[] = [],
): Promise<string> {
  const file = `${dir}/${id}.pw`;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(file, `pw-${id}\n`);
  const args = ["add", id, "--type", type, "--password-file", file, "--directory", url];
  args.push("--hash-cost", "4096", ...attrs.flatMap((a) => ["--attr", a]));
  let stderr = "";
  const code = await registryMain(args, { stdout: () => {}, stderr: (t) => stderr += t });
  if (code !== 0) {
    throw new Error(`registry add ${id} --directory ${url} failed (${code}): ${stderr}`);
  }
  return file;
}
