/**
 * The mesh at scale (scenario "meshscale"): relay processes in a seeded random connected
 * graph (average degree about 3, the graph of `bench/liveness.ts`) holding many
 * registered and online devices, then:
 *
 * 1. **Setup.** The first relay's registry file holds every registration (written
 *    directly, one shared verifier); the others start with an empty registry, one after
 *    the other, each dialing its lower-numbered neighbours, and learn the registrations
 *    by catch-up (each join is timed: setup catch-ups). Then one idle load generator per
 *    relay logs in its share of the online devices, one connection each, and the bench
 *    waits until the relays' notice counters stop moving.
 * 2. **Steady state.** Notices received per relay per minute over a window, devices
 *    online and pinging, nothing changing (the per-link PING/PONG is not a notice).
 * 3. **A login seen on all relays.** The mesh observer (`bench/_load_mesh.ts`) logs a
 *    device in on each relay in turn and polls every relay's STATUS until all show it,
 *    then logs it out likewise.
 * 4. **Messages per update**, over those rounds, from every relay's
 *    `tsunagi_mesh_notices_total` (admin metrics, no debug logs: at this size they would
 *    cost more than the floods). Each update is applied once by every relay but its
 *    origin, so updates = Σ applied / (relays − 1), and copies per update = Σ received /
 *    updates, against 2 × links.
 * 5. **A new relay joins**: an empty relay dialing 3 relays of the mesh (seeded). Timed
 *    from its spawn until its registry file holds every registration, and until its LIST
 *    shows every online device (a load generator logs in there once the registrations
 *    are in and lists every 200 ms).
 * 6. **Liveness at 16 and 64 relays**: `bench/liveness.ts` in this process, after the
 *    relay processes are gone (64 relay processes do not fit on 2 cores).
 *
 * @module
 */

import { REGISTRY_FILE } from "../relay/registry/registry.ts";
import { type BenchContext, benchRelay, sleep, spawnLoad, stopAll } from "./_context.ts";
import { type Child, cpuSeconds } from "./_procs.ts";
import type { RelayProc } from "./_relay.ts";
import { type LatencySummary, round, summarize } from "./_stats.ts";
import { benchDeviceIds } from "./_workspace.ts";
import { type LivenessFigures, measure as measureLiveness, randomGraph } from "./liveness.ts";

/** Seed of the graph and of the joining relay's neighbours. */
const SEED = 11;
/** Neighbours of the joining relay (the graph's average degree). */
const JOIN_DEGREE = 3;

/** Result of the meshscale scenario: one entry per mesh size, then liveness. */
export interface MeshScaleResult {
  available: true;
  meshes: MeshScaleMesh[];
  /** Steady-state liveness from `bench/liveness.ts` (relays in this process). */
  liveness: LivenessFigures[];
}

/** One mesh size's figures. */
export interface MeshScaleMesh {
  relays: number;
  links: number;
  seed: number;
  /** Registrations every relay ends up holding (bench devices included). */
  registered: number;
  /** Devices logged in (one connection each) and logins that failed. */
  online: number;
  onlineFailed: number;
  /** Setup: catch-up of each relay joining the growing mesh (no devices online yet), s. */
  setupCatchUpS: LatencySummary;
  /** Setup: control links closed during the setup joins, over all relays. */
  setupLinkDrops: number;
  /** Setup: wall time of the online devices' logins, and until the floods had settled, s. */
  loginWallS: number;
  settledS: number;
  /** Notices received per relay per minute with nothing changing. */
  steady: {
    windowS: number;
    mean: number;
    max: number;
    /** CPU of each relay process meanwhile, % of one core: mean and max over relays. */
    relayCpuPercent: { mean: number; max: number };
  };
  /** Login seen on all relays (the origin taking turns), ms; and logout. */
  visibility: {
    rounds: number;
    allVisibleMs: LatencySummary;
    allOfflineMs: LatencySummary;
    incomplete: number;
  };
  /** Copies of one notice crossing links, over the visibility rounds. */
  flooding: {
    updates: number;
    receivedPerUpdate: number;
    droppedPerUpdate: number;
    perLink: number;
  };
  /** The joining relay. */
  join: {
    neighbors: number;
    /** Spawn to listening (process start), s. */
    listenS: number;
    /** Spawn until its registry file held every registration, s (null: not within 60 s). */
    registryS: number | null;
    /** Spawn until its LIST showed every online device, s (null: not within the timeout). */
    onlineListedS: number | null;
    /** The later of the two: caught up completely. */
    catchUpS: number | null;
    /** Notices it received (applied, dropped) until then, and its peak RSS. */
    applied: number;
    dropped: number;
    peakRssMiB: number;
    /** Its link drops during the catch-up ("neighbour down"). */
    linkDrops: number;
  } | null;
}

/** The relay has no mesh. */
export interface MeshScaleUnavailable {
  available: false;
  reason: string;
}

interface ScaleRelay {
  proc: RelayProc;
  /** Admin listener HOST:PORT (metrics). */
  admin: string;
}

interface Counters {
  applied: number;
  received: number;
}

async function startScaleRelay(
  ctx: BenchContext,
  name: string,
  peers: string[],
  registry: string,
): Promise<ScaleRelay> {
  const proc = await benchRelay(ctx, name, {
    mesh: true,
    peers,
    registry,
    flags: ["--admin", "127.0.0.1:0"],
  });
  try {
    const line = await proc.child.waitLog(
      (l) => l.event === "admin listening",
      "admin listening",
      30_000,
    );
    return { proc, admin: String(line.address) };
  } catch (e) {
    await proc.stop();
    throw e;
  }
}

/** A relay's `tsunagi_mesh_notices_total`, from its admin listener. */
async function counters(r: ScaleRelay): Promise<Counters> {
  const res = await fetch(`http://${r.admin}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  const get = (action: string) => {
    const m = new RegExp(`^tsunagi_mesh_notices_total\\{action="${action}"\\} (\\d+)$`, "m")
      .exec(text);
    if (!m) throw new Error(`relay ${r.proc.name} has no tsunagi_mesh_notices_total metric`);
    return Number(m[1]);
  };
  const applied = get("applied");
  return { applied, received: applied + get("dropped") + get("refused") };
}

function countersOf(relays: ScaleRelay[]): Promise<Counters[]> {
  return Promise.all(relays.map(counters));
}

/** Waits until no relay received a notice for `quietMs`; returns the time waited, ms. */
async function settle(relays: ScaleRelay[], quietMs: number, timeoutMs: number) {
  const t0 = performance.now();
  let last = (await countersOf(relays)).reduce((a, c) => a + c.received, 0);
  for (;;) {
    await sleep(quietMs);
    const now = (await countersOf(relays)).reduce((a, c) => a + c.received, 0);
    if (now === last) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error("the mesh did not settle");
    last = now;
  }
}

/** Control links the relays saw go down so far ("neighbour down" log lines). */
function linkDrops(relays: ScaleRelay[]): number {
  return relays.reduce(
    (a, r) => a + r.proc.child.logs.filter((l) => l.event === "neighbour down").length,
    0,
  );
}

/** Registrations in a relay's registry file (0 while it is missing or half written). */
async function registered(dataDir: string): Promise<number> {
  try {
    const text = await Deno.readTextFile(`${dataDir}/${REGISTRY_FILE}`);
    let n = 0;
    for (
      let i = text.indexOf('"passwordHash"');
      i >= 0;
      i = text.indexOf('"passwordHash"', i + 1)
    ) n++;
    return n;
  } catch {
    return 0;
  }
}

/** Polls until the relay's registry holds `expected`; ms since `t0`, null after `timeoutMs`. */
async function waitRegistered(r: RelayProc, expected: number, t0: number, timeoutMs: number) {
  for (;;) {
    if ((await registered(r.dataDir)) >= expected) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) return null;
    await sleep(200);
  }
}

async function peakRssMiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return round(Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1] ?? NaN) / 1024, 1);
}

/** A seeded choice of `k` distinct indices below `n`. */
function pick(n: number, k: number, seed: number): number[] {
  let s = seed >>> 0;
  const chosen = new Set<number>();
  while (chosen.size < Math.min(k, n)) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    chosen.add(Math.floor((s / 2 ** 32) * n));
  }
  return [...chosen].sort((a, b) => a - b);
}

const seconds = (ms: number | null) => ms === null ? null : round(ms / 1000, 2);

/** Scenario "meshscale": each configured mesh size, then liveness in this process. */
export async function runMeshScale(
  ctx: BenchContext,
): Promise<MeshScaleResult | MeshScaleUnavailable> {
  if (!ctx.features.mesh) {
    return { available: false, reason: "not available: needs the mesh (relay has no --peer)" };
  }
  const c = ctx.config.meshScale;
  const meshes: MeshScaleMesh[] = [];
  for (const size of c.meshes) meshes.push(await oneMesh(ctx, size));
  const liveness: LivenessFigures[] = [];
  for (const n of c.livenessRelays) {
    ctx.progress(`meshscale: liveness, ${n} relays in this process`);
    liveness.push(await measureLiveness(n, c.livenessWindowMs, c.livenessSettleMs));
  }
  return { available: true, meshes, liveness };
}

async function oneMesh(
  ctx: BenchContext,
  size: { relays: number; registered: number; online: number },
): Promise<MeshScaleMesh> {
  const c = { ...ctx.config.meshScale, ...size };
  const n = c.relays;
  const edges = randomGraph(n, SEED + n);
  const ids = benchDeviceIds(c.registered);
  const empty = ctx.workspace.registry([]);
  const relays: ScaleRelay[] = [];
  const loads: Child[] = [];
  let joiner: ScaleRelay | undefined;
  try {
    // 1. Setup: the registrations spread by catch-up, one joining relay at a time.
    ctx.progress(`meshscale: ${n} relays, ${edges.length} links, ${ids.length} registrations`);
    const setupCatchUp: number[] = [];
    for (let i = 0; i < n; i++) {
      const peers = edges.filter(([, b]) => b === i).map(([a]) => relays[a].proc.address);
      const t0 = performance.now();
      const registry = i === 0 ? ctx.workspace.registry(ids) : empty;
      relays.push(await startScaleRelay(ctx, `scale-${i + 1}`, peers, registry));
      if (i === 0) continue;
      const ms = await waitRegistered(relays[i].proc, ids.length, t0, 300_000);
      if (ms === null) throw new Error(`relay scale-${i + 1} did not catch up within 300 s`);
      setupCatchUp.push(ms / 1000);
      ctx.progress(`meshscale: scale-${i + 1} caught up in ${(ms / 1000).toFixed(1)} s`);
    }
    const setupLinkDrops = linkDrops(relays);
    ctx.progress(`meshscale: ${c.online} devices log in`);
    const t0 = performance.now();
    relays.forEach((r, i) => {
      const first = Math.floor((i * c.online) / n);
      const count = Math.floor(((i + 1) * c.online) / n) - first;
      loads.push(spawnLoad(`meshscale idle ${i + 1}`, {
        role: "idle",
        link: { mode: "relay", relay: r.proc.address },
        first,
        count,
        perDevice: 1,
        concurrency: 8,
        keepaliveMs: ctx.config.keepaliveMs,
      }));
    });
    const ready = await Promise.all(loads.map((l) => l.waitEvent("ready", 300_000)));
    const loginWall = performance.now() - t0;
    const online = ready.reduce((a, e) => a + Number(e.conns), 0);
    const onlineFailed = ready.reduce((a, e) => a + Number(e.failed), 0);
    const settled = loginWall + await settle(relays, 2_000, 180_000);

    // 2. Steady state.
    ctx.progress(`meshscale: steady state, ${c.steadyMs / 1000} s`);
    const cpu = () => Promise.all(relays.map((r) => cpuSeconds(r.proc.pid)));
    const s0 = await countersOf(relays);
    const cpu0 = await cpu();
    const w0 = performance.now();
    await sleep(c.steadyMs);
    const cpu1 = await cpu();
    const s1 = await countersOf(relays);
    const minutes = (performance.now() - w0) / 60_000;
    const cpuPercent = cpu1.map((x, i) => ((x - cpu0[i]) / (minutes * 60)) * 100);
    const perMin = s1.map((x, i) => (x.received - s0[i].received) / minutes);

    // 3 and 4. Logins seen on all relays; copies per update.
    ctx.progress(`meshscale: ${c.rounds} login rounds`);
    const observer = spawnLoad("meshscale observer", {
      role: "mesh-observer",
      relays: relays.map((r) => r.proc.address),
      watchId: "mesh-watch",
      observerId: "mesh-obs",
      rounds: c.rounds + 1, // the first is dropped (JIT warm-up)
      timeoutMs: 10_000,
      rotate: true,
    });
    loads.push(observer);
    await observer.waitEvent("ready", 60_000);
    await settle(relays, 1_000, 60_000);
    const f0 = await countersOf(relays);
    await observer.send("go");
    const result = await observer.waitEvent("result", 60_000 + c.rounds * 25_000);
    await settle(relays, 1_000, 60_000);
    const f1 = await countersOf(relays);
    const rounds =
      (result.rounds as { visibleMs: (number | null)[]; offlineMs: (number | null)[] }[])
        .slice(1);
    const worst = (xs: (number | null)[]) =>
      xs.some((x) => x === null) ? null : Math.max(...(xs as number[]));
    const visible = rounds.map((r) => worst(r.visibleMs));
    const offline = rounds.map((r) => worst(r.offlineMs));
    const sum = (f: (i: number) => number) => relays.reduce((a, _, i) => a + f(i), 0);
    const applied = sum((i) => f1[i].applied - f0[i].applied);
    const received = sum((i) => f1[i].received - f0[i].received);
    const updates = applied / (n - 1);

    // 5. A new relay joins.
    const join = await joinOne(ctx, relays, ids.length, c.online, (j) => joiner = j, loads);

    return {
      relays: n,
      links: edges.length,
      seed: SEED + n,
      registered: ids.length,
      online,
      onlineFailed,
      setupCatchUpS: summarize(setupCatchUp),
      setupLinkDrops,
      loginWallS: round(loginWall / 1000, 1),
      settledS: round(settled / 1000, 1),
      steady: {
        windowS: round(c.steadyMs / 1000, 0),
        mean: round(perMin.reduce((a, b) => a + b, 0) / n, 1),
        max: round(Math.max(...perMin), 1),
        relayCpuPercent: {
          mean: round(cpuPercent.reduce((a, b) => a + b, 0) / n, 1),
          max: round(Math.max(...cpuPercent), 1),
        },
      },
      visibility: {
        rounds: rounds.length,
        allVisibleMs: summarize(visible.filter((x): x is number => x !== null)),
        allOfflineMs: summarize(offline.filter((x): x is number => x !== null)),
        incomplete: visible.filter((x) => x === null).length,
      },
      flooding: {
        updates: round(updates, 1),
        receivedPerUpdate: round(received / updates, 2),
        droppedPerUpdate: round((received - applied) / updates, 2),
        perLink: round(received / updates / edges.length, 3),
      },
      join,
    };
  } finally {
    await stopAll(...loads, ...relays.map((r) => r.proc), joiner?.proc);
  }
}

/** Step 5: an empty relay dials `JOIN_DEGREE` relays of the mesh and catches up. */
async function joinOne(
  ctx: BenchContext,
  relays: ScaleRelay[],
  registrations: number,
  online: number,
  started: (joiner: ScaleRelay) => void,
  loads: Child[],
): Promise<MeshScaleMesh["join"]> {
  const lister = spawnLoad("meshscale lister", {
    role: "mesh-list",
    id: "mesh-obs",
    prefix: "idle-",
    expect: online,
    pollMs: 200,
    timeoutMs: 60_000,
  });
  loads.push(lister);
  await lister.waitEvent("ready", 60_000);
  const neighbors = pick(relays.length, JOIN_DEGREE, SEED);
  const name = `scale-${relays.length + 1}`;
  ctx.progress(`meshscale: ${name} joins, dialing ${neighbors.map((i) => `scale-${i + 1}`)}`);
  const wall0 = Date.now();
  const t0 = performance.now();
  const joiner = await startScaleRelay(
    ctx,
    name,
    neighbors.map((i) => relays[i].proc.address),
    ctx.workspace.registry([]),
  );
  started(joiner);
  const listenMs = performance.now() - t0;
  const registryMs = await waitRegistered(joiner.proc, registrations, t0, 60_000);
  let onlineMs: number | null = null;
  if (registryMs !== null) {
    await lister.send(`go ${joiner.proc.address}`);
    const res = await lister.waitEvent("result", 90_000);
    if (res.complete) onlineMs = Number(res.at) - wall0;
  }
  const peak = await peakRssMiB(joiner.proc.pid);
  await settle([joiner], 1_000, 60_000);
  const got = await counters(joiner);
  return {
    neighbors: neighbors.length,
    listenS: round(listenMs / 1000, 2),
    registryS: seconds(registryMs),
    onlineListedS: seconds(onlineMs),
    catchUpS: registryMs === null || onlineMs === null
      ? null
      : seconds(Math.max(registryMs, onlineMs)),
    applied: got.applied,
    dropped: got.received - got.applied,
    peakRssMiB: peak,
    linkDrops: joiner.proc.child.logs.filter((l) => l.event === "neighbour down").length,
  };
}
