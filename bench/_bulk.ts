/**
 * Data path scenarios: one bulk session (direct, 1 relay, 1 relay over TLS, chains of 2
 * and 4 relays when the mesh exists) and many concurrent sessions (direct vs 1 relay).
 * Each trial starts a fresh receiver and sender process; variants are interleaved so that
 * noise from the shared machine hits them alike.
 *
 * @module
 */

import { type BenchContext, benchRelay, spawnLoad, stopAll } from "./_context.ts";
import type { Link, SessionTiming } from "./_load_types.ts";
import { cpuSeconds } from "./_procs.ts";
import type { RelayProc } from "./_relay.ts";
import { GiB, median, MiB, ratio, round } from "./_stats.ts";

/** How one variant reaches the receiver. */
export interface Route {
  /** Label in the report. */
  label: string;
  /** Relays in the path, sender's first; empty for direct. */
  relays: RelayProc[];
  /** CA file when the relays speak TLS. */
  tlsCaFile?: string;
}

/** One trial's figures. */
export interface DataTrial {
  /** Total bytes moved. */
  bytes: number;
  /** From "go" until the last session's END came back, ms. */
  totalMs: number;
  /** Aggregate throughput, MiB/s. */
  mibPerS: number;
  /** Per-session throughput, MiB/s (slowest first). */
  sessionMibPerS: number[];
  /** Slowest / fastest session throughput. */
  slowestVsFastest: number;
  /** CPU seconds used by all relays of the path during the transfer. */
  relayCpuS: number;
  /** Relay CPU seconds per GiB moved. */
  relayCpuSPerGiB: number;
  /** CPU seconds of the sender and receiver processes during the transfer. */
  senderCpuS: number;
  receiverCpuS: number;
}

/** A variant's trials and medians. */
export interface DataVariant {
  label: string;
  relays: number;
  tls: boolean;
  trials: DataTrial[];
  /** Median aggregate throughput over the trials, MiB/s. */
  mibPerS: number;
  /** Median relay CPU s/GiB. */
  relayCpuSPerGiB: number;
  /** Median slowest/fastest. */
  slowestVsFastest: number;
  /** Median throughput / median direct throughput. */
  vsDirect: number;
}

/** Runs one transfer of `sessions` × `bytes` along `route`. */
export async function dataTrial(
  route: Route,
  sessions: number,
  bytes: number,
): Promise<DataTrial> {
  const first = route.relays[0];
  const last = route.relays[route.relays.length - 1];
  const rxLink: Link = last
    ? { mode: "relay", relay: last.address, tlsCaFile: route.tlsCaFile }
    : { mode: "direct" };
  const rx = spawnLoad("bulk receiver", { role: "bulk-recv", link: rxLink, id: "rx", sessions });
  let tx;
  try {
    const ready = await rx.waitEvent("ready", 60_000);
    const txLink: Link = first
      ? { mode: "relay", relay: first.address, tlsCaFile: route.tlsCaFile }
      : { mode: "direct", port: Number(ready.port) };
    tx = spawnLoad("bulk sender", {
      role: "bulk-send",
      link: txLink,
      id: "tx",
      target: "rx",
      sessions,
      bytes,
      waitForTarget: route.relays.length > 1,
    });
    await tx.waitEvent("ready", 60_000);
    const pids = route.relays.map((r) => r.pid);
    const relayCpu0 = await Promise.all(pids.map(cpuSeconds));
    const txCpu0 = await cpuSeconds(tx.pid);
    const rxCpu0 = await cpuSeconds(rx.pid);
    await tx.send("go");
    const total = sessions * bytes;
    // A generous bound (10 MiB/s) so a stuck transfer fails instead of hanging.
    const result = await tx.waitEvent("result", 30_000 + (total / (10 * MiB)) * 1000);
    const relayCpu1 = await Promise.all(pids.map(cpuSeconds));
    const txCpu1 = await cpuSeconds(tx.pid);
    const rxCpu1 = await cpuSeconds(rx.pid);
    const done = await rx.waitEvent("done", 30_000);
    const received = (done.bytes as number[]).reduce((a, b) => a + b, 0);
    if (received !== total) throw new Error(`Receiver got ${received} bytes of ${total}`);
    const totalMs = Number(result.totalMs);
    const timings = result.sessions as SessionTiming[];
    const rates = timings
      .map((s) => s.bytes / MiB / ((s.endMs - s.startMs) / 1000))
      .sort((a, b) => a - b);
    const relayCpuS = relayCpu1.reduce((a, b, i) => a + b - relayCpu0[i], 0);
    return {
      bytes: total,
      totalMs: round(totalMs, 1),
      mibPerS: round(total / MiB / (totalMs / 1000), 1),
      sessionMibPerS: rates.map((r) => round(r, 1)),
      slowestVsFastest: ratio(rates[0], rates[rates.length - 1]),
      relayCpuS: round(relayCpuS, 2),
      relayCpuSPerGiB: route.relays.length ? round(relayCpuS / (total / GiB), 2) : NaN,
      senderCpuS: round(txCpu1 - txCpu0, 2),
      receiverCpuS: round(rxCpu1 - rxCpu0, 2),
    };
  } finally {
    await stopAll(tx, rx);
  }
}

/** Runs every route `trials` times, interleaved, and summarises against the first (direct). */
export async function compareRoutes(
  ctx: BenchContext,
  routes: Route[],
  sessions: number,
  bytes: number,
  trials: number,
  what: string,
): Promise<DataVariant[]> {
  const results = routes.map(() => [] as DataTrial[]);
  for (let t = 0; t < trials; t++) {
    for (const [i, route] of routes.entries()) {
      ctx.progress(`${what}: ${route.label}, trial ${t + 1}/${trials}`);
      results[i].push(await dataTrial(route, sessions, bytes));
    }
  }
  const directMibPerS = median(results[0].map((r) => r.mibPerS));
  return routes.map((route, i) => {
    const mibPerS = median(results[i].map((r) => r.mibPerS));
    return {
      label: route.label,
      relays: route.relays.length,
      tls: route.tlsCaFile !== undefined,
      trials: results[i],
      mibPerS: round(mibPerS, 1),
      relayCpuSPerGiB: round(median(results[i].map((r) => r.relayCpuSPerGiB)), 2),
      slowestVsFastest: round(median(results[i].map((r) => r.slowestVsFastest)), 3),
      vsDirect: ratio(mibPerS, directMibPerS),
    };
  });
}

/** A line of `n` relays, each dialing the previous one (needs the mesh). */
export async function relayChain(
  ctx: BenchContext,
  n: number,
  label: string,
  options: { closeRing?: boolean; logLevel?: "debug" | "info"; flags?: string[] } = {},
): Promise<RelayProc[]> {
  const relays: RelayProc[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const peers = i === 0 ? [] : [relays[i - 1].address];
      if (options.closeRing && i === n - 1 && n > 2) peers.push(relays[0].address);
      relays.push(
        await benchRelay(ctx, `${label}-${i + 1}`, {
          mesh: true,
          peers,
          logLevel: options.logLevel,
          flags: options.flags,
        }),
      );
    }
    return relays;
  } catch (e) {
    await stopAll(...relays);
    throw e;
  }
}

/** Result of the bulk scenario. */
export interface BulkResult {
  bytesPerTrial: number;
  trials: number;
  variants: DataVariant[];
  /** Why the chain variants did not run, if they did not. */
  chains: { available: boolean; reason?: string };
}

/** Scenario 1 (and the throughput half of 6): one bulk session along each route. */
export async function runBulk(
  ctx: BenchContext,
  relay: RelayProc,
  tlsRelay: RelayProc,
  tlsCaFile: string,
): Promise<BulkResult> {
  const routes: Route[] = [
    { label: "direct TCP", relays: [] },
    { label: "1 relay", relays: [relay] },
    { label: "1 relay, TLS", relays: [tlsRelay], tlsCaFile },
  ];
  const chains: RelayProc[][] = [];
  try {
    if (ctx.features.mesh) {
      chains.push(await relayChain(ctx, 2, "chain2"), await relayChain(ctx, 4, "chain4"));
      routes.push({ label: "2-relay chain", relays: chains[0] });
      routes.push({ label: "4-relay chain", relays: chains[1] });
    }
    const variants = await compareRoutes(
      ctx,
      routes,
      1,
      ctx.config.bulkBytes,
      ctx.config.bulkTrials,
      "bulk",
    );
    return {
      bytesPerTrial: ctx.config.bulkBytes,
      trials: ctx.config.bulkTrials,
      variants,
      chains: ctx.features.mesh
        ? { available: true }
        : { available: false, reason: "not available: needs the mesh (relay has no --peer)" },
    };
  } finally {
    await stopAll(...chains.flat());
  }
}

/** Result of the concurrency scenario. */
export interface ConcurrencyResult {
  sessions: number;
  bytesPerSession: number;
  trials: number;
  variants: DataVariant[];
}

/** Scenario 3: many concurrent sessions through one relay vs as many direct streams. */
export async function runConcurrency(
  ctx: BenchContext,
  relay: RelayProc,
): Promise<ConcurrencyResult> {
  const { concSessions, concBytes, concTrials } = ctx.config;
  const variants = await compareRoutes(
    ctx,
    [
      { label: `direct TCP × ${concSessions}`, relays: [] },
      { label: `1 relay × ${concSessions}`, relays: [relay] },
    ],
    concSessions,
    concBytes,
    concTrials,
    "concurrency",
  );
  return { sessions: concSessions, bytesPerSession: concBytes, trials: concTrials, variants };
}
