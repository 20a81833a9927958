import assert from "node:assert/strict";
import { DeviceState } from "../../shared/protocol/constants.ts";
import { MeshState } from "./mesh_state.ts";
import { MAX_COUNTER, type Notice, noticeError } from "./notices.ts";

const opts = { permissions: "none" } as const;

/** A well-formed SCRAM verifier (v2 registry form). */
const VERIFIER = `scram-sha-256$4096$${"A".repeat(22)}==$${"A".repeat(43)}=$${"g".repeat(43)}=`;

const dev = {
  t: "dev",
  origin: "r1",
  v: [1, 2],
  entry: {
    id: "fax1",
    type: "FAX",
    attributes: ["FILE TX/RX"],
    state: DeviceState.Online,
    relay: "r1",
    idle: 2,
    sessions: 0,
    peers: [],
    lastUpdate: 1764030000000,
  },
  claim: 3,
  inst: "9a3f01",
};

const reg = (hash: string, lamport = 1, origin = "r1") => ({
  t: "reg",
  id: "fax1",
  lamport,
  origin,
  reg: { id: "fax1", type: "FAX", attributes: [], passwordHash: hash, updatedAt: 1 },
});

Deno.test({
  name: "noticeError() accepts well-formed relay, dev and reg notices",
  ...opts,
  fn() {
    assert.equal(noticeError(dev), null);
    assert.equal(noticeError({ ...dev, entry: { ...dev.entry, state: 0, relay: "" } }), null);
    assert.equal(noticeError(reg(VERIFIER)), null);
    assert.equal(noticeError(reg("scrypt$16384$8$1$c2FsdA$aGFzaA")), null, "v1 hash, unmigrated");
    assert.equal(noticeError({ ...reg(VERIFIER), reg: null }), null, "a tombstone");
    const relay = {
      t: "relay",
      origin: "r1",
      v: [1, 1],
      address: "10.0.0.1:7800",
      neighbors: ["r2"],
      wall: 5,
    };
    assert.equal(noticeError(relay), null);
    assert.match(noticeError({ ...relay, address: "nowhere" })!, /bad address/);
    assert.match(noticeError({ ...relay, wall: -1 })!, /wall/);
  },
});

Deno.test({
  name: "noticeError() checks every field of a dev notice's entry",
  ...opts,
  fn() {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ type: "fax!" }, /bad type/],
      [{ attributes: "FILE TX/RX" }, /bad attributes/],
      [{ attributes: [" padded"] }, /bad attribute/],
      [{ state: 7 }, /bad state/],
      [{ relay: "r9" }, /relay is not the origin/], // r1 speaking for a device on r9
      [{ idle: -1 }, /idle/],
      [{ sessions: 1.5 }, /sessions/],
      [{ peers: ["not an id!"] }, /peers/],
      [{ peers: Array(2000).fill("a") }, /peers/],
      [{ lastUpdate: "now" }, /lastUpdate/],
      [{ id: "" }, /dev:/],
    ];
    for (const [change, reason] of cases) {
      assert.match(noticeError({ ...dev, entry: { ...dev.entry, ...change } }) ?? "", reason);
    }
    assert.match(noticeError({ ...dev, entry: [] })!, /no entry/);
    assert.match(noticeError({ ...dev, inst: { x: 1 } })!, /instance/);
    assert.match(noticeError({ ...dev, claim: -3 })!, /claim/);
  },
});

Deno.test({
  name: "noticeError() refuses a registration whose password verifier is malformed",
  ...opts,
  fn() {
    for (
      const hash of [
        "x",
        "scrypt$x",
        `${VERIFIER}$`,
        VERIFIER.replace("4096", "12"),
        "a".repeat(600),
      ]
    ) {
      assert.match(
        noticeError(reg(hash)) ?? "",
        /reg: .*(verifier|passwordHash)/,
        hash.slice(0, 40),
      );
    }
    assert.match(noticeError({ ...reg(VERIFIER), reg: "x" })!, /reg:/);
  },
});

Deno.test({
  name: "MeshState changes a password verifier only for a registration version newer than held",
  ...opts,
  fn() {
    const s = new MeshState("r0", () => 0);
    const other = VERIFIER.replace(/g/g, "Q");
    assert.ok(s.apply(reg(VERIFIER, 5, "r1") as Notice));
    // Same version, other verifier (a forged copy); an older version; both refused.
    assert.ok(!s.apply(reg(other, 5, "r1") as Notice));
    assert.ok(!s.apply(reg(other, 4, "r9") as Notice));
    assert.equal(s.registration("fax1")?.reg?.passwordHash, VERIFIER);
    assert.ok(s.apply(reg(other, 6, "r0") as Notice));
    assert.equal(s.registration("fax1")?.reg?.passwordHash, other);
  },
});

Deno.test("noticeError() refuses a Lamport counter or login claim past 2^40 (would freeze the ID's edits)", () => {
  assert.equal(noticeError(reg(VERIFIER, MAX_COUNTER)), null);
  assert.equal(noticeError(reg(VERIFIER, MAX_COUNTER + 1)), "reg: bad lamport");
  assert.equal(noticeError(reg(VERIFIER, Number.MAX_SAFE_INTEGER)), "reg: bad lamport");
  assert.equal(noticeError({ ...dev, claim: MAX_COUNTER }), null);
  assert.equal(noticeError({ ...dev, claim: Number.MAX_SAFE_INTEGER }), "dev: bad claim");
});
