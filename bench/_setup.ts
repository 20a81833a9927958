/**
 * Session setup latency (scenario 2 and the latency half of 6): sequential setups from a
 * requester process to an echo process with an idle pool, through 1 relay (plain and
 * TLS), a 2-relay chain when the mesh exists, and a plain TCP connect + echo baseline;
 * then setups started from both sides at the same instant.
 *
 * @module
 */

import type { Route } from "./_bulk.ts";
import { type BenchContext, spawnLoad, stopAll } from "./_context.ts";
import type { Link } from "./_load_types.ts";
import { type Child, cpuSeconds } from "./_procs.ts";
import type { RelayProc } from "./_relay.ts";
import { type LatencySummary, ratio, summarize } from "./_stats.ts";

/** Idle connections the target keeps (and each simultaneous peer). */
const POOL = 2;

/** One variant's sequential setups. */
export interface SetupVariant {
  label: string;
  relays: number;
  tls: boolean;
  /** The target wrote the first byte. */
  greetFirst: boolean;
  latencyMs: LatencySummary;
  failed: number;
  /** The first few failure messages. */
  failures: string[];
  /** p50 / baseline p50. */
  p50VsBaseline: number;
  /** Setups per second achieved (sequential, teardown included). */
  setupsPerS: number;
  /** CPU time of the route's relays per setup (teardown included), µs. */
  relayCpuUsPerSetup: number;
  /** p50 and p99 of each block, ms: one noisy block shows up here. */
  perBlockMs: { p50: number; p99: number }[];
}

/** Setups started by two devices toward each other at the same instant. */
export interface SimultaneousResult {
  rounds: number;
  setups: number;
  latencyMs: LatencySummary;
  failed: number;
  failures: string[];
}

/** Result of the setup scenario. */
export interface SetupResult {
  count: number;
  /** The timed setups ran in this many blocks, routes taking turns. */
  blocks: number;
  warmup: number;
  variants: SetupVariant[];
  simultaneous: SimultaneousResult;
  chains: { available: boolean; reason?: string };
}

function relayLink(relay: RelayProc, tlsCaFile?: string): Link {
  return { mode: "relay", relay: relay.address, tlsCaFile };
}

/** An echo process and a requester process for one route, started once. */
interface Rig {
  route: SetupRoute;
  echo: Child;
  requester: Child;
}

/** A route for setups, and who speaks first in the session. */
interface SetupRoute extends Route {
  /** The target writes the first byte (see `_load_setup.ts`). */
  greetFirst?: boolean;
}

async function startRig(ctx: BenchContext, route: SetupRoute, perBlock: number): Promise<Rig> {
  const last = route.relays[route.relays.length - 1];
  const first = route.relays[0];
  const echo = spawnLoad("echo target", {
    role: "echo",
    link: last ? relayLink(last, route.tlsCaFile) : { mode: "direct" },
    id: "echo",
    pool: POOL,
    greetFirst: route.greetFirst,
  });
  try {
    const ready = await echo.waitEvent("ready", 60_000);
    const requester = spawnLoad("requester", {
      role: "requester",
      link: first
        ? relayLink(first, route.tlsCaFile)
        : { mode: "direct", port: Number(ready.port) },
      id: "req",
      target: "echo",
      count: perBlock,
      warmup: ctx.config.setupWarmup,
      waitForTarget: route.relays.length > 1,
      greetFirst: route.greetFirst,
    });
    const rig = { route, echo, requester };
    try {
      await requester.waitEvent("ready", 60_000);
      return rig;
    } catch (e) {
      await stopAll(requester);
      throw e;
    }
  } catch (e) {
    await stopAll(echo);
    throw e;
  }
}

async function relaysCpu(rig: Rig): Promise<number> {
  const all = await Promise.all(rig.route.relays.map((r) => cpuSeconds(r.pid)));
  return all.reduce((a, b) => a + b, 0);
}

async function runBlock(rig: Rig, perBlock: number) {
  const from = rig.requester.events.length;
  const cpu0 = await relaysCpu(rig);
  await rig.requester.send("go");
  const result = await rig.requester.waitEvent("result", 60_000 + perBlock * 200, from);
  const cpuS = (await relaysCpu(rig)) - cpu0;
  return {
    cpuS,
    samples: result.samples as number[],
    failures: result.failures as string[],
    wallMs: Number(result.wallMs),
    setups: Number(result.setups),
  };
}

async function simultaneous(ctx: BenchContext, relay: RelayProc): Promise<SimultaneousResult> {
  const link = { mode: "relay" as const, relay: relay.address };
  const a = spawnLoad("peer a", { role: "peer", link, id: "peer-a", peer: "peer-b", pool: POOL });
  const b = spawnLoad("peer b", { role: "peer", link, id: "peer-b", peer: "peer-a", pool: POOL });
  try {
    await Promise.all([a.waitEvent("ready", 60_000), b.waitEvent("ready", 60_000)]);
    const samples: number[] = [];
    const failures: string[] = [];
    let failed = 0;
    const rounds = ctx.config.simultaneousRounds;
    for (let round = 0; round < rounds; round++) {
      const fromA = a.events.length;
      const fromB = b.events.length;
      // Both commands leave back to back: the two setups start within microseconds.
      await Promise.all([a.send(`go ${round}`), b.send(`go ${round}`)]);
      const outcomes = await Promise.all([
        a.waitEvent("round", 30_000, fromA),
        b.waitEvent("round", 30_000, fromB),
      ]);
      for (const o of outcomes) {
        if (o.ok) samples.push(Number(o.ms));
        else {
          failed++;
          if (failures.length < 5) failures.push(String(o.error));
        }
      }
    }
    return { rounds, setups: rounds * 2, latencyMs: summarize(samples), failed, failures };
  } finally {
    await stopAll(a, b);
  }
}

/** Scenario 2: sequential setups per route, then simultaneous setups on one relay. */
export async function runSetup(
  ctx: BenchContext,
  relay: RelayProc,
  tlsRelay: RelayProc,
  tlsCaFile: string,
  chain2: RelayProc[] | null,
): Promise<SetupResult> {
  const routes: SetupRoute[] = [
    { label: "TCP connect + echo (baseline)", relays: [] },
    { label: "1 relay", relays: [relay] },
    { label: "1 relay, TLS", relays: [tlsRelay], tlsCaFile },
    { label: "1 relay, target speaks first", relays: [relay], greetFirst: true },
    {
      label: "1 relay, TLS, target speaks first",
      relays: [tlsRelay],
      tlsCaFile,
      greetFirst: true,
    },
  ];
  if (chain2) routes.push({ label: "2-relay chain", relays: chain2 });
  const { setupCount, setupBlocks } = ctx.config;
  const perBlock = Math.ceil(setupCount / setupBlocks);
  const rigs: Rig[] = [];
  const variants: SetupVariant[] = [];
  try {
    for (const route of routes) rigs.push(await startRig(ctx, route, perBlock));
    const acc = rigs.map(() => ({
      samples: [] as number[],
      failures: [] as string[],
      ms: 0,
      n: 0,
      cpuS: 0,
      blocks: [] as { p50: number; p99: number }[],
    }));
    // Blocks of every route in turn, so noise from the shared machine hits all alike.
    for (let b = 0; b < setupBlocks; b++) {
      for (const [i, rig] of rigs.entries()) {
        ctx.progress(`setup: ${rig.route.label}, block ${b + 1}/${setupBlocks} of ${perBlock}`);
        const r = await runBlock(rig, perBlock);
        acc[i].samples.push(...r.samples);
        acc[i].failures.push(...r.failures);
        acc[i].ms += r.wallMs;
        acc[i].n += r.setups;
        acc[i].cpuS += r.cpuS;
        const block = summarize(r.samples);
        acc[i].blocks.push({ p50: block.p50, p99: block.p99 });
      }
    }
    let baselineP50 = NaN;
    for (const [i, rig] of rigs.entries()) {
      const { samples, failures, ms, n, cpuS, blocks } = acc[i];
      const latencyMs = summarize(samples);
      if (rig.route.relays.length === 0) baselineP50 = latencyMs.p50;
      variants.push({
        label: rig.route.label,
        relays: rig.route.relays.length,
        tls: rig.route.tlsCaFile !== undefined,
        greetFirst: rig.route.greetFirst ?? false,
        latencyMs,
        failed: failures.length,
        failures: [...new Set(failures)].slice(0, 5),
        p50VsBaseline: ratio(latencyMs.p50, baselineP50),
        setupsPerS: Math.round(n / (ms / 1000)),
        relayCpuUsPerSetup: rig.route.relays.length ? Math.round((cpuS * 1e6) / n) : NaN,
        perBlockMs: blocks,
      });
    }
  } finally {
    await stopAll(...rigs.flatMap((r) => [r.requester, r.echo]));
  }
  ctx.progress(`setup: simultaneous, ${ctx.config.simultaneousRounds} rounds`);
  return {
    count: perBlock * setupBlocks,
    blocks: setupBlocks,
    warmup: ctx.config.setupWarmup,
    variants,
    simultaneous: await simultaneous(ctx, relay),
    chains: chain2
      ? { available: true }
      : { available: false, reason: "not available: needs the mesh (relay has no --peer)" },
  };
}
