import assert from "node:assert/strict";
import { ManualClock } from "./clock.ts";
import { KeepaliveMonitor, pingInterval } from "./keepalive.ts";

function setup(intervalMs = 1000, minAnswerWaitMs = 0) {
  const clock = new ManualClock();
  const pings: number[] = [];
  const deaths: { at: number; silentMs: number }[] = [];
  const monitor = new KeepaliveMonitor({
    intervalMs,
    minAnswerWaitMs,
    clock,
    ping: () => {
      pings.push(clock.now());
      return Promise.resolve();
    },
    onDead: (silentMs) => deaths.push({ at: clock.now(), silentMs }),
  });
  return { clock, pings, deaths, monitor };
}

Deno.test("pingInterval() takes the shorter of the agent's and the relay's interval", () => {
  assert.equal(pingInterval(15_000, 5_000), 5_000);
  assert.equal(pingInterval(2_000, 15_000), 2_000);
  assert.equal(pingInterval(2_000, 0), 2_000);
});

Deno.test("KeepaliveMonitor pings every interval while the relay answers", () => {
  const { clock, pings, deaths, monitor } = setup();
  monitor.start();
  for (let i = 0; i < 10; i++) {
    clock.advance(1000);
    monitor.heard(); // the PONG, at once
  }
  assert.deepEqual(pings, [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000]);
  assert.deepEqual(deaths, []);
  monitor.stop();
  assert.equal(clock.pending, 0);
});

Deno.test("KeepaliveMonitor accepts PONGs up to half an interval late", () => {
  const { clock, pings, deaths, monitor } = setup();
  monitor.start();
  for (let i = 0; i < 10; i++) {
    clock.advance(i === 0 ? 1000 + 499 : 1000);
    monitor.heard(); // each PONG 499 ms after its PING
  }
  assert.equal(pings.length, 10);
  assert.deepEqual(deaths, []);
  monitor.stop();
});

Deno.test("KeepaliveMonitor declares a silent connection dead within 1.5 intervals", () => {
  // Whenever the path dies, the monitor notices within 1.5 intervals of the last answer.
  for (const diesAt of [0, 1, 499, 500, 999, 1000, 1001, 1499, 1500, 1999]) {
    const { clock, deaths, monitor } = setup();
    monitor.start();
    let heardLast = 0;
    for (let t = 0; t < diesAt; t++) {
      clock.advance(1);
      // Answer each ping 10 ms after it went out, while the path is alive.
      if (clock.now() % 1000 === 10) {
        monitor.heard();
        heardLast = clock.now();
      }
    }
    clock.advance(5000 - diesAt);
    assert.equal(deaths.length, 1, `dies at ${diesAt}`);
    assert.ok(deaths[0].at - heardLast <= 1500, `dies at ${diesAt}: noticed at ${deaths[0].at}`);
    assert.equal(deaths[0].silentMs, deaths[0].at - heardLast);
    assert.ok(monitor.dead);
    assert.equal(clock.pending, 0, "no timer left after death");
  }
});

Deno.test("KeepaliveMonitor: a PONG just too late does not save the connection", () => {
  const { clock, deaths, monitor } = setup();
  monitor.start();
  clock.advance(1500);
  assert.deepEqual(deaths, [{ at: 1500, silentMs: 1500 }]);
  monitor.heard(); // a late PONG
  clock.advance(5000);
  assert.equal(deaths.length, 1, "declared dead once");
});

Deno.test("KeepaliveMonitor: a failing PING write is a dead connection", async () => {
  const clock = new ManualClock();
  const { promise, resolve } = Promise.withResolvers<number>();
  const monitor = new KeepaliveMonitor({
    intervalMs: 1000,
    minAnswerWaitMs: 0,
    clock,
    ping: () => Promise.reject(new Error("broken pipe")),
    onDead: resolve,
  });
  monitor.start();
  clock.advance(1000);
  assert.equal(await promise, 1000);
  assert.equal(clock.pending, 0);
});

Deno.test("KeepaliveMonitor: stop() while in a session, start() again afterwards", () => {
  const { clock, pings, deaths, monitor } = setup();
  monitor.start();
  clock.advance(1000);
  monitor.heard();
  monitor.stop(); // a NOTICE dedicated the connection to a session
  clock.advance(60_000);
  assert.deepEqual(pings, [1000]);
  monitor.start(); // released: idle again
  clock.advance(1000);
  assert.deepEqual(pings, [1000, 62_000]);
  assert.deepEqual(deaths, []);
  monitor.stop();
});

Deno.test("KeepaliveMonitor waits at least its minimum for an answer on a very short interval", () => {
  const { clock, deaths, monitor } = setup(100, 1000);
  monitor.start();
  clock.advance(100); // first PING
  clock.advance(999);
  assert.equal(deaths.length, 0, "a PONG 999 ms late on a loaded machine is not a death");
  clock.advance(1);
  assert.equal(deaths.length, 1);
  monitor.stop();
});
