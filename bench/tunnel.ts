/**
 * Tunnel bench: `tsunagi forward` + `tsunagi run --expose` through one relay, against
 * direct TCP between two plain-socket processes (bench/_plain.ts, no tsunagi code), in
 * the same run, trials interleaved.
 *
 *   deno run -A bench/tunnel.ts [--quick] [--out DIR] [--before DIR] [--cpu-prof DIR]
 *
 * `--before DIR` runs the same scenario a second time, in the same run, with the relay
 * and agents of another tree (e.g. `git archive main | tar -x -C DIR`): before/after,
 * each against its own direct baseline. `--cpu-prof DIR` makes the relay, device and
 * forwarder write V8 CPU profiles (summarise them with bench/cpuprofile.ts).
 * `deno task bench --only tunnel` runs it as part of the bench.
 *
 * A third route, three plain copying proxies in a row (bench/_plain.ts `proxy`), has the
 * tunnel's shape without its code: the floor of a three-process relay path on this
 * machine, so a ratio far below direct can be told apart from one far below that floor.
 *
 * Figures: bulk throughput ratio and CPU s/GiB per process (relay, receiving device,
 * sending device, plain endpoints); setup of a forwarded connection (connect + 1-byte
 * echo) p50/p99 against direct; 64 parallel connections × 16 MiB, aggregate ratio and
 * slowest/fastest.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { registryMain } from "../relay/registry/main.ts";
import { cpuSeconds } from "./_procs.ts";
import { GiB, median, MiB, percentile, round } from "./_stats.ts";

const HERE = new URL("..", import.meta.url).pathname;

/** Sizes of one tunnel bench run. */
export interface TunnelBenchOptions {
  /** Small sizes (under ~15 s). */
  quick: boolean;
  /** Tree whose relay/ and agent/ run (default this one). */
  root?: string;
  /** Directory for CPU profiles (relay, device, forwarder), or undefined. */
  cpuProf?: string;
  /** Forwarder sockets: "node" (default) or "deno". */
  sockets?: "node" | "deno";
}

/** Results of one run: bulk, setup, parallel, each against direct plain TCP. */
export type TunnelResults = Awaited<ReturnType<typeof runTunnelBench>>;

/** A child process whose stdout/stderr lines are collected. */
class Child {
  readonly proc: Deno.ChildProcess;
  readonly lines: string[] = [];
  #wake = () => {};
  constructor(args: string[], cwd: string) {
    this.proc = new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    for (const s of [this.proc.stdout, this.proc.stderr]) {
      (async () => {
        let rest = "";
        for await (const t of s.pipeThrough(new TextDecoderStream())) {
          const parts = (rest + t).split("\n");
          rest = parts.pop()!;
          this.lines.push(...parts);
          this.#wake();
        }
      })();
    }
  }
  async waitFor(re: RegExp, count = 1, ms = 30_000): Promise<string[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hits = this.lines.filter((l) => re.test(l));
      if (hits.length >= count) return hits;
      if (Date.now() > deadline) throw new Error(`no ${re}:\n${this.lines.join("\n")}`);
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#wake = resolve;
      const t = setTimeout(resolve, 200);
      await promise;
      clearTimeout(t);
    }
  }
  get pid() {
    return this.proc.pid;
  }
  async stop() {
    try {
      this.proc.kill("SIGTERM");
    } catch { /* gone */ }
    await this.proc.status;
  }
}

async function plain(...args: string[]): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "bench/_plain.ts", ...args],
    cwd: HERE,
    stdout: "piped",
  }).output();
  if (out.code !== 0) throw new Error(`_plain.ts ${args.join(" ")} failed`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** Runs the tunnel scenario once: starts its processes, measures, stops them. */
export async function runTunnelBench(options: TunnelBenchOptions) {
  const { quick } = options;
  const ROOT = options.root ?? HERE;
  const BULK = quick ? 128 * MiB : GiB;
  const TRIALS = quick ? 1 : 3;
  const PINGS = quick ? 50 : 300;
  const PAR = 64;
  const PAR_BYTES = quick ? 2 * MiB : 16 * MiB;
  // One folder per process: deno names the files CPU.<time>.<pid>.cpuprofile.
  const prof = (name: string) =>
    options.cpuProf ? ["--cpu-prof", "--cpu-prof-dir", `${options.cpuProf}/${name}`] : [];
  const dir = await Deno.makeTempDir({ prefix: "tsunagi-bench-tunnel-" });
  const children: Child[] = [];
  try {
    for (const id of ["pc1", "dev1"]) {
      await Deno.writeTextFile(`${dir}/${id}.pw`, `pw-${id}\n`);
      const args = ["add", id, "--type", "USER", "--password-file", `${dir}/${id}.pw`];
      let why = "";
      const code = await registryMain([...args, "--data", dir], {
        stdout: () => {},
        stderr: (line) => why += line,
      });
      if (code !== 0) throw new Error(`Cannot register ${id}: ${why}`);
    }
    const start = (args: string[], cwd = ROOT) => {
      const c = new Child(args, cwd);
      children.push(c);
      return c;
    };
    const sink = start(["run", "-A", "bench/_plain.ts", "sink"], HERE);
    const echo = start(["run", "-A", "bench/_plain.ts", "echo"], HERE);
    const sinkPort = JSON.parse((await sink.waitFor(/port/))[0]).port;
    const echoPort = JSON.parse((await echo.waitFor(/port/))[0]).port;
    // The floor of the tunnel's shape: three plain copying processes in a row.
    const proxies: Child[] = [];
    const chainTo = async (port: number) => {
      for (let i = 0; i < 3; i++) {
        const p = start(["run", "-A", "bench/_plain.ts", "proxy", String(port)], HERE);
        proxies.push(p);
        port = JSON.parse((await p.waitFor(/port/))[0]).port;
      }
      return port;
    };
    const chainSink = await chainTo(sinkPort);
    const chainEcho = await chainTo(echoPort);
    const relay = start([
      "run",
      "-A",
      ...prof("relay"),
      "relay/main.ts",
      "--listen",
      "127.0.0.1:0",
      "--data",
      dir,
      "--log-format",
      "json",
    ]);
    const relayAddr = JSON.parse((await relay.waitFor(/"listening"/))[0]).address;
    const login = (id: string) => [
      "--relay",
      relayAddr,
      "--id",
      id,
      "--password-file",
      `${dir}/${id}.pw`,
      "--log-format",
      "json",
    ];
    const device = start([
      "run",
      "-A",
      ...prof("device"),
      "agent/main.ts",
      "run",
      ...login("dev1"),
      "--inbox",
      `${dir}/inbox`,
      "--expose",
      `sink=127.0.0.1:${sinkPort}`,
      "--expose",
      `echo=127.0.0.1:${echoPort}`,
    ]);
    await device.waitFor(/"logged in"/);
    const forward = start([
      "run",
      "-A",
      ...prof("forward"),
      "agent/main.ts",
      "forward",
      ...login("pc1"),
      ...(options.sockets ? ["--sockets", options.sockets] : []),
      "--to",
      "dev1",
      "--listen",
      "127.0.0.1:0",
      "--service",
      "sink",
      "--listen",
      "127.0.0.1:0",
      "--service",
      "echo",
    ]);
    const fwd = (await forward.waitFor(/"forwarding"/, 2)).map((l) =>
      Number(String(JSON.parse(l).listen).split(":").pop())
    );
    await forward.waitFor(/"logged in"/);

    const cpu = async () => ({
      relay: await cpuSeconds(relay.pid),
      device: await cpuSeconds(device.pid),
      forward: await cpuSeconds(forward.pid),
      sink: await cpuSeconds(sink.pid),
      chain: (await Promise.all(proxies.map((p) => cpuSeconds(p.pid)))).reduce((a, b) => a + b),
    });
    type Trial = { mibPerS: number; cpuPerGiB: Record<string, number> };
    const bulk = async (port: number, bytes: number, n: number) => {
      const before = await cpu();
      const r = await plain("bulk", String(port), String(bytes), String(n));
      const after = await cpu();
      const gib = (bytes * n) / GiB;
      const cpuPerGiB: Record<string, number> = { client: round(Number(r.cpuS) / gib) };
      for (const k of Object.keys(before) as (keyof typeof before)[]) {
        cpuPerGiB[k] = round((after[k] - before[k]) / gib);
      }
      const each = (r.each as number[]).map((ms) => bytes / MiB / (ms / 1000));
      return {
        mibPerS: (bytes * n) / MiB / (Number(r.totalMs) / 1000),
        cpuPerGiB,
        slowestVsFastest: Math.min(...each) / Math.max(...each),
      };
    };
    const direct: Trial[] = [];
    const tunnel: Trial[] = [];
    const chain: Trial[] = [];
    for (let i = 0; i < TRIALS; i++) {
      direct.push(await bulk(sinkPort, BULK, 1));
      tunnel.push(await bulk(fwd[0], BULK, 1));
      chain.push(await bulk(chainSink, BULK, 1));
    }
    const med = (ts: Trial[], k: string) => round(median(ts.map((t) => t.cpuPerGiB[k])));
    const bulkResult = {
      bytes: BULK,
      trials: TRIALS,
      directMibPerS: round(median(direct.map((t) => t.mibPerS))),
      tunnelMibPerS: round(median(tunnel.map((t) => t.mibPerS))),
      chainMibPerS: round(median(chain.map((t) => t.mibPerS))),
      ratio: 0,
      chainRatio: 0,
      cpuSPerGiB: {
        direct: { client: med(direct, "client"), sink: med(direct, "sink") },
        tunnel: {
          client: med(tunnel, "client"),
          forward: med(tunnel, "forward"),
          relay: med(tunnel, "relay"),
          device: med(tunnel, "device"),
          sink: med(tunnel, "sink"),
        },
        chain: { proxies: med(chain, "chain") },
      },
    };
    bulkResult.ratio = round(bulkResult.tunnelMibPerS / bulkResult.directMibPerS);
    bulkResult.chainRatio = round(bulkResult.chainMibPerS / bulkResult.directMibPerS);

    const pd = (await plain("ping", String(echoPort), String(PINGS))).rtt as number[];
    const pt = (await plain("ping", String(fwd[1]), String(PINGS))).rtt as number[];
    const pc = (await plain("ping", String(chainEcho), String(PINGS))).rtt as number[];
    const setup = {
      n: PINGS,
      direct: { p50: round(median(pd), 3), p99: round(percentile(pd, 99), 3) },
      tunnel: { p50: round(median(pt), 3), p99: round(percentile(pt, 99), 3) },
      chain: { p50: round(median(pc), 3), p99: round(percentile(pc, 99), 3) },
      p50OverDirectMs: round(median(pt) - median(pd), 3),
      chainP50OverDirectMs: round(median(pc) - median(pd), 3),
    };

    const parD = await bulk(sinkPort, PAR_BYTES, PAR);
    const parT = await bulk(fwd[0], PAR_BYTES, PAR);
    const parC = await bulk(chainSink, PAR_BYTES, PAR);
    const parallel = {
      connections: PAR,
      bytesEach: PAR_BYTES,
      directMibPerS: round(parD.mibPerS),
      tunnelMibPerS: round(parT.mibPerS),
      ratio: round(parT.mibPerS / parD.mibPerS),
      chainRatio: round(parC.mibPerS / parD.mibPerS),
      slowestVsFastest: {
        direct: round(parD.slowestVsFastest),
        tunnel: round(parT.slowestVsFastest),
        chain: round(parC.slowestVsFastest),
      },
      refused: forward.lines.filter((l) => l.includes('"tunnel refused"')).length,
    };
    return { quick, sockets: options.sockets ?? "node", bulk: bulkResult, setup, parallel };
  } finally {
    for (const c of children.reverse()) await c.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A Markdown table of one or more labelled runs (e.g. before and after). */
export function tunnelMarkdown(runs: { label: string; r: TunnelResults }[]): string {
  const rows = [
    "| run | bulk MiB/s (direct) | bulk ratio (3-proxy chain) | CPU s/GiB forward / relay / device (chain) | setup p50 ms (direct) | p50 over direct (chain) | p99 ms | 64 parallel ratio (chain) | slowest/fastest | refused |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const { label, r } of runs) {
    const c = r.bulk.cpuSPerGiB.tunnel;
    rows.push(
      `| ${label} | ${r.bulk.tunnelMibPerS} (${r.bulk.directMibPerS}) | ${r.bulk.ratio}x ` +
        `(${r.bulk.chainRatio}x) | ${c.forward} / ${c.relay} / ${c.device} ` +
        `(${r.bulk.cpuSPerGiB.chain.proxies}) | ${r.setup.tunnel.p50} (${r.setup.direct.p50}) | ` +
        `+${r.setup.p50OverDirectMs} (+${r.setup.chainP50OverDirectMs}) | ${r.setup.tunnel.p99} | ` +
        `${r.parallel.ratio}x (${r.parallel.chainRatio}x) | ` +
        `${r.parallel.slowestVsFastest.tunnel} | ${r.parallel.refused} |`,
    );
  }
  return rows.join("\n") + "\n";
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean" },
      out: { type: "string" },
      before: { type: "string" },
      "cpu-prof": { type: "string" },
      sockets: { type: "string" },
    },
  });
  const quick = values.quick ?? false;
  const sockets = values.sockets === "deno"
    ? "deno"
    : values.sockets === "node"
    ? "node"
    : undefined;
  const runs: { label: string; r: TunnelResults }[] = [];
  if (values.before) {
    runs.push({
      label: "before",
      r: await runTunnelBench({ quick, root: values.before, sockets }),
    });
  }
  runs.push({
    label: values.before ? "after" : "this tree",
    r: await runTunnelBench({ quick, cpuProf: values["cpu-prof"], sockets }),
  });
  const rev = new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], cwd: HERE })
    .outputSync();
  const results = {
    date: new Date().toISOString(),
    commit: new TextDecoder().decode(rev.stdout).trim(),
    quick,
    runs: Object.fromEntries(runs.map(({ label, r }) => [label, r])),
  };
  console.log(JSON.stringify(results, null, 2));
  console.log(tunnelMarkdown(runs));
  if (values.out) {
    await Deno.mkdir(values.out, { recursive: true });
    const base = `${values.out}/tunnel-${results.date.slice(0, 10)}`;
    await Deno.writeTextFile(`${base}.json`, JSON.stringify(results, null, 2) + "\n");
    await Deno.writeTextFile(
      `${base}.md`,
      `# Tunnel bench, ${results.date.slice(0, 10)}\n\n` +
        tunnelMarkdown(runs),
    );
  }
}
