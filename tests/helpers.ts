/**
 * Test harness: real relay and agent processes on loopback, their JSON log lines, and
 * waits with deadlines (never sleeps).
 *
 * @module
 */

import { registryMain } from "../relay/registry/main.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

/** One parsed JSON log line. */
export type LogLine = Record<string, unknown> & { event?: string };

/** A spawned process whose stderr JSON log lines (and stdout) are collected. */
export class Proc implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly lines: LogLine[] = [];
  readonly rawStderr: string[] = [];
  stdout = "";
  readonly #waiters = new Set<() => void>();
  readonly #pumps: Promise<void>[];
  readonly status: Promise<Deno.CommandStatus>;

  constructor(
    args: string[],
    options: { cwd?: string; env?: Record<string, string>; command?: string } = {},
  ) {
    this.child = new Deno.Command(options.command ?? Deno.execPath(), {
      args,
      cwd: options.cwd ?? ROOT,
      env: { NO_COLOR: "1", ...options.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#pumps = [
      this.#pump(this.child.stderr, (line) => {
        this.rawStderr.push(line);
        try {
          const v = JSON.parse(line);
          if (typeof v === "object" && v !== null) this.lines.push(v);
        } catch {
          // not a log line
        }
      }),
      this.#pump(this.child.stdout, (line) => {
        this.stdout += line + "\n";
      }),
    ];
    this.status = this.child.status;
    this.status.finally(() => this.#notify());
  }

  get pid(): number {
    return this.child.pid;
  }

  async #pump(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
    let buf = "";
    for await (const chunk of stream) {
      buf += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      this.#notify();
    }
    if (buf) onLine(buf);
    this.#notify();
  }

  #notify() {
    for (const w of this.#waiters) w();
  }

  /** Waits until `condition` holds, re-checking on every output or exit; bounded by a deadline. */
  async waitUntil(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Timed out after ${timeoutMs} ms waiting for ${what}; stderr:\n${
            this.rawStderr.slice(-30).join("\n")
          }`,
        );
      }
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = setTimeout(resolve, left);
      this.#waiters.add(resolve);
      await promise;
      clearTimeout(timer);
      this.#waiters.delete(resolve);
    }
  }

  /** Waits until `predicate` matches a log line (past or future); returns it. */
  async waitFor(
    predicate: (line: LogLine) => boolean,
    what: string,
    timeoutMs = 15_000,
  ): Promise<LogLine> {
    let seen = 0;
    let found: LogLine | undefined;
    await this.waitUntil(
      () => {
        for (; seen < this.lines.length && found === undefined; seen++) {
          if (predicate(this.lines[seen])) found = this.lines[seen];
        }
        return found !== undefined;
      },
      what,
      timeoutMs,
    );
    return found!;
  }

  /** Waits for the `n`-th (1-based) line matching `predicate`. */
  async waitForCount(
    predicate: (line: LogLine) => boolean,
    n: number,
    what: string,
    timeoutMs = 30_000,
  ): Promise<void> {
    let count = 0;
    let seen = 0;
    await this.waitFor(
      () => {
        for (; seen < this.lines.length; seen++) if (predicate(this.lines[seen])) count++;
        return count >= n;
      },
      `${n} × ${what}`,
      timeoutMs,
    );
  }

  /** Counts log lines matching `predicate` so far. */
  count(predicate: (line: LogLine) => boolean): number {
    return this.lines.filter(predicate).length;
  }

  /** Sends a signal if still running. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch {
      // already exited
    }
  }

  /** Waits for exit; returns the status. */
  async wait(timeoutMs = 30_000): Promise<Deno.CommandStatus> {
    const timer = setTimeout(() => this.kill("SIGKILL"), timeoutMs);
    try {
      const s = await this.status;
      await Promise.all(this.#pumps);
      return s;
    } finally {
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.wait();
  }
}

/** Matches a log line by event name (and optional fields). */
export function event(name: string, fields: Record<string, unknown> = {}) {
  return (line: LogLine) =>
    line.event === name && Object.entries(fields).every(([k, v]) => line[k] === v);
}

/** A temporary folder removed on dispose. */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "tsunagi-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Registers a device in `dataDir` with a cheap hash; returns the password file path. */
export async function register(
  dataDir: string,
  id: string,
  type: string,
  attrs: string[] = [],
  password = `pw-${id}`,
): Promise<string> {
  const file = `${dataDir}/${id}.pw`;
  await Deno.mkdir(dataDir, { recursive: true });
  await Deno.writeTextFile(file, password + "\n");
  const args = [
    "add",
    id,
    "--type",
    type,
    "--password-file",
    file,
    "--data",
    dataDir,
  ];
  for (const a of attrs) args.push("--attr", a);
  const code = await registryMain(args, { stdout: () => {}, stderr: () => {} });
  if (code !== 0) throw new Error(`registry add ${id} failed with ${code}`);
  return file;
}

/** A relay process listening on a free port. */
export interface RelayProc extends AsyncDisposable {
  proc: Proc;
  address: string;
  port: number;
  name: string;
}

/** How {@link startRelay} runs the relay process. */
export interface StartRelayOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Run under `bash -c 'ulimit -n N; exec deno ...'` (same PID): at most N open files. */
  openFiles?: number;
  /** `--log-level` (default debug). */
  logLevel?: "debug" | "info" | "warn" | "error";
}

/** Starts `deno run relay/main.ts` on 127.0.0.1:0 (or `listen`) and waits until it listens. */
export async function startRelay(
  dataDir: string,
  extra: string[] = [],
  listen = "127.0.0.1:0",
  options: StartRelayOptions = {},
): Promise<RelayProc> {
  const args = [
    "run",
    "-A",
    "relay/main.ts",
    "--listen",
    listen,
    "--data",
    dataDir,
    "--log-format",
    "json",
    "--log-level",
    options.logLevel ?? "debug",
    ...extra,
  ];
  const proc = options.openFiles === undefined ? new Proc(args, { env: options.env }) : new Proc(
    ["-c", `ulimit -n ${options.openFiles} && exec "$0" "$@"`, Deno.execPath(), ...args],
    { env: options.env, command: "bash" },
  );
  const line = await proc.waitFor(event("listening"), "relay to listen");
  const address = String(line.address);
  return {
    proc,
    address,
    port: Number(address.split(":").pop()),
    name: String(line.name),
    [Symbol.asyncDispose]: () => proc[Symbol.asyncDispose](),
  };
}

/** Common agent flags for a device. */
export function deviceFlags(relay: string | string[], id: string, passwordFile: string): string[] {
  const relays = Array.isArray(relay) ? relay : [relay];
  return [
    ...relays.flatMap((r) => ["--relay", r]),
    "--id",
    id,
    "--password-file",
    passwordFile,
    "--log-format",
    "json",
  ];
}

/** Starts `tsunagi run` and waits until it logged in. */
export async function startAgent(
  relay: string | string[],
  id: string,
  passwordFile: string,
  extra: string[] = [],
  entry = "agent/main.ts",
): Promise<Proc> {
  const proc = new Proc([
    "run",
    "-A",
    entry,
    "run",
    ...deviceFlags(relay, id, passwordFile),
    ...extra,
  ]);
  await proc.waitFor(event("logged in"), `agent ${id} to log in`);
  return proc;
}

/** Runs a one-shot agent command to completion. */
export async function agentCommand(
  args: string[],
  entry = "agent/main.ts",
  timeoutMs = 120_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = new Proc(["run", "-A", entry, ...args]);
  const status = await proc.wait(timeoutMs);
  return { code: status.code, stdout: proc.stdout, stderr: proc.rawStderr.join("\n") };
}

/** Writes `size` pseudo-random bytes to `path` (fast, deterministic per seed). */
export async function writeRandomFile(path: string, size: number, seed = 1): Promise<void> {
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(1 << 20);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < chunk.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    chunk[i] = x & 0xff;
    chunk[i + 1] = (x >>> 8) & 0xff;
    chunk[i + 2] = (x >>> 16) & 0xff;
    chunk[i + 3] = (x >>> 24) & 0xff;
  }
  let left = size;
  let round = 0;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    chunk[0] = round++ & 0xff; // vary each MiB a little
    chunk[1] = (round >>> 8) & 0xff;
    let off = 0;
    while (off < n) off += await file.write(chunk.subarray(off, n));
    left -= n;
  }
}

/** SHA-256 of a file, hex. */
export async function sha256File(path: string): Promise<string> {
  const { createHash } = await import("node:crypto");
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
  }
  return hash.digest("hex");
}

/** Names of the regular files in `dir` (not hidden folders' contents). */
export async function listFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isFile) names.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return names.sort();
}

/** A group of relay processes stopped together on dispose. */
export type RelayGroup = RelayProc[] & AsyncDisposable;

/** Writes the shared mesh/link secret used by test relays; returns its path. */
export async function writeMeshSecret(root: string): Promise<string> {
  const secret = `${root}/mesh.secret`;
  await Deno.writeTextFile(secret, "0123456789abcdef0123456789abcdef\n");
  return secret;
}

/**
 * Starts `count` relays one after the other with `start(i, started)`; if one fails to
 * start, the ones already running are stopped before the error is rethrown.
 */
export async function startGroup(
  count: number,
  start: (i: number, started: RelayProc[]) => Promise<RelayProc>,
): Promise<RelayGroup> {
  const relays: RelayProc[] = [];
  const group = Object.assign(relays, {
    async [Symbol.asyncDispose]() {
      await Promise.all(relays.map((r) => r.proc[Symbol.asyncDispose]()));
    },
  });
  try {
    for (let i = 0; i < count; i++) relays.push(await start(i, relays));
  } catch (e) {
    await group[Symbol.asyncDispose]();
    throw e;
  }
  return group;
}

/**
 * Command-line flags of mesh relay `name` in `root` (data `<root>/<name>`, secret
 * `<root>/mesh.secret`, fast heartbeats for tests) dialing `peers`.
 */
export function meshRelayFlags(root: string, name: string, peers: string[]): string[] {
  return [
    "--name",
    name,
    "--mesh-secret-file",
    `${root}/mesh.secret`,
    "--mesh-heartbeat",
    "300ms",
    "--mesh-timeout",
    "2s",
    ...peers.flatMap((p) => ["--peer", p]),
  ];
}

/** Starts relays linked by `edges` (pairs of indexes; the later one dials the earlier). */
export async function startMesh(
  root: string,
  count: number,
  edges: [number, number][],
  extra: (i: number) => string[] = () => [],
): Promise<RelayGroup> {
  await writeMeshSecret(root);
  const group = await startGroup(count, (i, started) => {
    const peers = edges.filter(([a, b]) => Math.max(a, b) === i).map(([a, b]) =>
      started[Math.min(a, b)].address
    );
    return startRelay(`${root}/r${i}`, [...meshRelayFlags(root, `r${i}`, peers), ...extra(i)]);
  });
  try {
    // Every link up on both ends.
    for (let i = 0; i < count; i++) {
      const degree = edges.filter(([a, b]) => a === i || b === i).length;
      await group[i].proc.waitForCount(event("neighbour up"), degree, `r${i} links`);
    }
  } catch (e) {
    await group[Symbol.asyncDispose]();
    throw e;
  }
  return group;
}

/** Waits until relay `r` (not the one registered at) has learnt the registration of `id`. */
export async function waitRegistration(r: RelayProc, id: string): Promise<void> {
  await r.proc.waitFor(
    (l) => l.event === "notice" && l.t === "reg" && l.key === id && l.action === "applied",
    `${r.name} to learn registration ${id}`,
  );
}

/** Waits until `r` logged a device notice for `id` from `origin` with `state`. */
export async function waitPresence(
  r: RelayProc,
  id: string,
  origin: string,
  state: number,
): Promise<void> {
  await r.proc.waitFor(
    (l) =>
      l.event === "notice" && l.t === "dev" && l.key === id && l.origin === origin &&
      l.state === state && l.action === "applied",
    `${r.name} to learn ${id}@${origin} state ${state}`,
  );
}

/**
 * Re-evaluates `check` every `intervalMs` until it returns something other than
 * `undefined`, and returns that; throws once `timeoutMs` has passed (or `signal` aborts).
 * For conditions that no log line announces: a bounded poll, never an open-ended sleep.
 */
export async function pollUntil<T>(
  check: () => T | undefined | Promise<T | undefined>,
  what: string,
  options: { timeoutMs?: number; intervalMs?: number; signal?: AbortSignal } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 15_000;
  const signal = AbortSignal.any([
    ...(options.signal ? [options.signal] : []),
    AbortSignal.timeout(timeoutMs),
  ]);
  let last: unknown = undefined;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (e) {
      last = e;
    }
    if (signal.aborted) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`, { cause: last });
    }
    const { promise, resolve } = Promise.withResolvers<void>();
    const timer = setTimeout(resolve, options.intervalMs ?? 50);
    const onAbort = () => resolve();
    signal.addEventListener("abort", onAbort, { once: true });
    await promise;
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
  }
}
