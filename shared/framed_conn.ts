/**
 * A framed connection: reads frames and messages, writes them one at a time.
 *
 * It wraps anything shaped like a `Deno.Conn` (`read`, `write`, `close`), so tests can
 * use an in-memory pair. One loop owns reading; writes may come from several tasks and
 * are serialised so frames never interleave. The first I/O error kills the connection:
 * it is kept and rethrown to every later caller.
 *
 * Outbound frame boundary: pass-through bytes ({@link FramedConn.writePassthrough}) may
 * end inside a frame. A frame of our own written then would land inside the peer's
 * half-forwarded frame and corrupt the stream, so `write`/`send` refuse it: they close
 * the connection instead and put nothing on the wire.
 *
 * @module
 */

import { ConnectionClosedError } from "./errors.ts";
import { type Frame, FrameDecoder } from "./protocol/frame.ts";
import { decodeMessage, encodeMessage, type Message } from "./protocol/messages.ts";

/** The byte-stream surface a framed connection needs; `Deno.Conn` satisfies it. */
export interface ByteConn {
  /** Reads into `p`; resolves to the byte count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to the byte count written. */
  write(p: Uint8Array): Promise<number>;
  /** Closes both directions. */
  close(): void;
}

/** Options for {@link FramedConn}. */
export interface FramedConnOptions {
  /** Bytes requested per read, at least (default 4096); grows while reads come back full. */
  readSize?: number;
  /** Largest read size it grows to (default 64 KiB + a header). */
  maxReadSize?: number;
  /**
   * Largest inbound payload accepted (default `MAX_PAYLOAD`); start small before login
   * and raise it with {@link FramedConn.setMaxPayload}.
   */
  maxPayload?: number;
}

/**
 * Integrity for every frame of a connection (relay links: relay/mesh/link_seal.ts).
 * `seal` runs when a frame is queued, in wire order; `open` on every frame read.
 */
export interface FrameSeal {
  /** Largest payload the decoder must accept once sealed. */
  readonly maxPayload: number;
  /** Wraps one whole encoded frame. */
  seal(frame: Uint8Array): Uint8Array;
  /** Checks and unwraps one received frame; throws when it fails. */
  open(frame: Frame): Frame;
}

/** Writes every byte of `bytes` to `conn`. */
export async function writeAll(conn: ByteConn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(off === 0 ? bytes : bytes.subarray(off));
}

/** True for the errors a socket raises when it was closed under a pending operation. */
export function isClosedError(e: unknown): boolean {
  return e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted ||
    e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe ||
    e instanceof Deno.errors.NotConnected || e instanceof Deno.errors.ConnectionAborted ||
    e instanceof ConnectionClosedError;
}

/** A connection that speaks tsunagi frames. See the module doc for ownership rules. */
export class FramedConn {
  /** The underlying byte connection. */
  readonly conn: ByteConn;
  readonly #decoder: FrameDecoder;
  #readSize: number;
  readonly #minReadSize: number;
  #maxReadSize: number;
  /** Tail of the write chain; each write waits for the previous one. */
  #writeTail: Promise<void> = Promise.resolve();
  #error: unknown = null;
  #closed = false;
  #eof = false;
  /** A read started by {@link fill}, which the next read waits for. */
  #filling: Promise<void> | null = null;
  /**
   * Whether the outbound stream, after every write queued so far, sits on a frame
   * boundary. Set at call time: writes run in call order, so the state a new write will
   * find on the wire is the state the last queued write left.
   */
  #outboundAtBoundary = true;
  #seal: FrameSeal | null = null;

  /** Wraps `conn`. */
  constructor(conn: ByteConn, options: FramedConnOptions = {}) {
    this.conn = conn;
    this.#readSize = this.#minReadSize = options.readSize ?? 4096;
    this.#maxReadSize = Math.max(this.#minReadSize, options.maxReadSize ?? 64 * 1024 + 5);
    this.#decoder = new FrameDecoder({ maxPayload: options.maxPayload });
  }

  /**
   * Sets the largest inbound payload accepted, e.g. raised after a successful login, and
   * optionally the largest read size (a connection not logged in reads small).
   */
  setMaxPayload(n: number, maxReadSize?: number): void {
    this.#decoder.maxPayload = n;
    if (maxReadSize !== undefined) {
      this.#maxReadSize = Math.max(this.#minReadSize, maxReadSize);
      this.#readSize = Math.min(this.#readSize, this.#maxReadSize);
    }
  }

  /**
   * Seals every later frame written with {@link write}/{@link send} and opens every later
   * frame read; pass-through bytes are not touched. A frame that fails to open kills the
   * connection.
   */
  setSeal(seal: FrameSeal): void {
    this.#seal = seal;
    this.#decoder.maxPayload = Math.max(this.#decoder.maxPayload, seal.maxPayload);
  }

  /** True when the outbound stream, after every write queued so far, is on a frame boundary. */
  get outboundAtBoundary(): boolean {
    return this.#outboundAtBoundary;
  }

  /** True once {@link close} ran or an I/O error occurred. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Reads the next frame; null at a clean end of stream (on a frame boundary).
   *
   * Written as a promise chain, not an `async` function: an idle connection waits here
   * for hours, and each suspended async frame costs memory on a relay holding 10,000.
   */
  readFrame(): Promise<Frame | null> {
    try {
      const frame = this.#decoder.next();
      if (frame !== null) return Promise.resolve(this.#open(frame));
      if (this.#eof) {
        this.#decoder.finish();
        return Promise.resolve(null);
      }
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#filling !== null) return this.#filling.then(() => this.readFrame());
    const buf = new Uint8Array(this.#readSize);
    return this.#read(buf).then((n) => {
      if (n === null) {
        this.#eof = true;
      } else {
        this.#decoder.append(buf.subarray(0, n));
        // Adapt the read size: an idle connection holds only a small pending buffer, a
        // busy one grows it (a full read means more was waiting).
        if (n === buf.length) this.#readSize = Math.min(this.#readSize * 2, this.#maxReadSize);
        else if (n < buf.length / 4) {
          this.#readSize = Math.max(this.#readSize >> 1, this.#minReadSize);
        }
      }
      return this.readFrame();
    });
  }

  #open(frame: Frame): Frame {
    if (this.#seal === null) return frame;
    try {
      return this.#seal.open(frame);
    } catch (e) {
      this.#fail(e);
      throw e;
    }
  }

  /** Reads and decodes the next message; null at a clean end of stream. */
  readMessage(): Promise<Message | null> {
    return this.readFrame().then((frame) => frame === null ? null : decodeMessage(frame));
  }

  /**
   * Raw read for pass-through: first returns bytes already buffered by the decoder, then
   * reads from the socket into `buf`. Null at end of stream.
   */
  async readRaw(buf: Uint8Array): Promise<Uint8Array | null> {
    if (this.#filling !== null) await this.#filling;
    if (this.#decoder.pendingBytes > 0) return this.#decoder.takeRest();
    if (this.#eof) return null;
    const n = await this.#read(buf);
    if (n === null) {
      this.#eof = true;
      return null;
    }
    return buf.subarray(0, n);
  }

  /**
   * Reads from the socket into the buffer now, for whichever read comes next, and
   * resolves once bytes are buffered or the stream ended or failed (at once if bytes are
   * buffered already). It lets a connection that nobody reads at the moment notice that
   * its peer sent something or went away; the next {@link readFrame} or {@link readRaw}
   * takes what it read.
   */
  fill(): Promise<void> {
    if (this.#filling !== null) return this.#filling;
    if (this.#decoder.pendingBytes > 0 || this.#eof || this.#closed || this.#error !== null) {
      return Promise.resolve();
    }
    const buf = new Uint8Array(this.#minReadSize);
    this.#filling = this.#read(buf).then((n) => {
      if (n === null) this.#eof = true;
      else this.#decoder.append(buf.subarray(0, n));
    }, () => {
      // The error is kept (#fail): the next read reports it.
    }).finally(() => {
      this.#filling = null;
    });
    return this.#filling;
  }

  /** Gives bytes back to the decoder (what followed END in a pass-through chunk). */
  unread(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    const rest = this.#decoder.takeRest();
    if (rest.length === 0) {
      this.#decoder.append(bytes.slice());
    } else {
      this.#decoder.append(bytes.slice());
      this.#decoder.append(rest);
    }
  }

  #read(buf: Uint8Array): Promise<number | null> {
    if (this.#error !== null) return Promise.reject(this.#error);
    return this.conn.read(buf).catch((e) => {
      if (this.#closed || isClosedError(e)) return null;
      this.#fail(e);
      throw e;
    });
  }

  /**
   * Writes raw bytes (whole frames), after any writes already queued. If the outbound
   * stream is inside a half-forwarded frame, nothing is written: the connection is closed
   * and the promise rejects with {@link ConnectionClosedError}.
   */
  write(bytes: Uint8Array): Promise<void> {
    if (!this.#outboundAtBoundary) {
      const e = new ConnectionClosedError(
        "Cannot write frame: it would land inside a half-forwarded frame; closing the connection",
      );
      this.#fail(e);
      return Promise.reject(e);
    }
    if (this.#seal === null) return this.#enqueue(bytes);
    let sealed: Uint8Array;
    try {
      sealed = this.#seal.seal(bytes);
    } catch (e) {
      this.#fail(e);
      return Promise.reject(e);
    }
    return this.#enqueue(sealed);
  }

  /**
   * Forwards pass-through bytes, queued like {@link write}. `endsAtBoundary` says whether
   * the outbound stream sits on a frame boundary after them (the caller's scanner knows).
   */
  writePassthrough(bytes: Uint8Array, endsAtBoundary: boolean): Promise<void> {
    this.#outboundAtBoundary = endsAtBoundary;
    return this.#enqueue(bytes);
  }

  #enqueue(bytes: Uint8Array): Promise<void> {
    const run = this.#writeTail.then(async () => {
      if (this.#error !== null) throw this.#error;
      if (this.#closed) throw new ConnectionClosedError();
      try {
        await writeAll(this.conn, bytes);
      } catch (e) {
        this.#fail(e);
        throw isClosedError(e) ? new ConnectionClosedError(undefined, { cause: e }) : e;
      }
    });
    this.#writeTail = run.catch(() => {});
    return run;
  }

  /** Encodes and writes a message. */
  send(message: Message): Promise<void> {
    return this.write(encodeMessage(message));
  }

  /** Sends a message and swallows failure: for best-effort notices before a close. */
  async trySend(message: Message): Promise<void> {
    try {
      await this.send(message);
    } catch {
      // The connection is already gone; nothing left to tell.
    }
  }

  /** Waits until every queued write has finished (or failed). */
  flush(): Promise<void> {
    return this.#writeTail;
  }

  #fail(e: unknown) {
    if (this.#error === null) this.#error = e;
    this.close();
  }

  /** Closes the connection; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed by the runtime.
    }
  }
}
