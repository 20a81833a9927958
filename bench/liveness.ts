/**
 * Steady-state liveness cost of the mesh: N relays (in this process, real TCP links on
 * 127.0.0.1) in a random connected graph of average degree 3 (a random spanning tree
 * plus N/2 random extra links, seeded), default timers, no devices. Once every link is
 * up and the start-up catch-up has settled, it counts the update notices each relay
 * receives (applied + dropped + refused, from {@link MeshDirectory.stats}) over a window
 * and prints them per relay per minute, with the link keep-alives (PING + PONG) each
 * relay receives, which follow from the degree and the ping interval.
 *
 * ```sh
 * deno run -A bench/liveness.ts                       # 16 and 64 relays, 30 s windows
 * deno run -A bench/liveness.ts --relays 16 --window 10s
 * deno run -A bench/liveness.ts --refresh 15s         # records refreshed every 15 s
 * ```
 *
 * Relays run in one process so that 64 of them fit on a small machine; what is counted
 * (notices crossing links) does not depend on that.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { MeshDirectory } from "../relay/mesh/mesh.ts";
import { FileRegistry } from "../relay/registry/registry.ts";
import { type RelayHandle, startRelay } from "../relay/server.ts";
import { Logger } from "../shared/log.ts";
import { parseDuration } from "../shared/cli.ts";

/** Figures for one mesh size. */
export interface LivenessFigures {
  relays: number;
  links: number;
  windowS: number;
  /** Notices received per relay per minute: mean and maximum over relays. */
  noticesPerRelayMin: { mean: number; max: number };
  /** PING + PONG received per relay per minute, mean (2 per link end per ping interval). */
  keepAlivesPerRelayMin: number;
}

/** A seeded random connected graph: spanning tree plus `n / 2` extra edges. */
export function randomGraph(n: number, seed: number): [number, number][] {
  let s = seed >>> 0;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const edges = new Set<string>();
  for (let i = 1; i < n; i++) edges.add(`${Math.floor(rand() * i)}-${i}`);
  const target = Math.floor(n * 1.5) - 1;
  for (let tries = 0; edges.size < target && tries < 100 * n; tries++) {
    const a = Math.floor(rand() * n), b = Math.floor(rand() * n);
    if (a !== b) edges.add(`${Math.min(a, b)}-${Math.max(a, b)}`);
  }
  return [...edges].map((e) => e.split("-").map(Number) as [number, number]);
}

async function waitFor(pred: () => boolean, what: string, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs one mesh of `n` relays and measures a window of `windowMs`. */
export async function measure(
  n: number,
  windowMs: number,
  settleMs: number,
  refreshMs?: number,
  heartbeatMs = 2000,
): Promise<LivenessFigures> {
  const root = await Deno.makeTempDir({ prefix: "tsunagi-liveness-" });
  const secret = crypto.getRandomValues(new Uint8Array(32));
  const edges = randomGraph(n, 7 + n);
  const relays: RelayHandle[] = [];
  const dirs: MeshDirectory[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const dataDir = `${root}/r${i}`;
      await Deno.mkdir(dataDir);
      const peers = edges.filter(([, b]) => b === i).map(([a]) => {
        const addr = relays[a].addr;
        return { hostname: addr.hostname, port: addr.port };
      });
      const directory = new MeshDirectory({
        registry: await FileRegistry.open(dataDir),
        dataDir,
        peers,
        secret,
        heartbeatMs,
        refreshMs,
        logger: Logger.silent(),
      });
      dirs.push(directory);
      relays.push(
        await startRelay({ port: 0, name: `r${i}`, directory, meshSecret: secret }),
      );
    }
    const degree = (i: number) => edges.filter(([a, b]) => a === i || b === i).length;
    await waitFor(
      () => dirs.every((d, i) => d.neighbors().length === degree(i)),
      "every link up",
      60_000,
    );
    await new Promise((r) => setTimeout(r, settleMs));
    const received = () => dirs.map((d) => d.stats.applied + d.stats.dropped + d.stats.refused);
    const before = received();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, windowMs));
    const after = received();
    const minutes = (performance.now() - t0) / 60_000;
    const perMin = after.map((x, i) => (x - before[i]) / minutes);
    const mean = perMin.reduce((a, b) => a + b, 0) / n;
    return {
      relays: n,
      links: edges.length,
      windowS: Math.round(windowMs / 1000),
      noticesPerRelayMin: { mean: Math.round(mean), max: Math.round(Math.max(...perMin)) },
      keepAlivesPerRelayMin: Math.round((2 * 2 * edges.length / n) * (60_000 / heartbeatMs)),
    };
  } finally {
    await Promise.allSettled(relays.map((r) => r.shutdown()));
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      relays: { type: "string", default: "16,64" },
      window: { type: "string", default: "30s" },
      settle: { type: "string", default: "5s" },
      refresh: { type: "string" },
    },
  });
  const windowMs = parseDuration(values.window, "--window");
  const settleMs = parseDuration(values.settle, "--settle");
  const refreshMs = values.refresh ? parseDuration(values.refresh, "--refresh") : undefined;
  console.log(
    "| relays | links | window | notices received / relay / min (mean, max) | PING+PONG / relay / min |",
  );
  console.log("| ---: | ---: | ---: | ---: | ---: |");
  for (const n of values.relays.split(",").map(Number)) {
    const f = await measure(n, windowMs, settleMs, refreshMs);
    console.log(
      `| ${f.relays} | ${f.links} | ${f.windowS} s | ${f.noticesPerRelayMin.mean}, ${f.noticesPerRelayMin.max} | ${f.keepAlivesPerRelayMin} |`,
    );
  }
  Deno.exit(0);
}
