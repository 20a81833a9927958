/**
 * Tunnel test harness: a `tsunagi forward` process, the real `curl`, and unmodified local
 * servers (Deno's HTTP server, a plain half-close socket server) for `run --expose`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeAll } from "../shared/framed_conn.ts";
import { event, Proc, register, startAgent, startRelay, tempDir } from "./helpers.ts";

/** Starts `tsunagi forward` with `rules` ([to, service] each, listening on port 0). */
export async function startForward(
  relay: string,
  id: string,
  passwordFile: string,
  rules: [string, string][],
  extra: string[] = [],
): Promise<{ proc: Proc; ports: number[] }> {
  const args = ["run", "-A", "agent/main.ts", "forward", "--relay", relay, "--id", id];
  args.push("--password-file", passwordFile, "--log-format", "json", "--log-level", "debug");
  for (const [to, service] of rules) {
    args.push("--listen", "127.0.0.1:0", "--to", to, "--service", service);
  }
  const proc = new Proc([...args, ...extra]);
  try {
    await proc.waitForCount(event("forwarding"), rules.length, "forward to listen");
    await proc.waitFor(event("logged in"), "forward to log in");
  } catch (e) {
    await proc[Symbol.asyncDispose]();
    throw e;
  }
  const ports = proc.lines.filter(event("forwarding")).map((l) =>
    Number(String(l.listen).split(":").pop())
  );
  return { proc, ports };
}

/** A relay, a device `dev1` (a USER `pc1` forwards to it), and their processes. */
export interface World extends AsyncDisposable {
  relay: string;
  agent: Proc;
  forward: Proc;
  ports: number[];
  dir: string;
}

/** A relay, a device exposing `expose`, and a forwarder for `rules`. */
export async function world(expose: string[], rules: [string, string][]): Promise<World> {
  const tmp = await tempDir();
  const data = `${tmp.path}/relay`;
  const pcPw = await register(data, "pc1", "USER");
  const devPw = await register(data, "dev1", "PRINTER");
  const relay = await startRelay(data, [], "127.0.0.1:0", { logLevel: "info" });
  const agent = await startAgent(relay.address, "dev1", devPw, [
    "--inbox",
    `${tmp.path}/inbox`,
    ...expose.flatMap((e) => ["--expose", e]),
  ]);
  const { proc: forward, ports } = await startForward(relay.address, "pc1", pcPw, rules);
  return {
    relay: relay.address,
    agent,
    forward,
    ports,
    dir: tmp.path,
    async [Symbol.asyncDispose]() {
      await forward[Symbol.asyncDispose]();
      await agent[Symbol.asyncDispose]();
      await relay[Symbol.asyncDispose]();
      await tmp[Symbol.asyncDispose]();
    },
  };
}

/** Runs the real `curl` binary with `args`. */
export async function curl(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("curl", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** A Deno HTTP server: GET /blob/N streams N pseudo-random bytes; POST returns the body's SHA-256. */
export function httpServer(): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (req.method === "POST") {
      const hash = createHash("sha256");
      let n = 0;
      for await (const chunk of req.body!) {
        hash.update(chunk);
        n += chunk.length;
      }
      return new Response(`${n} ${hash.digest("hex")}\n`);
    }
    const m = /^\/blob\/(\d+)$/.exec(url.pathname);
    if (m) {
      const size = Number(m[1]);
      const chunk = new Uint8Array(64 * 1024).map((_, i) => (i * 31) & 0xff);
      let left = size;
      return new Response(
        new ReadableStream({
          pull(c) {
            if (left === 0) return c.close();
            const n = Math.min(left, chunk.length);
            c.enqueue(chunk.slice(0, n));
            left -= n;
          },
        }),
      );
    }
    return new Response(`hello ${url.pathname}\n`);
  });
}

/** A TCP server owned by a test: its port; dispose closes it and waits for its loop. */
export interface LocalServer extends AsyncDisposable {
  /** Port on 127.0.0.1. */
  port: number;
}

/**
 * A half-close protocol's server: reads each connection to EOF, then answers
 * `"<bytes> <sha256 hex>"` and closes. It answers only after the client's FIN.
 */
export function halfCloseServer(): LocalServer {
  return serveEach(async (conn) => {
    try {
      const hash = createHash("sha256");
      let n = 0;
      const buf = new Uint8Array(65536);
      for (let r = await conn.read(buf); r !== null; r = await conn.read(buf)) {
        hash.update(buf.subarray(0, r));
        n += r;
      }
      await writeAll(conn, new TextEncoder().encode(`${n} ${hash.digest("hex")}`));
    } finally {
      conn.close();
    }
  });
}

/** A TCP server on 127.0.0.1 that hands its connections, one at a time, to `handler`. */
export function serveEach(handler: (conn: Deno.TcpConn) => Promise<void>): LocalServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const loop = (async () => {
    for await (const conn of listener) await handler(conn).catch(() => {});
  })().catch(() => {});
  return {
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      try {
        listener.close();
      } catch {
        // closed already
      }
      await loop;
    },
  };
}

/**
 * Plays a half-close client through `port`: sends `payload`, shuts its write side, reads
 * the answer to EOF. Returns the answer and the one {@link halfCloseServer} should give.
 * Throws if the exchange is not over within `deadlineMs`.
 */
export async function halfCloseExchange(
  port: number,
  payload: Uint8Array,
  deadlineMs = 30_000,
): Promise<{ answer: string; expected: string }> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    c.close();
  }, deadlineMs);
  try {
    await writeAll(c, payload);
    await c.closeWrite();
    // Reading `readable` to its end closes `c`.
    const answer = new TextDecoder().decode(await new Response(c.readable).arrayBuffer());
    const expected = `${payload.length} ${createHash("sha256").update(payload).digest("hex")}`;
    return { answer, expected };
  } catch (e) {
    if (timedOut) {
      throw new Error(`Half-close exchange through port ${port} not over within ${deadlineMs} ms`);
    }
    try {
      c.close();
    } catch {
      // closed by the end of `readable` already
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** A loopback port with nothing listening (bound, noted, released). */
export function deadPort(): number {
  using closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return closed.addr.port;
}

/**
 * Connects and measures how long until the connection is closed or reset (ms). A
 * connection still open after `deadlineMs` is closed by the caller's side and reported
 * as `how: "open"`: the assertion, not the test runner, catches a hang.
 */
export async function timeToClose(
  port: number,
  deadlineMs = 10_000,
): Promise<{ ms: number; how: string }> {
  const t0 = performance.now();
  let c: Deno.TcpConn;
  try {
    c = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch (e) {
    // The RST can beat the end of the handshake on loopback.
    return { ms: performance.now() - t0, how: (e as Error).name };
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    c.close();
  }, deadlineMs);
  try {
    const n = await c.read(new Uint8Array(16));
    return { ms: performance.now() - t0, how: n === null ? "eof" : `data ${n}` };
  } catch (e) {
    return { ms: performance.now() - t0, how: timedOut ? "open" : (e as Error).name };
  } finally {
    clearTimeout(timer);
    if (!timedOut) {
      try {
        c.close();
      } catch {
        // reset already
      }
    }
  }
}

/**
 * A server that answers "ok", shuts its write side (an END toward the client) and reads
 * on: the client's upload continues in the other direction.
 */
export function answerThenSink(): LocalServer {
  return serveEach(async (conn) => {
    try {
      await writeAll(conn, new TextEncoder().encode("ok"));
      await conn.closeWrite();
      const sink = new Uint8Array(256 * 1024);
      while ((await conn.read(sink)) !== null) { /* drain */ }
    } finally {
      conn.close();
    }
  });
}

/**
 * Through the forwarded `port` to {@link answerThenSink}: reads "ok" and its end, uploads,
 * kills `pid` (the device, or a relay on the way), and asserts that the upload then fails
 * (within 30 s) instead of its bytes being swallowed by the relays.
 */
export async function assertUploadFailsAfterKill(port: number, pid: number): Promise<void> {
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const answer = new Uint8Array(8);
    let got = 0;
    for (
      let n = await client.read(answer);
      n !== null;
      n = await client.read(answer.subarray(got))
    ) {
      got += n;
    }
    assert.equal(new TextDecoder().decode(answer.subarray(0, got)), "ok", "the answer, then EOF");
    await writeAll(client, new Uint8Array(1024 * 1024));
    Deno.kill(pid, "SIGKILL");
    const chunk = new Uint8Array(64 * 1024);
    const deadline = Date.now() + 30_000;
    let failure = "";
    while (failure === "" && Date.now() < deadline) {
      await writeAll(client, chunk).catch((e) => failure = (e as Error).name);
    }
    assert.ok(
      ["ConnectionReset", "BrokenPipe", "NotConnected"].includes(failure),
      `the client's writes ${failure === "" ? "went on for 30 s" : `failed with ${failure}`}`,
    );
  } finally {
    client.close();
  }
}
