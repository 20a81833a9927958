/**
 * What peers can make the relay hold: memory per unauthenticated connection (silent, or
 * holding a partial pre-login frame) and whether it is given back when they go; memory
 * per open idle session, against the same connections idle. A fresh relay per variant,
 * the connections in a load-generator process, RSS read from /proc.
 *
 * @module
 */

import { type BenchContext, benchRelay, sleep, spawnLoad, stopAll } from "./_context.ts";
import type { Child } from "./_procs.ts";
import { cpuSeconds, rssKiB } from "./_procs.ts";
import type { RelayProc } from "./_relay.ts";
import { MAX_PRELOGIN_PAYLOAD } from "../shared/protocol/constants.ts";
import { median, round } from "./_stats.ts";

/** RSS every second for `ms`; the median of the second half (RSS moves with the GC). */
async function heldRss(pid: number, ms: number): Promise<number> {
  const samples: number[] = [];
  const t0 = performance.now();
  do {
    await sleep(Math.min(1_000, Math.max(0, ms - (performance.now() - t0))));
    samples.push(await rssKiB(pid));
  } while (performance.now() - t0 < ms);
  return median(samples.slice(Math.floor(samples.length / 2)));
}

/** RSS after the connections closed: sampled every 500 ms for `ms`, the last and the lowest. */
async function afterRss(pid: number, ms: number): Promise<{ last: number; min: number }> {
  const samples: number[] = [];
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    await sleep(500);
    samples.push(await rssKiB(pid));
  }
  return { last: samples[samples.length - 1], min: Math.min(...samples) };
}

/** Sends "close" and waits for "closed". */
async function closeAll(gen: Child): Promise<void> {
  const from = gen.events.length;
  await gen.send("close");
  await gen.waitEvent("closed", 30_000, from);
}

/** Asks for "stats" and returns the answer. */
async function stats(gen: Child) {
  const from = gen.events.length;
  await gen.send("stats");
  return await gen.waitEvent("stats", 30_000, from);
}

// ---- unauthenticated connections --------------------------------------------------------

/** One unauth run: silent connections, or each holding a partial pre-login frame. */
export interface UnauthVariant {
  label: string;
  /** Bytes each connection wrote: a frame header declaring `declared` bytes and part of them. */
  bytesEach: number;
  declared: number;
  /** Connections opened, refused or dropped by the relay while held. */
  connections: number;
  failed: number;
  lost: number;
  /** Relay RSS, KiB: empty, held (median of the hold's 2nd half), after they closed. */
  rssEmptyKiB: number;
  rssHeldKiB: number;
  rssAfterKiB: number;
  rssAfterMinKiB: number;
  /** (held − empty) / connections, KiB. */
  rssPerConnKiB: number;
  /** Share of the growth given back after the close: (held − after) / (held − empty). */
  givenBack: number;
  /** Relay CPU while the connections were opened and held, s. */
  cpuS: number;
}

/** Result of the unauth scenario. */
export interface UnauthResult {
  holdS: number;
  afterS: number;
  loginTimeoutS: number;
  variants: UnauthVariant[];
}

/** The relay may hold everything: limits above the count, a login deadline past the run. */
const LOGIN_TIMEOUT_S = 600;

async function unauthRun(ctx: BenchContext, partial: boolean): Promise<UnauthVariant> {
  const c = ctx.config;
  const n = c.unauthConns;
  const declared = MAX_PRELOGIN_PAYLOAD;
  // The worst a client may do before login: a header declaring the largest pre-login
  // frame and all of its payload but the last byte.
  const send = partial ? 5 + declared - 1 : 0;
  const label = partial ? `partial HELLO (${send} of ${5 + declared} bytes)` : "silent (baseline)";
  const relay: RelayProc = await benchRelay(ctx, partial ? "unauth-partial" : "unauth-silent", {
    flags: [
      "--max-unauth-per-address",
      String(n + 100),
      "--max-unauth",
      String(n + 100),
      "--login-timeout",
      `${LOGIN_TIMEOUT_S}s`,
    ],
  });
  let gen: Child | undefined;
  try {
    await sleep(c.quick ? 300 : 2_000);
    const rssEmptyKiB = await rssKiB(relay.pid);
    const cpu0 = await cpuSeconds(relay.pid);
    ctx.progress(`unauth: ${n} connections, ${label}`);
    gen = spawnLoad("unauth generator", {
      role: "unauth",
      relay: relay.address,
      count: n,
      declared,
      send,
      concurrency: 32,
    });
    const ready = await gen.waitEvent("ready", 120_000);
    const rssHeldKiB = await heldRss(relay.pid, c.holdMs);
    const cpu1 = await cpuSeconds(relay.pid);
    const s = await stats(gen);
    await closeAll(gen);
    const after = await afterRss(relay.pid, c.afterMs);
    const connections = Number(ready.conns);
    const grown = rssHeldKiB - rssEmptyKiB;
    return {
      label,
      bytesEach: send,
      declared,
      connections,
      failed: Number(ready.failed),
      lost: Number(s.lost),
      rssEmptyKiB,
      rssHeldKiB,
      rssAfterKiB: after.last,
      rssAfterMinKiB: after.min,
      rssPerConnKiB: round(grown / Math.max(1, connections), 2),
      givenBack: grown > 0 ? round((rssHeldKiB - after.last) / grown, 3) : NaN,
      cpuS: round(cpu1 - cpu0, 2),
    };
  } finally {
    await stopAll(gen, relay);
  }
}

/** Scenario: unauthenticated connections, silent (baseline) then holding partial frames. */
export async function runUnauth(ctx: BenchContext): Promise<UnauthResult> {
  return {
    holdS: ctx.config.holdMs / 1000,
    afterS: ctx.config.afterMs / 1000,
    loginTimeoutS: LOGIN_TIMEOUT_S,
    variants: [await unauthRun(ctx, false), await unauthRun(ctx, true)],
  };
}

// ---- idle sessions ----------------------------------------------------------------------

/** Result of the sessions scenario. */
export interface SessionsResult {
  pairs: number;
  holdS: number;
  /** Connections logged in (2 per pair), failed logins, sessions set up, failed setups. */
  connections: number;
  failedLogins: number;
  sessions: number;
  failedSetups: number;
  /** Sessions the relay dropped while held. */
  lost: number;
  errors: string[];
  /** Relay RSS, KiB: empty; the connections idle; the same connections in sessions; closed. */
  rssEmptyKiB: number;
  rssIdleKiB: number;
  rssSessionsKiB: number;
  rssAfterKiB: number;
  /** (idle − empty) / connections, KiB: the same-run idle-connection figure. */
  rssPerIdleConnKiB: number;
  /** (sessions − idle) / sessions, KiB: what a session adds to its two connections. */
  rssPerSessionKiB: number;
  /** Wall time of the setups, s, and the relay's CPU for them. */
  setupWallS: number;
  setupCpuS: number;
}

/** Scenario: session pairs logged in and held idle, then set up and held as sessions. */
export async function runSessions(ctx: BenchContext): Promise<SessionsResult> {
  const c = ctx.config;
  const pairs = c.sessionPairs;
  const relay = await benchRelay(ctx, "sessions", {
    flags: [
      "--max-conns-per-device",
      String(pairs + 16),
      // One requester may hold half of a target's sessions: room for all pairs.
      "--max-sessions-per-device",
      String(2 * pairs + 16),
    ],
  });
  let gen: Child | undefined;
  try {
    await sleep(c.quick ? 300 : 2_000);
    const rssEmptyKiB = await rssKiB(relay.pid);
    ctx.progress(`sessions: ${pairs} pairs of connections, idle`);
    gen = spawnLoad("sessions generator", {
      role: "sessions",
      link: { mode: "relay", relay: relay.address },
      requester: "req",
      target: "echo",
      pairs,
      concurrency: 16,
    });
    const idle = await gen.waitEvent("idle", 120_000);
    const rssIdleKiB = await heldRss(relay.pid, c.holdMs);
    ctx.progress(`sessions: ${pairs} sessions, set up and held`);
    const cpu0 = await cpuSeconds(relay.pid);
    await gen.send("go");
    const set = await gen.waitEvent("sessions", 120_000);
    const cpu1 = await cpuSeconds(relay.pid);
    const rssSessionsKiB = await heldRss(relay.pid, c.holdMs);
    const s = await stats(gen);
    await closeAll(gen);
    const after = await afterRss(relay.pid, c.afterMs);
    const connections = Number(idle.conns);
    const sessions = Number(set.ok);
    return {
      pairs,
      holdS: c.holdMs / 1000,
      connections,
      failedLogins: Number(idle.failed),
      sessions,
      failedSetups: Number(set.failed),
      lost: Number(s.lost),
      errors: [...(idle.errors as string[]), ...(set.errors as string[])].slice(0, 10),
      rssEmptyKiB,
      rssIdleKiB,
      rssSessionsKiB,
      rssAfterKiB: after.last,
      rssPerIdleConnKiB: round((rssIdleKiB - rssEmptyKiB) / Math.max(1, connections), 2),
      rssPerSessionKiB: round((rssSessionsKiB - rssIdleKiB) / Math.max(1, sessions), 2),
      setupWallS: round(Number(set.setupMs) / 1000, 2),
      setupCpuS: round(cpu1 - cpu0, 2),
    };
  } finally {
    await stopAll(gen, relay);
  }
}
