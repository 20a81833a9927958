/**
 * Relay CPU per login, before/after: the first part of the login scenario (bench/_login.ts)
 * alone, repeated in interleaved rounds, optionally against the relay of another tree.
 *
 *   deno run -A bench/login_cpu.ts [--before DIR] [--tree DIR ...] [--rounds 5] [--n 1000]
 *     [--cpu-prof DIR]
 *
 * Each round runs, on every relay in turn: `n` TCP connects closed at once (the floor:
 * accept and close, no login), `n` full SCRAM logins (a fresh login cache each, so no
 * ticket and a PBKDF2 derivation on the device each time, as in bench/_login.ts), `n` full
 * logins of a device that keeps its salted password (as a real one does) but takes no
 * ticket, and `n` ticket logins (a device holding one connection opens and closes others).
 * Figures are relay CPU (utime + stime from /proc) per connection, median over the rounds;
 * the device side runs in this process and is not counted. `--before DIR` also runs the
 * relay of another tree (`git archive REV | tar -x -C DIR`), `--tree DIR` more trees (each
 * labelled by its folder name); all relays run at once, each idle while another is
 * measured, and the rounds interleave them, so foreign load on the shared machine hits all
 * alike. CPU is read in clock ticks (10 ms): keep `n` large enough (1000 logins of
 * 0.3 ms are 30 ticks).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { LoginCache } from "../agent/login_cache.ts";
import { connectRelay } from "../agent/relay_client.ts";
import { BENCH_PASSWORD } from "./_load_types.ts";
import { cpuSeconds } from "./_procs.ts";
import { type RelayProc, startRelay } from "./_relay.ts";
import { median, round } from "./_stats.ts";
import { Workspace } from "./_workspace.ts";

/** Relay CPU per connection, µs, one entry per round. */
export interface LoginCpu {
  /** TCP connect and close, no login. */
  connectUs: number[];
  /** Full SCRAM login (new connection, login, close); the device derives each time. */
  fullUs: number[];
  /** Full SCRAM login of a device that keeps its salted password. */
  fullCachedUs: number[];
  /** Ticket login (new connection of a logged-in device, login, close). */
  ticketUs: number[];
}

async function perConnection(relay: RelayProc, n: number, one: () => Promise<void>) {
  const cpu0 = await cpuSeconds(relay.pid);
  for (let i = 0; i < n; i++) await one();
  return round((await cpuSeconds(relay.pid) - cpu0) / n * 1e6, 0);
}

async function measureRound(relay: RelayProc, n: number, into: LoginCpu): Promise<void> {
  const port = Number(relay.address.split(":").pop());
  const address = { hostname: "127.0.0.1", port };
  into.connectUs.push(
    await perConnection(relay, n, async () => (await Deno.connect(address)).close()),
  );
  into.fullUs.push(
    await perConnection(relay, n, async () => {
      const cache = new LoginCache();
      (await connectRelay({ address, id: "req", password: BENCH_PASSWORD, cache })).close();
    }),
  );
  const salted = new LoginCache();
  salted.ticket = () => undefined;
  into.fullCachedUs.push(
    await perConnection(relay, n, async () => {
      (await connectRelay({ address, id: "req", password: BENCH_PASSWORD, cache: salted })).close();
    }),
  );
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
    into.ticketUs.push(
      await perConnection(relay, n, async () => (await connectRelay(login)).close()),
    );
    if (missed > 0) throw new Error(`${missed} of ${n} ticket logins had no ticket`);
  } finally {
    holder.close();
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
      "cpu-prof": { type: "string" },
    },
  });
  const rounds = Number(values.rounds);
  const n = Number(values.n);
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
    const results = trees.map(
      () => ({ connectUs: [], fullUs: [], fullCachedUs: [], ticketUs: [] } as LoginCpu),
    );
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < trees.length; i++) {
        // Rotate the order, so no tree always runs first.
        const k = (i + r) % trees.length;
        await measureRound(relays[k], n, results[k]);
        console.error(
          `round ${r + 1}/${rounds} ${trees[k].label}: connect ${
            results[k].connectUs.at(-1)
          } µs, ` +
            `full ${results[k].fullUs.at(-1)} µs, ticket ${results[k].ticketUs.at(-1)} µs`,
        );
      }
    }
    console.log(`Relay CPU per connection (µs), median of ${rounds} rounds × ${n}:\n`);
    console.log(
      "| tree | connect + close | full login | full login, key cached | ticket login | " +
        "rounds (full / key cached / ticket) |",
    );
    console.log("| --- | --- | --- | --- | --- | --- |");
    trees.forEach((t, i) => {
      const x = results[i];
      console.log(
        `| ${t.label} | ${median(x.connectUs)} | ${median(x.fullUs)} | ` +
          `${median(x.fullCachedUs)} | ${median(x.ticketUs)} | ` +
          `${x.fullUs.join(", ")} / ${x.fullCachedUs.join(", ")} / ${x.ticketUs.join(", ")} |`,
      );
    });
  } finally {
    for (const r of relays) await r.stop();
  }
}

if (import.meta.main) await main();
