/**
 * A TLS listener built on `node:tls`, whose sockets can turn Nagle's algorithm off.
 *
 * Why not `Deno.listenTls`: Deno 2.9 sets TCP_NODELAY on no socket it accepts for TLS
 * (strace shows the option only on the dialing side), a `Deno.TlsConn` has no
 * `setNoDelay` and the listener no such option. With Nagle's algorithm on, a small write
 * that follows another still unacknowledged one waits for the peer's delayed ACK, ~40 ms:
 * the first answer after the handshake (behind the TLS 1.3 NewSessionTicket), the first
 * data right after ACCEPT (setup p50 46 ms instead of 0.6), any two small forwarded
 * chunks in a row. `node:tls` sockets take `setNoDelay(true)`.
 *
 * The price, measured with `bench/tls.ts --only engines` (bare forwarders, no tsunagi
 * code; bench/results/2026-11-30-tls.md): forwarding costs `node:tls` 3.8 CPU s/GiB,
 * `Deno.listenTls` 1.3, plain TCP 0.6; an idle connection holds 26 KiB more RSS than a
 * plain one with `node:tls`, 6 KiB more with `Deno.listenTls`. The relay's TLS figures are
 * `node:tls`'s own. Re-run that scenario when Deno can set TCP_NODELAY on accepted TLS
 * sockets.
 *
 * Each socket is adapted to the {@link ByteConn} shape the rest of the relay uses, with
 * backpressure both ways.
 *
 * A connection is handed out at its TCP accept, before its handshake: the caller counts
 * it under its limits and deadlines from the first moment (the relay's login deadline
 * covers handshake plus login). `node:tls`'s own `handshakeTimeout` is no substitute:
 * under Deno 2.9 it reports the timeout and leaves the socket open. Reads wait for the
 * handshake; a write before it fails at once (the peer could not read it yet, and an
 * error notice to a silent peer must not hold its close back).
 *
 * @module
 */

import * as net from "node:net";
import process from "node:process";
import * as tls from "node:tls";
import { formatHostPort } from "./address.ts";
import type { ByteConn } from "./framed_conn.ts";
import { ConnectionClosedError } from "./errors.ts";

/** Bytes buffered from a socket before it is paused (the reader is behind). */
const HIGH_WATER = 256 * 1024;

/** Adapts a node socket (event based) to `read`/`write`/`close`. */
export class NodeSocketConn implements ByteConn {
  readonly #socket: tls.TLSSocket;
  readonly #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  #closed = false;
  #secure = false;
  /** The peer's address, taken at accept: node forgets it once the socket is gone. */
  readonly remoteAddr: Deno.NetAddr;

  /** Wraps a server-side socket whose handshake may still be under way. */
  constructor(socket: tls.TLSSocket, remoteAddr: Deno.NetAddr) {
    this.#socket = socket;
    this.remoteAddr = remoteAddr;
    socket.once("secure", () => this.#secure = true);
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered >= HIGH_WATER) socket.pause();
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

  /** Whether the TLS handshake has finished. */
  get secure(): boolean {
    return this.#secure;
  }

  #notify() {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Reads into `p`; null at end of stream. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#closed) throw new ConnectionClosedError();
      if (this.#error !== null) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    let n = 0;
    while (n < p.length && this.#chunks.length > 0) {
      const head = this.#chunks[0];
      const take = Math.min(head.length, p.length - n);
      p.set(head.subarray(0, take), n);
      n += take;
      if (take === head.length) this.#chunks.shift();
      else this.#chunks[0] = head.subarray(take);
    }
    this.#buffered -= n;
    if (this.#buffered < HIGH_WATER / 2 && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  /**
   * Writes all of `p`; resolves once node has flushed it to the socket, so the caller
   * may reuse `p` and one slow peer holds back only its own writer.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new ConnectionClosedError());
    if (this.#error !== null) return Promise.reject(this.#error);
    if (!this.#secure) {
      // node would hold the bytes (and the callback) until a handshake that may never come.
      return Promise.reject(
        new Deno.errors.NotConnected("Cannot write before the TLS handshake has finished"),
      );
    }
    return new Promise((resolve, reject) => {
      const onClose = () => reject(new ConnectionClosedError());
      this.#socket.once("close", onClose);
      this.#socket.write(p, (e?: Error | null) => {
        this.#socket.off("close", onClose);
        if (e) reject(e);
        else resolve(p.length);
      });
    });
  }

  /** Closes the socket (destroyed on the next tick). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // On the next tick: under Deno 2.9 a TLSSocket destroyed in the tick that created it
    // is never freed (~30 KiB each), and a burst of accepts evicts sockets that young.
    process.nextTick(() => this.#socket.destroy());
    this.#notify();
  }
}

/** A TLS listener on `node:net` + `node:tls` with a pull-style `accept()`. */
export class NodeTlsListener {
  readonly #server: net.Server;
  readonly #queue: NodeSocketConn[] = [];
  #wake: (() => void) | null = null;
  #closed = false;
  /** The bound address. */
  addr: Deno.NetAddr = { transport: "tcp", hostname: "", port: 0 };

  private constructor(server: net.Server) {
    this.#server = server;
  }

  /** Listens on `hostname:port` with PEM `cert` and `key`. */
  static listen(options: {
    hostname: string;
    port: number;
    cert: string;
    key: string;
    /** Told about each failed handshake (e.g. a plain client on this TLS port). */
    onClientError?: (error: Error, remote: string) => void;
  }) {
    const secureContext = tls.createSecureContext({ cert: options.cert, key: options.key });
    // A plain TCP server whose sockets are wrapped here, not a tls.Server: its sockets
    // reach the caller only once their handshake is over, too late to be counted.
    const server = net.createServer((raw: net.Socket) => {
      if (listener.#closed) return void raw.destroy();
      const remoteAddr: Deno.NetAddr = {
        transport: "tcp",
        hostname: raw.remoteAddress ?? "",
        port: raw.remotePort ?? 0,
      };
      raw.setNoDelay(true);
      raw.setKeepAlive(true, 60_000);
      const socket = new tls.TLSSocket(raw, { isServer: true, secureContext });
      const conn = new NodeSocketConn(socket, remoteAddr);
      // A failed handshake is the client's problem: reported here, the connection ends
      // for its reader as closed, not as a failure of the relay.
      socket.on("error", (e: Error) => {
        if (conn.secure) return;
        options.onClientError?.(e, formatHostPort(remoteAddr));
        conn.close();
      });
      listener.#queue.push(conn);
      listener.#notify();
    });
    const listener = new NodeTlsListener(server);
    return new Promise<NodeTlsListener>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.hostname, () => {
        server.off("error", reject);
        const a = server.address() as { address: string; port: number };
        listener.addr = { transport: "tcp", hostname: a.address, port: a.port };
        resolve(listener);
      });
    });
  }

  #notify() {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /**
   * The next accepted connection, its handshake perhaps still under way; throws
   * `Deno.errors.BadResource` once closed.
   */
  async accept(): Promise<NodeSocketConn> {
    while (this.#queue.length === 0) {
      if (this.#closed) throw new Deno.errors.BadResource("listener closed");
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    return this.#queue.shift()!;
  }

  /** Stops listening and closes connections not yet accepted. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const c of this.#queue.splice(0)) c.close();
    this.#notify();
  }
}
