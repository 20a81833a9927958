/**
 * `tsunagi run` against relays that misbehave on purpose: a path that silently drops
 * packets (a flushed NAT mapping), and a relay that replaces the agent's instance.
 */

import assert from "node:assert/strict";
import { FramedConn, writeAll } from "../shared/framed_conn.ts";
import { ErrorCode } from "../shared/protocol/constants.ts";
import type { Message } from "../shared/protocol/messages.ts";
import { LoginAuthority } from "../relay/login/credentials.ts";
import { FileRegistry, type RegistryStore } from "../relay/registry/registry.ts";
import { event, Proc, register, startAgent, startRelay, tempDir } from "./helpers.ts";

/**
 * A TCP forwarder to the relay whose existing connections can be frozen: from then on
 * their bytes are read and dropped in both directions, and a close is not passed on,
 * as when a NAT box forgets the mapping. New connections pass normally.
 */
class FreezingProxy implements AsyncDisposable {
  readonly listener: Deno.TcpListener;
  readonly #pairs: { conns: Deno.TcpConn[]; frozen: boolean }[] = [];
  readonly #tasks: Promise<void>[] = [];
  readonly #accepting: Promise<void>;

  constructor(target: string) {
    const [hostname, port] = [target.slice(0, target.lastIndexOf(":")), target.split(":").pop()];
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.listener = listener;
    this.#accepting = (async () => {
      for await (const inbound of listener) {
        const outbound = await Deno.connect({ hostname, port: Number(port) });
        const pair = { conns: [inbound, outbound], frozen: false };
        this.#pairs.push(pair);
        this.#tasks.push(this.#pump(pair, inbound, outbound), this.#pump(pair, outbound, inbound));
      }
    })().catch(() => {});
  }

  get address(): string {
    return `127.0.0.1:${this.listener.addr.port}`;
  }

  async #pump(pair: { frozen: boolean }, from: Deno.TcpConn, to: Deno.TcpConn) {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await from.read(buf).catch(() => null);
      if (n === null) break;
      if (!pair.frozen) await writeAll(to, buf.subarray(0, n)).catch(() => {});
    }
    if (!pair.frozen) {
      try {
        to.close();
      } catch {
        // already closed
      }
    }
  }

  /** Freezes every connection open now. */
  freezeAll(): number {
    for (const p of this.#pairs) p.frozen = true;
    return this.#pairs.length;
  }

  async [Symbol.asyncDispose]() {
    this.listener.close();
    await this.#accepting;
    for (const p of this.#pairs) {
      for (const c of p.conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
    }
    await Promise.all(this.#tasks);
  }
}

Deno.test("run: a connection that silently stops passing packets is declared dead and redialled", async () => {
  await using dir = await tempDir();
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path); // asks for a ping every 15 s
  await using proxy = new FreezingProxy(relay.address);
  await using fax = await startAgent(proxy.address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
    "--idle",
    "1",
    "--keepalive",
    "1s",
  ]);
  assert.equal(proxy.freezeAll(), 1);
  const dead = await fax.waitFor(event("relay connection dead"), "the dead-connection log");
  // It pinged at its own 1 s (shorter than the relay's 15 s) and says how long it was silent.
  assert.equal(dead.keepaliveMs, 1000);
  assert.equal(typeof dead.silentMs, "number");
  await fax.waitForCount(event("logged in"), 2, "the agent to log in again");
});

/** A minimal relay that logs devices in, answers PING and LIST, and can replace them. */
class FakeRelay implements AsyncDisposable {
  readonly listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #authority = new LoginAuthority({ fakeKey: new Uint8Array(32) });
  readonly #registry: RegistryStore;
  readonly logins: Extract<Message, { kind: "login" }>[] = [];
  readonly #live = new Set<FramedConn>();
  readonly #tasks: Promise<void>[] = [];
  readonly #accepting: Promise<void>;
  #waiters: (() => void)[] = [];

  constructor(registry: RegistryStore) {
    this.#registry = registry;
    this.#accepting = (async () => {
      for await (const conn of this.listener) this.#tasks.push(this.#serve(new FramedConn(conn)));
    })().catch(() => {});
  }

  get address(): string {
    return `127.0.0.1:${this.listener.addr.port}`;
  }

  async #serve(framed: FramedConn) {
    this.#live.add(framed);
    try {
      const hello = await framed.readMessage();
      const login = await framed.readMessage();
      if (hello?.kind !== "hello" || login?.kind !== "login") return;
      this.logins.push(login);
      for (const w of this.#waiters) w();
      const pending = this.#authority.resume(login.id, login.nonce, login.instance, login.ticket) ??
        this.#authority.challenge(
          login.id,
          login.nonce,
          login.instance,
          await this.#registry.get(login.id),
        );
      await framed.send(pending.challenge);
      const proof = await framed.readMessage();
      const grant = proof?.kind === "loginProof" ? pending.finish(proof.proof) : "no proof";
      if (typeof grant === "string") throw new Error(`FakeRelay: login failed: ${grant}`);
      await framed.send({
        kind: "loginResult",
        code: ErrorCode.Ok,
        keepaliveMs: 15_000,
        retryAfterMs: 0,
        relay: "fake",
        message: "",
        signature: grant.signature,
        ticket: grant.ticket,
        ticketTtlMs: grant.ticketTtlMs,
      });
      for (;;) {
        const m = await framed.readMessage();
        if (m === null) return;
        if (m.kind === "ping") await framed.send({ kind: "pong", nonce: m.nonce });
        if (m.kind === "list") await framed.send({ kind: "listResult", more: false, entries: [] });
      }
    } catch {
      // closed under us
    } finally {
      this.#live.delete(framed);
      framed.close();
    }
  }

  /** Waits (with a deadline) until `n` logins arrived. */
  async waitLogins(n: number, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.logins.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`Timed out waiting for ${n} logins (got ${this.logins.length})`);
      }
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = setTimeout(resolve, left);
      this.#waiters.push(resolve);
      await promise;
      clearTimeout(timer);
      this.#waiters = this.#waiters.filter((w) => w !== resolve);
    }
  }

  /** Tells every logged-in connection it was replaced, and closes it. */
  async replaceAll(): Promise<void> {
    await Promise.all([...this.#live].map(async (framed) => {
      await framed.trySend({
        kind: "error",
        code: ErrorCode.Replaced,
        message: "Device fax1 logged in from another agent instance",
      });
      framed.close();
    }));
  }

  async [Symbol.asyncDispose]() {
    this.listener.close();
    await this.#accepting;
    for (const f of this.#live) f.close();
    await Promise.all(this.#tasks);
  }
}

Deno.test("run: one instance token per process, none for one-shot commands; Replaced stops it for good", async () => {
  await using dir = await tempDir();
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = new FakeRelay(await FileRegistry.open(dir.path));
  await using fax = await startAgent(relay.address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
    "--idle",
    "2",
  ]);
  await relay.waitLogins(2);
  const [a, b] = relay.logins;
  assert.ok(a.instance && a.instance.length >= 16, `instance token: ${a.instance}`);
  assert.equal(b.instance, a.instance, "every connection of one process: the same token");

  const list = new Proc([
    "run",
    "-A",
    "agent/main.ts",
    "list",
    "--relay",
    relay.address,
    "--id",
    "fax1",
    "--password-file",
    faxPw,
  ]);
  assert.equal((await list.wait()).code, 0, list.rawStderr.join("\n"));
  assert.equal(relay.logins.length, 3);
  assert.equal(relay.logins[2].instance ?? "", "", "a one-shot command sends no instance");

  await relay.replaceAll();
  const status = await fax.wait(15_000);
  assert.equal(status.code, 3, fax.rawStderr.join("\n"));
  const stderr = fax.rawStderr.join("\n");
  assert.match(stderr, /^tsunagi: Stopped: Another agent logged in as "fax1" and took over/m);
  assert.ok(fax.count(event("replaced by another agent")) >= 1);
  assert.equal(relay.logins.length, 3, "no login attempt after being replaced");
});

Deno.test("run: a second agent with the same ID replaces the first (needs the relay's Replaced)", async () => {
  await using dir = await tempDir();
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path);
  await using first = await startAgent(relay.address, "fax1", faxPw, ["--inbox", `${dir.path}/a`]);
  await using second = await startAgent(relay.address, "fax1", faxPw, ["--inbox", `${dir.path}/b`]);
  const status = await first.wait(15_000);
  assert.equal(status.code, 3, first.rawStderr.slice(-5).join("\n"));
  assert.match(first.rawStderr.join("\n"), /took over/);
  assert.equal(second.count(event("replaced by another agent")), 0);
});
