/**
 * `deno run -A bench/tls.ts`: the TLS figures alone, plain next to TLS in the same run: a
 * shorter loop than `deno task bench` for work on the TLS path. Prints one line per
 * figure, then all of them as JSON. Scenarios (`--only`, comma-separated):
 *
 * - **bulk**: one session through 1 relay, direct TCP, plain and TLS interleaved; median
 *   MiB/s, TLS / plain, relay CPU s/GiB (scenario 1's routes without the chains).
 * - **setup**: scenario 2 through the plain and the TLS relay (both speaking orders); a
 *   Nagle stall shows as p50 ≈ 40 ms.
 * - **handshake**: 4 × 50 fresh connections per transport: connect (+ TLS handshake), then
 *   HELLO and LOGIN as two writes, until the relay's answer; p50/p99 of the whole and of
 *   the answer after the handshake (which a server's unacknowledged TLS 1.3
 *   NewSessionTicket holds back when Nagle's algorithm is on).
 * - **idle**: scenario 4 (default 5,000 devices × 2 connections): RSS per idle connection.
 * - **engines**: the server TLS engines without tsunagi code (`bench/_tls_engines.ts`):
 *   `node:tls` (the relay's), `Deno.listenTls` and plain TCP: a bare forwarder's CPU
 *   s/GiB, a server answering with two writes back to back, RSS per idle connection.
 *
 * @example
 * ```sh
 * deno run -A bench/tls.ts --only bulk --bytes 1024 --trials 3 --cpu-prof /tmp/prof
 * deno run -A bench/tls.ts --only engines
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { compareRoutes } from "./_bulk.ts";
import { type BenchContext, benchRelay, FULL, stopAll } from "./_context.ts";
import { runIdle } from "./_idle.ts";
import { killAll } from "./_procs.ts";
import type { Engine } from "./_tls_engine_proc.ts";
import { engineLine, ENGINES, runEngines } from "./_tls_engines.ts";
import { relayFeatures, type RelayProc } from "./_relay.ts";
import { runSetup } from "./_setup.ts";
import { MiB, ratio, round, summarize } from "./_stats.ts";
import { Workspace } from "./_workspace.ts";
import { dial } from "../shared/dial.ts";
import { encodeMessage } from "../shared/protocol/messages.ts";
import { PROTOCOL_VERSION, Role } from "../shared/protocol/constants.ts";

const SCENARIOS = ["bulk", "setup", "handshake", "idle", "engines"] as const;

const HELP = `bench/tls.ts: TLS vs plain through one relay, and the TLS engines alone.

Usage: deno run -A bench/tls.ts [options]

Options:
  --only LIST      scenarios (default all): ${SCENARIOS.join(",")}
  --bytes MIB      bytes per bulk trial and per engine forwarder trial (default 1024)
  --trials N       trials per bulk route and per engine (default 3)
  --setups N       timed setups per setup route (default 400)
  --idle N         idle devices, 2 connections each (default 5000)
  --hold N         idle connections per engine (default 4000)
  --engines LIST   engines to compare (default ${ENGINES.join(",")}; also node-js:
                   node:tls over a Deno.TcpConn through a JS Duplex)
  --cpu-prof DIR   relays write V8 CPU profiles into DIR
  -h, --help       show this help
`;

/**
 * Fresh connections to `relay`: connect (+ TLS handshake), then HELLO and LOGIN (of an
 * unregistered ID) as two back-to-back writes, until the relay's challenge arrives; ms.
 */
async function handshakes(relay: RelayProc, caPem: string | undefined, n: number) {
  const [hostname, port] = [relay.address.split(":")[0], Number(relay.address.split(":")[1])];
  const hello = encodeMessage({
    kind: "hello",
    version: PROTOCOL_VERSION,
    role: Role.Device,
    software: "bench",
  });
  const login = encodeMessage({
    kind: "login",
    id: "tls-probe",
    nonce: "AAAAAAAAAAAAAAAAAAAAAAAA",
    instance: "",
    ticket: "",
    services: [],
  });
  const buf = new Uint8Array(4096);
  const samples: number[] = [];
  const afterHandshake: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const conn = await dial({ hostname, port }, { tlsCa: caPem, timeoutMs: 5_000 });
    const t1 = performance.now();
    try {
      await conn.write(hello);
      await conn.write(login);
      const got = await conn.read(buf);
      if (got === null) throw new Error("relay closed the connection after LOGIN");
      const t2 = performance.now();
      samples.push(t2 - t0);
      afterHandshake.push(t2 - t1);
    } finally {
      conn.close();
    }
  }
  return { total: summarize(samples), answer: summarize(afterHandshake) };
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      only: { type: "string" },
      bytes: { type: "string" },
      trials: { type: "string" },
      setups: { type: "string" },
      idle: { type: "string" },
      hold: { type: "string" },
      engines: { type: "string" },
      "cpu-prof": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const only = new Set((values.only ?? SCENARIOS.join(",")).split(","));
  const config = {
    ...FULL,
    bulkBytes: Number(values.bytes ?? 1024) * MiB,
    bulkTrials: Number(values.trials ?? 3),
    setupCount: Number(values.setups ?? 400),
    setupBlocks: 4,
    setupWarmup: 50,
    simultaneousRounds: 20,
    idleDevices: Number(values.idle ?? 5000),
  };
  const cpuProfDir = values["cpu-prof"];
  if (cpuProfDir) await Deno.mkdir(cpuProfDir, { recursive: true });
  const progress = (m: string) => console.error(`tls-bench: ${m}`);
  const out: Record<string, unknown> = {};
  await using workspace = await Workspace.create(only.has("idle") ? config.idleDevices : 0);
  const ctx: BenchContext = {
    config,
    workspace,
    features: await relayFeatures(),
    cpuProfDir,
    progress,
  };
  const tls = await workspace.tls();
  let relay: RelayProc | undefined;
  let tlsRelay: RelayProc | undefined;
  try {
    if (only.has("bulk") || only.has("setup") || only.has("handshake")) {
      // As in bench/main.ts: setups run faster than the default per-device request rate.
      const flags = ["--connect-rate", "0"];
      relay = await benchRelay(ctx, "r1", { flags });
      tlsRelay = await benchRelay(ctx, "r1-tls", { tls: true, flags });
    }
    if (only.has("bulk")) {
      const vs = await compareRoutes(
        ctx,
        [
          { label: "direct TCP", relays: [] },
          { label: "1 relay", relays: [relay!] },
          { label: "1 relay, TLS", relays: [tlsRelay!], tlsCaFile: tls.caFile },
        ],
        1,
        config.bulkBytes,
        config.bulkTrials,
        "bulk",
      );
      for (const v of vs) {
        console.log(
          `bulk ${v.label}: ${v.mibPerS} MiB/s (${v.trials.map((t) => t.mibPerS).join(", ")}), ` +
            `relay CPU ${v.relayCpuSPerGiB} s/GiB, ` +
            `tx ${v.trials.map((t) => t.senderCpuS).join("/")} rx ${
              v.trials.map((t) => t.receiverCpuS).join("/")
            } CPU s`,
        );
      }
      console.log(`bulk TLS / plain: ${ratio(vs[2].mibPerS, vs[1].mibPerS)}`);
      out.bulk = vs;
    }
    if (only.has("setup")) {
      const r = await runSetup(ctx, relay!, tlsRelay!, tls.caFile, null);
      for (const v of r.variants) {
        const l = v.latencyMs;
        console.log(
          `setup ${v.label}: p50 ${l.p50} p90 ${l.p90} p99 ${l.p99} max ${l.max} ms, ` +
            `failed ${v.failed} ${v.failures.join("; ")}, relay ${v.relayCpuUsPerSetup} µs/setup`,
        );
      }
      out.setup = r;
    }
    if (only.has("handshake")) {
      const ca = await Deno.readTextFile(tls.caFile);
      const rounds = 4;
      const acc = { plain: [] as unknown[], tls: [] as unknown[] };
      for (let i = 0; i < rounds; i++) {
        acc.plain.push(await handshakes(relay!, undefined, 50));
        acc.tls.push(await handshakes(tlsRelay!, ca, 50));
      }
      for (const [k, rs] of Object.entries(acc)) {
        for (const r of rs as Awaited<ReturnType<typeof handshakes>>[]) {
          console.log(
            `handshake ${k}: connect..answer p50 ${round(r.total.p50, 3)} p99 ${
              round(r.total.p99, 3)
            } ms; answer after handshake p50 ${round(r.answer.p50, 3)} p99 ${
              round(r.answer.p99, 3)
            } max ${round(r.answer.max, 3)} ms`,
          );
        }
      }
      out.handshake = acc;
    }
  } finally {
    await stopAll(relay, tlsRelay);
  }
  if (only.has("idle")) {
    const r = await runIdle(ctx);
    for (const v of r.variants) {
      console.log(
        `idle ${v.label}: ${v.connections} conns, ${v.rssPerConnKiB} KiB/conn, ` +
          `login CPU ${v.loginCpuS} s, idle ${v.holdCpuPercent}% CPU, failed ${v.failedLogins}`,
      );
    }
    out.idle = r;
  }
  if (only.has("engines")) {
    const rs = await runEngines(tls, {
      engines: (values.engines?.split(",") ?? ENGINES) as Engine[],
      bytes: config.bulkBytes,
      trials: config.bulkTrials,
      probes: 200,
      hold: Number(values.hold ?? 4000),
    }, progress);
    for (const r of rs) console.log(engineLine(r));
    out.engines = rs;
  }
  await killAll();
  console.log(JSON.stringify(out));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
