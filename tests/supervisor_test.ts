/**
 * The agent library as a third party uses it: `superviseDevice` with a custom service,
 * `connect()` over warm connections, and liveness through `status()`/`onStatus`.
 */

import assert from "node:assert/strict";
import { parseHostPort } from "../shared/address.ts";
import { Logger } from "../shared/log.ts";
import { PeerUnavailableError } from "../shared/errors.ts";
import { ErrorCode } from "../shared/protocol/constants.ts";
import { type AgentStatus, superviseDevice } from "../agent/supervisor.ts";
import { register, startRelay, tempDir } from "./helpers.ts";

const quiet = new Logger({ level: "error", write: () => {} });

/** A relay with `devices` (ID to type) registered; `password(id)` reads a device's password. */
async function relayWith(devices: Record<string, string>, flags: string[] = []) {
  const dir = await tempDir();
  const files: Record<string, string> = {};
  for (const [id, type] of Object.entries(devices)) files[id] = await register(dir.path, id, type);
  const relay = await startRelay(dir.path, flags);
  return {
    relay,
    relays: [parseHostPort(relay.address)],
    password: async (id: string) => (await Deno.readTextFile(files[id])).trim(),
    async [Symbol.asyncDispose]() {
      await relay[Symbol.asyncDispose]();
      await dir[Symbol.asyncDispose]();
    },
  };
}

Deno.test("superviseDevice(): a custom service, pooled connect(), visible liveness", async () => {
  await using lab = await relayWith({ pc1: "USER", dev1: "PRINTER" });
  const { relay, relays, password } = lab;

  // The whole service: upper-cases what it reads, until the peer's END.
  await using _device = superviseDevice({
    relays,
    id: "dev1",
    password: await password("dev1"),
    logger: quiet,
    services: {
      upper: async (request) => {
        const session = await request.accept();
        await session.readable
          .pipeThrough(new TextDecoderStream())
          .pipeThrough(
            new TransformStream<string, string>({
              transform: (s, c) => c.enqueue(s.toUpperCase()),
            }),
          )
          .pipeThrough(new TextEncoderStream())
          .pipeTo(session.writable);
      },
    },
  });
  const seen: AgentStatus[] = [];
  await using pc = superviseDevice({
    relays,
    id: "pc1",
    password: await password("pc1"),
    logger: quiet,
    instance: null,
    onStatus: (s) => seen.push(s),
  });
  const loggedIn = (l: Record<string, unknown>) =>
    l.event === "login" || l.event === "connection added";
  await relay.proc.waitForCount(loggedIn, 4, "both pools to fill");

  for (let i = 0; i < 5; i++) {
    const session = await pc.connect("dev1", "upper");
    const writer = session.writable.getWriter();
    await writer.write(new TextEncoder().encode(`hello ${i}`));
    await writer.close(); // END: a half-close
    const answer = await new Response(session.readable).text();
    assert.equal(answer, `HELLO ${i}`);
    await session.release();
    assert.equal(await session.done, "released");
  }
  // The requester's five sessions rode on its warm connections.
  const pcLogins = relay.proc.lines.filter((l) => loggedIn(l) && l.device === "pc1");
  assert.ok(pcLogins.length <= 4, `${pcLogins.length} logins for 5 requests`);

  const status = pc.status();
  assert.equal(status.online, true);
  assert.ok(status.idle >= 2, JSON.stringify(status));
  assert.ok(status.lastHeardAt > 0);
  assert.ok(seen.length > 0 && seen.some((s) => s.busy > 0), "onStatus saw a busy connection");

  await assert.rejects(pc.connect("dev1", "nope"), (e) => {
    assert.ok(e instanceof PeerUnavailableError);
    // Refused by the relay from the directory: dev1 never saw the request.
    assert.equal(e.code, ErrorCode.ServiceUnsupported);
    assert.match(e.message, /does not offer service "nope" \(it offers: upper\)/);
    return true;
  });
  assert.equal(pc.status().online, true, "a refusal leaves the pool intact");
});

/** Resolves when `promise` does; rejects after `ms` with `what`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * 64 single-attempt echo sessions at once against dev1 (2 idle connections); returns
 * the error codes of the refused ones.
 */
async function burst(relayFlags: string[]): Promise<number[]> {
  await using lab = await relayWith({ pc1: "USER", dev1: "PRINTER" }, relayFlags);
  const { relays, password } = lab;
  const devReady = Promise.withResolvers<void>();
  await using _device = superviseDevice({
    relays,
    id: "dev1",
    password: await password("dev1"),
    logger: quiet,
    idle: 2,
    services: {
      echo: async (request) => {
        const session = await request.accept();
        await session.readable.pipeTo(session.writable);
      },
    },
    onStatus: (s) => s.idle >= 2 && devReady.resolve(),
  });
  const pcReady = Promise.withResolvers<void>();
  await using pc = superviseDevice({
    relays,
    id: "pc1",
    password: await password("pc1"),
    logger: quiet,
    idle: 64,
    instance: null,
    onStatus: (s) => s.idle >= 64 && pcReady.resolve(),
  });
  await within(Promise.all([devReady.promise, pcReady.promise]), 30_000, "pools to fill");
  // No retry here: every request is asked once; a refusal counts.
  const results = await within(
    Promise.allSettled(Array.from({ length: 64 }, async (_, i) => {
      const session = await pc.connect("dev1", "echo");
      const writer = session.writable.getWriter();
      await writer.write(new Uint8Array([i]));
      await writer.close();
      const echoed = new Uint8Array(await new Response(session.readable).arrayBuffer());
      assert.deepEqual([...echoed], [i]);
      await session.release();
    })),
    30_000,
    "64 sessions",
  );
  return results.flatMap((r) =>
    r.status === "fulfilled" ? [] : [r.reason instanceof PeerUnavailableError ? r.reason.code : -1]
  );
}

Deno.test("64 simultaneous setups against a device with 2 idle connections all succeed: the relay waits for its pool to refill", async () => {
  assert.deepEqual(await burst([]), [], "no request refused");
  // The same burst with the wait turned off: the relay refuses most of it TargetBusy.
  const refused = await burst(["--target-wait", "0"]);
  assert.ok(refused.length > 0, "without the wait some are refused");
  assert.ok(refused.every((c) => c === ErrorCode.TargetBusy), JSON.stringify(refused));
});

Deno.test("acceptFrom: a service's own list replaces the device-wide one for that service", async () => {
  await using lab = await relayWith({ pc1: "USER", pc2: "USER", dev1: "PRINTER" });
  const { relay, relays, password } = lab;
  const answer = async (request: { accept(): Promise<{ release(): Promise<void> }> }) => {
    await (await request.accept()).release();
  };
  await using _device = superviseDevice({
    relays,
    id: "dev1",
    password: await password("dev1"),
    logger: quiet,
    acceptFrom: new Set(["pc1"]),
    services: { echo: { handler: answer, acceptFrom: new Set(["pc2"]) }, other: answer },
  });
  const asks = async (id: "pc1" | "pc2", service: string): Promise<string> => {
    await using pc = superviseDevice({
      relays,
      id,
      password: await password(id),
      logger: quiet,
      instance: null,
    });
    try {
      await (await pc.connect("dev1", service)).release();
      return "accepted";
    } catch (e) {
      if (e instanceof PeerUnavailableError) return e.message;
      throw e;
    }
  };
  await relay.proc.waitFor((l) => l.event === "login" && l.device === "dev1", "dev1 online");
  assert.equal(await asks("pc2", "echo"), "accepted");
  assert.match(await asks("pc1", "echo"), /does not accept "echo" connections from pc1/);
  assert.equal(await asks("pc1", "other"), "accepted");
  assert.match(await asks("pc2", "other"), /does not accept connections from pc2/);
});

Deno.test("superviseDevice(): a burst's extra idle connections are closed after idleTrimMs, down to `idle`", async () => {
  await using lab = await relayWith({ pc1: "USER", dev1: "PRINTER" });
  const { relay, relays, password } = lab;
  await using _device = superviseDevice({
    relays,
    id: "dev1",
    password: await password("dev1"),
    logger: quiet,
    services: { hold: async (request) => await (await request.accept()).release() },
  });
  const idleCounts: number[] = [];
  const trimmed = Promise.withResolvers<void>();
  await using pc = superviseDevice({
    relays,
    id: "pc1",
    password: await password("pc1"),
    logger: quiet,
    instance: null,
    idle: 1,
    maxIdle: 8,
    keepaliveMs: 200,
    idleTrimMs: 300,
    onStatus: (s) => {
      idleCounts.push(s.idle);
      if (Math.max(...idleCounts) >= 4 && s.idle === 1) trimmed.resolve();
    },
  });
  await relay.proc.waitFor((l) => l.event === "login" && l.device === "dev1", "dev1 online");
  // Four sessions at once: the pool grows to four connections, idle again afterwards.
  const sessions = await Promise.all(Array.from({ length: 4 }, () => pc.connect("dev1", "hold")));
  await Promise.all(sessions.map((s) => s.release()));
  const deadline = setTimeout(() => trimmed.reject(new Error(`idle: ${idleCounts}`)), 10_000);
  await trimmed.promise.finally(() => clearTimeout(deadline));
  assert.equal(pc.status().idle, 1);
});
