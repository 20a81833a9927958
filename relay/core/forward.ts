/**
 * Forwarding a request toward the relay that holds the target, over a pooled data link
 * to the next hop. Runs on the requester's loop. The answer (ACCEPT or REJECT) comes
 * back on the same link; on ACCEPT the link becomes this session's far side, pumped by
 * a task of its own ({@link pumpLink}) that returns the link to the pool after RELEASE.
 *
 * @module
 */

import { ConnectionClosedError } from "../../shared/errors.ts";
import type { FramedConn } from "../../shared/framed_conn.ts";
import { ErrorCode } from "../../shared/protocol/constants.ts";
import type { Message } from "../../shared/protocol/messages.ts";
import type { Hop } from "../directory.ts";
import type { DialedLink } from "../mesh/link_auth.ts";
import type { RelayConn } from "./conn.ts";
import type { ConnectRequest, RelayContext } from "./context.ts";
import { MAX_HOPS, NOTICE_TIMEOUTS, type Refuse } from "./context.ts";
import { pumpSession, RelaySession, type SessionSide } from "./session.ts";

/** The far side of a forwarded session on the relay that forwarded it: a data link. */
class LinkSide implements SessionSide {
  constructor(readonly framed: FramedConn, readonly endpointId: string) {}
  touch(): void {}
}

/** Extra time a link's answer may take beyond the target relay's notices. */
const LINK_ANSWER_MARGIN_MS = 5000;

/** Forwards `request`; true when the session started. */
export async function forward(
  conn: RelayConn,
  request: ConnectRequest,
  targetRelay: string,
  refuse: Refuse,
  ctx: RelayContext,
): Promise<boolean> {
  const unreachable = (why: string) =>
    refuse(
      ErrorCode.TargetUnreachable,
      `Device "${request.target}" is on relay "${targetRelay}": ${why}`,
    );
  if (ctx.links === null) return unreachable("this relay has no links to other relays");
  if (request.hops >= MAX_HOPS) return unreachable(`more than ${MAX_HOPS} relays on the way`);
  let hop;
  try {
    hop = await ctx.directory.nextHop(targetRelay);
  } catch (e) {
    return unreachable(`no route (${e instanceof Error ? e.message : e})`);
  }
  if (hop === null) return unreachable("no route to it");
  const session = crypto.randomUUID();
  for (let attempt = 0; attempt < 2; attempt++) {
    let link;
    try {
      link = await ctx.links.acquire(hop, { forceFresh: attempt > 0 });
    } catch (e) {
      return unreachable(
        `cannot reach relay "${hop.name}" (${e instanceof Error ? e.message : e})`,
      );
    }
    const answer = await askOverLink(link.framed, {
      kind: "route",
      session,
      requester: request.requester,
      requesterType: request.requesterType,
      target: request.target,
      service: request.service,
      hops: request.hops + 1,
    }, ctx.answerTimeoutMs * NOTICE_TIMEOUTS + LINK_ANSWER_MARGIN_MS);
    if (answer === null) {
      ctx.links.discard(link);
      if (!link.fresh) continue; // a pooled link that died while idle: retry with a new one
      return unreachable(`relay "${hop.name}" dropped the link`);
    }
    if (answer.kind === "reject") {
      ctx.links.release(hop, link);
      return refuse(answer.code, answer.message);
    }
    if (answer.kind !== "accept") {
      ctx.links.discard(link);
      return unreachable(`relay "${hop.name}" answered ${answer.kind}`);
    }
    const far = new LinkSide(link.framed, request.target);
    const relaySession = new RelaySession<SessionSide>(answer.session, conn, far, {
      now: ctx.now,
      onBytes: (n) => ctx.metrics.bytesRelayed(n),
    });
    conn.enterSession(relaySession);
    ctx.metrics.setup("ok");
    void conn.framed.trySend({ kind: "accept", session: answer.session, peer: answer.peer });
    relaySession.markReady();
    if (conn.kind === "device") ctx.devices.changed(conn.deviceId);
    ctx.logger.debug("session forwarded", {
      session: answer.session,
      from: request.requester,
      to: request.target,
      via: hop.name,
    });
    void pumpLink(relaySession, far, hop, link, ctx);
    return true;
  }
  return unreachable(`relay "${hop.name}" keeps dropping links`);
}

/** Sends ROUTE and reads the answer within `deadlineMs`; null when the link failed. */
async function askOverLink(
  framed: FramedConn,
  route: Message,
  deadlineMs: number,
): Promise<Message | null> {
  const timer = setTimeout(() => framed.close(), deadlineMs);
  try {
    await framed.send(route);
    return await framed.readMessage();
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Pumps a forwarded session's link into the local side; once both directions ended,
 * RELEASEs the link and returns it to the pool. A link that breaks aborts the session.
 */
async function pumpLink(
  session: RelaySession<SessionSide>,
  far: LinkSide,
  hop: Hop,
  link: DialedLink,
  ctx: RelayContext,
): Promise<void> {
  try {
    const result = await pumpSession(session, far);
    if (result === "eof") throw new ConnectionClosedError("link closed mid-session");
    // The far side ended; ours may still send for a long while. After its END the far
    // relay sends nothing before our RELEASE, so anything that comes on the link now, its
    // close above all (the far device or relay died), means our side sends to no one.
    const onLink = far.framed.fill().then(() => "link" as const);
    if (
      await Promise.race([session.whenBothEnded.then(() => "ended" as const), onLink]) === "link"
    ) {
      throw new ConnectionClosedError("link closed (or spoke) after the far side's END");
    }
    if (session.isGone(session.a)) {
      // The local side vanished: its END(aborted) (or a close, mid-frame) went on the link.
      if (far.framed.closed) throw new ConnectionClosedError("link closed mid-frame");
    }
    await far.framed.send({ kind: "release" });
    ctx.links!.release(hop, link);
  } catch (e) {
    ctx.logger.info("session aborted", { session: session.id, relay: hop.name, error: String(e) });
    ctx.links!.discard(link);
    await session.abort(far);
  }
}
