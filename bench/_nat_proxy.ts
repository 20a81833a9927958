/**
 * A NAT box in front of a device: a TCP forwarder to the relay whose open connections
 * can be frozen at once, as when the NAT silently forgets its mappings. From then on a
 * frozen connection's bytes are read and dropped both ways and a close is not passed on;
 * new connections pass normally. (The same model as the proxy in
 * tests/agent_run_test.ts, plus what the bench measures: when a connection opened after
 * the freeze is logged in, seen from the LOGIN_RESULT it carries back to the device.)
 *
 * @module
 */

import type { HostPort } from "../shared/address.ts";
import { writeAll } from "../shared/framed_conn.ts";
import { ErrorCode, FrameType, HEADER_SIZE } from "../shared/protocol/constants.ts";

interface Pair {
  conns: Deno.TcpConn[];
  openedAt: number;
  frozen: boolean;
  closed: boolean;
  /** The relay answered this connection's login with Ok. */
  loggedIn: boolean;
}

/** The freezing NAT, listening on 127.0.0.1:0. */
export class NatProxy implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #pairs: Pair[] = [];
  readonly #tasks: Promise<void>[] = [];
  readonly #accepting: Promise<void>;
  readonly #waiters = new Set<() => void>();
  #frozenAt = -Infinity;
  #firstLoginAfterFreeze: number | null = null;

  /** Starts forwarding to `target`. */
  constructor(target: HostPort) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.#accepting = (async () => {
      for await (const inbound of listener) {
        const openedAt = performance.now();
        let outbound: Deno.TcpConn;
        try {
          outbound = await Deno.connect(target);
        } catch {
          inbound.close();
          continue;
        }
        const pair: Pair = {
          conns: [inbound, outbound],
          openedAt,
          frozen: false,
          closed: false,
          loggedIn: false,
        };
        this.#pairs.push(pair);
        this.#tasks.push(
          this.#pump(pair, inbound, outbound, false),
          this.#pump(pair, outbound, inbound, true),
        );
      }
    })().catch(() => {});
  }

  /** `127.0.0.1:PORT` for the device to dial. */
  get address(): string {
    return `127.0.0.1:${this.#listener.addr.port}`;
  }

  async #pump(pair: Pair, from: Deno.TcpConn, to: Deno.TcpConn, fromRelay: boolean) {
    const buf = new Uint8Array(64 * 1024);
    // The relay's login answer is a LOGIN_RESULT (type, length, u16 code) after the SCRAM
    // challenge: follow the first frames of the relay's stream until it shows up.
    let head = new Uint8Array(0);
    let scanning = fromRelay;
    for (;;) {
      const n = await from.read(buf).catch(() => null);
      if (n === null) break;
      if (pair.frozen) continue;
      if (scanning) {
        const joined = new Uint8Array(head.length + n);
        joined.set(head);
        joined.set(buf.subarray(0, n), head.length);
        head = joined;
        let off = 0;
        while (scanning && head.length - off >= HEADER_SIZE + 2) {
          const len = ((head[off + 1] << 24) | (head[off + 2] << 16) | (head[off + 3] << 8) |
            head[off + 4]) >>> 0;
          if (head[off] === FrameType.LoginResult) {
            this.#sawLoginResult(pair, head.subarray(off, off + HEADER_SIZE + 2));
            scanning = false;
          } else if (head.length - off >= HEADER_SIZE + len) {
            off += HEADER_SIZE + len;
          } else break;
        }
        head = head.subarray(off);
        if (head.length > 16 * 1024) scanning = false; // not a login: stop looking
      }
      await writeAll(to, buf.subarray(0, n)).catch(() => {});
    }
    if (!pair.frozen) {
      pair.closed = true;
      try {
        to.close();
      } catch {
        // already closed
      }
    }
  }

  #sawLoginResult(pair: Pair, head: Uint8Array) {
    const code = (head[HEADER_SIZE] << 8) | head[HEADER_SIZE + 1];
    if (head[0] !== FrameType.LoginResult || code !== ErrorCode.Ok) return;
    pair.loggedIn = true;
    if (pair.openedAt > this.#frozenAt && this.#firstLoginAfterFreeze === null) {
      this.#firstLoginAfterFreeze = performance.now();
    }
    for (const w of this.#waiters) w();
  }

  /** Connections logged in through the NAT that are neither frozen nor closed. */
  get live(): number {
    return this.#pairs.filter((p) => p.loggedIn && !p.frozen && !p.closed).length;
  }

  /** Freezes every connection open now; returns how many. */
  freeze(): number {
    this.#frozenAt = performance.now();
    this.#firstLoginAfterFreeze = null;
    const open = this.#pairs.filter((p) => !p.frozen && !p.closed);
    for (const p of open) p.frozen = true;
    return open.length;
  }

  /**
   * Waits until `condition` holds (re-checked whenever a login passes, and every 50 ms);
   * false after `timeoutMs`.
   */
  async waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = setTimeout(resolve, Math.min(left, 50));
      this.#waiters.add(resolve);
      await promise;
      clearTimeout(timer);
      this.#waiters.delete(resolve);
    }
    return true;
  }

  /** ms from the last freeze until a connection opened after it was logged in; null if none. */
  get reachableAfterMs(): number | null {
    return this.#firstLoginAfterFreeze === null
      ? null
      : this.#firstLoginAfterFreeze - this.#frozenAt;
  }

  /** Closes the listener and every connection. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const p of this.#pairs) {
      for (const c of p.conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
    }
    await Promise.all(this.#tasks);
  }
}
