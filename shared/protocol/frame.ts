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
  /** Largest payload accepted; defaults to {@link MAX_PAYLOAD}. Settable later. */
  maxPayload?: number;
}

/**
 * Incremental frame decoder: feed it chunks as they arrive, get whole frames back.
 *
 * A declared length over the maximum throws {@link FrameTooLargeError} as soon as the
 * header is complete, before any of the body is buffered, so memory per connection is
 * bounded by `HEADER_SIZE + maxPayload`. After an error the decoder must be discarded.
 *
 * Every byte is copied at most once. A frame lying whole inside one chunk is returned
 * as a view into that chunk (no copy), so a caller must hand the decoder a fresh buffer
 * for every read. A frame that straddles chunks is assembled the way Tailscale's DERP
 * reads one: its header is gathered (5 bytes), its length checked, then a buffer of
 * exactly the payload size is allocated and filled as chunks arrive. Joining pending
 * bytes to each new chunk instead would cost O(n^2) for a frame sent a byte at a time.
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
  /** Chunks appended and not parsed yet (views, never copied); `#off` is used of `#chunks[0]`. */
  #chunks: Uint8Array[] = [];
  #off = 0;
  /** Bytes in `#chunks` past `#off`. */
  #queued = 0;
  /** Header of the frame being assembled across chunks: `#header[0..#headerFill)`. */
  readonly #header = new Uint8Array(HEADER_SIZE);
  #headerFill = 0;
  /** Right-sized payload of the frame being assembled, once its header is complete. */
  #body: Uint8Array | null = null;
  #bodyFill = 0;
  #bytesCopied = 0;

  /** Creates a decoder. */
  constructor(options: FrameDecoderOptions = {}) {
    this.#maxPayload = checkMaxPayload(options.maxPayload ?? MAX_PAYLOAD);
  }

  /**
   * Largest payload accepted. Raising it after login is how a connection moves from its
   * small pre-login limit to the full one; a change applies to headers completed after it.
   */
  get maxPayload(): number {
    return this.#maxPayload;
  }
  set maxPayload(value: number) {
    this.#maxPayload = checkMaxPayload(value);
  }

  /** Number of bytes received but not yet returned as frames. */
  get pendingBytes(): number {
    return this.#headerFill + this.#bodyFill + this.#queued;
  }

  /** Bytes copied into buffers of the decoder's own so far (for tests and metrics). */
  get bytesCopied(): number {
    return this.#bytesCopied;
  }

  /** Adds a chunk; frames are then taken with {@link next}. The chunk is not copied. */
  append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#queued += chunk.length;
  }

  /** Returns the next complete frame, or null if more bytes are needed. */
  next(): Frame | null {
    if (this.#body === null) {
      const head = this.#chunks[0];
      if (this.#headerFill === 0 && head !== undefined && head.length - this.#off >= HEADER_SIZE) {
        // Fast path: the header lies whole in the first chunk, and maybe the frame does too.
        const at = this.#off;
        const length = readU32(head, at + 1);
        if (length > this.#maxPayload) {
          throw new FrameTooLargeError(length, this.#maxPayload, head[at]);
        }
        if (head.length - at >= HEADER_SIZE + length) {
          const start = at + HEADER_SIZE;
          this.#consume(HEADER_SIZE + length);
          return { type: head[at], payload: head.subarray(start, start + length) };
        }
      }
      // Slow path: gather the header, which may straddle chunks.
      this.#headerFill += this.#copyInto(this.#header, this.#headerFill);
      if (this.#headerFill < HEADER_SIZE) return null;
      const length = readU32(this.#header, 1);
      if (length > this.#maxPayload) {
        throw new FrameTooLargeError(length, this.#maxPayload, this.#header[0]);
      }
      const next = this.#chunks[0];
      if (next !== undefined && next.length - this.#off >= length) {
        // The body lies whole in one chunk: a view after all.
        const start = this.#off;
        this.#consume(length);
        this.#headerFill = 0;
        return { type: this.#header[0], payload: next.subarray(start, start + length) };
      }
      this.#body = new Uint8Array(length);
      this.#bodyFill = 0;
    }
    this.#bodyFill += this.#copyInto(this.#body, this.#bodyFill);
    if (this.#bodyFill < this.#body.length) return null;
    const frame = { type: this.#header[0], payload: this.#body };
    this.#body = null;
    this.#bodyFill = 0;
    this.#headerFill = 0;
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
   * Takes the bytes not yet returned as frames, in order, leaving the decoder empty: the
   * header and body bytes of a frame being assembled, then the unparsed chunks. Used when
   * a connection switches to pass-through mode mid-stream.
   */
  takeRest(): Uint8Array {
    const parts: Uint8Array[] = [];
    if (this.#headerFill > 0) parts.push(this.#header.subarray(0, this.#headerFill));
    if (this.#body !== null && this.#bodyFill > 0) {
      parts.push(this.#body.subarray(0, this.#bodyFill));
    }
    if (this.#chunks.length > 0) {
      parts.push(this.#chunks[0].subarray(this.#off), ...this.#chunks.slice(1));
    }
    let rest: Uint8Array;
    if (parts.length === 1 && this.#headerFill === 0) {
      rest = parts[0]; // one unparsed chunk: hand it over without a copy
    } else {
      rest = new Uint8Array(this.pendingBytes);
      let at = 0;
      for (const p of parts) {
        rest.set(p, at);
        at += p.length;
      }
      this.#bytesCopied += rest.length;
    }
    this.#chunks = [];
    this.#off = 0;
    this.#queued = 0;
    this.#headerFill = 0;
    this.#body = null;
    this.#bodyFill = 0;
    return rest;
  }

  /** Declares end of stream: throws {@link TruncatedFrameError} if a frame is incomplete. */
  finish(): void {
    if (this.pendingBytes > 0) throw new TruncatedFrameError(this.pendingBytes);
  }

  /** Moves `n` bytes (at most what is queued) past the parse position. */
  #consume(n: number) {
    this.#queued -= n;
    while (n > 0) {
      const head = this.#chunks[0];
      const take = Math.min(n, head.length - this.#off);
      n -= take;
      this.#off += take;
      if (this.#off === head.length) {
        this.#chunks.shift();
        this.#off = 0;
      }
    }
  }

  /** Copies queued bytes into `target` from `at` until it is full; returns the count. */
  #copyInto(target: Uint8Array, at: number): number {
    let copied = 0;
    while (at + copied < target.length && this.#chunks.length > 0) {
      const head = this.#chunks[0];
      const take = Math.min(target.length - at - copied, head.length - this.#off);
      target.set(head.subarray(this.#off, this.#off + take), at + copied);
      copied += take;
      this.#consume(take);
    }
    this.#bytesCopied += copied;
    return copied;
  }
}

function checkMaxPayload(value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`Invalid maxPayload ${value}: expected a non-negative integer`);
  }
  return value;
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
