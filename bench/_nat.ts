/**
 * NAT: a receiving agent (`tsunagi run --keepalive 2s`) behind a NAT that silently drops
 * its state (bench/_nat_proxy.ts). Per round, with a fresh relay, NAT and agent: freeze
 * every connection, start a `tsunagi send` to the agent at the same instant, and measure
 * (1) the time until a new connection through the NAT is logged in (reachable again),
 * against 1.5 keep-alive intervals, and (2) whether the send succeeds and how long it
 * took, with its retries. The rounds freeze at different points of the ping cycle.
 *
 * @module
 */

import { inboxContents, randomFile, runSend, startReceiver } from "./_agent.ts";
import type { AgentProc } from "./_agent.ts";
import { type BenchContext, benchRelay, sleep, stopAll } from "./_context.ts";
import { NatProxy } from "./_nat_proxy.ts";
import type { RelayProc } from "./_relay.ts";
import { median, round } from "./_stats.ts";
import { parseHostPort } from "../shared/address.ts";

/** The agent's keep-alive interval. */
const KEEPALIVE_MS = 2_000;
/** The relay's answer timeout: a notice on a dead connection is given up after this. */
const ANSWER_TIMEOUT_MS = 2_000;
/** The relay's default answer timeout (`relay/main.ts --help`), for the last full-run round. */
const DEFAULT_ANSWER_TIMEOUT_MS = 10_000;
/** `tsunagi send --timeout`. */
const SEND_TIMEOUT_S = 30;
/** How long to wait for the agent to be reachable again before calling it unreachable. */
const REACHABLE_DEADLINE_MS = 15_000;

/** One freeze. */
export interface NatRound {
  /** The relay's --answer-timeout, ms (its default when 10,000). */
  answerTimeoutMs: number;
  /** Delay between the agent's pool being up and the freeze, ms (varies the ping phase). */
  phaseMs: number;
  /** Connections frozen. */
  frozen: number;
  /** Freeze → the agent logged "relay connection dead", ms (null: it did not). */
  deadMs: number | null;
  /** Freeze → a new connection through the NAT logged in, ms (null: not within the deadline). */
  reachableMs: number | null;
  /** The send started at the freeze: exit code, ms from the freeze, retries, file arrived. */
  send: { code: number; ms: number; retries: number; arrived: boolean; error: string };
}

/** Result of the nat scenario. */
export interface NatResult {
  keepaliveMs: number;
  answerTimeoutMs: number;
  sendTimeoutS: number;
  /** 1.5 keep-alive intervals, ms. */
  targetMs: number;
  rounds: NatRound[];
  /** Worst and median reachability over the rounds (null if a round never got there). */
  reachableMaxMs: number | null;
  reachableMedianMs: number | null;
  /** Sends that succeeded (exit 0, the file in the inbox), of all rounds. */
  sendsOk: number;
  /** Send time from the freeze, ms: median and worst of the rounds at `answerTimeoutMs`. */
  sendMedianMs: number;
  sendMaxMs: number;
}

async function natRound(
  ctx: BenchContext,
  r: number,
  phaseMs: number,
  answerTimeoutMs: number,
  file: string,
): Promise<NatRound> {
  let relay: RelayProc | undefined;
  let agent: AgentProc | undefined;
  let proxy: NatProxy | undefined;
  try {
    relay = await benchRelay(ctx, `nat-${r}`, {
      flags: answerTimeoutMs === DEFAULT_ANSWER_TIMEOUT_MS
        ? []
        : ["--answer-timeout", `${answerTimeoutMs / 1000}s`],
    });
    proxy = new NatProxy(parseHostPort(relay.address));
    agent = await startReceiver(ctx, proxy.address, `nat-${r}`, [
      "--keepalive",
      `${KEEPALIVE_MS / 1000}s`,
      "--idle",
      "2",
    ]);
    const nat = proxy;
    if (!(await nat.waitUntil(() => nat.live >= 2, 15_000))) {
      throw new Error("The agent did not log in 2 connections through the NAT");
    }
    await sleep(phaseMs);
    const logsBefore = agent.child.logs.length;
    const frozenAt = Date.now();
    const frozen = nat.freeze();
    const sending = runSend(ctx, relay.address, "tx", file, SEND_TIMEOUT_S);
    await nat.waitUntil(() => nat.reachableAfterMs !== null, REACHABLE_DEADLINE_MS);
    const reachableMs = nat.reachableAfterMs;
    const send = await sending;
    const dead = agent.child.logs.slice(logsBefore).find((l) =>
      l.event === "relay connection dead"
    );
    const deadMs = dead ? Date.parse(String(dead.time)) - frozenAt : null;
    return {
      answerTimeoutMs,
      phaseMs,
      frozen,
      deadMs,
      reachableMs: reachableMs === null ? null : round(reachableMs, 0),
      send: {
        code: send.code,
        ms: round(send.ms, 0), // spawned at the freeze
        retries: send.retries,
        arrived: (await inboxContents(agent.inbox)).files === 1,
        error: send.error,
      },
    };
  } finally {
    await stopAll(agent?.child, relay);
    await proxy?.[Symbol.asyncDispose]();
  }
}

/** Scenario: reachability after a NAT drops its state, and a send in that window. */
export async function runNat(ctx: BenchContext): Promise<NatResult> {
  const n = ctx.config.natRounds;
  const file = await randomFile(ctx, "nat-send.bin", 256 * 1024);
  const rounds: NatRound[] = [];
  // Freezes spread over one ping interval; in a full run, one more with the relay's
  // default answer timeout, which is what a send meets on a relay left as installed.
  const plan = Array.from({ length: n }, (_, r) => ({
    phaseMs: Math.round(((r + 0.5) / n) * KEEPALIVE_MS),
    answerTimeoutMs: ANSWER_TIMEOUT_MS,
  }));
  if (!ctx.config.quick) {
    plan.push({ phaseMs: KEEPALIVE_MS / 2, answerTimeoutMs: DEFAULT_ANSWER_TIMEOUT_MS });
  }
  for (const [r, p] of plan.entries()) {
    ctx.progress(
      `nat: round ${r + 1}/${plan.length}, freeze ${p.phaseMs} ms after the pool is up, ` +
        `relay answer timeout ${p.answerTimeoutMs / 1000} s`,
    );
    rounds.push(await natRound(ctx, r, p.phaseMs, p.answerTimeoutMs, file));
  }
  const reach = rounds.map((r) => r.reachableMs);
  const complete = reach.every((x) => x !== null);
  const sends = rounds.filter((r) => r.answerTimeoutMs === ANSWER_TIMEOUT_MS).map((r) => r.send.ms);
  return {
    keepaliveMs: KEEPALIVE_MS,
    answerTimeoutMs: ANSWER_TIMEOUT_MS,
    sendTimeoutS: SEND_TIMEOUT_S,
    targetMs: 1.5 * KEEPALIVE_MS,
    rounds,
    reachableMaxMs: complete ? Math.max(...(reach as number[])) : null,
    reachableMedianMs: complete ? median(reach as number[]) : null,
    sendsOk: rounds.filter((r) => r.send.code === 0 && r.send.arrived).length,
    sendMedianMs: median(sends),
    sendMaxMs: Math.max(...sends),
  };
}
