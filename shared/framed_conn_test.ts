import assert from "node:assert/strict";
import { ConnectionClosedError, TruncatedFrameError } from "./errors.ts";
import { FramedConn, isClosedError, writeAll } from "./framed_conn.ts";
import { encodeMessage, type Message } from "./protocol/messages.ts";
import { memoryPair } from "./testing/memory_conn.ts";

const HELLO: Message = { kind: "hello", version: 1, role: 1, software: "agent/1" };
const LOGIN: Message = {
  kind: "login",
  id: "alice",
  nonce: "n",
  instance: "",
  ticket: "",
  services: [],
};
const PING: Message = { kind: "ping", nonce: 7 };

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

Deno.test("FramedConn.readMessage() assembles messages delivered one byte per read", async () => {
  const [near, far] = memoryPair({ maxRead: 1 });
  const conn = new FramedConn(near, { readSize: 2 });
  await writeAll(far, concat(encodeMessage(HELLO), encodeMessage(LOGIN), encodeMessage(PING)));
  far.close();
  assert.deepStrictEqual(await conn.readMessage(), HELLO);
  assert.deepStrictEqual(await conn.readMessage(), LOGIN);
  assert.deepStrictEqual(await conn.readMessage(), PING);
  assert.equal(await conn.readMessage(), null);
  assert.equal(await conn.readMessage(), null, "end of stream is sticky");
});

Deno.test("FramedConn.readMessage() waits for a frame written in several pieces", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const bytes = encodeMessage(LOGIN);
  const reading = conn.readMessage();
  for (let i = 0; i < bytes.length; i += 3) await far.write(bytes.subarray(i, i + 3));
  assert.deepStrictEqual(await reading, LOGIN);
  far.close();
});

Deno.test("FramedConn.readFrame() throws TruncatedFrameError when the stream ends mid-frame", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  await writeAll(far, concat(encodeMessage(PING), encodeMessage(LOGIN).subarray(0, 7)));
  far.close();
  assert.deepStrictEqual(await conn.readMessage(), PING);
  await assert.rejects(conn.readFrame(), TruncatedFrameError);
});

Deno.test("FramedConn.readRaw() returns the decoder's leftover bytes before reading the socket", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  // ACCEPT and the first session bytes arrive in one read.
  const accept = encodeMessage({ kind: "accept", session: "s1", peer: "fax" });
  const leftover = new Uint8Array([0x0f, 0x00, 0x00, 0x00, 0x02, 0x68]);
  await writeAll(far, concat(accept, leftover));
  assert.equal((await conn.readMessage())?.kind, "accept");
  const buf = new Uint8Array(64);
  assert.deepEqual(await conn.readRaw(buf), leftover);
  await writeAll(far, new Uint8Array([0x69]));
  const next = await conn.readRaw(buf);
  assert.deepEqual(next, new Uint8Array([0x69]));
  assert.equal(next?.buffer, buf.buffer, "socket reads land in the caller's buffer");
  far.close();
  assert.equal(await conn.readRaw(buf), null);
  assert.equal(await conn.readRaw(buf), null);
});

Deno.test("FramedConn.unread() puts bytes back before the bytes still buffered", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const data = new Uint8Array([0x0f, 0x00, 0x00, 0x00, 0x01, 0x61]);
  await writeAll(far, concat(encodeMessage(PING), data));
  assert.deepStrictEqual(await conn.readMessage(), PING); // DATA is now buffered
  conn.unread(encodeMessage({ kind: "end", reason: 1 }));
  assert.deepStrictEqual(await conn.readMessage(), { kind: "end", reason: 1 });
  assert.deepStrictEqual(await conn.readMessage(), { kind: "data", bytes: data.subarray(5) });
  await writeAll(far, encodeMessage({ kind: "release" }));
  assert.deepStrictEqual(await conn.readMessage(), { kind: "release" });
  conn.close();
});

Deno.test("FramedConn.unread() hands what followed END in a raw chunk back to readMessage()", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const end = encodeMessage({ kind: "end", reason: 0 });
  const release = encodeMessage({ kind: "release" });
  await writeAll(far, concat(end, release, encodeMessage(PING).subarray(0, 2)));
  const raw = await conn.readRaw(new Uint8Array(64));
  assert.ok(raw !== null);
  conn.unread(raw.subarray(end.length)); // a pass-through forwarded only the END
  await writeAll(far, encodeMessage(PING).subarray(2));
  assert.deepStrictEqual(await conn.readMessage(), { kind: "release" });
  assert.deepStrictEqual(await conn.readMessage(), PING);
  conn.close();
});

Deno.test("FramedConn.unread() copies its argument so later writes to it do not leak in", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const bytes = encodeMessage(PING);
  conn.unread(bytes);
  bytes.fill(0xff);
  assert.deepStrictEqual(await conn.readMessage(), PING);
  conn.unread(new Uint8Array(0));
  far.close();
  assert.equal(await conn.readMessage(), null);
});

Deno.test("FramedConn.write() serialises concurrent writes so frames never interleave", async () => {
  // Every socket write takes at most 3 bytes and yields first, so unserialised writers
  // would interleave their pieces.
  const [near, far] = memoryPair({ maxWrite: 3 });
  const conn = new FramedConn(near);
  const reader = new FramedConn(far);
  const sent: Message[] = Array.from({ length: 20 }, (_, i) => ({
    kind: "error",
    code: i,
    message: `message number ${i} `.repeat(i + 1),
  } as Message));
  await Promise.all(sent.map((m) => conn.send(m)));
  assert.ok(near.written.every((w) => w.length <= 3));
  assert.deepEqual(concat(...near.written), concat(...sent.map(encodeMessage)));
  conn.close(); // so a broken stream ends in an error rather than a hang
  for (const m of sent) assert.deepStrictEqual(await reader.readMessage(), m);
  assert.equal(await reader.readMessage(), null);
});

Deno.test("FramedConn.write() rejects with ConnectionClosedError after close()", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  conn.close();
  conn.close();
  assert.ok(conn.closed);
  assert.ok(near.closed);
  await assert.rejects(conn.write(new Uint8Array([1])), ConnectionClosedError);
  await assert.rejects(conn.send(PING), ConnectionClosedError);
  await conn.trySend(PING);
  await conn.flush();
  assert.deepEqual(near.written, []);
  far.close();
});

Deno.test("FramedConn.write() queued before close() rejects with ConnectionClosedError", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const first = conn.send(PING);
  const second = conn.send(PING);
  conn.close();
  await assert.rejects(first, ConnectionClosedError);
  await assert.rejects(second, ConnectionClosedError);
  far.close();
});

Deno.test("FramedConn.write() fails with ConnectionClosedError when the peer is gone", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  far.close();
  await assert.rejects(conn.send(PING), (e: unknown) => {
    assert.ok(e instanceof ConnectionClosedError);
    assert.ok(e.cause instanceof Deno.errors.BrokenPipe);
    return true;
  });
  assert.ok(conn.closed, "the first write error kills the connection");
  // Later writes rethrow the kept error.
  await assert.rejects(conn.send(PING), (e: unknown) => isClosedError(e));
});

Deno.test("FramedConn.readFrame() keeps a read error and rethrows it to later readers", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const failure = new Error("disk on fire");
  near.failNextRead(failure);
  await assert.rejects(conn.readFrame(), (e) => e === failure);
  assert.ok(conn.closed);
  await assert.rejects(conn.readFrame(), (e) => e === failure);
  await assert.rejects(conn.readRaw(new Uint8Array(8)), (e) => e === failure);
  await assert.rejects(conn.send(PING), (e) => e === failure);
  far.close();
});

Deno.test("FramedConn.readMessage() returns null when the connection is closed under a read", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const reading = conn.readMessage();
  conn.close();
  assert.equal(await reading, null);
  far.close();
});

Deno.test("isClosedError() recognises socket-closed errors and nothing else", () => {
  assert.ok(isClosedError(new Deno.errors.BadResource()));
  assert.ok(isClosedError(new Deno.errors.ConnectionReset()));
  assert.ok(isClosedError(new Deno.errors.BrokenPipe()));
  assert.ok(isClosedError(new ConnectionClosedError()));
  assert.equal(isClosedError(new Error("x")), false);
  assert.equal(isClosedError(new Deno.errors.TimedOut()), false);
});

Deno.test("FramedConn.setMaxPayload() raises the inbound limit set by the maxPayload option", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near, { maxPayload: 4 });
  const data = encodeMessage({ kind: "data", bytes: new Uint8Array(5) });
  await writeAll(far, concat(encodeMessage(PING), data.subarray(0, 5)));
  assert.deepStrictEqual(await conn.readMessage(), PING);
  // Raised before DATA's header is complete: the new limit applies to it.
  conn.setMaxPayload(5);
  await writeAll(far, data.subarray(5));
  assert.deepStrictEqual(await conn.readMessage(), { kind: "data", bytes: new Uint8Array(5) });
  conn.setMaxPayload(4);
  await writeAll(far, data);
  await assert.rejects(conn.readFrame(), {
    name: "FrameTooLargeError",
    message: "Cannot decode frame: declared length 5 exceeds maximum 4",
  });
  conn.close();
  far.close();
});

/** DATA carrying "hello", cut after its header and two payload bytes. */
const DATA_HELLO = encodeMessage({ kind: "data", bytes: new TextEncoder().encode("hello") });
const HALF = DATA_HELLO.subarray(0, 7);
const REST = DATA_HELLO.subarray(7);

Deno.test("FramedConn.send() after a half-forwarded frame writes nothing and closes the connection", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  assert.equal(conn.outboundAtBoundary, true);
  await conn.writePassthrough(HALF, false);
  assert.equal(conn.outboundAtBoundary, false);
  await assert.rejects(conn.send({ kind: "end", reason: 0 }), (e: unknown) => {
    assert.ok(e instanceof ConnectionClosedError);
    assert.match(e.message, /would land inside a half-forwarded frame/);
    return true;
  });
  assert.ok(conn.closed);
  assert.ok(near.closed);
  await conn.trySend(PING); // swallowed, as for any closed connection
  await assert.rejects(conn.write(encodeMessage(PING)), ConnectionClosedError);
  assert.deepEqual(concat(...near.written), HALF, "only the forwarded bytes reached the wire");
  // The peer sees the stream cut inside the frame, never a frame spliced into it.
  await assert.rejects(new FramedConn(far).readFrame(), TruncatedFrameError);
});

Deno.test("FramedConn.writePassthrough() tracks the boundary in call order, before writes run", async () => {
  // Writes of at most 3 bytes that yield first: all three calls are queued at once.
  const [near, far] = memoryPair({ maxWrite: 3 });
  const conn = new FramedConn(near);
  const reader = new FramedConn(far);
  const writes = [
    conn.writePassthrough(HALF, false),
    conn.writePassthrough(REST, true),
    conn.send(PING),
  ];
  assert.equal(conn.outboundAtBoundary, true);
  await Promise.all(writes);
  assert.deepStrictEqual(await reader.readMessage(), {
    kind: "data",
    bytes: new TextEncoder().encode("hello"),
  });
  assert.deepStrictEqual(await reader.readMessage(), PING);
  conn.close();
  assert.equal(await reader.readMessage(), null);
});

Deno.test("FramedConn.write() queued behind a half-forwarded chunk is refused at call time", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const forwarding = conn.writePassthrough(HALF, false);
  const ending = conn.send({ kind: "end", reason: 0 });
  await assert.rejects(ending, /half-forwarded frame/);
  // The connection died before the queued pass-through bytes ran: nothing was written.
  await assert.rejects(forwarding, ConnectionClosedError);
  assert.deepEqual(near.written, []);
  far.close();
});

Deno.test("FramedConn.fill() notices what comes on an unread connection; the next reads take it", async () => {
  const [near, far] = memoryPair({ maxRead: 3 });
  const conn = new FramedConn(near, { readSize: 4 });
  let filled = false;
  const filling = conn.fill().then(() => filled = true);
  assert.equal(conn.fill(), conn.fill(), "one fill at a time");
  await writeAll(far, concat(encodeMessage(PING), encodeMessage(HELLO)));
  await filling;
  assert.ok(filled);
  // A read while a fill is in flight waits for it and loses nothing.
  const second = conn.fill();
  assert.deepStrictEqual(await conn.readMessage(), PING);
  await second;
  assert.deepStrictEqual(await conn.readMessage(), HELLO);
  // The peer's close ends a fill, and the next read sees the end.
  const closing = conn.fill();
  far.close();
  await closing;
  assert.equal(await conn.readMessage(), null);
  await conn.fill(); // at the end: resolves at once
  conn.close();
});

Deno.test("FramedConn.readRaw() after fill() returns the filled bytes first", async () => {
  const [near, far] = memoryPair();
  const conn = new FramedConn(near);
  const filling = conn.fill();
  await writeAll(far, new Uint8Array([1, 2, 3]));
  const raw = await conn.readRaw(new Uint8Array(16));
  await filling;
  assert.deepStrictEqual([...raw!], [1, 2, 3]);
  far.close();
  assert.equal(await conn.readRaw(new Uint8Array(16)), null);
  conn.close();
});
