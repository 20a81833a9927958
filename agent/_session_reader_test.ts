import assert from "node:assert/strict";
import { FrameTooLargeError, TruncatedFrameError } from "../shared/errors.ts";
import { FramedConn } from "../shared/framed_conn.ts";
import { EndReason, FrameType, MAX_PAYLOAD } from "../shared/protocol/constants.ts";
import { encodeFrame } from "../shared/protocol/frame.ts";
import { encodeMessage } from "../shared/protocol/messages.ts";
import { memoryPair } from "../shared/testing/memory_conn.ts";
import { SESSION_READ_SIZE, SessionFrameReader } from "./_session_reader.ts";

const data = (n: number, fill: number) => encodeFrame(FrameType.Data, new Uint8Array(n).fill(fill));
const end = encodeMessage({ kind: "end", reason: EndReason.Normal });
const release = encodeMessage({ kind: "release" });

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Feeds `stream` cut at `cuts` into a reader; returns what it read. */
async function readAll(stream: Uint8Array, cuts: number[], readSize?: number) {
  const [a, b] = memoryPair();
  const reader = new SessionFrameReader(new FramedConn(b), readSize);
  const bounds = [0, ...cuts, stream.length];
  const writing = (async () => {
    for (let i = 0; i + 1 < bounds.length; i++) {
      await a.write(stream.subarray(bounds[i], bounds[i + 1]));
    }
    a.close();
  })();
  const pieces: { kind: string; bytes?: number[]; type?: number }[] = [];
  const buffers = new Set<ArrayBufferLike>();
  let error: unknown = null;
  try {
    for (let r = await reader.next(); r !== null; r = await reader.next()) {
      if (r.kind === "data") {
        buffers.add(r.bytes.buffer);
        pieces.push({ kind: "data", bytes: [...r.bytes] });
      } else pieces.push({ kind: "frame", type: r.frame.type });
      if (r.kind === "frame" && r.frame.type === FrameType.End) break;
    }
  } catch (e) {
    error = e;
  }
  await writing;
  b.close();
  return { pieces, buffers, error, framed: reader };
}

Deno.test("SessionFrameReader.next() returns DATA as views into one reused buffer", async () => {
  const stream = concat(data(300, 1), data(300, 2), data(300, 3), end);
  const { pieces, buffers } = await readAll(stream, [100, 400, 700], 256);
  const bytes = pieces.filter((p) => p.kind === "data").flatMap((p) => p.bytes!);
  assert.deepEqual(bytes, [
    ...new Array(300).fill(1),
    ...new Array(300).fill(2),
    ...new Array(300).fill(3),
  ]);
  assert.equal(buffers.size, 1, "every DATA view shares the one read buffer");
  assert.deepEqual(pieces.at(-1), { kind: "frame", type: FrameType.End });
});

Deno.test("SessionFrameReader.next() handles headers split at every offset", async () => {
  const stream = concat(data(7, 9), encodeMessage({ kind: "pong", nonce: 5 }), data(3, 4), end);
  for (let cut = 1; cut < stream.length; cut++) {
    const { pieces, error } = await readAll(stream, [cut], 64);
    assert.equal(error, null, `cut ${cut}`);
    const bytes = pieces.filter((p) => p.kind === "data").flatMap((p) => p.bytes!);
    assert.deepEqual(bytes, [...new Array(7).fill(9), 4, 4, 4], `cut ${cut}`);
    const frames = pieces.filter((p) => p.kind === "frame").map((p) => p.type);
    assert.deepEqual(frames, [FrameType.Pong, FrameType.End], `cut ${cut}`);
  }
});

Deno.test("SessionFrameReader hands the bytes after END back to the connection", async () => {
  const [a, b] = memoryPair();
  const framed = new FramedConn(b);
  const reader = new SessionFrameReader(framed);
  await a.write(concat(data(2, 1), end, release));
  assert.equal((await reader.next())?.kind, "data");
  const e = await reader.next();
  assert.equal(e?.kind === "frame" && e.frame.type, FrameType.End);
  assert.deepEqual(await framed.readMessage(), { kind: "release" });
  a.close();
  b.close();
});

Deno.test("SessionFrameReader rejects an oversized length and a truncated frame", async () => {
  const big = new Uint8Array([FrameType.Data, 0, 1, 0, 1]); // MAX_PAYLOAD + 1
  assert.equal(big[1] << 24 | big[2] << 16 | big[3] << 8 | big[4], MAX_PAYLOAD + 1);
  const tooLarge = await readAll(big, []);
  assert.ok(tooLarge.error instanceof FrameTooLargeError, String(tooLarge.error));
  for (const cut of [3, 5 + 4]) {
    const r = await readAll(data(10, 1).subarray(0, cut), []);
    assert.ok(r.error instanceof TruncatedFrameError, `cut ${cut}: ${r.error}`);
  }
});

Deno.test("SessionFrameReader.next() joins the DATA frames of one read into one piece, up to a straddling frame", async () => {
  // One read: two whole frames, the head of a third; the next read: its tail, then END.
  const stream = concat(data(5, 1), data(0, 9), data(3, 2), data(4, 3), end);
  const cut = 10 + 5 + 8 + 5 + 2; // inside the third DATA frame's payload
  const { pieces } = await readAll(stream, [cut], 1024);
  assert.deepEqual(pieces, [
    { kind: "data", bytes: [1, 1, 1, 1, 1, 2, 2, 2, 3, 3] },
    { kind: "data", bytes: [3, 3] },
    { kind: "frame", type: FrameType.End },
  ]);
});

Deno.test("SessionFrameReader starts with a 16 KiB buffer and grows to its maximum while reads come back full", async () => {
  const frames = Array.from({ length: 12 }, (_, i) => data(60_000, i + 1));
  const stream = concat(...frames, end);
  const { pieces, buffers, error } = await readAll(stream, []);
  assert.equal(error, null);
  const bytes = pieces.filter((p) => p.kind === "data").flatMap((p) => p.bytes!);
  assert.equal(bytes.length, 12 * 60_000);
  for (let i = 0; i < 12; i++) assert.equal(bytes[i * 60_000 + 59_999], i + 1, `frame ${i}`);
  const sizes = new Set([...buffers].map((b) => b.byteLength));
  for (const size of [16 * 1024, 64 * 1024, SESSION_READ_SIZE]) {
    assert.ok(sizes.has(size), `a ${size}-byte read buffer among ${[...sizes]}`);
  }
});
