/**
 * Child processes of the bench: relays and load generators, each a separate `deno run`
 * process on loopback. Every child is tracked from spawn to exit so that `killAll()` can
 * end whatever is left by PID (finally blocks, signals, the global deadline).
 *
 * Relays log JSON lines on stderr; load generators print JSON event lines on stdout and
 * take commands as lines on stdin (they exit when their stdin closes, so a dead bench
 * leaves no load generator behind).
 *
 * @module
 */

const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** One parsed JSON line from a child. */
export type JsonLine = Record<string, unknown> & { event?: string };

const live = new Set<Child>();

/** Options for {@link Child}. */
export interface ChildOptions {
  /** Label for error messages. */
  name: string;
  /** Give the child a stdin pipe for commands (load generators). */
  stdin?: boolean;
  /** Keep at most this many parsed stderr log lines (oldest dropped). */
  maxLogLines?: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory (default the repository root; another tree for before/after runs). */
  cwd?: string;
}

/** A spawned `deno` process with its JSON output lines and a command pipe. */
export class Child implements AsyncDisposable {
  /** Label for messages. */
  readonly name: string;
  /** The process. */
  readonly process: Deno.ChildProcess;
  /** JSON lines printed on stdout (load generators' events). */
  readonly events: JsonLine[] = [];
  /** JSON lines printed on stderr (relay logs). */
  readonly logs: JsonLine[] = [];
  /** Last raw stderr lines, for error messages. */
  readonly stderrTail: string[] = [];
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  #exited = false;
  readonly #maxLogLines: number;
  readonly #waiters = new Set<() => void>();
  readonly #pumps: Promise<void>[];
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array> | null;

  /** Spawns `deno <args>` in the repository root (or `options.cwd`). */
  constructor(args: string[], options: ChildOptions) {
    this.name = options.name;
    this.#maxLogLines = options.maxLogLines ?? 200_000;
    this.process = new Deno.Command(Deno.execPath(), {
      args,
      cwd: options.cwd ?? ROOT,
      env: { NO_COLOR: "1", ...options.env },
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    live.add(this);
    this.#stdin = options.stdin ? this.process.stdin.getWriter() : null;
    this.#pumps = [
      pumpLines(this.process.stdout, (line) => {
        const v = parseJson(line);
        if (v !== null) this.events.push(v);
        this.#notify();
      }),
      pumpLines(this.process.stderr, (line) => {
        this.stderrTail.push(line);
        if (this.stderrTail.length > 40) this.stderrTail.shift();
        const v = parseJson(line);
        if (v !== null) {
          this.logs.push(v);
          if (this.logs.length > this.#maxLogLines) this.logs.shift();
        }
        this.#notify();
      }),
    ];
    this.status = this.process.status.finally(() => {
      this.#exited = true;
      live.delete(this);
      this.#notify();
    });
  }

  /** The child's process ID. */
  get pid(): number {
    return this.process.pid;
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  #notify() {
    for (const w of this.#waiters) w();
  }

  /** Sends one command line to the child's stdin. */
  async send(line: string): Promise<void> {
    if (this.#stdin === null) throw new Error(`${this.name} has no command pipe`);
    await this.#stdin.write(encoder.encode(line + "\n"));
  }

  /** Closes the command pipe: a load generator exits when it sees this. */
  async closeStdin(): Promise<void> {
    try {
      await this.#stdin?.close();
    } catch {
      // Already closed (the child exited).
    }
  }

  /**
   * Waits until `condition` holds, re-checking on every line and on exit. Throws after
   * `timeoutMs`, or when the child exits first (with its last stderr lines).
   */
  async waitUntil<T>(condition: () => T | undefined, what: string, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = condition();
      if (value !== undefined) return value;
      if (this.#exited) {
        const { code } = await this.status;
        await Promise.allSettled(this.#pumps);
        throw new Error(
          `${this.name} exited (code ${code}) while waiting for ${what}:\n  ${
            this.stderrTail.slice(-12).join("\n  ")
          }`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Timed out after ${timeoutMs} ms waiting for ${this.name}: ${what}:\n  ${
            this.stderrTail.slice(-12).join("\n  ")
          }`,
        );
      }
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = setTimeout(resolve, left);
      this.#waiters.add(resolve);
      try {
        await promise;
      } finally {
        clearTimeout(timer);
        this.#waiters.delete(resolve);
      }
    }
  }

  /** Waits for the first stdout event named `event` after index `from`; returns it. */
  waitEvent(event: string, timeoutMs: number, from = 0): Promise<JsonLine> {
    return this.waitUntil(
      () => {
        for (let i = from; i < this.events.length; i++) {
          if (this.events[i].event === event) return this.events[i];
        }
        return undefined;
      },
      `event "${event}"`,
      timeoutMs,
    );
  }

  /** Waits for the first stderr log line matching `predicate`; returns it. */
  waitLog(predicate: (line: JsonLine) => boolean, what: string, timeoutMs: number) {
    return this.waitUntil(() => this.logs.find(predicate), what, timeoutMs);
  }

  /**
   * Stops the child by PID: `signal` first (SIGTERM lets a relay shut down and write a
   * CPU profile), SIGKILL if it has not exited after `graceMs`.
   */
  async stop(signal: Deno.Signal = "SIGKILL", graceMs = 5_000): Promise<Deno.CommandStatus> {
    if (!this.#exited) {
      try {
        this.process.kill(signal);
      } catch {
        // Exited in between.
      }
    }
    const timer = setTimeout(() => {
      try {
        this.process.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, graceMs);
    try {
      const status = await this.status;
      await this.closeStdin();
      await Promise.allSettled(this.#pumps);
      return status;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL and reap. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}

/** Kills every child still running (SIGKILL by PID) and waits for them. */
export async function killAll(): Promise<void> {
  await Promise.allSettled([...live].map((c) => c.stop("SIGKILL", 2_000)));
}

/** PIDs of the children still running. */
export function livePids(): number[] {
  return [...live].map((c) => c.pid);
}

async function pumpLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
  let buf = "";
  try {
    for await (const chunk of stream) {
      buf += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  } catch {
    // The pipe broke when the child was killed.
  }
  if (buf) onLine(buf);
}

function parseJson(line: string): JsonLine | null {
  if (!line.startsWith("{")) return null;
  try {
    const v = JSON.parse(line);
    return typeof v === "object" && v !== null ? v : null;
  } catch {
    return null;
  }
}

// ---- /proc readings ---------------------------------------------------------------------

let clockTicks: number | undefined;

async function ticksPerSecond(): Promise<number> {
  if (clockTicks !== undefined) return clockTicks;
  try {
    const { stdout } = await new Deno.Command("getconf", { args: ["CLK_TCK"], stderr: "null" })
      .output();
    const n = Number(decoder.decode(stdout).trim());
    clockTicks = Number.isFinite(n) && n > 0 ? n : 100;
  } catch {
    clockTicks = 100;
  }
  return clockTicks;
}

/** CPU time (user + system, all threads) a process has used so far, in seconds. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Field 2 (comm) may contain spaces: count from after its closing parenthesis.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return (utime + stime) / (await ticksPerSecond());
}

/** Resident set size of a process (VmRSS), in KiB. */
export async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`No VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

/** Number of open file descriptors of a process. */
export async function fdCount(pid: number): Promise<number> {
  let n = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) n++;
  return n;
}

/**
 * CPU time of each live thread of a process so far, ns, from `/proc/PID/task/TID/schedstat`:
 * finer than {@link cpuSeconds}' clock ticks (10 ms), for short measurements. A thread that
 * exits takes its time with it; {@link threadCpuSince} counts only what is still there.
 */
export async function threadCpuNs(pid: number): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for await (const entry of Deno.readDir(`/proc/${pid}/task`)) {
    try {
      const text = await Deno.readTextFile(`/proc/${pid}/task/${entry.name}/schedstat`);
      out.set(Number(entry.name), Number(text.split(" ")[0]));
    } catch {
      // The thread exited meanwhile.
    }
  }
  return out;
}

/** CPU seconds the threads of `pid` used since `before` (from {@link threadCpuNs}). */
export async function threadCpuSince(pid: number, before: Map<number, number>): Promise<number> {
  let ns = 0;
  for (const [tid, now] of await threadCpuNs(pid)) ns += now - (before.get(tid) ?? 0);
  return ns / 1e9;
}
