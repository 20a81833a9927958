/**
 * Deterministic fuzzing of the pure protocol codecs. A seeded PRNG builds inputs (random
 * bytes, mutated and truncated encodings of valid messages), feeds them in random chunk
 * sizes, and checks that every outcome is a message or one of the typed errors. A
 * failure names the input in hex so it can be turned into a fixture.
 */

import assert from "node:assert/strict";
import {
  FrameTooLargeError,
  MalformedMessageError,
  ProtocolError,
  TruncatedFrameError,
} from "../errors.ts";
import { allSamples, randomMessage, Rng } from "../testing/message_samples.ts";
import { FrameType, HEADER_SIZE, MAX_PAYLOAD } from "./constants.ts";
import { type Frame, FrameDecoder } from "./frame.ts";
import { decodeMessage, encodeData, encodeMessage, type Message } from "./messages.ts";
import { PassthroughScanner } from "./passthrough.ts";

const SEED = 0x54534e47;
const DECODER_INPUTS = 120_000;
const SCANNER_INPUTS = 60_000;

function toHex(bytes: Uint8Array): string {
  const shown = Array.from(bytes.subarray(0, 256), (b) => b.toString(16).padStart(2, "0"));
  return shown.join("") + (bytes.length > 256 ? `… (${bytes.length} bytes)` : "");
}

/** Fails the test for an outcome that is neither a result nor an allowed error. */
function unexpected(e: unknown, where: string, input: Uint8Array): never {
  throw new Error(`${where} threw ${e} for input ${toHex(input)}`, { cause: e });
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Encoded frames and the offset where each starts, so mutations can aim at headers. */
interface Stream {
  bytes: Uint8Array;
  starts: number[];
}

function streamOf(frames: Uint8Array[]): Stream {
  const starts: number[] = [];
  let off = 0;
  for (const f of frames) {
    starts.push(off);
    off += f.length;
  }
  return { bytes: concat(frames), starts };
}

const SAMPLE_MESSAGES = allSamples();

/** One to three valid messages; now and then a large DATA frame to load the decoder. */
function validStream(rng: Rng): Stream {
  const frames: Uint8Array[] = [];
  for (let n = rng.range(1, 3); n > 0; n--) {
    const r = rng.int(200);
    if (r === 0) frames.push(encodeData(rng.bytes(rng.range(MAX_PAYLOAD - 64, MAX_PAYLOAD))));
    else if (r < 20) frames.push(encodeMessage(rng.pick(SAMPLE_MESSAGES)));
    else frames.push(encodeMessage(randomMessage(rng)));
  }
  return streamOf(frames);
}

/** Length values that sit on the edges of what a decoder must handle. */
function corruptLength(rng: Rng, old: number): number {
  return rng.pick([
    0,
    old + 1,
    Math.max(0, old - 1),
    old + rng.range(2, 300),
    MAX_PAYLOAD,
    MAX_PAYLOAD + 1,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    rng.int(0x100000000),
  ]);
}

/** Applies one random mutation: bit flip, byte replace, insert, delete, header damage. */
function mutate(rng: Rng, s: Stream): Uint8Array {
  let b = s.bytes;
  const at = () => rng.int(b.length + 1);
  switch (rng.int(6)) {
    case 0: // bit flip
      if (b.length > 0) b[rng.int(b.length)] ^= 1 << rng.int(8);
      break;
    case 1: // byte replacement
      if (b.length > 0) b[rng.int(b.length)] = rng.int(256);
      break;
    case 2: { // insertion
      const i = at();
      b = concat([b.subarray(0, i), rng.bytes(rng.range(1, 4)), b.subarray(i)]);
      break;
    }
    case 3: { // deletion
      const i = at();
      b = concat([b.subarray(0, i), b.subarray(Math.min(b.length, i + rng.range(1, 4)))]);
      break;
    }
    case 4: { // length-field corruption of a frame header
      const start = rng.pick(s.starts);
      if (start + HEADER_SIZE <= b.length) {
        const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
        view.setUint32(start + 1, corruptLength(rng, view.getUint32(start + 1)));
      }
      break;
    }
    default: { // type corruption of a frame header
      const start = rng.pick(s.starts);
      if (start < b.length) b[start] = rng.pick([0, 0x19, 0xff, rng.range(1, 0x18)]);
    }
  }
  // Later mutations still aim at the original frame starts: close enough for damage.
  s.bytes = b;
  return b;
}

/** One fuzz input: random bytes, a random frame, or a mutated or truncated valid stream. */
function makeInput(rng: Rng): Uint8Array {
  const r = rng.int(100);
  if (r < 10) return rng.bytes(rng.int(48));
  if (r < 25) {
    // A plausible header over a random payload: exercises every payload decoder.
    const payload = rng.bytes(rng.int(40));
    const header = new Uint8Array(HEADER_SIZE);
    header[0] = rng.range(0, 0x19);
    new DataView(header.buffer).setUint32(1, payload.length);
    return concat([header, payload]);
  }
  const s = validStream(rng);
  if (r < 35) return s.bytes;
  if (r < 85) {
    for (let n = rng.range(1, 4); n > 0; n--) mutate(rng, s);
  }
  if (r >= 75) s.bytes = s.bytes.subarray(0, rng.int(s.bytes.length + 1));
  return s.bytes;
}

function chunkSize(rng: Rng, total: number): number {
  switch (rng.int(4)) {
    case 0:
      return 1;
    case 1:
      return rng.range(1, 8);
    case 2:
      return rng.range(1, 4096);
    default:
      return Math.max(1, total);
  }
}

interface DecoderStats {
  messages: number;
  frameTooLarge: number;
  truncated: number;
  malformed: number;
}

/** Decodes one frame; a message must survive a re-encode, a failure must be typed. */
function checkFrame(frame: Frame, input: Uint8Array, stats: DecoderStats) {
  let m: Message;
  try {
    m = decodeMessage(frame);
  } catch (e) {
    if (!(e instanceof MalformedMessageError)) unexpected(e, "decodeMessage()", input);
    stats.malformed++;
    return;
  }
  stats.messages++;
  if (m.kind === "data") {
    assert.equal(frame.type, FrameType.Data);
    assert.deepEqual(m.bytes, frame.payload);
    return;
  }
  let again: Message;
  try {
    const bytes = encodeMessage(m);
    const frames = new FrameDecoder().push(bytes);
    assert.equal(frames.length, 1);
    again = decodeMessage(frames[0]);
  } catch (e) {
    unexpected(e, "re-encoding a decoded message", input);
  }
  assert.deepStrictEqual(again, m, `re-encode of ${toHex(input)}`);
}

/** Feeds `input` to a decoder in random chunks; checks every outcome and the memory bound. */
function fuzzDecoder(rng: Rng, input: Uint8Array, stats: DecoderStats) {
  // A quarter of the decoders get a small maximum so the bound is tested on small inputs.
  const maxPayload = rng.int(4) === 0 ? rng.range(0, 256) : MAX_PAYLOAD;
  const decoder = new FrameDecoder({ maxPayload });
  let off = 0;
  while (off < input.length) {
    const size = chunkSize(rng, input.length - off);
    const chunk = input.slice(off, off + size); // a fresh buffer per read, as a socket gives
    off += chunk.length;
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch (e) {
      if (!(e instanceof FrameTooLargeError)) unexpected(e, "FrameDecoder.push()", input);
      stats.frameTooLarge++;
      return; // a decoder is discarded after an error
    }
    if (decoder.pendingBytes > HEADER_SIZE + maxPayload + chunk.length) {
      assert.fail(`pendingBytes ${decoder.pendingBytes} over the bound for ${toHex(input)}`);
    }
    for (const frame of frames) checkFrame(frame, input, stats);
  }
  try {
    decoder.finish();
  } catch (e) {
    if (!(e instanceof TruncatedFrameError)) unexpected(e, "FrameDecoder.finish()", input);
    stats.truncated++;
  }
}

Deno.test({
  name: "FrameDecoder and decodeMessage() turn any input into messages or typed errors",
  permissions: "none",
  fn() {
    const rng = new Rng(SEED);
    const stats: DecoderStats = { messages: 0, frameTooLarge: 0, truncated: 0, malformed: 0 };
    for (let i = 0; i < DECODER_INPUTS; i++) fuzzDecoder(rng, makeInput(rng), stats);
    // Every outcome must actually occur, or the generator has gone blind somewhere.
    for (const [outcome, count] of Object.entries(stats)) {
      assert.ok(count > DECODER_INPUTS / 100, `only ${count} inputs ended in ${outcome}`);
    }
  },
});

Deno.test({
  name: "FrameDecoder keeps at most one frame plus one chunk across a long stream",
  permissions: "none",
  fn() {
    const rng = new Rng(SEED + 1);
    const decoder = new FrameDecoder();
    let frames = 0;
    for (let i = 0; i < 400; i++) {
      const frame = encodeData(rng.bytes(rng.range(0, MAX_PAYLOAD)));
      for (let off = 0; off < frame.length;) {
        const chunk = frame.slice(off, off + rng.range(1, 20_000));
        off += chunk.length;
        frames += decoder.push(chunk).length;
        assert.ok(decoder.pendingBytes <= HEADER_SIZE + MAX_PAYLOAD + chunk.length);
      }
    }
    assert.equal(frames, 400);
    decoder.finish();
  },
});

Deno.test({
  name: "decodeMessage() returns every random message that encodeMessage() wrote",
  permissions: "none",
  fn() {
    const rng = new Rng(SEED + 3);
    for (let i = 0; i < 20_000; i++) {
      const m = randomMessage(rng);
      const bytes = encodeMessage(m);
      const frames = new FrameDecoder().push(bytes);
      assert.equal(frames.length, 1);
      assert.deepStrictEqual(decodeMessage(frames[0]), m, `round trip of ${toHex(bytes)}`);
    }
  },
});

// --- Pass-through scanner ---------------------------------------------------------------

/** What a correct scanner must report for a whole stream (frame by frame, no chunks). */
type Expected =
  | { kind: "end"; at: number }
  | { kind: "open" }
  | { kind: "tooLarge" }
  | { kind: "protocol" };

function expectedScan(stream: Uint8Array): Expected {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  let pos = 0;
  for (;;) {
    if (pos + HEADER_SIZE > stream.length) return { kind: "open" };
    const type = stream[pos];
    const length = view.getUint32(pos + 1);
    if (length > MAX_PAYLOAD) return { kind: "tooLarge" };
    if (type === FrameType.End ? length !== 1 : type !== FrameType.Data) {
      return { kind: "protocol" };
    }
    pos += HEADER_SIZE + length;
    if (pos > stream.length) return { kind: "open" };
    if (type === FrameType.End) return { kind: "end", at: pos };
  }
}

/** A session stream: DATA frames, END, then control frames that must not be forwarded. */
function sessionStream(rng: Rng): Stream {
  const frames: Uint8Array[] = [];
  for (let n = rng.int(4); n > 0; n--) {
    const size = rng.int(100) === 0 ? rng.range(0, MAX_PAYLOAD) : rng.int(40);
    frames.push(encodeData(rng.bytes(size)));
  }
  frames.push(encodeMessage({ kind: "end", reason: rng.pick([0, 1] as const) }));
  for (let n = rng.int(3); n > 0; n--) frames.push(encodeMessage(randomMessage(rng)));
  return streamOf(frames);
}

function scannerInput(rng: Rng): Uint8Array {
  const r = rng.int(100);
  if (r < 10) return rng.bytes(rng.int(32));
  const s = sessionStream(rng);
  if (r < 30) return s.bytes;
  if (r < 85) {
    for (let n = rng.range(1, 3); n > 0; n--) mutate(rng, s);
  }
  if (r >= 75) s.bytes = s.bytes.subarray(0, rng.int(s.bytes.length + 1));
  return s.bytes;
}

/** Scans `input` in random chunks as a relay would and compares with {@link expectedScan}. */
function fuzzScanner(rng: Rng, input: Uint8Array): Expected["kind"] {
  const scanner = new PassthroughScanner();
  const expected = expectedScan(input);
  let off = 0;
  let outcome: Expected;
  for (;;) {
    if (off >= input.length) {
      outcome = { kind: "open" };
      break;
    }
    const chunk = input.slice(off, off + chunkSize(rng, input.length - off));
    // Now and then the scan starts part-way into the chunk, as after a previous END.
    const pad = rng.int(8) === 0 ? rng.range(1, 3) : 0;
    const padded = pad === 0 ? chunk : concat([rng.bytes(pad), chunk]);
    let result;
    try {
      result = scanner.scan(padded, pad);
    } catch (e) {
      if (e instanceof FrameTooLargeError) outcome = { kind: "tooLarge" };
      else if (e instanceof ProtocolError) outcome = { kind: "protocol" };
      else unexpected(e, "PassthroughScanner.scan()", input);
      break;
    }
    const { forwardEnd, endSeen } = result;
    assert.ok(Number.isInteger(forwardEnd) && forwardEnd >= pad && forwardEnd <= padded.length);
    if (endSeen) {
      outcome = { kind: "end", at: off + forwardEnd - pad };
      assert.ok(scanner.atBoundary);
      break;
    }
    assert.equal(forwardEnd, padded.length, `a chunk without END is forwarded whole`);
    off += chunk.length;
  }
  assert.deepEqual(outcome, expected, `scanning ${toHex(input)}`);
  return outcome.kind;
}

Deno.test({
  name: "PassthroughScanner turns any input into scan results or typed errors, like a model",
  permissions: "none",
  fn() {
    const rng = new Rng(SEED + 2);
    const counts: Record<Expected["kind"], number> = { end: 0, open: 0, tooLarge: 0, protocol: 0 };
    for (let i = 0; i < SCANNER_INPUTS; i++) counts[fuzzScanner(rng, scannerInput(rng))]++;
    for (const [outcome, count] of Object.entries(counts)) {
      assert.ok(count > SCANNER_INPUTS / 100, `only ${count} inputs ended in ${outcome}`);
    }
  },
});
