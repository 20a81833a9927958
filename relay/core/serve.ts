/**
 * Serves one accepted connection from its handshake to its close: the entry point of
 * the relay core. Login first; then the loop for what the connection turned out to be;
 * then cleanup, which settles whatever was pending on it.
 *
 * @module
 */

import { isClosedError } from "../../shared/framed_conn.ts";
import {
  ConnectionClosedError,
  FrameTooLargeError,
  MalformedMessageError,
  ProtocolError,
  TruncatedFrameError,
} from "../../shared/errors.ts";
import { ERROR_CODE_NAMES, type ErrorCode } from "../../shared/protocol/constants.ts";
import type { RelayConn } from "./conn.ts";
import type { RelayContext } from "./context.ts";
import { controlLoop, linkLoop } from "./control_loop.ts";
import { login } from "./login.ts";

/**
 * Serves `conn` until it closes. Never throws. `onLoggedIn` runs once the handshake is
 * over (or failed): the connection no longer counts as unauthenticated.
 */
export async function serveConnection(
  conn: RelayConn,
  ctx: RelayContext,
  onLoggedIn: () => void = () => {},
): Promise<void> {
  conn.onIdle = wakeWaiters(ctx);
  try {
    let role;
    try {
      role = await login(conn, ctx);
    } finally {
      onLoggedIn();
    }
    if (role === "device") await controlLoop(conn, ctx);
    else if (role === "data") await linkLoop(conn, ctx);
    else if (role === "control") {
      await ctx.onControlLink!(conn, { name: conn.linkPeer, address: conn.linkAddress });
    }
  } catch (e) {
    await reportFailure(conn, ctx, e);
  } finally {
    cleanup(conn, ctx);
  }
}

/**
 * Serves a connection that is already logged in (tests of the state machine start here,
 * with in-memory connections): its device loop, then cleanup. Never throws.
 */
export async function serveDevice(conn: RelayConn, ctx: RelayContext): Promise<void> {
  conn.onIdle = wakeWaiters(ctx);
  conn.announceIdle();
  try {
    await controlLoop(conn, ctx);
  } catch (e) {
    await reportFailure(conn, ctx, e);
  } finally {
    cleanup(conn, ctx);
  }
}

/** A device connection became idle: a request waiting for its device may take it. */
function wakeWaiters(ctx: RelayContext): (conn: RelayConn) => void {
  return (conn) => void ctx.waits.wake(conn.deviceId, conn.services);
}

async function reportFailure(conn: RelayConn, ctx: RelayContext, e: unknown) {
  if (e instanceof TruncatedFrameError) {
    ctx.logger.info("connection closed mid-frame", { remote: conn.remote, device: conn.deviceId });
    return;
  }
  if (
    e instanceof ProtocolError || e instanceof MalformedMessageError ||
    e instanceof FrameTooLargeError || (e instanceof SyntaxError && "code" in e)
  ) {
    const code = (e as { code: ErrorCode }).code;
    ctx.logger.warn("protocol error", {
      remote: conn.remote,
      device: conn.deviceId,
      code: ERROR_CODE_NAMES[code],
      error: e.message,
    });
    ctx.metrics.refusal(code);
    await conn.framed.trySend({ kind: "error", code, message: e.message });
    return;
  }
  if (isClosedError(e) || e instanceof ConnectionClosedError) return;
  ctx.logger.error("connection failed", {
    remote: conn.remote,
    device: conn.deviceId,
    error: String(e),
  });
}

/** Settles what was pending on a closed connection: its notice, its side of a session. */
function cleanup(conn: RelayConn, ctx: RelayContext) {
  const { previous, notice } = conn.closed();
  if (notice !== null) notice.settle({ kind: "gone" });
  const session = conn.session;
  if (session !== null && !session.isGone(conn)) {
    if (!session.hasEnded(conn)) {
      ctx.logger.info("session aborted", { session: session.id, device: conn.deviceId });
    }
    void session.abort(conn);
  }
  conn.framed.close();
  if (conn.kind === "device" && previous !== "hello") ctx.devices.detach(conn);
}
