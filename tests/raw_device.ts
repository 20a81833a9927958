/**
 * In-test devices: one built on the agent's library, to play a target that answers
 * notices exactly as the test wants (accept, ignore, hold a session open), and a raw one
 * ({@link RawClient}) that writes any bytes and records every byte it receives.
 *
 * @module
 */

import { parseHostPort } from "../shared/address.ts";
import { connectRelay, type Notice, type RelayConnection } from "../agent/relay_client.ts";
import { FILE_SERVICE, HEADER_SIZE, PROTOCOL_VERSION, Role } from "../shared/protocol/constants.ts";
import { type Frame, readU32 } from "../shared/protocol/frame.ts";
import { decodeMessage, encodeMessage, type Message } from "../shared/protocol/messages.ts";
import {
  authMessage,
  clientProof,
  newScramNonce,
  prehashPassword,
  saltedPassword,
} from "../shared/scram.ts";

/** Logs in one connection for `id`. */
export async function rawLogin(
  relay: string,
  id: string,
  passwordFile: string,
): Promise<RelayConnection> {
  const password = (await Deno.readTextFile(passwordFile)).trim();
  return await connectRelay({
    address: parseHostPort(relay),
    id,
    password,
    services: [FILE_SERVICE],
  });
}

/** Reads the next NOTICE on an idle connection. */
export async function nextNotice(conn: RelayConnection): Promise<Notice> {
  const m = await conn.nextControl();
  if (m.kind !== "notice") throw new Error(`expected NOTICE, got ${m.kind}`);
  return m;
}

/**
 * A device speaking raw bytes: it writes whatever the test builds (well-formed frames from
 * the shared encoders, or partial and oversized ones) and keeps every byte the relay sent,
 * so a test can check byte for byte what arrived, frame boundaries included.
 *
 * One reader at a time. Reads take a signal; on abort the socket is closed.
 */
export class RawClient implements Disposable {
  /** The socket. */
  readonly conn: Deno.TcpConn;
  #buf = new Uint8Array(4096);
  #len = 0;
  /** Offset in the received bytes up to which frames were returned by readFrame. */
  #pos = 0;
  #eof = false;
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Opens a TCP connection to 127.0.0.1:`port`. */
  static async open(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /**
   * Opens a connection and logs in as `id` (the whole SCRAM exchange, by hand); returns
   * the client and the relay's final answer (LOGIN_RESULT or ERROR, or null at EOF).
   */
  static async login(
    port: number,
    id: string,
    password: string,
    signal?: AbortSignal,
    services: string[] = [FILE_SERVICE],
  ): Promise<{ client: RawClient; answer: Message | null }> {
    signal ??= AbortSignal.timeout(10_000);
    const client = await RawClient.open(port);
    const clientNonce = newScramNonce();
    await client.write(concat(
      encodeMessage({
        kind: "hello",
        version: PROTOCOL_VERSION,
        role: Role.Device,
        software: "raw",
      }),
      encodeMessage({ kind: "login", id, nonce: clientNonce, instance: "", ticket: "", services }),
    ));
    const challenge = await client.readMessage(signal);
    if (challenge?.kind !== "loginChallenge") return { client, answer: challenge };
    const { nonce, salt, iterations, prehash } = challenge;
    const secret = prehash === "" ? password : await prehashPassword(password, prehash);
    const salted = await saltedPassword(secret, salt, iterations);
    const auth = authMessage({ id, clientNonce, nonce, salt, iterations });
    await client.send({ kind: "loginProof", proof: clientProof(salted, auth) });
    const answer = await client.readMessage(signal);
    return { client, answer };
  }

  /** True once the relay closed (or reset) the connection. */
  get eof(): boolean {
    return this.#eof;
  }

  /** Every byte received since offset `from` (default: all). */
  received(from = 0): Uint8Array {
    return this.#buf.subarray(from, this.#len);
  }

  /** Offset just after the last frame returned by {@link readFrame}. */
  get framePosition(): number {
    return this.#pos;
  }

  /** Makes {@link readFrame} continue at `offset` of the received bytes (after raw reads). */
  skipTo(offset: number): void {
    this.#pos = offset;
  }

  /** Writes all of `bytes`; false if the connection is gone. */
  async write(bytes: Uint8Array): Promise<boolean> {
    try {
      let off = 0;
      while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
      return true;
    } catch {
      return false;
    }
  }

  /** Sends one message. */
  send(m: Message): Promise<boolean> {
    return this.write(encodeMessage(m));
  }

  /** Reads one more chunk; false at EOF (a reset counts as EOF). */
  async fill(signal: AbortSignal): Promise<boolean> {
    if (this.#eof) return false;
    signal.throwIfAborted();
    if (this.#buf.length - this.#len < 65536) {
      const bigger = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + 65536));
      bigger.set(this.#buf.subarray(0, this.#len));
      this.#buf = bigger;
    }
    const onAbort = () => this.close();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const n = await this.conn.read(this.#buf.subarray(this.#len));
      if (n === null) {
        this.#eof = true;
        return false;
      }
      this.#len += n;
      return true;
    } catch (e) {
      if (signal.aborted) throw new Error("Timed out reading from the relay", { cause: e });
      this.#eof = true; // reset by the peer
      return false;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Reads until `condition` holds or EOF; returns whether it holds. */
  async readUntil(condition: () => boolean, signal: AbortSignal): Promise<boolean> {
    while (!condition()) if (!(await this.fill(signal))) return condition();
    return true;
  }

  /** Reads until the relay closes the connection. */
  async readToEnd(signal: AbortSignal): Promise<void> {
    while (await this.fill(signal));
  }

  /** The next complete frame, or null at EOF (a truncated last frame also gives null). */
  async readFrame(signal: AbortSignal): Promise<Frame | null> {
    const complete = () => {
      const left = this.#len - this.#pos;
      return left >= HEADER_SIZE && left >= HEADER_SIZE + readU32(this.#buf, this.#pos + 1);
    };
    if (!(await this.readUntil(complete, signal))) return null;
    const length = readU32(this.#buf, this.#pos + 1);
    const frame = {
      type: this.#buf[this.#pos],
      payload: this.#buf.slice(this.#pos + HEADER_SIZE, this.#pos + HEADER_SIZE + length),
    };
    this.#pos += HEADER_SIZE + length;
    return frame;
  }

  /** The next message (PONGs included), or null at EOF. */
  async readMessage(signal: AbortSignal): Promise<Message | null> {
    const frame = await this.readFrame(signal);
    return frame === null ? null : decodeMessage(frame);
  }

  /** Closes the socket (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Joins byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
