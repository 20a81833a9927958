/**
 * Relay processes for the bench: `deno run -A relay/main.ts --listen 127.0.0.1:0 ...`,
 * with the real address read from its "listening" log line.
 *
 * @module
 */

import { Child } from "./_procs.ts";

/** How to start one relay. */
export interface RelaySpec {
  /** Relay name (`--name`). */
  name: string;
  /** Data folder holding registry.json. */
  dataDir: string;
  /** PEM certificate and key files: serve TLS. */
  tls?: { certFile: string; keyFile: string };
  /** Other relays to dial (`--peer`, only when the relay has a mesh). */
  peers?: string[];
  /** Mesh secret file (`--mesh-secret-file`, only when the relay knows the flag). */
  meshSecretFile?: string;
  /** Keep-alive interval asked of devices (default 30s). */
  keepalive?: string;
  /** `--listen` address (default 127.0.0.1:0). */
  listen?: string;
  /** Log level (default info: the "listening" line is info). */
  logLevel?: "debug" | "info";
  /** Write a V8 CPU profile of the relay into this folder when it stops. */
  cpuProfDir?: string;
  /** More flags, as given (limits, timeouts). */
  flags?: string[];
  /** Tree whose relay/main.ts runs (default this repository; before/after runs). */
  root?: string;
}

/** A running relay process. */
export interface RelayProc extends AsyncDisposable {
  /** The process. */
  readonly child: Child;
  /** `HOST:PORT` it listens on. */
  readonly address: string;
  /** Its name. */
  readonly name: string;
  /** Its data folder (registry.json). */
  readonly dataDir: string;
  /** Its PID (for /proc readings). */
  readonly pid: number;
  /** Stops it with SIGTERM (clean shutdown, CPU profile written), SIGKILL after 10 s. */
  stop(): Promise<void>;
}

/** Starts a relay process and waits until it listens. */
export async function startRelay(spec: RelaySpec): Promise<RelayProc> {
  const args = ["run", "-A"];
  if (spec.cpuProfDir) args.push("--cpu-prof", "--cpu-prof-dir", spec.cpuProfDir);
  args.push(
    "relay/main.ts",
    "--listen",
    spec.listen ?? "127.0.0.1:0",
    "--name",
    spec.name,
    "--data",
    spec.dataDir,
    "--log-format",
    "json",
    "--log-level",
    spec.logLevel ?? "info",
    "--keepalive",
    spec.keepalive ?? "30s",
  );
  if (spec.tls) args.push("--tls-cert", spec.tls.certFile, "--tls-key", spec.tls.keyFile);
  for (const peer of spec.peers ?? []) args.push("--peer", peer);
  if (spec.meshSecretFile) args.push("--mesh-secret-file", spec.meshSecretFile);
  args.push(...spec.flags ?? []);
  // The same allocator setting as `deno task relay` (deno.json): large allocations are
  // mmapped, so memory freed after a burst of logins goes back to the system.
  const child = new Child(args, {
    name: `relay ${spec.name}`,
    env: { MALLOC_MMAP_THRESHOLD_: "131072" },
    cwd: spec.root,
  });
  try {
    const line = await child.waitLog((l) => l.event === "listening", "listening", 30_000);
    const address = String(line.address);
    const stop = async () => {
      await child.stop("SIGTERM", 10_000);
    };
    return {
      child,
      address,
      name: spec.name,
      dataDir: spec.dataDir,
      pid: child.pid,
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (e) {
    await child.stop("SIGKILL");
    throw e;
  }
}

/** What the relay's command line offers, from `relay/main.ts --help`. */
export interface RelayFeatures {
  /** `--peer` exists: the mesh is built, chains and mesh scenarios can run. */
  mesh: boolean;
  /** `--mesh-secret-file` exists and must be given with `--peer`. */
  meshSecret: boolean;
}

/** Reads `relay/main.ts --help` to see which scenarios the relay can serve. */
export async function relayFeatures(): Promise<RelayFeatures> {
  // Deno.Command kills the child by PID when the signal aborts.
  const { stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "relay/main.ts", "--help"],
    cwd: new URL("..", import.meta.url).pathname,
    stdin: "null",
    stderr: "null",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(30_000),
  }).output();
  const help = new TextDecoder().decode(stdout);
  return { mesh: /--peer\b/.test(help), meshSecret: /--mesh-secret-file\b/.test(help) };
}
