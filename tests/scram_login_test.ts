/**
 * The SCRAM login against a relay running in this process (its counters are read
 * directly): what crosses the wire, what an attacker learns, what a flood costs.
 */

import assert from "node:assert/strict";
import { connectRelay } from "../agent/relay_client.ts";
import { LoginCache } from "../agent/login_cache.ts";
import { LoginRefusedError, UnsafeChallengeError } from "../shared/errors.ts";
import { FramedConn } from "../shared/framed_conn.ts";
import { ErrorCode, PROTOCOL_VERSION } from "../shared/protocol/constants.ts";
import { LoginThrottle } from "../relay/login/throttle.ts";
import { encodeMessage, type Message } from "../shared/protocol/messages.ts";
import { EmbeddedDirectory } from "../relay/directory.ts";
import { MemoryRegistry } from "../relay/registry/registry.ts";
import { makeVerifier } from "../relay/registry/verifier.ts";
import { type RelayHandle, startRelay } from "../relay/server.ts";
import { RawClient } from "./raw_device.ts";

const PASSWORD = "correct horse battery staple";

async function relayWith(
  devices: Record<string, string>,
  hostname = "127.0.0.1",
): Promise<RelayHandle> {
  const registry = new MemoryRegistry();
  for (const [id, password] of Object.entries(devices)) {
    await registry.put({
      id,
      type: "FAX",
      attributes: [],
      passwordHash: await makeVerifier(password),
      updatedAt: 1,
    });
  }
  return await startRelay({ hostname, port: 0, directory: new EmbeddedDirectory(registry) });
}

/** A TCP proxy in front of `port` that records every byte in both directions. */
function captureProxy(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const captured: Uint8Array[] = [];
  const pipes: Promise<void>[] = [];
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        captured.push(buf.slice(0, n));
        await to.write(buf.subarray(0, n));
      }
    } catch {
      // either side closed
    }
    try {
      to.close();
    } catch {
      // already closed
    }
  };
  const accepting = (async () => {
    for await (const client of listener) {
      const server = await Deno.connect({ hostname: "127.0.0.1", port });
      pipes.push(pipe(client, server), pipe(server, client));
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    bytes(): Uint8Array {
      const all = new Uint8Array(captured.reduce((n, c) => n + c.length, 0));
      let off = 0;
      for (const c of captured) {
        all.set(c, off);
        off += c.length;
      }
      return all;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      await Promise.all(pipes);
    },
  };
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("scram login: a wire capture of a whole login holds no password bytes", async () => {
  await using relay = await relayWith({ fax1: PASSWORD });
  await using proxy = captureProxy(relay.addr.port);
  const cache = new LoginCache();
  const address = { hostname: "127.0.0.1", port: proxy.port };
  for (let i = 0; i < 2; i++) { // full login, then a ticket login
    const conn = await connectRelay({ address, id: "fax1", password: PASSWORD, cache });
    await conn.list();
    conn.close();
  }
  await relay.shutdown();
  const wire = proxy.bytes();
  assert.ok(contains(wire, new TextEncoder().encode("fax1")), "the capture saw the login");
  for (
    const form of [PASSWORD, btoa(PASSWORD), encodeURIComponent(PASSWORD), "horse"]
  ) {
    assert.ok(!contains(wire, new TextEncoder().encode(form)), `password as ${form} on the wire`);
  }
});

Deno.test("scram login: the relay proves itself; the device refuses a relay that cannot", async () => {
  // Two relays with different verifiers for the same password: a relay holding another
  // verifier (an impostor who copied an old registry, say) fails the device's check.
  await using honest = await relayWith({ fax1: PASSWORD });
  const conn = await connectRelay({
    address: { hostname: "127.0.0.1", port: honest.addr.port },
    id: "fax1",
    password: PASSWORD,
    cache: new LoginCache(),
  });
  conn.close();
  // Tamper with the relay's answer: flip one bit of the ServerSignature in transit.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const relaying = (async () => {
    const client = await listener.accept();
    const server = await Deno.connect({ hostname: "127.0.0.1", port: honest.addr.port });
    const up = client.readable.pipeTo(server.writable).catch(() => {});
    const reader = server.readable.getReader();
    const writer = client.writable.getWriter();
    let seen = 0;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        // LOGIN_RESULT Ok ends with signature (32), ticket (2 + 32), ttl (4): flip the
        // signature's last byte.
        if (value[0] === 0x03 && seen++ === 0 && value.length > 80) value[value.length - 39] ^= 1;
        await writer.write(value);
      }
    } catch {
      // closed
    }
    await writer.close().catch(() => {});
    await up;
  })();
  await assert.rejects(
    connectRelay({
      address: { hostname: "127.0.0.1", port: listener.addr.port },
      id: "fax1",
      password: PASSWORD,
      cache: new LoginCache(),
    }),
    /could not prove it knows this device's password verifier/,
  );
  listener.close();
  await relaying;
});

/**
 * A relay that knows no verifier: it answers LOGIN with a challenge of its choosing and
 * reports what the device sent next ("proof" or "closed").
 */
async function impostor(
  iterations: number,
  prehash: string,
  login: (port: number) => Promise<unknown>,
): Promise<{ next: string; result: PromiseSettledResult<unknown> }> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    const framed = new FramedConn(await listener.accept());
    try {
      const signal = AbortSignal.timeout(5000);
      signal.onabort = () => framed.close();
      await framed.readMessage(); // HELLO
      const request = await framed.readMessage();
      assert.ok(request?.kind === "login");
      const salt = crypto.getRandomValues(new Uint8Array(16));
      const nonce = request.nonce + "ImpostorNonce0123456789";
      await framed.send({ kind: "loginChallenge", nonce, salt, iterations, prehash });
      const next = await framed.readMessage().catch(() => null);
      return next?.kind === "loginProof" ? "proof" : "closed";
    } finally {
      framed.close();
    }
  })();
  const [result] = await Promise.allSettled([login(listener.addr.port)]);
  return { next: await serving, result };
}

Deno.test("scram login: the device sends no proof to a relay asking for a cheap key derivation", async () => {
  const attempt = (minIterations?: number) => (port: number) =>
    connectRelay({
      address: { hostname: "127.0.0.1", port },
      id: "fax1",
      password: PASSWORD,
      cache: new LoginCache(),
      minIterations,
    }, { timeoutMs: 5000 });
  // 4096 rounds with the impostor's own salt: the proof would be cheap to attack offline.
  const cheap = await impostor(4096, "", attempt());
  assert.equal(cheap.next, "closed");
  assert.ok(cheap.result.status === "rejected");
  assert.ok(cheap.result.reason instanceof UnsafeChallengeError, String(cheap.result.reason));
  assert.match(
    cheap.result.reason.message,
    /4096 PBKDF2 iterations, fewer than this agent accepts \(100000\)/,
  );
  // A cheap scrypt prehash does not make up for few rounds either.
  const weakPrehash = await impostor(4096, `scrypt$1024$8$1$${"A".repeat(22)}==$32`, attempt());
  assert.equal(weakPrehash.next, "closed");
  // The registry's own cost is answered (the impostor then fails the device's check of
  // its signature), and so is a lower count the device was told to accept.
  assert.equal((await impostor(100_000, "", attempt())).next, "proof");
  assert.equal((await impostor(4096, "", attempt(4096))).next, "proof");
  // A migrated registration's strong prehash (scrypt 2^14, r 8) is accepted with 4096.
  assert.equal(
    (await impostor(4096, `scrypt$16384$8$1$${"A".repeat(22)}==$32`, attempt())).next,
    "proof",
  );
});

Deno.test("scram login: logins stalled after LOGIN fill every slot, yet a device gets in once they are 2 s old", async () => {
  // The throttle's clock is the test's: "2 s later" is a step, not a wait.
  let now = 1_000_000;
  await using relay = await startRelay({
    port: 0,
    directory: new EmbeddedDirectory(
      new MemoryRegistry([{
        id: "fax1",
        type: "FAX",
        attributes: [],
        passwordHash: await makeVerifier(PASSWORD),
        updatedAt: 1,
      }]),
    ),
    throttle: new LoginThrottle({ now: () => now, maxPending: 16, maxPendingPerAddress: 100 }),
  });
  // 16 logins that say HELLO and LOGIN, read their challenge, and never answer it.
  const stalls: FramedConn[] = [];
  try {
    for (let i = 0; i < 16; i++) {
      const framed = new FramedConn(
        await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port }),
      );
      stalls.push(framed);
      await framed.send({
        kind: "hello",
        version: PROTOCOL_VERSION,
        role: 1,
        software: "stall",
      });
      const nonce = crypto.getRandomValues(new Uint8Array(18)).toBase64();
      await framed.send({
        kind: "login",
        id: `stall-${i}`,
        nonce,
        instance: "",
        ticket: "",
        services: [],
      });
      assert.equal((await framed.readMessage())?.kind, "loginChallenge");
    }
    const login = () =>
      connectRelay({
        address: { hostname: "127.0.0.1", port: relay.addr.port },
        id: "fax1",
        password: PASSWORD,
        cache: new LoginCache(),
      });
    // Every slot is taken and young: refused, "retry in 1 s".
    await assert.rejects(
      login(),
      (e) => e instanceof LoginRefusedError && e.code === ErrorCode.Throttled,
    );
    now += 2000;
    // Now the oldest stalled login makes room, and is closed.
    (await login()).close();
    const signal = AbortSignal.timeout(5000);
    signal.onabort = () => stalls[0].close();
    assert.equal(
      await stalls[0].readMessage().catch(() => null),
      null,
      "the oldest stall was closed",
    );
    assert.ok(!signal.aborted);
  } finally {
    for (const s of stalls) s.close();
  }
});

/** Logs in by hand and returns the challenge and the final answer. */
async function rawAttempt(port: number, id: string, password: string) {
  const started = performance.now();
  const { client, answer } = await RawClient.login(port, id, password);
  const ms = performance.now() - started;
  const frames: Message[] = [];
  client.skipTo(0);
  const signal = AbortSignal.timeout(5000);
  for (let m = await client.readMessage(signal); m !== null; m = await client.readMessage(signal)) {
    frames.push(m);
    if (m.kind === "loginResult") break;
  }
  client.close();
  return { answer, frames, ms };
}

Deno.test("scram login: an unknown ID and a wrong password get identical answers", async () => {
  await using relay = await relayWith({ fax1: PASSWORD }, "127.0.0.1");
  const unknown = await rawAttempt(relay.addr.port, "ghost", "guess");
  const wrong = await rawAttempt(relay.addr.port, "fax1", "guess");
  // Same frames in the same order...
  assert.deepEqual(unknown.frames.map((m) => m.kind), ["loginChallenge", "loginResult"]);
  assert.deepEqual(wrong.frames.map((m) => m.kind), ["loginChallenge", "loginResult"]);
  // ...challenges of the same shape (only nonce and salt bytes differ; the fake one has
  // the registry's default iteration count, as the real one here)...
  const [uc, wc] = [unknown.frames[0], wrong.frames[0]];
  assert.ok(uc.kind === "loginChallenge" && wc.kind === "loginChallenge");
  assert.equal(encodeMessage(uc).length, encodeMessage(wc).length);
  assert.equal(uc.salt.length, wc.salt.length);
  assert.equal(uc.prehash, wc.prehash);
  // ...and byte-identical refusals.
  assert.deepEqual(encodeMessage(unknown.frames[1]), encodeMessage(wrong.frames[1]));
  // The fake salt is stable: asking again shows the same salt, like a registered ID.
  const again = await rawAttempt(relay.addr.port, "ghost", "guess2");
  assert.ok(again.frames[0].kind === "loginChallenge");
  assert.deepEqual(again.frames[0].salt, uc.salt);
});

Deno.test("scram login: unknown and wrong-password timings (measurement, printed)", async () => {
  const registry = new MemoryRegistry([{
    id: "fax1",
    type: "FAX",
    attributes: [],
    passwordHash: await makeVerifier(PASSWORD),
    updatedAt: 1,
  }]);
  await using relay = await startRelay({
    port: 0,
    directory: new EmbeddedDirectory(registry),
    throttle: new LoginThrottle({ freeFailures: 1e6, addressFreeFailures: 1e6 }),
  });
  // The relay's share only: LOGIN to LOGIN_CHALLENGE, and LOGIN_PROOF to LOGIN_RESULT,
  // with a random proof (no PBKDF2 on this side), alternating the two kinds.
  const times: Record<string, number[]> = { unknown: [], wrong: [] };
  const frames: Record<string, string[]> = { unknown: [], wrong: [] };
  for (let i = 0; i < 41; i++) {
    for (const kind of ["unknown", "wrong"] as const) {
      using c = await RawClient.open(relay.addr.port);
      const signal = AbortSignal.timeout(5000);
      const hello = encodeMessage({
        kind: "hello",
        version: PROTOCOL_VERSION,
        role: 1,
        software: "t",
      });
      const id = kind === "unknown" ? `ghost-${i}` : "fax1";
      const nonce = crypto.getRandomValues(new Uint8Array(18)).toBase64();
      let t = performance.now();
      await c.write(
        new Uint8Array([
          ...hello,
          ...encodeMessage({ kind: "login", id, nonce, instance: "", ticket: "", services: [] }),
        ]),
      );
      const challenge = await c.readMessage(signal);
      let ms = performance.now() - t;
      t = performance.now();
      await c.send({ kind: "loginProof", proof: crypto.getRandomValues(new Uint8Array(32)) });
      const result = await c.readMessage(signal);
      ms += performance.now() - t;
      times[kind].push(ms);
      frames[kind].push(
        `${challenge?.kind} ${result?.kind} ${result && encodeMessage(result).length}`,
      );
    }
  }
  const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[xs.length >> 1];
  console.log(
    `relay time per refused login (median of 41): unknown ID ${
      median(times.unknown).toFixed(3)
    } ms, ` +
      `wrong password ${median(times.wrong).toFixed(3)} ms`,
  );
  // Asserted: the same frames every time; the timings are a measurement only.
  assert.deepEqual(new Set(frames.unknown), new Set(frames.wrong));
  assert.equal(new Set(frames.unknown).size, 1);
});

Deno.test("scram login: 300 parallel wrong logins run at most 16 key checks; the device still gets in", async () => {
  // Dual stack: the flood comes from 127.0.0.1, the real device from ::1.
  await using relay = await relayWith({ fax1: PASSWORD }, "::");
  // In waves of 32 (under the 64 connections per address that may be logging in at once;
  // a larger crowd only pushes its own oldest members out before they reach a key check).
  const flood: Awaited<ReturnType<typeof RawClient.login>>[] = [];
  for (let i = 0; i < 300; i += 32) {
    flood.push(
      ...await Promise.all(
        Array.from(
          { length: Math.min(32, 300 - i) },
          () => RawClient.login(relay.addr.port, "fax1", "wrong"),
        ),
      ),
    );
  }
  const codes = new Map<number, number>();
  for (const { client, answer } of flood) {
    client.close();
    const code = answer?.kind === "loginResult" || answer?.kind === "error" ? answer.code : -1;
    codes.set(code, (codes.get(code) ?? 0) + 1);
  }
  const keyChecks = relay.metrics.logins.get("AuthFailed") ?? 0;
  // A pair that never failed gets a burst of 16 (relay/login/throttle.ts), then it locks.
  assert.ok(keyChecks <= 16, `${keyChecks} key checks for 300 wrong logins`);
  assert.ok(keyChecks >= 5, `${keyChecks} key checks: the flood should have reached the throttle`);
  assert.equal(codes.get(ErrorCode.AuthFailed) ?? 0, keyChecks);
  // Everything else was refused before any key check: throttled, or over the relay's
  // limit of unauthenticated connections per address (64).
  const refused = (codes.get(ErrorCode.Throttled) ?? 0) +
    (codes.get(ErrorCode.TooManyUnauthenticated) ?? 0);
  assert.equal(refused + keyChecks, 300, JSON.stringify([...codes]));
  // The flood's own address is locked for this ID now...
  await assert.rejects(
    connectRelay({
      address: { hostname: "127.0.0.1", port: relay.addr.port },
      id: "fax1",
      password: PASSWORD,
      cache: new LoginCache(),
    }),
    (e: unknown) => e instanceof LoginRefusedError && e.code === ErrorCode.Throttled,
  );
  // ...while the device, from its own address, logs in at once.
  const started = performance.now();
  const conn = await connectRelay({
    address: { hostname: "::1", port: relay.addr.port },
    id: "fax1",
    password: PASSWORD,
    cache: new LoginCache(),
  });
  console.log(`legitimate login after the flood: ${(performance.now() - started).toFixed(1)} ms`);
  conn.close();
});

/** A registry holding fax1 that counts its lookups (a full login reads it; a ticket login does not). */
async function countingRegistry(): Promise<{ registry: MemoryRegistry; lookups: () => number }> {
  const inner = new MemoryRegistry([{
    id: "fax1",
    type: "FAX",
    attributes: [],
    passwordHash: await makeVerifier(PASSWORD),
    updatedAt: 1,
  }]);
  let lookups = 0;
  const registry = Object.assign(Object.create(inner), {
    get: (id: string) => {
      lookups++;
      return inner.get(id);
    },
    list: () => inner.list(),
  });
  return { registry, lookups: () => lookups };
}

Deno.test("scram login: a pool connection logs in with the ticket, without a registry lookup", async () => {
  const { registry: counting, lookups } = await countingRegistry();
  await using relay = await startRelay({
    port: 0,
    directory: new EmbeddedDirectory(counting),
  });
  const cache = new LoginCache();
  const address = { hostname: "127.0.0.1", port: relay.addr.port };
  const login = { address, id: "fax1", password: PASSWORD, cache, instance: "i-1" };
  const first = await connectRelay(login);
  assert.equal(lookups(), 1);
  const pool = await Promise.all([connectRelay(login), connectRelay(login)]);
  assert.equal(lookups(), 1, "ticket logins do not read the registry");
  assert.equal(relay.metrics.logins.get("ok"), 3);
  // Another instance cannot use this instance's ticket: it gets a full login.
  const other = await connectRelay({ ...login, instance: "i-2" });
  assert.equal(lookups(), 2);
  for (const c of [first, ...pool, other]) c.close();
});

Deno.test("scram login: LOGOUT revokes the device's tickets; its next connection logs in in full", async () => {
  const { registry: counting, lookups } = await countingRegistry();
  await using relay = await startRelay({ port: 0, directory: new EmbeddedDirectory(counting) });
  const cache = new LoginCache();
  const address = { hostname: "127.0.0.1", port: relay.addr.port };
  const login = { address, id: "fax1", password: PASSWORD, cache, instance: "i-1" };
  const first = await connectRelay(login);
  const pooled = await connectRelay(login);
  assert.equal(lookups(), 1, "the pool connection used the ticket");
  await first.logout();
  // The relay closes every connection of the device: both reads end.
  for (const c of [first, pooled]) assert.equal(await c.framed.readFrame().catch(() => null), null);
  const again = await connectRelay(login);
  assert.equal(lookups(), 2, "after LOGOUT the cached ticket no longer logs in");
  for (const c of [first, pooled, again]) c.close();
});

Deno.test("scram login: a device keeps its 16 newest tickets; one account cannot crowd out others'", async () => {
  const { registry: counting, lookups } = await countingRegistry();
  await using relay = await startRelay({ port: 0, directory: new EmbeddedDirectory(counting) });
  const address = { hostname: "127.0.0.1", port: relay.addr.port };
  // 17 agents of fax1 (instances i-0..i-16), each a full login with its own ticket.
  const caches = Array.from({ length: 17 }, () => new LoginCache());
  for (const [i, cache] of caches.entries()) {
    (await connectRelay({ address, id: "fax1", password: PASSWORD, cache, instance: `i-${i}` }))
      .close();
  }
  assert.equal(lookups(), 17);
  const again = (i: number) =>
    connectRelay({ address, id: "fax1", password: PASSWORD, cache: caches[i], instance: `i-${i}` });
  (await again(16)).close();
  assert.equal(lookups(), 17, "the newest ticket still logs in");
  (await again(0)).close();
  assert.equal(lookups(), 18, "the oldest was dropped: a full login");
});
