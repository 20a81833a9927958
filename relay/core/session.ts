/**
 * A session between two relay-side connections, and its data pump.
 *
 * Each side's connection loop pumps its own socket into the other side's connection:
 * read a chunk, follow frame headers with a {@link PassthroughScanner}, write the chunk
 * on, wait for the write, read again. The wait is the backpressure: a slow reader stalls
 * only its own sender, through TCP, and memory per direction is one read buffer.
 *
 * @module
 */

import { EndReason } from "../../shared/protocol/constants.ts";
import { PassthroughScanner } from "../../shared/protocol/passthrough.ts";
import type { FramedConn } from "../../shared/framed_conn.ts";

/** Read buffer per session direction. */
export const SESSION_READ_SIZE = 128 * 1024;

/** One side of a session as the pump needs it. */
export interface SessionSide {
  /** The side's framed connection. */
  readonly framed: FramedConn;
  /** Called on every chunk read, to keep liveness bookkeeping cheap. */
  touch(): void;
  /** ID of the device at the far end of this side (for the directory's "peers"). */
  readonly endpointId: string;
}

/** A session: two sides and which of them have sent END. */
export class RelaySession<S extends SessionSide> {
  /** Session ID, as sent in NOTICE and ACCEPT. */
  readonly id: string;
  /** Requester side. */
  readonly a: S;
  /** Target side. */
  readonly b: S;
  /** Bytes passed a→b and b→a, for logs. */
  readonly bytes = { ab: 0, ba: 0 };
  readonly #ended = new Set<S>();
  readonly #bothEnded = Promise.withResolvers<void>();

  /** Creates a session between `a` (requester) and `b` (target). */
  constructor(id: string, a: S, b: S) {
    this.id = id;
    this.a = a;
    this.b = b;
  }

  /** The other side. */
  peerOf(side: S): S {
    return side === this.a ? this.b : this.a;
  }

  /** True once `side` has sent END (or was ended for it by an abort). */
  hasEnded(side: S): boolean {
    return this.#ended.has(side);
  }

  /** True once both sides have ended: RELEASE is now allowed. */
  get bothEnded(): boolean {
    return this.#ended.size === 2;
  }

  /** Resolves once both sides have ended. */
  get whenBothEnded(): Promise<void> {
    return this.#bothEnded.promise;
  }

  /** Records that `side` has ended its direction. */
  markEnded(side: S): void {
    this.#ended.add(side);
    if (this.#ended.size === 2) this.#bothEnded.resolve();
  }

  /**
   * Ends `side`'s direction on its behalf because it vanished: the other side gets
   * END(aborted) after any data already queued to it.
   */
  async abort(side: S): Promise<void> {
    if (this.#ended.has(side)) return;
    // Queue the END before marking, so whoever waits for both ends writes after it.
    const sent = this.peerOf(side).framed.trySend({ kind: "end", reason: EndReason.Aborted });
    this.markEnded(side);
    await sent;
  }
}

/**
 * Session read buffers are reused: a relay that sets up thousands of sessions a second
 * would otherwise allocate (and zero, and collect) 2 × 128 KiB for each, and the garbage
 * collector's pauses show up as setup-latency outliers.
 */
const bufferPool: Uint8Array[] = [];
const MAX_POOLED = 64;

function takeBuffer(): Uint8Array {
  return bufferPool.pop() ?? new Uint8Array(SESSION_READ_SIZE);
}

function giveBuffer(buf: Uint8Array) {
  if (bufferPool.length < MAX_POOLED) bufferPool.push(buf);
}

/** How a pump stopped. */
export type PumpResult = "ended" | "eof";

/**
 * Pumps `side`'s socket into its peer until `side` sends END ("ended"; bytes after END
 * are put back for the control loop) or its stream ends ("eof"). Throws a protocol
 * error for a frame that is not DATA or END. If the peer's connection has died, bytes
 * are read and dropped until END so the survivor can still finish cleanly.
 */
export async function pumpSession<S extends SessionSide>(
  session: RelaySession<S>,
  side: S,
): Promise<PumpResult> {
  const peer = session.peerOf(side).framed;
  const scanner = new PassthroughScanner();
  const buf = takeBuffer();
  try {
    return await pump(session, side, peer, scanner, buf);
  } finally {
    giveBuffer(buf);
  }
}

async function pump<S extends SessionSide>(
  session: RelaySession<S>,
  side: S,
  peer: FramedConn,
  scanner: PassthroughScanner,
  buf: Uint8Array,
): Promise<PumpResult> {
  const counter = side === session.a ? "ab" : "ba";
  let peerAlive = true;
  for (;;) {
    const chunk = await side.framed.readRaw(buf);
    if (chunk === null) return "eof";
    side.touch();
    const { forwardEnd, endSeen } = scanner.scan(chunk, 0);
    if (peerAlive && forwardEnd > 0) {
      // The write is queued before END is recorded: anyone reacting to "both ended"
      // (e.g. a link sending RELEASE) writes after these bytes.
      const written = peer.write(
        forwardEnd === chunk.length ? chunk : chunk.subarray(0, forwardEnd),
      );
      if (endSeen) session.markEnded(side);
      try {
        await written;
        session.bytes[counter] += forwardEnd;
      } catch {
        peerAlive = false;
      }
    } else if (endSeen) {
      session.markEnded(side);
    }
    if (endSeen) {
      side.framed.unread(chunk.subarray(forwardEnd));
      return "ended";
    }
  }
}
