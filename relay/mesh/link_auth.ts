/**
 * Relay-to-relay link authentication: both sides prove they hold the mesh secret with
 * an HMAC over two fresh nonces, so a recorded handshake cannot be replayed; then every
 * frame is sealed under keys derived from the same transcript (link_seal.ts), so the link
 * stays authenticated for its whole life.
 *
 *     dialer                               acceptor
 *     HELLO(version 3, role relay) ──►
 *                                  ◄──     LINK_CHALLENGE(nonceA)
 *     LINK_AUTH(nameD, addressD, purpose, nonceD,
 *       mac = HMAC(secret, "tsunagi-link-v3" | nonceA | nonceD | nameD | addressD | purpose))  ──►
 *                                  ◄──     LINK_OK(nameA, addressA,
 *                                            mac = HMAC(secret, "tsunagi-link-ok-v3" | nonceD | nonceA
 *                                                       | nameA | addressA | nameD | purpose))
 *     (every later frame: LINK_SEALED, see link_seal.ts)
 *
 * (`|` is a NUL byte between UTF-8 fields; nonces are hex text.)
 *
 * @module
 */

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { formatHostPort, type HostPort } from "../../shared/address.ts";
import { ConnectionClosedError, ProtocolError, RelayError } from "../../shared/errors.ts";
import { FramedConn } from "../../shared/framed_conn.ts";
import { dial } from "../../shared/dial.ts";
import { ErrorCode, LINK_PROTOCOL_VERSION, Role } from "../../shared/protocol/constants.ts";
import type { LinkPurpose } from "../../shared/protocol/messages.ts";
import { linkSeal } from "./link_seal.ts";

/** A fresh random nonce, hex. */
export function newNonce(): string {
  return randomBytes(16).toString("hex");
}

/** The dialer's proof (pure): covers both nonces and everything LINK_AUTH claims. */
export function dialerMac(
  secret: Uint8Array,
  acceptorNonce: string,
  dialerNonce: string,
  dialer: { name: string; address: string },
  purpose: LinkPurpose,
): string {
  return createHmac("sha256", secret)
    .update(
      `tsunagi-link-v3\0${acceptorNonce}\0${dialerNonce}\0${dialer.name}\0${dialer.address}\0${purpose}`,
    )
    .digest("hex");
}

/** The acceptor's proof (pure): covers both nonces, LINK_OK's claims and who it answers. */
export function acceptorMac(
  secret: Uint8Array,
  dialerNonce: string,
  acceptorNonce: string,
  acceptor: { name: string; address: string },
  dialerName: string,
  purpose: LinkPurpose,
): string {
  return createHmac("sha256", secret)
    .update(
      `tsunagi-link-ok-v3\0${dialerNonce}\0${acceptorNonce}\0${acceptor.name}\0${acceptor.address}\0${dialerName}\0${purpose}`,
    )
    .digest("hex");
}

/** Constant-time comparison of two hex MACs. */
export function macEquals(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** What a relay needs to dial other relays. */
export interface LinkCredentials {
  /** This relay's name. */
  name: string;
  /** Address other relays reach this one at. */
  address: HostPort;
  /** The shared mesh secret. */
  secret: Uint8Array;
  /** PEM CA: dial other relays with TLS, trusting this CA. */
  tlsCa?: string;
}

/** An authenticated link to another relay. */
export interface DialedLink {
  /** The framed connection. */
  framed: FramedConn;
  /** The other relay's name. */
  name: string;
  /** The address it advertises. */
  address: string;
}

/** True when `e` is a relay refusing our link (wrong mesh secret on one side). */
export function isLinkRefused(e: unknown): boolean {
  return e instanceof RelayError && e.code === ErrorCode.AuthFailed;
}

/** Dials `address` and authenticates a link for `purpose`. */
export async function dialLink(
  address: HostPort,
  purpose: LinkPurpose,
  creds: LinkCredentials,
  options: { signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<DialedLink> {
  const signal = AbortSignal.any([
    ...(options.signal ? [options.signal] : []),
    AbortSignal.timeout(options.timeoutMs ?? 5000),
  ]);
  const socket = await dial(address, { tlsCa: creds.tlsCa, signal });
  const framed = new FramedConn(socket, { readSize: 64 * 1024 + 5 });
  const onAbort = () => framed.close();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await framed.send({
      kind: "hello",
      version: LINK_PROTOCOL_VERSION,
      role: Role.Relay,
      software: "tsunagi-relay/0.1",
    });
    const challenge = await framed.readMessage();
    if (challenge?.kind === "error") throw new RelayError(challenge.code, challenge.message);
    if (challenge?.kind !== "linkChallenge") throw new ProtocolError("Expected LINK_CHALLENGE");
    const nonce = newNonce();
    const self = { name: creds.name, address: formatHostPort(creds.address) };
    await framed.send({
      kind: "linkAuth",
      ...self,
      purpose,
      nonce,
      mac: dialerMac(creds.secret, challenge.nonce, nonce, self, purpose),
    });
    const ok = await framed.readMessage();
    if (ok?.kind === "error") throw new RelayError(ok.code, ok.message);
    if (ok?.kind !== "linkOk") throw new ProtocolError("Expected LINK_OK");
    const expected = acceptorMac(creds.secret, nonce, challenge.nonce, ok, creds.name, purpose);
    if (!macEquals(ok.mac, expected)) {
      throw new RelayError(
        ErrorCode.AuthFailed,
        `Relay ${formatHostPort(address)} does not hold the mesh secret`,
      );
    }
    const transcript = {
      acceptorNonce: challenge.nonce,
      dialerNonce: nonce,
      dialer: creds.name,
      acceptor: ok.name,
      purpose,
    };
    framed.setSeal(linkSeal(creds.secret, transcript, "dialer"));
    return { framed, name: ok.name, address: ok.address };
  } catch (e) {
    framed.close();
    if (signal.aborted && !(e instanceof RelayError)) {
      throw new ConnectionClosedError(`Link to ${formatHostPort(address)} timed out`, { cause: e });
    }
    throw e;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
