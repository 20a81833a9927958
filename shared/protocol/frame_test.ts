import assert from "node:assert/strict";
import { FrameTooLargeError, TruncatedFrameError } from "../errors.ts";
import { ErrorCode, HEADER_SIZE, MAX_PAYLOAD } from "./constants.ts";
import { encodeFrame, type Frame, FrameDecoder, readU32, writeHeader } from "./frame.ts";

// Fixtures are written out byte by byte: type, u32 big-endian length, payload.

/** PING, nonce 0xdeadbeef. */
const PING = new Uint8Array([0x04, 0x00, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
/** LOGOUT: empty payload. */
const LOGOUT = new Uint8Array([0x06, 0x00, 0x00, 0x00, 0x00]);
/** DATA carrying "abc". */
const DATA_ABC = new Uint8Array([0x0f, 0x00, 0x00, 0x00, 0x03, 0x61, 0x62, 0x63]);
/** END, reason normal. */
const END = new Uint8Array([0x10, 0x00, 0x00, 0x00, 0x01, 0x00]);

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A frame as plain values, so `deepStrictEqual` compares bytes and not buffer views. */
function plain(f: Frame): { type: number; payload: number[] } {
  return { type: f.type, payload: [...f.payload] };
}

Deno.test({
  name: "FrameDecoder.push() returns a frame whose header is split at every byte position",
  permissions: "none",
  fn() {
    for (let split = 1; split < PING.length; split++) {
      const decoder = new FrameDecoder();
      assert.deepEqual(decoder.push(PING.slice(0, split)), [], `split at ${split}`);
      assert.equal(decoder.pendingBytes, split);
      const frames = decoder.push(PING.slice(split));
      assert.deepEqual(frames.map(plain), [{ type: 0x04, payload: [0xde, 0xad, 0xbe, 0xef] }]);
      assert.equal(decoder.pendingBytes, 0);
      decoder.finish();
    }
  },
});

Deno.test({
  name: "FrameDecoder.push() returns a frame fed one byte at a time only on its last byte",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    for (let i = 0; i < DATA_ABC.length - 1; i++) {
      assert.deepEqual(decoder.push(DATA_ABC.slice(i, i + 1)), []);
    }
    const frames = decoder.push(DATA_ABC.slice(-1));
    assert.deepEqual(frames.map(plain), [{ type: 0x0f, payload: [0x61, 0x62, 0x63] }]);
  },
});

Deno.test({
  name: "FrameDecoder.push() returns every frame of one chunk in order and keeps a partial tail",
  permissions: "none",
  fn() {
    const tail = new Uint8Array([0x0f, 0x00, 0x00]); // first 3 bytes of a DATA header
    const chunk = concat(PING, LOGOUT, DATA_ABC, END, tail);
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(chunk).map(plain), [
      { type: 0x04, payload: [0xde, 0xad, 0xbe, 0xef] },
      { type: 0x06, payload: [] },
      { type: 0x0f, payload: [0x61, 0x62, 0x63] },
      { type: 0x10, payload: [0x00] },
    ]);
    assert.equal(decoder.pendingBytes, 3);
    assert.deepEqual(decoder.push(new Uint8Array([0x00, 0x01, 0x7a])).map(plain), [
      { type: 0x0f, payload: [0x7a] },
    ]);
  },
});

Deno.test({
  name: "FrameDecoder.next() returns null until a frame is complete, then one frame per call",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    assert.equal(decoder.next(), null);
    decoder.append(concat(LOGOUT, PING.slice(0, 7)));
    assert.deepEqual(plain(decoder.next()!), { type: 0x06, payload: [] });
    assert.equal(decoder.next(), null);
    decoder.append(PING.slice(7));
    assert.deepEqual(plain(decoder.next()!), { type: 0x04, payload: [0xde, 0xad, 0xbe, 0xef] });
    assert.equal(decoder.next(), null);
  },
});

Deno.test({
  name: "FrameDecoder.push() returns payloads as views into the chunk, without copying",
  permissions: "none",
  fn() {
    const chunk = DATA_ABC.slice();
    const [frame] = new FrameDecoder().push(chunk);
    assert.equal(frame.payload.buffer, chunk.buffer);
    assert.equal(frame.payload.byteOffset, HEADER_SIZE);
  },
});

Deno.test({
  name: "FrameDecoder.next() rejects a length over the maximum before buffering the body",
  permissions: "none",
  fn() {
    // DATA declaring 65537 bytes: only the 5 header bytes have arrived.
    const header = new Uint8Array([0x0f, 0x00, 0x01, 0x00, 0x01]);
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(header.slice(0, 4)), []);
    assert.throws(() => decoder.push(header.slice(4)), (e: unknown) => {
      assert.ok(e instanceof FrameTooLargeError);
      assert.ok(e instanceof RangeError);
      assert.equal(e.code, ErrorCode.BadFrame);
      assert.equal(e.message, "Cannot decode frame: declared length 65537 exceeds maximum 65536");
      return true;
    });
    assert.equal(decoder.pendingBytes, HEADER_SIZE);
  },
});

Deno.test({
  name: "FrameDecoder.next() rejects a length of 0xffffffff as unsigned, not negative",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    assert.throws(
      () => decoder.push(new Uint8Array([0x0f, 0xff, 0xff, 0xff, 0xff])),
      { name: "FrameTooLargeError", message: /declared length 4294967295 exceeds/ },
    );
  },
});

Deno.test({
  name: "FrameDecoder.next() accepts a length of exactly the maximum and waits for the body",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(new Uint8Array([0x0f, 0x00, 0x01, 0x00, 0x00])), []);
    const frames = decoder.push(new Uint8Array(MAX_PAYLOAD));
    assert.equal(frames.length, 1);
    assert.equal(frames[0].payload.length, MAX_PAYLOAD);
  },
});

Deno.test({
  name: "FrameDecoder honours a smaller maxPayload option",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder({ maxPayload: 3 });
    assert.equal(decoder.push(DATA_ABC).length, 1);
    assert.throws(() => decoder.push(PING), {
      name: "FrameTooLargeError",
      message: "Cannot decode frame: declared length 4 exceeds maximum 3",
    });
  },
});

Deno.test({
  name: "FrameDecoder.finish() throws TruncatedFrameError for a frame cut short at EOF",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    assert.equal(decoder.push(concat(PING, DATA_ABC.slice(0, 6))).length, 1);
    assert.throws(() => decoder.finish(), (e: unknown) => {
      assert.ok(e instanceof TruncatedFrameError);
      assert.ok(e instanceof SyntaxError);
      assert.equal(e.code, ErrorCode.BadFrame);
      assert.equal(
        e.message,
        "Cannot decode frame: stream ended with 6 bytes of an incomplete frame",
      );
      return true;
    });
  },
});

Deno.test({
  name: "FrameDecoder.finish() throws TruncatedFrameError for a header cut short at EOF",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    decoder.push(new Uint8Array([0x04, 0x00]));
    assert.throws(() => decoder.finish(), TruncatedFrameError);
  },
});

Deno.test({
  name: "FrameDecoder.finish() returns quietly on a frame boundary",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    decoder.finish();
    decoder.push(concat(PING, END));
    decoder.finish();
  },
});

Deno.test({
  name: "FrameDecoder.takeRest() returns the unparsed bytes and leaves the decoder empty",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    // END, then the start of the session's data stream arrives in the same chunk.
    assert.equal(decoder.next(), null);
    decoder.append(concat(END, DATA_ABC, new Uint8Array([0x0f, 0x00])));
    assert.deepEqual(plain(decoder.next()!), { type: 0x10, payload: [0x00] });
    assert.deepEqual(
      [...decoder.takeRest()],
      [0x0f, 0x00, 0x00, 0x00, 0x03, 0x61, 0x62, 0x63, 0x0f, 0x00],
    );
    assert.equal(decoder.pendingBytes, 0);
    assert.deepEqual([...decoder.takeRest()], []);
    decoder.finish();
    assert.deepEqual(decoder.push(LOGOUT).map(plain), [{ type: 0x06, payload: [] }]);
  },
});

Deno.test({
  name: "FrameDecoder copies a 64 KiB frame fed one byte at a time once, not O(n^2) times",
  permissions: "none",
  fn() {
    const frame = encodeFrame(0x0f, Uint8Array.from({ length: MAX_PAYLOAD }, (_, i) => i * 7));
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    for (let i = 0; i < frame.length; i++) frames.push(...decoder.push(frame.slice(i, i + 1)));
    assert.equal(frames.length, 1);
    assert.deepEqual(frames[0].payload, frame.subarray(HEADER_SIZE));
    // Each byte lands once: header into its 5-byte scratch, payload into its own buffer.
    assert.equal(decoder.bytesCopied, frame.length);
    assert.equal(decoder.pendingBytes, 0);
  },
});

Deno.test({
  name: "FrameDecoder copies each byte at most once across random chunkings",
  permissions: "none",
  fn() {
    let seed = 7;
    const rand = (n: number) => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
    const stream = concat(
      ...Array.from({ length: 50 }, (_, i) => encodeFrame(0x0f, new Uint8Array(i * 997))),
    );
    for (let round = 0; round < 20; round++) {
      const decoder = new FrameDecoder();
      let payloadBytes = 0;
      for (let off = 0; off < stream.length;) {
        const chunk = stream.slice(off, off + 1 + rand(3000));
        off += chunk.length;
        for (const f of decoder.push(chunk)) payloadBytes += f.payload.length;
      }
      assert.equal(payloadBytes, 997 * (49 * 50) / 2);
      assert.ok(decoder.bytesCopied <= stream.length, `copied ${decoder.bytesCopied}`);
      decoder.finish();
    }
  },
});

Deno.test({
  name: "FrameDecoder returns a view when only the header straddles chunks",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(DATA_ABC.slice(0, 2)), []);
    const rest = DATA_ABC.slice(2);
    const [frame] = decoder.push(rest);
    assert.deepEqual(plain(frame), { type: 0x0f, payload: [0x61, 0x62, 0x63] });
    assert.equal(frame.payload.buffer, rest.buffer, "the body was not copied");
    assert.equal(decoder.bytesCopied, HEADER_SIZE, "only the header went through the scratch");
  },
});

Deno.test({
  name: "FrameDecoder.next() parses chunks appended several times before a call",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder();
    const bytes = concat(PING, DATA_ABC, END);
    for (const cut of [[0, 3], [3, 4], [4, 12], [12, bytes.length]]) {
      decoder.append(bytes.slice(cut[0], cut[1]));
    }
    decoder.append(new Uint8Array(0));
    assert.equal(decoder.pendingBytes, bytes.length);
    const frames: Frame[] = [];
    for (let f = decoder.next(); f !== null; f = decoder.next()) frames.push(f);
    assert.deepEqual(frames.map(plain), [
      { type: 0x04, payload: [0xde, 0xad, 0xbe, 0xef] },
      { type: 0x0f, payload: [0x61, 0x62, 0x63] },
      { type: 0x10, payload: [0x00] },
    ]);
    decoder.finish();
  },
});

Deno.test({
  name: "FrameDecoder.maxPayload can be raised after login and lowered again",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder({ maxPayload: 3 });
    assert.equal(decoder.maxPayload, 3);
    assert.equal(decoder.push(DATA_ABC).length, 1);
    decoder.maxPayload = 4;
    assert.deepEqual(decoder.push(PING).map(plain), [
      { type: 0x04, payload: [0xde, 0xad, 0xbe, 0xef] },
    ]);
    decoder.maxPayload = 0;
    assert.equal(decoder.push(LOGOUT).length, 1);
    assert.throws(() => decoder.push(END), {
      name: "FrameTooLargeError",
      message: "Cannot decode frame: declared length 1 exceeds maximum 0",
    });
    assert.throws(() => (decoder.maxPayload = -1), RangeError);
    assert.throws(() => new FrameDecoder({ maxPayload: 1.5 }), RangeError);
  },
});

Deno.test({
  name: "FrameDecoder rejects an oversized length split across chunks before allocating",
  permissions: "none",
  fn() {
    const decoder = new FrameDecoder({ maxPayload: 4096 });
    assert.deepEqual(decoder.push(new Uint8Array([0x0f, 0x00])), []);
    assert.throws(
      () => decoder.push(new Uint8Array([0x01, 0x00, 0x00, 0xaa, 0xbb])),
      { name: "FrameTooLargeError", message: /declared length 65536 exceeds maximum 4096/ },
    );
    assert.equal(decoder.bytesCopied, HEADER_SIZE, "nothing of the body was buffered");
  },
});

Deno.test({
  name: "FrameDecoder.takeRest() returns a half-assembled frame's header and body, then the rest",
  permissions: "none",
  fn() {
    const bytes = concat(PING, DATA_ABC, LOGOUT);
    // Every split point: whatever was not returned as a frame comes back, in order.
    for (let cut = 1; cut < bytes.length; cut++) {
      const decoder = new FrameDecoder();
      const frames = decoder.push(bytes.slice(0, cut));
      decoder.append(bytes.slice(cut, cut + 2)); // appended, not parsed yet
      const taken = frames.reduce((n, f) => n + HEADER_SIZE + f.payload.length, 0);
      const rest = decoder.takeRest();
      assert.deepEqual([...rest], [...bytes.slice(taken, cut + 2)], `cut at ${cut}`);
      assert.equal(decoder.pendingBytes, 0);
      decoder.finish();
      assert.deepEqual(decoder.push(END).map(plain), [{ type: 0x10, payload: [0x00] }]);
    }
  },
});

Deno.test({
  name: "encodeFrame() writes the type, a big-endian length and the payload",
  permissions: "none",
  fn() {
    assert.deepEqual(
      encodeFrame(0x04, new Uint8Array([0xde, 0xad, 0xbe, 0xef])),
      PING,
    );
    assert.deepEqual(encodeFrame(0x06, new Uint8Array(0)), LOGOUT);
    const big = encodeFrame(0x0f, new Uint8Array(0xfedc));
    assert.deepEqual([...big.subarray(0, HEADER_SIZE)], [0x0f, 0x00, 0x00, 0xfe, 0xdc]);
    assert.equal(big.length, HEADER_SIZE + 0xfedc);
  },
});

Deno.test({
  name: "encodeFrame() accepts exactly MAX_PAYLOAD and rejects one byte more",
  permissions: "none",
  fn() {
    assert.equal(encodeFrame(0x0f, new Uint8Array(MAX_PAYLOAD)).length, HEADER_SIZE + MAX_PAYLOAD);
    assert.throws(() => encodeFrame(0x0f, new Uint8Array(MAX_PAYLOAD + 1)), {
      name: "RangeError",
      message: "Cannot encode frame: payload 65537 bytes exceeds maximum 65536",
    });
  },
});

Deno.test({
  name: "writeHeader() writes at an offset and readU32() reads big-endian unsigned",
  permissions: "none",
  fn() {
    const target = new Uint8Array(8);
    writeHeader(target, 2, 0x12, 0x89abcdef);
    assert.deepEqual([...target], [0, 0, 0x12, 0x89, 0xab, 0xcd, 0xef, 0]);
    assert.equal(readU32(target, 3), 0x89abcdef);
    assert.equal(readU32(new Uint8Array([0xff, 0xff, 0xff, 0xff]), 0), 0xffffffff);
  },
});
