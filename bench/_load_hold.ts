/**
 * Roles that make the relay hold memory: connections that never log in (silent, or
 * holding a partial pre-login frame), and session pairs set up and then left idle.
 *
 * Both report "ready"/"idle" once their connections are up, answer "stats" with how many
 * the relay dropped meanwhile, and close everything on "close" ("closed").
 *
 * @module
 */

import type { RelayConnection } from "../agent/relay_client.ts";
import type { Session } from "../agent/session.ts";
import { parseHostPort } from "../shared/address.ts";
import { writeAll } from "../shared/framed_conn.ts";
import { FrameType, HEADER_SIZE } from "../shared/protocol/constants.ts";
import { writeHeader } from "../shared/protocol/frame.ts";
import { type Commands, emit, login, within } from "./_load_device.ts";
import { BENCH_SERVICE, type SessionsOptions, type UnauthOptions } from "./_load_types.ts";

const ONE = new Uint8Array([0x2a]);
/** Longest one login or setup may take before it counts as failed. */
const STEP_TIMEOUT_MS = 30_000;

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Runs `worker(i)` for i in 0..count-1, `concurrency` at a time. */
async function pool(count: number, concurrency: number, worker: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) await worker(next++);
  }));
}

function closeQuietly(conn: { close(): void }) {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** Holds `o.count` connections that never log in (see {@link UnauthOptions}). */
export async function unauth(o: UnauthOptions, commands: Commands): Promise<void> {
  const { hostname, port } = parseHostPort(o.relay);
  // A HELLO header declaring `declared` payload bytes, then that payload; each connection
  // writes the first `o.send` bytes of it and stops there.
  const frame = new Uint8Array(HEADER_SIZE + o.declared).fill(0x41);
  writeHeader(frame, 0, FrameType.Hello, o.declared);
  const prefix = frame.subarray(0, o.send);
  const conns: Deno.TcpConn[] = [];
  const errors: string[] = [];
  /** What the relay wrote before closing a connection (an ERROR frame's code), by code. */
  const closedWith: Record<string, number> = {};
  let failed = 0;
  let lost = 0;
  let closing = false;
  const watch = async (conn: Deno.TcpConn) => {
    const buf = new Uint8Array(64);
    let first: Uint8Array | null = null;
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        first ??= buf.slice(0, n);
      }
    } catch {
      // reset, or closed by "close"
    }
    if (closing) return;
    lost++;
    const code = first && first[0] === FrameType.Error && first.length >= HEADER_SIZE + 2
      ? String((first[HEADER_SIZE] << 8) | first[HEADER_SIZE + 1])
      : "none";
    closedWith[code] = (closedWith[code] ?? 0) + 1;
  };
  const t0 = performance.now();
  await pool(o.count, o.concurrency, async () => {
    try {
      const conn = await Deno.connect({ hostname, port });
      if (prefix.length) await writeAll(conn, prefix);
      conns.push(conn);
      void watch(conn);
    } catch (e) {
      failed++;
      if (errors.length < 5) errors.push(describe(e));
    }
  });
  emit("ready", { conns: conns.length, failed, errors, connectMs: performance.now() - t0 });
  for (;;) {
    const line = await commands.next();
    if (line === "stats") emit("stats", { conns: conns.length, lost, closedWith });
    else if (line === "close") {
      closing = true;
      for (const c of conns) closeQuietly(c);
      emit("closed", { conns: conns.length });
    } else throw new Error(`Unknown command "${line}"`);
  }
}

/** Logs in session pairs, sets the sessions up on "go", holds them (see {@link SessionsOptions}). */
export async function sessions(o: SessionsOptions, commands: Commands): Promise<void> {
  const requesters: RelayConnection[] = [];
  const targets: RelayConnection[] = [];
  const errors: string[] = [];
  let failedLogins = 0;
  const t0 = performance.now();
  for (const [id, into] of [[o.target, targets], [o.requester, requesters]] as const) {
    await pool(o.pairs, o.concurrency, async () => {
      try {
        into.push(await login(o.link, id, { readSize: 512 }));
      } catch (e) {
        failedLogins++;
        if (errors.length < 5) errors.push(`login ${id}: ${describe(e)}`);
      }
    });
  }
  const all = () => [...requesters, ...targets];
  const open: Session[] = [];
  let lost = 0;
  let closing = false;
  /** A session read that ends (data, END, a closed connection) means the relay let go. */
  const watch = (session: Session) => {
    open.push(session);
    session.read().then(() => !closing && lost++, () => !closing && lost++);
  };
  // Targets answer every notice: accept, echo the requester's byte, then hold.
  const accepted = targets.map(async (conn) => {
    const m = await conn.nextControl();
    if (m.kind !== "notice") throw new Error(`Expected NOTICE, got ${m.kind}`);
    const session = await conn.accept(m);
    const first = await session.read();
    if (first !== null) await session.write(first);
    watch(session);
  });
  for (const a of accepted) a.catch(() => {});
  emit("idle", {
    conns: requesters.length + targets.length,
    failed: failedLogins,
    errors,
    loginMs: performance.now() - t0,
  });
  await commands.expect("go");
  let ok = 0;
  let failed = 0;
  const t1 = performance.now();
  await pool(requesters.length, o.concurrency, async (i) => {
    const conn = requesters[i];
    const close = () => conn.close();
    try {
      const session = await within(conn.connect(o.target, BENCH_SERVICE), STEP_TIMEOUT_MS, close);
      await session.write(ONE);
      const echo = await within(session.read(), STEP_TIMEOUT_MS, close);
      if (echo === null || echo[0] !== ONE[0]) throw new Error("The target did not echo");
      ok++;
      watch(session);
    } catch (e) {
      failed++;
      if (errors.length < 10) errors.push(`setup: ${describe(e)}`);
    }
  });
  emit("sessions", { ok, failed, errors, setupMs: performance.now() - t1 });
  for (;;) {
    const line = await commands.next();
    if (line === "stats") emit("stats", { sessions: open.length, lost });
    else if (line === "close") {
      closing = true;
      for (const c of all()) c.close();
      emit("closed", { conns: all().length });
    } else throw new Error(`Unknown command "${line}"`);
  }
}
