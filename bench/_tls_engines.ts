/**
 * The TLS engines without tsunagi code (`bench/tls.ts --only engines`): for each server
 * engine, a bare forwarder's CPU per GiB, a Nagle probe and the RSS per idle connection,
 * each server and client a process of `bench/_tls_engine_proc.ts`.
 *
 * Why: the relay's TLS cost splits into the engine's and tsunagi's; this measures the
 * engine's alone, and shows which engine holds a small write back (Nagle's algorithm on
 * the server's socket, waiting for the client's delayed ACK: ~40 ms).
 *
 * @module
 */

import { stopAll } from "./_context.ts";
import { Child, cpuSeconds, rssKiB } from "./_procs.ts";
import { GiB, type LatencySummary, median, MiB, round, summarize } from "./_stats.ts";
import type { Engine, EngineProcOptions } from "./_tls_engine_proc.ts";
import type { TlsFiles } from "./_workspace.ts";

/** The engines compared by default. */
export const ENGINES: Engine[] = ["plain", "node", "deno"];

/** One engine's figures. */
export interface EngineResult {
  engine: Engine;
  /** Median over the trials, and each trial's [MiB/s, CPU s/GiB]. */
  forward: { mibPerS: number; cpuSPerGiB: number; trials: [number, number][] };
  /** Fresh connections: the handshake, then two request/answer rounds, ms. */
  probe: { handshake: LatencySummary; first: LatencySummary; second: LatencySummary };
  /** Server RSS per idle connection, KiB. */
  holdKiB: number;
}

/** A process of `bench/_tls_engine_proc.ts` (the relay's allocator setting). */
function engineProc(name: string, o: EngineProcOptions): Child {
  return new Child(["run", "-A", "bench/_tls_engine_proc.ts", JSON.stringify(o)], {
    name,
    stdin: true,
    env: { MALLOC_MMAP_THRESHOLD_: "131072" },
  });
}

/** A server of `engine`. */
function engineServer(engine: Engine, kind: "forward" | "echo2" | "hold", tls: TlsFiles) {
  return engineProc(`${engine} ${kind} server`, {
    role: "server",
    engine,
    kind,
    certFile: tls.certFile,
    keyFile: tls.keyFile,
  });
}

/** One transfer of `bytes` through an engine's bare forwarder: MiB/s and its CPU s/GiB. */
async function engineForward(engine: Engine, tls: TlsFiles, bytes: number) {
  const server = engineServer(engine, "forward", tls);
  const clients: Child[] = [];
  try {
    const ready = await server.waitEvent("ready", 30_000);
    const caFile = engine === "plain" ? undefined : tls.caFile;
    const rx = engineProc("receiver", { role: "recv", port: Number(ready.port2), caFile, bytes });
    const tx = engineProc("sender", { role: "send", port: Number(ready.port), caFile, bytes });
    clients.push(rx, tx);
    await Promise.all([rx.waitEvent("ready", 30_000), tx.waitEvent("ready", 30_000)]);
    const cpu0 = await cpuSeconds(server.pid);
    const t0 = performance.now();
    await tx.send("go");
    await rx.waitEvent("result", 30_000 + (bytes / (10 * MiB)) * 1000);
    const s = (performance.now() - t0) / 1000;
    const cpu = (await cpuSeconds(server.pid)) - cpu0;
    return { mibPerS: bytes / MiB / s, cpuSPerGiB: cpu / (bytes / GiB) };
  } finally {
    await stopAll(server, ...clients);
  }
}

/** Fresh connections to an engine's echo2 server: handshake, first and second answer, ms. */
async function engineProbe(engine: Engine, tls: TlsFiles, count: number) {
  const server = engineServer(engine, "echo2", tls);
  let probe: Child | undefined;
  try {
    const ready = await server.waitEvent("ready", 30_000);
    const caFile = engine === "plain" ? undefined : tls.caFile;
    probe = engineProc("probe", { role: "probe", port: Number(ready.port), caFile, count });
    const r = await probe.waitEvent("result", 60_000 + count * 500);
    return {
      handshake: summarize(r.handshake as number[]),
      first: summarize(r.first as number[]),
      second: summarize(r.second as number[]),
    };
  } finally {
    await stopAll(server, probe);
  }
}

/** RSS an engine's server holds per idle connection (one small echo each), KiB. */
async function engineHold(engine: Engine, tls: TlsFiles, count: number) {
  const server = engineServer(engine, "hold", tls);
  let holder: Child | undefined;
  try {
    const ready = await server.waitEvent("ready", 30_000);
    await new Promise((r) => setTimeout(r, 1_000));
    const rss0 = await rssKiB(server.pid);
    const caFile = engine === "plain" ? undefined : tls.caFile;
    holder = engineProc("holder", { role: "hold", port: Number(ready.port), caFile, count });
    const held = await holder.waitEvent("ready", 300_000);
    const samples: number[] = [];
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 1_000));
      samples.push(await rssKiB(server.pid));
    }
    return (median(samples.slice(5)) - rss0) / Number(held.conns);
  } finally {
    await stopAll(server, holder);
  }
}

/** Runs the scenario: forwarders (trials interleaved), then probe and hold per engine. */
export async function runEngines(
  tls: TlsFiles,
  o: { engines: Engine[]; bytes: number; trials: number; probes: number; hold: number },
  progress: (m: string) => void,
): Promise<EngineResult[]> {
  const forward = new Map<Engine, { mibPerS: number; cpuSPerGiB: number }[]>();
  for (let t = 0; t < o.trials; t++) {
    for (const e of o.engines) {
      progress(`engines: ${e} forwarder, trial ${t + 1}/${o.trials}`);
      forward.set(e, [...forward.get(e) ?? [], await engineForward(e, tls, o.bytes)]);
    }
  }
  const out: EngineResult[] = [];
  for (const e of o.engines) {
    const trials = forward.get(e)!;
    const f = {
      mibPerS: round(median(trials.map((x) => x.mibPerS)), 1),
      cpuSPerGiB: round(median(trials.map((x) => x.cpuSPerGiB)), 2),
      trials: trials.map((x): [number, number] => [round(x.mibPerS, 1), round(x.cpuSPerGiB, 2)]),
    };
    progress(`engines: ${e} probe and hold`);
    const probe = await engineProbe(e, tls, o.probes);
    const holdKiB = round(await engineHold(e, tls, o.hold), 2);
    out.push({ engine: e, forward: f, probe, holdKiB });
  }
  return out;
}

/** One line per engine for the console. */
export function engineLine(r: EngineResult): string {
  const f = r.forward;
  const p = r.probe;
  return `engine ${r.engine}: forward ${f.mibPerS} MiB/s, ${f.cpuSPerGiB} CPU s/GiB ` +
    `(trials ${f.trials.map(([m, c]) => `${m} MiB/s ${c} s/GiB`).join("; ")}); ` +
    `handshake p50 ${p.handshake.p50} ms; answer of two writes p50/p99: 1st ` +
    `${p.first.p50}/${p.first.p99} ms, 2nd ${p.second.p50}/${p.second.p99} ms; ` +
    `idle ${r.holdKiB} KiB/conn`;
}
