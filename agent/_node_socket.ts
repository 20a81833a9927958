/**
 * A `node:net` socket as a {@link LocalConn}: the forwarder's local side. Deno's own
 * `TcpConn` cannot close abortively; a node socket can (`resetAndDestroy`, an RST), which
 * is how a refused tunnel tells its local client at once instead of leaving it hanging.
 *
 * Backpressure: the socket is paused while a chunk waits to be read, and each write
 * resolves only when the runtime has taken the bytes, so the caller may reuse its buffer.
 *
 * @module
 */

import type { Socket } from "node:net";
import { ConnectionClosedError } from "../shared/errors.ts";
import type { LocalConn } from "./tunnel.ts";

/** Adapts an accepted `node:net` socket (created with `allowHalfOpen: true`). */
export class NodeSocketConn implements LocalConn {
  readonly #socket: Socket;
  #chunk: Uint8Array | null = null;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;

  /** Wraps `socket` and pauses it until the first read. */
  constructor(socket: Socket) {
    this.#socket = socket;
    socket.pause();
    socket.on("data", (data: Uint8Array) => {
      this.#chunk = data;
      socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (e: Error) => {
      this.#error ??= e;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  #notify() {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** See {@link LocalConn.read}: copies the pending chunk (or its head) into `p`. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunk === null) {
      if (this.#error !== null) throw this.#error;
      if (this.#ended) return null;
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#wake = resolve;
      this.#socket.resume();
      await promise;
    }
    const chunk = this.#chunk;
    const n = Math.min(p.length, chunk.length);
    p.set(n === chunk.length ? chunk : chunk.subarray(0, n));
    this.#chunk = n === chunk.length ? null : chunk.subarray(n);
    return n;
  }

  /** See {@link LocalConn.write}. */
  write(p: Uint8Array): Promise<number> {
    if (this.#socket.destroyed) return Promise.reject(new ConnectionClosedError());
    return new Promise((resolve, reject) => {
      this.#socket.write(p, (e) => (e ? reject(e) : resolve(p.length)));
    });
  }

  /** Sends FIN. */
  closeWrite(): void {
    this.#socket.end();
  }

  /** Closes both directions. */
  close(): void {
    this.#socket.destroy();
  }

  /** Closes with an RST. */
  reset(): void {
    if (this.#socket.destroyed) return;
    this.#socket.resetAndDestroy();
  }
}
