/**
 * Pass-through scanning for the relay's data path. Pure; no I/O.
 *
 * In a session the relay forwards whole chunks as they arrive, without decoding or
 * copying payloads: it only follows frame headers to find frame boundaries, check each
 * type and length, and stop right after the END frame (what follows END is control
 * traffic for the relay itself, such as RELEASE).
 *
 * @module
 */

import { FrameTooLargeError, ProtocolError } from "../errors.ts";
import { ErrorCode, FrameType, HEADER_SIZE, MAX_PAYLOAD } from "./constants.ts";

/** What {@link PassthroughScanner.scan} found in a chunk. */
export interface ScanResult {
  /** Bytes `[start, forwardEnd)` of the chunk are to be forwarded as they are. */
  forwardEnd: number;
  /** True when the forwarded bytes end with a complete END frame. */
  endSeen: boolean;
}

/**
 * Follows frame boundaries across chunks. Accepts DATA and END frames only; anything
 * else in a session throws {@link ProtocolError}; a length over the maximum throws
 * {@link FrameTooLargeError}.
 *
 * @example
 * ```ts
 * import { PassthroughScanner } from "./passthrough.ts";
 * const scanner = new PassthroughScanner();
 * const chunk = new Uint8Array([0x0f, 0, 0, 0, 1, 42, 0x10, 0, 0, 0, 1, 0, 0x11, 0, 0, 0, 0]);
 * const { forwardEnd, endSeen } = scanner.scan(chunk, 0);
 * console.assert(forwardEnd === 12 && endSeen);
 * ```
 */
export class PassthroughScanner {
  /** Payload bytes of the current frame not yet seen. */
  #remaining = 0;
  /** Type of the frame whose payload is being passed. */
  #type = 0;
  /** Header bytes gathered when a header straddles two chunks. */
  readonly #header = new Uint8Array(HEADER_SIZE);
  #headerFill = 0;
  #payloadSeen = 0;

  /**
   * Payload bytes of DATA and END frames seen so far: what counts as activity (a stream of
   * empty DATA frames moves no data and must not keep a session alive).
   */
  get payloadSeen(): number {
    return this.#payloadSeen;
  }

  /** True when the scanner sits exactly on a frame boundary. */
  get atBoundary(): boolean {
    return this.#remaining === 0 && this.#headerFill === 0;
  }

  /** Scans `chunk` from `start`; see {@link ScanResult}. */
  scan(chunk: Uint8Array, start: number): ScanResult {
    let pos = start;
    const len = chunk.length;
    while (pos < len) {
      if (this.#remaining > 0) {
        const take = Math.min(this.#remaining, len - pos);
        pos += take;
        this.#remaining -= take;
        this.#payloadSeen += take;
        if (this.#remaining === 0 && this.#type === FrameType.End) {
          this.#type = 0;
          return { forwardEnd: pos, endSeen: true };
        }
        continue;
      }
      // At a header (or inside one that straddles chunks).
      let type: number;
      let length: number;
      if (this.#headerFill === 0 && len - pos >= HEADER_SIZE) {
        type = chunk[pos];
        length = ((chunk[pos + 1] << 24) | (chunk[pos + 2] << 16) | (chunk[pos + 3] << 8) |
          chunk[pos + 4]) >>> 0;
        pos += HEADER_SIZE;
      } else {
        const take = Math.min(HEADER_SIZE - this.#headerFill, len - pos);
        this.#header.set(chunk.subarray(pos, pos + take), this.#headerFill);
        this.#headerFill += take;
        pos += take;
        if (this.#headerFill < HEADER_SIZE) break;
        const h = this.#header;
        type = h[0];
        length = ((h[1] << 24) | (h[2] << 16) | (h[3] << 8) | h[4]) >>> 0;
        this.#headerFill = 0;
      }
      this.#begin(type, length);
      if (this.#remaining === 0 && type === FrameType.End) {
        return { forwardEnd: pos, endSeen: true };
      }
    }
    return { forwardEnd: pos, endSeen: false };
  }

  #begin(type: number, length: number) {
    if (length > MAX_PAYLOAD) throw new FrameTooLargeError(length, MAX_PAYLOAD);
    if (type === FrameType.End) {
      if (length !== 1) {
        throw new ProtocolError(
          `Cannot pass END: payload is ${length} bytes, expected 1`,
          ErrorCode.BadFrame,
        );
      }
    } else if (type !== FrameType.Data) {
      throw new ProtocolError(
        `Cannot pass frame type 0x${type.toString(16)} in a session: only DATA and END`,
      );
    }
    this.#type = type;
    this.#remaining = length;
  }
}
