import assert from "node:assert/strict";
import net from "node:net";
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
