/**
 * Tunnels with one direction half-closed while the other still streams: the program that
 * shut its write side gets every byte of the other direction, at the forwarder's local
 * socket and at the device's, whether or not it sent anything before its FIN. Deno 2.9's
 * `node:net` fails the queued writes to a program that half-closed without sending a
 * byte (see agent/_node_socket.ts), so each case also runs with nothing sent first, and
 * the reading end stays well behind the stream, so that those writes do queue.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeAll } from "../shared/framed_conn.ts";
import { event } from "./helpers.ts";
import { serveEach, world } from "./tunnel_helpers.ts";

/** The streamed direction: more than the local sockets' buffers hold. */
const SIZE = 32 * 1024 * 1024;
/**
 * How far the reading end stays behind the streaming side: past what a local socket buffers
 * (so the runtime's writes to the reading program queue, again and again), well below what
 * the whole path through the relay holds (so the stream never stalls for good).
 */
const BEHIND = 8 * 1024 * 1024;
/** Deadline of each wait, ms. */
const DEADLINE_MS = 60_000;

/** `size` bytes that do not repeat (a lost or doubled piece shows) and "<length> <sha256>". */
function pattern(size: number, seed: number): { bytes: Uint8Array; digest: string } {
  const bytes = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return { bytes, digest: `${size} ${createHash("sha256").update(bytes).digest("hex")}` };
}

/** Bytes one side has moved; the other side waits for a count, never for time. */
class Progress {
  bytes = 0;
  #over = false;
  readonly #waiters = new Set<() => void>();

  /** Counts `n` more bytes. */
  add(n: number) {
    this.bytes += n;
    this.#wake();
  }

  /** The side stopped (done or failed): nobody waits for it any more. */
  over() {
    this.#over = true;
    this.#wake();
  }

  #wake() {
    for (const wake of this.#waiters) wake();
  }

  /** Resolves once `n` bytes were moved or the side stopped; rejects after the deadline. */
  async reach(n: number, what: string): Promise<void> {
    if (this.bytes >= n || this.#over) return;
    const deadline = AbortSignal.timeout(DEADLINE_MS);
    while (this.bytes < n && !this.#over) {
      if (deadline.aborted) {
        throw new Error(`${what}: ${this.bytes} of ${n} bytes in ${DEADLINE_MS} ms`);
      }
      const { promise, resolve } = Promise.withResolvers<void>();
      const wake = () => resolve();
      this.#waiters.add(wake);
      deadline.addEventListener("abort", wake);
      await promise;
      this.#waiters.delete(wake);
      deadline.removeEventListener("abort", wake);
    }
  }
}

/** Writes `data` in 64 KiB pieces, counting each. */
async function send(conn: Deno.Conn, data: Uint8Array, progress: Progress): Promise<void> {
  for (let at = 0; at < data.length;) {
    const n = await conn.write(data.subarray(at, at + 64 * 1024));
    at += n;
    progress.add(n);
  }
}

/**
 * Reads `conn` to its end: "<length> <sha256>". With `writer`, each read waits until the
 * writer is {@link BEHIND} bytes ahead (or has stopped): a reader slower than the tunnel.
 */
async function digestToEnd(conn: Deno.Conn, writer?: Progress): Promise<string> {
  const hash = createHash("sha256");
  const buf = new Uint8Array(256 * 1024);
  let n = 0;
  for (;;) {
    await writer?.reach(n + BEHIND, `the writer to get ${BEHIND} bytes ahead of ${n}`);
    const r = await conn.read(buf);
    if (r === null) break;
    hash.update(buf.subarray(0, r));
    n += r;
  }
  return `${n} ${hash.digest("hex")}`;
}

/** Connects to `port`; the connection is closed after the deadline, so no read waits for ever. */
async function dial(port: number): Promise<Deno.TcpConn & Disposable> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => closeQuietly(conn), DEADLINE_MS);
  return Object.assign(conn, {
    [Symbol.dispose]() {
      clearTimeout(timer);
      closeQuietly(conn);
    },
  });
}

function closeQuietly(conn: Deno.Conn) {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

Deno.test("tunnel half-close: the client sends its request (or nothing) and shuts its write side; all 32 MiB of the answer arrive", async () => {
  const answer = pattern(SIZE, 1);
  let sent = new Progress();
  // The server reads the request to its FIN, then streams the answer and closes.
  await using server = serveEach(async (conn) => {
    const progress = sent;
    try {
      await digestToEnd(conn);
      await send(conn, answer.bytes, progress);
    } finally {
      progress.over();
      conn.close();
    }
  });
  await using w = await world([`down=127.0.0.1:${server.port}`], [["dev1", "down"]]);
  for (const requestSize of [0, 1000]) {
    sent = new Progress();
    using client = await dial(w.ports[0]);
    await writeAll(client, pattern(requestSize, 2).bytes);
    await client.closeWrite();
    assert.equal(
      await digestToEnd(client, sent),
      answer.digest,
      `after a ${requestSize}-byte request`,
    );
  }
  await w.forward.waitForCount(event("tunnel closed"), 2, "both tunnels to close");
  await w.agent.waitForCount(event("tunnel closed"), 2, "both tunnels to close at the device");
  assert.equal(w.forward.count(event("tunnel failed")), 0);
});

Deno.test("tunnel half-close: the server sends its greeting (or nothing) and shuts its write side; all 32 MiB of the upload arrive", async () => {
  const upload = pattern(SIZE, 3);
  let uploaded = new Progress();
  let greetingSize = 0;
  let received = Promise.withResolvers<string>();
  // The server greets, shuts its write side, lets the upload get ahead, then reads it all.
  await using server = serveEach(async (conn) => {
    const [progress, result] = [uploaded, received];
    try {
      await writeAll(conn, pattern(greetingSize, 4).bytes);
      await conn.closeWrite();
      result.resolve(await digestToEnd(conn, progress));
    } catch (e) {
      result.reject(e);
    } finally {
      conn.close();
    }
  });
  await using w = await world([`up=127.0.0.1:${server.port}`], [["dev1", "up"]]);
  for (const size of [0, 5]) {
    [greetingSize, uploaded, received] = [size, new Progress(), Promise.withResolvers()];
    received.promise.catch(() => {}); // awaited below; a failure must not surface before that
    using client = await dial(w.ports[0]);
    const greeting = digestToEnd(client);
    try {
      await send(client, upload.bytes, uploaded);
      await client.closeWrite();
    } finally {
      uploaded.over();
    }
    assert.equal(await greeting, pattern(size, 4).digest);
    assert.equal(await received.promise, upload.digest, `after a ${size}-byte greeting`);
  }
  await w.forward.waitForCount(event("tunnel closed"), 2, "both tunnels to close");
  await w.agent.waitForCount(event("tunnel closed"), 2, "both tunnels to close at the device");
  assert.equal(w.forward.count(event("tunnel failed")), 0);
});
