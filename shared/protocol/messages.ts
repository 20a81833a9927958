/**
 * Messages: the typed form of every frame, with pure `encodeMessage` / `decodeMessage`.
 *
 * Payload layouts (all integers big-endian, `str` = u16 byte length + UTF-8):
 *
 * | type | name          | payload                                                    |
 * |------|---------------|------------------------------------------------------------|
 * | 0x01 | HELLO         | u32 magic "TSNG", u16 version, u8 role, str software       |
 * | 0x02 | LOGIN         | str id, str nonce, str instance, str ticket, u8 n + n × str service |
 * | 0x03 | LOGIN_RESULT  | u16 code, u32 keepaliveMs, u32 retryAfterMs, str relay, str message, bin signature, str ticket, u32 ticketTtlMs |
 * | 0x04 | PING          | u32 nonce                                                  |
 * | 0x05 | PONG          | u32 nonce                                                  |
 * | 0x06 | LOGOUT        | (empty)                                                    |
 * | 0x07 | LIST          | u8 flags (bit 0: include devices that are offline)         |
 * | 0x08 | LIST_RESULT   | u8 flags (bit 0: more frames follow), u16 count, count × entry |
 * | 0x09 | STATUS        | str id                                                     |
 * | 0x0a | STATUS_RESULT | u8 found, entry (if found)                                 |
 * | 0x0b | CONNECT       | str target, str service                                    |
 * | 0x0c | NOTICE        | str session, str requester, str requesterType, str service |
 * | 0x0d | ACCEPT        | str session, str peer                                      |
 * | 0x0e | REJECT        | str session, u16 code, str message                         |
 * | 0x0f | DATA          | raw bytes of the session's byte stream                     |
 * | 0x10 | END           | u8 reason (0 normal, 1 aborted)                            |
 * | 0x11 | RELEASE       | (empty)                                                    |
 * | 0x12 | ERROR         | u16 code, str message                                      |
 * | 0x13 | LINK_CHALLENGE| str nonce                                                  |
 * | 0x14 | LINK_AUTH     | str name, str address, u8 purpose, str nonce, str mac      |
 * | 0x15 | LINK_OK       | str name, str address, str mac                             |
 * | 0x16 | ROUTE         | str session, str requester, str requesterType, str target, str service, u8 hops |
 * | 0x17 | UPDATE        | str body (JSON notice, see docs/mesh.md)                   |
 * | 0x18 | DIGEST        | str body (JSON digest, see docs/mesh.md)                   |
 * | 0x19 | LOGIN_CHALLENGE | str nonce, bin salt, u32 iterations, str prehash         |
 * | 0x1a | LOGIN_PROOF   | bin proof                                                  |
 *
 * `bin` = u16 byte length + raw bytes.
 *
 * Directory entry: str id, str type, u8 n + n × str attribute, u8 s + s × str service,
 * u8 state, str relay,
 * u16 idle, u16 sessions, u8 m + m × str peer, f64 lastUpdate (ms since epoch).
 *
 * @module
 */

import { MalformedMessageError } from "../errors.ts";
import {
  type DeviceState,
  type EndReason,
  ErrorCode,
  FrameType,
  HEADER_SIZE,
  HELLO_MAGIC,
  MAX_PAYLOAD,
  type Role,
} from "./constants.ts";
import { encodeFrame, type Frame, writeHeader } from "./frame.ts";

/** One device as the directory shows it (patent Fig. 2). */
export interface DirectoryEntry {
  /** User ID. */
  id: string;
  /** Device type, e.g. `USER`, `FAX`, `PRINTER`. */
  type: string;
  /** Attributes tied to the type, e.g. `FILE TX/RX`. */
  attributes: string[];
  /** Services its connections answer notices for, sorted (empty while offline). */
  services: string[];
  /** Offline, online or unreachable. */
  state: DeviceState;
  /** Name of the relay the device is logged in on ("" when offline). */
  relay: string;
  /** Idle connections the device holds. */
  idle: number;
  /** Connections in a session. */
  sessions: number;
  /** IDs of the devices it is in a session with. */
  peers: string[];
  /** Wall-clock time of the last change, ms since the epoch (information only). */
  lastUpdate: number;
}

/** Every message of the protocol, discriminated by `kind`. */
export type Message =
  | { kind: "hello"; version: number; role: Role; software: string }
  | {
    kind: "login";
    id: string;
    /** SCRAM client nonce (16-64 base64 characters). */
    nonce: string;
    /** Agent instance token (random per `tsunagi run` process), or "" for a one-shot client. */
    instance: string;
    /** A pool-connection ticket from an earlier LOGIN_RESULT, or "" for a full login. */
    ticket: string;
    /** Services this connection answers notices for (none: it only makes requests). */
    services: string[];
  }
  | {
    kind: "loginChallenge";
    /** Client nonce followed by the relay's. */
    nonce: string;
    /** PBKDF2 salt; empty for a ticket login. */
    salt: Uint8Array;
    /** PBKDF2 iterations; 0 for a ticket login. */
    iterations: number;
    /** scrypt pre-hash of a migrated registration (`scrypt$N$r$p$salt`), or "". */
    prehash: string;
  }
  | { kind: "loginProof"; proof: Uint8Array }
  | {
    kind: "loginResult";
    code: ErrorCode;
    keepaliveMs: number;
    retryAfterMs: number;
    relay: string;
    message: string;
    /** SCRAM ServerSignature (or ticket signature) on success; empty otherwise. */
    signature: Uint8Array;
    /** Ticket for this device's further connections to this relay; "" for none. */
    ticket: string;
    /** How long the ticket is valid, ms. */
    ticketTtlMs: number;
  }
  | { kind: "ping"; nonce: number }
  | { kind: "pong"; nonce: number }
  | { kind: "logout" }
  | { kind: "list"; includeOffline: boolean }
  | { kind: "listResult"; entries: DirectoryEntry[]; more: boolean }
  | { kind: "status"; id: string }
  | { kind: "statusResult"; entry: DirectoryEntry | null }
  | { kind: "connect"; target: string; service: string }
  | { kind: "notice"; session: string; requester: string; requesterType: string; service: string }
  | { kind: "accept"; session: string; peer: string }
  | { kind: "reject"; session: string; code: ErrorCode; message: string }
  | { kind: "data"; bytes: Uint8Array }
  | { kind: "end"; reason: EndReason }
  | { kind: "release" }
  | { kind: "error"; code: ErrorCode; message: string }
  | { kind: "linkChallenge"; nonce: string }
  | {
    kind: "linkAuth";
    name: string;
    address: string;
    purpose: LinkPurpose;
    nonce: string;
    mac: string;
  }
  | { kind: "linkOk"; name: string; address: string; mac: string }
  | {
    kind: "route";
    session: string;
    requester: string;
    requesterType: string;
    target: string;
    service: string;
    hops: number;
  }
  | { kind: "update"; body: string }
  | { kind: "digest"; body: string };

/** What a relay-to-relay link is for. */
export type LinkPurpose = 0 | 1;

/** Link purposes: one control link per neighbour pair, data links per session. */
export const LinkPurposes = { Control: 0, Data: 1 } as const;

/** The `kind` of a message. */
export type MessageKind = Message["kind"];

const encoder = new TextEncoder();
// `ignoreBOM: true` keeps a leading U+FEFF: strings must come back exactly as sent.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Grows a byte buffer while a message is written; checks the frame maximum at the end. */
class Writer {
  #buf = new Uint8Array(256);
  #view = new DataView(this.#buf.buffer);
  #len = HEADER_SIZE;

  #reserve(n: number) {
    if (this.#len + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  u8(v: number): this {
    this.#reserve(1);
    this.#view.setUint8(this.#len, v);
    this.#len += 1;
    return this;
  }
  u16(v: number): this {
    this.#reserve(2);
    this.#view.setUint16(this.#len, v);
    this.#len += 2;
    return this;
  }
  u32(v: number): this {
    this.#reserve(4);
    this.#view.setUint32(this.#len, v);
    this.#len += 4;
    return this;
  }
  f64(v: number): this {
    this.#reserve(8);
    this.#view.setFloat64(this.#len, v);
    this.#len += 8;
    return this;
  }
  str(s: string): this {
    const bytes = encoder.encode(s);
    if (bytes.length > 0xffff) {
      throw new RangeError(`Cannot encode string: ${bytes.length} bytes exceeds 65535`);
    }
    this.u16(bytes.length);
    return this.bytes(bytes);
  }
  bin(b: Uint8Array): this {
    if (b.length > 0xffff) {
      throw new RangeError(`Cannot encode bytes: ${b.length} bytes exceeds 65535`);
    }
    return this.u16(b.length).bytes(b);
  }
  bytes(b: Uint8Array): this {
    this.#reserve(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }
  frame(type: number): Uint8Array {
    const payloadLength = this.#len - HEADER_SIZE;
    if (payloadLength > MAX_PAYLOAD) {
      throw new RangeError(
        `Cannot encode message: payload ${payloadLength} bytes exceeds maximum ${MAX_PAYLOAD}`,
      );
    }
    writeHeader(this.#buf, 0, type, payloadLength);
    return this.#buf.subarray(0, this.#len);
  }
}

/** Reads fields from a payload, throwing {@link MalformedMessageError} on a short read. */
class Reader {
  #view: DataView;
  #pos = 0;
  constructor(readonly bytes: Uint8Array, readonly what: string) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  #need(n: number) {
    if (this.#pos + n > this.bytes.length) {
      throw new MalformedMessageError(
        `Cannot decode ${this.what}: payload ends after ${this.bytes.length} bytes`,
      );
    }
  }
  u8(): number {
    this.#need(1);
    return this.#view.getUint8(this.#pos++);
  }
  u16(): number {
    this.#need(2);
    const v = this.#view.getUint16(this.#pos);
    this.#pos += 2;
    return v;
  }
  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.#pos);
    this.#pos += 4;
    return v;
  }
  f64(): number {
    this.#need(8);
    const v = this.#view.getFloat64(this.#pos);
    this.#pos += 8;
    return v;
  }
  str(): string {
    const n = this.u16();
    this.#need(n);
    const slice = this.bytes.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    try {
      return decoder.decode(slice);
    } catch (cause) {
      throw new MalformedMessageError(`Cannot decode ${this.what}: string is not UTF-8`, {
        cause,
      });
    }
  }
  bin(): Uint8Array {
    const n = this.u16();
    this.#need(n);
    const slice = this.bytes.slice(this.#pos, this.#pos + n);
    this.#pos += n;
    return slice;
  }
  get remaining(): number {
    return this.bytes.length - this.#pos;
  }
  end() {
    if (this.#pos !== this.bytes.length) {
      throw new MalformedMessageError(
        `Cannot decode ${this.what}: ${this.bytes.length - this.#pos} trailing bytes`,
      );
    }
  }
}

/** Writes a u8 list count; a longer list would wrap on the wire and corrupt the frame. */
function writeCount8(w: Writer, count: number, what: string) {
  if (count > 0xff) {
    throw new RangeError(`Cannot encode directory entry: ${count} ${what} exceeds 255`);
  }
  w.u8(count);
}

function writeEntry(w: Writer, e: DirectoryEntry) {
  w.str(e.id).str(e.type);
  writeCount8(w, e.attributes.length, "attributes");
  for (const a of e.attributes) w.str(a);
  writeCount8(w, e.services.length, "services");
  for (const sv of e.services) w.str(sv);
  w.u8(e.state).str(e.relay).u16(e.idle).u16(e.sessions);
  writeCount8(w, e.peers.length, "peers");
  for (const p of e.peers) w.str(p);
  w.f64(e.lastUpdate);
}

function readEntry(r: Reader): DirectoryEntry {
  const id = r.str();
  const type = r.str();
  const attributes: string[] = [];
  for (let n = r.u8(); n > 0; n--) attributes.push(r.str());
  const services: string[] = [];
  for (let n = r.u8(); n > 0; n--) services.push(r.str());
  const state = r.u8();
  if (state > 2) throw new MalformedMessageError(`Cannot decode ${r.what}: state ${state}`);
  const relay = r.str();
  const idle = r.u16();
  const sessions = r.u16();
  const peers: string[] = [];
  for (let n = r.u8(); n > 0; n--) peers.push(r.str());
  const lastUpdate = r.f64();
  return {
    id,
    type,
    attributes,
    services,
    state: state as DeviceState,
    relay,
    idle,
    sessions,
    peers,
    lastUpdate,
  };
}

function readCode(r: Reader): ErrorCode {
  return r.u16() as ErrorCode;
}

/** Encodes a message as one complete frame (header included). */
export function encodeMessage(m: Message): Uint8Array {
  const w = new Writer();
  switch (m.kind) {
    case "hello":
      return w.u32(HELLO_MAGIC).u16(m.version).u8(m.role).str(m.software).frame(FrameType.Hello);
    case "login": {
      w.str(m.id).str(m.nonce).str(m.instance).str(m.ticket);
      if (m.services.length > 0xff) {
        throw new RangeError(`Cannot encode LOGIN: ${m.services.length} services exceeds 255`);
      }
      w.u8(m.services.length);
      for (const sv of m.services) w.str(sv);
      return w.frame(FrameType.Login);
    }
    case "loginChallenge":
      return w.str(m.nonce).bin(m.salt).u32(m.iterations).str(m.prehash)
        .frame(FrameType.LoginChallenge);
    case "loginProof":
      return w.bin(m.proof).frame(FrameType.LoginProof);
    case "loginResult":
      return w.u16(m.code).u32(m.keepaliveMs).u32(m.retryAfterMs).str(m.relay).str(m.message)
        .bin(m.signature).str(m.ticket).u32(m.ticketTtlMs).frame(FrameType.LoginResult);
    case "ping":
      return w.u32(m.nonce).frame(FrameType.Ping);
    case "pong":
      return w.u32(m.nonce).frame(FrameType.Pong);
    case "logout":
      return w.frame(FrameType.Logout);
    case "list":
      return w.u8(m.includeOffline ? 1 : 0).frame(FrameType.List);
    case "listResult": {
      w.u8(m.more ? 1 : 0).u16(m.entries.length);
      for (const e of m.entries) writeEntry(w, e);
      return w.frame(FrameType.ListResult);
    }
    case "status":
      return w.str(m.id).frame(FrameType.Status);
    case "statusResult":
      if (m.entry === null) return w.u8(0).frame(FrameType.StatusResult);
      w.u8(1);
      writeEntry(w, m.entry);
      return w.frame(FrameType.StatusResult);
    case "connect":
      return w.str(m.target).str(m.service).frame(FrameType.Connect);
    case "notice":
      return w.str(m.session).str(m.requester).str(m.requesterType).str(m.service)
        .frame(FrameType.Notice);
    case "accept":
      return w.str(m.session).str(m.peer).frame(FrameType.Accept);
    case "reject":
      return w.str(m.session).u16(m.code).str(m.message).frame(FrameType.Reject);
    case "data":
      return w.bytes(m.bytes).frame(FrameType.Data);
    case "end":
      return w.u8(m.reason).frame(FrameType.End);
    case "release":
      return w.frame(FrameType.Release);
    case "error":
      return w.u16(m.code).str(m.message).frame(FrameType.Error);
    case "linkChallenge":
      return w.str(m.nonce).frame(FrameType.LinkChallenge);
    case "linkAuth":
      return w.str(m.name).str(m.address).u8(m.purpose).str(m.nonce).str(m.mac)
        .frame(FrameType.LinkAuth);
    case "linkOk":
      return w.str(m.name).str(m.address).str(m.mac).frame(FrameType.LinkOk);
    case "route":
      return w.str(m.session).str(m.requester).str(m.requesterType).str(m.target).str(m.service)
        .u8(m.hops).frame(FrameType.Route);
    case "update":
      return w.str(m.body).frame(FrameType.Update);
    case "digest":
      return w.str(m.body).frame(FrameType.Digest);
    default: {
      const never: never = m;
      throw new TypeError(`Cannot encode message: unknown kind ${JSON.stringify(never)}`);
    }
  }
}

/**
 * Decodes one frame into a message. Throws {@link MalformedMessageError} for an unknown
 * type, a short or over-long payload, a bad magic, or invalid UTF-8. The `data` variant's
 * bytes are a view into the frame payload.
 */
export function decodeMessage(frame: Frame): Message {
  const r = new Reader(frame.payload, `frame type 0x${frame.type.toString(16)}`);
  let m: Message;
  switch (frame.type) {
    case FrameType.Hello: {
      const magic = r.u32();
      if (magic !== HELLO_MAGIC) {
        throw new MalformedMessageError(`Cannot decode HELLO: bad magic 0x${magic.toString(16)}`);
      }
      const version = r.u16();
      const role = r.u8();
      if (role !== 1 && role !== 2) {
        throw new MalformedMessageError(`Cannot decode HELLO: unknown role ${role}`);
      }
      m = { kind: "hello", version, role: role as Role, software: r.str() };
      break;
    }
    case FrameType.Login: {
      const id = r.str();
      const nonce = r.str();
      const instance = r.str();
      const ticket = r.str();
      const services: string[] = [];
      for (let n = r.u8(); n > 0; n--) services.push(r.str());
      m = { kind: "login", id, nonce, instance, ticket, services };
      break;
    }
    case FrameType.LoginChallenge:
      m = {
        kind: "loginChallenge",
        nonce: r.str(),
        salt: r.bin(),
        iterations: r.u32(),
        prehash: r.str(),
      };
      break;
    case FrameType.LoginProof:
      m = { kind: "loginProof", proof: r.bin() };
      break;
    case FrameType.LoginResult:
      m = {
        kind: "loginResult",
        code: readCode(r),
        keepaliveMs: r.u32(),
        retryAfterMs: r.u32(),
        relay: r.str(),
        message: r.str(),
        signature: r.bin(),
        ticket: r.str(),
        ticketTtlMs: r.u32(),
      };
      break;
    case FrameType.Ping:
      m = { kind: "ping", nonce: r.u32() };
      break;
    case FrameType.Pong:
      m = { kind: "pong", nonce: r.u32() };
      break;
    case FrameType.Logout:
      m = { kind: "logout" };
      break;
    case FrameType.List:
      m = { kind: "list", includeOffline: (r.u8() & 1) === 1 };
      break;
    case FrameType.ListResult: {
      const more = (r.u8() & 1) === 1;
      const entries: DirectoryEntry[] = [];
      for (let n = r.u16(); n > 0; n--) entries.push(readEntry(r));
      m = { kind: "listResult", entries, more };
      break;
    }
    case FrameType.Status:
      m = { kind: "status", id: r.str() };
      break;
    case FrameType.StatusResult:
      m = { kind: "statusResult", entry: r.u8() === 0 ? null : readEntry(r) };
      break;
    case FrameType.Connect:
      m = { kind: "connect", target: r.str(), service: r.str() };
      break;
    case FrameType.Notice:
      m = {
        kind: "notice",
        session: r.str(),
        requester: r.str(),
        requesterType: r.str(),
        service: r.str(),
      };
      break;
    case FrameType.Accept:
      m = { kind: "accept", session: r.str(), peer: r.str() };
      break;
    case FrameType.Reject:
      m = { kind: "reject", session: r.str(), code: readCode(r), message: r.str() };
      break;
    case FrameType.Data:
      return { kind: "data", bytes: frame.payload };
    case FrameType.End: {
      const reason = r.u8();
      if (reason > 1) throw new MalformedMessageError(`Cannot decode END: reason ${reason}`);
      m = { kind: "end", reason: reason as EndReason };
      break;
    }
    case FrameType.Release:
      m = { kind: "release" };
      break;
    case FrameType.Error:
      m = { kind: "error", code: readCode(r), message: r.str() };
      break;
    case FrameType.LinkChallenge:
      m = { kind: "linkChallenge", nonce: r.str() };
      break;
    case FrameType.LinkAuth: {
      const name = r.str();
      const address = r.str();
      const purpose = r.u8();
      if (purpose > 1) {
        throw new MalformedMessageError(`Cannot decode LINK_AUTH: purpose ${purpose}`);
      }
      m = {
        kind: "linkAuth",
        name,
        address,
        purpose: purpose as LinkPurpose,
        nonce: r.str(),
        mac: r.str(),
      };
      break;
    }
    case FrameType.LinkOk:
      m = { kind: "linkOk", name: r.str(), address: r.str(), mac: r.str() };
      break;
    case FrameType.Route:
      m = {
        kind: "route",
        session: r.str(),
        requester: r.str(),
        requesterType: r.str(),
        target: r.str(),
        service: r.str(),
        hops: r.u8(),
      };
      break;
    case FrameType.Update:
      m = { kind: "update", body: r.str() };
      break;
    case FrameType.Digest:
      m = { kind: "digest", body: r.str() };
      break;
    default:
      throw new MalformedMessageError(
        `Cannot decode frame: unknown type 0x${frame.type.toString(16)}`,
      );
  }
  r.end();
  return m;
}

/** Encodes a DATA frame around `bytes`; a RangeError if over {@link MAX_PAYLOAD}. */
export function encodeData(bytes: Uint8Array): Uint8Array {
  return encodeFrame(FrameType.Data, bytes);
}

/** Version check for HELLO; returns an error message or null when supported. */
export function checkVersion(version: number, supported: number): string | null {
  return version === supported
    ? null
    : `Cannot speak protocol version ${version}: this side speaks version ${supported}`;
}

/** Shorthand for the ERROR message used before closing a connection. */
export function errorMessage(code: ErrorCode, message: string): Message {
  return { kind: "error", code, message };
}

export { ErrorCode };
