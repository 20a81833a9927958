import assert from "node:assert/strict";
import { FrameTooLargeError, ProtocolError } from "../errors.ts";
import { ErrorCode, MAX_PAYLOAD } from "./constants.ts";
import { PassthroughScanner } from "./passthrough.ts";

/**
 * A session stream as a device sends it: DATA "abc", an empty DATA, DATA 0x10 0x00 (bytes
 * that look like an END header but are payload), END normal, then RELEASE (control traffic
 * for the relay, not to be forwarded).
 */
const SESSION = new Uint8Array([
  /* 0 */ 0x0f,
  0x00,
  0x00,
  0x00,
  0x03,
  0x61,
  0x62,
  0x63,
  /* 8 */ 0x0f,
  0x00,
  0x00,
  0x00,
  0x00,
  /* 13 */ 0x0f,
  0x00,
  0x00,
  0x00,
  0x02,
  0x10,
  0x00,
  /* 20 */ 0x10,
  0x00,
  0x00,
  0x00,
  0x01,
  0x00,
  /* 26 */ 0x11,
  0x00,
  0x00,
  0x00,
  0x00,
]);
/** Offset just after the END frame. */
const END_AT = 26;

/** What a relay would do with a sequence of chunks: forward, and keep what follows END. */
function relay(chunks: Uint8Array[]): { forwarded: number[]; rest: number[]; ends: number } {
  const scanner = new PassthroughScanner();
  const forwarded: number[] = [];
  const rest: number[] = [];
  let ends = 0;
  for (const chunk of chunks) {
    if (ends > 0) {
      rest.push(...chunk);
      continue;
    }
    const { forwardEnd, endSeen } = scanner.scan(chunk, 0);
    assert.ok(forwardEnd >= 0 && forwardEnd <= chunk.length);
    if (!endSeen) assert.equal(forwardEnd, chunk.length, "a chunk without END is forwarded whole");
    forwarded.push(...chunk.subarray(0, forwardEnd));
    if (endSeen) {
      ends++;
      assert.ok(scanner.atBoundary);
      rest.push(...chunk.subarray(forwardEnd));
    }
  }
  return { forwarded, rest, ends };
}

const EXPECTED = {
  forwarded: [...SESSION.subarray(0, END_AT)],
  rest: [...SESSION.subarray(END_AT)],
  ends: 1,
};

Deno.test({
  name: "PassthroughScanner.scan() stops right after END in a single chunk",
  permissions: "none",
  fn() {
    const scanner = new PassthroughScanner();
    assert.deepEqual(scanner.scan(SESSION, 0), { forwardEnd: END_AT, endSeen: true });
    assert.ok(scanner.atBoundary);
    assert.deepEqual(relay([SESSION]), EXPECTED);
  },
});

Deno.test({
  name: "PassthroughScanner.scan() forwards the same bytes when the stream is split at any byte",
  permissions: "none",
  fn() {
    for (let i = 0; i <= SESSION.length; i++) {
      assert.deepEqual(relay([SESSION.slice(0, i), SESSION.slice(i)]), EXPECTED, `split at ${i}`);
    }
  },
});

Deno.test({
  name: "PassthroughScanner.scan() forwards the same bytes when split at any two positions",
  permissions: "none",
  fn() {
    for (let i = 0; i <= SESSION.length; i++) {
      for (let j = i; j <= SESSION.length; j++) {
        const chunks = [SESSION.slice(0, i), SESSION.slice(i, j), SESSION.slice(j)];
        assert.deepEqual(relay(chunks), EXPECTED, `split at ${i} and ${j}`);
      }
    }
  },
});

Deno.test({
  name: "PassthroughScanner.scan() forwards the same bytes when fed one byte at a time",
  permissions: "none",
  fn() {
    const chunks = Array.from(SESSION, (b) => new Uint8Array([b]));
    assert.deepEqual(relay(chunks), EXPECTED);
  },
});

Deno.test({
  name: "PassthroughScanner.scan() starts at the given offset of the chunk",
  permissions: "none",
  fn() {
    // Chunk = 3 bytes already handled elsewhere + END + trailing byte.
    const chunk = new Uint8Array([0xaa, 0xbb, 0xcc, 0x10, 0x00, 0x00, 0x00, 0x01, 0x01, 0x11]);
    assert.deepEqual(new PassthroughScanner().scan(chunk, 3), { forwardEnd: 9, endSeen: true });
    assert.deepEqual(new PassthroughScanner().scan(chunk, 10), { forwardEnd: 10, endSeen: false });
  },
});

Deno.test({
  name: "PassthroughScanner.atBoundary is false inside a header that straddles chunks",
  permissions: "none",
  fn() {
    const scanner = new PassthroughScanner();
    assert.ok(scanner.atBoundary);
    for (let i = 0; i < 4; i++) {
      assert.deepEqual(scanner.scan(SESSION.subarray(i, i + 1), 0), {
        forwardEnd: 1,
        endSeen: false,
      });
      assert.equal(scanner.atBoundary, false, `after header byte ${i}`);
    }
    // The fifth header byte completes DATA(3); its payload is still owed.
    assert.deepEqual(scanner.scan(SESSION.subarray(4, 6), 0), { forwardEnd: 2, endSeen: false });
    assert.equal(scanner.atBoundary, false);
    assert.deepEqual(scanner.scan(SESSION.subarray(6, 8), 0), { forwardEnd: 2, endSeen: false });
    assert.ok(scanner.atBoundary);
  },
});

Deno.test({
  name: "PassthroughScanner.scan() reports END when its reason byte arrives in the next chunk",
  permissions: "none",
  fn() {
    const scanner = new PassthroughScanner();
    const header = new Uint8Array([0x10, 0x00, 0x00, 0x00, 0x01]);
    assert.deepEqual(scanner.scan(header, 0), { forwardEnd: 5, endSeen: false });
    assert.equal(scanner.atBoundary, false);
    const next = new Uint8Array([0x01, 0x11, 0x00, 0x00, 0x00, 0x00]);
    assert.deepEqual(scanner.scan(next, 0), { forwardEnd: 1, endSeen: true });
  },
});

/** Asserts that scanning `bytes` (whole, then split at every byte) throws per `check`. */
function assertScanThrows(bytes: Uint8Array, check: (e: unknown) => boolean) {
  assert.throws(() => new PassthroughScanner().scan(bytes, 0), check);
  for (let i = 1; i < bytes.length; i++) {
    const scanner = new PassthroughScanner();
    assert.throws(() => {
      scanner.scan(bytes.slice(0, i), 0);
      scanner.scan(bytes.slice(i), 0);
    }, check);
  }
}

Deno.test({
  name: "PassthroughScanner.scan() throws ProtocolError for END with a length other than 1",
  permissions: "none",
  fn() {
    for (const length of [0, 2, 0x100]) {
      const end = new Uint8Array([0x10, 0, 0, length >> 8, length & 0xff, 0, 0]);
      assertScanThrows(end, (e) => {
        assert.ok(e instanceof ProtocolError, `got ${e}`);
        assert.equal(e.code, ErrorCode.BadFrame);
        assert.equal(e.message, `Cannot pass END: payload is ${length} bytes, expected 1`);
        return true;
      });
    }
  },
});

Deno.test({
  name: "PassthroughScanner.scan() throws ProtocolError for a PING in a session",
  permissions: "none",
  fn() {
    const stream = new Uint8Array([
      ...[0x0f, 0x00, 0x00, 0x00, 0x01, 0x61],
      ...[0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01],
    ]);
    assertScanThrows(stream, (e) => {
      assert.ok(e instanceof ProtocolError, `got ${e}`);
      assert.equal(e.code, ErrorCode.UnexpectedMessage);
      assert.equal(e.message, "Cannot pass frame type 0x4 in a session: only DATA and END");
      return true;
    });
  },
});

Deno.test({
  name: "PassthroughScanner.scan() throws ProtocolError for every type but DATA and END",
  permissions: "none",
  fn() {
    for (let type = 0; type < 0x100; type++) {
      if (type === 0x0f || type === 0x10) continue;
      const scanner = new PassthroughScanner();
      assert.throws(() => scanner.scan(new Uint8Array([type, 0, 0, 0, 0]), 0), ProtocolError);
    }
  },
});

Deno.test({
  name: "PassthroughScanner.scan() throws FrameTooLargeError for a length over the maximum",
  permissions: "none",
  fn() {
    // DATA declaring 65537 bytes, after a valid DATA frame.
    const stream = new Uint8Array([0x0f, 0, 0, 0, 1, 0x61, 0x0f, 0x00, 0x01, 0x00, 0x01]);
    assertScanThrows(stream, (e) => {
      assert.ok(e instanceof FrameTooLargeError, `got ${e}`);
      assert.equal(e.message, "Cannot decode frame: declared length 65537 exceeds maximum 65536");
      return true;
    });
    // The length is checked before the type: an oversized PING is also FrameTooLargeError.
    assertScanThrows(
      new Uint8Array([0x04, 0xff, 0xff, 0xff, 0xff]),
      (e) => e instanceof FrameTooLargeError,
    );
  },
});

Deno.test({
  name: "PassthroughScanner.scan() passes a DATA frame of exactly the maximum length",
  permissions: "none",
  fn() {
    const scanner = new PassthroughScanner();
    const header = new Uint8Array([0x0f, 0x00, 0x01, 0x00, 0x00]);
    assert.deepEqual(scanner.scan(header, 0), { forwardEnd: 5, endSeen: false });
    const body = new Uint8Array(MAX_PAYLOAD);
    assert.deepEqual(scanner.scan(body, 0), { forwardEnd: MAX_PAYLOAD, endSeen: false });
    assert.ok(scanner.atBoundary);
  },
});
