/**
 * `registry passwd` and `registry remove` end a device's logins on every relay that knows
 * it (its open connections and its tickets); `registry set` ends none. Through the file
 * registry and Redis with a relay in this process, and across a 2-relay mesh with real
 * relay and agent processes.
 */

import assert from "node:assert/strict";
import { connectRelay, type RelayConnection, type RelayLogin } from "../agent/relay_client.ts";
import { LoginCache } from "../agent/login_cache.ts";
import { LoginRefusedError, RelayError } from "../shared/errors.ts";
import { Logger } from "../shared/log.ts";
import { ErrorCode, PROTOCOL_VERSION, Role } from "../shared/protocol/constants.ts";
import { encodeMessage } from "../shared/protocol/messages.ts";
import { authMessage, clientProof, newScramNonce, saltedPassword } from "../shared/scram.ts";
import { EmbeddedDirectory } from "../relay/directory.ts";
import { RedisDirectory } from "../relay/redis/redis_directory.ts";
import { registryMain } from "../relay/registry/main.ts";
import { FileRegistry, MemoryRegistry } from "../relay/registry/registry.ts";
import { makeVerifier } from "../relay/registry/verifier.ts";
import { startRelay as startRelayInProcess } from "../relay/server.ts";
import {
  event,
  type LogLine,
  type Proc,
  register,
  startAgent,
  startMesh,
  tempDir,
} from "./helpers.ts";
import { RedisServer } from "./redis_helpers.ts";
import { concat, RawClient } from "./raw_device.ts";

const ID = "fax1";
const PASSWORD = `pw-${ID}`; // what register() writes

/** A relay's log lines, collected in this process, with waits on them. */
class LogTap {
  readonly lines: LogLine[] = [];
  readonly #waiters = new Set<() => void>();
  readonly logger = new Logger({
    level: "debug",
    format: "json",
    rateLimit: false,
    write: (line) => {
      this.lines.push(JSON.parse(line));
      for (const w of this.#waiters) w();
    },
  });

  /** Waits (bounded) until a line matches `predicate`. */
  async waitFor(predicate: (l: LogLine) => boolean, what: string, timeoutMs = 10_000) {
    const deadline = AbortSignal.timeout(timeoutMs);
    while (!this.lines.some(predicate)) {
      if (deadline.aborted) throw new Error(`Timed out waiting for ${what}`);
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#waiters.add(resolve);
      deadline.addEventListener("abort", () => resolve(), { once: true });
      await promise;
      this.#waiters.delete(resolve);
    }
  }
}

/** Runs `deno task registry ARGS` in this process; asserts it succeeded. */
async function registry(...args: string[]): Promise<void> {
  const err: string[] = [];
  const code = await registryMain(args, {
    stdout: () => {},
    stderr: (s) => err.push(s),
  });
  assert.equal(code, 0, `registry ${args.join(" ")}: ${err.join("")}`);
}

/**
 * The device's first connection (full login: the cache gets a ticket) and a second
 * one made with the ticket and a wrong password: only a ticket login can succeed so.
 */
async function loginTwice(login: RelayLogin): Promise<RelayConnection[]> {
  const first = await connectRelay(login);
  const second = await connectRelay({ ...login, password: "not the password" });
  return [first, second];
}

/** Resolves to the error that ends `conn` (it must end within the deadline). */
async function ending(conn: RelayConnection, timeoutMs = 10_000): Promise<unknown> {
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    for (;;) {
      const m = await conn.nextMessage();
      if (m.kind !== "pong") return new Error(`unexpected ${m.kind}`);
    }
  } catch (e) {
    return e;
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}

/** Asserts that `e` is the relay's `ERROR AuthFailed` with a message matching `why`. */
function assertRevoked(e: unknown, why: RegExp) {
  assert.ok(e instanceof RelayError, `expected ERROR AuthFailed, got ${e}`);
  assert.equal(e.code, ErrorCode.AuthFailed);
  assert.match(e.message, why);
}

/** A login made with the ticket the cache holds (wrong password): refused. */
async function assertTicketRefused(login: RelayLogin) {
  await assert.rejects(
    connectRelay({ ...login, password: "not the password" }),
    (e) => e instanceof LoginRefusedError && e.code === ErrorCode.AuthFailed,
    "the old ticket still logs in",
  );
}

/** A relay in this process over `<dir>/registry.json`, checking it every 20 ms. */
async function fileRelay(dir: string, tap: LogTap) {
  await register(dir, ID, "FAX");
  return await startRelayInProcess({
    port: 0,
    directory: new EmbeddedDirectory(await FileRegistry.open(dir)),
    registryPollMs: 20,
    logger: tap.logger,
  });
}

/**
 * A file relay over `dir` with the device logged in twice (a login and a ticket login),
 * and a promise per connection of how it ended. Disposing it stops the relay.
 */
async function loggedInTwice(dir: string) {
  const tap = new LogTap();
  const relay = await fileRelay(dir, tap);
  const login = loginTo(relay.addr.port);
  const ended = (await loginTwice(login)).map((c) => ending(c));
  return { tap, relay, login, ended, [Symbol.asyncDispose]: () => relay[Symbol.asyncDispose]() };
}

function loginTo(port: number): RelayLogin {
  return {
    address: { hostname: "127.0.0.1", port },
    id: ID,
    password: PASSWORD,
    instance: "agent-1",
    cache: new LoginCache(),
  };
}

Deno.test("revoke: registry passwd closes the device's connections and refuses its old ticket", async () => {
  await using dir = await tempDir();
  await using c = await loggedInTwice(dir.path);
  const { tap, login, ended } = c;
  await Deno.writeTextFile(`${dir.path}/new.pw`, "a new password\n");
  await registry("passwd", ID, "--password-file", `${dir.path}/new.pw`, "--data", dir.path);
  for (const e of await Promise.all(ended)) assertRevoked(e, /Password changed/);
  await assertTicketRefused(login);
  // The old password fails, the new one logs in.
  await assert.rejects(connectRelay({ ...login, cache: new LoginCache() }), LoginRefusedError);
  const fresh = await connectRelay({ ...login, password: "a new password" });
  fresh.close();
  await tap.waitFor(
    event("logins revoked", { device: ID, reason: "password changed", connections: 2 }),
    "the relay's log line",
  );
});

Deno.test("revoke: registry remove closes the device's connections and refuses its old ticket", async () => {
  await using dir = await tempDir();
  await using c = await loggedInTwice(dir.path);
  const { relay, login, ended } = c;
  await registry("remove", ID, "--data", dir.path);
  for (const e of await Promise.all(ended)) assertRevoked(e, /Registration removed/);
  await assertTicketRefused(login);
  assert.equal(relay.deviceCount, 0);
});

Deno.test("revoke: registry set --attr keeps the device's connections and ticket, with the new attributes", async () => {
  await using dir = await tempDir();
  const tap = new LogTap();
  await using relay = await fileRelay(dir.path, tap);
  const login = loginTo(relay.addr.port);
  const [conn, second] = await loginTwice(login);
  second.close();
  await registry("set", ID, "--attr", "FILE TX/RX", "--data", dir.path);
  await tap.waitFor(event("registration changed", { device: ID }), "the relay to apply the change");
  // Still logged in: the connection answers, the directory shows the new attribute...
  assert.deepEqual((await conn.status(ID))?.attributes, ["FILE TX/RX"]);
  // ...and the ticket still logs in (wrong password: only the ticket can).
  const again = await connectRelay({ ...login, password: "not the password" });
  again.close();
  conn.close();
  assert.equal(tap.lines.filter((l) => l.event === "logins revoked").length, 0);
});

Deno.test("revoke: through Redis, passwd and remove end the logins on a relay sharing it", async () => {
  await using server = await RedisServer.start();
  await using dir = await tempDir();
  const url = server.url();
  await Deno.writeTextFile(`${dir.path}/pw`, `${PASSWORD}\n`);
  await Deno.writeTextFile(`${dir.path}/new.pw`, "a new password\n");
  await registry(
    "add",
    ID,
    "--type",
    "FAX",
    "--password-file",
    `${dir.path}/pw`,
    "--directory",
    url,
  );
  const tap = new LogTap();
  await using relay = await startRelayInProcess({
    port: 0,
    directory: await RedisDirectory.open(url, { logger: tap.logger }),
    registryPollMs: 20,
    logger: tap.logger,
  });
  const login = loginTo(relay.addr.port);

  let ended = (await loginTwice(login)).map((c) => ending(c));
  await registry("passwd", ID, "--password-file", `${dir.path}/new.pw`, "--directory", url);
  for (const e of await Promise.all(ended)) assertRevoked(e, /Password changed/);
  await assertTicketRefused(login);

  ended = (await loginTwice({ ...login, password: "a new password" })).map((c) => ending(c));
  await registry("remove", ID, "--directory", url);
  for (const e of await Promise.all(ended)) assertRevoked(e, /Registration removed/);
  await assertTicketRefused(login);
});

/** Waits for `agent` to exit 3 with one error line matching `why`, and a hint. */
async function assertStopped(agent: Proc, why: RegExp) {
  const status = await agent.wait(30_000);
  assert.equal(status.code, 3, agent.rawStderr.join("\n"));
  const error = agent.rawStderr.filter((l) => l.startsWith("tsunagi: "));
  assert.equal(error.length, 1, agent.rawStderr.join("\n"));
  assert.match(error[0], why);
  assert.ok(agent.rawStderr.some((l) => l.startsWith("hint: ") && l.includes("--password-file")));
}

Deno.test("revoke: across a 2-relay mesh, passwd and remove at r0 stop the agent on r1 with the reason (exit 3)", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const pw = await register(r0, ID, "FAX", ["FILE TX/RX"]);
  await using relays = await startMesh(dir.path, 2, [[0, 1]]);
  const r1 = relays[1];
  await r1.proc.waitFor(
    (l) => l.event === "notice" && l.t === "reg" && l.key === ID && l.action === "applied",
    "r1 to learn the registration",
  );
  const newPw = `${dir.path}/new.pw`;
  await Deno.writeTextFile(newPw, "a new password\n");
  {
    await using agent = await startAgent(r1.address, ID, pw);
    await registry("passwd", ID, "--password-file", newPw, "--data", r0);
    await assertStopped(agent, /^tsunagi: Logged out: Password changed: .*\(then refused: /);
    await r1.proc.waitFor(
      event("logins revoked", { device: ID, reason: "password changed" }),
      "r1 to revoke",
    );
  }
  {
    await using agent = await startAgent(r1.address, ID, newPw);
    await registry("remove", ID, "--data", r0);
    await assertStopped(agent, /^tsunagi: Logged out: Registration removed: .*\(then refused: /);
    await r1.proc.waitFor(
      event("logins revoked", { device: ID, reason: "registration removed" }),
      "r1 to revoke",
    );
  }
});

/** A registry that counts the calls of `generation()` and wakes a waiter on each. */
class CountingRegistry extends MemoryRegistry {
  calls = 0;
  #wake: (() => void) | null = null;
  override generation(): Promise<number> {
    this.calls++;
    this.#wake?.();
    return super.generation();
  }
  /** Waits (bounded) until `generation()` was called `n` times in all. */
  async called(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = AbortSignal.timeout(timeoutMs);
    while (this.calls < n) {
      if (deadline.aborted) throw new Error(`generation() called ${this.calls} times, not ${n}`);
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#wake = resolve;
      deadline.addEventListener("abort", () => resolve(), { once: true });
      await promise;
    }
  }
}

Deno.test("revoke: a login that read the old registration and finishes after the check is revoked too", async () => {
  const reg = {
    id: ID,
    type: "FAX",
    attributes: [],
    passwordHash: await makeVerifier(PASSWORD),
    updatedAt: 1,
  };
  const registry = new CountingRegistry([reg]);
  await using relay = await startRelayInProcess({
    port: 0,
    directory: new EmbeddedDirectory(registry),
    registryPollMs: 10,
  });
  const signal = AbortSignal.timeout(10_000);
  using client = await RawClient.open(relay.addr.port);
  const clientNonce = newScramNonce();
  await client.write(concat(
    encodeMessage({ kind: "hello", version: PROTOCOL_VERSION, role: Role.Device, software: "t" }),
    encodeMessage({
      kind: "login",
      id: ID,
      nonce: clientNonce,
      instance: "",
      ticket: "",
      services: [],
    }),
  ));
  // The relay read the registration and sent its challenge; now the password changes,
  // and the check that follows runs while this device is not logged in yet.
  const challenge = await client.readMessage(signal);
  assert.ok(challenge?.kind === "loginChallenge");
  await registry.put({
    ...reg,
    passwordHash: await makeVerifier("a new password"),
    updatedAt: 2,
  });
  // A call started after the change saw it; the next one starts only once its check ended.
  await registry.called(registry.calls + 2);
  const { nonce, salt, iterations } = challenge;
  const salted = await saltedPassword(PASSWORD, salt, iterations);
  const auth = authMessage({ id: ID, clientNonce, nonce, salt, iterations });
  await client.send({ kind: "loginProof", proof: clientProof(salted, auth) });
  const result = await client.readMessage(signal);
  assert.ok(result?.kind === "loginResult" && result.code === ErrorCode.Ok, "the old proof fit");
  const next = await client.readMessage(signal);
  assert.ok(next?.kind === "error", `expected ERROR, got ${next?.kind}`);
  assert.equal(next.code, ErrorCode.AuthFailed);
  assert.match(next.message, /Password changed/);
  assert.equal(await client.readMessage(signal), null, "then the relay closes");
});
