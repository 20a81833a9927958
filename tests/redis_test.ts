/**
 * End-to-end tests of the shared-database mode (patent [0054]-[0060]): real relay
 * processes sharing one real redis-server, real agents, the real CLIs.
 */

import assert from "node:assert/strict";
import { DeviceState } from "../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../shared/protocol/messages.ts";
import { RedisDirectory } from "../relay/redis/redis_directory.ts";
import { RedisRegistry } from "../relay/redis/redis_registry.ts";
import {
  agentCommand,
  deviceFlags,
  event,
  pollUntil,
  type RelayProc,
  sha256File,
  startAgent,
  tempDir,
  writeRandomFile,
} from "./helpers.ts";
import { RedisCluster, RedisServer, registerInRedis, startRedisRelays } from "./redis_helpers.ts";

/** A single server or a 3-node cluster: the relays are given the same kind of URL. */
type Target = RedisServer | RedisCluster;

/** The deployments every test marked so runs against. */
const TARGETS: { name: string; start: () => Promise<Target> }[] = [
  { name: "redis", start: () => RedisServer.start() },
  { name: "redis cluster", start: () => RedisCluster.start() },
];

const TTL_MS = 1000;

/** `tsunagi list --all --json` through relay `via`, logged in as `as`. */
async function listVia(via: RelayProc, as: string, pw: string): Promise<ListedEntry[]> {
  const out = await agentCommand(["list", "--all", "--json", ...deviceFlags(via.address, as, pw)]);
  assert.equal(out.code, 0, out.stderr);
  return JSON.parse(out.stdout);
}

/** An entry as `list --json` prints it: the state by name. */
type ListedEntry = Omit<DirectoryEntry, "state"> & { state: string };

function where(entries: ListedEntry[], id: string): string {
  const e = entries.find((x) => x.id === id);
  return e === undefined ? "unregistered" : e.state === "online" ? e.relay : "offline";
}

/** Polls an in-process reader of the same Redis until `id` reads as `expected` (bounded). */
async function waitWhere(
  reader: RedisDirectory,
  id: string,
  expected: string,
  timeoutMs = 15_000,
): Promise<void> {
  let now = "unread";
  try {
    await pollUntil(
      async () => {
        now = "unreadable"; // Redis down or restarting: keep polling.
        const e = await reader.lookup(id);
        now = e === null ? "unregistered" : e.state === DeviceState.Online ? e.relay : "offline";
        return now === expected || undefined;
      },
      `${id} to read "${expected}"`,
      { timeoutMs, intervalMs: 25 },
    );
  } catch (e) {
    throw new Error(`Timed out: ${id} reads "${now}", expected "${expected}"`, { cause: e });
  }
}

for (const target of TARGETS) {
  Deno.test(`${target.name}: 3 relays share one Redis; a login on r1 is listed from r3 with r1's name`, async () => {
    await using dir = await tempDir();
    await using server = await target.start();
    const faxPw = await registerInRedis(server.url(), dir.path, "fax1", "FAX", ["FILE TX/RX"]);
    const pcPw = await registerInRedis(server.url(), dir.path, "pc1", "USER");
    await using relays = await startRedisRelays(dir.path, server, 3);
    const [r1, , r3] = relays;
    await using _fax = await startAgent(r1.address, "fax1", faxPw);
    await using reader = await RedisDirectory.open(server.url());
    await waitWhere(reader, "fax1", "r1");

    const seen = await listVia(r3, "pc1", pcPw);
    assert.equal(where(seen, "fax1"), "r1");
    assert.equal(where(seen, "pc1"), "r3", "the listing device itself, logged in at r3");
    const status = await agentCommand([
      "status",
      "fax1",
      "--json",
      ...deviceFlags(r3.address, "pc1", pcPw),
    ]);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).relay, "r1");
  });

  Deno.test(`${target.name}: a killed relay's devices expire within the TTL; the device logging in at r2 is found at r2`, async () => {
    await using dir = await tempDir();
    await using server = await target.start();
    const faxPw = await registerInRedis(server.url(), dir.path, "fax1", "FAX", ["FILE TX/RX"]);
    const pcPw = await registerInRedis(server.url(), dir.path, "pc1", "USER");
    await using relays = await startRedisRelays(dir.path, server, 3);
    const [r1, r2, r3] = relays;
    await using reader = await RedisDirectory.open(server.url());
    {
      await using _fax = await startAgent(r1.address, "fax1", faxPw);
      await waitWhere(reader, "fax1", "r1");
      r1.proc.kill("SIGKILL");
      await r1.proc.wait();
      // Nothing refreshes r1's liveness key any more: Redis itself expires it within the TTL
      // (read after the kill, so no wall-clock measurement on a busy machine is needed).
      const pttl = Number((await server.raw("PTTL", "tsunagi:relay:{r1}")).match(/^:(-?\d+)/)?.[1]);
      assert.ok(pttl === -2 || (pttl > 0 && pttl <= TTL_MS), `r1's key expires in ${pttl} ms`);
      await waitWhere(reader, "fax1", "offline");
      assert.equal(where(await listVia(r3, "pc1", pcPw), "fax1"), "offline");
    }
    await using fax = await startAgent(r2.address, "fax1", faxPw);
    assert.equal((await fax.waitFor(event("logged in"), "login at r2")).relay, "r2");
    await waitWhere(reader, "fax1", "r2");
    assert.equal(where(await listVia(r3, "pc1", pcPw), "fax1"), "r2");
  });

  Deno.test(`${target.name}: a device failing over from a killed relay to r2 is found at r2 before r1's TTL runs out`, async () => {
    await using dir = await tempDir();
    await using server = await target.start();
    const faxPw = await registerInRedis(server.url(), dir.path, "fax1", "FAX", ["FILE TX/RX"]);
    await using relays = await startRedisRelays(dir.path, server, 2);
    const [r1, r2] = relays;
    await using reader = await RedisDirectory.open(server.url());
    await using fax = await startAgent([r1.address, r2.address], "fax1", faxPw);
    await waitWhere(reader, "fax1", "r1");
    r1.proc.kill("SIGKILL");
    await fax.waitFor(event("logged in", { relay: "r2" }), "fail-over to r2");
    await waitWhere(reader, "fax1", "r2");
  });
}

Deno.test("redis: a Redis restart (empty) is written back by the relays; logins during the outage get a clear error", async () => {
  await using dir = await tempDir();
  await using server = await RedisServer.start();
  const faxPw = await registerInRedis(server.url(), dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  const pcPw = await registerInRedis(server.url(), dir.path, "pc1", "USER");
  const prPw = await registerInRedis(server.url(), dir.path, "pr1", "PRINTER");
  await using relays = await startRedisRelays(dir.path, server, 3);
  const [r1, r2, r3] = relays;
  await using reader = await RedisDirectory.open(server.url());
  await using _fax = await startAgent(r1.address, "fax1", faxPw);
  await using _printer = await startAgent(r2.address, "pr1", prPw);
  await waitWhere(reader, "fax1", "r1");
  await waitWhere(reader, "pr1", "r2");
  // Both agents hold all their idle connections: none logs in while Redis is away.
  await r1.proc.waitFor(event("connection added", { device: "fax1" }), "fax1's 2nd connection");
  await r2.proc.waitFor(event("connection added", { device: "pr1" }), "pr1's 2nd connection");

  const backup = await reader.registry.list();
  await server.stop();
  // No hang: the command is killed after 10 s, and a killed command prints no such line.
  const refused = await agentCommand(
    ["list", ...deviceFlags(r3.address, "pc1", pcPw)],
    undefined,
    10_000,
  );
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /Relay cannot read its registry; retry later/);
  await r3.proc.waitFor(event("registry unavailable"), "r3 to log the outage");

  await server.restart();
  // Registrations live only in Redis: restoring them is the operator's job (persistence,
  // or a backup); here, from the backup taken before, in one batch: the same verifiers, so
  // the devices logged in stay logged in (a fresh `registry add` would make new verifiers,
  // which log them out: docs/operations.md). Connection information comes back by itself.
  {
    await using restore = await RedisRegistry.open(server.url());
    await restore.applyMany(backup.map((reg) => ({ id: reg.id, reg })));
  }
  await waitWhere(reader, "fax1", "r1");
  await waitWhere(reader, "pr1", "r2");
  // r3 too: the listing goes through it.
  for (const r of [r1, r2, r3]) {
    await r.proc.waitFor(event("redis state written back", { reason: "reconnected" }), r.name);
  }
  const seen = await listVia(r3, "pc1", pcPw);
  assert.equal(where(seen, "fax1"), "r1");
  assert.equal(where(seen, "pr1"), "r2");
});

Deno.test("redis: a session already running continues while Redis is down", async () => {
  await using dir = await tempDir();
  await using server = await RedisServer.start();
  const faxPw = await registerInRedis(server.url(), dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  const pcPw = await registerInRedis(server.url(), dir.path, "pc1", "USER");
  await using relays = await startRedisRelays(dir.path, server, 1);
  const [r1] = relays;
  await using _fax = await startAgent(r1.address, "fax1", faxPw, ["--inbox", `${dir.path}/inbox`]);
  await writeRandomFile(`${dir.path}/big.bin`, 96 << 20, 3);
  const sending = agentCommand([
    "send",
    "--to",
    "fax1",
    ...deviceFlags(r1.address, "pc1", pcPw),
    `${dir.path}/big.bin`,
  ]);
  await r1.proc.waitFor(event("session started", { from: "pc1", to: "fax1" }), "the session");
  await server.stop();
  const sent = await sending;
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(
    await sha256File(`${dir.path}/inbox/big.bin`),
    await sha256File(`${dir.path}/big.bin`),
  );
  await r1.proc.waitFor(event("redis unavailable"), "r1 to notice the outage");
  const at = (name: string) => r1.proc.lines.findIndex(event(name));
  assert.ok(at("redis unavailable") < at("session ended"), "Redis went away mid-session");
});

Deno.test({
  name: "redis: a file from a device on r1 to a FAX on r3 arrives intact",
  async fn() {
    await using dir = await tempDir();
    await using server = await RedisServer.start();
    const faxPw = await registerInRedis(server.url(), dir.path, "fax1", "FAX", ["FILE TX/RX"]);
    const pcPw = await registerInRedis(server.url(), dir.path, "pc1", "USER");
    await using relays = await startRedisRelays(dir.path, server, 3);
    const [r1, , r3] = relays;
    await using _fax = await startAgent(r3.address, "fax1", faxPw, [
      "--inbox",
      `${dir.path}/inbox`,
    ]);
    await using reader = await RedisDirectory.open(server.url());
    await waitWhere(reader, "fax1", "r3");
    await writeRandomFile(`${dir.path}/page.tif`, 3 << 20, 7);
    const sent = await agentCommand([
      "send",
      "--to",
      "fax1",
      ...deviceFlags(r1.address, "pc1", pcPw),
      `${dir.path}/page.tif`,
    ]);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(
      await sha256File(`${dir.path}/inbox/page.tif`),
      await sha256File(`${dir.path}/page.tif`),
    );
  },
});
