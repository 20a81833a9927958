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
 * @module
 */

import net, { type Socket } from "node:net";
import type { HostPort } from "../shared/address.ts";
import { ConnectionClosedError } from "../shared/errors.ts";
import type { LocalConn } from "./_local_conn.ts";

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
 * Moves an accepted `node:net` socket's stream (paused since it connected, nothing read)
 * into a native `Deno.TcpConn`, whose reads cost about a quarter of `node:net`'s on
 * this runtime; the node socket is destroyed and must not be used again. Relies on
 * runtime internals (`TCPWrap.takeStream`, the `TcpConn` class): returns null where they
 * are missing, and the caller keeps the node socket ({@link NodeSocketConn}).
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
