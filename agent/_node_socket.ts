/**
 * A `node:net` socket as a {@link LocalConn}: the local side of a tunnel, on the forwarder
 * and on the device. Deno's own `TcpConn` cannot close abortively (its `close()` shuts the
 * write side down first: a FIN); a node socket can (`resetAndDestroy`, an RST). That is
 * how a refused tunnel tells its local client at once, and how a tunnel that breaks
 * midway tells the program at each end that the stream was cut, not ended: a printer
 * must not print half a job because its connection closed normally.
 *
 * Backpressure: the socket is paused while a chunk waits to be read, and each write
 * resolves only when the runtime has taken the bytes, so the caller may reuse its buffer.
 *
 * A half-close by a program that never sent a byte. Deno's `node:net` (2.9.6; its libuv
 * stand-in, deno_core's `uv_compat`) fails every queued write with EPIPE once the peer's
 * FIN is in, if that socket has never received a byte, `allowHalfOpen` or not: it takes
 * such a FIN for a dead peer. Writes queue whenever the program reads slower than the
 * tunnel delivers, so a stream toward a program that shut its write side without sending
 * anything (a download-only client, a server that never speaks) was cut after a few MiB,
 * and the polyfill then closed the socket with a FIN: a normal end. So at such a FIN, the
 * rest of the stream toward that program moves to a native `Deno.TcpConn`
 * ({@link adoptStream}), which writes after a FIN like any TCP socket. The price: from then
 * on a tunnel failure can only close that connection (a FIN), not reset it. A program that
 * sent at least one byte keeps its node socket (the runtime lets those write after a FIN),
 * and with it the RST.
 *
 * Not covered: a FIN that comes while a write toward such a program is already queued in
 * the runtime (the program read nothing for a while, then half-closed). The runtime's poll
 * (`poll_tcp_handle`) reads the EOF, stops reading, and in the same pass peeks the socket
 * because writes wait and no byte was ever received: the peek sees the FIN and every queued
 * write fails with EPIPE before any JavaScript runs. Keeping the socket reading does not
 * help (reading the EOF is what stops it), and the bytes of a queued write that reached the
 * kernel are not reported, so the rest cannot be resent elsewhere; such a connection is reset.
 *
 * @module
 */

import net, { type Socket } from "node:net";
import type { HostPort } from "../shared/address.ts";
import { ConnectionClosedError } from "../shared/errors.ts";
import type { LocalConn } from "./_local_conn.ts";

/**
 * Adapts an accepted or connected `node:net` socket (created with `allowHalfOpen: true`).
 *
 * Owned by the tunnel's two loops: the reader (`read`) and the writer (`write`,
 * `closeWrite`); at most one write is in flight. The move to a native connection starts
 * from the socket's "end" event and waits for that write to settle first.
 */
export class NodeSocketConn implements LocalConn {
  readonly #socket: Socket;
  #chunk: Uint8Array | null = null;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  /** Whether the program has sent any byte: decides the move at its FIN. */
  #received = false;
  /** The last write handed to the node socket (settled or not). */
  #writing: Promise<number> = Promise.resolve(0);
  /** Set at a FIN from a program that sent nothing; settles once the stream moved (or not). */
  #moving: Promise<void> | null = null;
  /** The stream once moved to a native connection. */
  #moved: Deno.TcpConn | null = null;
  #closed = false;

  /** Wraps `socket` and pauses it until the first read. */
  constructor(socket: Socket) {
    this.#socket = socket;
    resetOnError(socket);
    socket.pause();
    socket.on("data", (data: Uint8Array) => {
      this.#received = true;
      this.#chunk = data;
      socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      if (!this.#received && !socket.writableEnded) {
        this.#moving = this.#moveToNative().catch(() => {}); // not moved: the node socket stays
      }
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

  /** Moves the stream to a native connection once the write in flight has settled. */
  async #moveToNative(): Promise<void> {
    // A write that was queued when the FIN came in fails (EPIPE): the socket then resets
    // (see resetOnError) and nothing moves; the tunnel fails on that write.
    await this.#writing.catch(() => {});
    if (this.#closed || this.#socket.destroyed || this.#socket.writableEnded) return;
    const conn = await adoptStream(this.#socket);
    if (conn === null) return;
    if (this.#closed) conn.close();
    else this.#moved = conn;
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
  async write(p: Uint8Array): Promise<number> {
    if (this.#moving !== null) await this.#moving;
    if (this.#moved !== null) return await this.#moved.write(p);
    if (this.#socket.destroyed) throw new ConnectionClosedError();
    const written = new Promise<number>((resolve, reject) => {
      this.#socket.write(p, (e) => (e ? reject(e) : resolve(p.length)));
    });
    this.#writing = written;
    return await written;
  }

  /** Sends FIN. */
  async closeWrite(): Promise<void> {
    if (this.#moving !== null) await this.#moving;
    if (this.#moved !== null) return await this.#moved.closeWrite();
    this.#socket.end();
  }

  /** Closes both directions. */
  close(): void {
    this.#closed = true;
    this.#moved?.close();
    this.#moved = null;
    this.#socket.destroy();
  }

  /** Closes with an RST; once the stream has moved to a native connection, with a FIN. */
  reset(): void {
    if (this.#moved !== null) return this.close();
    this.#closed = true; // a move still under way closes what it moved
    if (this.#socket.destroyed) return;
    this.#socket.resetAndDestroy();
  }
}

/**
 * Makes the polyfill's own destroy on a socket error an RST. A failed write (or read)
 * destroys the socket at once, before any listener runs, and a plain destroy closes with
 * a FIN: the program would take a cut stream for a finished one. Relies on the polyfill's
 * `_destroy` honouring `_resetAndClosing` (what `resetAndDestroy` sets); elsewhere it
 * changes nothing.
 */
function resetOnError(socket: Socket) {
  // deno-lint-ignore no-explicit-any
  const s = socket as any;
  const destroy = s._destroy;
  if (typeof destroy !== "function") return;
  s._destroy = function (error: Error | null, callback: (error?: Error | null) => void) {
    if (error) this._resetAndClosing = true;
    return destroy.call(this, error, callback);
  };
}

/** `Deno.TcpConn`'s class (not exported by the runtime), taken from a loopback pair once. */
let tcpConnClass: Promise<TcpConnClass | null> | null = null;

type TcpConnClass = new (rid: number, remote: Deno.NetAddr, local: Deno.NetAddr) => Deno.TcpConn;

async function findTcpConnClass(): Promise<TcpConnClass | null> {
  try {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const dialed = Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    using accepted = await listener.accept();
    using _ = await dialed;
    return Object.getPrototypeOf(accepted).constructor as TcpConnClass;
  } catch {
    return null;
  }
}

/**
 * Moves a `node:net` socket's stream into a native `Deno.TcpConn`, whose reads cost about
 * a quarter of `node:net`'s on this runtime; the node socket is destroyed and must not be
 * used again. The socket must hold no unread data and no unfinished write: an accepted
 * socket paused since it connected, or one whose peer sent FIN and whose writes settled.
 * Relies on runtime internals (`TCPWrap.takeStream`, the `TcpConn` class): returns null
 * where they are missing, and the caller keeps the node socket ({@link NodeSocketConn}).
 */
export async function adoptStream(socket: Socket): Promise<Deno.TcpConn | null> {
  tcpConnClass ??= findTcpConnClass();
  const TcpConn = await tcpConnClass;
  // deno-lint-ignore no-explicit-any
  const handle = (socket as any)._handle;
  if (TcpConn === null || typeof handle?.takeStream !== "function" || socket.destroyed) {
    return null;
  }
  const address = (hostname: string | undefined, port: number | undefined): Deno.NetAddr => ({
    transport: "tcp",
    hostname: hostname ?? "",
    port: port ?? 0,
  });
  const remote = address(socket.remoteAddress, socket.remotePort);
  const local = address(socket.localAddress, socket.localPort);
  let rid: unknown;
  try {
    rid = handle.takeStream();
  } catch {
    return null;
  }
  if (typeof rid !== "number") return null;
  socket.destroy(); // the stream is gone from it; this only releases the wrapper
  return new TcpConn(rid, remote, local);
}

/**
 * Connects a `node:net` socket (half-open allowed, Nagle off) to `to`; rejects with the
 * connect error, or with `signal`'s reason when it aborts first.
 */
export function connectNodeSocket(to: HostPort, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const socket = net.connect({
      host: to.hostname,
      port: to.port,
      allowHalfOpen: true,
      noDelay: true,
    });
    const onAbort = () => {
      socket.destroy();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", () => {
      signal.removeEventListener("abort", onAbort);
      socket.removeListener("error", reject);
      resolve(socket);
    });
    socket.once("error", (e) => {
      signal.removeEventListener("abort", onAbort);
      reject(e);
    });
  });
}
