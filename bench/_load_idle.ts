/**
 * Idle-capacity role: log in a share of the idle devices, hold their connections, and
 * send each connection a PING once per keep-alive period, spread evenly over the period
 * (as thousands of independent devices would).
 *
 * @module
 */

import type { RelayConnection } from "../agent/relay_client.ts";
import { type Commands, emit, loginRetrying } from "./_load_device.ts";
import { idleDeviceId, type IdleOptions } from "./_load_types.ts";

/** Control-mode read size: idle connections only ever read PONGs. */
const IDLE_READ_SIZE = 512;
/** Keep-alive scheduler tick. */
const TICK_MS = 100;

/** Logs in, reports "ready", holds the connections until stdin closes. */
export async function idle(o: IdleOptions, commands: Commands): Promise<void> {
  const conns: RelayConnection[] = [];
  const errors: string[] = [];
  let failed = 0;
  let lost = 0;
  let pings = 0;
  const started = performance.now();
  let next = 0;
  const loginWorker = async () => {
    while (next < o.count) {
      const id = idleDeviceId(o.first + next++);
      // One device's connections one after the other: the second finds the relay's
      // credential cache warm, as a real agent's pool would.
      for (let k = 0; k < o.perDevice; k++) {
        try {
          conns.push(await loginRetrying(o.link, id, { readSize: IDLE_READ_SIZE }));
        } catch (e) {
          failed++;
          if (errors.length < 5) errors.push(e instanceof Error ? e.message : String(e));
        }
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, loginWorker));
  const loginMs = performance.now() - started;
  for (const conn of conns) {
    // Each connection's own reader: PONGs are skipped by nextControl; anything else, or
    // the connection closing, means the relay dropped it.
    conn.nextControl().then(() => lost++, () => lost++);
  }
  const slots = Math.max(1, Math.round(o.keepaliveMs / TICK_MS));
  let tick = 0;
  const timer = setInterval(() => {
    const slot = tick++ % slots;
    for (let i = slot; i < conns.length; i += slots) {
      pings++;
      conns[i].ping().catch(() => {});
    }
  }, TICK_MS);
  emit("ready", {
    conns: conns.length,
    failed,
    errors,
    loginMs,
  });
  try {
    for (;;) {
      const line = await commands.next();
      if (line === "stats") emit("stats", { conns: conns.length, lost, pings });
      else throw new Error(`Unknown command "${line}"`);
    }
  } finally {
    clearInterval(timer);
  }
}
