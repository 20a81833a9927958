/**
 * Frame layer: bytes in, frames out. Pure; no I/O.
 *
 * @module
 */

import { FrameTooLargeError, TruncatedFrameError } from "../errors.ts";
import { HEADER_SIZE, MAX_PAYLOAD } from "./constants.ts";

/** One decoded frame: its type byte and payload. */
export interface Frame {
  /** The frame type code (see `FrameType`). */
  type: number;
  /** The payload bytes. May be a view into a chunk passed to `push`. */
  payload: Uint8Array;
}

/** Options for {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest payload accepted; defaults to {@link MAX_PAYLOAD}. */
  maxPayload?: number;
}

/**
 * Incremental frame decoder: feed it chunks as they arrive, get whole frames back.
 *
 * A declared length over the maximum throws {@link FrameTooLargeError} as soon as the
 * header is complete, before any of the body is buffered, so memory per connection is
 * bounded by `HEADER_SIZE + maxPayload`. After an error the decoder must be discarded.
 *
 * The decoder keeps views into the chunks it is given (no copy on the fast path), so a
 * caller must hand it a fresh buffer for every read.
 *
 * @example
 * ```ts
 * import { encodeFrame, FrameDecoder } from "./frame.ts";
 * const decoder = new FrameDecoder();
 * const frames = decoder.push(encodeFrame(0x04, new Uint8Array([0, 0, 0, 1])));
 * console.assert(frames.length === 1 && frames[0].type === 0x04);
 * ```
 */
export class FrameDecoder {
  #maxPayload: number;
  /** Unparsed bytes: `#buf[#off..]`. */
  #buf: Uint8Array = new Uint8Array(0);
  #off = 0;

  /** Creates a decoder. */
  constructor(options: FrameDecoderOptions = {}) {
    this.#maxPayload = options.maxPayload ?? MAX_PAYLOAD;
  }

  /** Largest payload accepted. */
  get maxPayload(): number {
    return this.#maxPayload;
  }

  set maxPayload(n: number) {
    this.#maxPayload = n;
  }

  /** Number of bytes received but not yet returned as frames. */
  get pendingBytes(): number {
    return this.#buf.length - this.#off;
  }

  /** Adds a chunk; frames are then taken with {@link next}. */
  append(chunk: Uint8Array): void {
    if (this.pendingBytes === 0) {
      this.#buf = chunk;
    } else {
      const rest = this.#buf.subarray(this.#off);
      const joined = new Uint8Array(rest.length + chunk.length);
      joined.set(rest, 0);
      joined.set(chunk, rest.length);
      this.#buf = joined;
    }
    this.#off = 0;
  }

  /** Returns the next complete frame, or null if more bytes are needed. */
  next(): Frame | null {
    const available = this.#buf.length - this.#off;
    if (available < HEADER_SIZE) return null;
    const length = readU32(this.#buf, this.#off + 1);
    if (length > this.#maxPayload) throw new FrameTooLargeError(length, this.#maxPayload);
    if (available < HEADER_SIZE + length) return null;
    const start = this.#off + HEADER_SIZE;
    const frame = {
      type: this.#buf[this.#off],
      payload: this.#buf.subarray(start, start + length),
    };
    this.#off = start + length;
    return frame;
  }

  /** Feeds a chunk and returns every frame it completes, in order. */
  push(chunk: Uint8Array): Frame[] {
    this.append(chunk);
    const frames: Frame[] = [];
    for (let f = this.next(); f !== null; f = this.next()) frames.push(f);
    return frames;
  }

  /**
   * Takes the bytes not yet returned as frames, leaving the decoder empty. Used when a
   * connection switches to pass-through mode mid-stream.
   */
  takeRest(): Uint8Array {
    const rest = this.#buf.subarray(this.#off);
    this.#buf = new Uint8Array(0);
    this.#off = 0;
    return rest;
  }

  /** Declares end of stream: throws {@link TruncatedFrameError} if a frame is incomplete. */
  finish(): void {
    if (this.pendingBytes > 0) throw new TruncatedFrameError(this.pendingBytes);
  }
}

/** Encodes one frame: header and payload in a single new buffer. */
export function encodeFrame(type: number, payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_PAYLOAD) {
    throw new RangeError(
      `Cannot encode frame: payload ${payload.length} bytes exceeds maximum ${MAX_PAYLOAD}`,
    );
  }
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  writeHeader(out, 0, type, payload.length);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** Writes a frame header for `length` payload bytes at `offset` of `target`. */
export function writeHeader(target: Uint8Array, offset: number, type: number, length: number) {
  target[offset] = type;
  target[offset + 1] = length >>> 24;
  target[offset + 2] = (length >>> 16) & 0xff;
  target[offset + 3] = (length >>> 8) & 0xff;
  target[offset + 4] = length & 0xff;
}

/** Reads a big-endian u32 at `offset`. */
export function readU32(data: Uint8Array, offset: number): number {
  return ((data[offset] << 24) | (data[offset + 1] << 16) | (data[offset + 2] << 8) |
    data[offset + 3]) >>> 0;
}
