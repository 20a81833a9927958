/**
 * An in-memory duplex pair implementing {@link ByteConn}, for tests of framed
 * connections without sockets.
 *
 * Bytes written on one end are read on the other. Each read and write can be capped to
 * a few bytes so tests exercise short reads and partial writes, and every write first
 * awaits a microtask turn so concurrent writers get a chance to interleave (which
 * `FramedConn` must prevent).
 *
 * @example
 * ```ts
 * import { memoryPair } from "./memory_conn.ts";
 * const [a, b] = memoryPair();
 * await a.write(new Uint8Array([1, 2, 3]));
 * const buf = new Uint8Array(8);
 * console.assert((await b.read(buf)) === 3);
 * ```
 *
 * @module
 */

import type { ByteConn } from "../framed_conn.ts";

/** Options for one end of a {@link memoryPair}. */
export interface MemoryConnOptions {
  /** Most bytes a single `read` returns (default: unlimited). */
  maxRead?: number;
  /** Most bytes a single `write` accepts (default: unlimited). */
  maxWrite?: number;
}

/** One end of an in-memory duplex pair. The reading side owns `#inbox`. */
export class MemoryConn implements ByteConn {
  /** Chunks written by the peer and not read yet; `#inboxOff` is consumed in `#inbox[0]`. */
  #inbox: Uint8Array[] = [];
  #inboxOff = 0;
  /** Set when the peer closed: reads return null once the inbox is drained. */
  #peerClosed = false;
  #closed = false;
  /** A read waiting for data; woken by the peer's write or either side's close. */
  #wake: (() => void) | null = null;
  /** An error the next read rejects with (see {@link failNextRead}). */
  #readError: unknown = null;
  #peer: MemoryConn | null = null;
  readonly #maxRead: number;
  readonly #maxWrite: number;
  /** Every byte this end accepted in `write`, one entry per call, for inspection. */
  readonly written: Uint8Array[] = [];

  /** Creates an unconnected end; use {@link memoryPair}. */
  constructor(options: MemoryConnOptions = {}) {
    this.#maxRead = options.maxRead ?? Infinity;
    this.#maxWrite = options.maxWrite ?? Infinity;
  }

  /** Links two ends; called by {@link memoryPair}. */
  static link(a: MemoryConn, b: MemoryConn): void {
    a.#peer = b;
    b.#peer = a;
  }

  /** True once {@link close} ran on this end. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Makes the next `read` reject with `error` (a simulated socket failure). */
  failNextRead(error: unknown): void {
    this.#readError = error;
    this.#wakeReader();
  }

  /** Reads up to `p.length` (and `maxRead`) bytes; null at end of stream. */
  async read(p: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#readError !== null) {
        const e = this.#readError;
        this.#readError = null;
        throw e;
      }
      if (this.#closed) throw new Deno.errors.BadResource("Cannot read: connection closed");
      if (this.#inbox.length > 0) break;
      if (this.#peerClosed) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    const head = this.#inbox[0];
    const n = Math.min(p.length, this.#maxRead, head.length - this.#inboxOff);
    p.set(head.subarray(this.#inboxOff, this.#inboxOff + n));
    this.#inboxOff += n;
    if (this.#inboxOff === head.length) {
      this.#inbox.shift();
      this.#inboxOff = 0;
    }
    return n;
  }

  /** Writes up to `maxWrite` bytes of `p` to the peer, after a microtask turn. */
  async write(p: Uint8Array): Promise<number> {
    await Promise.resolve();
    if (this.#closed) throw new Deno.errors.BadResource("Cannot write: connection closed");
    const peer = this.#peer;
    if (peer === null || peer.#closed) {
      throw new Deno.errors.BrokenPipe("Cannot write: peer closed");
    }
    const n = Math.min(p.length, this.#maxWrite);
    if (n === 0) return 0;
    const copy = p.slice(0, n);
    this.written.push(copy);
    peer.#inbox.push(copy);
    peer.#wakeReader();
    return n;
  }

  /** Closes this end: its pending read fails, the peer reads end of stream. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeReader();
    if (this.#peer !== null) {
      this.#peer.#peerClosed = true;
      this.#peer.#wakeReader();
    }
  }

  #wakeReader() {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/** Creates two linked ends: what one writes, the other reads. */
export function memoryPair(
  a: MemoryConnOptions = {},
  b: MemoryConnOptions = {},
): [MemoryConn, MemoryConn] {
  const left = new MemoryConn(a);
  const right = new MemoryConn(b);
  MemoryConn.link(left, right);
  return [left, right];
}
