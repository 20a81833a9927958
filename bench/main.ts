/**
 * `deno task bench [--quick]`: measures tsunagi's data path, session setup, concurrency,
 * idle capacity, mesh convergence and TLS, what peers can make the relay hold
 * (unauthenticated connections, idle sessions), aborted senders against `tsunagi run`,
 * and reachability after a NAT loses its state, with relays, agents and load generators as
 * separate processes on 127.0.0.1, each figure next to a baseline from the same run.
 * Writes `bench/results/<date>.json` and `.md` and prints the markdown. See
 * `bench/README.md` for what each figure means.
 *
 * Targets are reported, never asserted: the exit code is 0 unless a scenario crashed.
 *
 * @module
 */

import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { runBulk, runConcurrency } from "./_bulk.ts";
import { relayChain } from "./_bulk.ts";
import {
  type BenchConfig,
  type BenchContext,
  benchRelay,
  FULL,
  QUICK,
  stopAll,
} from "./_context.ts";
import { runAborts } from "./_aborts.ts";
import { runSessions, runUnauth } from "./_hold.ts";
import { runIdle } from "./_idle.ts";
import { renderLogin, runLogin } from "./_login.ts";
import { runMesh } from "./_mesh.ts";
import { runMeshScale } from "./_mesh_scale.ts";
import { runNat } from "./_nat.ts";
import { killAll, livePids } from "./_procs.ts";
import { relayFeatures, type RelayProc } from "./_relay.ts";
import {
  type BenchResults,
  checkTargets,
  type MachineInfo,
  renderMarkdown,
  tlsSummary,
} from "./_report.ts";
import { runSetup } from "./_setup.ts";
import { round } from "./_stats.ts";
import { Workspace } from "./_workspace.ts";
import { runTunnelBench, tunnelMarkdown } from "./tunnel.ts";

const SCENARIOS = [
  "bulk",
  "concurrency",
  "setup",
  "idle",
  "mesh",
  "meshscale",
  "unauth",
  "sessions",
  "aborts",
  "nat",
  "login",
  "tunnel",
] as const;
type Scenario = typeof SCENARIOS[number];

const HELP = `tsunagi bench: data path, session setup, idle capacity, mesh, TLS, memory held per
unauthenticated connection and per session, aborted senders, NAT state loss, logins.

Usage: deno task bench [options]

Options:
  --quick          smoke run for CI (under a minute, small sizes); writes no files
                   unless --out is given
  --only LIST      run only these scenarios (comma-separated: ${SCENARIOS.join(",")})
  --out DIR        write <name>.json and <name>.md here (default bench/results for a
                   full run)
  --name NAME      file name (default: the date, and for --only the date and the
                   scenarios, e.g. 2026-11-30-meshscale, so a partial run never
                   overwrites a full one)
  --cpu-prof DIR   relays write V8 CPU profiles (.cpuprofile) into DIR when they stop
  -h, --help       show this help

Exit codes: 0 finished (targets met or not), 1 a scenario crashed, 2 bad options.`;

const decoder = new TextDecoder();

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout, success } = await new Deno.Command(cmd, {
      args,
      stdin: "null",
      stderr: "null",
      signal: AbortSignal.timeout(10_000),
    }).output();
    return success ? decoder.decode(stdout).trim() : "";
  } catch {
    return "";
  }
}

async function machineInfo(): Promise<MachineInfo> {
  const list = cpus();
  return {
    cpus: list.length,
    cpuModel: list[0]?.model.trim() ?? "unknown",
    memoryGiB: round(Deno.systemMemoryInfo().total / 1024 ** 3, 1),
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    fdLimit: await run("sh", ["-c", "ulimit -n"]),
    loadAvgStart: Deno.loadavg().map((x) => round(x, 2)),
  };
}

function today(): string {
  const d = new Date();
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** Parses options, runs the scenarios, writes and prints the results. Returns the exit code. */
export async function benchMain(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        quick: { type: "boolean" },
        only: { type: "string" },
        out: { type: "string" },
        name: { type: "string" },
        "cpu-prof": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`tsunagi-bench: ${e instanceof Error ? e.message : e}\nhint: see --help`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const only = new Set((values.only ?? SCENARIOS.join(",")).split(",").map((s) => s.trim()));
  for (const s of only) {
    if (!(SCENARIOS as readonly string[]).includes(s)) {
      console.error(`tsunagi-bench: unknown scenario "${s}"\nhint: use ${SCENARIOS.join(", ")}`);
      return 2;
    }
  }
  const config: BenchConfig = values.quick ? QUICK : FULL;
  const outDir = values.out ??
    (values.quick ? undefined : new URL("results", import.meta.url).pathname);
  const cpuProfDir = values["cpu-prof"];
  if (cpuProfDir) await Deno.mkdir(cpuProfDir, { recursive: true });

  const startedAt = new Date();
  const t0 = performance.now();
  const progress = (message: string) => {
    const s = ((performance.now() - t0) / 1000).toFixed(1).padStart(6);
    console.error(`bench ${s}s  ${message}`);
  };
  // A stuck scenario must not hang CI: past the deadline every child is killed by PID.
  const onSignal = () => {
    void killAll().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const deadline = setTimeout(() => {
    console.error(`tsunagi-bench: over the ${config.deadlineMs / 1000} s limit; stopping`);
    void killAll().finally(() => Deno.exit(1));
  }, config.deadlineMs);

  const results: BenchResults = {
    format: 1,
    date: today(),
    startedAt: startedAt.toISOString(),
    durationS: 0,
    mode: config.quick ? "quick" : "full",
    commit: await run("git", ["rev-parse", "HEAD"]) || "unknown",
    // Uncommitted changes to the code under test (not to the bench's own files).
    dirty: (await run("git", [
      "status",
      "--porcelain",
      "--untracked-files=no",
      "--",
      "relay",
      "agent",
      "shared",
    ])) !== "",
    machine: await machineInfo(),
    relay: { mesh: false },
    errors: [],
    targets: [],
  };
  const wanted = (s: Scenario) => only.has(s);
  const attempt = async <T>(name: Scenario, fn: () => Promise<T>): Promise<T | undefined> => {
    if (!wanted(name)) return undefined;
    try {
      return await fn();
    } catch (e) {
      const error = e instanceof Error ? (e.stack ?? e.message) : String(e);
      progress(`${name} FAILED: ${e instanceof Error ? e.message : error}`);
      results.errors.push({ scenario: name, error });
      return undefined;
    }
  };

  await using workspace = await Workspace.create(wanted("idle") ? config.idleDevices : 0);
  try {
    const features = await relayFeatures();
    results.relay.mesh = features.mesh;
    const ctx: BenchContext = { config, workspace, features, cpuProfDir, progress };
    progress(
      `${config.quick ? "quick" : "full"} run; relay mesh ${features.mesh ? "present" : "absent"}`,
    );
    if (wanted("bulk") || wanted("concurrency") || wanted("setup")) {
      const tls = await workspace.tls();
      let relay: RelayProc | undefined;
      let tlsRelay: RelayProc | undefined;
      let chain2: RelayProc[] = [];
      try {
        // Sequential setups run faster than a device may request by default
        // (--connect-rate): the scenario measures setup latency, not that limit.
        const flags = ["--connect-rate", "0"];
        relay = await benchRelay(ctx, "r1", { flags });
        tlsRelay = await benchRelay(ctx, "r1-tls", { tls: true, flags });
        const [plain, secure] = [relay, tlsRelay];
        results.bulk = await attempt("bulk", () => runBulk(ctx, plain, secure, tls.caFile));
        results.concurrency = await attempt("concurrency", () => runConcurrency(ctx, plain));
        results.setup = await attempt("setup", async () => {
          if (features.mesh) chain2 = await relayChain(ctx, 2, "setup-chain2", { flags });
          return await runSetup(ctx, plain, secure, tls.caFile, features.mesh ? chain2 : null);
        });
      } catch (e) {
        results.errors.push({ scenario: "relays", error: String(e) });
      } finally {
        await stopAll(relay, tlsRelay, ...chain2);
      }
    }
    results.idle = await attempt("idle", () => runIdle(ctx));
    results.mesh = await attempt("mesh", () => runMesh(ctx));
    results.meshScale = await attempt("meshscale", () => runMeshScale(ctx));
    results.unauth = await attempt("unauth", () => runUnauth(ctx));
    results.sessions = await attempt("sessions", () => runSessions(ctx));
    results.aborts = await attempt("aborts", () => runAborts(ctx));
    results.nat = await attempt("nat", () => runNat(ctx));
    results.login = await attempt("login", () => runLogin(ctx));
    results.tunnel = await attempt("tunnel", () => runTunnelBench({ quick: config.quick }));
  } finally {
    await killAll();
    clearTimeout(deadline);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  results.machine.loadAvgEnd = Deno.loadavg().map((x) => round(x, 2));
  results.durationS = round((performance.now() - t0) / 1000, 1);
  results.tls = tlsSummary(results);
  results.targets = checkTargets(results);
  const markdown = renderMarkdown(results) +
    (results.login ? `\n${renderLogin(results.login)}` : "") +
    (results.tunnel
      ? "\n## Tunnels: forward + run --expose vs two plain sockets (and three plain proxies in a row)\n\n" +
        tunnelMarkdown([{ label: "this tree", r: results.tunnel }])
      : "");
  console.log(markdown);
  if (outDir) {
    await Deno.mkdir(outDir, { recursive: true });
    const partial = values.only === undefined ? "" : `-${[...only].join("+")}`;
    const base = join(outDir, values.name ?? `${results.date}${partial}`);
    await Deno.writeTextFile(`${base}.json`, JSON.stringify(results, null, 2) + "\n");
    await Deno.writeTextFile(`${base}.md`, markdown);
    progress(`wrote ${base}.json and ${base}.md`);
  }
  const left = livePids();
  if (left.length) progress(`warning: children still running: ${left.join(", ")}`);
  return results.errors.length ? 1 : 0;
}

if (import.meta.main) Deno.exit(await benchMain(Deno.args));
