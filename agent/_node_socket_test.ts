import assert from "node:assert/strict";
import net from "node:net";
import { writeAll } from "../shared/framed_conn.ts";
import { adoptStream, NodeSocketConn } from "./_node_socket.ts";

/** A node server paused on connect, as the forwarder runs it; resolves its first socket. */
async function acceptOne(): Promise<{ port: number; socket: Promise<net.Socket>; close(): void }> {
  const { promise, resolve } = Promise.withResolvers<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, resolve);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    port: (server.address() as net.AddressInfo).port,
    socket: promise,
    close: () => server.close(),
  };
}

async function readAll(conn: Deno.Conn): Promise<string> {
  let text = "";
  const buf = new Uint8Array(1024);
  for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  return text;
}

Deno.test("adoptStream: bytes sent before adoption, both directions and half-close through the Deno socket", async () => {
  const server = await acceptOne();
  using client = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await client.write(new TextEncoder().encode("early"));
  const socket = await server.socket;
  const conn = await adoptStream(socket);
  server.close();
  assert.ok(conn !== null, "this runtime lets the stream move (TCPWrap.takeStream)");
  assert.equal(conn.remoteAddr.port, client.localAddr.port);
  await client.write(new TextEncoder().encode(" and late"));
  await client.closeWrite();
  assert.equal(await readAll(conn), "early and late");
  await conn.write(new TextEncoder().encode("answer"));
  await conn.closeWrite();
  assert.equal(await readAll(client), "answer");
  conn.close();
});

Deno.test("NodeSocketConn.reset: the client sees ConnectionReset, not an end of stream", async () => {
  const server = await acceptOne();
  using client = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  new NodeSocketConn(await server.socket).reset();
  server.close();
  await assert.rejects(
    client.read(new Uint8Array(8)),
    (e) => (e as Error).name === "ConnectionReset",
  );
});

/** Reads `conn` to its end: the byte count and "eof", or what ended it (an error's name). */
async function drain(conn: Deno.Conn): Promise<{ bytes: number; how: string }> {
  const buf = new Uint8Array(256 * 1024);
  let bytes = 0;
  try {
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) bytes += n;
    return { bytes, how: "eof" };
  } catch (e) {
    return { bytes, how: (e as Error).name };
  }
}

// More than loopback's socket buffers hold, so the write has to wait in the runtime's queue.
const LARGE = 64 * 1024 * 1024;

Deno.test("NodeSocketConn: a peer that half-closes without sending a byte still gets a stream larger than the socket buffers", async () => {
  const server = await acceptOne();
  using client = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await client.closeWrite();
  const conn = new NodeSocketConn(await server.socket);
  server.close();
  assert.equal(await conn.read(new Uint8Array(16)), null);
  const received = drain(client);
  await writeAll(conn, new Uint8Array(LARGE).fill(5));
  await conn.closeWrite();
  assert.deepEqual(await received, { bytes: LARGE, how: "eof" });
  conn.close();
});

Deno.test("NodeSocketConn: a write the runtime fails at such a half-close resets the peer instead of ending its stream", async () => {
  // The FIN arrives while the write waits in the runtime's queue: the write fails
  // (Deno 2.9's node:net takes that FIN for a dead peer), and nothing is left to move.
  const server = await acceptOne();
  using client = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const conn = new NodeSocketConn(await server.socket);
  server.close();
  const writing = conn.write(new Uint8Array(LARGE).fill(6));
  await client.closeWrite();
  const outcome = await writing.then(() => "written", (e: Error) => e.message);
  const received = await drain(client);
  conn.reset();
  if (outcome === "written") {
    assert.deepEqual(received, { bytes: LARGE, how: "eof" }, "a runtime without the EPIPE");
  } else {
    assert.equal(received.how, "ConnectionReset", `${outcome}: ${JSON.stringify(received)}`);
  }
});
