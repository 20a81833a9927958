/**
 * A connection request on the requester's loop: checks, directory lookup, then either a
 * notice to one of the target's idle connections here or forwarding to the target's
 * relay (forward.ts).
 *
 * A notice that times out closes that target connection (its answer can no longer be
 * trusted to arrive in order; it is most likely dead, e.g. behind a NAT that lost its
 * state) and is offered to the target's next idle connection, as is one that could not
 * be sent. The requester's own state changes only here, on its own loop.
 *
 * Refused without a round trip to the target: a requester over its rate (RateLimited,
 * connect_rate.ts), a service the target does not declare (ServiceUnsupported). A
 * target whose connections for the service are all busy is waited for, up to
 * `limits.targetWaitMs` and behind at most `limits.maxWaitingPerTarget` other requests
 * (waits.ts), before the request is refused TargetBusy: a burst is absorbed while the
 * target's pool refills.
 *
 * @module
 */

import {
  DeviceState,
  ERROR_CODE_NAMES,
  ErrorCode,
  FILE_ATTRIBUTE,
  FILE_SERVICE,
  MAX_ID_BYTES,
  MAX_SERVICE_BYTES,
} from "../../shared/protocol/constants.ts";
import { encodeMessage } from "../../shared/protocol/messages.ts";
import type { RelayConn } from "./conn.ts";
import { type ConnectRequest, NOTICE_TIMEOUTS, type Refuse, type RelayContext } from "./context.ts";
import { forward } from "./forward.ts";
import { Notice } from "./notice.ts";
import type { RelaySession, SessionSide } from "./session.ts";

/** Idle connections of a target tried for one request before it counts as busy. */
export const NOTICE_ATTEMPTS = 4;

const utf8 = new TextEncoder();

/**
 * Handles CONNECT (from a device) or ROUTE (from a relay) on the requester's loop. True
 * when the session started (the requester must then run its side); false after a
 * REJECT was sent. The connection must be "connecting".
 */
export async function connect(
  conn: RelayConn,
  request: ConnectRequest,
  ctx: RelayContext,
): Promise<boolean> {
  const { target, service } = request;
  const refuse: Refuse = async (code, message) => {
    conn.connectFailed();
    ctx.metrics.setup(code);
    ctx.logger.info("connect refused", {
      from: request.requester,
      to: target,
      code: ERROR_CODE_NAMES[code],
    });
    await conn.framed.send({ kind: "reject", session: "", code, message });
    return false;
  };
  if (utf8.encode(target).length > MAX_ID_BYTES) {
    return refuse(ErrorCode.FieldTooLong, `Target ID longer than ${MAX_ID_BYTES} bytes`);
  }
  if (utf8.encode(service).length > MAX_SERVICE_BYTES) {
    return refuse(ErrorCode.FieldTooLong, `Service name longer than ${MAX_SERVICE_BYTES} bytes`);
  }
  if (conn.kind === "device") {
    const waitMs = ctx.connectRate.take(conn.deviceId, ctx.now());
    if (waitMs > 0) {
      return refuse(
        ErrorCode.RateLimited,
        `Device "${conn.deviceId}" sends connection requests faster than the relay allows ` +
          `(${ctx.limits.connectRate}/s, burst ${ctx.limits.connectBurst}); retry in ${waitMs} ms`,
      );
    }
  }
  if (
    conn.kind === "device" &&
    ctx.devices.sessionCount(conn.deviceId) >= ctx.limits.maxSessionsPerDevice
  ) {
    return refuse(
      ErrorCode.SessionLimit,
      `Device "${conn.deviceId}" already runs ${ctx.limits.maxSessionsPerDevice} sessions ` +
        `(the relay's limit); end one first`,
    );
  }
  // A device logged in here is found without asking the directory (the hot path).
  let entry = ctx.devices.entry(target) ?? null;
  try {
    entry ??= await ctx.directory.lookup(target);
  } catch (e) {
    ctx.logger.warn("directory unavailable", { error: String(e) });
    return refuse(ErrorCode.DirectoryUnavailable, "Relay cannot read the directory; retry later");
  }
  if (entry === null) {
    return refuse(ErrorCode.UnknownTarget, `Device "${target}" is not registered`);
  }
  if (entry.state === DeviceState.Offline) {
    return refuse(ErrorCode.TargetOffline, `Device "${target}" is not logged in`);
  }
  if (entry.state === DeviceState.Unreachable) {
    return refuse(
      ErrorCode.TargetUnreachable,
      `Device "${target}" is on relay "${entry.relay}", which is unreachable`,
    );
  }
  if (service === FILE_SERVICE && !entry.attributes.includes(FILE_ATTRIBUTE)) {
    return refuse(
      ErrorCode.ServiceUnsupported,
      `Device "${target}" (type ${entry.type}) does not receive files: it lacks the ` +
        `${FILE_ATTRIBUTE} attribute`,
    );
  }
  if (!entry.services.includes(service)) {
    return refuse(
      ErrorCode.ServiceUnsupported,
      `Device "${target}" does not offer service "${service}"` +
        (entry.services.length > 0 ? ` (it offers: ${entry.services.join(", ")})` : ""),
    );
  }
  if (entry.relay !== ctx.name) return await forward(conn, request, entry.relay, refuse, ctx);
  if (ctx.devices.sessionCount(target) >= ctx.limits.maxSessionsPerDevice) {
    return refuse(
      ErrorCode.SessionLimit,
      `Device "${target}" already runs ${ctx.limits.maxSessionsPerDevice} sessions ` +
        `(the relay's limit); retry later`,
    );
  }
  // One requester may hold at most half of a target's sessions: the rest stays for others.
  const perPair = Math.max(1, Math.floor(ctx.limits.maxSessionsPerDevice / 2));
  if (ctx.devices.sessionCount(target, request.requester) >= perPair) {
    return refuse(
      ErrorCode.SessionLimit,
      `"${request.requester}" already runs ${perPair} sessions with "${target}" (half of ` +
        `the relay's per-device limit); end one first`,
    );
  }
  // Counted from the check on (synchronously after it): requests waiting for a notice or
  // an answer hold their slot, so a burst of CONNECTs cannot pass the limits together.
  const release = ctx.devices.reserveSession(target, request.requester);
  try {
    return await notifyLocal(conn, request, refuse, ctx);
  } finally {
    release();
  }
}

/**
 * Offers the request to the target's idle connections for the service, newest first;
 * when none is idle, waits in the target's queue for one to become idle.
 */
async function notifyLocal(
  conn: RelayConn,
  request: ConnectRequest,
  refuse: Refuse,
  ctx: RelayContext,
): Promise<boolean> {
  const { target, service } = request;
  const deadline = ctx.now() + ctx.limits.targetWaitMs;
  let timeouts = 0;
  let busy = "all are in sessions";
  let woken = false;
  for (let attempt = 0; attempt < NOTICE_ATTEMPTS;) {
    // First come, first served: a new request queues behind those already waiting.
    const queued = !woken && ctx.waits.waiting(target, service) > 0;
    const targetConn = queued ? undefined : ctx.devices.pickIdle(target, conn, service);
    if (targetConn === undefined) {
      if (timeouts > 0) break; // a notice went unanswered: the target is not refilling
      if (conn.framed.closed) return false; // nobody left to wait for
      const result = await ctx.waits.wait(target, service, deadline - ctx.now(), woken);
      if (conn.framed.closed) {
        // The requester left while it waited; a wake-up it got goes to the next in line.
        if (result === "woken") ctx.waits.wake(target, [service]);
        return false;
      }
      if (result === "woken") {
        woken = true;
        continue;
      }
      if (result === "full") {
        busy = `${ctx.limits.maxWaitingPerTarget} requests already wait for it`;
      } else if (ctx.limits.targetWaitMs > 0) {
        busy = `all are in sessions (waited ${ctx.limits.targetWaitMs} ms)`;
      }
      break;
    }
    woken = false;
    attempt++;
    const notice = new Notice<RelayConn>(crypto.randomUUID(), conn, request);
    const outcome = await offerNotice(targetConn, notice, ctx);
    switch (outcome.kind) {
      case "accepted":
        return startRequesterSide(conn, outcome.session, ctx);
      case "rejected":
        return refuse(
          ErrorCode.TargetRejected,
          `Device "${target}" refused the connection${
            outcome.message ? `: ${outcome.message}` : ""
          }`,
        );
      case "timeout":
        ctx.logger.info("notice timed out", {
          device: target,
          remote: targetConn.remote,
          afterMs: ctx.answerTimeoutMs,
        });
        if (++timeouts < NOTICE_TIMEOUTS) continue; // that connection was closed; offer the next
        return refuse(
          ErrorCode.TargetTimeout,
          `Device "${target}" did not answer within ${ctx.answerTimeoutMs} ms`,
        );
      case "gone": // the connection closed under the notice
      case "crossed": // the device used that connection for a request of its own
        continue;
      default: {
        const never: never = outcome;
        throw new TypeError(`Unhandled outcome ${JSON.stringify(never)}`);
      }
    }
  }
  if (timeouts > 0) {
    return refuse(
      ErrorCode.TargetTimeout,
      `Device "${target}" did not answer within ${ctx.answerTimeoutMs} ms`,
    );
  }
  return refuse(
    ErrorCode.TargetBusy,
    `Device "${target}" has no idle connection for "${service}": ${busy}`,
  );
}

/**
 * Sends a NOTICE on `targetConn` and waits for its single outcome (bounded by the answer
 * timeout). A target connection that is no longer idle, or whose NOTICE cannot be
 * written, counts as gone.
 */
async function offerNotice(targetConn: RelayConn, notice: Notice<RelayConn>, ctx: RelayContext) {
  const frame = encodeMessage({
    kind: "notice",
    session: notice.id,
    requester: notice.request.requester,
    requesterType: notice.request.requesterType,
    service: notice.request.service,
  });
  if (!targetConn.offer(notice)) return { kind: "gone" } as const;
  notice.startTimer(ctx.answerTimeoutMs, () => targetConn.framed.close(), ctx.setTimer);
  targetConn.framed.write(frame).catch(() => {
    if (notice.settle({ kind: "gone" })) targetConn.withdrawNotice(notice);
  });
  return await notice.outcome;
}

/** The requester's side of an accepted session: ACCEPT to its device, then data. */
function startRequesterSide(
  conn: RelayConn,
  session: RelaySession<SessionSide>,
  ctx: RelayContext,
): boolean {
  conn.enterSession(session);
  ctx.metrics.setup("ok");
  // Queued before the session is marked ready: no session byte overtakes the ACCEPT.
  void conn.framed.trySend({ kind: "accept", session: session.id, peer: session.b.endpointId });
  session.markReady();
  if (conn.kind === "device") ctx.devices.changed(conn.deviceId);
  return true;
}
