import assert from "node:assert/strict";
import { Logger } from "../../shared/log.ts";
import { MemoryRegistry, type Registration } from "../registry/registry.ts";
import { RegistryWatch } from "./registry_watch.ts";

const opts = { permissions: "none" } as const;

function reg(id: string, hash = "h1"): Registration {
  return { id, type: "FAX", attributes: [], passwordHash: hash, updatedAt: 1 };
}

/** A registry whose reads fail while `down` is set, and that counts them. */
class Flaky extends MemoryRegistry {
  down = false;
  reads = 0;
  override get(id: string): Promise<Registration | undefined> {
    this.reads++;
    return this.down ? Promise.reject(new Error("connection refused")) : super.get(id);
  }
}

function setup(registry: Flaky, held: string[]) {
  const applied: [string, string | undefined][] = [];
  const watch = new RegistryWatch({
    registry,
    held: () => held,
    apply: (id, r) => applied.push([id, r?.passwordHash]),
    logger: Logger.silent(),
  });
  return { applied, watch };
}

Deno.test({
  name: "RegistryWatch.poll() reads the held IDs only when the generation moved",
  ...opts,
  async fn() {
    const registry = new Flaky([reg("a"), reg("b"), reg("c")]);
    const { applied, watch } = setup(registry, ["a", "b"]);
    await watch.poll();
    applied.length = 0;
    const reads = registry.reads;
    for (let i = 0; i < 3; i++) await watch.poll();
    assert.equal(registry.reads, reads, "no change: nothing read");
    const epoch = watch.epoch;
    await registry.put(reg("a", "h2"));
    await registry.remove("b");
    await watch.poll();
    assert.equal(watch.epoch, epoch + 1);
    assert.deepEqual(applied, [["a", "h2"], ["b", undefined]], "c is not held here: not read");
    await watch.close();
  },
});

Deno.test({
  name: "RegistryWatch: a failed read is never applied as a removal, and is retried",
  ...opts,
  async fn() {
    const registry = new Flaky([reg("a")]);
    const { applied, watch } = setup(registry, ["a"]);
    await watch.poll();
    applied.length = 0;
    registry.down = true;
    await registry.put(reg("a", "h2"));
    await watch.poll();
    assert.deepEqual(applied, [], "an outage removes nobody");
    registry.down = false;
    await watch.poll(); // same generation, but the last check failed
    assert.deepEqual(applied, [["a", "h2"]]);
    await watch.close();
  },
});

Deno.test({
  name: "RegistryWatch: a generation that went down (a store that lost its data) revokes nobody",
  ...opts,
  async fn() {
    const registry = new Flaky([reg("a")]);
    let gen = 5;
    registry.generation = () => Promise.resolve(gen);
    const { applied, watch } = setup(registry, ["a"]);
    await watch.poll();
    applied.length = 0;
    await registry.remove("a"); // Redis restarted empty: the registration and the counter are gone
    gen = 0;
    await watch.poll();
    assert.deepEqual(applied, []);
    gen = 1; // an administrator changes something afterwards: from now on changes count
    await watch.poll();
    assert.deepEqual(applied, [["a", undefined]]);
    await watch.close();
  },
});
