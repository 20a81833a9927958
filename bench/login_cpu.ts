/**
 * Relay CPU per login, before/after: the first part of the login scenario (bench/_login.ts)
 * alone, repeated in interleaved rounds, optionally against the relays of other trees.
 *
 *   deno run -A bench/login_cpu.ts [--before DIR] [--tree DIR ...] [--rounds 5] [--n 1000]
 *     [--only connect,full,cached,ticket] [--cpu-prof DIR]
 *
 * Phases, each `n` connections one after another: `connect` (TCP connect and close, no
 * login: accept and close only), `full` (full SCRAM logins with a fresh login cache each,
 * so no ticket and a PBKDF2 derivation on the device every time, as in bench/_login.ts),
 * `cached` (full logins of a device that keeps its salted password, as a real one does,
 * but takes no ticket) and `ticket` (a device holding one connection opens and closes
 * others). Figures are relay CPU per connection (the sum over its threads of
 * `/proc/PID/task/TID/schedstat`, in ns), median over the rounds; the device side runs in
 * this process and is not counted.
 *
 * `--before DIR` also runs the relay of another tree (`git archive REV | tar -x -C DIR`),
 * `--tree DIR` more trees (each labelled by its folder name). All relays run at once; each
 * phase runs on every relay back to back, in an order that rotates from round to round,
 * so foreign load on a shared machine hits all alike, and the report gives each tree's
 * median difference from the first, round by round (paired), besides the medians.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { LoginCache } from "../agent/login_cache.ts";
import { connectRelay } from "../agent/relay_client.ts";
import { BENCH_PASSWORD } from "./_load_types.ts";
import { threadCpuNs, threadCpuSince } from "./_procs.ts";
import { type RelayProc, startRelay } from "./_relay.ts";
import { median, round } from "./_stats.ts";
import { Workspace } from "./_workspace.ts";

/** The phases, in the order they run. */
const PHASES = ["connect", "full", "cached", "ticket"] as const;
type Phase = typeof PHASES[number];

const TITLES: Record<Phase, string> = {
  connect: "connect + close",
  full: "full login",
  cached: "full login, key cached",
  ticket: "ticket login",
};

/** Relay CPU per connection of `n` runs of `one`, µs. */
async function perConnection(relay: RelayProc, n: number, one: () => Promise<void>) {
  const cpu0 = await threadCpuNs(relay.pid);
  for (let i = 0; i < n; i++) await one();
  return round(await threadCpuSince(relay.pid, cpu0) / n * 1e6, 0);
}

/** Runs `n` connections of `phase` against `relay`; relay CPU per connection, µs. */
async function measure(relay: RelayProc, phase: Phase, n: number): Promise<number> {
  const port = Number(relay.address.split(":").pop());
  const address = { hostname: "127.0.0.1", port };
  switch (phase) {
    case "connect":
      return await perConnection(relay, n, async () => (await Deno.connect(address)).close());
    case "full":
      return await perConnection(relay, n, async () => {
        const cache = new LoginCache();
        (await connectRelay({ address, id: "req", password: BENCH_PASSWORD, cache })).close();
      });
    case "cached": {
      const cache = new LoginCache();
      cache.ticket = () => undefined;
      const login = { address, id: "req", password: BENCH_PASSWORD, cache };
      (await connectRelay(login)).close(); // derives once, untimed
      return await perConnection(relay, n, async () => (await connectRelay(login)).close());
    }
    case "ticket": {
      const cache = new LoginCache();
      const ticketOf = cache.ticket.bind(cache);
      let missed = 0;
      cache.ticket = (where: string) => {
        const t = ticketOf(where);
        if (t === undefined) missed++;
        return t;
      };
      const login = { address, id: "echo", password: BENCH_PASSWORD, instance: "bench", cache };
      const holder = await connectRelay(login);
      try {
        missed = 0;
        const us = await perConnection(relay, n, async () => (await connectRelay(login)).close());
        if (missed > 0) throw new Error(`${missed} of ${n} ticket logins had no ticket`);
        return us;
      } finally {
        holder.close();
      }
    }
    default: {
      const never: never = phase;
      throw new Error(`Unknown phase ${never}`);
    }
  }
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      before: { type: "string" },
      tree: { type: "string", multiple: true, default: [] },
      rounds: { type: "string", default: "5" },
      n: { type: "string", default: "1000" },
      only: { type: "string", default: PHASES.join(",") },
      "cpu-prof": { type: "string" },
    },
  });
  const rounds = Number(values.rounds);
  const n = Number(values.n);
  const phases = PHASES.filter((p) => values.only.split(",").includes(p));
  await using ws = await Workspace.create(0);
  const trees: { label: string; root?: string }[] = [
    ...(values.before ? [{ label: "before", root: values.before }] : []),
    ...values.tree.map((root) => ({ label: root.replace(/\/+$/, "").split("/").pop()!, root })),
    { label: values.before ? "after" : "this tree" },
  ];
  const relays: RelayProc[] = [];
  try {
    for (const t of trees) {
      relays.push(
        await startRelay({
          name: `login-${relays.length}`,
          dataDir: await ws.relayDataDir(`login-${relays.length}`),
          root: t.root,
          cpuProfDir: values["cpu-prof"],
        }),
      );
    }
    // results[tree][phase][round]
    const results = trees.map(() =>
      Object.fromEntries(phases.map((p) => [p, [] as number[]])) as Record<Phase, number[]>
    );
    for (let r = 0; r < rounds; r++) {
      for (const phase of phases) {
        for (let i = 0; i < trees.length; i++) {
          const k = (i + r) % trees.length; // rotate, so no tree always runs first
          results[k][phase][r] = await measure(relays[k], phase, n);
        }
        const got = trees.map((t, k) => `${t.label} ${results[k][phase][r]}`).join(", ");
        console.error(`round ${r + 1}/${rounds}, ${phase}: ${got} µs`);
      }
    }
    console.log(`Relay CPU per connection (µs), median of ${rounds} rounds × ${n}:\n`);
    console.log(`| tree | ${phases.map((p) => TITLES[p]).join(" | ")} |`);
    console.log(`| --- | ${phases.map(() => "---").join(" | ")} |`);
    trees.forEach((t, k) => {
      const cells = phases.map((p) => {
        const own = `${median(results[k][p])}`;
        if (k === 0) return own;
        // Paired: this tree minus the first, round by round.
        const diff = median(results[k][p].map((v, r) => v - results[0][p][r]));
        return `${own} (${diff >= 0 ? "+" : ""}${diff})`;
      });
      console.log(`| ${t.label} | ${cells.join(" | ")} |`);
    });
    if (trees.length > 1) {
      console.log(`\nIn parentheses: median of the per-round differences from ${trees[0].label}.`);
    }
    console.log("\nEvery round (µs):\n");
    for (const p of phases) {
      console.log(
        `- ${TITLES[p]}: ${
          trees.map((t, k) => `${t.label} ${results[k][p].join(", ")}`).join("; ")
        }`,
      );
    }
  } finally {
    for (const r of relays) await r.stop();
  }
}

if (import.meta.main) await main();
