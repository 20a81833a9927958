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
import {
  type RelayGroup,
  type RelayProc,
  startGroup,
  startRelay,
  writeMeshSecret,
} from "./helpers.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Where `redis-server` is looked up (`REDIS_SERVER` overrides). */
const REDIS_SERVER = Deno.env.get("REDIS_SERVER") ?? "redis-server";
/** Where `redis-cli` is looked up (`REDIS_CLI` overrides); it creates test clusters. */
const REDIS_CLI = Deno.env.get("REDIS_CLI") ?? "redis-cli";

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
  /** Cluster mode: the folder that holds this node's `nodes.conf`. */
  readonly #clusterDir: string | null;
  #child: Deno.ChildProcess | null = null;
  #pump: Promise<void> | null = null;
  #log: string[] = [];

  private constructor(port: number, clusterDir: string | null = null) {
    this.port = port;
    this.#clusterDir = clusterDir;
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

  /**
   * Starts a server on a free port; tries a few ports if one was taken in between. With
   * `clusterDir`, a node with `--cluster-enabled yes` keeping its `nodes.conf` there.
   */
  static async start(options: { clusterDir?: string } = {}): Promise<RedisServer> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const server = new RedisServer(freePort(), options.clusterDir ?? null);
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
          ...(this.#clusterDir === null ? [] : [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            `${this.#clusterDir}/nodes-${this.port}.conf`,
            "--cluster-node-timeout",
            "2000",
          ]),
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

/**
 * A real 3-node Redis Cluster on loopback ports (masters only, no replicas): nodes
 * started with `--cluster-enabled yes`, slots assigned by `redis-cli --cluster create
 * --cluster-yes`, ready once every node reports `cluster_state:ok`. A few seconds.
 */
export class RedisCluster implements AsyncDisposable {
  /** The nodes, in creation order. */
  readonly nodes: RedisServer[];
  readonly #dir: string;

  private constructor(nodes: RedisServer[], dir: string) {
    this.nodes = nodes;
    this.#dir = dir;
  }

  /** `redis://127.0.0.1:PORT` of the first node: a seed for cluster clients. */
  url(): string {
    return this.nodes[0].url();
  }

  /**
   * Runs one command on the node that owns its key (`args[1]`), following a `-MOVED`
   * answer once; returns the raw reply.
   */
  async raw(...args: string[]): Promise<string> {
    const reply = await this.nodes[0].raw(...args);
    const moved = reply.match(/^-MOVED \d+ [^:]+:(\d+)/);
    if (moved === null) return reply;
    const node = this.nodes.find((n) => n.port === Number(moved[1]));
    if (node === undefined) throw new Error(`MOVED to an unknown node: ${reply}`);
    return await node.raw(...args);
  }

  /** Starts three nodes and makes them one cluster. */
  static async start(): Promise<RedisCluster> {
    const dir = await Deno.makeTempDir({ prefix: "tsunagi-redis-cluster-" });
    const nodes: RedisServer[] = [];
    const cluster = new RedisCluster(nodes, dir);
    try {
      for (let i = 0; i < 3; i++) nodes.push(await RedisServer.start({ clusterDir: dir }));
      const cli = await new Deno.Command(REDIS_CLI, {
        args: [
          "--cluster",
          "create",
          ...nodes.map((n) => `127.0.0.1:${n.port}`),
          "--cluster-yes",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!cli.success) {
        throw new Error(
          `redis-cli --cluster create failed (${cli.code}): ${decoder.decode(cli.stderr)}`,
        );
      }
      await cluster.#waitOk(15_000);
      return cluster;
    } catch (e) {
      await cluster[Symbol.asyncDispose]();
      throw e;
    }
  }

  /** Waits until every node says `cluster_state:ok`, polling with a deadline. */
  async #waitOk(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const states = await Promise.all(this.nodes.map((n) => n.raw("CLUSTER", "INFO")));
      if (states.every((s) => s.includes("cluster_state:ok"))) return;
      if (performance.now() > deadline) {
        throw new Error(`Redis Cluster not ok within ${timeoutMs} ms: ${states.join(" | ")}`);
      }
      const { promise, resolve } = Promise.withResolvers<void>();
      setTimeout(resolve, 50);
      await promise;
    }
  }

  /** Kills every node and removes their files. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
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
  args.push(...attrs.flatMap((a) => ["--attr", a]));
  let stderr = "";
  const code = await registryMain(args, { stdout: () => {}, stderr: (t) => stderr += t });
  if (code !== 0) {
    throw new Error(`registry add ${id} --directory ${url} failed (${code}): ${stderr}`);
  }
  return file;
}

/**
 * Starts relays r1..rN on the Redis directory at `server.url()` (liveness TTL `ttl`),
 * linked for session forwarding by a shared secret written to `root`.
 */
export async function startRedisRelays(
  root: string,
  server: { url(): string },
  count: number,
  ttl = "1s",
): Promise<RelayGroup> {
  const secret = await writeMeshSecret(root);
  return await startGroup(count, (i): Promise<RelayProc> => {
    const name = `r${i + 1}`;
    return startRelay(`${root}/${name}`, [
      "--name",
      name,
      "--directory",
      server.url(),
      "--directory-ttl",
      ttl,
      "--mesh-secret-file",
      secret,
    ]);
  });
}
