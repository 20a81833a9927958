/**
 * The TLS port's limits on connections that have not logged in, against a relay running
 * in this process: a TLS connection counts as unauthenticated from its TCP accept (before
 * and during the handshake), under the same per-address limit and login deadline as a
 * plain one, and a failed handshake is logged with the peer's real address.
 */

import assert from "node:assert/strict";
import { connectRelay } from "../agent/relay_client.ts";
import { makeCertificates } from "../scripts/certs.ts";
import { Logger } from "../shared/log.ts";
import { EmbeddedDirectory } from "../relay/directory.ts";
import { MemoryRegistry } from "../relay/registry/registry.ts";
import { makeVerifier } from "../relay/registry/verifier.ts";
import { type RelayHandle, type RelayOptions, startRelay } from "../relay/server.ts";
import { tempDir } from "./helpers.ts";

const PASSWORD = "correct horse battery staple";

/** A TLS relay in this process with pc1 registered; `ca` is the PEM CA its certificate is under. */
async function tlsRelay(
  options: Partial<RelayOptions> = {},
): Promise<{ relay: RelayHandle; ca: string }> {
  await using dir = await tempDir();
  const files = await makeCertificates(dir.path);
  const registry = new MemoryRegistry();
  await registry.put({
    id: "pc1",
    type: "USER",
    attributes: [],
    passwordHash: await makeVerifier(PASSWORD),
    updatedAt: 1,
  });
  const relay = await startRelay({
    hostname: "127.0.0.1",
    port: 0,
    directory: new EmbeddedDirectory(registry),
    tls: {
      cert: await Deno.readTextFile(files.certFile),
      key: await Deno.readTextFile(files.keyFile),
    },
    ...options,
  });
  return { relay, ca: await Deno.readTextFile(files.caFile) };
}

/** Raw TCP connections to the TLS port that send `first` (or nothing) and then wait. */
class SilentClients implements AsyncDisposable {
  readonly conns: Deno.TcpConn[] = [];
  /** Per connection: resolves when the relay has closed it (end of stream or error). */
  readonly ended: Promise<number>[] = [];

  async open(port: number, first?: Uint8Array): Promise<void> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    if (first) await conn.write(first);
    const i = this.conns.push(conn) - 1;
    this.ended.push((async () => {
      const buf = new Uint8Array(1024);
      try {
        while ((await conn.read(buf)) !== null) { /* a TLS alert or error frame */ }
      } catch {
        // reset, or closed by dispose
      }
      return i;
    })());
  }

  /** Indexes of the first `n` connections the relay closed; fails after `ms`. */
  async firstClosed(n: number, ms: number): Promise<number[]> {
    const closed: number[] = [];
    const pending = new Map(this.ended.map((p, i) => [i, p]));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`only ${closed.length} of ${n} closed within ${ms} ms`)),
        ms,
      );
    });
    try {
      while (closed.length < n) {
        const i = await Promise.race([...pending.values(), deadline]);
        pending.delete(i);
        closed.push(i);
      }
    } finally {
      clearTimeout(timer);
    }
    return closed.sort((a, b) => a - b);
  }

  async [Symbol.asyncDispose]() {
    for (const c of this.conns) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
    await Promise.all(this.ended);
  }
}

/** The first bytes of a TLS ClientHello: a record header promising 200 bytes, then 10. */
const PARTIAL_CLIENT_HELLO = new Uint8Array([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0, 0, 0xc4, 3, 3]);

Deno.test("TLS port: silent connections over the per-address limit drop the oldest, before any handshake", async () => {
  const { relay, ca } = await tlsRelay({ limits: { maxUnauthPerAddress: 4 } });
  await using _relay = relay;
  await using clients = new SilentClients();
  for (let i = 0; i < 6; i++) {
    await clients.open(relay.addr.port, i % 2 === 1 ? PARTIAL_CLIENT_HELLO : undefined);
  }
  assert.deepEqual(await clients.firstClosed(2, 5000), [0, 1], "the two oldest are dropped");
  assert.equal(relay.metrics.refusals.get("TooManyUnauthenticated"), 2);
  // A device behind the same address still logs in: it makes room, it is not locked out.
  const device = await connectRelay({
    address: { hostname: "127.0.0.1", port: relay.addr.port },
    id: "pc1",
    password: PASSWORD,
    tlsCa: ca,
  });
  device.close();
  assert.deepEqual(await clients.firstClosed(3, 5000), [0, 1, 2], "the next oldest made room");
});

Deno.test("TLS port: a connection that does not finish its handshake is closed at the login deadline", async () => {
  const { relay } = await tlsRelay({ loginTimeoutMs: 300 });
  await using _relay = relay;
  await using clients = new SilentClients();
  await clients.open(relay.addr.port); // connects and sends nothing
  await clients.open(relay.addr.port, PARTIAL_CLIENT_HELLO);
  // The deadline is 300 ms (checked every second); node:tls's own would be 10 s or never.
  assert.deepEqual(await clients.firstClosed(2, 5000), [0, 1]);
  assert.equal(relay.metrics.refusals.get("LoginTimeout"), 2);
});

Deno.test("TLS port: a failed handshake is logged with the peer's real address", async () => {
  const lines: Record<string, unknown>[] = [];
  const logged = Promise.withResolvers<Record<string, unknown>>();
  const logger = new Logger({
    format: "json",
    write: (l) => {
      const line = JSON.parse(l);
      lines.push(line);
      if (line.event === "TLS handshake failed") logged.resolve(line);
    },
  });
  const { relay } = await tlsRelay({ logger });
  await using _relay = relay;
  await using clients = new SilentClients();
  // A plain tsunagi client's first bytes: a frame header, not a TLS record.
  await clients.open(relay.addr.port, new Uint8Array([0, 0, 0, 5, 1, 1, 0, 0, 0]));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const line = await Promise.race([
    logged.promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no log line: ${JSON.stringify(lines)}`)), 5000);
    }),
  ]).finally(() => clearTimeout(timer));
  const local = clients.conns[0].localAddr as Deno.NetAddr;
  assert.equal(line.remote, `127.0.0.1:${local.port}`);
  await clients.firstClosed(1, 5000);
  assert.ok(!lines.some((l) => l.level === "error"), JSON.stringify(lines));
});

Deno.test("TLS port: a socket closed in the tick that accepted it is freed (no leak per eviction)", async () => {
  await using dir = await tempDir();
  const files = await makeCertificates(dir.path);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      "tests/fixtures/tls_churn.ts",
      files.certFile,
      files.keyFile,
      "2000",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const { bytesPerConn } = JSON.parse(new TextDecoder().decode(out.stdout));
  // Leaked, each held ~6 KiB of JS heap (and ~30 KiB of RSS); freed, ~100 bytes of noise.
  assert.ok(bytesPerConn < 1024, `${bytesPerConn} bytes of heap kept per closed connection`);
});
