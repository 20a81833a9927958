/**
 * A session as a device sees it: a byte stream to the peer device over a dedicated
 * relay connection, with a half-close (END) each way and a RELEASE that returns the
 * connection to idle.
 *
 * One task reads (`read`), any task may write (`write`, `end`); writes are serialised.
 *
 * @module
 */

import { ConnectionClosedError, ProtocolError, RelayError } from "../shared/errors.ts";
import { EndReason, FrameType, HEADER_SIZE, MAX_PAYLOAD } from "../shared/protocol/constants.ts";
import { writeHeader } from "../shared/protocol/frame.ts";
import { decodeMessage } from "../shared/protocol/messages.ts";
import type { RelayConnection } from "./relay_client.ts";

/** The peer ended the session abnormally (its side vanished or broke the protocol). */
export class SessionAbortedError extends Error {
  /** Creates the error. */
  constructor(message = "The peer's side of the session was aborted") {
    super(message);
    this.name = "SessionAbortedError";
  }
}

/** A live session. */
export class Session {
  /** The relay connection dedicated to this session. */
  readonly connection: RelayConnection;
  /** Session ID from the relay. */
  readonly id: string;
  /** The peer device's ID. */
  readonly peer: string;
  #sentEnd = false;
  #receivedEnd: EndReason | null = null;
  #released = false;

  /** Binds a session to its connection; made by `RelayConnection.connect`/`accept`. */
  constructor(connection: RelayConnection, id: string, peer: string) {
    this.connection = connection;
    this.id = id;
    this.peer = peer;
  }

  /** True once the peer's END arrived. */
  get peerEnded(): boolean {
    return this.#receivedEnd !== null;
  }

  /** True if the peer's END said the session was aborted. */
  get aborted(): boolean {
    return this.#receivedEnd === EndReason.Aborted;
  }

  /**
   * Next bytes from the peer, or null once the peer ended normally. Throws
   * {@link SessionAbortedError} if it ended abnormally, {@link ConnectionClosedError} if the
   * relay connection dropped. The returned view is the caller's.
   */
  async read(): Promise<Uint8Array | null> {
    if (this.#receivedEnd !== null) return this.#endResult();
    const framed = this.connection.framed;
    for (;;) {
      const frame = await framed.readFrame();
      if (frame === null) throw new ConnectionClosedError("Relay connection closed mid-session");
      switch (frame.type) {
        case FrameType.Data:
          if (frame.payload.length === 0) continue;
          return frame.payload;
        case FrameType.End:
          this.#receivedEnd = frame.payload[0] === EndReason.Aborted
            ? EndReason.Aborted
            : EndReason.Normal;
          return this.#endResult();
        case FrameType.Pong:
          continue; // answer to a ping sent just before the session began
        case FrameType.Error: {
          const m = decodeMessage(frame);
          if (m.kind === "error") throw new RelayError(m.code, m.message);
          throw new ProtocolError("Malformed ERROR frame in session");
        }
        default:
          throw new ProtocolError(`Unexpected frame type 0x${frame.type.toString(16)} in session`);
      }
    }
  }

  #endResult(): null {
    if (this.#receivedEnd === EndReason.Aborted) throw new SessionAbortedError();
    return null;
  }

  /** Sends bytes to the peer (split into DATA frames). Waits for the socket. */
  async write(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length; off += MAX_PAYLOAD) {
      const piece = bytes.subarray(off, Math.min(bytes.length, off + MAX_PAYLOAD));
      const frame = new Uint8Array(HEADER_SIZE + piece.length);
      writeHeader(frame, 0, FrameType.Data, piece.length);
      frame.set(piece, HEADER_SIZE);
      await this.#writeFrame(frame);
    }
  }

  /**
   * Sends `length` bytes already placed at `buffer[HEADER_SIZE..]` without copying: the
   * first {@link HEADER_SIZE} bytes of `buffer` are overwritten with the frame header.
   */
  async writeInPlace(buffer: Uint8Array, length: number): Promise<void> {
    if (length > MAX_PAYLOAD) throw new RangeError(`DATA payload ${length} exceeds ${MAX_PAYLOAD}`);
    writeHeader(buffer, 0, FrameType.Data, length);
    await this.#writeFrame(buffer.subarray(0, HEADER_SIZE + length));
  }

  #writeFrame(frame: Uint8Array): Promise<void> {
    if (this.#sentEnd) throw new ProtocolError("Cannot write after end()");
    return this.connection.framed.write(frame);
  }

  /** Half-closes: tells the peer no more data comes from this side. Idempotent. */
  async end(reason: EndReason = EndReason.Normal): Promise<void> {
    if (this.#sentEnd) return;
    this.#sentEnd = true;
    await this.connection.framed.send({ kind: "end", reason });
  }

  /**
   * Finishes the session: sends END if not yet sent, reads (and drops) the peer's data
   * until its END, then RELEASE. The connection is idle again afterwards.
   */
  async release(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#released) return;
    await this.end();
    while (this.#receivedEnd === null) {
      options.signal?.throwIfAborted();
      try {
        await this.read();
      } catch (e) {
        if (!(e instanceof SessionAbortedError)) throw e;
      }
    }
    this.#released = true;
    await this.connection.framed.send({ kind: "release" });
  }
}
