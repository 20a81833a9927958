/**
 * Per-frame integrity for relay links: after the handshake (link_auth.ts) every frame a
 * relay itself interprets travels inside a LINK_SEALED frame that carries an HMAC under
 * a key of its direction and an implicit sequence number, so an on-path attacker on
 * plain TCP can neither inject, alter, replay, reorder nor drop a frame without the
 * receiver noticing: the first frame that fails is refused and the link is dropped.
 *
 *     LINK_SEALED (0x1b) payload:
 *       inner frame (type u8, length u32 BE, payload) | tag (16 bytes)
 *     tag = HMAC-SHA256(key[direction], seq u64 BE | inner frame)[0..16)
 *
 * `seq` counts the sealed frames of one direction from 0; it is never sent. Keys come
 * from HKDF-SHA256 over the mesh secret, salted with both handshake nonces, with both
 * relay names, the purpose and the direction as info: one key per direction and link.
 *
 * What stays plain: on a data link, the DATA and END frames of a session, which the relay
 * forwards byte for byte in pass-through (shared/protocol/passthrough.ts) without
 * decoding. They are the devices' end-to-end stream, exactly as between a device and its
 * relay; an attacker who can alter DATA can also cut it short, and only end-to-end
 * protection (the devices' business) detects either. Every other frame on a data link
 * (ROUTE, ACCEPT, REJECT, RELEASE, ERROR, PING, PONG) and every frame on a control link
 * is sealed. See docs/protocol.md §10.4 and docs/security.md.
 *
 * Pure apart from node:crypto: no I/O.
 *
 * @module
 */

import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import { ProtocolError } from "../../shared/errors.ts";
import type { FrameSeal } from "../../shared/framed_conn.ts";
import { ErrorCode, FrameType, HEADER_SIZE, MAX_PAYLOAD } from "../../shared/protocol/constants.ts";
import { type Frame, readU32, writeHeader } from "../../shared/protocol/frame.ts";
import { LinkPurposes } from "../../shared/protocol/messages.ts";
import type { LinkPurpose } from "../../shared/protocol/messages.ts";

/** Bytes of the truncated HMAC tag. */
export const SEAL_TAG_BYTES = 16;
/** What sealing adds to a frame's payload: the inner header and the tag. */
export const SEAL_OVERHEAD = HEADER_SIZE + SEAL_TAG_BYTES;

/** What both ends of a link agreed on in the handshake: the input of the key derivation. */
export interface LinkTranscript {
  /** The acceptor's LINK_CHALLENGE nonce. */
  acceptorNonce: string;
  /** The dialer's LINK_AUTH nonce. */
  dialerNonce: string;
  /** The dialer's relay name. */
  dialer: string;
  /** The acceptor's relay name. */
  acceptor: string;
  /** Control or data. */
  purpose: LinkPurpose;
}

/** The two keys of one link, by direction. */
export interface LinkKeys {
  /** Key of frames from the dialer to the acceptor. */
  dialerToAcceptor: Uint8Array;
  /** Key of frames from the acceptor to the dialer. */
  acceptorToDialer: Uint8Array;
}

/** Derives a link's keys (HKDF-SHA256, RFC 5869). Pure. */
export function deriveLinkKeys(secret: Uint8Array, t: LinkTranscript): LinkKeys {
  const salt = new TextEncoder().encode(`${t.acceptorNonce}\0${t.dialerNonce}`);
  const key = (direction: string) =>
    new Uint8Array(hkdfSync(
      "sha256",
      secret,
      salt,
      `tsunagi-link-keys-v3\0${t.dialer}\0${t.acceptor}\0${t.purpose}\0${direction}`,
      32,
    ));
  return {
    dialerToAcceptor: key("dialer->acceptor"),
    acceptorToDialer: key("acceptor->dialer"),
  };
}

/** The seal of one end of a link: give it to {@link FramedConn.setSeal}. */
export function linkSeal(
  secret: Uint8Array,
  t: LinkTranscript,
  side: "dialer" | "acceptor",
): LinkSeal {
  const keys = deriveLinkKeys(secret, t);
  const [send, receive] = side === "dialer"
    ? [keys.dialerToAcceptor, keys.acceptorToDialer]
    : [keys.acceptorToDialer, keys.dialerToAcceptor];
  const plain = t.purpose === LinkPurposes.Data ? [FrameType.Data, FrameType.End] : [];
  return new LinkSeal(send, receive, plain, side === "dialer" ? t.acceptor : t.dialer);
}

/**
 * Seals outbound frames and opens inbound ones for one end of a link. The two sequence
 * counters belong to the connection's writer (seal, called in wire order) and reader
 * (open) respectively.
 */
export class LinkSeal implements FrameSeal {
  /** Largest LINK_SEALED payload: a full frame plus the overhead. */
  readonly maxPayload = MAX_PAYLOAD + SEAL_OVERHEAD;
  readonly #send: Uint8Array;
  readonly #receive: Uint8Array;
  readonly #plain: ReadonlySet<number>;
  readonly #peer: string;
  #sendSeq = 0;
  #receiveSeq = 0;

  /** Keys by direction; `plain` lists the frame types that pass unsealed. */
  constructor(send: Uint8Array, receive: Uint8Array, plain: readonly number[], peer: string) {
    this.#send = send;
    this.#receive = receive;
    this.#plain = new Set(plain);
    this.#peer = peer;
  }

  /** Sealed frames sent and received so far. */
  get counts(): { sent: number; received: number } {
    return { sent: this.#sendSeq, received: this.#receiveSeq };
  }

  /** Wraps one whole encoded frame (plain types are returned as they are). */
  seal(frame: Uint8Array): Uint8Array {
    if (frame.length < HEADER_SIZE || readU32(frame, 1) !== frame.length - HEADER_SIZE) {
      throw new RangeError(`Cannot seal: ${frame.length} bytes are not exactly one frame`);
    }
    if (this.#plain.has(frame[0])) return frame;
    const out = new Uint8Array(HEADER_SIZE + frame.length + SEAL_TAG_BYTES);
    writeHeader(out, 0, FrameType.LinkSealed, frame.length + SEAL_TAG_BYTES);
    out.set(frame, HEADER_SIZE);
    out.set(tag(this.#send, this.#sendSeq++, frame), HEADER_SIZE + frame.length);
    return out;
  }

  /** Checks and unwraps one received frame; throws {@link ProtocolError} on any mismatch. */
  open(frame: Frame): Frame {
    if (frame.type !== FrameType.LinkSealed) {
      if (this.#plain.has(frame.type) && frame.payload.length <= MAX_PAYLOAD) return frame;
      throw this.#refuse(`an unsealed frame of type 0x${frame.type.toString(16)}`);
    }
    const p = frame.payload;
    const innerLength = p.length - SEAL_TAG_BYTES;
    if (
      innerLength < HEADER_SIZE || readU32(p, 1) !== innerLength - HEADER_SIZE ||
      innerLength - HEADER_SIZE > MAX_PAYLOAD
    ) {
      throw this.#refuse(`a malformed sealed frame (${p.length} bytes)`);
    }
    const inner = p.subarray(0, innerLength);
    const expected = tag(this.#receive, this.#receiveSeq, inner);
    if (!timingSafeEqual(expected, p.subarray(innerLength))) {
      throw this.#refuse(`sealed frame ${this.#receiveSeq} with a wrong MAC`);
    }
    this.#receiveSeq++;
    if (inner[0] === FrameType.LinkSealed) throw this.#refuse("a sealed frame inside a sealed one");
    return { type: inner[0], payload: inner.subarray(HEADER_SIZE) };
  }

  #refuse(what: string): ProtocolError {
    return new ProtocolError(
      `Link from relay "${this.#peer.slice(0, 64)}" sent ${what}: refused, link dropped ` +
        "(altered, injected, replayed or reordered on the way?)",
      ErrorCode.BadFrame,
    );
  }
}

function tag(key: Uint8Array, seq: number, frame: Uint8Array): Uint8Array {
  const s = new Uint8Array(8);
  new DataView(s.buffer).setBigUint64(0, BigInt(seq));
  return createHmac("sha256", key).update(s).update(frame).digest().subarray(0, SEAL_TAG_BYTES);
}
