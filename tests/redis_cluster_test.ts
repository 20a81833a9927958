import assert from "node:assert/strict";
import { createCluster } from "@redis/client";
import { RedisCluster } from "./redis_helpers.ts";

// The ground Redis mode must stand on to run on Redis Cluster: a real 3-node cluster on
// loopback ports, reached with the client's own cluster support (createCluster), which
// routes each command by the slot of its first key. A script may only touch the keys it
// declares, all in one slot: hash tags ({...}) put a device's keys together.

Deno.test("Redis Cluster: three nodes start, cover every slot, and route by hash tag", async () => {
  const started = performance.now();
  await using cluster = await RedisCluster.start();
  const startMs = performance.now() - started;
  assert.ok(startMs < 15_000, `cluster up in ${Math.round(startMs)} ms`);
  const client = createCluster({
    rootNodes: [{ url: cluster.url() }],
    defaults: { disableOfflineQueue: true, socket: { reconnectStrategy: false } },
  });
  client.on("error", () => {});
  await client.connect();
  try {
    // Keys of one device share a slot through their tag; a script may use both.
    const reg = "tsunagi:reg:{fax1}", dev = "tsunagi:dev:{fax1}";
    await client.sendCommand(reg, false, ["HSET", reg, "type", "FAX"]);
    await client.sendCommand(dev, false, ["HSET", dev, "relay", "r1"]);
    const both = await client.sendCommand(reg, true, [
      "EVAL",
      "return {redis.call('HGET', KEYS[1], 'type'), redis.call('HGET', KEYS[2], 'relay')}",
      "2",
      reg,
      dev,
    ]);
    assert.deepEqual(both, ["FAX", "r1"]);
    // Keys spread over the nodes: untagged keys of 30 devices land on all three.
    const owners = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const key = `tsunagi:dev:d${i}`;
      await client.sendCommand(key, false, ["SET", key, "x"]);
      const slot = await client.sendCommand(key, true, ["CLUSTER", "KEYSLOT", key]);
      owners.add(String(client.getSlotMaster(Number(slot)).port));
    }
    assert.equal(owners.size, 3, "keys on every node");
    // Undeclared or cross-slot keys are refused: why every key must be in KEYS, tagged.
    await assert.rejects(
      client.sendCommand(reg, false, ["EVAL", "return 1", "2", reg, "tsunagi:dev:{other}"]),
      /CROSSSLOT/,
    );
  } finally {
    await client.close();
  }
});
