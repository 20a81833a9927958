/**
 * One device connection on the relay: login, control messages, and its side of a
 * session. The connection's own loop is the only reader of its socket; other tasks only
 * write to it (serialised by {@link FramedConn}).
 *
 * @module
 */

import { type FramedConn, isClosedError } from "../../shared/framed_conn.ts";
import type { Logger } from "../../shared/log.ts";
import {
  DeviceState,
  ERROR_CODE_NAMES,
  ErrorCode,
  FILE_ATTRIBUTE,
  FILE_SERVICE,
  PROTOCOL_VERSION,
  Role,
} from "../../shared/protocol/constants.ts";
import {
  type DirectoryEntry,
  encodeMessage,
  LinkPurposes,
  type Message,
} from "../../shared/protocol/messages.ts";
import { checkVersion } from "../../shared/protocol/messages.ts";
import {
  ConnectionClosedError,
  FrameTooLargeError,
  MalformedMessageError,
  ProtocolError,
} from "../../shared/errors.ts";
import type { CredentialCache } from "../login/credentials.ts";
import type { Directory } from "../directory.ts";
import type { LocalDevices } from "./local_devices.ts";
import { pumpSession, RelaySession, type SessionSide } from "./session.ts";
import type { LinkPool } from "../mesh/links.ts";
import { acceptorMac, type DialedLink, dialerMac, macEquals, newNonce } from "../mesh/link_auth.ts";
import type { Hop } from "../directory.ts";
import type { LoginThrottle } from "../login/throttle.ts";

/** Everything a connection needs from its relay. */
export interface RelayContext {
  /** This relay's name. */
  readonly name: string;
  /** Where devices are looked up. */
  readonly directory: Directory;
  /** Devices logged in here. */
  readonly devices: LocalDevices<RelayConn>;
  /** Login failure throttle. */
  readonly throttle: LoginThrottle;
  /** Password verification with cache. */
  readonly credentials: CredentialCache;
  /** Logger. */
  readonly logger: Logger;
  /** Clock, ms. */
  readonly now: () => number;
  /** Keep-alive interval the relay asks devices to use. */
  readonly keepaliveMs: number;
  /** How long a target may take to answer a connection-request notice. */
  readonly answerTimeoutMs: number;
  /** True once shutdown began: new logins are refused. */
  readonly shuttingDown: boolean;
  /** Mesh secret; null when this relay accepts no relay links. */
  readonly linkSecret: Uint8Array | null;
  /** This relay's advertised address, `HOST:PORT`. */
  readonly advertisedAddress: string;
  /** Data links to other relays; null when this relay forwards nowhere. */
  readonly links: LinkPool | null;
  /**
   * Takes over an authenticated control link (mesh); resolves when it closes. Null when
   * this relay runs no mesh.
   */
  readonly onControlLink:
    | ((conn: RelayConn, peer: { name: string; address: string }) => Promise<void>)
    | null;
}

/** A connection request, from a device's CONNECT or a relay's ROUTE. */
export interface ConnectRequest {
  /** Requesting device. */
  requester: string;
  /** Its type. */
  requesterType: string;
  /** Target device. */
  target: string;
  /** Service name ("file", or "" for a plain byte stream). */
  service: string;
  /** Relays crossed so far. */
  hops: number;
}

/** Most relays a request may cross (stops a routing loop from looping). */
export const MAX_HOPS = 16;

/** Connection life cycle on the relay. */
export type ConnState =
  | "hello" // waiting for HELLO + LOGIN
  | "idle" // logged in, available for notices
  | "connecting" // sent CONNECT, waiting for the target's answer
  | "noticed" // received a NOTICE, the relay waits for ACCEPT/REJECT
  | "session" // dedicated to a session, passing data
  | "ending" // this side sent END; waits for RELEASE
  | "closed";

/** The answer to a notice, as seen by the requester's loop. */
type NoticeOutcome =
  | { kind: "accepted" }
  | { kind: "rejected"; message: string }
  | { kind: "timeout" }
  | { kind: "gone" }
  | { kind: "crossed" };

/** Idle connections of a target tried for one request before it counts as busy. */
const NOTICE_ATTEMPTS = 4;

/** A notice sent on a target connection, awaiting ACCEPT or REJECT. */
interface PendingNotice {
  readonly session: string;
  readonly requester: RelayConn;
  readonly requesterId: string;
  readonly settle: (outcome: NoticeOutcome) => void;
}

/** A device connection. Fields are owned by the connection's own loop unless noted. */
export class RelayConn implements SessionSide {
  /** Framed socket. */
  readonly framed: FramedConn;
  /** Remote address, for logs and the login throttle. */
  readonly remote: string;
  /** When the TCP connection was accepted (relay clock). */
  readonly openedAt: number;
  /** A device's connection, or a link from another relay. */
  kind: "device" | "link" = "device";
  /** Device ID once logged in ("" for links). */
  deviceId = "";
  /** The device at the far end: this device, or for a link the requester it carries. */
  endpointId = "";
  /** For links: the other relay's name. */
  linkPeer = "";
  /** For links: the address the other relay advertises. */
  linkAddress = "";
  /** Life-cycle state; also set by the requester's loop when a session starts. */
  state: ConnState = "hello";
  /** The session while in "session"/"ending" (set by whichever loop starts it). */
  session: RelaySession<SessionSide> | null = null;
  /** The notice this connection was sent (set by the requester's loop). */
  notice: PendingNotice | null = null;
  /** Session ID of the last notice voided by a crossing CONNECT (a late answer is ignored). */
  voidedNotice = "";
  /** Last time a frame or chunk arrived (relay clock). */
  lastSeen: number;
  readonly #now: () => number;

  /** Wraps an accepted socket. */
  constructor(framed: FramedConn, remote: string, now: () => number) {
    this.framed = framed;
    this.remote = remote;
    this.#now = now;
    this.openedAt = now();
    this.lastSeen = this.openedAt;
  }

  /** True while the connection can take a notice. */
  get isIdle(): boolean {
    return this.state === "idle";
  }

  /** The session peer's device ID, or null. */
  get peerId(): string | null {
    return this.session === null ? null : this.session.peerOf(this).endpointId;
  }

  /** Records activity. */
  touch(): void {
    this.lastSeen = this.#now();
  }
}

/** Serves one connection until it closes. Never throws. */
export async function serveConnection(conn: RelayConn, ctx: RelayContext): Promise<void> {
  try {
    const role = await login(conn, ctx);
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

async function reportFailure(conn: RelayConn, ctx: RelayContext, e: unknown) {
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
    await conn.framed.trySend({ kind: "error", code, message: e.message });
    return;
  }
  if (isClosedError(e)) return;
  ctx.logger.error("connection failed", {
    remote: conn.remote,
    device: conn.deviceId,
    error: String(e),
  });
}

function cleanup(conn: RelayConn, ctx: RelayContext) {
  const previous = conn.state;
  conn.state = "closed";
  conn.notice?.settle({ kind: "gone" });
  conn.notice = null;
  const session = conn.session;
  if (session !== null && !session.hasEnded(conn)) {
    ctx.logger.info("session aborted", { session: session.id, device: conn.deviceId });
    void session.abort(conn);
  }
  conn.framed.close();
  if (conn.deviceId !== "" && previous !== "hello") ctx.devices.detach(conn);
}

/** What a connection turned out to be after its handshake. */
type ConnRole = "device" | "data" | "control" | null;

/** Reads HELLO and LOGIN (or a relay link handshake), checks them, answers. */
async function login(conn: RelayConn, ctx: RelayContext): Promise<ConnRole> {
  const hello = await conn.framed.readMessage();
  if (hello === null) return null;
  if (hello.kind !== "hello") {
    throw new ProtocolError(`Expected HELLO as the first message, got ${hello.kind}`);
  }
  const versionError = checkVersion(hello.version, PROTOCOL_VERSION);
  if (versionError !== null) throw new ProtocolError(versionError, ErrorCode.UnsupportedVersion);
  if (hello.role === Role.Relay) return await acceptLink(conn, ctx);
  const request = await conn.framed.readMessage();
  if (request === null) return null;
  if (request.kind !== "login") {
    throw new ProtocolError(`Expected LOGIN after HELLO, got ${request.kind}`);
  }
  const refuse = async (code: ErrorCode, message: string, retryAfterMs = 0) => {
    await conn.framed.trySend({
      kind: "loginResult",
      code,
      keepaliveMs: 0,
      retryAfterMs,
      relay: ctx.name,
      message,
    });
    return null;
  };
  if (ctx.shuttingDown) return refuse(ErrorCode.ShuttingDown, "Relay is shutting down");
  const address = conn.remote.replace(/:\d+$/, "");
  const wait = ctx.throttle.check(address, request.id);
  if (wait > 0) {
    ctx.logger.warn("login throttled", { remote: conn.remote, device: request.id, wait });
    return refuse(
      ErrorCode.Throttled,
      `Too many failed logins: retry in ${Math.ceil(wait / 1000)} s`,
      wait,
    );
  }
  let reg;
  try {
    reg = await ctx.directory.registry.get(request.id);
  } catch (e) {
    ctx.logger.error("registry unavailable", { error: String(e) });
    return refuse(ErrorCode.DirectoryUnavailable, "Relay cannot read its registry; retry later");
  }
  const ok = reg !== undefined && await ctx.credentials.verify(reg, request.password);
  if (!ok || reg === undefined) {
    ctx.throttle.recordFailure(address, request.id);
    ctx.logger.warn("login refused", {
      remote: conn.remote,
      device: request.id,
      reason: reg === undefined ? "unregistered" : "wrong password",
    });
    return refuse(ErrorCode.AuthFailed, "Unknown device or wrong password");
  }
  ctx.throttle.recordSuccess(address, request.id);
  conn.deviceId = reg.id;
  conn.endpointId = reg.id;
  conn.state = "idle";
  conn.touch();
  await conn.framed.send({
    kind: "loginResult",
    code: ErrorCode.Ok,
    keepaliveMs: ctx.keepaliveMs,
    retryAfterMs: 0,
    relay: ctx.name,
    message: "",
  });
  const isNew = ctx.devices.get(reg.id) === undefined;
  ctx.devices.attach(conn, reg.type, reg.attributes);
  if (isNew) ctx.logger.info("login", { device: reg.id, remote: conn.remote });
  else ctx.logger.debug("connection added", { device: reg.id, remote: conn.remote });
  return "device";
}

/** Runs the acceptor side of the link handshake (see link_auth.ts). */
async function acceptLink(conn: RelayConn, ctx: RelayContext): Promise<ConnRole> {
  const secret = ctx.linkSecret;
  if (secret === null) {
    throw new ProtocolError(
      "This relay accepts no relay links (no mesh secret configured)",
      ErrorCode.AuthFailed,
    );
  }
  const nonce = newNonce();
  await conn.framed.send({ kind: "linkChallenge", nonce });
  const auth = await conn.framed.readMessage();
  if (auth === null) return null;
  if (auth.kind !== "linkAuth") throw new ProtocolError(`Expected LINK_AUTH, got ${auth.kind}`);
  const expected = dialerMac(secret, nonce, auth.nonce, auth.name, auth.purpose);
  if (!macEquals(auth.mac, expected) || auth.nonce.length < 16) {
    ctx.logger.warn("relay link refused", { remote: conn.remote, relay: auth.name });
    throw new ProtocolError("Relay link refused: wrong mesh secret", ErrorCode.AuthFailed);
  }
  if (auth.purpose === LinkPurposes.Control && ctx.onControlLink === null) {
    throw new ProtocolError("This relay runs no mesh: control links are refused");
  }
  await conn.framed.send({
    kind: "linkOk",
    name: ctx.name,
    address: ctx.advertisedAddress,
    mac: acceptorMac(secret, auth.nonce, nonce, ctx.name),
  });
  conn.kind = "link";
  conn.linkPeer = auth.name;
  conn.linkAddress = auth.address;
  conn.state = "idle";
  conn.touch();
  ctx.logger.debug("relay link accepted", {
    relay: auth.name,
    purpose: auth.purpose === LinkPurposes.Control ? "control" : "data",
  });
  return auth.purpose === LinkPurposes.Control ? "control" : "data";
}

/** A data link's loop on the accepting relay: ROUTE requests and their sessions. */
async function linkLoop(conn: RelayConn, ctx: RelayContext): Promise<void> {
  for (;;) {
    const msg = await conn.framed.readMessage();
    if (msg === null) return;
    conn.touch();
    switch (msg.kind) {
      case "ping":
        await conn.framed.send({ kind: "pong", nonce: msg.nonce });
        break;
      case "route":
        expectState(conn, "idle", msg);
        conn.endpointId = msg.requester;
        if (await connect(conn, msg, ctx)) {
          if (!(await runSession(conn, ctx))) return;
        }
        break;
      case "release":
        release(conn, ctx);
        break;
      default:
        throw new ProtocolError(`Unexpected ${msg.kind.toUpperCase()} on a relay data link`);
    }
  }
}

/** Handles RELEASE: the connection is idle again once both sides have ended. */
function release(conn: RelayConn, ctx: RelayContext) {
  const session = conn.session;
  if (conn.state !== "ending" || session === null || !session.bothEnded) {
    throw new ProtocolError("RELEASE before both sides sent END");
  }
  conn.session = null;
  conn.state = "idle";
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

/** Handles control messages until the connection closes. */
async function controlLoop(conn: RelayConn, ctx: RelayContext): Promise<void> {
  for (;;) {
    const msg = await conn.framed.readMessage();
    if (msg === null) return;
    conn.touch();
    switch (msg.kind) {
      case "ping":
        await conn.framed.send({ kind: "pong", nonce: msg.nonce });
        break;
      case "logout":
        logout(conn.deviceId, ctx);
        return;
      case "list":
      case "status": {
        // A directory outage is answered, not punished by dropping the device.
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
          break;
        }
        if (Array.isArray(answer)) await sendList(conn, answer);
        else await conn.framed.send({ kind: "statusResult", entry: answer });
        break;
      }
      case "connect":
        if (conn.state === "noticed" && conn.notice !== null) {
          // The device asked on the very connection we just picked for a notice: the
          // requests crossed. The notice is void (the device ignores it); the requester
          // of that notice is offered another connection.
          const voided = conn.notice;
          conn.notice = null;
          conn.voidedNotice = voided.session;
          conn.state = "idle";
          voided.settle({ kind: "crossed" });
        }
        expectState(conn, "idle", msg);
        if (
          await connect(conn, {
            requester: conn.deviceId,
            requesterType: ctx.devices.get(conn.deviceId)?.type ?? "",
            target: msg.target,
            service: msg.service,
            hops: 0,
          }, ctx)
        ) {
          if (!(await runSession(conn, ctx))) return;
        }
        break;
      case "accept":
      case "reject": {
        const notice = conn.notice;
        if (msg.session !== "" && msg.session === conn.voidedNotice) break; // crossed: void
        if (conn.state !== "noticed" || notice === null || notice.session !== msg.session) {
          throw new ProtocolError(`Unexpected ${msg.kind.toUpperCase()}: no such notice pending`);
        }
        conn.notice = null;
        if (msg.kind === "reject") {
          conn.state = "idle";
          notice.settle({ kind: "rejected", message: msg.message });
          break;
        }
        await startSession(notice, conn, ctx);
        if (!(await runSession(conn, ctx))) return;
        break;
      }
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

function expectState(conn: RelayConn, state: ConnState, msg: Message) {
  if (conn.state !== state) {
    throw new ProtocolError(`Unexpected ${msg.kind.toUpperCase()} in state ${conn.state}`);
  }
}

/** Runs this side of the session; false when the connection ended with it. */
async function runSession(conn: RelayConn, ctx: RelayContext): Promise<boolean> {
  const session = conn.session!;
  const result = await pumpSession(session, conn);
  if (result === "eof") return false;
  conn.state = "ending";
  ctx.logger.debug("end", { session: session.id, device: conn.deviceId });
  return true;
}

/** Called on the target's loop when it accepted: binds both sides, tells the requester. */
async function startSession(notice: PendingNotice, target: RelayConn, ctx: RelayContext) {
  const requester = notice.requester;
  const session = new RelaySession<SessionSide>(notice.session, requester, target);
  target.session = session;
  target.state = "session";
  if (requester.state !== "connecting") {
    // The requester vanished while the target was deciding.
    void session.abort(requester);
    notice.settle({ kind: "gone" });
    return;
  }
  requester.session = session;
  requester.state = "session";
  // ACCEPT goes to the requester before any data the target sends: same write queue.
  await requester.framed.trySend({ kind: "accept", session: session.id, peer: target.deviceId });
  notice.settle({ kind: "accepted" });
  if (requester.kind === "device") ctx.devices.changed(requester.deviceId);
  ctx.devices.changed(target.deviceId);
  ctx.logger.debug("session started", {
    session: session.id,
    from: notice.requesterId,
    to: target.deviceId,
    via: requester.kind === "link" ? requester.linkPeer : undefined,
  });
}

/**
 * Handles CONNECT (from a device) or ROUTE (from a relay) on the requester's loop. True
 * when the session started (the requester must then run its side); false after a
 * REJECT was sent.
 */
async function connect(
  conn: RelayConn,
  request: ConnectRequest,
  ctx: RelayContext,
): Promise<boolean> {
  const { target, service } = request;
  const reject = async (code: ErrorCode, message: string) => {
    ctx.logger.info("connect refused", {
      from: request.requester,
      to: target,
      code: ERROR_CODE_NAMES[code],
    });
    await conn.framed.send({ kind: "reject", session: "", code, message });
    return false;
  };
  // A device logged in here is found without asking the directory (the hot path).
  let entry = ctx.devices.entry(target) ?? null;
  try {
    entry ??= await ctx.directory.lookup(target);
  } catch (e) {
    ctx.logger.warn("directory unavailable", { error: String(e) });
    return reject(ErrorCode.DirectoryUnavailable, "Relay cannot read the directory; retry later");
  }
  if (entry === null) {
    return reject(ErrorCode.UnknownTarget, `Device "${target}" is not registered`);
  }
  if (entry.state === DeviceState.Offline) {
    return reject(ErrorCode.TargetOffline, `Device "${target}" is not logged in`);
  }
  if (entry.state === DeviceState.Unreachable) {
    return reject(
      ErrorCode.TargetUnreachable,
      `Device "${target}" is on relay "${entry.relay}", which is unreachable`,
    );
  }
  if (service === FILE_SERVICE && !entry.attributes.includes(FILE_ATTRIBUTE)) {
    return reject(
      ErrorCode.ServiceUnsupported,
      `Device "${target}" (type ${entry.type}) does not receive files: it lacks the ` +
        `${FILE_ATTRIBUTE} attribute`,
    );
  }
  if (entry.relay !== ctx.name) return await forward(conn, request, entry.relay, reject, ctx);
  for (let attempt = 0; attempt < NOTICE_ATTEMPTS; attempt++) {
    const targetConn = ctx.devices.pickIdle(target, conn);
    if (targetConn === undefined) break;
    const outcome = await notify(conn, targetConn, request, ctx);
    switch (outcome.kind) {
      case "accepted":
        return true;
      case "rejected":
        conn.state = "idle";
        return reject(
          ErrorCode.TargetRejected,
          `Device "${target}" refused the connection${
            outcome.message ? `: ${outcome.message}` : ""
          }`,
        );
      case "timeout":
        conn.state = "idle";
        return reject(
          ErrorCode.TargetTimeout,
          `Device "${target}" did not answer within ${ctx.answerTimeoutMs} ms`,
        );
      case "gone": // the connection closed under the notice
      case "crossed": // the device used that connection for a request of its own
        conn.state = "idle";
        continue;
      default: {
        const never: never = outcome;
        throw new TypeError(`Unhandled outcome ${JSON.stringify(never)}`);
      }
    }
  }
  return reject(
    ErrorCode.TargetBusy,
    `Device "${target}" has no idle connection: all are in sessions`,
  );
}

/** Sends a NOTICE on `targetConn` and waits for its outcome (bounded by the answer timeout). */
async function notify(
  conn: RelayConn,
  targetConn: RelayConn,
  request: ConnectRequest,
  ctx: RelayContext,
): Promise<NoticeOutcome> {
  const session = crypto.randomUUID();
  const answer = Promise.withResolvers<NoticeOutcome>();
  let settled = false;
  const settle = (outcome: NoticeOutcome) => {
    if (settled) return;
    settled = true;
    answer.resolve(outcome);
  };
  conn.state = "connecting";
  targetConn.state = "noticed";
  targetConn.notice = { session, requester: conn, requesterId: request.requester, settle };
  const timer = setTimeout(() => settle({ kind: "timeout" }), ctx.answerTimeoutMs);
  try {
    await targetConn.framed.send({
      kind: "notice",
      session,
      requester: request.requester,
      requesterType: request.requesterType,
      service: request.service,
    });
  } catch {
    settle({ kind: "gone" });
  }
  const outcome = await answer.promise;
  clearTimeout(timer);
  if (outcome.kind === "timeout" && targetConn.notice?.session === session) {
    // Its answer can no longer be trusted to arrive in order: drop that connection.
    targetConn.notice = null;
    targetConn.framed.close();
  }
  return outcome;
}

/** The far side of a forwarded session on the relay that forwarded it: a data link. */
class LinkSide implements SessionSide {
  constructor(readonly framed: FramedConn, readonly endpointId: string) {}
  touch(): void {}
}

/**
 * Passes a request toward the relay that holds the target, over a pooled data link to
 * the next hop. The answer (ACCEPT or REJECT) comes back on the same link; on ACCEPT the
 * link becomes this session's far side. True when the session started.
 */
async function forward(
  conn: RelayConn,
  request: ConnectRequest,
  targetRelay: string,
  reject: (code: ErrorCode, message: string) => Promise<boolean>,
  ctx: RelayContext,
): Promise<boolean> {
  const unreachable = (why: string) =>
    reject(
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
  conn.state = "connecting";
  const session = crypto.randomUUID();
  for (let attempt = 0; attempt < 2; attempt++) {
    let link;
    try {
      link = await ctx.links.acquire(hop, { forceFresh: attempt > 0 });
    } catch (e) {
      conn.state = "idle";
      return unreachable(
        `cannot reach relay "${hop.name}" (${e instanceof Error ? e.message : e})`,
      );
    }
    let answer;
    const timer = setTimeout(() => link.framed.close(), ctx.answerTimeoutMs + 5000);
    try {
      await link.framed.send({
        kind: "route",
        session,
        requester: request.requester,
        requesterType: request.requesterType,
        target: request.target,
        service: request.service,
        hops: request.hops + 1,
      });
      answer = await link.framed.readMessage();
    } catch {
      answer = null;
    } finally {
      clearTimeout(timer);
    }
    if (answer === null) {
      ctx.links.discard(link);
      if (!link.fresh) continue; // a pooled link that died while idle: retry with a new one
      conn.state = "idle";
      return unreachable(`relay "${hop.name}" dropped the link`);
    }
    if (answer.kind === "reject") {
      conn.state = "idle";
      ctx.links.release(hop, link);
      return reject(answer.code, answer.message);
    }
    if (answer.kind !== "accept") {
      ctx.links.discard(link);
      conn.state = "idle";
      return unreachable(`relay "${hop.name}" answered ${answer.kind}`);
    }
    const far = new LinkSide(link.framed, request.target);
    const relaySession = new RelaySession<SessionSide>(answer.session, conn, far);
    conn.session = relaySession;
    conn.state = "session";
    await conn.framed.trySend({ kind: "accept", session: answer.session, peer: answer.peer });
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
  conn.state = "idle";
  return unreachable(`relay "${hop.name}" keeps dropping links`);
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
    await session.whenBothEnded;
    await link.framed.send({ kind: "release" });
    ctx.links!.release(hop, link);
  } catch (e) {
    ctx.logger.info("session aborted", { session: session.id, relay: hop.name, error: String(e) });
    ctx.links!.discard(link);
    await session.abort(far);
  }
}

/** Logs a device out: closes every connection it has here. */
export function logout(id: string, ctx: RelayContext): void {
  const device = ctx.devices.get(id);
  if (device === undefined) return;
  ctx.logger.info("logout", { device: id });
  for (const c of [...device.conns]) c.framed.close();
}
