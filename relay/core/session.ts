/**
 * A session between two relay-side connections, and its data pump.
 *
 * Each side's connection loop pumps its own socket into the other side's connection:
 * read a chunk, follow frame headers with a {@link PassthroughScanner}, queue the chunk
 * on the peer, wait for the write, read again. The wait is the backpressure: a slow
 * reader stalls only its own sender, through TCP.
 *
 * Frames stay whole. The pump tells the peer's {@link FramedConn} whether each forwarded
 * chunk ends on a frame boundary; anything the relay writes of its own (END(aborted),
 * ERROR) goes through `FramedConn.write`, which refuses to write inside a half-forwarded
 * frame and closes that connection instead. So when one side dies mid-frame the
 * survivor's connection is closed (its decoder sees a truncated frame), and when it dies
 * on a boundary the survivor gets END(aborted).
 *
 * Ownership: the session's `ended`/`gone` sets change only through {@link markEnded} and
 * {@link abort}, each synchronous; each side's pump runs on that side's connection loop.
 *
 * @module
 */

import { EndReason } from "../../shared/protocol/constants.ts";
import { PassthroughScanner } from "../../shared/protocol/passthrough.ts";
import type { FramedConn } from "../../shared/framed_conn.ts";

/** Smallest read buffer per session direction: what an idle session holds. */
export const SESSION_MIN_READ_SIZE = 16 * 1024;
/** Largest read buffer per session direction: what a bulk transfer grows to. */
export const SESSION_MAX_READ_SIZE = 128 * 1024;

/** One side of a session as the pump needs it. */
export interface SessionSide {
  /** The side's framed connection. */
  readonly framed: FramedConn;
  /** Called on every chunk read, to keep liveness bookkeeping cheap. */
  touch(): void;
  /** ID of the device at the far end of this side (for the directory's "peers"). */
  readonly endpointId: string;
}

/** Options for {@link RelaySession}. */
export interface SessionOptions {
  /** Clock, ms (default Date.now). */
  now?: () => number;
  /** Called with every count of bytes passed (the relay's bytes-relayed counter). */
  onBytes?: (n: number) => void;
}

/** A session: two sides, which of them have sent END, and which have vanished. */
export class RelaySession<S extends SessionSide> {
  /** Session ID, as sent in NOTICE and ACCEPT. */
  readonly id: string;
  /** Requester side. */
  readonly a: S;
  /** Target side. */
  readonly b: S;
  /** Bytes passed a→b and b→a. */
  readonly bytes = { ab: 0, ba: 0 };
  /** Relay clock of the last byte read on either side (session idle timeout). */
  lastActivity: number;
  readonly #ended = new Set<S>();
  readonly #gone = new Set<S>();
  readonly #bothEnded = Promise.withResolvers<void>();
  readonly #ready = Promise.withResolvers<void>();
  readonly #now: () => number;
  readonly #onBytes: (n: number) => void;

  /** Creates a session between `a` (requester) and `b` (target). */
  constructor(id: string, a: S, b: S, options: SessionOptions = {}) {
    this.id = id;
    this.a = a;
    this.b = b;
    this.#now = options.now ?? Date.now;
    this.#onBytes = options.onBytes ?? (() => {});
    this.lastActivity = this.#now();
  }

  /** Counts `n` bytes passed from `side` to its peer. */
  counted(side: S, n: number): void {
    if (side === this.a) this.bytes.ab += n;
    else this.bytes.ba += n;
    this.#onBytes(n);
  }

  /** The other side. */
  peerOf(side: S): S {
    return side === this.a ? this.b : this.a;
  }

  /** True once `side` has sent END (or was ended for it by an abort). */
  hasEnded(side: S): boolean {
    return this.#ended.has(side);
  }

  /** True once `side` vanished: nothing more is written to it. */
  isGone(side: S): boolean {
    return this.#gone.has(side);
  }

  /** True once both sides have ended: RELEASE is now allowed. */
  get bothEnded(): boolean {
    return this.#ended.size === 2;
  }

  /** Resolves once both sides have ended. */
  get whenBothEnded(): Promise<void> {
    return this.#bothEnded.promise;
  }

  /**
   * Resolves once the requester side has queued ACCEPT to its device (or vanished): no
   * session byte may reach the requester before its ACCEPT.
   */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Called by the requester's loop right after it queued ACCEPT. */
  markReady(): void {
    this.#ready.resolve();
  }

  /** Records activity on either side. */
  touch(): void {
    this.lastActivity = this.#now();
  }

  /** Records that `side` has ended its direction. */
  markEnded(side: S): void {
    this.#ended.add(side);
    if (this.#ended.size === 2) this.#bothEnded.resolve();
  }

  /**
   * Ends `side`'s direction on its behalf because it vanished. The other side gets
   * END(aborted) after any data already queued to it when its stream sits on a frame
   * boundary; otherwise its connection is closed (see the module doc). If `side` had
   * already sent END while the other still sends, the other's connection is closed.
   */
  async abort(side: S): Promise<void> {
    if (this.#gone.has(side)) return;
    this.#gone.add(side);
    this.#ready.resolve();
    const peer = this.peerOf(side);
    if (this.#ended.has(side)) {
      // `side` had finished sending, but its peer still sends, and now to no one: its
      // connection is closed once what is queued to it (that END among it) is written,
      // so its agent sees the session fail instead of its bytes swallowed in silence.
      if (!this.#ended.has(peer) && !this.#gone.has(peer)) {
        await peer.framed.flush();
        peer.framed.close();
      }
      return;
    }
    // Queue the END before marking, so whoever waits for both ends writes after it.
    const sent = this.#gone.has(peer)
      ? Promise.resolve()
      : peer.framed.trySend({ kind: "end", reason: EndReason.Aborted });
    this.markEnded(side);
    await sent;
  }
}

/**
 * Session read buffers are reused: a relay that sets up thousands of sessions a second
 * would otherwise allocate (and zero, and collect) them for each session, and the
 * collector's pauses show up as setup-latency outliers. Only the large ones are pooled.
 */
const bufferPool: Uint8Array[] = [];
const MAX_POOLED = 64;

function takeLarge(): Uint8Array {
  return bufferPool.pop() ?? new Uint8Array(SESSION_MAX_READ_SIZE);
}

function giveLarge(buf: Uint8Array) {
  if (buf.length === SESSION_MAX_READ_SIZE && bufferPool.length < MAX_POOLED) {
    bufferPool.push(buf);
  }
}

/** How a pump stopped. */
export type PumpResult = "ended" | "eof";

/**
 * Pumps `side`'s socket into its peer until `side` sends END ("ended"; bytes after END
 * are put back for the control loop) or its stream ends ("eof"). Throws a protocol
 * error for a frame that is not DATA or END. If the peer is gone, bytes are read and
 * dropped until END so the survivor can still finish cleanly.
 *
 * The read buffer starts small (an idle session holds little) and grows to
 * {@link SESSION_MAX_READ_SIZE} while reads come back full.
 */
export async function pumpSession<S extends SessionSide>(
  session: RelaySession<S>,
  side: S,
): Promise<PumpResult> {
  const peerSide = session.peerOf(side);
  const peer = peerSide.framed;
  const scanner = new PassthroughScanner();
  let buf: Uint8Array = new Uint8Array(SESSION_MIN_READ_SIZE);
  await session.ready;
  try {
    for (;;) {
      const chunk = await side.framed.readRaw(buf);
      if (chunk === null) return "eof";
      side.touch();
      const seenBefore = scanner.payloadSeen;
      const { forwardEnd, endSeen } = scanner.scan(chunk, 0);
      // Only payload is activity: empty DATA frames do not hold a session open.
      if (scanner.payloadSeen !== seenBefore) session.touch();
      if (!session.isGone(peerSide) && forwardEnd > 0) {
        // Queued before END is recorded: anyone reacting to "both ended" (a link sending
        // RELEASE) writes after these bytes.
        const written = peer.writePassthrough(
          forwardEnd === chunk.length ? chunk : chunk.subarray(0, forwardEnd),
          scanner.atBoundary,
        );
        if (endSeen) session.markEnded(side);
        try {
          await written;
          session.counted(side, forwardEnd);
        } catch {
          // The peer's connection failed: its own loop aborts its side.
        }
      } else if (endSeen) {
        session.markEnded(side);
      }
      if (endSeen) {
        side.framed.unread(chunk.subarray(forwardEnd));
        return "ended";
      }
      // Grow while reads come back full; shrink when the stream goes quiet, so an idle
      // session holds a small buffer and the large one serves another session.
      if (chunk.length === buf.length && buf.length < SESSION_MAX_READ_SIZE) {
        buf = takeLarge();
      } else if (buf.length === SESSION_MAX_READ_SIZE && chunk.length < SESSION_MIN_READ_SIZE) {
        giveLarge(buf);
        buf = new Uint8Array(SESSION_MIN_READ_SIZE);
      }
    }
  } finally {
    giveLarge(buf);
  }
}
