/**
 * Idle capacity (scenario 4): a fresh relay, its RSS when empty, then thousands of
 * devices logged in from several load-generator processes, each connection idle with a
 * keep-alive PING once per period; RSS and CPU of the relay while they are held.
 *
 * @module
 */

import { type BenchContext, benchRelay, sleep, spawnLoad, stopAll } from "./_context.ts";
import { Child, cpuSeconds, fdCount, rssKiB } from "./_procs.ts";
import type { RelayProc } from "./_relay.ts";
import { median, round } from "./_stats.ts";

/** One idle run (plain TCP or TLS). */
export interface IdleVariant {
  label: string;
  tls: boolean;
  devices: number;
  /** Connections the load generators hold. */
  connections: number;
  /** Logins that failed after retries. */
  failedLogins: number;
  /** Connections the relay dropped while held. */
  lost: number;
  /** Relay RSS, KiB: empty, right after the logins, held (median of the hold's 2nd half). */
  rssEmptyKiB: number;
  rssLoggedInKiB: number;
  rssHeldKiB: number;
  /** (held − empty) / connections, KiB. */
  rssPerConnKiB: number;
  /** Relay file descriptors at the end of the hold. */
  relayFds: number;
  /** Wall time until every generator had logged in its share, s. */
  loginWallS: number;
  /** Relay CPU seconds spent on the logins. */
  loginCpuS: number;
  /** Hold duration, s, and the relay's CPU use during it (% of one core). */
  holdS: number;
  holdCpuPercent: number;
  /** Keep-alive PINGs sent during the hold. */
  pings: number;
}

/** Result of the idle scenario. */
export interface IdleResult {
  keepaliveS: number;
  loadGenerators: number;
  variants: IdleVariant[];
}

async function idleRun(ctx: BenchContext, tls: boolean): Promise<IdleVariant> {
  const c = ctx.config;
  const label = tls ? "TLS" : "plain TCP";
  const tlsCaFile = tls ? (await ctx.workspace.tls()).caFile : undefined;
  const relay: RelayProc = await benchRelay(ctx, tls ? "idle-tls" : "idle", { tls });
  const gens: Child[] = [];
  try {
    // Let the runtime settle after start-up before taking the empty figure.
    await sleep(c.quick ? 500 : 2_000);
    const rssEmptyKiB = await rssKiB(relay.pid);
    const cpu0 = await cpuSeconds(relay.pid);
    const t0 = performance.now();
    const share = Math.ceil(c.idleDevices / c.idleLoadGens);
    for (let g = 0; g < c.idleLoadGens; g++) {
      const first = g * share;
      const count = Math.min(share, c.idleDevices - first);
      if (count <= 0) break;
      gens.push(spawnLoad(`idle generator ${g + 1}`, {
        role: "idle",
        link: { mode: "relay", relay: relay.address, tlsCaFile },
        first,
        count,
        perDevice: c.idlePerDevice,
        concurrency: c.idleConcurrency,
        keepaliveMs: c.keepaliveMs,
      }));
    }
    ctx.progress(
      `idle (${label}): ${c.idleDevices} devices × ${c.idlePerDevice} connections, ` +
        `${gens.length} load generators`,
    );
    const readies = await Promise.all(gens.map((g) => g.waitEvent("ready", 300_000)));
    const loginWallS = (performance.now() - t0) / 1000;
    const connections = readies.reduce((a, r) => a + Number(r.conns), 0);
    const failedLogins = readies.reduce((a, r) => a + Number(r.failed), 0);
    const cpu1 = await cpuSeconds(relay.pid);
    const rssLoggedInKiB = await rssKiB(relay.pid);
    ctx.progress(`idle (${label}): ${connections} connections up; holding ${c.idleHoldMs} ms`);
    // RSS moves with the garbage collector's rhythm: sample it every second and take the
    // median of the hold's second half.
    const h0 = performance.now();
    const samples: number[] = [];
    while (performance.now() - h0 < c.idleHoldMs) {
      await sleep(Math.min(1_000, c.idleHoldMs - (performance.now() - h0)));
      samples.push(await rssKiB(relay.pid));
    }
    const holdS = (performance.now() - h0) / 1000;
    const cpu2 = await cpuSeconds(relay.pid);
    const rssHeldKiB = median(samples.slice(Math.floor(samples.length / 2)));
    const relayFds = await fdCount(relay.pid);
    const stats = await Promise.all(gens.map(async (g) => {
      const from = g.events.length;
      await g.send("stats");
      return await g.waitEvent("stats", 30_000, from);
    }));
    return {
      label,
      tls,
      devices: c.idleDevices,
      connections,
      failedLogins,
      lost: stats.reduce((a, s) => a + Number(s.lost), 0),
      rssEmptyKiB,
      rssLoggedInKiB,
      rssHeldKiB,
      rssPerConnKiB: round((rssHeldKiB - rssEmptyKiB) / Math.max(1, connections), 2),
      relayFds,
      loginWallS: round(loginWallS, 1),
      loginCpuS: round(cpu1 - cpu0, 2),
      holdS: round(holdS, 1),
      holdCpuPercent: round(((cpu2 - cpu1) / holdS) * 100, 2),
      pings: stats.reduce((a, s) => a + Number(s.pings), 0),
    };
  } finally {
    await stopAll(...gens, relay);
  }
}

/** Scenario 4, plain TCP then TLS. */
export async function runIdle(ctx: BenchContext): Promise<IdleResult> {
  return {
    keepaliveS: ctx.config.keepaliveMs / 1000,
    loadGenerators: ctx.config.idleLoadGens,
    variants: [await idleRun(ctx, false), await idleRun(ctx, true)],
  };
}
