import assert from "node:assert/strict";
import { DeviceState } from "../../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../../shared/protocol/messages.ts";
import {
  BUCKETS,
  compareVersion,
  type DeviceNotice,
  MeshState,
  type Notice,
  parseNotice,
  type RelayNotice,
} from "./mesh_state.ts";
import { parseUpdate } from "./notices.ts";

/** A well-formed SCRAM verifier: peers' registrations are checked for one. */
const VERIFIER = `scram-sha-256$4096$${"A".repeat(22)}==$${"A".repeat(43)}=$${"g".repeat(43)}=`;

const opts = { permissions: "none" } as const;

function entry(
  id: string,
  relay: string,
  state: DeviceState = DeviceState.Online,
  lastUpdate = 0,
): DirectoryEntry {
  return {
    id,
    type: "FAX",
    attributes: [],
    services: [],
    state,
    relay,
    idle: 1,
    sessions: 0,
    peers: [],
    lastUpdate,
  };
}
function dev(
  origin: string,
  v: [number, number],
  id: string,
  state: DeviceState = DeviceState.Online,
  wall = 0,
): DeviceNotice {
  return { t: "dev", origin, v, entry: entry(id, origin, state, wall) };
}
function relay(origin: string, v: [number, number], neighbors: string[]): RelayNotice {
  return { t: "relay", origin, v, address: `127.0.0.1:${v[1]}`, neighbors, wall: 0 };
}

Deno.test({
  name: "compareVersion() orders by epoch, then sequence",
  ...opts,
  fn() {
    assert.ok(compareVersion([1, 9], [2, 0]) < 0);
    assert.ok(compareVersion([2, 3], [2, 2]) > 0);
    assert.equal(compareVersion([2, 2], [2, 2]), 0);
  },
});

Deno.test({
  name: "MeshState.apply() takes newer notices and drops equal or older ones",
  ...opts,
  fn() {
    const s = new MeshState("me", () => 0);
    assert.equal(s.apply(dev("r1", [1, 2], "fax")), true);
    assert.equal(s.apply(dev("r1", [1, 2], "fax")), false, "a duplicate is dropped");
    assert.equal(s.apply(dev("r1", [1, 1], "fax", DeviceState.Offline)), false, "an older one too");
    assert.equal(s.presence("fax")?.relay, "r1");
    assert.equal(s.apply(dev("r1", [1, 3], "fax", DeviceState.Offline)), true);
    assert.equal(s.presence("fax"), null);
    assert.deepEqual(s.stats, { applied: 2, dropped: 2, refused: 0 });
  },
});

Deno.test({
  name: "MeshState: a relay's new epoch voids presence from its earlier run",
  ...opts,
  fn() {
    const s = new MeshState("me", () => 0);
    s.apply(relay("r1", [1, 1], []));
    s.apply(dev("r1", [1, 5], "fax"));
    s.apply(relay("r1", [2, 1], []));
    assert.equal(s.presence("fax"), null);
    assert.equal(
      s.apply(dev("r1", [1, 9], "fax")),
      false,
      "late notices of the old run are dropped",
    );
  },
});

Deno.test({
  name: "MeshState.presence() prefers live relays and shows dead ones as unreachable",
  ...opts,
  fn() {
    const s = new MeshState("me", () => 0);
    s.setDirect(["r2"]); // r1 has no live path from here
    s.apply(dev("r1", [1, 1], "fax", DeviceState.Online, 500));
    s.apply(dev("r2", [1, 1], "other"));
    assert.equal(s.presence("fax")?.state, DeviceState.Unreachable);
    // The device logs in elsewhere: the live relay wins even with an older wall clock.
    s.apply(dev("r2", [1, 2], "fax", DeviceState.Online, 100));
    assert.equal(s.presence("fax")?.relay, "r2");
    assert.equal(s.presence("fax")?.state, DeviceState.Online);
  },
});

Deno.test({
  name: "MeshState.isAlive(): a path of links both ends list, over fresh records only",
  ...opts,
  fn() {
    let now = 0;
    const s = new MeshState("a", () => now, { recordTtlMs: 1000 });
    assert.equal(s.isAlive("a"), true, "self");
    // a - b - c - d
    s.apply(relay("b", [1, 1], ["a", "c"]));
    s.apply(relay("c", [1, 1], ["b", "d"]));
    s.apply(relay("d", [1, 1], ["c"]));
    assert.equal(s.isAlive("b"), false, "no live link here yet");
    s.setDirect(["b"]);
    assert.deepEqual(["b", "c", "d"].map((r) => s.isAlive(r)), [true, true, true]);
    // c loses its link to d and floods its record at once: d is cut off even though d's
    // own (stale) record still lists c.
    s.apply(relay("c", [1, 2], ["b"]));
    assert.deepEqual(["b", "c", "d"].map((r) => s.isAlive(r)), [true, true, false]);
    // The link is back and both ends say so.
    s.apply(relay("c", [1, 3], ["b", "d"]));
    assert.equal(s.isAlive("d"), true);
    // Records not refreshed within the TTL stop counting, except over a live link here.
    now = 1500;
    s.apply(relay("b", [1, 2], ["a", "c"]));
    assert.deepEqual(["b", "c", "d"].map((r) => s.isAlive(r)), [true, false, false]);
    s.setDirect([]);
    assert.equal(s.isAlive("b"), false, "link down: unreachable");
  },
});

Deno.test({
  name: "MeshState.nextHop() follows a shortest path of live relays' neighbour lists",
  ...opts,
  fn() {
    const s = new MeshState("a", () => 0);
    // a - b - c - d, and a - e - d (two hops both ways: either first hop is shortest)
    s.apply(relay("b", [1, 1], ["a", "c"]));
    s.apply(relay("c", [1, 1], ["b", "d"]));
    s.apply(relay("e", [1, 1], ["a", "d"]));
    s.apply(relay("d", [1, 1], ["c", "e"]));
    s.setDirect(["b", "e"]);
    assert.equal(s.nextHop("b"), "b");
    assert.equal(s.nextHop("c"), "b");
    assert.equal(s.nextHop("d"), "e");
    assert.equal(s.nextHop("zz"), null);
    s.setDirect([]);
    assert.equal(s.nextHop("d"), null, "no live links, no route");
  },
});

Deno.test({
  name: "MeshState registrations: higher Lamport wins, origin name breaks ties",
  ...opts,
  fn() {
    const s = new MeshState("me", () => 0);
    const reg = (lamport: number, origin: string, hash: string): Notice => ({
      t: "reg",
      id: "x",
      lamport,
      origin,
      reg: { id: "x", type: "FAX", attributes: [], passwordHash: hash, updatedAt: 0 },
    });
    assert.ok(s.apply(reg(1, "r1", "a")));
    assert.ok(!s.apply(reg(1, "r0", "b")));
    assert.ok(s.apply(reg(1, "r2", "c")));
    assert.ok(s.apply(reg(2, "r0", "d")));
    assert.equal(s.registration("x")?.reg?.passwordHash, "d");
    assert.ok(s.apply({ t: "reg", id: "x", lamport: 3, origin: "r9", reg: null }));
    assert.equal(s.registration("x")?.reg, null);
    assert.equal(s.lamportOf("x"), 3);
  },
});

Deno.test({
  name: "parseNotice() rejects malformed bodies with SyntaxError",
  ...opts,
  fn() {
    for (
      const bad of [
        "[]",
        "null",
        '{"t":"dev"}',
        '{"t":"relay","origin":"a","v":[1],"address":"","neighbors":[]}',
        "{",
      ]
    ) {
      assert.throws(() => parseNotice(bad), SyntaxError, bad);
    }
    const n = dev("r1", [1, 1], "fax");
    assert.deepEqual(parseNotice(JSON.stringify(n)), n);
  },
});

/** A seeded PRNG (mulberry32). */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test({
  name: "flooding over a random connected graph: every relay converges, no notice loops",
  ...opts,
  fn() {
    for (let trial = 0; trial < 50; trial++) {
      const random = rng(trial + 1);
      const n = 3 + Math.floor(random() * 6);
      const names = Array.from({ length: n }, (_, i) => `r${i}`);
      const edges = new Set<string>();
      for (let i = 1; i < n; i++) edges.add(`${Math.floor(random() * i)}-${i}`); // a tree...
      for (let k = 0; k < n; k++) { // ...plus some cycles
        const a = Math.floor(random() * n);
        const b = Math.floor(random() * n);
        if (a !== b) edges.add(`${Math.min(a, b)}-${Math.max(a, b)}`);
      }
      const neighbours = names.map((_, i) =>
        [...edges].map((e) => e.split("-").map(Number)).filter(([a, b]) => a === i || b === i)
          .map(([a, b]) => (a === i ? b : a))
      );
      const states = names.map((name) => new MeshState(name, () => 0));
      // In flight: [to, from, notice]; delivered in random order.
      const queue: [number, number, Notice][] = [];
      const seq = names.map(() => 0);
      let deliveries = 0;
      for (let change = 0; change < 30; change++) {
        const origin = Math.floor(random() * n);
        const notice = dev(
          names[origin],
          [1, ++seq[origin]],
          `d${Math.floor(random() * 5)}`,
          random() < 0.5 ? DeviceState.Online : DeviceState.Offline,
        );
        states[origin].apply(notice);
        for (const nb of neighbours[origin]) queue.push([nb, origin, notice]);
        // Deliver some messages, randomly interleaved with new changes.
        for (let k = Math.floor(random() * queue.length); k > 0 && queue.length; k--) {
          const [to, from, m] = queue.splice(Math.floor(random() * queue.length), 1)[0];
          deliveries++;
          if (states[to].apply(m)) {
            for (const nb of neighbours[to]) if (nb !== from) queue.push([nb, to, m]);
          }
        }
      }
      for (let guard = 0; queue.length > 0; guard++) {
        assert.ok(guard < 1_000_000, "flooding must terminate");
        const [to, from, m] = queue.splice(Math.floor(random() * queue.length), 1)[0];
        deliveries++;
        if (states[to].apply(m)) {
          for (const nb of neighbours[to]) if (nb !== from) queue.push([nb, to, m]);
        }
      }
      for (const s of states) {
        assert.deepEqual(s.digest(), states[0].digest(), `trial ${trial}: same tables everywhere`);
      }
      // A notice is applied at most once per relay (one overtaken by a newer one for the
      // same device on another path is dropped, which is fine: the newer one wins).
      for (const s of states) assert.ok(s.stats.applied <= 30, `trial ${trial}`);
      assert.ok(deliveries <= 30 * 2 * edges.size, "at most one copy per link direction");
    }
  },
});

Deno.test({
  name: "digest exchange heals a partition: both sides end with the newest tables",
  ...opts,
  fn() {
    const a = new MeshState("a", () => 0);
    const c = new MeshState("c", () => 0);
    for (const s of [a, c]) s.apply(dev("a", [1, 1], "x"));
    a.apply(dev("a", [1, 2], "x", DeviceState.Offline)); // changes on a's side
    a.apply(dev("a", [1, 3], "y"));
    c.apply(dev("c", [1, 1], "z")); // and on c's side
    for (const n of a.missingFor(c.digest())) c.apply(n);
    for (const n of c.missingFor(a.digest())) a.apply(n);
    a.setDirect(["c"]);
    c.setDirect(["a"]);
    assert.deepEqual(a.digest(), c.digest());
    assert.equal(c.presence("x"), null);
    assert.equal(c.presence("y")?.relay, "a");
    assert.equal(a.presence("z")?.relay, "c");
    assert.deepEqual(a.missingFor(c.digest()), [], "nothing more to send once in step");
  },
});

Deno.test({
  name: "MeshState.winner(): the newer login claim wins on every relay, ties to the greater name",
  ...opts,
  fn() {
    const a = new MeshState("a", () => 0);
    const b = new MeshState("b", () => 0);
    const onA: DeviceNotice = { ...dev("a", [1, 1], "fax"), claim: 1 };
    const onB: DeviceNotice = { ...dev("b", [1, 1], "fax"), claim: 2 };
    // Delivered in opposite orders: both relays pick the same place.
    a.apply(onA);
    a.apply(onB);
    b.apply(onB);
    b.apply(onA);
    a.setDirect(["b"]);
    b.setDirect(["a"]);
    assert.equal(a.winner("fax")?.origin, "b");
    assert.equal(b.winner("fax")?.origin, "b");
    assert.equal(a.presence("fax")?.relay, "b");
    assert.equal(a.claimOf("fax"), 2, "the next login anywhere claims 3");
    // Two logins with the same claim (concurrent): the greater relay name wins everywhere.
    const tie = new MeshState("c", () => 0);
    tie.setDirect(["a", "b"]);
    tie.apply({ ...dev("b", [1, 1], "x"), claim: 4 });
    tie.apply({ ...dev("a", [1, 1], "x"), claim: 4 });
    assert.equal(tie.winner("x")?.origin, "b");
  },
});

Deno.test({
  name: "parseUpdate() refuses an invalid notice alone and keeps the others",
  ...opts,
  fn() {
    const good = (id: string): Notice => ({
      t: "reg",
      id,
      lamport: 1,
      origin: "r1",
      reg: { id, type: "FAX", attributes: [], passwordHash: VERIFIER, updatedAt: 0 },
    });
    const bad = { ...good("bad"), reg: { ...(good("bad") as { reg: object }).reg, type: "fax!" } };
    const parsed = parseUpdate(JSON.stringify([good("a"), bad, good("b")]));
    assert.deepEqual(parsed.notices.map((n) => n.t === "reg" && n.id), ["a", "b"]);
    assert.equal(parsed.refused.length, 1);
    assert.match(parsed.refused[0], /Device type/);
    const stream = parseUpdate(JSON.stringify({ catchUp: [good("c")] }));
    assert.equal(stream.catchUp, true);
    assert.equal(stream.notices.length, 1);
  },
});

Deno.test({
  name: "catch-up by buckets is linear and resumes: a stream cut midway resends only one bucket",
  ...opts,
  fn() {
    const full = new MeshState("full", () => 0);
    const n = 20_000;
    for (let i = 0; i < n; i++) {
      full.apply({
        t: "reg",
        id: `d${i}`,
        lamport: 1,
        origin: "r1",
        reg: { id: `d${i}`, type: "FAX", attributes: [], passwordHash: VERIFIER, updatedAt: 0 },
      });
    }
    const joiner = new MeshState("joiner", () => 0);
    let sent = 0;
    let rounds = 0;
    // Each round is one link: digest, then buckets in order until the link is "cut".
    for (const cutAfter of [BUCKETS / 4, BUCKETS / 3, Infinity]) {
      rounds++;
      const buckets = full.differingBuckets(0, joiner.digest());
      for (const [k, b] of buckets.entries()) {
        const notices = full.bucketNotices(b);
        // Cut in the middle of a bucket: half of it arrives.
        const arrive = k === Math.floor(cutAfter) ? notices.slice(0, notices.length >> 1) : notices;
        for (const m of arrive) joiner.apply(m);
        sent += arrive.length;
        if (k >= cutAfter) break;
      }
    }
    assert.equal(rounds, 3);
    assert.deepEqual(joiner.digest(), full.digest(), "caught up completely");
    assert.equal(joiner.registrationCount, n);
    // Resent: at most the notices of the two buckets cut in half.
    assert.ok(sent < n + 2 * (3 * n / BUCKETS), `sent ${sent} for ${n}`);
  },
});
