/**
 * Session setup roles: an echo target with an idle pool, a sequential requester, and a
 * "peer" that is both at once (for setups started from both sides at the same instant).
 *
 * One setup, as timed: CONNECT → (relay: NOTICE → ACCEPT) → ACCEPT arrives → write 1
 * byte → the target echoes it → the byte is read. Teardown (END both ways, RELEASE) is
 * not timed. The direct baseline is a TCP connect, a 1-byte write and its echo.
 *
 * "Target speaks first" reverses the byte: the target writes 1 byte right after its
 * ACCEPT, the requester's time stops when that byte arrives, then it answers with one.
 * The relay then writes ACCEPT and the data back to back on the requester's connection:
 * the pattern that stalls ~40 ms behind Nagle's algorithm where TCP_NODELAY is off.
 *
 * @module
 */

import type { RelayConnection } from "../agent/relay_client.ts";
import type { Link } from "./_load_types.ts";
import {
  BENCH_SERVICE,
  type EchoOptions,
  type PeerOptions,
  type RequesterOptions,
} from "./_load_types.ts";
import { type Commands, emit, login, loginRetrying, waitOnline, within } from "./_load_device.ts";

const ONE = new Uint8Array([0x2a]);
/** Longest a single setup step may take before it counts as failed. */
const STEP_TIMEOUT_MS = 5_000;

/** Outcome of one timed setup. */
type SetupOutcome = { ok: true; ms: number } | { ok: false; error: string };

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** One timed setup through the relay on an idle connection; teardown included, untimed. */
async function setupOnce(
  conn: RelayConnection,
  target: string,
  greetFirst = false,
): Promise<SetupOutcome> {
  const t0 = performance.now();
  try {
    const close = () => conn.close();
    const session = await within(conn.connect(target, BENCH_SERVICE), STEP_TIMEOUT_MS, close);
    if (!greetFirst) await session.write(ONE);
    const echo = await within(session.read(), STEP_TIMEOUT_MS, close);
    const ms = performance.now() - t0;
    if (echo === null || echo.length !== 1 || echo[0] !== ONE[0]) {
      throw new Error(`The target did not ${greetFirst ? "send" : "echo"} the byte`);
    }
    if (greetFirst) await session.write(ONE);
    await within(session.release(), STEP_TIMEOUT_MS, close);
    return { ok: true, ms };
  } catch (e) {
    return { ok: false, error: describe(e) };
  }
}

/** One timed TCP connect + 1-byte echo, the baseline. */
async function directOnce(port: number): Promise<SetupOutcome> {
  const t0 = performance.now();
  let socket: Deno.TcpConn | undefined;
  try {
    socket = await Deno.connect({ hostname: "127.0.0.1", port });
    socket.setNoDelay(true);
    await socket.write(ONE);
    const buf = new Uint8Array(1);
    const n = await within(socket.read(buf), STEP_TIMEOUT_MS, () => socket?.close());
    const ms = performance.now() - t0;
    if (n !== 1 || buf[0] !== ONE[0]) throw new Error("No echo");
    return { ok: true, ms };
  } catch (e) {
    return { ok: false, error: describe(e) };
  } finally {
    try {
      socket?.close();
    } catch {
      // closed by the timeout
    }
  }
}

/** Counters shared by the echo loops of one process. */
interface PoolStats {
  served: number;
  lost: number;
}

/**
 * Keeps `size` idle connections; each accepts a notice, echoes the first byte, then
 * finishes the session and is idle again. A lost connection is replaced. Idle
 * connections send a PING every keep-alive interval.
 */
async function startEchoPool(
  link: Extract<Link, { mode: "relay" }>,
  id: string,
  size: number,
  greetFirst = false,
): Promise<PoolStats> {
  const stats: PoolStats = { served: 0, lost: 0 };
  const idle = new Set<RelayConnection>();
  const serve = async (conn: RelayConnection): Promise<void> => {
    try {
      for (;;) {
        idle.add(conn);
        const m = await conn.nextControl();
        idle.delete(conn);
        if (m.kind !== "notice") throw new Error(`Expected NOTICE, got ${m.kind}`);
        const session = await conn.accept(m);
        if (greetFirst) {
          await session.write(ONE);
          await session.read();
        } else {
          const first = await session.read();
          if (first !== null) await session.write(first);
        }
        await session.release();
        stats.served++;
      }
    } catch {
      idle.delete(conn);
      conn.close();
      stats.lost++;
      serve(await loginRetrying(link, id)).catch(() => {});
    }
  };
  const conns: RelayConnection[] = [];
  for (let i = 0; i < size; i++) conns.push(await login(link, id));
  for (const c of conns) void serve(c);
  const keepaliveMs = conns[0]?.keepaliveMs || 30_000;
  const pinger = setInterval(() => {
    for (const c of idle) c.ping().catch(() => c.close());
  }, keepaliveMs);
  Deno.unrefTimer(pinger);
  return stats;
}

/** Echo target: a pool of idle connections (relay) or a TCP echo server (direct). */
export async function echo(o: EchoOptions): Promise<void> {
  const link = o.link;
  if (link.mode === "relay") {
    await startEchoPool(link, o.id, o.pool, o.greetFirst);
    emit("ready");
    // Serves until the bench closes stdin: Commands then exits the process.
    return;
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  emit("ready", { port: (listener.addr as Deno.NetAddr).port });
  for await (const socket of listener) {
    void (async () => {
      try {
        socket.setNoDelay(true);
        const buf = new Uint8Array(64);
        const n = await socket.read(buf);
        if (n !== null && n > 0) await socket.write(buf.subarray(0, 1));
        while ((await socket.read(buf)) !== null) { /* until the client closes */ }
      } catch {
        // the client went away
      } finally {
        try {
          socket.close();
        } catch {
          // already closed
        }
      }
    })();
  }
}

/**
 * Sequential setups toward `o.target`, timed one by one: each "go" runs `o.count` of them
 * (the first "go" runs `o.warmup` untimed ones before) and reports them as "result".
 */
export async function requester(o: RequesterOptions, commands: Commands): Promise<void> {
  const link = o.link;
  let conn = link.mode === "relay" ? await login(link, o.id) : null;
  if (conn && o.waitForTarget) await waitOnline(conn, o.target);
  emit("ready");
  // Between blocks the connection is idle: keep it alive like any device would.
  let busy = false;
  const pinger = setInterval(() => {
    if (!busy) conn?.ping().catch(() => {});
  }, conn?.keepaliveMs || 30_000);
  Deno.unrefTimer(pinger);
  let warmup = o.warmup;
  for (;;) {
    await commands.expect("go");
    busy = true;
    const samples: number[] = [];
    const failures: string[] = [];
    const started = performance.now();
    for (let i = 0; i < warmup + o.count; i++) {
      const outcome = conn === null
        ? await directOnce((link as { port: number }).port)
        : await setupOnce(conn, o.target, o.greetFirst);
      const counted = i >= warmup;
      if (outcome.ok) {
        if (counted) samples.push(outcome.ms);
      } else {
        if (counted) failures.push(outcome.error);
        if (conn !== null && link.mode === "relay") {
          conn.close();
          conn = await loginRetrying(link, o.id);
        }
      }
    }
    emit("result", {
      samples,
      failures,
      wallMs: performance.now() - started,
      setups: warmup + o.count,
    });
    warmup = 0;
    busy = false;
  }
}

/**
 * Both roles at once: an echo pool of `o.pool` idle connections, plus one more connection
 * (logged in last, as `tsunagi send` does beside a running `tsunagi run`) that starts a
 * setup toward `o.peer` on each "go N" command and reports it as event "round".
 */
export async function peer(o: PeerOptions, commands: Commands): Promise<void> {
  const stats = await startEchoPool(o.link, o.id, o.pool);
  let conn = await login(o.link, o.id);
  emit("ready");
  for (;;) {
    const [word, round] = (await commands.next()).split(" ");
    if (word === "stats") {
      emit("stats", { served: stats.served, lost: stats.lost });
      continue;
    }
    if (word !== "go") throw new Error(`Unknown command "${word}"`);
    const outcome = await setupOnce(conn, o.peer);
    if (!outcome.ok) {
      conn.close();
      conn = await loginRetrying(o.link, o.id);
    }
    emit("round", { round: Number(round), ...outcome });
  }
}
