import assert from "node:assert/strict";
import { type LoginAttempt, LoginThrottle, type LoginThrottleOptions } from "./throttle.ts";

const SECOND = 1000;
const MINUTE = 60 * SECOND;

/** A throttle on a fake clock that the test advances. */
function setup(options: LoginThrottleOptions = {}) {
  const clock = { now: 1_000_000 };
  const throttle = new LoginThrottle({ now: () => clock.now, ...options });
  return {
    throttle,
    advance(ms: number) {
      clock.now += ms;
    },
    /** `times` logins that each begin, pass the recheck, and fail. */
    fail(address: string, id: string, times = 1) {
      for (let i = 0; i < times; i++) {
        const attempt = throttle.begin(address, id);
        assert.equal(attempt.kind, "ok", `attempt ${i} of ${address}/${id} was refused`);
        (attempt as LoginAttempt).fail();
      }
    },
  };
}

function waitOf(throttle: LoginThrottle, address: string, id: string): number {
  const a = throttle.begin(address, id);
  if (a.kind === "ok") {
    a.release();
    return 0;
  }
  return a.waitMs;
}

Deno.test("LoginThrottle allows 5 failures of a pair, then locks it out 1 s x 2^(n-5)", () => {
  const { throttle, fail, advance } = setup();
  fail("10.0.0.1", "fax", 5);
  assert.equal(waitOf(throttle, "10.0.0.1", "fax"), SECOND);
  advance(400);
  assert.equal(throttle.check("10.0.0.1", "fax"), 600);
  advance(600);
  for (const seconds of [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]) {
    fail("10.0.0.1", "fax");
    assert.equal(waitOf(throttle, "10.0.0.1", "fax"), seconds * SECOND);
    advance(seconds * SECOND);
  }
});

Deno.test("LoginThrottle never locks an ID out of a clean address (no victim lockout)", () => {
  const { throttle, fail } = setup();
  // An attacker at one address hammers the victim's ID...
  fail("203.0.113.66", "fax1", 5);
  for (let i = 0; i < 50; i++) {
    const a = throttle.begin("203.0.113.66", "fax1");
    assert.equal(a.kind, "wait");
  }
  // ...and many addresses do too.
  for (let i = 0; i < 200; i++) fail(`198.51.100.${i}`, "fax1", 3);
  // The real device, from its own address, is not held back.
  const real = throttle.begin("192.0.2.10", "fax1");
  assert.equal(real.kind, "ok");
  assert.equal((real as LoginAttempt).recheck(), 0);
});

Deno.test("LoginThrottle locks out an address after 20 failures across IDs", () => {
  const { throttle, fail } = setup();
  for (let i = 0; i < 20; i++) fail("10.0.0.1", `dev-${i}`);
  assert.equal(waitOf(throttle, "10.0.0.1", "dev-new"), SECOND);
  assert.equal(waitOf(throttle, "10.0.0.2", "dev-new"), 0);
});

Deno.test("LoginThrottle.begin() gives 300 simultaneous logins of a clean pair a burst of 16", () => {
  const { throttle } = setup();
  const attempts = Array.from({ length: 300 }, () => throttle.begin("10.0.0.1", "fax"));
  const admitted = attempts.filter((a): a is LoginAttempt => a.kind === "ok");
  assert.equal(admitted.length, 16);
  for (const a of admitted) a.fail();
  // After they failed, the pair is locked (16 - 5 free = 11 doublings).
  assert.ok(waitOf(throttle, "10.0.0.1", "fax") >= SECOND);
  assert.equal(throttle.pending, 0);
});

Deno.test("LoginThrottle.begin() gives 300 simultaneous logins of a pair that failed once only its 4 free tries", () => {
  const { throttle, fail } = setup();
  fail("10.0.0.1", "fax", 1);
  const attempts = Array.from({ length: 300 }, () => throttle.begin("10.0.0.1", "fax"));
  const admitted = attempts.filter((a): a is LoginAttempt => a.kind === "ok");
  assert.equal(admitted.length, 4);
  // Each admitted one still passes its recheck (the others' slots do not block it)...
  for (const a of admitted) {
    assert.equal(a.recheck(), 0);
    a.fail();
  }
  // ...and after they failed, the pair is locked.
  assert.equal(waitOf(throttle, "10.0.0.1", "fax"), SECOND);
  assert.equal(throttle.pending, 0);
});

Deno.test("LoginThrottle.recheck() refuses a slot once other attempts failed meanwhile", () => {
  const { throttle, fail } = setup();
  fail("10.0.0.1", "fax", 4);
  const slow = throttle.begin("10.0.0.1", "fax") as LoginAttempt;
  assert.equal(slow.kind, "ok");
  // A fifth attempt cannot start while `slow` may still fail.
  assert.equal(waitOf(throttle, "10.0.0.1", "fax"), SECOND);
  assert.equal(slow.recheck(), 0);
  slow.fail();
  assert.equal(slow.recheck(), SECOND);
});

Deno.test("LoginThrottle bounds pending logins per address and in total", () => {
  const { throttle } = setup({ maxPendingPerAddress: 3, maxPending: 5 });
  const a = [1, 2, 3].map((i) => throttle.begin("10.0.0.1", `d${i}`) as LoginAttempt);
  assert.ok(a.every((x) => x.kind === "ok"));
  const busy = throttle.begin("10.0.0.1", "d4");
  assert.deepEqual(busy, { kind: "wait", waitMs: SECOND, reason: "busy" });
  const b = [1, 2].map((i) => throttle.begin("10.0.0.2", `d${i}`) as LoginAttempt);
  assert.ok(b.every((x) => x.kind === "ok"));
  assert.equal(throttle.begin("10.0.0.3", "x").kind, "wait");
  a[0].release();
  a[0].release(); // idempotent
  assert.equal(throttle.pending, 4);
  assert.equal(throttle.begin("10.0.0.3", "x").kind, "ok");
});

Deno.test("LoginThrottle: a success clears its pair but not the address", () => {
  const { throttle, fail } = setup();
  fail("10.0.0.1", "fax", 4);
  for (let i = 0; i < 15; i++) fail("10.0.0.1", `other-${i}`);
  (throttle.begin("10.0.0.1", "fax") as LoginAttempt).succeed();
  fail("10.0.0.1", "fax", 1); // address: 20 failures now; pair: 1
  assert.equal(waitOf(throttle, "10.0.0.1", "fresh"), SECOND);
});

Deno.test("LoginThrottle forgets a key after 10 minutes without failures", () => {
  const { throttle, fail, advance } = setup();
  fail("10.0.0.1", "fax", 5);
  advance(10 * MINUTE);
  assert.equal(waitOf(throttle, "10.0.0.1", "fax"), 0);
  fail("10.0.0.1", "fax", 4);
  assert.equal(waitOf(throttle, "10.0.0.1", "fax"), 0);
  assert.equal(throttle.size, 2);
  advance(10 * MINUTE);
  throttle.check("x", "y");
  assert.equal(throttle.size, 0);
});

Deno.test("LoginThrottle holds at most maxKeys addresses and maxKeys pairs, evicting the oldest", () => {
  const { throttle, fail, advance } = setup({ maxKeys: 100 });
  fail("10.0.0.1", "victim", 5);
  for (let i = 0; i < 200; i++) {
    advance(1);
    fail(`198.51.${i >> 8}.${i & 255}`, `id-${i}`);
    assert.ok(throttle.size <= 200);
  }
  // 200 other addresses failed since: the oldest address and pair were forgotten.
  assert.equal(waitOf(throttle, "10.0.0.1", "victim"), 0);
  assert.throws(() => new LoginThrottle({ maxKeys: 0 }), RangeError);
});

Deno.test("LoginThrottle: failures of many pairs do not push an address's lockout out", () => {
  const { throttle, fail, advance } = setup({ maxKeys: 10 });
  for (let i = 0; i < 20; i++) fail("203.0.113.66", `guess-${i}`);
  assert.equal(waitOf(throttle, "203.0.113.66", "any"), SECOND);
  // Another address fails on 15 more IDs: the pair table overflows, not the address one.
  advance(1);
  for (let i = 0; i < 15; i++) fail("198.51.100.9", `other-${i}`);
  assert.equal(waitOf(throttle, "203.0.113.66", "any"), SECOND - 1);
});

Deno.test("LoginThrottle counts an IPv6 /64 as one address, and IPv4-mapped as IPv4", () => {
  const { throttle, fail } = setup();
  for (let i = 1; i <= 20; i++) fail(`2001:db8:1:2::${i.toString(16)}`, `id-${i}`);
  assert.equal(waitOf(throttle, "2001:db8:1:2:ffff::9", "fresh"), SECOND);
  assert.equal(waitOf(throttle, "2001:db8:1:3::1", "fresh"), 0);
  for (let i = 1; i <= 20; i++) fail("::ffff:192.0.2.7", `id-${i}`);
  assert.equal(waitOf(throttle, "192.0.2.7", "fresh"), SECOND);
});

Deno.test("LoginThrottle: a stalled login makes room after staleMs, uncounted; younger ones do not", () => {
  const { throttle, advance } = setup({ maxPendingPerAddress: 2, maxPending: 3 });
  const evicted: string[] = [];
  const begin = (address: string, id: string) =>
    throttle.begin(address, id, () => evicted.push(`${address}/${id}`));
  // Three logins that say HELLO and LOGIN, then stall.
  const stalls = [begin("10.0.0.1", "a"), begin("10.0.0.1", "b"), begin("10.0.0.2", "c")];
  assert.ok(stalls.every((s) => s.kind === "ok"));
  advance(1999);
  assert.equal(begin("10.0.0.3", "dev").kind, "wait", "every slot is still young");
  assert.equal(begin("10.0.0.1", "d").kind, "wait");
  advance(1);
  // The full relay: the oldest stall (10.0.0.1/a) makes room for a new address.
  const dev = begin("10.0.0.3", "dev");
  assert.equal(dev.kind, "ok");
  assert.deepEqual(evicted, ["10.0.0.1/a"]);
  assert.equal(throttle.pending, 3);
  (stalls[0] as LoginAttempt).release(); // its own end comes later: a no-op
  assert.equal(throttle.pending, 3);
  // Full again: the oldest stall overall (10.0.0.1/b) makes room.
  advance(2000);
  assert.equal(begin("10.0.0.9", "e").kind, "ok");
  assert.deepEqual(evicted, ["10.0.0.1/a", "10.0.0.1/b"]);
  // Ended stalls are not failures.
  assert.equal(throttle.size, 0);
  // A full address: its own oldest stall makes room, not another address's.
  const perAddress = setup({ maxPendingPerAddress: 2 });
  const gone: string[] = [];
  const other = perAddress.throttle.begin("10.0.0.5", "x", () => gone.push("x"));
  perAddress.advance(1);
  for (const id of ["a", "b"]) perAddress.throttle.begin("10.0.0.1", id, () => gone.push(id));
  perAddress.advance(2000);
  assert.equal(perAddress.throttle.begin("10.0.0.1", "c").kind, "ok");
  assert.deepEqual(gone, ["a"]);
  assert.equal(other.kind, "ok");
  // An attempt begun without onEvict is never ended early.
  const { throttle: plain, advance: later } = setup({ maxPending: 1 });
  assert.equal(plain.begin("10.0.0.1", "a").kind, "ok");
  later(60_000);
  assert.equal(plain.begin("10.0.0.2", "b").kind, "wait");
});

Deno.test("LoginThrottle: logins stalled for one ID hold it back only until they are stale, and say busy", () => {
  const { throttle, advance } = setup();
  const evicted: number[] = [];
  // 16 logins for fax1 from its own (shared) address that never answer their challenge.
  for (let i = 0; i < 16; i++) {
    assert.equal(throttle.begin("192.0.2.1", "fax1", () => evicted.push(i)).kind, "ok");
  }
  const young = throttle.begin("192.0.2.1", "fax1");
  assert.deepEqual(young, { kind: "wait", waitMs: SECOND, reason: "busy" }, "not a failure");
  advance(2000);
  // Stale now: the real device's login takes the oldest one's place.
  const device = throttle.begin("192.0.2.1", "fax1", () => {});
  assert.equal(device.kind, "ok");
  assert.deepEqual(evicted, [0]);
  assert.equal(throttle.size, 0, "no failure recorded");
  // A pair that really failed is still refused for failures, stale pending or not.
  const { throttle: t2, fail, advance: later } = setup();
  fail("192.0.2.9", "fax2", 5);
  later(1);
  assert.equal((t2.begin("192.0.2.9", "fax2") as { reason: string }).reason, "failures");
});

Deno.test("LoginThrottle: stalls a client abandons count against its address only; recycling them locks that address out", () => {
  const { throttle } = setup();
  // Stalls closed by the client before they grow stale, 20 of them (for many IDs).
  for (let i = 0; i < 20; i++) {
    const stall = throttle.begin("203.0.113.9", `id-${i % 3}`, () => {});
    assert.equal(stall.kind, "ok", `stall ${i}`);
    (stall as LoginAttempt).abandon();
  }
  const next = throttle.begin("203.0.113.9", "fax1");
  assert.equal(next.kind, "wait");
  assert.equal((next as { reason: string }).reason, "failures");
  // No pair was charged: the same IDs from a clean address go on at once.
  assert.equal(throttle.begin("198.51.100.1", "id-0").kind, "ok");
  // A stall the throttle itself ended (stale, to make room) is not charged again.
  const { throttle: t2, advance } = setup({ maxPending: 1 });
  const old = t2.begin("192.0.2.1", "a", () => {}) as LoginAttempt;
  advance(2000);
  assert.equal(t2.begin("192.0.2.2", "b", () => {}).kind, "ok");
  old.abandon();
  assert.equal(t2.size, 0);
});
