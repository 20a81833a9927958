/**
 * Deterministic tests of the relay's connection state machine: in-memory connections,
 * timers fired by hand, no sockets and no sleeps. Devices are logged in directly (login
 * has its own tests); each runs the real device loop (serve.ts).
 */

import assert from "node:assert/strict";
import { FramedConn } from "../../shared/framed_conn.ts";
import { Logger } from "../../shared/log.ts";
import { EndReason, ErrorCode, FrameType, HEADER_SIZE } from "../../shared/protocol/constants.ts";
import { encodeFrame } from "../../shared/protocol/frame.ts";
import { encodeMessage, type Message } from "../../shared/protocol/messages.ts";
import { memoryPair } from "../../shared/testing/memory_conn.ts";
import { RelayMetrics } from "../admin/metrics.ts";
import { EmbeddedDirectory } from "../directory.ts";
import { LoginAuthority } from "../login/credentials.ts";
import { LoginThrottle } from "../login/throttle.ts";
import type { Registration, RegistryStore } from "../registry/registry.ts";
import { RelayConn } from "./conn.ts";
import { ConnectRate } from "./connect_rate.ts";
import { DEFAULT_LIMITS, type RelayContext, type RelayLimits } from "./context.ts";
import { LocalDevices } from "./local_devices.ts";
import { serveDevice } from "./serve.ts";
import { TargetWaits } from "./waits.ts";

/** Timers that fire only when the test says so. */
class ManualTimers {
  readonly pending = new Set<{ ms: number; fn: () => void }>();
  set = (ms: number, fn: () => void) => {
    const t = { ms, fn };
    this.pending.add(t);
    return () => void this.pending.delete(t);
  };
  /** Fires every pending timer. */
  fireAll(): void {
    const due = [...this.pending];
    this.pending.clear();
    for (const t of due) t.fn();
  }
}

const DEVICES: Record<string, { type: string; attributes: string[]; services: string[] }> = {
  pc1: { type: "USER", attributes: [], services: [""] },
  fax1: { type: "FAX", attributes: ["FILE TX/RX"], services: ["file"] },
  dev1: { type: "USER", attributes: [], services: ["ipp", "http"] },
};

class TestRegistry implements RegistryStore {
  get(id: string): Promise<Registration | undefined> {
    const d = DEVICES[id];
    return Promise.resolve(
      d && { id, type: d.type, attributes: d.attributes, passwordHash: "", updatedAt: 0 },
    );
  }
  list(): Promise<Registration[]> {
    return Promise.all(Object.keys(DEVICES).map((id) => this.get(id).then((r) => r!)));
  }
  put(): Promise<void> {
    return Promise.resolve();
  }
  remove(): Promise<boolean> {
    return Promise.resolve(false);
  }
}

/** A relay context with in-memory everything and hand-fired timers. */
function relay(timers = new ManualTimers(), overrides: Partial<RelayLimits> = {}) {
  let t = 0;
  const limits = { ...DEFAULT_LIMITS, ...overrides };
  const loops: Promise<void>[] = [];
  const ctx: RelayContext = {
    name: "r1",
    directory: new EmbeddedDirectory(new TestRegistry()),
    devices: new LocalDevices<RelayConn>("r1", () => {}, () => t),
    throttle: new LoginThrottle({ now: () => t }),
    logins: new LoginAuthority({ fakeKey: new Uint8Array(32), now: () => t }),
    registryWatch: { epoch: 0, recheck: () => {} },
    logger: Deno.env.get("CORE_DEBUG")
      ? new Logger({ component: "r1", level: "debug" })
      : Logger.silent(),
    metrics: new RelayMetrics(0),
    now: () => ++t,
    setTimer: timers.set,
    keepaliveMs: 15_000,
    answerTimeoutMs: 10_000,
    limits,
    waits: new TargetWaits(limits.maxWaitingPerTarget, timers.set),
    connectRate: new ConnectRate(limits.connectRate, limits.connectBurst),
    shuttingDown: false,
    linkSecret: null,
    advertisedAddress: "127.0.0.1:1",
    links: null,
    onControlLink: null,
  };
  /** Logs `id` in on a new in-memory connection; returns the device's end. */
  const connect = (id: string, services = DEVICES[id].services) => {
    const [relaySide, deviceSide] = memoryPair();
    const conn = new RelayConn(new FramedConn(relaySide), `mem:${id}`, "mem", ctx.now);
    conn.loggedIn(id, "", services);
    ctx.devices.attach(conn, DEVICES[id].type, DEVICES[id].attributes);
    loops.push(serveDevice(conn, ctx));
    return { conn, device: new FramedConn(deviceSide) };
  };
  return {
    ctx,
    timers,
    connect,
    [Symbol.asyncDispose]: async () => {
      for (const d of ctx.devices.devices()) for (const c of [...d.conns]) c.framed.close();
      await Promise.all(loops);
    },
  };
}

async function expectMessage<K extends Message["kind"]>(
  framed: FramedConn,
  kind: K,
): Promise<Extract<Message, { kind: K }>> {
  const m = await framed.readMessage();
  assert(m !== null && m.kind === kind, `expected ${kind}, got ${JSON.stringify(m)}`);
  return m as Extract<Message, { kind: K }>;
}

/** Lets every pending microtask and in-memory write run. */
async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setTimeout(r, 0));
}

/** pc1 asks fax1 for a file session and fax1 accepts: both sides are in the session. */
async function startSession(r: ReturnType<typeof relay>) {
  const pc = r.connect("pc1");
  const fax = r.connect("fax1");
  await pc.device.send({ kind: "connect", target: "fax1", service: "file" });
  const notice = await expectMessage(fax.device, "notice");
  await fax.device.send({ kind: "accept", session: notice.session, peer: "" });
  await expectMessage(pc.device, "accept");
  return { pc, fax, notice };
}

Deno.test("core: ACCEPT that arrives after the answer timeout fired never reaches the requester", async () => {
  await using r = relay();
  const pc = r.connect("pc1");
  const fax = r.connect("fax1");
  await pc.device.send({ kind: "connect", target: "fax1", service: "file" });
  const notice = await expectMessage(fax.device, "notice");
  // The deadline fires first; the target's ACCEPT is already on its way.
  r.timers.fireAll();
  await fax.device.send({ kind: "accept", session: notice.session, peer: "" }).catch(() => {});
  const answer = await pc.device.readMessage();
  assert.deepEqual(answer?.kind, "reject", JSON.stringify(answer));
  assert.deepEqual((answer as { code: number }).code, ErrorCode.TargetTimeout);
  await settle();
  assert.deepEqual(pc.conn.state, "idle", "the requester is idle, not in a session");
  assert.deepEqual(pc.conn.session, null);
  assert.deepEqual(fax.conn.state, "closed", "the silent target connection was dropped");
  // The requester can ask again at once: its state is consistent.
  await pc.device.send({ kind: "ping", nonce: 7 });
  assert.deepEqual((await expectMessage(pc.device, "pong")).nonce, 7);
});

Deno.test("core: ACCEPT just before the answer timeout wins; the late timer changes nothing", async () => {
  await using r = relay();
  const pc = r.connect("pc1");
  const fax = r.connect("fax1");
  await pc.device.send({ kind: "connect", target: "fax1", service: "file" });
  const notice = await expectMessage(fax.device, "notice");
  await fax.device.send({ kind: "accept", session: notice.session, peer: "" });
  const accept = await expectMessage(pc.device, "accept");
  r.timers.fireAll(); // nothing pending any more, or a no-op
  assert.deepEqual(accept.session, notice.session);
  assert.deepEqual(pc.conn.state, "session");
  assert.deepEqual(fax.conn.state, "session");
  // Data flows both ways, and nothing else (no REJECT) was queued to the requester.
  const data = encodeFrame(FrameType.Data, new Uint8Array([1, 2, 3]));
  await fax.device.write(data);
  const frame = await pc.device.readFrame();
  assert.deepEqual(frame?.type, FrameType.Data);
  assert.deepEqual([...frame!.payload], [1, 2, 3]);
});

Deno.test("core: a crossing CONNECT voids the notice; the requester gets the target's other connection", async () => {
  await using r = relay();
  const pc = r.connect("pc1");
  const pcIdle = r.connect("pc1");
  const faxOld = r.connect("fax1");
  const faxNew = r.connect("fax1"); // newest idle is picked first
  await pc.device.send({ kind: "connect", target: "fax1", service: "file" });
  const first = await expectMessage(faxNew.device, "notice");
  // The device asks for pc1 on the very connection that got the notice.
  await faxNew.device.send({ kind: "connect", target: "pc1", service: "" });
  const crossing = await expectMessage(pcIdle.device, "notice");
  const second = await expectMessage(faxOld.device, "notice");
  assert.notEqual(second.session, first.session);
  // A late answer to the voided notice is ignored, not a protocol error.
  await faxNew.device.send({ kind: "accept", session: first.session, peer: "" });
  await faxOld.device.send({ kind: "accept", session: second.session, peer: "" });
  await pcIdle.device.send({ kind: "accept", session: crossing.session, peer: "" });
  assert.equal((await expectMessage(pc.device, "accept")).session, second.session);
  assert.equal((await expectMessage(faxNew.device, "accept")).session, crossing.session);
  assert.equal(faxOld.conn.state, "session");
  assert.equal(faxNew.conn.state, "session");
});

Deno.test("core: RELEASE while a notice is pending closes that connection only; the notice moves on", async () => {
  await using r = relay();
  const pc = r.connect("pc1");
  const faxOld = r.connect("fax1");
  const faxNew = r.connect("fax1");
  await pc.device.send({ kind: "connect", target: "fax1", service: "file" });
  await expectMessage(faxNew.device, "notice");
  await faxNew.device.send({ kind: "release" });
  const error = await expectMessage(faxNew.device, "error");
  assert.equal(error.code, ErrorCode.UnexpectedMessage);
  const again = await expectMessage(faxOld.device, "notice");
  await faxOld.device.send({ kind: "reject", session: again.session, code: 23, message: "no" });
  const answer = await expectMessage(pc.device, "reject");
  assert.deepEqual(answer.code, ErrorCode.TargetRejected);
  assert.deepEqual(pc.conn.state, "idle");
  assert.deepEqual(faxOld.conn.state, "idle");
});

Deno.test("core: a service name over the limit is refused with FieldTooLong and wedges nothing", async () => {
  await using r = relay();
  const pc = r.connect("pc1");
  const fax = r.connect("fax1");
  await pc.device.send({ kind: "connect", target: "fax1", service: "s".repeat(65_000) });
  assert.deepEqual((await expectMessage(pc.device, "reject")).code, ErrorCode.FieldTooLong);
  assert.deepEqual(fax.conn.state, "idle");
  await pc.device.send({ kind: "connect", target: "fax1", service: "file" });
  await expectMessage(fax.device, "notice");
});

/** One session's bytes: two DATA frames and END, with the frame boundaries. */
function sessionBytes(): { bytes: Uint8Array; boundaries: Set<number> } {
  const frames = [
    encodeFrame(FrameType.Data, new Uint8Array(7).fill(1)),
    encodeFrame(FrameType.Data, new Uint8Array(3).fill(2)),
    encodeMessage({ kind: "end", reason: EndReason.Normal }),
  ];
  const bytes = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  const boundaries = new Set<number>([0]);
  let off = 0;
  for (const f of frames) {
    bytes.set(f, off);
    off += f.length;
    boundaries.add(off);
  }
  return { bytes, boundaries };
}

/** Reads until `n` bytes arrived or the stream ended (a failed read counts as its end). */
async function readUpTo(framed: FramedConn, n: number): Promise<Uint8Array> {
  const out: number[] = [];
  const buf = new Uint8Array(1024);
  while (out.length < n) {
    const chunk = await framed.readRaw(buf).catch(() => null);
    if (chunk === null) break;
    out.push(...chunk);
  }
  return new Uint8Array(out);
}

Deno.test("core: a requester that dies at every byte offset: the target sees a prefix and END(aborted) only on a boundary", async () => {
  const { bytes, boundaries } = sessionBytes();
  const endFrame = encodeMessage({ kind: "end", reason: EndReason.Aborted });
  // Offsets inside the last (END) frame: the relay has seen END, so the session ended.
  for (let cut = 0; cut < bytes.length - HEADER_SIZE; cut++) {
    await using r = relay();
    const { pc, fax } = await startSession(r);
    if (cut > 0) await pc.device.write(bytes.subarray(0, cut));
    await settle();
    pc.device.close();
    // The target is never left waiting: its stream ends, with nothing injected mid-frame.
    const prefix = bytes.subarray(0, cut);
    const got = await readUpTo(fax.device, prefix.length + endFrame.length);
    if (boundaries.has(cut)) {
      assert.deepEqual(
        [...got],
        [...prefix, ...endFrame],
        `cut at ${cut}: END(aborted) after data`,
      );
      assert.deepEqual(fax.conn.state, "session", `cut at ${cut}: target may RELEASE and reuse`);
    } else {
      assert.deepEqual([...got], [...prefix], `cut at ${cut}: the relay closed, injecting nothing`);
      await settle();
      assert.deepEqual(fax.conn.state, "closed", `cut at ${cut}`);
    }
    fax.device.close();
  }
});

Deno.test("core: after END(aborted) on a boundary the target ends, releases and takes the next notice", async () => {
  await using r = relay();
  const { pc, fax } = await startSession(r);
  pc.device.close();
  const end = await expectMessage(fax.device, "end");
  assert.deepEqual(end.reason, EndReason.Aborted);
  await fax.device.send({ kind: "end", reason: EndReason.Normal });
  await fax.device.send({ kind: "release" });
  await settle();
  assert.deepEqual(fax.conn.state, "idle");
  assert.ok(!fax.conn.inSession);
  const pc2 = r.connect("pc1");
  await pc2.device.send({ kind: "connect", target: "fax1", service: "file" });
  await expectMessage(fax.device, "notice");
});

/** Reads until `framed` has a message ready or the in-memory writes have all run. */
async function nothingArrives(framed: FramedConn): Promise<void> {
  const next = framed.readMessage();
  let got: Message | null | "none" = "none";
  next.then((m) => got = m, () => got = null);
  await settle();
  assert.equal(got, "none", `unexpected ${JSON.stringify(got)}`);
  next.catch(() => {});
}

Deno.test("core: a service the target does not declare is refused ServiceUnsupported without a notice", async () => {
  await using r = relay();
  const pc = r.connect("pc1");
  const dev = r.connect("dev1", ["ipp", "http", "file"]);
  await pc.device.send({ kind: "connect", target: "dev1", service: "smtp" });
  const answer = await expectMessage(pc.device, "reject");
  assert.equal(answer.code, ErrorCode.ServiceUnsupported);
  assert.match(answer.message, /does not offer service "smtp" \(it offers: http, ipp\)/);
  assert.equal(dev.conn.state, "idle");
  // `file` stays tied to the attribute: dev1 lacks FILE TX/RX, so the entry cannot list it.
  await pc.device.send({ kind: "connect", target: "dev1", service: "file" });
  assert.match((await expectMessage(pc.device, "reject")).message, /lacks the FILE TX\/RX/);
  assert.deepEqual(r.ctx.devices.entry("dev1")?.services, ["http", "ipp"]);
  await nothingArrives(dev.device);
});

Deno.test("core: a notice goes only to a connection that declared the service", async () => {
  await using r = relay();
  const pc = r.connect("pc1");
  const serving = r.connect("dev1");
  const requestOnly = r.connect("dev1", []); // e.g. a forwarder with the same ID: newest
  await pc.device.send({ kind: "connect", target: "dev1", service: "ipp" });
  const notice = await expectMessage(serving.device, "notice");
  assert.equal(notice.service, "ipp");
  assert.equal(requestOnly.conn.state, "idle");
  await nothingArrives(requestOnly.device);
});

Deno.test("core: requests for a busy target wait in order and take connections as they become idle", async () => {
  await using r = relay();
  const pcs = [r.connect("pc1"), r.connect("pc1"), r.connect("pc1")];
  const dev = r.connect("dev1");
  for (const pc of pcs) await pc.device.send({ kind: "connect", target: "dev1", service: "ipp" });
  const first = await expectMessage(dev.device, "notice");
  await settle();
  assert.equal(r.ctx.waits.waiting("dev1"), 2, "two requests wait; none was refused");
  // A REJECT makes the connection idle: the longest waiter gets the next notice.
  await dev.device.send({ kind: "reject", session: first.session, code: 23, message: "no" });
  assert.equal((await expectMessage(pcs[0].device, "reject")).code, ErrorCode.TargetRejected);
  const second = await expectMessage(dev.device, "notice");
  await dev.device.send({ kind: "accept", session: second.session, peer: "" });
  assert.equal((await expectMessage(pcs[1].device, "accept")).session, second.session);
  // The session ends and is released: the connection is idle again, the third request takes it.
  await pcs[1].device.send({ kind: "end", reason: EndReason.Normal });
  await dev.device.send({ kind: "end", reason: EndReason.Normal });
  await expectMessage(dev.device, "end");
  await dev.device.send({ kind: "release" });
  const third = await expectMessage(dev.device, "notice");
  await dev.device.send({ kind: "accept", session: third.session, peer: "" });
  assert.equal((await expectMessage(pcs[2].device, "accept")).session, third.session);
  assert.equal(r.ctx.waits.size, 0);
  assert.equal(r.timers.pending.size, 0, "every wait's deadline was cancelled");
});

Deno.test("core: a new login of the busy target wakes a waiting request", async () => {
  await using r = relay();
  const pc = r.connect("pc1");
  await pc.device.send({ kind: "connect", target: "fax1", service: "file" });
  assert.equal((await expectMessage(pc.device, "reject")).code, ErrorCode.TargetOffline);
  const busyFax = r.connect("fax1");
  await pc.device.send({ kind: "connect", target: "fax1", service: "file" });
  const pc2 = r.connect("pc1");
  const first = await expectMessage(busyFax.device, "notice");
  await pc2.device.send({ kind: "connect", target: "fax1", service: "file" });
  await settle();
  assert.equal(r.ctx.waits.waiting("fax1", "file"), 1);
  const fresh = r.connect("fax1"); // the agent's replacement connection logs in
  const notice = await expectMessage(fresh.device, "notice");
  assert.notEqual(notice.session, first.session);
});

Deno.test("core: a wait that reaches its deadline is refused TargetBusy; the queue bound refuses at once", async () => {
  await using r = relay(new ManualTimers(), { maxWaitingPerTarget: 1, targetWaitMs: 1500 });
  const pcs = [r.connect("pc1"), r.connect("pc1"), r.connect("pc1")];
  const dev = r.connect("dev1");
  await pcs[0].device.send({ kind: "connect", target: "dev1", service: "ipp" });
  await expectMessage(dev.device, "notice");
  await pcs[1].device.send({ kind: "connect", target: "dev1", service: "ipp" });
  await settle();
  await pcs[2].device.send({ kind: "connect", target: "dev1", service: "ipp" });
  const full = await expectMessage(pcs[2].device, "reject");
  assert.equal(full.code, ErrorCode.TargetBusy);
  assert.match(full.message, /1 requests already wait for it/);
  // Fire only the wait's deadline (the notice's answer timer stays pending).
  const waitTimer = [...r.timers.pending].find((t) => t.ms <= 1500);
  assert.ok(waitTimer, "the waiter armed its deadline");
  r.timers.pending.delete(waitTimer);
  waitTimer.fn();
  const late = await expectMessage(pcs[1].device, "reject");
  assert.equal(late.code, ErrorCode.TargetBusy);
  assert.match(late.message, /waited 1500 ms/);
  assert.equal(pcs[1].conn.state, "idle");
  assert.equal(r.ctx.waits.size, 0);
});

Deno.test("core: a requester over its rate is refused RateLimited before any lookup", async () => {
  await using r = relay(new ManualTimers(), { connectRate: 1, connectBurst: 2 });
  const pc = r.connect("pc1");
  const codes: number[] = [];
  for (let i = 0; i < 3; i++) {
    await pc.device.send({ kind: "connect", target: "nobody", service: "ipp" });
    codes.push((await expectMessage(pc.device, "reject")).code);
  }
  assert.deepEqual(codes, [
    ErrorCode.UnknownTarget,
    ErrorCode.UnknownTarget,
    ErrorCode.RateLimited,
  ]);
  // Another device has a bucket of its own.
  const fax = r.connect("fax1");
  await fax.device.send({ kind: "connect", target: "nobody", service: "" });
  assert.equal((await expectMessage(fax.device, "reject")).code, ErrorCode.UnknownTarget);
});

Deno.test("core: a burst of CONNECTs cannot pass the session limits together (slots are reserved at the check)", async () => {
  await using r = relay(new ManualTimers(), { maxSessionsPerDevice: 8, targetWaitMs: 0 });
  const pcs = Array.from({ length: 12 }, () => r.connect("pc1"));
  const faxes = Array.from({ length: 12 }, () => r.connect("fax1"));
  // All twelve ask at once; fax1 accepts every notice it gets.
  await Promise.all(
    pcs.map((pc) => pc.device.send({ kind: "connect", target: "fax1", service: "file" })),
  );
  const accepting = faxes.map(async (fax) => {
    const m = await fax.device.readMessage().catch(() => null);
    if (m?.kind === "notice") {
      await fax.device.send({ kind: "accept", session: m.session, peer: "" });
    }
  });
  const answers = await Promise.all(pcs.map((pc) => pc.device.readMessage()));
  const accepted = answers.filter((m) => m?.kind === "accept").length;
  const refused = answers.filter((m) => m?.kind === "reject" && m.code === ErrorCode.SessionLimit);
  assert.equal(accepted, 4, "one requester gets half of the target's 8 sessions, not more");
  assert.equal(refused.length, 8);
  for (const f of faxes) f.device.close();
  await Promise.all(accepting);
});
