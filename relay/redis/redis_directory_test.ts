import assert from "node:assert/strict";
import { DeviceState } from "../../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../../shared/protocol/messages.ts";
import { Logger } from "../../shared/log.ts";
import { RedisCluster, RedisServer } from "../../tests/redis_helpers.ts";
import type { SelfInfo } from "../directory.ts";
import { RedisConnection } from "./redis_conn.ts";
import {
  DirectoryUnavailableError,
  RedisDirectory,
  type RedisDirectoryOptions,
} from "./redis_directory.ts";
import type { Registration } from "../registry/registry.ts";

const FAST: RedisDirectoryOptions = {
  ttlMs: 400,
  heartbeatMs: 100,
  maxReconnectDelayMs: 50,
  retryDelayMs: 50,
  commandTimeoutMs: 1000,
};

function reg(id: string, type = "FAX"): Registration {
  return { id, type, attributes: ["FILE TX/RX"], passwordHash: "scrypt$x", updatedAt: 1 };
}

function entry(id: string, relay: string, idle = 2): DirectoryEntry {
  return {
    id,
    type: "FAX",
    attributes: ["FILE TX/RX"],
    services: ["file"],
    state: DeviceState.Online,
    relay,
    idle,
    sessions: 0,
    peers: [],
    lastUpdate: Date.now(),
  };
}

function offline(id: string): DirectoryEntry {
  return { ...entry(id, ""), state: DeviceState.Offline, idle: 0 };
}

/** A relay as the directory sees it: a name, an address and its local devices. */
class FakeRelay {
  readonly devices = new Map<string, DirectoryEntry>();
  /** Devices the directory told this relay to let go (a newer login elsewhere). */
  readonly evicted: string[] = [];
  readonly self: SelfInfo;
  constructor(readonly name: string, port: number, readonly directory: RedisDirectory) {
    this.self = {
      name,
      address: { hostname: "127.0.0.1", port },
      snapshot: () => [...this.devices.values()],
      local: (id) => this.devices.get(id),
      instance: (id) => this.devices.has(id) ? `agent-on-${name}` : "",
      evict: (id) => {
        this.evicted.push(id);
        this.logout(id);
      },
    };
  }
  static async start(
    server: { url(): string },
    name: string,
    options: RedisDirectoryOptions = {},
  ): Promise<FakeRelay> {
    const directory = await RedisDirectory.open(server.url(), { ...FAST, ...options });
    const relay = new FakeRelay(name, 7000 + name.length, directory);
    await directory.start(relay.self);
    return relay;
  }
  login(id: string, idle = 2): void {
    const e = entry(id, this.name, idle);
    this.devices.set(id, e);
    this.directory.publish(e);
  }
  logout(id: string): void {
    this.devices.delete(id);
    this.directory.publish(offline(id));
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await this.directory.close();
  }
}

/** Polls `check` until it returns true; fails after `timeoutMs`. */
async function eventually(
  check: () => Promise<boolean>,
  what: string,
  timeoutMs = 5000,
): Promise<number> {
  const t0 = performance.now();
  while (!(await check())) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return performance.now() - t0;
}

async function registered(server: { url(): string }, ...ids: string[]): Promise<void> {
  await using conn = new RedisConnection(server.url());
  await conn.connect();
  const { RedisRegistry } = await import("./redis_registry.ts");
  const registry = new RedisRegistry(conn);
  for (let i = 0; i < ids.length; i += 200) {
    await Promise.all(ids.slice(i, i + 200).map((id) => registry.put(reg(id))));
  }
}

Deno.test("RedisDirectory: a device published on r1 is seen from r2 with r1's name; logout clears it", async () => {
  await using server = await RedisServer.start();
  await registered(server, "fax1", "pc1");
  await using r1 = await FakeRelay.start(server, "r1");
  await using r2 = await FakeRelay.start(server, "r2");

  assert.equal(await r2.directory.lookup("ghost"), null);
  assert.equal((await r2.directory.lookup("fax1"))?.state, DeviceState.Offline);

  r1.login("fax1", 3);
  await r1.directory.flush();
  const seen = await r2.directory.lookup("fax1");
  assert.equal(seen?.state, DeviceState.Online);
  assert.equal(seen?.relay, "r1");
  assert.equal(seen?.idle, 3);
  assert.deepEqual((await r2.directory.list(false)).map((e) => [e.id, e.relay]), [["fax1", "r1"]]);
  assert.deepEqual(
    (await r2.directory.list(true)).map((e) => [e.id, e.state]),
    [["fax1", DeviceState.Online], ["pc1", DeviceState.Offline]],
  );
  assert.deepEqual(await r2.directory.nextHop("r1"), {
    name: "r1",
    address: { hostname: "127.0.0.1", port: r1.self.address.port },
  });
  assert.equal(await r2.directory.nextHop("nowhere"), null);

  r1.logout("fax1");
  await r1.directory.flush();
  assert.equal((await r2.directory.lookup("fax1"))?.state, DeviceState.Offline);
  assert.equal(await server.raw("EXISTS", "tsunagi:dev:{fax1}"), ":0\r\n");
});

Deno.test("RedisDirectory: registrations live in Redis and the relay's own writes are read back at once", async () => {
  await using server = await RedisServer.start();
  await using r1 = await FakeRelay.start(server, "r1");
  await r1.directory.registry.put(reg("fax1"));
  assert.deepEqual(await r1.directory.registry.get("fax1"), reg("fax1"));
  r1.login("fax1");
  // Read-your-writes: no flush needed for a device logged in here.
  assert.equal((await r1.directory.lookup("fax1"))?.relay, "r1");
});

Deno.test("RedisDirectory: state and relay are written together, and only the owning relay clears an entry", async () => {
  await using server = await RedisServer.start();
  await registered(server, "fax1");
  await using r1 = await FakeRelay.start(server, "r1");
  await using r2 = await FakeRelay.start(server, "r2");
  await using r3 = await FakeRelay.start(server, "r3");

  r1.login("fax1");
  await r1.directory.flush();
  r2.login("fax1"); // the device moved to r2
  await r2.directory.flush();
  r1.logout("fax1"); // r1 notices late that it is gone
  await r1.directory.flush();

  const seen = await r3.directory.lookup("fax1");
  assert.equal(seen?.state, DeviceState.Online);
  assert.equal(seen?.relay, "r2");
  const fields = await server.raw("HGET", "tsunagi:dev:{fax1}", "relay");
  assert.match(fields, /r2/);
  const json = await server.raw("HGET", "tsunagi:dev:{fax1}", "entry");
  assert.match(json, /"relay":"r2"/);
  assert.equal(await server.raw("SISMEMBER", "tsunagi:relaydevs:{r1}", "fax1"), ":0\r\n");
  assert.equal(await server.raw("SISMEMBER", "tsunagi:relaydevs:{r2}", "fax1"), ":1\r\n");

  r2.logout("fax1");
  await r2.directory.flush();
  assert.equal((await r3.directory.lookup("fax1"))?.state, DeviceState.Offline);
});

Deno.test("RedisDirectory: one device, one place: the newer login wins even if its write lands first; the older relay lets go", async () => {
  await using server = await RedisServer.start();
  await registered(server, "fax1");
  // r1's login happens first but its write waits: r1 is not started yet.
  const late = await RedisDirectory.open(server.url(), FAST);
  const r1 = new FakeRelay("r1", 7001, late);
  await using _r1 = r1;
  r1.login("fax1", 1);
  await new Promise((resolve) => setTimeout(resolve, 20));
  await using r2 = await FakeRelay.start(server, "r2");
  r2.login("fax1", 2);
  await r2.directory.flush();
  await late.start(r1.self);
  await late.flush();
  assert.equal((await r2.directory.lookup("fax1"))?.relay, "r2", "the older login must not win");
  assert.deepEqual(r1.evicted, ["fax1"], "r1 is told its login lost, at its write");
  assert.equal(r1.devices.has("fax1"), false);

  // A newer login on r1 takes the device; r2, which wrote nothing since, learns it at its
  // next heartbeat and lets go; a state change of r2's old login could not take it back.
  r1.login("fax1", 5);
  await late.flush();
  await eventually(() => Promise.resolve(r2.evicted.length === 1), "r2 to let fax1 go");
  await using r3 = await FakeRelay.start(server, "r3");
  assert.equal((await r3.directory.lookup("fax1"))?.relay, "r1");
  assert.equal(r2.devices.has("fax1"), false);
  assert.deepEqual(r1.evicted, ["fax1"], "no fight back");
});

Deno.test("RedisDirectory: a relay that stops heartbeating has its devices read offline within the TTL, then purged", async () => {
  await using server = await RedisServer.start();
  await registered(server, "fax1");
  await using r1 = await FakeRelay.start(server, "r1");
  await using r2 = await FakeRelay.start(server, "r2");
  r1.login("fax1");
  await r1.directory.flush();
  assert.equal((await r2.directory.lookup("fax1"))?.relay, "r1");

  // "Kill" r1: its connection goes away without a goodbye; no more heartbeats.
  await r1.directory.conn.close();
  const took = await eventually(
    async () => (await r2.directory.lookup("fax1"))?.state === DeviceState.Offline,
    "fax1 to read offline",
  );
  assert.ok(took <= (FAST.ttlMs ?? 0) + 300, `offline after ${took} ms`);
  assert.equal(await r2.directory.nextHop("r1"), null);
  await eventually(
    async () => (await server.raw("EXISTS", "tsunagi:dev:{fax1}")) === ":0\r\n",
    "r2's heartbeat to purge r1's entries",
  );
  // The index goes last (it may list a key already deleted, never miss one).
  await eventually(
    async () => (await server.raw("SISMEMBER", "tsunagi:relays", "r1")) === ":0\r\n",
    "r1 to leave the relay index",
  );
});

Deno.test("RedisDirectory: with Redis down, reads fail fast with DirectoryUnavailableError and publishes coalesce", async () => {
  await using server = await RedisServer.start();
  await registered(server, "fax1", "pc1");
  await using r1 = await FakeRelay.start(server, "r1", { logger: Logger.silent() });
  await server.stop();
  for (
    const read of [
      () => r1.directory.lookup("fax1"),
      () => r1.directory.list(true),
      () => r1.directory.registry.get("fax1"),
      () => r1.directory.nextHop("r1"),
    ]
  ) {
    const t0 = performance.now();
    await assert.rejects(read(), DirectoryUnavailableError);
    assert.ok(performance.now() - t0 < 200, "fails fast");
  }
  for (let i = 0; i < 100; i++) {
    r1.login("fax1", i % 7);
    r1.login("pc1", i % 5);
  }
  assert.equal(r1.directory.pendingWrites, 2, "one pending write per device");
});

Deno.test("RedisDirectory: after Redis restarts empty, each relay writes its key and devices back", async () => {
  await using server = await RedisServer.start();
  await registered(server, "fax1", "pc1");
  await using r1 = await FakeRelay.start(server, "r1");
  await using r2 = await FakeRelay.start(server, "r2");
  r1.login("fax1");
  r2.login("pc1");
  await r1.directory.flush();
  await r2.directory.flush();

  await server.stop();
  r1.login("fax1", 4); // a change during the outage
  await server.restart();
  await registered(server, "fax1", "pc1"); // registrations are the operator's to restore
  await eventually(async () => {
    try {
      const list = await r1.directory.list(false);
      return list.map((e) => `${e.id}@${e.relay}:${e.idle}`).join() === "fax1@r1:4,pc1@r2:2";
    } catch {
      return false;
    }
  }, "both relays to write their state back");
  assert.deepEqual(await r1.directory.nextHop("r2"), {
    name: "r2",
    address: r2.self.address,
  });
});

Deno.test("RedisDirectory: a restarted relay of the same name clears entries of devices no longer logged in", async () => {
  await using server = await RedisServer.start();
  await registered(server, "fax1", "pc1");
  await using observer = await FakeRelay.start(server, "obs");
  const first = await FakeRelay.start(server, "r1");
  first.login("fax1");
  first.login("pc1");
  await first.directory.flush();
  await first.directory.conn.close(); // crash: no goodbye
  await first.directory.close();
  assert.equal(await server.raw("EXISTS", "tsunagi:dev:{fax1}"), ":1\r\n", "crash leaves entries");

  // The new process has only pc1 back (fax1 has not reconnected yet).
  const again = await RedisDirectory.open(server.url(), FAST);
  const second = new FakeRelay("r1", 7001, again);
  await using _second = second;
  second.devices.set("pc1", entry("pc1", "r1"));
  await again.start(second.self);
  // The new process's key (new epoch) makes the old process's entries read offline at once.
  assert.equal((await observer.directory.lookup("fax1"))?.state, DeviceState.Offline);
  await again.flush();
  assert.equal(await server.raw("EXISTS", "tsunagi:dev:{fax1}"), ":0\r\n");
  assert.equal((await observer.directory.lookup("pc1"))?.relay, "r1");
});

Deno.test("RedisDirectory: a clean close removes the relay's key and entries", async () => {
  await using server = await RedisServer.start();
  await registered(server, "fax1");
  const r1 = await FakeRelay.start(server, "r1");
  r1.login("fax1");
  await r1.directory.close();
  assert.equal(await server.raw("EXISTS", "tsunagi:relay:{r1}"), ":0\r\n");
  assert.equal(await server.raw("EXISTS", "tsunagi:dev:{fax1}"), ":0\r\n");
  assert.equal(await server.raw("EXISTS", "tsunagi:relaydevs:{r1}"), ":0\r\n");
  r1.login("fax1"); // after close: ignored, never throws
});

Deno.test("Lua scripts touch only keys declared in KEYS (Redis Cluster routes a script by them)", async () => {
  const scripts = await import("./_scripts.ts");
  for (const [name, script] of Object.entries(scripts)) {
    for (const call of script.source.matchAll(/redis\.call\('(\w+)'(?:, ([^,)]+))?/g)) {
      if (call[1] === "TIME") continue;
      assert.match(call[2] ?? "", /^KEYS\[\d\]$/, `${name}: redis.call('${call[1]}', ${call[2]})`);
    }
    assert.doesNotMatch(script.source, /redis\.call\([^)]*\.\./, `${name} builds no key names`);
  }
});

for (
  const target of [
    { name: "a single server", start: () => RedisServer.start() },
    { name: "a 3-node Redis Cluster", start: () => RedisCluster.start() },
  ]
) {
  Deno.test(`RedisDirectory on ${target.name}: 1,200 devices list in pages across relays; a dead relay's 600 are purged page by page`, async () => {
    await using server = await target.start();
    const ids = Array.from({ length: 1200 }, (_, i) => `d${i}`);
    await registered(server, ...ids);
    await using r1 = await FakeRelay.start(server, "r1");
    await using r2 = await FakeRelay.start(server, "r2");
    await using r3 = await FakeRelay.start(server, "r3");
    ids.forEach((id, i) => (i % 2 === 0 ? r1 : r2).login(id));
    await Promise.all([r1.directory.flush(), r2.directory.flush()]);

    let pages = 0;
    let cursor = "0";
    const seen = new Map<string, string>();
    do {
      const page = await r3.directory.listPage(cursor, true, 500);
      for (const e of page.entries) seen.set(e.id, e.relay);
      cursor = page.cursor;
      pages++;
    } while (cursor !== "0");
    assert.ok(pages >= 3, `${pages} pages of at most ~500`);
    assert.equal(seen.size, 1200);
    const listed = await r3.directory.list(false);
    assert.equal(listed.length, 1200);
    assert.ok(
      listed.every((e) => e.relay === (Number(e.id.slice(1)) % 2 === 0 ? "r1" : "r2")),
      `relay of ${listed[0].id}`,
    );
    if (server instanceof RedisCluster) {
      // The keys really are spread: every node holds some.
      for (const node of server.nodes) {
        const size = Number((await node.raw("DBSIZE")).match(/^:(\d+)/)?.[1]);
        assert.ok(size > 100, `node ${node.port} holds ${size} keys`);
      }
    }

    // r1 dies without a goodbye; r2's and r3's heartbeats purge its entries, page by page.
    await r1.directory.conn.close();
    await eventually(
      async () => (await r3.directory.list(false)).length === 600,
      "r1's devices to read offline",
    );
    await eventually(
      async () => (await server.raw("EXISTS", "tsunagi:relaydevs:{r1}")) === ":0\r\n",
      "r1's index to be purged",
    );
    for (const id of ["d0", "d598", "d1198"]) {
      assert.equal(await server.raw("EXISTS", `tsunagi:dev:{${id}}`), ":0\r\n", id);
    }
    assert.equal(await server.raw("EXISTS", "tsunagi:dev:{d1}"), ":1\r\n", "r2's stay");
    await eventually(
      async () => (await server.raw("SISMEMBER", "tsunagi:relays", "r1")) === ":0\r\n",
      "r1 to leave the relays index",
    );
  });
}
