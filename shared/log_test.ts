import assert from "node:assert/strict";
import { escapeText, Logger, type LoggerOptions, truncate } from "./log.ts";

/** A logger writing into an array, on a clock the test moves by hand. */
function capture(options: LoggerOptions = {}) {
  const lines: string[] = [];
  const clock = { now: 0 };
  const logger = new Logger({
    component: "relay",
    write: (line) => lines.push(line),
    now: () => clock.now,
    ...options,
  });
  return { logger, lines, clock };
}

/** True if `line` holds a C0/C1 control character or a line separator, unescaped. */
function hasRawControl(line: string): boolean {
  return [...line].some((c) => {
    const code = c.codePointAt(0)!;
    return code < 0x20 || (code >= 0x7f && code <= 0x9f) || code === 0x2028;
  });
}

const T0 = "1970-01-01T00:00:00.000Z";

Deno.test({
  name: "Logger writes text lines with the injected clock's time, level and component",
  permissions: "none",
  fn() {
    const { logger, lines } = capture();
    logger.info("session started", { from: "pc1", bytes: 42, ok: true, note: "two words" });
    logger.debug("not shown");
    assert.deepEqual(lines, [
      `${T0} INFO relay: session started from=pc1 bytes=42 ok=true note="two words"`,
    ]);
  },
});

Deno.test({
  name: "Logger escapes control characters so a value cannot forge lines or drive the terminal",
  permissions: "none",
  fn() {
    const { logger, lines } = capture();
    logger.warn("login refused", {
      device: "evil\x1b[2J\r\n2024-01-01T00:00:00.000Z INFO relay: login ok",
      bidi: "abc\u202edcba",
      c1: "\x9b31m",
      nul: "a\x00b\\x00",
      lone: "x\ud800y",
      ok: "日本語🙂",
    });
    assert.equal(lines.length, 1);
    assert.equal(
      lines[0],
      `${T0} WARN relay: login refused ` +
        String.raw`device="evil\x1b[2J\x0d\x0a2024-01-01T00:00:00.000Z INFO relay: login ok" ` +
        String.raw`bidi=abc\u202edcba c1=\x9b31m nul=a\x00b\\x00 lone=x\ud800y ok=日本語🙂`,
    );
    assert.ok(!hasRawControl(lines[0]));
  },
});

Deno.test({
  name: "Logger truncates a 64 KB value from the network and says how much it cut",
  permissions: "none",
  fn() {
    const { logger, lines } = capture();
    logger.warn("protocol error", {
      device: "A".repeat(65_535),
      error: new Error("x".repeat(300)),
    });
    assert.equal(
      lines[0],
      `${T0} WARN relay: protocol error device="${"A".repeat(128)}…[65407 chars cut]" ` +
        `error="Error: ${"x".repeat(121)}…[179 chars cut]"`,
    );
    const long = capture({ maxFieldLength: 8 });
    long.logger.info("e".repeat(20), { k: "0123456789" });
    assert.equal(
      long.lines[0],
      `${T0} INFO relay: ${"e".repeat(16)}…[4 chars cut] k="01234567…[2 chars cut]"`,
    );
  },
});

Deno.test({
  name: "Logger in JSON format truncates strings and escapes what JSON.stringify leaves raw",
  permissions: "none",
  fn() {
    const { logger, lines } = capture({ format: "json", maxFieldLength: 10 });
    logger.error("cannot write", {
      id: "0123456789abcdef",
      n: 3,
      nested: { list: [1, 2, 3, 4, 5, 6] },
      small: { a: 1 },
      bytes: new Uint8Array(70_000),
      ctl: "\x1b\x9b\u2028",
    });
    assert.equal(lines.length, 1);
    assert.ok(!hasRawControl(lines[0]), lines[0]);
    assert.deepEqual(JSON.parse(lines[0]), {
      time: T0,
      level: "error",
      component: "relay",
      event: "cannot write",
      id: "0123456789…[6 chars cut]",
      n: 3,
      nested: '{"list":[1…[12 chars cut]',
      small: { a: 1 },
      bytes: "<70000 byt…[3 chars cut]",
      ctl: "\\x1b\\x9b\\u2028", // escaped in the decoded value too
    });
  },
});

Deno.test({
  name: "Logger writes a repeated warning 5 times per window, then reports how many it suppressed",
  permissions: "none",
  fn() {
    const { logger, lines, clock } = capture();
    for (let i = 0; i < 50; i++) logger.warn("login refused", { n: i });
    logger.warn("other warning"); // its own budget
    logger.info("login refused"); // info is not limited
    assert.deepEqual(lines.map((l) => l.slice(T0.length + 1)), [
      "WARN relay: login refused n=0",
      "WARN relay: login refused n=1",
      "WARN relay: login refused n=2",
      "WARN relay: login refused n=3",
      "WARN relay: login refused n=4",
      "WARN relay: other warning",
      "INFO relay: login refused",
    ]);
    lines.length = 0;
    clock.now = 9_999; // still the same window
    logger.warn("login refused", { n: 50 });
    assert.deepEqual(lines, []);
    clock.now = 10_000;
    logger.warn("login refused", { n: 51 });
    assert.deepEqual(lines, [
      "1970-01-01T00:00:10.000Z WARN relay: login refused n=51 (46 similar suppressed)",
    ]);
    logger.warn("login refused", { n: 52 });
    assert.equal(lines[1], "1970-01-01T00:00:10.000Z WARN relay: login refused n=52");
  },
});

Deno.test({
  name: "Logger flushes a suppressed count once the window rolls over, even if the message stops",
  permissions: "none",
  fn() {
    const { logger, lines, clock } = capture({ rateLimit: { lines: 2, windowMs: 1000 } });
    for (let i = 0; i < 5; i++) logger.error("registry unavailable");
    assert.equal(lines.length, 2);
    clock.now = 500;
    logger.flush(); // too early: the window is still open
    assert.equal(lines.length, 2);
    clock.now = 1500;
    logger.warn("accept failed"); // any later warning sweeps windows that rolled over
    assert.deepEqual(lines.slice(2), [
      "1970-01-01T00:00:01.500Z ERROR relay: registry unavailable (3 similar suppressed)",
      "1970-01-01T00:00:01.500Z WARN relay: accept failed",
    ]);
    clock.now = 5000;
    logger.flush(); // nothing suppressed since: nothing to say
    assert.equal(lines.length, 4);
    for (let i = 0; i < 3; i++) logger.error("registry unavailable");
    clock.now = 6000;
    logger.flush();
    assert.equal(
      lines.at(-1),
      `1970-01-01T00:00:06.000Z ERROR relay: registry unavailable (1 similar suppressed)`,
    );
  },
});

Deno.test({
  name: "Logger in JSON format reports suppressed lines as a field",
  permissions: "none",
  fn() {
    const { logger, lines, clock } = capture({ format: "json", rateLimit: { lines: 1 } });
    logger.warn("slow peer", { id: "a" });
    logger.warn("slow peer", { id: "b" });
    clock.now = 10_000;
    logger.warn("slow peer", { id: "c" });
    assert.deepEqual(lines.map((l) => JSON.parse(l)), [
      { time: T0, level: "warn", component: "relay", event: "slow peer", id: "a" },
      {
        time: "1970-01-01T00:00:10.000Z",
        level: "warn",
        component: "relay",
        event: "slow peer",
        id: "c",
        suppressed: 1,
      },
    ]);
  },
});

Deno.test({
  name: "Logger with rateLimit false writes every line, and Logger.silent() writes none",
  permissions: "none",
  fn() {
    const { logger, lines } = capture({ rateLimit: false });
    for (let i = 0; i < 20; i++) logger.warn("again");
    assert.equal(lines.length, 20);
    const silent = Logger.silent();
    silent.error("nothing", { x: 1 });
    silent.flush();
  },
});

Deno.test({
  name: "truncate() never splits a surrogate pair and escapeText() escapes backslashes",
  permissions: "none",
  fn() {
    assert.equal(truncate("ab🙂cd", 3), "ab…[4 chars cut]");
    assert.equal(truncate("abc", 3), "abc");
    assert.equal(escapeText("C:\\tmp\u0007"), "C:\\\\tmp\\x07");
  },
});

Deno.test({
  name: "Logger: a flood from one peer does not hide the same warning about another peer",
  permissions: "none",
  fn() {
    const { logger, lines } = capture();
    for (let i = 0; i < 1000; i++) logger.warn("protocol error", { remote: "10.0.0.1:4000" });
    logger.warn("protocol error", { remote: "10.0.0.77:5000" });
    const flood = lines.filter((l) => l.includes("10.0.0.1:")).length;
    assert.equal(flood, 5, "the flooding peer gets its 5 lines per window");
    assert.equal(lines.filter((l) => l.includes("10.0.0.77:")).length, 1);
    // Many peers together are still bounded: 10 x the per-peer limit per window.
    lines.length = 0;
    for (let p = 0; p < 200; p++) logger.warn("login refused", { remote: `10.1.${p}.1:1` });
    assert.equal(lines.length, 50);
  },
});
