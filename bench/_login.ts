/**
 * Login costs (reported, never asserted): relay CPU per full SCRAM login and per ticket
 * login, a restart storm (every device logs in with 2 connections at once on a freshly
 * started relay), and a legitimate login's latency while 300 wrong-password logins for
 * the same ID flood in from another address.
 *
 * The relay listens dual-stack (`[::]`): the flood comes from 127.0.0.1, the legitimate
 * device from ::1, two addresses as far as the relay's throttle is concerned. Full and
 * ticket logins run from this process, one after another; the storm runs in separate
 * load-generator processes (the idle role: each device's second connection uses the
 * ticket of its first, as an agent's pool does).
 *
 * CPU per login is measured twice: over the first full logins a freshly started relay
 * serves (V8 still compiling the login path: a one-time cost, shown apart), then in the
 * steady state, after untimed logins of each kind. The relay's CPU is the sum over its
 * threads of `/proc/PID/task/TID/schedstat` (ns). bench/login_cpu.ts runs the same
 * sequential logins alone, against the relays of other trees (before/after).
 *
 * @module
 */

import { LoginCache } from "../agent/login_cache.ts";
import { connectRelay } from "../agent/relay_client.ts";
import { FramedConn } from "../shared/framed_conn.ts";
import { PROTOCOL_VERSION, Role } from "../shared/protocol/constants.ts";
import { ERROR_CODE_NAMES } from "../shared/protocol/constants.ts";
import { newScramNonce } from "../shared/scram.ts";
import { type BenchContext, spawnLoad, stopAll } from "./_context.ts";
import { BENCH_PASSWORD } from "./_load_types.ts";
import { type Child, cpuSeconds, threadCpuNs, threadCpuSince } from "./_procs.ts";
import { type RelayProc, startRelay } from "./_relay.ts";
import { type LatencySummary, round, summarize } from "./_stats.ts";
import { Workspace } from "./_workspace.ts";

/** Result of the login scenario. */
export interface LoginResult {
  /** Full logins timed right after the relay started (its JIT warming up). */
  coldFullLogins: number;
  /** Relay CPU per full login over those, µs. */
  relayCpuUsPerColdFullLogin: number;
  /** Sequential full logins timed (new connection, SCRAM, close), in the steady state. */
  fullLogins: number;
  /** Relay CPU per full login, µs (accept and close included); the device derives each time. */
  relayCpuUsPerFullLogin: number;
  /** Relay CPU per full login of a device that keeps its salted password, µs. */
  relayCpuUsPerKeyCachedLogin: number;
  /** Sequential ticket logins timed (a second connection of a logged-in device). */
  ticketLogins: number;
  /** How many of them did use a ticket (the rest fell back to a full login). */
  ticketsUsed: number;
  /** Relay CPU per ticket login, µs. */
  relayCpuUsPerTicketLogin: number;
  /** Restart storm. */
  storm: {
    devices: number;
    connections: number;
    generators: number;
    /** Logins in flight at once per generator. */
    concurrency: number;
    /** From the generators' start until the last reported every connection online, s. */
    secondsToAllOnline: number;
    /** Relay CPU over the storm, s. */
    relayCpuS: number;
    failed: number;
  };
  /** Legitimate logins during a wrong-password flood. */
  flood: {
    wrongLogins: number;
    /** Rounds of the flood, each with its own legitimate logins started at the same instant. */
    rounds: number;
    /** Answers the flood got, by code name. */
    floodAnswers: Record<string, number>;
    legitLogins: number;
    legitFailed: number;
    legitMs: LatencySummary;
    /** Relay CPU over the flood, s. */
    relayCpuS: number;
  };
}

const FLOOD = 300;

/** Runs the login scenario on relays of its own. */
export async function runLogin(ctx: BenchContext): Promise<LoginResult> {
  const quick = ctx.config.quick;
  const devices = quick ? 200 : 5000;
  await using ws = await Workspace.create(devices);
  const start = async (name: string) =>
    await startRelay({
      name,
      dataDir: await ws.relayDataDir(name),
      keepalive: "30s",
      listen: "[::]:0",
      cpuProfDir: ctx.cpuProfDir,
    });
  let relay: RelayProc | undefined;
  try {
    relay = await start("login");
    const port = Number(relay.address.split(":").pop());
    const v4 = { hostname: "127.0.0.1", port };
    const v6 = { hostname: "::1", port };

    // Relay CPU per connection of `count` sequential runs of `one`, µs.
    const perLogin = async (count: number, one: () => Promise<void>) => {
      const before = await threadCpuNs(relay!.pid);
      for (let i = 0; i < count; i++) await one();
      return await threadCpuSince(relay!.pid, before) / count * 1e6;
    };
    // 1. Full logins: a fresh cache each time, so no ticket; the device derives (client CPU).
    //    First on the fresh relay (cold), then in the steady state; then a device that
    //    keeps its salted password (as a real one does) but takes no ticket.
    const cold = quick ? 30 : 300;
    const n = quick ? 100 : 1000;
    const warmup = quick ? 20 : 200;
    ctx.progress(
      `login: ${cold} + ${n} full logins, then ${n} with the key cached, ${n} with a ticket`,
    );
    const fullLogin = async () => {
      const cache = new LoginCache();
      (await connectRelay({ address: v4, id: "req", password: BENCH_PASSWORD, cache })).close();
    };
    const coldUs = await perLogin(cold, fullLogin);
    const fullUs = await perLogin(n, fullLogin);
    const salted = new LoginCache();
    salted.ticket = () => undefined;
    const cachedLogin = async () => {
      (await connectRelay({ address: v4, id: "req", password: BENCH_PASSWORD, cache: salted }))
        .close();
    };
    await perLogin(1, cachedLogin); // derives once
    const cachedUs = await perLogin(n, cachedLogin);

    // 2. Ticket logins: a device holds one connection and adds (and drops) others.
    const cache = new LoginCache();
    let ticketsUsed = 0;
    const ticketOf = cache.ticket.bind(cache);
    cache.ticket = (where: string) => {
      const t = ticketOf(where);
      if (t !== undefined) ticketsUsed++;
      return t;
    };
    const login = { address: v4, id: "echo", password: BENCH_PASSWORD, instance: "bench", cache };
    const holder = await connectRelay(login);
    const ticketLogin = async () => (await connectRelay(login)).close();
    await perLogin(warmup, ticketLogin);
    ticketsUsed = 0;
    const ticketUs = await perLogin(n, ticketLogin);
    holder.close();

    // 3. Flood: rounds of 300 wrong-password logins for one ID from 127.0.0.1, all at
    //    once, with the device's own logins from ::1 started at the same instant.
    const rounds = quick ? 3 : 20;
    const legitPerRound = 5;
    ctx.progress(`login: ${rounds} rounds of ${FLOOD} wrong logins + ${legitPerRound} real ones`);
    const legitCache = new LoginCache();
    legitCache.ticket = () => undefined; // every legitimate login is a full one
    const legitLogin = { address: v6, id: "peer-a", password: BENCH_PASSWORD, cache: legitCache };
    // Derive once before timing: a real device caches its salted password.
    (await connectRelay(legitLogin)).close();
    const cpu0 = await cpuSeconds(relay.pid);
    const answers: Record<string, number> = {};
    const legit: number[] = [];
    let legitFailed = 0;
    for (let r = 0; r < rounds; r++) {
      const flood = Array.from({ length: FLOOD }, () =>
        wrongLogin(v4, "peer-a").then((code) => {
          answers[code] = (answers[code] ?? 0) + 1;
        }));
      const real = Array.from({ length: legitPerRound }, async () => {
        const t = performance.now();
        try {
          (await connectRelay(legitLogin)).close();
          legit.push(performance.now() - t);
        } catch {
          legitFailed++;
        }
      });
      await Promise.all([...flood, ...real]);
    }
    const floodCpu = await cpuSeconds(relay.pid) - cpu0;
    await relay.stop();
    relay = undefined;

    // 4. Restart storm: a fresh relay (a restarted one holds nothing), every device at once.
    const generators = quick ? 2 : 4;
    // Every generator connects from 127.0.0.1: 4 × 16 stays within the relay's 64 pending logins
    // per address (more are refused "retry in 1 s", as a real NAT address would be).
    const concurrency = 16;
    relay = await start("login-storm");
    ctx.progress(`login: restart storm, ${devices} devices × 2 connections`);
    const stormCpu0 = await cpuSeconds(relay.pid);
    const t0 = performance.now();
    const gens: Child[] = [];
    try {
      const per = Math.ceil(devices / generators);
      for (let g = 0; g < generators; g++) {
        gens.push(spawnLoad(`storm generator ${g + 1}`, {
          role: "idle",
          link: { mode: "relay", relay: `127.0.0.1:${relay.address.split(":").pop()}` },
          first: g * per,
          count: Math.min(per, devices - g * per),
          perDevice: 2,
          concurrency,
          keepaliveMs: 30_000,
        }));
      }
      let failed = 0;
      let connections = 0;
      for (const gen of gens) {
        const ready = await gen.waitEvent("ready", 300_000);
        failed += Number(ready.failed);
        connections += Number(ready.conns);
      }
      const seconds = (performance.now() - t0) / 1000;
      const stormCpu = await cpuSeconds(relay.pid) - stormCpu0;
      return {
        coldFullLogins: cold,
        relayCpuUsPerColdFullLogin: round(coldUs, 0),
        fullLogins: n,
        relayCpuUsPerFullLogin: round(fullUs, 0),
        relayCpuUsPerKeyCachedLogin: round(cachedUs, 0),
        ticketLogins: n,
        ticketsUsed,
        relayCpuUsPerTicketLogin: round(ticketUs, 0),
        storm: {
          devices,
          connections,
          generators,
          concurrency,
          secondsToAllOnline: round(seconds, 2),
          relayCpuS: round(stormCpu, 2),
          failed,
        },
        flood: {
          wrongLogins: FLOOD,
          floodAnswers: answers,
          rounds,
          legitLogins: legit.length,
          legitFailed,
          legitMs: summarize(legit),
          relayCpuS: round(floodCpu, 2),
        },
      };
    } finally {
      await stopAll(...gens);
    }
  } finally {
    await stopAll(relay);
  }
}

/** One login with a wrong proof; resolves to the name of the answer's code. */
async function wrongLogin(address: { hostname: string; port: number }, id: string) {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect(address);
  } catch (e) {
    return `connect failed: ${e instanceof Error ? e.name : e}`;
  }
  const framed = new FramedConn(conn);
  try {
    await framed.send({
      kind: "hello",
      version: PROTOCOL_VERSION,
      role: Role.Device,
      software: "bench",
    });
    await framed.send({
      kind: "login",
      id,
      nonce: newScramNonce(),
      instance: "",
      ticket: "",
      services: [],
    });
    const challenge = await framed.readMessage();
    if (challenge?.kind !== "loginChallenge") return codeName(challenge);
    void framed.trySend({ kind: "loginProof", proof: new Uint8Array(32) });
    return codeName(await framed.readMessage());
  } catch (e) {
    return `no answer (${e instanceof Error ? e.name : e})`;
  } finally {
    framed.close();
  }
}

function codeName(m: Awaited<ReturnType<FramedConn["readMessage"]>>): string {
  if (m === null) return "closed without an answer";
  if (m.kind === "loginResult" || m.kind === "error") {
    return ERROR_CODE_NAMES[m.code] ?? `${m.code}`;
  }
  return m.kind;
}

/** The scenario's section of the markdown report. */
export function renderLogin(r: LoginResult): string {
  const f = r.flood;
  const answers = Object.entries(f.floodAnswers).map(([k, v]) => `${k} ${v}`).join(", ");
  return [
    "## Logins (SCRAM-SHA-256, tickets, throttle)",
    "",
    "| figure | value |",
    "| --- | --- |",
    `| relay CPU per full login (${r.fullLogins} sequential, steady state; the device derives its key each time; accept and close included) | ${r.relayCpuUsPerFullLogin} µs |`,
    `| relay CPU per full login, device key cached (${r.fullLogins} sequential, no ticket) | ${r.relayCpuUsPerKeyCachedLogin} µs |`,
    `| relay CPU per ticket login (${r.ticketLogins} sequential, ${r.ticketsUsed} used a ticket) | ${r.relayCpuUsPerTicketLogin} µs |`,
    `| relay CPU per full login, first ${r.coldFullLogins} of a freshly started relay (JIT warming up) | ${r.relayCpuUsPerColdFullLogin} µs |`,
    `| restart storm: ${r.storm.devices} devices × 2 connections at once (${r.storm.generators} generators × ${r.storm.concurrency} in flight), time to all online | ${r.storm.secondsToAllOnline} s (${r.storm.connections} online, ${r.storm.failed} failed) |`,
    `| restart storm: relay CPU | ${r.storm.relayCpuS} s |`,
    `| legitimate login (from ::1) started with ${f.wrongLogins} parallel wrong-password logins for its ID (from 127.0.0.1), ${f.rounds} rounds: p50 / p99 / max | ${f.legitMs.p50} / ${f.legitMs.p99} / ${f.legitMs.max} ms (${f.legitLogins} logins, ${f.legitFailed} failed) |`,
    `| the flood's answers | ${answers} |`,
    `| relay CPU during the flood (${f.rounds * f.wrongLogins} wrong logins) | ${f.relayCpuS} s |`,
    "",
  ].join("\n");
}
