/**
 * The first messages of a connection: HELLO, then a device's SCRAM login (LOGIN,
 * LOGIN_CHALLENGE, LOGIN_PROOF, LOGIN_RESULT; relay/login/credentials.ts) or a relay's
 * link handshake. Runs on the connection's own loop, before it is registered anywhere.
 *
 * @module
 */

import { FrameTooLargeError, ProtocolError } from "../../shared/errors.ts";
import {
  ErrorCode,
  HEADER_SIZE,
  LINK_PROTOCOL_VERSION,
  MAX_ID_BYTES,
  MAX_INSTANCE_BYTES,
  MAX_PAYLOAD,
  MAX_SERVICE_BYTES,
  MAX_SERVICES,
  PROTOCOL_VERSION,
  Role,
} from "../../shared/protocol/constants.ts";
import { checkVersion, LinkPurposes, type Message } from "../../shared/protocol/messages.ts";
import { acceptorMac, dialerMac, macEquals, newNonce } from "../mesh/link_auth.ts";
import { linkSeal } from "../mesh/link_seal.ts";
import { isValidNonce } from "../../shared/scram.ts";
import type { LoginGrant } from "../login/credentials.ts";
import type { RelayConn } from "./conn.ts";
import type { RelayContext } from "./context.ts";
import { rememberReplaced, wasEvicted } from "./evict.ts";

/** What a connection turned out to be after its handshake. */
export type ConnRole = "device" | "data" | "control" | null;

const utf8 = new TextEncoder();
const NO_BYTES = new Uint8Array(0);
/** Longest ticket accepted in LOGIN (the relay issues 32 characters). */
const MAX_TICKET_CHARS = 64;

/** Reads HELLO and LOGIN (or a relay link handshake), checks them, answers. */
export async function login(conn: RelayConn, ctx: RelayContext): Promise<ConnRole> {
  const hello = await readFirst(conn);
  if (hello === null) return null;
  if (hello.kind !== "hello") {
    throw new ProtocolError(`Expected HELLO as the first message, got ${hello.kind}`);
  }
  if (hello.role === Role.Relay) {
    // Relay links have their own version (sealed frames); devices are not affected.
    const linkError = checkVersion(hello.version, LINK_PROTOCOL_VERSION);
    if (linkError !== null) {
      throw new ProtocolError(
        `Relay link refused: ${linkError} (upgrade every relay of the mesh)`,
        ErrorCode.UnsupportedVersion,
      );
    }
    return await acceptLink(conn, ctx);
  }
  const versionError = checkVersion(hello.version, PROTOCOL_VERSION);
  if (versionError !== null) throw new ProtocolError(versionError, ErrorCode.UnsupportedVersion);
  const request = await conn.framed.readMessage();
  if (request === null) return null;
  if (request.kind !== "login") {
    throw new ProtocolError(`Expected LOGIN after HELLO, got ${request.kind}`);
  }
  return await checkLogin(conn, request, ctx);
}

/** Reads the first message; a TLS ClientHello on this plain port is named as such. */
async function readFirst(conn: RelayConn): Promise<Message | null> {
  try {
    return await conn.framed.readMessage();
  } catch (e) {
    if (e instanceof FrameTooLargeError && e.looksLikeTls) {
      throw new ProtocolError(
        "This relay port speaks plain TCP, not TLS: the client sent a TLS ClientHello " +
          "(drop --tls-ca, or use the relay's TLS port)",
        ErrorCode.TlsRequired,
      );
    }
    throw e;
  }
}

async function checkLogin(
  conn: RelayConn,
  request: Extract<Message, { kind: "login" }>,
  ctx: RelayContext,
): Promise<ConnRole> {
  const refuse = async (code: ErrorCode, message: string, retryAfterMs = 0) => {
    ctx.metrics.loginResult(code);
    await conn.framed.trySend({
      kind: "loginResult",
      code,
      keepaliveMs: 0,
      retryAfterMs,
      relay: ctx.name,
      message,
      signature: NO_BYTES,
      ticket: "",
      ticketTtlMs: 0,
    });
    return null;
  };
  if (ctx.shuttingDown) return refuse(ErrorCode.ShuttingDown, "Relay is shutting down");
  const { id, instance, ticket } = request;
  const tooLong = utf8.encode(id).length > MAX_ID_BYTES
    ? `device ID longer than ${MAX_ID_BYTES} bytes`
    : utf8.encode(instance).length > MAX_INSTANCE_BYTES
    ? `instance token longer than ${MAX_INSTANCE_BYTES} bytes`
    : ticket.length > MAX_TICKET_CHARS
    ? `ticket longer than ${MAX_TICKET_CHARS} characters`
    : request.services.length > MAX_SERVICES
    ? `more than ${MAX_SERVICES} services declared`
    : request.services.some((s) => utf8.encode(s).length > MAX_SERVICE_BYTES)
    ? `service name longer than ${MAX_SERVICE_BYTES} bytes`
    : "";
  if (tooLong !== "") {
    ctx.logger.warn("login refused", { remote: conn.remote, device: id, reason: tooLong });
    return refuse(ErrorCode.FieldTooLong, `Login refused: ${tooLong}`);
  }
  if (!isValidNonce(request.nonce)) {
    throw new ProtocolError("LOGIN nonce must be 16-64 base64 characters", ErrorCode.BadFrame);
  }
  const address = conn.remoteHost;
  // Taken before the first await: a burst of logins cannot all pass the throttle. A
  // login stalled for 2 s while the relay is full makes room for a new one: its
  // connection is closed (relay/login/throttle.ts).
  const attempt = ctx.throttle.begin(address, id, () => {
    ctx.logger.info("login dropped", {
      remote: conn.remote,
      device: id,
      reason: "stalled while the relay had no free login slot",
    });
    conn.framed.close();
  });
  if (attempt.kind === "wait") {
    ctx.logger.warn("login throttled", {
      remote: conn.remote,
      device: id,
      wait: attempt.waitMs,
      reason: attempt.reason,
    });
    return refuse(
      ErrorCode.Throttled,
      attempt.reason === "busy"
        ? `Too many logins in progress: retry in ${Math.ceil(attempt.waitMs / 1000)} s`
        : `Too many failed logins: retry in ${Math.ceil(attempt.waitMs / 1000)} s`,
      attempt.waitMs,
    );
  }
  try {
    // A registry check starting from here on may miss this login: it is rechecked below.
    const epoch = ctx.registryWatch.epoch;
    let pending = ctx.logins.resume(id, request.nonce, instance, ticket);
    if (pending === null) {
      let reg;
      try {
        reg = await ctx.directory.registry.get(id);
      } catch (e) {
        ctx.logger.error("registry unavailable", { error: String(e) });
        return refuse(
          ErrorCode.DirectoryUnavailable,
          "Relay cannot read its registry; retry later",
        );
      }
      pending = ctx.logins.challenge(id, request.nonce, instance, reg);
    }
    await conn.framed.send(pending.challenge);
    // A client that goes away with the challenge unanswered costs its address one failure
    // (relay/login/throttle.ts): stalls recycled before they grow stale lock their own
    // address out, not the relay. A stall the throttle ended is not counted again.
    const answer = await conn.framed.readMessage().catch((e) => {
      attempt.abandon();
      throw e;
    });
    if (answer === null) {
      attempt.abandon();
      return null;
    }
    if (answer.kind !== "loginProof") {
      throw new ProtocolError(`Expected LOGIN_PROOF after LOGIN_CHALLENGE, got ${answer.kind}`);
    }
    // From here to the verdict nothing awaits: the recheck, the key check and the
    // failure count happen in one turn of the event loop.
    const wait = attempt.recheck();
    if (wait > 0) {
      ctx.logger.warn("login throttled", { remote: conn.remote, device: id, wait });
      return refuse(
        ErrorCode.Throttled,
        `Too many failed logins: retry in ${Math.ceil(wait / 1000)} s`,
        wait,
      );
    }
    const grant = pending.finish(answer.proof);
    if (typeof grant === "string") {
      attempt.fail();
      ctx.logger.warn("login refused", { remote: conn.remote, device: id, reason: grant });
      return refuse(ErrorCode.AuthFailed, "Unknown device or wrong password");
    }
    attempt.succeed();
    if (ctx.registryWatch.epoch !== epoch) ctx.registryWatch.recheck(id);
    return await admit(conn, grant, request, ctx, refuse);
  } finally {
    attempt.release();
  }
}

/** A device proved its password (or ticket): attach the connection, answer Ok. */
async function admit(
  conn: RelayConn,
  grant: LoginGrant,
  request: Extract<Message, { kind: "login" }>,
  ctx: RelayContext,
  refuse: (code: ErrorCode, message: string) => Promise<null>,
): Promise<ConnRole> {
  if (ctx.shuttingDown) return refuse(ErrorCode.ShuttingDown, "Relay is shutting down");
  const id = grant.id;
  const { instance } = request;
  if (wasEvicted(ctx, id, instance)) {
    return refuse(ErrorCode.Replaced, `A newer login of "${id}" won on another relay`);
  }
  const device = ctx.devices.get(id);
  const replacing = device !== undefined && instance !== "" && device.instance !== "" &&
    device.instance !== instance;
  // Connections of an instance being replaced do not count against the new one.
  const held = device === undefined
    ? 0
    : replacing
    ? [...device.conns].filter((c) => c.instance !== device.instance).length
    : device.conns.size;
  if (held >= ctx.limits.maxConnsPerDevice) {
    ctx.logger.warn("login refused", {
      device: id,
      remote: conn.remote,
      reason: "too many connections",
      limit: ctx.limits.maxConnsPerDevice,
    });
    return refuse(
      ErrorCode.TooManyConnections,
      `Device "${id}" already holds ${held} connections (limit ${ctx.limits.maxConnsPerDevice})`,
    );
  }
  if (replacing) replaceInstance(id, device!.instance, conn, ctx);
  conn.loggedIn(id, instance, request.services, grant.verifier);
  conn.framed.setMaxPayload(MAX_PAYLOAD, MAX_PAYLOAD + HEADER_SIZE);
  conn.touch();
  // Queued before the connection can be offered a notice: LOGIN_RESULT goes first.
  const sent = conn.framed.send({
    kind: "loginResult",
    code: ErrorCode.Ok,
    keepaliveMs: ctx.keepaliveMs,
    retryAfterMs: 0,
    relay: ctx.name,
    message: "",
    signature: grant.signature,
    ticket: grant.ticket,
    ticketTtlMs: grant.ticketTtlMs,
  });
  ctx.metrics.loginResult("ok");
  const isNew = ctx.devices.get(id) === undefined;
  ctx.devices.attach(conn, grant.type, grant.attributes);
  conn.announceIdle(); // in the table now: a request waiting for this device may take it
  if (isNew) ctx.logger.info("login", { device: id, remote: conn.remote });
  else ctx.logger.debug("connection added", { device: id, remote: conn.remote });
  await sent;
  return "device";
}

/**
 * A different agent instance logged in with the ID of a device online here: the newer
 * instance wins (the device was probably restarted, or moved). Every connection of the
 * old instance is told why and closed; the old agent stops instead of fighting back.
 * One-shot connections (no instance) are left alone.
 */
function replaceInstance(id: string, old: string, by: RelayConn, ctx: RelayContext) {
  const device = ctx.devices.get(id);
  if (device === undefined) return;
  ctx.logger.warn("device replaced", { device: id, remote: by.remote });
  rememberReplaced(ctx, id, old);
  for (const c of [...device.conns]) {
    if (c.instance !== old) continue;
    void c.framed.trySend({
      kind: "error",
      code: ErrorCode.Replaced,
      message: `Another agent logged in as "${id}" from ${by.remoteHost}; this one stops`,
    }).finally(() => c.framed.close());
  }
  device.instance = "";
}

/** Runs the acceptor side of the link handshake (see mesh/link_auth.ts). */
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
  const expected = dialerMac(secret, nonce, auth.nonce, auth, auth.purpose);
  if (!macEquals(auth.mac, expected) || auth.nonce.length < 16) {
    ctx.logger.warn("relay link refused", { remote: conn.remote, relay: auth.name });
    throw new ProtocolError("Relay link refused: wrong mesh secret", ErrorCode.AuthFailed);
  }
  if (auth.purpose === LinkPurposes.Control && ctx.onControlLink === null) {
    throw new ProtocolError("This relay runs no mesh: control links are refused");
  }
  const self = { name: ctx.name, address: ctx.advertisedAddress };
  const sent = conn.framed.send({
    kind: "linkOk",
    ...self,
    mac: acceptorMac(secret, auth.nonce, nonce, self, auth.name, auth.purpose),
  });
  // Every frame after LINK_OK is sealed (mesh/link_seal.ts); set before anything else is queued.
  conn.framed.setMaxPayload(MAX_PAYLOAD, MAX_PAYLOAD + HEADER_SIZE);
  conn.framed.setSeal(linkSeal(secret, {
    acceptorNonce: nonce,
    dialerNonce: auth.nonce,
    dialer: auth.name,
    acceptor: ctx.name,
    purpose: auth.purpose,
  }, "acceptor"));
  await sent;
  conn.linked(
    auth.name,
    auth.address,
    auth.purpose === LinkPurposes.Control ? "control" : "data",
  );
  conn.touch();
  ctx.logger.debug("relay link accepted", {
    relay: auth.name,
    purpose: auth.purpose === LinkPurposes.Control ? "control" : "data",
  });
  return auth.purpose === LinkPurposes.Control ? "control" : "data";
}
