import assert from "node:assert/strict";
import { Logger } from "../../shared/log.ts";
import { MemoryRegistry, type Registration } from "../registry/registry.ts";
import { RegistrySync } from "./registry_sync.ts";

const opts = { permissions: "none" } as const;

function reg(id: string, hash = "h1"): Registration {
  return { id, type: "FAX", attributes: [], passwordHash: hash, updatedAt: 1 };
}

/** A registry whose writes fail while `full` is set (a disk that is full). */
class FullDisk extends MemoryRegistry {
  full = false;
  override put(r: Registration): Promise<void> {
    return this.full ? Promise.reject(new Error("No space left on device")) : super.put(r);
  }
  override remove(id: string): Promise<boolean> {
    return this.full ? Promise.reject(new Error("No space left on device")) : super.remove(id);
  }
}

function setup(registry: FullDisk) {
  const mesh = new Map<string, Registration | null>();
  const originated: [string, Registration | null][] = [];
  const sync = new RegistrySync({
    registry,
    logger: Logger.silent(),
    held: (id) => mesh.get(id),
    originate: (id, r) => {
      originated.push([id, r]);
      mesh.set(id, r);
    },
    coalesceMs: 0,
  });
  return { mesh, originated, sync };
}

Deno.test({
  name: "RegistrySync: a failed write is retried and never read back as a deletion or an edit",
  ...opts,
  async fn() {
    const registry = new FullDisk([reg("old", "h1")]);
    const { mesh, originated, sync } = setup(registry);
    await sync.poll();
    assert.deepEqual(originated.map(([id]) => id), ["old"], "the registry's own entries go out");
    originated.length = 0;
    registry.full = true;
    // The mesh learns a new device and a password change; the writes fail.
    mesh.set("fax1", reg("fax1"));
    sync.learn("fax1", reg("fax1"));
    mesh.set("old", reg("old", "h2"));
    sync.learn("old", reg("old", "h2"));
    for (let i = 0; i < 3; i++) await sync.poll();
    assert.ok(sync.failures >= 3, "every attempt is reported");
    assert.equal(sync.pending, 2, "nothing is dropped");
    assert.deepEqual(originated, [], "no deletion of fax1, no revert of the password change");
    registry.full = false;
    await sync.poll();
    assert.equal(sync.failures, 0);
    assert.equal((await registry.get("fax1"))?.id, "fax1");
    assert.equal((await registry.get("old"))?.passwordHash, "h2");
    assert.deepEqual(originated, []);
    await sync.close();
  },
});

Deno.test({
  name: "RegistrySync: an administrator's removal becomes a tombstone; an edit becomes a notice",
  ...opts,
  async fn() {
    const registry = new FullDisk([reg("a"), reg("b")]);
    const { originated, sync } = setup(registry);
    await sync.poll();
    originated.length = 0;
    await registry.remove("a");
    await registry.put(reg("b", "h9"));
    await sync.poll();
    assert.deepEqual(originated, [["b", reg("b", "h9")], ["a", null]]);
    await sync.close();
  },
});

/** A registry that says when its content may have changed, and counts full listings. */
class CountingRegistry extends FullDisk {
  gen = 1;
  lists = 0;
  override list(): Promise<Registration[]> {
    this.lists++;
    return super.list();
  }
  override generation(): Promise<number> {
    return Promise.resolve(this.gen);
  }
}

Deno.test({
  name: "RegistrySync: an unchanged registry is not listed again on every poll",
  ...opts,
  async fn() {
    const registry = new CountingRegistry([reg("a")]);
    const { originated, sync } = setup(registry);
    await sync.poll();
    for (let i = 0; i < 5; i++) await sync.poll();
    assert.equal(registry.lists, 1, "100,000 registrations are not compared every second");
    await registry.put(reg("b"));
    registry.gen++;
    await sync.poll();
    assert.equal(registry.lists, 2);
    assert.deepEqual(
      originated.map(([id]) => id),
      ["a", "b"],
      "the admin's addition still goes out",
    );
  },
});

Deno.test({
  name: "RegistrySync.pendingFor(): a learnt registration is readable before its write lands",
  ...opts,
  async fn() {
    const registry = new FullDisk([reg("gone", "h1")]);
    const { sync } = setup(registry);
    await sync.poll();
    registry.full = true;
    sync.learn("fax1", reg("fax1", "h9"));
    sync.learn("gone", null);
    assert.equal(sync.pendingFor("fax1")?.passwordHash, "h9");
    assert.equal(sync.pendingFor("gone"), null, "a learnt removal");
    assert.equal(sync.pendingFor("other"), undefined);
    await sync.poll(); // the write fails: still pending, still readable
    assert.equal(sync.pendingFor("fax1")?.passwordHash, "h9");
    registry.full = false;
    await sync.poll();
    assert.equal(sync.pendingFor("fax1"), undefined, "written: the registry answers now");
    assert.equal((await registry.get("fax1"))?.passwordHash, "h9");
    await sync.close();
  },
});
