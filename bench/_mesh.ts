/**
 * Mesh convergence (scenario 5): relays in a line and in a ring; a device logs in on the
 * first relay and an observer polls every relay's directory until each shows it online
 * (then offline after its logout). Needs `--peer`; reported as not available otherwise.
 *
 * Notices per update come from the relays' debug logs: every UPDATE a relay receives is
 * logged as event "notice" with action "applied" or "dropped", its key, origin and
 * version. For each version of the watched device's entry we count the copies received
 * (= sent) over all links, and check that every relay but the origin applied it once.
 *
 * @module
 */

import { relayChain } from "./_bulk.ts";
import { type BenchContext, spawnLoad, stopAll } from "./_context.ts";
import type { RelayProc } from "./_relay.ts";
import { type LatencySummary, round, summarize } from "./_stats.ts";

/** One topology's figures. */
export interface MeshTopology {
  label: string;
  relays: number;
  rounds: number;
  /** Per round: time until the last relay showed the login, ms. */
  allVisibleMs: LatencySummary;
  /** Per relay (in line order): median time until it showed the login, ms. */
  perRelayVisibleP50Ms: (number | null)[];
  /** Per round: time until the last relay showed the logout, ms. */
  allOfflineMs: LatencySummary;
  /** Rounds in which some relay never showed the login within the timeout. */
  incomplete: number;
  /** The watched device's update notices, from the relays' logs (null: none logged). */
  notices: NoticeCounts | null;
}

/** How the watched device's updates flooded. */
export interface NoticeCounts {
  /** Distinct updates (versions) of the watched device seen. */
  updates: number;
  /** UPDATE messages received over all links, per update. */
  sentPerUpdate: number;
  /** Of those, dropped as not newer, per update. */
  droppedPerUpdate: number;
  /** (update, relay) pairs where a relay other than the origin did not apply it exactly once. */
  notAppliedOnce: number;
}

/** Result of the mesh scenario. */
export interface MeshResult {
  available: boolean;
  reason?: string;
  topologies: MeshTopology[];
}

async function topology(ctx: BenchContext, ring: boolean): Promise<MeshTopology> {
  const n = ctx.config.meshRelays;
  const label = ring ? "ring" : "line";
  ctx.progress(`mesh: ${n} relays in a ${label}`);
  const relays: RelayProc[] = await relayChain(ctx, n, `mesh-${label}`, {
    closeRing: ring,
    logLevel: "debug",
  });
  const rounds = ctx.config.meshRounds;
  const observer = spawnLoad("mesh observer", {
    role: "mesh-observer",
    relays: relays.map((r) => r.address),
    watchId: "mesh-watch",
    observerId: "mesh-obs",
    rounds: rounds + 1, // the first round also waits for the links to come up: dropped
    timeoutMs: 10_000,
  });
  try {
    await observer.waitEvent("ready", 60_000);
    const logStart = relays.map((r) => r.child.logs.length);
    await observer.send("go");
    const result = await observer.waitEvent("result", 60_000 + rounds * 25_000);
    const all = (result.rounds as { visibleMs: (number | null)[]; offlineMs: (number | null)[] }[])
      .slice(1);
    const worst = (xs: (number | null)[]) =>
      xs.some((x) => x === null) ? null : Math.max(...(xs as number[]));
    const visible = all.map((r) => worst(r.visibleMs));
    const offline = all.map((r) => worst(r.offlineMs));
    const perRelay = relays.map((_, i) => {
      const xs = all.map((r) => r.visibleMs[i]).filter((x): x is number => x !== null);
      return xs.length ? summarize(xs).p50 : null;
    });
    const notices = countNotices(relays, logStart, "mesh-watch");
    return {
      label,
      relays: n,
      rounds,
      allVisibleMs: summarize(visible.filter((x): x is number => x !== null)),
      perRelayVisibleP50Ms: perRelay,
      allOfflineMs: summarize(offline.filter((x): x is number => x !== null)),
      incomplete: visible.filter((x) => x === null).length,
      notices,
    };
  } finally {
    await stopAll(observer, ...relays);
  }
}

function countNotices(relays: RelayProc[], logStart: number[], id: string): NoticeCounts | null {
  const origin = relays[0].name;
  // version -> per relay: [applied, dropped]
  const byVersion = new Map<string, number[][]>();
  relays.forEach((r, i) => {
    for (const l of r.child.logs.slice(logStart[i])) {
      if (l.event !== "notice" || l.t !== "dev" || l.key !== id || l.origin !== origin) continue;
      const v = String(l.v);
      let counts = byVersion.get(v);
      if (!counts) byVersion.set(v, counts = relays.map(() => [0, 0]));
      counts[i][l.action === "applied" ? 0 : 1]++;
    }
  });
  if (byVersion.size === 0) return null;
  let sent = 0;
  let dropped = 0;
  let notAppliedOnce = 0;
  for (const counts of byVersion.values()) {
    counts.forEach(([a, d], i) => {
      sent += a + d;
      dropped += d;
      if (i > 0 && a !== 1) notAppliedOnce++;
    });
  }
  return {
    updates: byVersion.size,
    sentPerUpdate: round(sent / byVersion.size, 2),
    droppedPerUpdate: round(dropped / byVersion.size, 2),
    notAppliedOnce,
  };
}

/** Scenario 5: line and ring. */
export async function runMesh(ctx: BenchContext): Promise<MeshResult> {
  if (!ctx.features.mesh) {
    return {
      available: false,
      reason: "not available: needs the mesh (relay/main.ts has no --peer)",
      topologies: [],
    };
  }
  return { available: true, topologies: [await topology(ctx, false), await topology(ctx, true)] };
}
