/**
 * The first messages of a connection: HELLO, then a device's LOGIN or a relay's link
 * handshake. Runs on the connection's own loop, before it is registered anywhere.
 *
 * @module
 */

import { ProtocolError } from "../../shared/errors.ts";
import {
  ErrorCode,
  MAX_ID_BYTES,
  MAX_INSTANCE_BYTES,
  MAX_PASSWORD_BYTES,
  MAX_PAYLOAD,
  PROTOCOL_VERSION,
  Role,
} from "../../shared/protocol/constants.ts";
import { checkVersion, LinkPurposes, type Message } from "../../shared/protocol/messages.ts";
import { acceptorMac, dialerMac, macEquals, newNonce } from "../mesh/link_auth.ts";
import type { RelayConn } from "./conn.ts";
import type { RelayContext } from "./context.ts";
import { wasEvicted } from "./evict.ts";

/** What a connection turned out to be after its handshake. */
export type ConnRole = "device" | "data" | "control" | null;

const utf8 = new TextEncoder();

/** Reads HELLO and LOGIN (or a relay link handshake), checks them, answers. */
export async function login(conn: RelayConn, ctx: RelayContext): Promise<ConnRole> {
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
  return await checkLogin(conn, request, ctx);
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
    });
    return null;
  };
  if (ctx.shuttingDown) return refuse(ErrorCode.ShuttingDown, "Relay is shutting down");
  const instance = request.instance ?? "";
  const tooLong = utf8.encode(request.id).length > MAX_ID_BYTES
    ? `device ID longer than ${MAX_ID_BYTES} bytes`
    : utf8.encode(request.password).length > MAX_PASSWORD_BYTES
    ? `password longer than ${MAX_PASSWORD_BYTES} bytes`
    : utf8.encode(instance).length > MAX_INSTANCE_BYTES
    ? `instance token longer than ${MAX_INSTANCE_BYTES} bytes`
    : "";
  if (tooLong !== "") {
    ctx.logger.warn("login refused", { remote: conn.remote, device: request.id, reason: tooLong });
    return refuse(ErrorCode.FieldTooLong, `Login refused: ${tooLong}`);
  }
  const address = conn.remoteHost;
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
  if (ctx.shuttingDown) return refuse(ErrorCode.ShuttingDown, "Relay is shutting down");
  if (wasEvicted(ctx, reg.id, instance)) {
    return refuse(ErrorCode.Replaced, `A newer login of "${reg.id}" won on another relay`);
  }
  const device = ctx.devices.get(reg.id);
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
      device: reg.id,
      remote: conn.remote,
      reason: "too many connections",
      limit: ctx.limits.maxConnsPerDevice,
    });
    return refuse(
      ErrorCode.TooManyConnections,
      `Device "${reg.id}" already holds ${held} connections (limit ${ctx.limits.maxConnsPerDevice})`,
    );
  }
  if (replacing) replaceInstance(reg.id, device!.instance, conn, ctx);
  conn.loggedIn(reg.id, instance);
  conn.framed.setMaxPayload(MAX_PAYLOAD);
  conn.touch();
  // Queued before the connection can be offered a notice: LOGIN_RESULT goes first.
  const sent = conn.framed.send({
    kind: "loginResult",
    code: ErrorCode.Ok,
    keepaliveMs: ctx.keepaliveMs,
    retryAfterMs: 0,
    relay: ctx.name,
    message: "",
  });
  ctx.metrics.loginResult("ok");
  const isNew = ctx.devices.get(reg.id) === undefined;
  ctx.devices.attach(conn, reg.type, reg.attributes);
  if (isNew) ctx.logger.info("login", { device: reg.id, remote: conn.remote });
  else ctx.logger.debug("connection added", { device: reg.id, remote: conn.remote });
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
  conn.linked(
    auth.name,
    auth.address,
    auth.purpose === LinkPurposes.Control ? "control" : "data",
  );
  conn.framed.setMaxPayload(MAX_PAYLOAD);
  conn.touch();
  ctx.logger.debug("relay link accepted", {
    relay: auth.name,
    purpose: auth.purpose === LinkPurposes.Control ? "control" : "data",
  });
  return auth.purpose === LinkPurposes.Control ? "control" : "data";
}
