import assert from "node:assert/strict";
import { RedisServer } from "../../tests/redis_helpers.ts";
import { DirectoryUnavailableError, parseRedisUrl, RedisConnection } from "./redis_conn.ts";
import { RedisRegistry } from "./redis_registry.ts";
import { registryMain } from "../registry/main.ts";
import { type Registration, RegistryCorruptError } from "../registry/registry.ts";

function reg(id: string, type = "FAX", attributes = ["FILE TX/RX"]): Registration {
  return { id, type, attributes, passwordHash: `scrypt$test$${id}`, updatedAt: 1_700_000_000_000 };
}

Deno.test("parseRedisUrl() accepts host, port and database and rejects the rest", () => {
  assert.deepEqual(parseRedisUrl("redis://127.0.0.1:6380/2"), {
    hostname: "127.0.0.1",
    port: 6380,
    db: 2,
    url: "redis://127.0.0.1:6380/2",
    display: "redis://127.0.0.1:6380/2",
  });
  assert.equal(parseRedisUrl("redis://db.example").port, 6379);
  assert.equal(
    parseRedisUrl("redis://:secret@db.example:7000").display,
    "redis://db.example:7000/0",
  );
  assert.equal(parseRedisUrl("redis://[::1]:7000").display, "redis://[::1]:7000/0");
  for (const bad of ["localhost:6379", "http://x:1", "redis://x:1/a", "redis://x:1/?q=1", ""]) {
    assert.throws(() => parseRedisUrl(bad), RangeError, bad);
  }
});

Deno.test("RedisRegistry round-trips registrations: put, get, list sorted, replace, remove", async () => {
  await using server = await RedisServer.start();
  await using registry = await RedisRegistry.open(server.url());
  assert.equal(await registry.get("fax1"), undefined);
  await registry.put(reg("pc1", "USER", []));
  await registry.put(reg("fax1"));
  assert.deepEqual(await registry.get("fax1"), reg("fax1"));
  assert.deepEqual((await registry.list()).map((r) => r.id), ["fax1", "pc1"]);
  await registry.put({ ...reg("fax1"), passwordHash: "scrypt$new", updatedAt: 2 });
  assert.equal((await registry.get("fax1"))?.passwordHash, "scrypt$new");
  assert.equal(await registry.remove("fax1"), true);
  assert.equal(await registry.remove("fax1"), false);
  assert.deepEqual((await registry.list()).map((r) => r.id), ["pc1"]);
  await assert.rejects(registry.put({ ...reg("bad id") }), TypeError);
});

Deno.test("RedisRegistry.generation() moves once per put, removal or batch, and only then", async () => {
  await using server = await RedisServer.start();
  await using registry = await RedisRegistry.open(server.url());
  const g0 = await registry.generation();
  await registry.put(reg("fax1"));
  const g1 = await registry.generation();
  assert.notEqual(g1, g0);
  await registry.get("fax1");
  await registry.list();
  assert.equal(await registry.generation(), g1, "reads change nothing");
  await registry.remove("ghost");
  assert.equal(await registry.generation(), g1, "removing nothing changes nothing");
  await registry.remove("fax1");
  const g2 = await registry.generation();
  assert.notEqual(g2, g1);
  // A batch (a restored backup) is one change: no relay sees it half applied.
  await registry.applyMany([{ id: "a1", reg: reg("a1") }, { id: "a2", reg: reg("a2") }]);
  assert.equal(await registry.generation(), g2 + 1);
  assert.deepEqual((await registry.list()).map((r) => r.id), ["a1", "a2"]);
  await assert.rejects(
    registry.applyMany([{ id: "b1", reg: reg("b1") }, { id: "bad id", reg: reg("bad id") }]),
    TypeError,
  );
  assert.equal(await registry.get("b1"), undefined, "nothing written when one is invalid");
});

Deno.test("RedisRegistry shares registrations between connections and honours the database", async () => {
  await using server = await RedisServer.start();
  await using a = await RedisRegistry.open(server.url(0));
  await using b = await RedisRegistry.open(server.url(0));
  await using other = await RedisRegistry.open(server.url(3));
  await a.put(reg("fax1"));
  assert.deepEqual(await b.get("fax1"), reg("fax1"));
  assert.equal(await other.get("fax1"), undefined);
});

Deno.test("RedisRegistry reports a corrupt registration with its key", async () => {
  await using server = await RedisServer.start();
  await using registry = await RedisRegistry.open(server.url());
  await server.raw(
    "HSET",
    "tsunagi:reg:{x1}",
    "type",
    "FAX",
    "attributes",
    "{nope",
    "passwordHash",
    "h",
  );
  await server.raw("SADD", "tsunagi:regs", "x1");
  await assert.rejects(registry.get("x1"), (e: unknown) => {
    assert.ok(e instanceof RegistryCorruptError);
    assert.match(e.message, /tsunagi:reg:\{x1\}/);
    return true;
  });
  await assert.rejects(registry.list(), RegistryCorruptError);
});

Deno.test("RedisRegistry.open() fails at once with DirectoryUnavailableError when nothing listens", async () => {
  await using server = await RedisServer.start();
  await server.stop();
  const t0 = performance.now();
  await assert.rejects(RedisRegistry.open(server.url()), (e: unknown) => {
    assert.ok(e instanceof DirectoryUnavailableError, String(e));
    assert.match(e.message, /Cannot use Redis at redis:\/\/127\.0\.0\.1:\d+\/0/);
    return true;
  });
  assert.ok(performance.now() - t0 < 2000);
});

Deno.test("RedisConnection: commands fail fast while Redis is down and work again after it returns", async () => {
  await using server = await RedisServer.start();
  await using conn = new RedisConnection(server.url(), { maxReconnectDelayMs: 50 });
  await conn.connect();
  const back = Promise.withResolvers<void>();
  conn.onReady(back.resolve);
  assert.equal(await conn.command(["SET", "k", "v"]), "OK");
  await server.stop();
  const t0 = performance.now();
  await assert.rejects(conn.command(["GET", "k"]), DirectoryUnavailableError);
  assert.ok(performance.now() - t0 < 100, "fails fast, not after a timeout");
  await server.restart();
  await back.promise;
  assert.equal(await conn.command(["GET", "k"]), null, "the restarted server is empty");
});

Deno.test("RedisConnection: a hung Redis (SIGSTOP) fails commands after the reply deadline", async () => {
  await using server = await RedisServer.start();
  await using conn = new RedisConnection(server.url(), { commandTimeoutMs: 300 });
  await conn.connect();
  server.pause();
  try {
    const t0 = performance.now();
    await assert.rejects(conn.command(["PING"]), (e: unknown) => {
      assert.ok(e instanceof DirectoryUnavailableError);
      assert.match(e.message, /did not answer PING within 300 ms/);
      return true;
    });
    const took = performance.now() - t0;
    assert.ok(took >= 250 && took < 1500, `took ${took} ms`);
  } finally {
    server.resume();
  }
});

Deno.test("registry CLI with --directory adds, lists, changes and removes devices in Redis", async () => {
  await using server = await RedisServer.start();
  const dir = await Deno.makeTempDir({ prefix: "tsunagi-test-" });
  try {
    const pw = `${dir}/fax1.pw`;
    await Deno.writeTextFile(pw, "secret\n");
    const run = async (...args: string[]) => {
      let stdout = "";
      let stderr = "";
      const code = await registryMain([...args, "--directory", server.url()], {
        stdout: (t) => stdout += t,
        stderr: (t) => stderr += t,
      });
      return { code, stdout, stderr };
    };
    const cost = ["--hash-cost", "4096"];
    const added = await run(
      "add",
      "fax1",
      "--type",
      "fax",
      "--attr",
      "FILE TX/RX",
      "--password-file",
      pw,
      ...cost,
    );
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /Added device fax1 \(FAX\) to redis:\/\/127\.0\.0\.1:\d+\/0/);
    assert.equal(
      (await run("add", "fax1", "--type", "FAX", "--password-file", pw, ...cost)).code,
      1,
    );
    const listed = await run("list", "--json");
    assert.deepEqual(JSON.parse(listed.stdout).map((d: { id: string }) => d.id), ["fax1"]);
    await using registry = await RedisRegistry.open(server.url());
    const before = (await registry.get("fax1"))!.passwordHash;
    assert.equal((await run("passwd", "fax1", "--password-file", pw, ...cost)).code, 0);
    assert.notEqual((await registry.get("fax1"))!.passwordHash, before);
    assert.equal((await run("remove", "fax1")).code, 0);
    assert.equal(await registry.get("fax1"), undefined);
    assert.equal((await run("remove", "fax1")).code, 1);

    await server.stop();
    const down = await run("list");
    assert.equal(down.code, 1);
    assert.match(
      down.stderr,
      /^tsunagi-registry: Cannot use Redis at redis:\/\/127\.0\.0\.1:\d+\/0: /,
    );
    assert.match(down.stderr, /hint: check --directory, and that redis-server is running/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry migrate --directory moves key layout 1 to layout 2; other commands refuse layout 1 with a hint", async () => {
  await using server = await RedisServer.start();
  const run = async (...args: string[]) => {
    let stdout = "";
    let stderr = "";
    const code = await registryMain([...args, "--directory", server.url()], {
      stdout: (t) => stdout += t,
      stderr: (t) => stderr += t,
    });
    return { code, stdout, stderr };
  };
  // A database as layout 1 left it: untagged keys, a relay and its device's presence.
  await using writer = await RedisRegistry.open(server.url());
  // (Not scrypt hashes: only the key move is under test.)
  await writer.put({ ...reg("fax1"), passwordHash: "v2-verifier-fax1" });
  await writer.put({ ...reg("pc1", "USER", []), passwordHash: "v2-verifier-pc1" });
  for (const id of ["fax1", "pc1"]) {
    await server.raw("RENAME", `tsunagi:reg:{${id}}`, `tsunagi:reg:${id}`);
  }
  await server.raw("DEL", "tsunagi:layout");
  await server.raw("HSET", "tsunagi:dev:fax1", "relay", "r1", "entry", "{}");
  await server.raw("HSET", "tsunagi:relay:r1", "epoch", "e1");
  await server.raw("SADD", "tsunagi:relaydevs:r1", "fax1");
  await server.raw("SADD", "tsunagi:relays", "r1");

  const refused = await run("list");
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /holds registrations in key layout 1/);
  assert.match(refused.stderr, /hint: stop the relays and run 'deno task registry migrate/);

  const migrated = await run("migrate");
  assert.equal(migrated.code, 0, migrated.stderr);
  assert.match(migrated.stdout, /moved 2 registrations, kept 0 already moved, dropped 3 old/);
  for (const old of ["reg:fax1", "reg:pc1", "dev:fax1", "relay:r1", "relaydevs:r1"]) {
    assert.equal(await server.raw("EXISTS", `tsunagi:${old}`), ":0\r\n", old);
  }
  assert.deepEqual((await writer.list()).map((r) => [r.id, r.type]), [
    ["fax1", "FAX"],
    ["pc1", "USER"],
  ]);
  assert.equal(await server.raw("GET", "tsunagi:layout"), "$1\r\n2\r\n");
  const again = await run("migrate");
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /moved 0 registrations/);
  assert.equal((await run("list")).code, 0);
});
