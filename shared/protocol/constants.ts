/**
 * tsunagi wire protocol constants.
 *
 * Every tsunagi link (device to relay, relay to relay) carries frames:
 *
 *     +--------+----------------+---------------------+
 *     | type   | length         | payload             |
 *     | 1 byte | 4 bytes, BE    | `length` bytes      |
 *     +--------+----------------+---------------------+
 *
 * `length` is checked against {@link MAX_PAYLOAD} before any of the body is buffered.
 * Strings are `u16 length (BE) + UTF-8 bytes`. Integers are big-endian.
 *
 * Flow (device side; see docs/protocol.md for the byte layouts):
 *
 *   1. Device opens TCP and sends HELLO then LOGIN(id, nonce, instance, ticket)
 *      (pipelined). Relay answers LOGIN_CHALLENGE(nonce, salt, iterations, prehash);
 *      the device answers LOGIN_PROOF(proof) (SCRAM-SHA-256, RFC 5802/7677: the
 *      password never crosses the wire); the relay answers LOGIN_RESULT (code 0 =
 *      logged in, with its ServerSignature, which the device checks, and a ticket for
 *      the device's further connections) or refuses and closes. Two round trips.
 *   2. Idle: device sends PING every `keepaliveMs`, relay answers PONG. Device may send
 *      LIST / STATUS (answered by LIST_RESULT / STATUS_RESULT), CONNECT, or LOGOUT.
 *   3. CONNECT(target, service) on connection 1. Relay sends NOTICE(session, requester)
 *      on an idle connection 2 of the target. Target answers ACCEPT or REJECT on
 *      connection 2; the relay passes ACCEPT or REJECT back on connection 1.
 *   4. After ACCEPT both connections are dedicated to the session: DATA frames pass
 *      through the relay untouched, in both directions.
 *   5. END(reason) says "I send no more data" (a half-close); the relay forwards it.
 *      Once a device has sent and received END it sends RELEASE: the connection is
 *      idle again. A connection that drops mid-session makes the relay send
 *      END(aborted) to the other side.
 *
 * Relay-to-relay links use the same frames. A relay dials another, sends HELLO (role
 * relay), gets LINK_CHALLENGE(nonce), answers LINK_AUTH(name, address, purpose, nonce,
 * HMAC), and gets LINK_OK(name, HMAC): both sides proved the shared mesh secret over
 * fresh nonces. From then on every frame either relay interprets is sealed: carried in
 * LINK_SEALED(inner frame | HMAC tag) under a per-direction key derived from the secret
 * and both nonces, with an implicit sequence number (only a session's DATA and END pass
 * plain on a data link). A data link then carries ROUTE (a CONNECT on behalf of a device) and the
 * session exactly like a device connection; a control link carries UPDATE and DIGEST
 * (docs/mesh.md).
 *
 * Version history:
 *   1 — first version (2026-11).
 *   2 — SCRAM-SHA-256 login (LOGIN changed, LOGIN_CHALLENGE 0x19 and LOGIN_PROOF 0x1a
 *       added, LOGIN_RESULT extended with signature and ticket); LOGIN's agent instance
 *       token; error codes 6, 7, 8, 12-14 and 27 (2026-11-30).
 *   3 — services in the directory: LOGIN ends with the list of services the connection
 *       answers notices for; the directory entry carries the device's services (after
 *       its attributes); error code 28 RateLimited (2026-12-01).
 *   4 — relay links only ({@link LINK_PROTOCOL_VERSION}; devices speak 3): LINK_SEALED
 *       0x1b, every link frame but a session's DATA/END sealed; the handshake MACs
 *       cover both advertised addresses ("-v3" labels) (2026-12-01).
 *
 * @module
 */

/** Current protocol version, sent in HELLO. */
export const PROTOCOL_VERSION = 3;

/**
 * Version a relay sends in HELLO when it dials another relay. Links changed without the
 * device protocol changing: an acceptor requires exactly this on a relay's HELLO.
 */
export const LINK_PROTOCOL_VERSION = 4;

/** Magic bytes at the start of every HELLO payload: ASCII "TSNG". */
export const HELLO_MAGIC = 0x54534e47;

/** Bytes in a frame header: 1 type byte + 4 length bytes. */
export const HEADER_SIZE = 5;

/** Largest payload a frame may declare (64 KiB). */
export const MAX_PAYLOAD = 64 * 1024;

/** Frame type codes. */
export const FrameType = {
  Hello: 0x01,
  Login: 0x02,
  LoginResult: 0x03,
  Ping: 0x04,
  Pong: 0x05,
  Logout: 0x06,
  List: 0x07,
  ListResult: 0x08,
  Status: 0x09,
  StatusResult: 0x0a,
  Connect: 0x0b,
  Notice: 0x0c,
  Accept: 0x0d,
  Reject: 0x0e,
  Data: 0x0f,
  End: 0x10,
  Release: 0x11,
  Error: 0x12,
  LinkChallenge: 0x13,
  LinkAuth: 0x14,
  LinkOk: 0x15,
  Route: 0x16,
  Update: 0x17,
  Digest: 0x18,
  LoginChallenge: 0x19,
  LoginProof: 0x1a,
  /** Relay links only: a frame wrapped with its MAC (relay/mesh/link_seal.ts). */
  LinkSealed: 0x1b,
} as const;

/** A frame type code. */
export type FrameType = typeof FrameType[keyof typeof FrameType];

/** Role announced in HELLO. */
export const Role = {
  Device: 1,
  Relay: 2,
} as const;

/** A role code. */
export type Role = typeof Role[keyof typeof Role];

/** Reason carried by END. */
export const EndReason = {
  /** The sender has finished sending. */
  Normal: 0,
  /** The session failed: the other side vanished or broke the protocol. */
  Aborted: 1,
} as const;

/** An END reason code. */
export type EndReason = typeof EndReason[keyof typeof EndReason];

/**
 * Stable error codes, used in ERROR, LOGIN_RESULT and REJECT. Never renumber; add new
 * codes at the end of their group.
 */
export const ErrorCode = {
  Ok: 0,
  // 1-9: framing and protocol
  BadFrame: 1,
  UnsupportedVersion: 2,
  UnexpectedMessage: 3,
  LoginTimeout: 4,
  KeepaliveTimeout: 5,
  /** A session carried no byte in either direction for the relay's session idle timeout. */
  SessionTimeout: 6,
  /** A field is longer than the protocol allows (ID, service name, password). */
  FieldTooLong: 7,
  /** This relay port speaks TLS and got plain frames (or the reverse): fix the agent's --tls-ca. */
  TlsRequired: 8,
  // 10-19: login
  AuthFailed: 10,
  Throttled: 11,
  /** The device already holds the relay's maximum number of connections. */
  TooManyConnections: 12,
  /** Another agent instance logged in with this device ID; this one must stop. */
  Replaced: 13,
  /** Too many connections that have not logged in yet (from this address or in total). */
  TooManyUnauthenticated: 14,
  // 20-39: connection requests
  UnknownTarget: 20,
  TargetOffline: 21,
  TargetBusy: 22,
  TargetRejected: 23,
  TargetTimeout: 24,
  ServiceUnsupported: 25,
  TargetUnreachable: 26,
  /** The requester or the target already runs the relay's maximum number of sessions. */
  SessionLimit: 27,
  /** The requester sent connection requests faster than the relay's per-device rate. */
  RateLimited: 28,
  // 40-49: relay state
  ShuttingDown: 40,
  Internal: 41,
  DirectoryUnavailable: 42,
} as const;

/** An error code. */
export type ErrorCode = typeof ErrorCode[keyof typeof ErrorCode];

/** Human names for error codes, for logs and CLI messages. */
export const ERROR_CODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(ErrorCode).map(([name, code]) => [code, name]),
);

/** Device state as shown in the directory. */
export const DeviceState = {
  /** Registered, no connection anywhere. */
  Offline: 0,
  /** Logged in on some relay. */
  Online: 1,
  /** Logged in on a relay that this relay cannot currently reach. */
  Unreachable: 2,
} as const;

/** A device state code. */
export type DeviceState = typeof DeviceState[keyof typeof DeviceState];

/** Longest device ID, in UTF-8 bytes (the registry allows 64 ASCII characters). */
export const MAX_ID_BYTES = 64;

/** Longest service name, in UTF-8 bytes. */
export const MAX_SERVICE_BYTES = 64;

/** Most services one LOGIN may declare. */
export const MAX_SERVICES = 32;

/** Longest password or login secret, in UTF-8 bytes. */
export const MAX_PASSWORD_BYTES = 1024;

/** Longest agent instance token in LOGIN, in UTF-8 bytes. */
export const MAX_INSTANCE_BYTES = 64;

/**
 * Largest frame payload accepted before a connection has logged in (HELLO, LOGIN and the
 * relay-link handshake are all far smaller): an unauthenticated peer can make the relay
 * buffer at most this much.
 */
export const MAX_PRELOGIN_PAYLOAD = 4096;

/** Service name for tsunagi's file transfer; needs the `FILE TX/RX` attribute. */
export const FILE_SERVICE = "file";

/** Device attribute that marks a file-receiving endpoint (patent Fig. 2: FILE TX/RX). */
export const FILE_ATTRIBUTE = "FILE TX/RX";
