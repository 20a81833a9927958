/**
 * A session as a device sees it: a byte stream to the peer device over a dedicated
 * relay connection, with a half-close (END) each way and a RELEASE that returns the
 * connection to idle.
 *
 * One task reads (`read`, `readView`, or the `readable` stream), any task may write
 * (`write`, `end`, or the `writable` stream); writes are serialised. `readView` is the
 * zero-copy path: DATA payloads come back as views into one reused read buffer (see
 * _session_reader.ts), so a pump that writes each piece before asking for the next moves
 * bytes without allocating.
 *
 * Every wait has a deadline. While a read or write is pending, the session must make
 * progress (a frame in, a write done) at least every `idleTimeoutMs`; otherwise the
 * connection is closed and the pending call fails with {@link SessionTimeoutError}.
 * {@link Session.release} has an overall deadline of its own. The idle timer is owned
 * here and only closes the connection; the read loop turns that close into the error.
 *
 * @module
 */

import {
  ConnectionClosedError,
  ProtocolError,
  RelayError,
  TransferAbortedError,
  TruncatedFrameError,
} from "../shared/errors.ts";
import { EndReason, FrameType, HEADER_SIZE, MAX_PAYLOAD } from "../shared/protocol/constants.ts";
import { writeHeader } from "../shared/protocol/frame.ts";
import { decodeMessage } from "../shared/protocol/messages.ts";
import { type Clock, systemClock } from "./clock.ts";
import type { FramedConn } from "../shared/framed_conn.ts";
import { SessionFrameReader, type SessionRead } from "./_session_reader.ts";

/**
 * What a session needs of its relay connection (a `RelayConnection` is one); declared
 * here so that the session does not import the client that creates it.
 */
export interface SessionConnection {
  /** The framed socket the session runs on. */
  readonly framed: FramedConn;
  /** Closes the connection. */
  close(): void;
}

/** Default for {@link SessionOptions.idleTimeoutMs}: 2 minutes. */
export const DEFAULT_SESSION_IDLE_MS = 120_000;

/** Default overall deadline of {@link Session.release}: 30 seconds. */
export const DEFAULT_RELEASE_MS = 30_000;

/** Deadlines of a session. */
export interface SessionOptions {
  /** A pending read or write must make progress this often, ms (default 2 min; 0 = never). */
  idleTimeoutMs?: number;
  /** Time source for the deadlines (default {@link systemClock}). */
  clock?: Clock;
}

/** A session made no progress within its deadline; its connection was closed. */
export class SessionTimeoutError extends TransferAbortedError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SessionTimeoutError";
  }
}

/** The peer ended the session abnormally (its side vanished or broke the protocol). */
export class SessionAbortedError extends Error {
  /** Creates the error. */
  constructor(message = "The peer's side of the session was aborted") {
    super(message);
    this.name = "SessionAbortedError";
  }
}

/** How a session finished: released (its connection is idle again) or closed. */
export type SessionOutcome = "released" | "closed";

/**
 * A live session: a byte stream to the peer device, usable three ways: `read`/`write`,
 * the zero-copy `readView`/`writeInPlace`, or `readable`/`writable` web streams (closing
 * `writable` sends END, a half-close; `readable` ends at the peer's END).
 *
 * @example
 * ```ts ignore
 * // Echo service: everything the peer sends comes back, then both sides END.
 * const session = await request.accept();
 * await session.readable.pipeTo(session.writable);
 * await session.release();
 * ```
 */
export class Session implements AsyncDisposable {
  /** The relay connection dedicated to this session. */
  readonly connection: SessionConnection;
  /** Session ID from the relay. */
  readonly id: string;
  /** The peer device's ID. */
  readonly peer: string;
  #sentEnd = false;
  #receivedEnd: EndReason | null = null;
  #released = false;
  readonly #idleTimeoutMs: number;
  readonly #clock: Clock;
  /** Reads and writes in progress; the idle timer runs while this is above 0. */
  #busy = 0;
  #idleTimer: unknown;
  /** Clock time of the last progress (an operation starting from quiet, or completing). */
  #progressAt = 0;
  /** Set (with the reason) when a deadline closed the connection. */
  #expired: string | null = null;
  readonly #reader: SessionFrameReader;
  readonly #done = Promise.withResolvers<SessionOutcome>();
  #readable: ReadableStream<Uint8Array> | null = null;
  #writable: WritableStream<Uint8Array> | null = null;

  /** Binds a session to its connection; made by `RelayConnection.connect`/`accept`. */
  constructor(
    connection: SessionConnection,
    id: string,
    peer: string,
    options: SessionOptions = {},
  ) {
    this.connection = connection;
    this.id = id;
    this.peer = peer;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_SESSION_IDLE_MS;
    this.#clock = options.clock ?? systemClock;
    this.#reader = new SessionFrameReader(connection.framed);
  }

  /** Resolves once the session was released or its connection closed, whichever first. */
  get done(): Promise<SessionOutcome> {
    return this.#done.promise;
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
   * relay connection dropped. The returned bytes are the caller's (a copy).
   */
  async read(): Promise<Uint8Array | null> {
    const view = await this.readView();
    return view === null ? null : view.slice();
  }

  /**
   * Like {@link read}, without a copy: the bytes are a view into the session's read
   * buffer and valid only until the next read. A DATA frame may come in several pieces.
   */
  async readView(): Promise<Uint8Array | null> {
    if (this.#receivedEnd !== null) return this.#endResult();
    for (;;) {
      const step = await this.#guard(() => this.#next());
      if (step === null) throw new ConnectionClosedError("Relay connection closed mid-session");
      if (step.kind === "data") {
        if (step.bytes.length === 0) continue;
        return step.bytes;
      }
      const frame = step.frame;
      switch (frame.type) {
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

  async #next(): Promise<SessionRead | null> {
    try {
      return await this.#reader.next();
    } catch (e) {
      if (!(e instanceof TruncatedFrameError)) throw e;
      // The relay closes a session outright when the peer died in the middle of a frame.
      throw new TransferAbortedError(
        "Relay closed the session in the middle of a frame: the peer's side failed",
        { cause: e },
      );
    }
  }

  /**
   * The peer's bytes as a stream (each chunk the reader's own); it closes at the peer's
   * END and errors as {@link read} throws. Do not mix with `read`/`readView`.
   */
  get readable(): ReadableStream<Uint8Array> {
    this.#readable ??= new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const bytes = await this.read();
        if (bytes === null) controller.close();
        else controller.enqueue(bytes);
      },
      cancel: () => this.close(),
    }, { highWaterMark: 0 });
    return this.#readable;
  }

  /**
   * A stream to the peer: each write waits for the socket (backpressure); `close()` sends
   * END (a half-close), `abort()` sends END(aborted).
   */
  get writable(): WritableStream<Uint8Array> {
    this.#writable ??= new WritableStream<Uint8Array>({
      write: (chunk) => this.write(chunk),
      close: () => this.end(),
      abort: () => this.end(EndReason.Aborted).catch(() => this.close()),
    });
    return this.#writable;
  }

  /**
   * Runs one read or write under the idle deadline: the deadline starts when the first
   * operation starts and moves whenever one completes. Progress only records the time;
   * one timer per quiet spell checks it (no timer churn per chunk).
   */
  async #guard<T>(op: () => Promise<T>): Promise<T> {
    if (this.#expired !== null) throw new SessionTimeoutError(this.#expired);
    if (this.#busy++ === 0) {
      this.#progressAt = this.#clock.now();
      this.#arm(this.#idleTimeoutMs);
    }
    try {
      const value = await op();
      // A close by the deadline can look like a clean end of stream to the read.
      if (this.#expired !== null) throw new SessionTimeoutError(this.#expired);
      this.#progressAt = this.#clock.now();
      return value;
    } catch (e) {
      // A dead connection ends the session for whoever waits on `done` (a pool).
      if (this.connection.framed.closed) this.#done.resolve("closed");
      if (this.#expired !== null) throw new SessionTimeoutError(this.#expired, { cause: e });
      throw e;
    } finally {
      if (--this.#busy === 0) this.#disarm();
    }
  }

  #arm(ms: number) {
    if (this.#idleTimeoutMs <= 0 || this.#idleTimer !== undefined) return;
    this.#idleTimer = this.#clock.setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.#busy === 0) return;
      const quietMs = this.#clock.now() - this.#progressAt;
      if (quietMs < this.#idleTimeoutMs) this.#arm(this.#idleTimeoutMs - quietMs);
      else {
        this.#expire(
          `Session with ${this.peer} made no progress for ${
            formatSeconds(this.#idleTimeoutMs)
          }: connection closed`,
        );
      }
    }, ms);
  }

  #disarm() {
    if (this.#idleTimer !== undefined) this.#clock.clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  #expire(message: string) {
    if (this.#expired !== null) return;
    this.#expired = message;
    this.connection.close(); // wakes the pending read or write, which reports the timeout
    this.#done.resolve("closed");
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
    return this.#guard(() => this.connection.framed.write(frame));
  }

  /** Half-closes: tells the peer no more data comes from this side. Idempotent. */
  async end(reason: EndReason = EndReason.Normal): Promise<void> {
    if (this.#sentEnd) return;
    this.#sentEnd = true;
    await this.#guard(() => this.connection.framed.send({ kind: "end", reason }));
  }

  /** Same as {@link end}: the `Deno.Conn` name for a half-close. */
  closeWrite(): Promise<void> {
    return this.end();
  }

  /**
   * Drops the session: closes its relay connection (the relay tells the peer
   * END(aborted), or closes its side mid-frame). For a clean finish use {@link release}.
   */
  close(): void {
    this.connection.close();
    this.#done.resolve("closed");
  }

  /** Releases the session within the release deadline, or closes it if that fails. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#released || this.connection.framed.closed) return this.close();
    try {
      await this.release();
    } catch {
      this.close();
    }
  }

  /**
   * Finishes the session: sends END if not yet sent, reads (and drops) the peer's data
   * until its END, then RELEASE. The connection is idle again afterwards. Fails with
   * {@link SessionTimeoutError} (connection closed) if that takes longer than
   * `timeoutMs` (default 30 s); aborting `signal` closes the connection too.
   */
  async release(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    if (this.#released) return;
    const { signal } = options;
    signal?.throwIfAborted();
    const timeoutMs = options.timeoutMs ?? DEFAULT_RELEASE_MS;
    const timer = this.#clock.setTimeout(
      () =>
        this.#expire(`Session with ${this.peer} did not end within ${formatSeconds(timeoutMs)}`),
      timeoutMs,
    );
    const onAbort = () => this.connection.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await this.end();
      while (this.#receivedEnd === null) {
        try {
          await this.read();
        } catch (e) {
          signal?.throwIfAborted();
          if (!(e instanceof SessionAbortedError)) throw e;
        }
      }
      await this.#guard(() => this.connection.framed.send({ kind: "release" }));
      this.#released = true;
      this.#done.resolve("released");
    } catch (e) {
      this.#done.resolve("closed");
      throw e;
    } finally {
      this.#clock.clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

function formatSeconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}
