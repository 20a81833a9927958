/**
 * The loops that own a logged-in connection: a device's control loop and a relay data
 * link's loop. Each is the only reader of its socket and makes its connection's state
 * transitions (conn.ts); in a session it runs its side's pump (session.ts).
 *
 * @module
 */

import { ProtocolError } from "../../shared/errors.ts";
import { ErrorCode } from "../../shared/protocol/constants.ts";
import {
  type DirectoryEntry,
  encodeMessage,
  type Message,
} from "../../shared/protocol/messages.ts";
import type { RelayConn } from "./conn.ts";
import { connect } from "./connect.ts";
import type { RelayContext } from "./context.ts";
import { pumpSession, RelaySession, type SessionSide } from "./session.ts";

/**
 * The next control message on `conn` other than PING (answered here with PONG), or null
 * at a clean end of stream. Every message counts as activity.
 */
async function nextMessage(conn: RelayConn): Promise<Message | null> {
  for (;;) {
    const msg = await conn.framed.readMessage();
    if (msg === null) return null;
    conn.touch();
    if (msg.kind !== "ping") return msg;
    await conn.framed.send({ kind: "pong", nonce: msg.nonce });
  }
}

/** Handles a device's control messages until the connection closes. */
export async function controlLoop(conn: RelayConn, ctx: RelayContext): Promise<void> {
  for (;;) {
    const msg = await nextMessage(conn);
    if (msg === null) return;
    switch (msg.kind) {
      case "logout":
        logout(conn.deviceId, ctx);
        return;
      case "list":
      case "status":
        await answerQuery(conn, msg, ctx);
        break;
      case "connect":
        // A CONNECT on the very connection just picked for a notice: the requests
        // crossed; the notice is void and its requester tries another connection.
        if (conn.state === "noticed") conn.crossNotice();
        conn.beginConnect("CONNECT", conn.deviceId);
        if (
          await connect(conn, {
            requester: conn.deviceId,
            requesterType: ctx.devices.get(conn.deviceId)?.type ?? "",
            target: msg.target,
            service: msg.service,
            hops: 0,
          }, ctx) && !(await runSession(conn, ctx))
        ) return;
        break;
      case "accept":
      case "reject":
        if (conn.isVoidedAnswer(msg.session)) break; // answer to a crossed notice
        if (!(await answerNotice(conn, msg, ctx))) return;
        break;
      case "release":
        release(conn, ctx);
        break;
      case "pong":
        break;
      default:
        throw new ProtocolError(`Unexpected ${msg.kind.toUpperCase()} from a device`);
    }
  }
}

/** A data link's loop on the accepting relay: ROUTE requests and their sessions. */
export async function linkLoop(conn: RelayConn, ctx: RelayContext): Promise<void> {
  for (;;) {
    const msg = await nextMessage(conn);
    if (msg === null) return;
    switch (msg.kind) {
      case "route":
        conn.beginConnect("ROUTE", msg.requester);
        if (await connect(conn, msg, ctx) && !(await runSession(conn, ctx))) return;
        break;
      case "release":
        release(conn, ctx);
        break;
      default:
        throw new ProtocolError(`Unexpected ${msg.kind.toUpperCase()} on a relay data link`);
    }
  }
}

/**
 * The target's answer to a notice. On ACCEPT the session starts here and the notice's
 * requester is told through the notice's single outcome; if the answer lost the race
 * (the timeout already fired), the device is told END(aborted) and ends the session.
 * False when the connection ended with the session.
 */
async function answerNotice(
  conn: RelayConn,
  msg: Extract<Message, { kind: "accept" | "reject" }>,
  ctx: RelayContext,
): Promise<boolean> {
  const notice = conn.answered(msg.session, msg.kind.toUpperCase());
  if (msg.kind === "reject") {
    notice.settle({ kind: "rejected", message: msg.message });
    conn.announceIdle();
    return true;
  }
  const session = new RelaySession<SessionSide>(notice.id, notice.requester, conn, {
    now: ctx.now,
    onBytes: (n) => ctx.metrics.bytesRelayed(n),
  });
  conn.enterSession(session);
  if (!notice.settle({ kind: "accepted", session })) void session.abort(notice.requester);
  ctx.devices.changed(conn.deviceId);
  ctx.logger.debug("session started", {
    session: session.id,
    from: notice.request.requester,
    to: conn.deviceId,
    via: notice.requester.kind === "link" ? notice.requester.linkPeer : undefined,
  });
  return await runSession(conn, ctx);
}

/** Runs this side of the session; false when the connection ended with it. */
async function runSession(conn: RelayConn, ctx: RelayContext): Promise<boolean> {
  const session = conn.session!;
  const result = await pumpSession(session, conn);
  if (result === "eof") return false;
  conn.ended();
  ctx.logger.debug("end", { session: session.id, device: conn.deviceId });
  return true;
}

/** Handles RELEASE: the connection is idle again once both sides have ended. */
function release(conn: RelayConn, ctx: RelayContext) {
  const session = conn.released();
  if (conn.kind === "device") ctx.devices.changed(conn.deviceId);
  if (session.a === conn) {
    ctx.logger.debug("session ended", {
      session: session.id,
      from: session.a.endpointId,
      to: session.b.endpointId,
      bytesSent: session.bytes.ab,
      bytesReceived: session.bytes.ba,
    });
  }
}

/** LIST and STATUS: a directory outage is answered, not punished by dropping the device. */
async function answerQuery(
  conn: RelayConn,
  msg: Extract<Message, { kind: "list" | "status" }>,
  ctx: RelayContext,
): Promise<void> {
  let answer;
  try {
    answer = msg.kind === "list"
      ? await ctx.directory.list(msg.includeOffline)
      : await ctx.directory.lookup(msg.id);
  } catch (e) {
    ctx.logger.warn("directory unavailable", { error: String(e) });
    await conn.framed.send({
      kind: "error",
      code: ErrorCode.DirectoryUnavailable,
      message: "Relay cannot read the directory; retry later",
    });
    return;
  }
  if (Array.isArray(answer)) await sendList(conn, answer);
  else await conn.framed.send({ kind: "statusResult", entry: answer });
}

/** Sends a directory listing as one or more LIST_RESULT frames (each under the maximum). */
async function sendList(conn: RelayConn, entries: DirectoryEntry[]): Promise<void> {
  let start = 0;
  let size = 256;
  do {
    const chunk = entries.slice(start, start + size);
    const more = start + chunk.length < entries.length;
    let frame: Uint8Array;
    try {
      frame = encodeMessage({ kind: "listResult", entries: chunk, more });
    } catch (e) {
      if (!(e instanceof RangeError) || size === 1) throw e;
      size = Math.max(1, size >> 1); // too big for one frame: halve and retry
      continue;
    }
    await conn.framed.write(frame);
    start += chunk.length;
  } while (start < entries.length);
}

/** Logs a device out: revokes its tickets and closes every connection it has here. */
export function logout(id: string, ctx: RelayContext): void {
  ctx.logins.revoke(id);
  const device = ctx.devices.get(id);
  if (device === undefined) return;
  ctx.logger.info("logout", { device: id });
  for (const c of [...device.conns]) c.framed.close();
}
