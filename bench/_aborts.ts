/**
 * Aborts: many file sessions whose sender dies at a random byte offset (seeded; inside
 * frame headers, the file's header and trailer lines, and the body), against a real
 * `tsunagi run` receiver. Afterwards, within a deadline: sessions the relay still counts
 * for the receiver (hung), `.part` files left in its partial folder (leaked), files in its
 * inbox (none may arrive); then one real `tsunagi send` proves the agent still receives.
 *
 * @module
 */

import { countEvents, inboxContents, randomFile, runSend, startReceiver } from "./_agent.ts";
import { type BenchContext, benchRelay, sleep, spawnLoad, stopAll } from "./_context.ts";
import type { Child, JsonLine } from "./_procs.ts";
import { cpuSeconds } from "./_procs.ts";
import { round } from "./_stats.ts";
import { FILE_DEVICE } from "./_workspace.ts";
import type { AgentProc } from "./_agent.ts";

/** Seed of the cut offsets: the same cuts on every run. */
const SEED = 20261130;
/** How long after the last abort the relay and the agent get to clean up. */
const DEADLINE_MS = 10_000;

/** Result of the aborts scenario. */
export interface AbortsResult {
  sessions: number;
  concurrency: number;
  seed: number;
  /** Sessions accepted and then cut; sessions that never got an ACCEPT. */
  aborted: number;
  failed: number;
  errors: string[];
  /** CONNECTs refused and retried: busy (every idle connection of the agent in a session). */
  busyRetries: number;
  /** ... and offline: for a moment the agent had no connection at all (see README). */
  offlineRetries: number;
  /** Where the cuts fell: boundary, frame header, header line, body, trailer. */
  cuts: Record<string, number>;
  /** Session bytes written before the cuts, MiB. */
  mibSent: number;
  wallS: number;
  relayCpuS: number;
  deadlineS: number;
  /** At the deadline (or as soon as all were 0): the relay's STATUS of the receiver. */
  hungSessions: number;
  /** ... of the sender device (its connections are all gone). */
  senderSessions: number;
  /** ... `.part` files in the receiver's partial folder, files in its inbox. */
  partFiles: number;
  inboxFiles: number;
  /** ms from the last abort until every count above was 0; null if never within the deadline. */
  cleanAfterMs: number | null;
  /** What the agent logged: sessions accepted, failed, ended cleanly, files received. */
  agent: { accepted: number; failed: number; ended: number; received: number; running: boolean };
  /** A real `tsunagi send` of 1 MiB afterwards: exit code, seconds, files in the inbox after. */
  check: { code: number; s: number; error: string; inboxFiles: number };
}

async function status(gen: Child): Promise<JsonLine> {
  const from = gen.events.length;
  await gen.send("status");
  return await gen.waitEvent("status", 30_000, from);
}

/** Scenario: aborted senders against `tsunagi run`. */
export async function runAborts(ctx: BenchContext): Promise<AbortsResult> {
  const c = ctx.config;
  const relay = await benchRelay(ctx, "aborts");
  let agent: AgentProc | undefined;
  let gen: Child | undefined;
  try {
    agent = await startReceiver(ctx, relay.address, "aborts", [
      "--idle",
      String(c.abortConcurrency),
    ]);
    gen = spawnLoad("abort senders", {
      role: "abort-send",
      relay: relay.address,
      id: "tx",
      target: FILE_DEVICE,
      count: c.abortSessions,
      concurrency: c.abortConcurrency,
      seed: SEED,
    });
    await gen.waitEvent("ready", 30_000);
    // Start with the agent's whole idle pool up.
    const poolDeadline = Date.now() + 15_000;
    while (Number((await status(gen)).idle) < c.abortConcurrency && Date.now() < poolDeadline) {
      await sleep(100);
    }
    ctx.progress(`aborts: ${c.abortSessions} senders die at random offsets`);
    const cpu0 = await cpuSeconds(relay.pid);
    await gen.send("go");
    const done = await gen.waitEvent("done", 60_000 + c.abortSessions * 200);
    const cpu1 = await cpuSeconds(relay.pid);
    const t1 = performance.now();
    let cleanAfterMs: number | null = null;
    let last: JsonLine;
    let inbox: { files: number; parts: number };
    for (;;) {
      last = await status(gen);
      inbox = await inboxContents(agent.inbox);
      const clean = Number(last.sessions) === 0 && Number(last.senderSessions) === 0 &&
        inbox.parts === 0 && inbox.files === 0;
      if (clean) cleanAfterMs = performance.now() - t1;
      if (clean || performance.now() - t1 > DEADLINE_MS) break;
      await sleep(200);
    }
    const accounted = {
      accepted: countEvents(agent.child, "session accepted"),
      failed: countEvents(agent.child, "session failed") + countEvents(agent.child, "file refused"),
      ended: countEvents(agent.child, "session ended"),
      received: countEvents(agent.child, "file received"),
      running: !agent.child.exited,
    };
    ctx.progress("aborts: a real tsunagi send afterwards");
    const file = await randomFile(ctx, "aborts-check.bin", 1 << 20);
    const check = await runSend(ctx, relay.address, "tx", file, 20);
    return {
      sessions: c.abortSessions,
      concurrency: c.abortConcurrency,
      seed: SEED,
      aborted: Number(done.aborted),
      failed: Number(done.failed),
      errors: done.errors as string[],
      busyRetries: Number((done.retries as { busy: number }).busy),
      offlineRetries: Number((done.retries as { offline: number }).offline),
      cuts: done.cuts as Record<string, number>,
      mibSent: round(Number(done.bytesSent) / 2 ** 20, 1),
      wallS: round(Number(done.wallMs) / 1000, 1),
      relayCpuS: round(cpu1 - cpu0, 2),
      deadlineS: DEADLINE_MS / 1000,
      hungSessions: Number(last.sessions),
      senderSessions: Number(last.senderSessions),
      partFiles: inbox.parts,
      inboxFiles: inbox.files,
      cleanAfterMs: cleanAfterMs === null ? null : round(cleanAfterMs, 0),
      agent: accounted,
      check: {
        code: check.code,
        s: round(check.ms / 1000, 2),
        error: check.error,
        inboxFiles: (await inboxContents(agent.inbox)).files,
      },
    };
  } finally {
    await stopAll(gen, agent?.child, relay);
  }
}
