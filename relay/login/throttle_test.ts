import assert from "node:assert/strict";
import { LoginThrottle, type LoginThrottleOptions } from "./throttle.ts";

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
    fail(address: string, id: string, times = 1) {
      for (let i = 0; i < times; i++) throttle.recordFailure(address, id);
    },
  };
}

Deno.test("LoginThrottle allows the first 5 failures without waiting", () => {
  const { throttle, fail } = setup();
  assert.equal(throttle.check("10.0.0.1", "fax"), 0);
  for (let i = 0; i < 4; i++) {
    fail("10.0.0.1", "fax");
    assert.equal(throttle.check("10.0.0.1", "fax"), 0);
  }
});

Deno.test("LoginThrottle.check() locks out for 1 s x 2^(failures-5) from the last failure", () => {
  const { throttle, fail, advance } = setup();
  fail("10.0.0.1", "fax", 5);
  assert.equal(throttle.check("10.0.0.1", "fax"), 1 * SECOND);
  advance(400);
  assert.equal(throttle.check("10.0.0.1", "fax"), 600);
  advance(600);
  assert.equal(throttle.check("10.0.0.1", "fax"), 0);

  const expected = [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300];
  for (const seconds of expected) {
    fail("10.0.0.1", "fax");
    assert.equal(throttle.check("10.0.0.1", "fax"), seconds * SECOND);
    advance(seconds * SECOND);
    assert.equal(throttle.check("10.0.0.1", "fax"), 0);
  }
});

Deno.test("LoginThrottle caps the lockout at 5 minutes even after many failures", () => {
  const { throttle, fail } = setup();
  fail("10.0.0.1", "fax", 2000);
  assert.equal(throttle.check("10.0.0.1", "fax"), 5 * MINUTE);
});

Deno.test("LoginThrottle counts per address across IDs and per ID across addresses", () => {
  const { throttle, fail } = setup();
  // One address guessing many IDs.
  for (let i = 0; i < 5; i++) fail("10.0.0.1", `dev-${i}`);
  assert.equal(throttle.check("10.0.0.1", "dev-new"), SECOND);
  assert.equal(throttle.check("10.0.0.2", "dev-new"), 0);
  // Many addresses guessing one ID.
  for (let i = 0; i < 6; i++) fail(`192.0.2.${i}`, "target");
  assert.equal(throttle.check("198.51.100.1", "target"), 2 * SECOND);
  assert.equal(throttle.check("198.51.100.1", "other"), 0);
});

Deno.test("LoginThrottle.check() answers the longer of the address and ID waits", () => {
  const { throttle, fail, advance } = setup();
  fail("10.0.0.1", "a", 7); // address: 7 failures; ID a: 7
  advance(SECOND);
  fail("10.0.0.2", "b", 5); // ID b: 5 failures (1 s)
  assert.equal(throttle.check("10.0.0.1", "b"), 3 * SECOND); // address: 4 s - 1 s elapsed
  assert.equal(throttle.check("10.0.0.2", "b"), SECOND);
  assert.equal(throttle.check("10.0.0.3", "b"), SECOND);
  assert.equal(throttle.check("10.0.0.3", "a"), 3 * SECOND);
});

Deno.test("LoginThrottle.recordSuccess() clears the ID's and the address's counters", () => {
  const { throttle, fail } = setup();
  fail("10.0.0.1", "fax", 6);
  fail("10.0.0.2", "fax", 6);
  assert.ok(throttle.check("10.0.0.1", "fax") > 0);
  throttle.recordSuccess("10.0.0.1", "fax");
  assert.equal(throttle.check("10.0.0.1", "fax"), 0);
  // The other address's own counter is untouched.
  assert.equal(throttle.check("10.0.0.2", "printer"), 2 * SECOND);
  // Counting starts again from zero for the cleared keys.
  fail("10.0.0.1", "fax", 4);
  assert.equal(throttle.check("10.0.0.1", "fax"), 0);
});

Deno.test("LoginThrottle forgets a key after 10 minutes without failures", () => {
  const { throttle, fail, advance } = setup();
  fail("10.0.0.1", "fax", 5);
  advance(10 * MINUTE - 1);
  fail("10.0.0.1", "fax"); // still inside the window: 6th failure
  assert.equal(throttle.check("10.0.0.1", "fax"), 2 * SECOND);
  advance(10 * MINUTE);
  assert.equal(throttle.check("10.0.0.1", "fax"), 0);
  fail("10.0.0.1", "fax", 4); // a fresh count: 4 failures are free
  assert.equal(throttle.check("10.0.0.1", "fax"), 0);
  fail("10.0.0.1", "fax");
  assert.equal(throttle.check("10.0.0.1", "fax"), SECOND);
});

Deno.test("LoginThrottle keeps a persistent guesser locked out (cap < window)", () => {
  const { throttle, fail, advance } = setup();
  fail("10.0.0.1", "fax", 5);
  for (let i = 0; i < 20; i++) {
    const wait = throttle.check("10.0.0.1", "fax");
    advance(wait);
    fail("10.0.0.1", "fax");
  }
  assert.equal(throttle.check("10.0.0.1", "fax"), 5 * MINUTE);
});

Deno.test("LoginThrottle prunes expired entries", () => {
  const { throttle, fail, advance } = setup();
  fail("10.0.0.1", "a");
  fail("10.0.0.2", "b");
  assert.equal(throttle.size, 4);
  advance(5 * MINUTE);
  fail("10.0.0.3", "c");
  assert.equal(throttle.size, 6);
  advance(5 * MINUTE);
  throttle.check("10.0.0.9", "z");
  assert.equal(throttle.size, 2); // only 10.0.0.3 and c remain
  advance(10 * MINUTE);
  throttle.check("10.0.0.9", "z");
  assert.equal(throttle.size, 0);
});

Deno.test("LoginThrottle holds at most 10,000 keys, evicting the oldest", () => {
  const { throttle, fail, advance } = setup();
  fail("10.0.0.1", "victim", 6);
  for (let i = 0; i < 6000; i++) {
    advance(1);
    fail(`198.51.${i >> 8}.${i & 255}`, `id-${i}`);
    assert.ok(throttle.size <= 10_000);
  }
  assert.equal(throttle.size, 10_000);
  // The earliest keys were evicted; the newest are still counted.
  assert.equal(throttle.check("10.0.0.1", "victim"), 0);
  fail("198.51.23.111", "id-5999", 4);
  assert.equal(throttle.check("198.51.23.111", "id-5999"), SECOND);
});

Deno.test("LoginThrottle honours custom options", () => {
  const { throttle, fail } = setup({
    freeFailures: 2,
    baseDelayMs: 100,
    maxDelayMs: 350,
    maxKeys: 2,
  });
  fail("a", "b", 2);
  assert.equal(throttle.check("a", "b"), 100);
  fail("a", "b", 3);
  assert.equal(throttle.check("a", "b"), 350);
  fail("c", "d");
  assert.equal(throttle.size, 2);
  assert.equal(throttle.check("a", "b"), 0);
  assert.throws(() => new LoginThrottle({ maxKeys: 0 }), RangeError);
});

Deno.test("LoginThrottle defaults to Date.now", () => {
  const throttle = new LoginThrottle();
  for (let i = 0; i < 5; i++) throttle.recordFailure("10.0.0.1", "fax");
  const wait = throttle.check("10.0.0.1", "fax");
  assert.ok(wait > 0 && wait <= SECOND, String(wait));
});
