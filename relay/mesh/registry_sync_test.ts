import assert from "node:assert/strict";
import { Logger } from "../../shared/log.ts";
import { MemoryRegistry, type Registration } from "../registry/registry.ts";
import type { RegNotice } from "./notices.ts";
import { RegistrySync } from "./registry_sync.ts";
import { RegVersions } from "./reg_versions.ts";

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

/** A sync over a mesh kept in a map; `learn` plays a notice arriving from relay r2. */
function setup(registry: FullDisk, versions?: RegVersions) {
  const mesh = new Map<string, RegNotice>();
  const originated: [string, Registration | null][] = [];
  const notices: RegNotice[] = [];
  const sync = new RegistrySync({
    registry,
    logger: Logger.silent(),
    held: (id) => mesh.get(id),
    originate: (id, r, after) => {
      const lamport = Math.max(mesh.get(id)?.lamport ?? 0, after) + 1;
      const n: RegNotice = { t: "reg", id, lamport, origin: "r1", reg: r };
      originated.push([id, r]);
      notices.push(n);
      mesh.set(id, n);
      return n;
    },
    load: (n) => void mesh.set(n.id, n),
    versions,
    coalesceMs: 0,
  });
  const learn = (id: string, r: Registration | null, lamport = 5) => {
    const n: RegNotice = { t: "reg", id, lamport, origin: "r2", reg: r };
    mesh.set(id, n);
    sync.learn(n);
  };
  return { mesh, originated, notices, sync, learn };
}

Deno.test({
  name: "RegistrySync: a failed write is retried and never read back as a deletion or an edit",
  ...opts,
  async fn() {
    const registry = new FullDisk([reg("old", "h1")]);
    const { originated, sync, learn } = setup(registry);
    await sync.poll();
    assert.deepEqual(originated.map(([id]) => id), ["old"], "the registry's own entries go out");
    originated.length = 0;
    registry.full = true;
    // The mesh learns a new device and a password change; the writes fail.
    learn("fax1", reg("fax1"));
    learn("old", reg("old", "h2"));
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
    const { sync, learn } = setup(registry);
    await sync.poll();
    registry.full = true;
    learn("fax1", reg("fax1", "h9"));
    learn("gone", null);
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

Deno.test({
  name: "RegistrySync: at start, unchanged entries keep their version; edits made while stopped " +
    "get a newer one",
  ...opts,
  async fn() {
    const versions = new RegVersions();
    const registry = new FullDisk([reg("a"), reg("b"), reg("c")]);
    const run1 = setup(registry, versions);
    await run1.sync.poll();
    run1.learn("b", reg("b", "h2"), 7); // a change from the mesh, written to the file
    await run1.sync.poll();
    run1.learn("x", reg("x"), 3);
    run1.learn("x", null, 4); // a removal from the mesh
    await run1.sync.close();
    assert.deepEqual(versions.get("b"), { ...versions.get("b"), lamport: 7, origin: "r2" });
    assert.equal(versions.get("x")?.digest, null, "the tombstone is recorded");

    // Stopped: the administrator edits a, removes c, adds d.
    await registry.put(reg("a", "h9"));
    await registry.remove("c");
    await registry.put(reg("d"));
    const run2 = setup(registry, versions);
    await run2.sync.poll();
    const made = Object.fromEntries(
      run2.notices.map((n) => [n.id, [n.lamport, n.reg?.passwordHash]]),
    );
    assert.deepEqual(made, { a: [2, "h9"], c: [2, undefined], d: [1, "h1"] });
    assert.deepEqual(run2.mesh.get("b"), {
      t: "reg",
      id: "b",
      lamport: 7,
      origin: "r2",
      reg: reg("b", "h2"),
    }, "b is loaded at its old version, not originated");
    assert.deepEqual(
      run2.mesh.get("x"),
      { t: "reg", id: "x", lamport: 4, origin: "r2", reg: null },
      "the removal survives the restart",
    );
    assert.equal(versions.get("a")?.lamport, 2, "the new versions are recorded");
    assert.equal(versions.get("c")?.digest, null);
    await run2.sync.close();

    // A third start with nothing changed originates nothing.
    const run3 = setup(registry, versions);
    await run3.sync.poll();
    assert.deepEqual(run3.originated, []);
    assert.equal(run3.mesh.get("a")?.lamport, 2);
    assert.equal(run3.mesh.get("c")?.reg, null);
    await run3.sync.close();
  },
});

Deno.test({
  name: "RegistrySync: a removal made while the relay runs survives its restart",
  ...opts,
  async fn() {
    const versions = new RegVersions();
    const registry = new FullDisk([reg("pc1")]);
    const run1 = setup(registry, versions);
    await run1.sync.poll();
    await registry.remove("pc1");
    await run1.sync.poll();
    assert.deepEqual(run1.originated, [["pc1", reg("pc1")], ["pc1", null]]);
    await run1.sync.close();
    const run2 = setup(registry, versions);
    await run2.sync.poll();
    assert.deepEqual(run2.originated, []);
    assert.deepEqual(run2.mesh.get("pc1"), {
      t: "reg",
      id: "pc1",
      lamport: 2,
      origin: "r1",
      reg: null,
    });
    await run2.sync.close();
  },
});

Deno.test({
  name: "RegistrySync: a version learnt but not written is not recorded for the file's content",
  ...opts,
  async fn() {
    const versions = new RegVersions();
    const registry = new FullDisk([reg("a")]);
    const run1 = setup(registry, versions);
    await run1.sync.poll();
    registry.full = true;
    run1.learn("a", reg("a", "h2"), 9); // never reaches the file
    await run1.sync.close();
    assert.equal(versions.get("a")?.lamport, 1, "the file still holds version 1's content");
    registry.full = false;
    const run2 = setup(registry, versions);
    await run2.sync.poll();
    assert.deepEqual(run2.originated, [], "not mistaken for an edit (the peer's 9 wins again)");
    assert.equal(run2.mesh.get("a")?.lamport, 1);
    await run2.sync.close();
  },
});
