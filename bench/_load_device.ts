/**
 * Load-generator plumbing: events on stdout, commands on stdin, and the two ways to get
 * a {@link Session} — through a relay with the agent library, or over a direct TCP
 * connection wrapped in the same classes so both modes run the same read/write code.
 *
 * @module
 */

import { parseHostPort } from "../shared/address.ts";
import { FramedConn } from "../shared/framed_conn.ts";
import { DeviceState, HEADER_SIZE, MAX_PAYLOAD } from "../shared/protocol/constants.ts";
import { connectRelay, RelayConnection } from "../agent/relay_client.ts";
import { Session } from "../agent/session.ts";
import { BENCH_PASSWORD, BENCH_SERVICE, type Link } from "./_load_types.ts";

const encoder = new TextEncoder();

/** Prints one JSON event line on stdout (synchronously, so order is kept). */
export function emit(event: string, fields: Record<string, unknown> = {}): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify({ event, ...fields }) + "\n"));
}

/**
 * Command lines from the bench on stdin. When stdin closes the bench is gone or wants
 * this process to stop: it exits at once, so no load generator outlives the bench.
 */
export class Commands {
  readonly #queue: string[] = [];
  #waiter: ((line: string) => void) | null = null;

  /** Starts reading stdin. */
  constructor() {
    void this.#pump();
  }

  async #pump() {
    let buf = "";
    try {
      for await (const text of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
        buf += text;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (this.#waiter) {
            const w = this.#waiter;
            this.#waiter = null;
            w(line);
          } else this.#queue.push(line);
        }
      }
    } finally {
      Deno.exit(0);
    }
  }

  /** The next command line. */
  next(): Promise<string> {
    const line = this.#queue.shift();
    if (line !== undefined) return Promise.resolve(line);
    const { promise, resolve } = Promise.withResolvers<string>();
    this.#waiter = resolve;
    return promise;
  }

  /** Waits for the command `word` (other lines are an error). */
  async expect(word: string): Promise<void> {
    const line = await this.next();
    if (line !== word) throw new Error(`Expected command "${word}", got "${line}"`);
  }
}

const caCache = new Map<string, string>();

/** Logs in one connection as `id` through the relay of `link`. */
export async function login(
  link: Extract<Link, { mode: "relay" }>,
  id: string,
  options: { readSize?: number; relay?: string } = {},
): Promise<RelayConnection> {
  let tlsCa: string | undefined;
  if (link.tlsCaFile) {
    tlsCa = caCache.get(link.tlsCaFile);
    if (tlsCa === undefined) {
      tlsCa = await Deno.readTextFile(link.tlsCaFile);
      caCache.set(link.tlsCaFile, tlsCa);
    }
  }
  return await connectRelay({
    address: parseHostPort(options.relay ?? link.relay),
    id,
    password: BENCH_PASSWORD,
    tlsCa,
    readSize: options.readSize,
    // Every bench device answers bench sessions (services are in the directory).
    services: [BENCH_SERVICE],
  }, { timeoutMs: 30_000 });
}

/** Logs in with a few retries (a busy relay may reset a connection under a login storm). */
export async function loginRetrying(
  link: Extract<Link, { mode: "relay" }>,
  id: string,
  options: { readSize?: number } = {},
  attempts = 4,
): Promise<RelayConnection> {
  for (let attempt = 1;; attempt++) {
    try {
      return await login(link, id, options);
    } catch (e) {
      if (attempt >= attempts) throw e;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}

/** Read size the agent library uses by default: one full DATA frame. */
const DIRECT_READ_SIZE = MAX_PAYLOAD + HEADER_SIZE;

/**
 * A {@link Session} over a plain TCP connection: the same framing, the same read and write
 * code as through a relay, minus the relay. END works as a half-close marker; RELEASE is
 * never sent.
 */
export function directSession(socket: Deno.TcpConn): Session {
  socket.setNoDelay(true);
  const framed = new FramedConn(socket, { readSize: DIRECT_READ_SIZE });
  const address = socket.remoteAddr as Deno.NetAddr;
  const conn = new RelayConnection(
    framed,
    { address: { hostname: address.hostname, port: address.port }, id: "direct", password: "" },
    "direct",
    0,
  );
  return new Session(conn, "direct", "peer");
}

/** Polls the relay's directory until `target` is online there (relay chains, mesh). */
export async function waitOnline(
  conn: RelayConnection,
  target: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const entry = await conn.status(target);
    if (entry !== null && entry.state === DeviceState.Online) return;
    if (Date.now() > deadline) {
      throw new Error(`${target} not online on relay ${conn.relayName} after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Resolves like `promise`, or runs `onTimeout` (which should make `promise` settle, e.g.
 * by closing the connection) and rejects after `ms`.
 */
export async function within<T>(promise: Promise<T>, ms: number, onTimeout: () => void) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`timed out after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
    promise.catch(() => {});
  }
}

/** Reads a session to its END; returns the byte count. */
export async function drain(session: Session): Promise<number> {
  let bytes = 0;
  for (;;) {
    const chunk = await session.read();
    if (chunk === null) return bytes;
    bytes += chunk.length;
  }
}

/** A buffer for {@link Session.writeInPlace}: header room plus one full payload. */
export function frameBuffer(seed: number): Uint8Array {
  const buf = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = HEADER_SIZE; i < buf.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf[i] = x & 0xff;
  }
  return buf;
}

/** Sends `bytes` bytes as full DATA frames written in place (no copy per frame). */
export async function sendBytes(session: Session, buf: Uint8Array, bytes: number): Promise<void> {
  let left = bytes;
  while (left > 0) {
    const n = Math.min(left, MAX_PAYLOAD);
    await session.writeInPlace(buf, n);
    left -= n;
  }
}
