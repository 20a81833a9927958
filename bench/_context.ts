/**
 * What every scenario gets: the run's sizes (full or quick), the workspace, what the
 * relay supports, and a way to start load generators and relays.
 *
 * @module
 */

import { GiB, MiB } from "./_stats.ts";
import { Child } from "./_procs.ts";
import type { LoadOptions } from "./_load_types.ts";
import { type RelayFeatures, type RelayProc, type RelaySpec, startRelay } from "./_relay.ts";
import type { Workspace } from "./_workspace.ts";

/** Sizes of one run. */
export interface BenchConfig {
  /** True for the CI smoke run. */
  quick: boolean;
  /** Bytes of the single bulk session. */
  bulkBytes: number;
  /** Trials per bulk variant (interleaved; the median counts). */
  bulkTrials: number;
  /** Concurrent sessions in the concurrency scenario. */
  concSessions: number;
  /** Bytes per concurrent session. */
  concBytes: number;
  /** Trials per concurrency variant. */
  concTrials: number;
  /** Timed sequential setups per variant. */
  setupCount: number;
  /** ... run in this many blocks, the variants taking turns. */
  setupBlocks: number;
  /** Untimed setups first (JIT warm-up of relay and load generators). */
  setupWarmup: number;
  /** Rounds of simultaneous setups (two setups per round). */
  simultaneousRounds: number;
  /** Idle devices (each holds `idlePerDevice` connections). */
  idleDevices: number;
  /** Idle connections per device. */
  idlePerDevice: number;
  /** Load-generator processes holding the idle connections. */
  idleLoadGens: number;
  /** Logins in flight per idle load generator. */
  idleConcurrency: number;
  /** How long the idle connections are held (and measured) after login. */
  idleHoldMs: number;
  /** Keep-alive period of idle connections (the relay is told the same). */
  keepaliveMs: number;
  /** Login/logout rounds per mesh topology. */
  meshRounds: number;
  /** Relays in the mesh scenario. */
  meshRelays: number;
  /** The mesh at scale (scenario meshscale). */
  meshScale: MeshScaleConfig;
  /** Connections holding a partial pre-login frame (unauth scenario). */
  unauthConns: number;
  /** Session pairs held open (sessions scenario). */
  sessionPairs: number;
  /** How long the unauth and sessions scenarios hold each phase (RSS sampled each second). */
  holdMs: number;
  /** How long RSS is watched after the held connections closed. */
  afterMs: number;
  /** Sessions aborted at a random byte offset (aborts scenario). */
  abortSessions: number;
  /** Aborted sessions in flight at once (the receiving agent keeps as many idle connections). */
  abortConcurrency: number;
  /** NAT freezes (nat scenario), each with a send started right after it. */
  natRounds: number;
  /** Hard limit for the whole run. */
  deadlineMs: number;
}

/** The full run (`deno task bench`): about 5 minutes on 2 cores. */
export const FULL: BenchConfig = {
  quick: false,
  bulkBytes: GiB,
  bulkTrials: 3,
  concSessions: 64,
  concBytes: 16 * MiB,
  concTrials: 2,
  setupCount: 1000,
  setupBlocks: 5,
  setupWarmup: 100,
  simultaneousRounds: 300,
  idleDevices: 5000,
  idlePerDevice: 2,
  idleLoadGens: 4,
  idleConcurrency: 16,
  idleHoldMs: 35_000,
  keepaliveMs: 30_000,
  meshRounds: 20,
  meshRelays: 8,
  meshScale: {
    // The issue asks for 16 relays with 100,000 registered and 20,000 online. On 2 cores
    // that does not run: every relay holding 100,000 registrations spends 25-80% of a core
    // while idle (its registry poll, see docs/mesh.md), so 16 of them starve each other and
    // the logins (bench/README.md, 5b). Hence the 16-relay mesh with 10,000 and the
    // 100,000-registration catch-up in a 4-relay mesh.
    meshes: [
      { relays: 16, registered: 10_000, online: 2_000 },
      { relays: 4, registered: 100_000, online: 2_000 },
    ],
    rounds: 20,
    steadyMs: 30_000,
    livenessRelays: [16, 64],
    livenessWindowMs: 30_000,
    livenessSettleMs: 5_000,
  },
  unauthConns: 5000,
  sessionPairs: 1000,
  holdMs: 10_000,
  afterMs: 20_000,
  abortSessions: 1000,
  abortConcurrency: 4,
  natRounds: 3,
  deadlineMs: 30 * 60_000,
};

/** The smoke run (`deno task bench --quick`): under a minute, for CI. */
export const QUICK: BenchConfig = {
  quick: true,
  bulkBytes: 64 * MiB,
  bulkTrials: 1,
  concSessions: 8,
  concBytes: 4 * MiB,
  concTrials: 1,
  setupCount: 50,
  setupBlocks: 1,
  setupWarmup: 10,
  simultaneousRounds: 25,
  idleDevices: 200,
  idlePerDevice: 2,
  idleLoadGens: 2,
  idleConcurrency: 8,
  idleHoldMs: 3_000,
  keepaliveMs: 30_000,
  meshRounds: 3,
  meshRelays: 8,
  meshScale: {
    meshes: [{ relays: 4, registered: 2_000, online: 200 }],
    rounds: 5,
    steadyMs: 2_000,
    livenessRelays: [16],
    livenessWindowMs: 3_000,
    livenessSettleMs: 1_000,
  },
  unauthConns: 500,
  sessionPairs: 100,
  holdMs: 2_000,
  afterMs: 2_000,
  abortSessions: 100,
  abortConcurrency: 4,
  natRounds: 1,
  deadlineMs: 3 * 60_000,
};

/** Sizes of the mesh-at-scale scenario (`bench/_mesh_scale.ts`). */
export interface MeshScaleConfig {
  /**
   * Mesh sizes, one after the other: relay processes in the random graph (a further one
   * joins), registered devices (the registry file of the first relay; the rest learn
   * them), devices logged in (one connection each, spread evenly over the relays).
   */
  meshes: { relays: number; registered: number; online: number }[];
  /** Login/logout rounds of the watched device, its origin relay taking turns. */
  rounds: number;
  /** Window in which the settled mesh's notices are counted (steady state), ms. */
  steadyMs: number;
  /** Mesh sizes of the in-process liveness measurement (`bench/liveness.ts`). */
  livenessRelays: number[];
  /** Its window and settling time, ms. */
  livenessWindowMs: number;
  livenessSettleMs: number;
}

/** Shared by the scenarios of one run. */
export interface BenchContext {
  /** Sizes. */
  readonly config: BenchConfig;
  /** Scratch folder, registry, certificates. */
  readonly workspace: Workspace;
  /** What the relay's command line offers. */
  readonly features: RelayFeatures;
  /** When set, relays write V8 CPU profiles here. */
  readonly cpuProfDir?: string;
  /** Prints a progress line on stderr. */
  progress(message: string): void;
}

/** Starts a load generator (`bench/load.ts`) as its own process. */
export function spawnLoad(name: string, options: LoadOptions): Child {
  return new Child(["run", "-A", "bench/load.ts", JSON.stringify(options)], {
    name,
    stdin: true,
  });
}

/**
 * Starts a relay with a fresh data folder; plain TCP unless `tls`. A `mesh` relay gets
 * the shared mesh secret (every member needs it, also one that dials nobody) and dials
 * `peers`.
 */
export async function benchRelay(
  ctx: BenchContext,
  name: string,
  options: {
    tls?: boolean;
    mesh?: boolean;
    peers?: string[];
    logLevel?: "debug" | "info";
    flags?: string[];
    /** Registry file text (default: the workspace's; see {@link Workspace.registry}). */
    registry?: string;
  } = {},
): Promise<RelayProc> {
  const spec: RelaySpec = {
    name,
    dataDir: await ctx.workspace.relayDataDir(name, options.registry),
    keepalive: `${ctx.config.keepaliveMs / 1000}s`,
    cpuProfDir: ctx.cpuProfDir,
    logLevel: options.logLevel,
    peers: options.peers,
    flags: options.flags,
  };
  if (options.tls) {
    const tls = await ctx.workspace.tls();
    spec.tls = { certFile: tls.certFile, keyFile: tls.keyFile };
  }
  if (options.mesh && ctx.features.meshSecret) {
    spec.meshSecretFile = await ctx.workspace.file("mesh-secret", "bench-mesh-secret\n");
  }
  const relay = await startRelay(spec);
  if (ctx.cpuProfDir) {
    ctx.progress(
      `relay ${name} is pid ${relay.pid} (profile: ${ctx.cpuProfDir}/CPU.*.${relay.pid}.cpuprofile)`,
    );
  }
  return relay;
}

/** Stops load generators and relays, ignoring failures (for finally blocks). */
export async function stopAll(...procs: (Child | RelayProc | undefined | null)[]): Promise<void> {
  await Promise.allSettled(procs.map((p) => {
    if (!p) return;
    return p instanceof Child ? p.stop("SIGKILL") : p.stop();
  }));
}

/** Sleeps (the bench's own pacing, never a test wait). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
