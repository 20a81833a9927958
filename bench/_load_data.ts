/**
 * Bulk data roles: a receiver and a sender program. The only difference between relay
 * and direct mode is how a {@link Session} is obtained; reading and writing are the same
 * code (agent/session.ts) in both.
 *
 * @module
 */

import type { RelayConnection } from "../agent/relay_client.ts";
import type { Session } from "../agent/session.ts";
import {
  type Commands,
  directSession,
  drain,
  emit,
  frameBuffer,
  login,
  sendBytes,
  waitOnline,
} from "./_load_device.ts";
import {
  BENCH_SERVICE,
  type BulkRecvOptions,
  type BulkSendOptions,
  type SessionTiming,
} from "./_load_types.ts";

/** Receives `o.sessions` sessions, reads each to its END, answers END, reports bytes. */
export async function bulkRecv(o: BulkRecvOptions): Promise<void> {
  const link = o.link;
  if (link.mode === "relay") {
    const conns: RelayConnection[] = [];
    for (let i = 0; i < o.sessions; i++) conns.push(await login(link, o.id));
    emit("ready");
    const bytes = await Promise.all(conns.map(async (conn) => {
      const m = await conn.nextControl();
      if (m.kind !== "notice") throw new Error(`Expected NOTICE, got ${m.kind}`);
      const session = await conn.accept(m);
      const n = await drain(session);
      await session.release();
      return n;
    }));
    emit("done", { bytes });
    return;
  }
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  emit("ready", { port: (listener.addr as Deno.NetAddr).port });
  const served: Promise<number>[] = [];
  for (let i = 0; i < o.sessions; i++) {
    const socket = await listener.accept();
    served.push((async () => {
      const session = directSession(socket);
      const n = await drain(session);
      await session.end();
      await session.connection.framed.flush();
      session.connection.close();
      return n;
    })());
  }
  emit("done", { bytes: await Promise.all(served) });
}

/**
 * Opens `o.sessions` sessions, reports "ready", waits for "go", then sends `o.bytes` on
 * every session at once; each session's time runs until the receiver's END came back.
 */
export async function bulkSend(o: BulkSendOptions, commands: Commands): Promise<void> {
  const link = o.link;
  let sessions: Session[];
  if (link.mode === "relay") {
    const conns: RelayConnection[] = [];
    for (let i = 0; i < o.sessions; i++) conns.push(await login(link, o.id));
    if (o.waitForTarget) await waitOnline(conns[0], o.target);
    sessions = await Promise.all(conns.map((c) => c.connect(o.target, BENCH_SERVICE)));
  } else {
    const port = link.port!;
    sessions = [];
    for (let i = 0; i < o.sessions; i++) {
      sessions.push(directSession(await Deno.connect({ hostname: "127.0.0.1", port })));
    }
  }
  const buffers = sessions.map((_, i) => frameBuffer(i + 1));
  emit("ready");
  await commands.expect("go");
  const t0 = performance.now();
  const timings: SessionTiming[] = await Promise.all(sessions.map(async (session, i) => {
    const start = performance.now() - t0;
    await sendBytes(session, buffers[i], o.bytes);
    await session.end();
    const echoed = await drain(session);
    if (echoed !== 0) throw new Error(`Receiver sent ${echoed} unexpected bytes`);
    return { bytes: o.bytes, startMs: start, endMs: performance.now() - t0 };
  }));
  emit("result", { totalMs: performance.now() - t0, sessions: timings });
  if (link.mode === "relay") await Promise.all(sessions.map((s) => s.release()));
  for (const s of sessions) s.connection.close();
}
