/**
 * One device connection on the relay: login, control messages, and its side of a
 * session. The connection's own loop is the only reader of its socket; other tasks only
 * write to it (serialised by {@link FramedConn}).
 *
 * @module
 */

import { FramedConn, isClosedError } from "../shared/framed_conn.ts";
import type { Logger } from "../shared/log.ts";
import {
  DeviceState,
  ERROR_CODE_NAMES,
  ErrorCode,
  FILE_ATTRIBUTE,
  FILE_SERVICE,
  PROTOCOL_VERSION,
  Role,
} from "../shared/protocol/constants.ts";
import type { Message } from "../shared/protocol/messages.ts";
import { checkVersion } from "../shared/protocol/messages.ts";
import { FrameTooLargeError, MalformedMessageError, ProtocolError } from "../shared/errors.ts";
import type { CredentialCache } from "./credentials.ts";
import type { Directory } from "./directory.ts";
import type { LocalDevices } from "./local_devices.ts";
import { pumpSession, RelaySession, type SessionSide } from "./session.ts";
import type { LoginThrottle } from "./throttle.ts";

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
}

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
  | { kind: "gone" };

/** A notice sent on a target connection, awaiting ACCEPT or REJECT. */
interface PendingNotice {
  readonly session: string;
  readonly requester: RelayConn;
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
  /** Device ID once logged in. */
  deviceId = "";
  /** Life-cycle state; also set by the requester's loop when a session starts. */
  state: ConnState = "hello";
  /** The session while in "session"/"ending" (set by whichever loop starts it). */
  session: RelaySession<RelayConn> | null = null;
  /** The notice this connection was sent (set by the requester's loop). */
  notice: PendingNotice | null = null;
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
    return this.session === null ? null : this.session.peerOf(this).deviceId;
  }

  /** Records activity. */
  touch(): void {
    this.lastSeen = this.#now();
  }
}

/** Serves one connection until it closes. Never throws. */
export async function serveConnection(conn: RelayConn, ctx: RelayContext): Promise<void> {
  try {
    if (await login(conn, ctx)) await controlLoop(conn, ctx);
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

/** Reads HELLO and LOGIN, checks them, answers. True when logged in. */
async function login(conn: RelayConn, ctx: RelayContext): Promise<boolean> {
  const hello = await conn.framed.readMessage();
  if (hello === null) return false;
  if (hello.kind !== "hello") {
    throw new ProtocolError(`Expected HELLO as the first message, got ${hello.kind}`);
  }
  const versionError = checkVersion(hello.version, PROTOCOL_VERSION);
  if (versionError !== null) throw new ProtocolError(versionError, ErrorCode.UnsupportedVersion);
  if (hello.role !== Role.Device) {
    throw new ProtocolError("This relay does not accept relay links on this listener");
  }
  const request = await conn.framed.readMessage();
  if (request === null) return false;
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
    return false;
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
  return true;
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
        await conn.framed.send({
          kind: "listResult",
          entries: await ctx.directory.list(msg.includeOffline),
        });
        break;
      case "status":
        await conn.framed.send({
          kind: "statusResult",
          entry: await ctx.directory.lookup(msg.id),
        });
        break;
      case "connect":
        expectState(conn, "idle", msg);
        if (await connect(conn, msg.target, msg.service, ctx)) {
          if (!(await runSession(conn, ctx))) return;
        }
        break;
      case "accept":
      case "reject": {
        const notice = conn.notice;
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
      case "release": {
        const session = conn.session;
        if (conn.state !== "ending" || session === null || !session.bothEnded) {
          throw new ProtocolError("RELEASE before both sides sent END");
        }
        conn.session = null;
        conn.state = "idle";
        ctx.devices.changed(conn.deviceId);
        if (session.a === conn) {
          ctx.logger.info("session ended", {
            session: session.id,
            from: session.a.deviceId,
            to: session.b.deviceId,
            bytesSent: session.bytes.ab,
            bytesReceived: session.bytes.ba,
          });
        }
        break;
      }
      case "pong":
        break;
      default:
        throw new ProtocolError(`Unexpected ${msg.kind.toUpperCase()} from a device`);
    }
  }
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
  const session = new RelaySession(notice.session, requester, target);
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
  ctx.devices.changed(requester.deviceId);
  ctx.devices.changed(target.deviceId);
  ctx.logger.info("session started", {
    session: session.id,
    from: requester.deviceId,
    to: target.deviceId,
  });
}

/**
 * Handles CONNECT on the requester's loop. True when the session started (the
 * requester must then run its side); false after a REJECT was sent.
 */
async function connect(
  conn: RelayConn,
  target: string,
  service: string,
  ctx: RelayContext,
): Promise<boolean> {
  const reject = async (code: ErrorCode, message: string) => {
    ctx.logger.info("connect refused", {
      from: conn.deviceId,
      to: target,
      code: ERROR_CODE_NAMES[code],
    });
    await conn.framed.send({ kind: "reject", session: "", code, message });
    return false;
  };
  const entry = await ctx.directory.lookup(target);
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
  if (entry.relay !== ctx.name) {
    return reject(
      ErrorCode.TargetUnreachable,
      `Device "${target}" is on relay "${entry.relay}", and this relay has no route to it`,
    );
  }
  const targetConn = ctx.devices.pickIdle(target, conn);
  if (targetConn === undefined) {
    return reject(
      ErrorCode.TargetBusy,
      `Device "${target}" has no idle connection: all are in sessions`,
    );
  }
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
  targetConn.notice = { session, requester: conn, settle };
  const timer = setTimeout(() => settle({ kind: "timeout" }), ctx.answerTimeoutMs);
  try {
    await targetConn.framed.send({
      kind: "notice",
      session,
      requester: conn.deviceId,
      requesterType: ctx.devices.get(conn.deviceId)?.type ?? "",
      service,
    });
  } catch {
    settle({ kind: "gone" });
  }
  const outcome = await answer.promise;
  clearTimeout(timer);
  switch (outcome.kind) {
    case "accepted":
      return true;
    case "rejected":
      conn.state = "idle";
      return reject(
        ErrorCode.TargetRejected,
        `Device "${target}" refused the connection${outcome.message ? `: ${outcome.message}` : ""}`,
      );
    case "timeout":
      conn.state = "idle";
      if (targetConn.notice?.session === session) {
        // Its answer can no longer be trusted to arrive in order: drop that connection.
        targetConn.notice = null;
        targetConn.framed.close();
      }
      return reject(
        ErrorCode.TargetTimeout,
        `Device "${target}" did not answer within ${ctx.answerTimeoutMs} ms`,
      );
    case "gone":
      conn.state = "idle";
      return reject(
        ErrorCode.TargetBusy,
        `Device "${target}" closed its connection before answering`,
      );
    default: {
      const never: never = outcome;
      throw new TypeError(`Unhandled outcome ${JSON.stringify(never)}`);
    }
  }
}

/** Logs a device out: closes every connection it has here. */
export function logout(id: string, ctx: RelayContext): void {
  const device = ctx.devices.get(id);
  if (device === undefined) return;
  ctx.logger.info("logout", { device: id });
  for (const c of [...device.conns]) c.framed.close();
}
