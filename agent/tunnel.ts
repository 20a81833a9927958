/**
 * Tunnels: a session piped to a local TCP connection, both ways, byte for byte.
 *
 * Each direction is one loop that waits for its write before it reads again, so a slow
 * reader on either end holds back its own sender through TCP and the relay, and nothing
 * else. Half-close maps both ways: the local side's FIN becomes END, the peer's END
 * becomes a FIN (`closeWrite`). Any failure (the local side resets, the peer aborts, the
 * relay drops) resets the local connection and closes the session's relay connection,
 * which the relay turns into END(aborted) for the peer.
 *
 * The data path does not allocate per chunk: local reads land in a frame buffer after
 * the header room and go out with `writeInPlace`; the peer's DATA comes from `readView`,
 * a view into the session's one read buffer. Toward the peer two frame buffers
 * alternate, so the next local read runs while the previous frame is being written (at
 * most one write in flight: backpressure still holds).
 *
 * @module
 */

import { formatHostPort, type HostPort } from "../shared/address.ts";
import { writeAll } from "../shared/framed_conn.ts";
import type { Logger } from "../shared/log.ts";
import { HEADER_SIZE, MAX_PAYLOAD } from "../shared/protocol/constants.ts";
import type { Session } from "./session.ts";
import type { ServiceHandler } from "./supervisor.ts";
import type { LocalConn } from "./_local_conn.ts";
import { connectNodeSocket, NodeSocketConn } from "./_node_socket.ts";

export type { LocalConn };

/** Payload room of a tunnel's first frames toward the peer (grows to MAX_PAYLOAD). */
const FIRST_PAYLOAD_SIZE = 16 * 1024;

/** Bytes a finished tunnel moved. */
export interface PipeResult {
  /** Local to peer. */
  sent: number;
  /** Peer to local. */
  received: number;
}

/**
 * Pipes `session` and `local` both ways until both directions ended (END and FIN), then
 * closes `local`; the caller releases the session. On failure resets `local`, closes the
 * session and rethrows the first error.
 *
 * @example
 * ```ts ignore
 * const session = await request.accept();
 * const tcp = await Deno.connect({ hostname: "127.0.0.1", port: 631 });
 * await pipeSession(session, tcp);
 * ```
 */
export async function pipeSession(session: Session, local: LocalConn): Promise<PipeResult> {
  const result: PipeResult = { sent: 0, received: 0 };
  let failure: { error: unknown } | null = null;
  const fail = (error: unknown) => {
    if (failure !== null) return;
    failure = { error };
    if (local.reset) local.reset();
    else closeQuietly(local);
    session.close();
  };
  const toPeer = async () => {
    // Small frames first (an interactive exchange allocates 2 x 16 KiB); a read that
    // fills its frame makes the following frames full size.
    let payloadSize = FIRST_PAYLOAD_SIZE;
    const frames = [0, 1].map(() => new Uint8Array(HEADER_SIZE + payloadSize));
    let writing: Promise<void> | null = null;
    try {
      for (let i = 0;; i ^= 1) {
        // Slot i's last write was awaited before slot i^1's began: it can be replaced.
        if (frames[i].length < HEADER_SIZE + payloadSize) {
          frames[i] = new Uint8Array(HEADER_SIZE + payloadSize);
        }
        const n = await local.read(frames[i].subarray(HEADER_SIZE));
        if (n === null) break;
        if (n === frames[i].length - HEADER_SIZE) payloadSize = MAX_PAYLOAD;
        await writing;
        writing = session.writeInPlace(frames[i], n);
        // It may fail while the next local read waits: that failure is reported by the
        // `await writing` above (or the session), never as an unhandled rejection that
        // would end the whole process.
        writing.catch(() => {});
        result.sent += n;
      }
      await writing;
    } finally {
      writing?.catch(() => {}); // a failed read leaves the write's error to the session
    }
    await session.end();
  };
  const fromPeer = async () => {
    for (;;) {
      const bytes = await session.readView();
      if (bytes === null) break;
      await writeAll(local, bytes);
      result.received += bytes.length;
    }
    try {
      await local.closeWrite();
    } catch {
      // The local side is gone already; its reader reports that.
    }
  };
  await Promise.all([toPeer().catch(fail), fromPeer().catch(fail)]);
  if (failure !== null) throw (failure as { error: unknown }).error;
  closeQuietly(local);
  return result;
}

function closeQuietly(local: LocalConn) {
  try {
    local.close();
  } catch {
    // already closed
  }
}

/** Options for {@link exposeService}. */
export interface ExposeOptions {
  /** Local TCP address each session is connected to. */
  to: HostPort;
  /** Logger for "tunnel opened/closed/failed" lines. */
  logger: Logger;
  /** Deadline of the local connect, ms (default 5000). */
  connectTimeoutMs?: number;
}

/**
 * A handler that connects every session to a fresh TCP connection to `to`. The local
 * connect happens before ACCEPT: if it fails, the request is rejected with the reason,
 * which the requester sees in its REJECT.
 */
export function exposeService(options: ExposeOptions): ServiceHandler {
  const { logger } = options;
  const where = formatHostPort(options.to);
  return async (request) => {
    let tcp: LocalConn;
    const timeoutMs = options.connectTimeoutMs ?? 5000;
    try {
      // A node socket, so that a tunnel that breaks midway resets it (see _node_socket.ts).
      tcp = new NodeSocketConn(
        await connectNodeSocket(
          options.to,
          AbortSignal.any([request.signal, AbortSignal.timeout(timeoutMs)]),
        ),
      );
    } catch (e) {
      const reason = e instanceof DOMException && e.name === "TimeoutError"
        ? `no answer within ${timeoutMs} ms`
        : e instanceof Error
        ? e.message
        : String(e);
      logger.info("tunnel refused", { from: request.from, service: request.service, reason });
      await request.reject(`service "${request.service}" cannot reach ${where}: ${reason}`);
      return;
    }
    let session: Session;
    try {
      session = await request.accept();
    } catch (e) {
      tcp.close();
      throw e;
    }
    const started = performance.now();
    const moved = await pipeSession(session, tcp);
    logger.info("tunnel closed", {
      from: request.from,
      service: request.service,
      bytesIn: moved.received,
      bytesOut: moved.sent,
      ms: Math.round(performance.now() - started),
    });
  };
}
