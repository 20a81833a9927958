import assert from "node:assert/strict";
import { join } from "node:path";
import {
  FileRegistry,
  MemoryRegistry,
  type Registration,
  RegistryCorruptError,
  type RegistryStore,
  validateAttribute,
  validateDeviceId,
  validateDeviceType,
} from "./registry.ts";

function reg(id: string, overrides: Partial<Registration> = {}): Registration {
  return {
    id,
    type: "USER",
    attributes: [],
    passwordHash: `scrypt$1024$8$1$salt-${id}$hash`,
    updatedAt: 1_700_000_000_000,
    ...overrides,
  };
}

/** A temporary directory removed when the returned value is disposed. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "tsunagi-registry-test-" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

Deno.test("validateDeviceId() accepts 1-64 chars of [A-Za-z0-9._@-]", () => {
  for (const id of ["a", "fax-01", "alice@example.com", "A.B_C-d", "x".repeat(64)]) {
    assert.equal(validateDeviceId(id), null, id);
  }
  for (const id of ["", "x".repeat(65), "has space", "a/b", "ü", "a:b", "a\nb"]) {
    assert.equal(typeof validateDeviceId(id), "string", id);
  }
});

Deno.test("validateDeviceType() accepts 1-32 chars of [A-Z0-9_-]", () => {
  for (const type of ["USER", "FAX", "PRINTER", "MFP_2", "X-1", "T".repeat(32)]) {
    assert.equal(validateDeviceType(type), null, type);
  }
  for (const type of ["", "fax", "T".repeat(33), "FAX MACHINE", "FAX.1"]) {
    assert.equal(typeof validateDeviceType(type), "string", type);
  }
});

Deno.test("validateAttribute() accepts printable text such as FILE TX/RX", () => {
  assert.equal(validateAttribute("FILE TX/RX"), null);
  for (const attribute of ["", " x", "x ", "a\tb", "a".repeat(65)]) {
    assert.equal(typeof validateAttribute(attribute), "string", attribute);
  }
});

async function exerciseStore(store: RegistryStore): Promise<void> {
  assert.deepEqual(await store.list(), []);
  assert.equal(await store.get("bob"), undefined);

  await store.put(reg("bob", { type: "FAX", attributes: ["FILE TX/RX"] }));
  await store.put(reg("alice"));
  await store.put(reg("carol"));
  assert.deepEqual(await store.get("bob"), reg("bob", { type: "FAX", attributes: ["FILE TX/RX"] }));
  assert.deepEqual((await store.list()).map((r) => r.id), ["alice", "bob", "carol"]);

  // put replaces.
  await store.put(reg("bob", { type: "PRINTER", updatedAt: 1_800_000_000_000 }));
  assert.equal((await store.get("bob"))?.type, "PRINTER");
  assert.equal((await store.list()).length, 3);

  // Returned values are copies.
  const got = (await store.get("bob"))!;
  got.attributes.push("MUTATED");
  got.type = "MUTATED";
  assert.equal((await store.get("bob"))?.type, "PRINTER");
  assert.deepEqual((await store.get("bob"))?.attributes, []);

  assert.equal(await store.remove("bob"), true);
  assert.equal(await store.remove("bob"), false);
  assert.equal(await store.get("bob"), undefined);
  assert.deepEqual((await store.list()).map((r) => r.id), ["alice", "carol"]);

  // Invalid registrations are refused.
  await assert.rejects(store.put(reg("bad id")), TypeError);
  await assert.rejects(store.put(reg("ok", { type: "fax" })), TypeError);
  await assert.rejects(store.put(reg("ok", { passwordHash: "" })), TypeError);
  await assert.rejects(store.put(reg("ok", { attributes: [" x"] })), TypeError);
  assert.equal(await store.get("ok"), undefined);
}

Deno.test("MemoryRegistry supports put/get/list/remove", async () => {
  await exerciseStore(new MemoryRegistry());
});

Deno.test("FileRegistry supports put/get/list/remove", async () => {
  await using dir = await tempDir();
  await exerciseStore(await FileRegistry.open(dir.path));
});

Deno.test("FileRegistry.open() creates the directory and writes nothing until a put", async () => {
  await using dir = await tempDir();
  const nested = join(dir.path, "a", "b");
  const registry = await FileRegistry.open(nested);
  assert.equal(registry.path, join(nested, "registry.json"));
  assert.equal((await Deno.stat(nested)).isDirectory, true);
  assert.deepEqual(await registry.list(), []);
  await assert.rejects(Deno.stat(registry.path), Deno.errors.NotFound);
});

Deno.test("FileRegistry writes { version: 2, devices } sorted by id, owner-only, without temp files", async () => {
  await using dir = await tempDir();
  const registry = await FileRegistry.open(dir.path);
  await registry.put(reg("zed"));
  await registry.put(reg("amy", { attributes: ["FILE TX/RX"] }));
  const data = JSON.parse(await Deno.readTextFile(registry.path));
  assert.deepEqual(data, {
    version: 2,
    devices: [reg("amy", { attributes: ["FILE TX/RX"] }), reg("zed")],
  });
  if (Deno.build.os !== "windows") {
    assert.equal((await Deno.stat(registry.path)).mode! & 0o777, 0o600);
  }
  const names = [];
  for await (const entry of Deno.readDir(dir.path)) names.push(entry.name);
  assert.deepEqual(names.filter((n) => n.includes(".tmp-")), []);
});

Deno.test("FileRegistry persists across instances", async () => {
  await using dir = await tempDir();
  const first = await FileRegistry.open(dir.path);
  await first.put(reg("alice"));
  await first.put(reg("bob", { type: "FAX" }));
  await first.remove("alice");

  const second = await FileRegistry.open(dir.path);
  assert.deepEqual(await second.list(), [reg("bob", { type: "FAX" })]);
});

Deno.test("FileRegistry sees writes made by another instance", async () => {
  await using dir = await tempDir();
  const relay = await FileRegistry.open(dir.path);
  const admin = await FileRegistry.open(dir.path);
  assert.deepEqual(await relay.list(), []);

  await admin.put(reg("alice"));
  assert.deepEqual(await relay.get("alice"), reg("alice"));

  // Same size and (very likely) the same millisecond: still noticed.
  await admin.put(reg("alice", { type: "RESU" }));
  assert.equal((await relay.get("alice"))?.type, "RESU");

  await admin.remove("alice");
  assert.equal(await relay.get("alice"), undefined);
  assert.deepEqual(await relay.list(), []);

  // Updates from the reader go on top of the other instance's data, not a stale cache.
  await admin.put(reg("bob"));
  await relay.put(reg("carol"));
  assert.deepEqual((await admin.list()).map((r) => r.id), ["bob", "carol"]);
});

Deno.test("FileRegistry keeps every write when writes from one instance overlap", async () => {
  await using dir = await tempDir();
  const registry = await FileRegistry.open(dir.path);
  const ids = Array.from({ length: 20 }, (_, i) => `dev-${String(i).padStart(2, "0")}`);
  await Promise.all(ids.map((id) => registry.put(reg(id))));
  const reopened = await FileRegistry.open(dir.path);
  assert.deepEqual((await reopened.list()).map((r) => r.id), ids);
});

Deno.test("FileRegistry keeps every write when two instances write concurrently", async () => {
  await using dir = await tempDir();
  const a = await FileRegistry.open(dir.path);
  const b = await FileRegistry.open(dir.path);
  await Promise.all([
    ...Array.from({ length: 10 }, (_, i) => a.put(reg(`a-${i}`))),
    ...Array.from({ length: 10 }, (_, i) => b.put(reg(`b-${i}`))),
  ]);
  const reopened = await FileRegistry.open(dir.path);
  assert.equal((await reopened.list()).length, 20);
});

Deno.test("FileRegistry reports a corrupt file with a RegistryCorruptError naming the path", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "registry.json");
  const cases: [string, RegExp][] = [
    ["{ not json", /not valid JSON/],
    ["[]", /expected an object/],
    [JSON.stringify({ version: 3, devices: [] }), /unsupported version 3/],
    [JSON.stringify({ version: 1 }), /devices is not an array/],
    [JSON.stringify({ version: 1, devices: [{ id: "x" }] }), /device #0/],
    [JSON.stringify({ version: 1, devices: [reg("a"), reg("a")] }), /listed twice/],
  ];
  for (const [text, reason] of cases) {
    await Deno.writeTextFile(path, text);
    await assert.rejects(FileRegistry.open(dir.path), (e: unknown) => {
      assert.ok(e instanceof RegistryCorruptError);
      assert.ok(e instanceof SyntaxError);
      assert.equal(e.name, "RegistryCorruptError");
      assert.equal(e.path, path);
      assert.ok(e.message.includes(path), e.message);
      assert.match(e.message, reason);
      return true;
    });
  }
});

Deno.test("FileRegistry reports corruption that appears after it was opened", async () => {
  await using dir = await tempDir();
  const registry = await FileRegistry.open(dir.path);
  await registry.put(reg("alice"));
  await Deno.writeTextFile(registry.path, "garbage that is longer than before ".repeat(20));
  await assert.rejects(registry.get("alice"), RegistryCorruptError);
  await assert.rejects(registry.list(), RegistryCorruptError);
  await assert.rejects(registry.put(reg("bob")), RegistryCorruptError);
  // Repairing the file makes the instance usable again.
  await Deno.writeTextFile(registry.path, JSON.stringify({ version: 1, devices: [reg("bob")] }));
  assert.deepEqual((await registry.list()).map((r) => r.id), ["bob"]);
});

Deno.test("FileRegistry reads a version-1 file and writes it back as version 2", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "registry.json");
  await Deno.writeTextFile(path, JSON.stringify({ version: 1, devices: [reg("alice")] }));
  const registry = await FileRegistry.open(dir.path);
  assert.deepEqual((await registry.list()).map((r) => r.id), ["alice"]);
  await registry.put(reg("bob"));
  const file = JSON.parse(await Deno.readTextFile(path));
  assert.equal(file.version, 2);
  assert.deepEqual(file.devices.map((d: Registration) => d.id), ["alice", "bob"]);
});

Deno.test("FileRegistry.loginSecret() creates 32 owner-only bytes once and keeps them", async () => {
  await using dir = await tempDir();
  const [a, b] = await Promise.all([
    (await FileRegistry.open(dir.path)).loginSecret(),
    (await FileRegistry.open(dir.path)).loginSecret(),
  ]);
  assert.equal(a.length, 32);
  assert.deepEqual(a, b);
  assert.deepEqual(await (await FileRegistry.open(dir.path)).loginSecret(), a);
  const info = await Deno.stat(join(dir.path, "login-secret"));
  assert.equal(info.mode! & 0o777, 0o600);
  assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), ["login-secret"]);
});
