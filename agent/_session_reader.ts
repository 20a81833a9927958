/**
 * The receiving half of a session's data path: raw reads into one reused buffer, frame
 * headers followed in place, DATA payloads handed out as views. Internal to session.ts.
 *
 * The shared `FrameDecoder` returns frames as views into the chunk it was given, so its
 * reader must allocate a fresh buffer for every read (up to 64 KiB). A session carries
 * bulk bytes, and its consumer (a socket write, a file write, a hash) is done with each
 * piece before it asks for the next; so here a DATA payload is returned as a view into
 * the one read buffer, valid until the next call, and not copied at all. DATA frames that
 * follow each other in one read are joined in place: each payload is moved down over the
 * header before it (a memmove within the buffer), so a 256 KiB read holding four frames
 * comes back as one piece and costs the consumer one write instead of five. A DATA frame
 * that straddles two reads comes back in two pieces. Only the small control frames a
 * session may carry (END, PONG, ERROR) are copied out.
 *
 * Bytes after END belong to the connection's control traffic again: they are handed
 * back to the {@link FramedConn}'s decoder.
 *
 * @module
 */

import { FrameTooLargeError, TruncatedFrameError } from "../shared/errors.ts";
import type { FramedConn } from "../shared/framed_conn.ts";
import { FrameType, HEADER_SIZE, MAX_PAYLOAD } from "../shared/protocol/constants.ts";
import { type Frame, readU32 } from "../shared/protocol/frame.ts";

/** One step of a session's inbound stream. */
export type SessionRead =
  | { kind: "data"; bytes: Uint8Array }
  | { kind: "frame"; frame: Frame };

const EMPTY = new Uint8Array(0);

/** Default read buffer: four maximum-size frames. */
export const SESSION_READ_SIZE = 4 * (HEADER_SIZE + MAX_PAYLOAD);

/**
 * The first read buffer of a session: enough for an interactive exchange. A read that
 * fills it makes the next one four times larger, up to the reader's maximum, so a
 * short session allocates 16 KiB instead of 256 KiB and bulk reaches full-size reads
 * after two reads.
 */
export const SESSION_FIRST_READ_SIZE = 16 * 1024;

/** Reads a session's frames from a framed connection without copying DATA payloads. */
export class SessionFrameReader {
  readonly #framed: FramedConn;
  readonly #maxReadSize: number;
  #buf: Uint8Array;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  /** DATA payload bytes of the current frame not handed out yet. */
  #remaining = 0;
  readonly #header = new Uint8Array(HEADER_SIZE);
  #headerFill = 0;
  /** Payload of a control frame being gathered across reads. */
  #body: Uint8Array | null = null;
  #bodyFill = 0;
  #bodyType = 0;

  /**
   * Reads from `framed` into one reused buffer, which grows from
   * {@link SESSION_FIRST_READ_SIZE} to `readSize` while reads come back full.
   */
  constructor(framed: FramedConn, readSize = SESSION_READ_SIZE) {
    this.#framed = framed;
    this.#maxReadSize = readSize;
    this.#buf = new Uint8Array(Math.min(readSize, SESSION_FIRST_READ_SIZE));
  }

  /** Bytes of a frame begun and not finished (a truncation at end of stream). */
  get #pending(): number {
    return this.#headerFill + this.#bodyFill + (this.#remaining > 0 ? 1 : 0);
  }

  /**
   * The next DATA piece (a view valid until the next call) or control frame (owned);
   * null at end of stream on a frame boundary. Throws {@link TruncatedFrameError} at end
   * of stream inside a frame, {@link FrameTooLargeError} for an oversized header.
   */
  async next(): Promise<SessionRead | null> {
    for (;;) {
      if (this.#pos === this.#chunk.length) {
        const chunk = await this.#framed.readRaw(this.#buf);
        if (chunk === null) {
          if (this.#pending > 0) throw new TruncatedFrameError(this.#pending);
          return null;
        }
        this.#chunk = chunk;
        this.#pos = 0;
        if (chunk.length === this.#buf.length && this.#buf.length < this.#maxReadSize) {
          // The views handed out from this chunk stay valid: only the next read moves.
          this.#buf = new Uint8Array(Math.min(this.#maxReadSize, this.#buf.length * 4));
        }
        continue;
      }
      const chunk = this.#chunk;
      if (this.#remaining > 0) {
        const start = this.#pos;
        let end = start + Math.min(this.#remaining, chunk.length - start);
        this.#remaining -= end - start;
        let read = end;
        // Join the DATA frames that follow in this chunk: move each payload (or the part of
        // it read so far) down over its header.
        while (
          this.#remaining === 0 && chunk.length - read >= HEADER_SIZE &&
          chunk[read] === FrameType.Data
        ) {
          const length = readU32(chunk, read + 1);
          if (length > MAX_PAYLOAD) break; // the header path below throws for it
          const have = Math.min(length, chunk.length - read - HEADER_SIZE);
          chunk.copyWithin(end, read + HEADER_SIZE, read + HEADER_SIZE + have);
          end += have;
          read += HEADER_SIZE + have;
          this.#remaining = length - have;
        }
        this.#pos = read;
        return { kind: "data", bytes: chunk.subarray(start, end) };
      }
      if (this.#body !== null) {
        const take = Math.min(this.#body.length - this.#bodyFill, chunk.length - this.#pos);
        this.#body.set(chunk.subarray(this.#pos, this.#pos + take), this.#bodyFill);
        this.#pos += take;
        this.#bodyFill += take;
        if (this.#bodyFill < this.#body.length) continue;
        const frame = { type: this.#bodyType, payload: this.#body };
        this.#body = null;
        this.#bodyFill = 0;
        return this.#control(frame);
      }
      let type: number;
      let length: number;
      if (this.#headerFill === 0 && chunk.length - this.#pos >= HEADER_SIZE) {
        type = chunk[this.#pos];
        length = readU32(chunk, this.#pos + 1);
        this.#pos += HEADER_SIZE;
      } else {
        const take = Math.min(HEADER_SIZE - this.#headerFill, chunk.length - this.#pos);
        this.#header.set(chunk.subarray(this.#pos, this.#pos + take), this.#headerFill);
        this.#pos += take;
        this.#headerFill += take;
        if (this.#headerFill < HEADER_SIZE) continue;
        this.#headerFill = 0;
        type = this.#header[0];
        length = readU32(this.#header, 1);
      }
      if (length > MAX_PAYLOAD) throw new FrameTooLargeError(length, MAX_PAYLOAD);
      if (type === FrameType.Data) {
        this.#remaining = length;
        continue;
      }
      if (chunk.length - this.#pos >= length) {
        const payload = chunk.slice(this.#pos, this.#pos + length);
        this.#pos += length;
        return this.#control({ type, payload });
      }
      this.#body = new Uint8Array(length);
      this.#bodyType = type;
    }
  }

  /** A control frame; after END the rest of the chunk goes back to the decoder. */
  #control(frame: Frame): SessionRead {
    if (frame.type === FrameType.End) {
      this.#framed.unread(this.#chunk.subarray(this.#pos));
      this.#chunk = EMPTY;
      this.#pos = 0;
    }
    return { kind: "frame", frame };
  }
}
