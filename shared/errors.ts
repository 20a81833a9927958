/**
 * Error classes shared by relay and agent.
 *
 * Each subclasses the nearest built-in and carries a stable `name`, so callers can
 * branch on `instanceof` and logs stay readable. Protocol-level errors also carry the
 * wire {@link ErrorCode} they map to.
 *
 * @module
 */

import { ErrorCode } from "./protocol/constants.ts";

/** A frame declared a payload longer than the protocol maximum. */
export class FrameTooLargeError extends RangeError {
  /** Wire code sent to the peer before the connection is closed. */
  readonly code = ErrorCode.BadFrame;
  /** Frame type byte of the offending header (-1 if unknown). */
  readonly type: number;
  /** The declared length. */
  readonly declared: number;
  /** Creates the error for a declared length over `max`. */
  constructor(declared: number, max: number, type = -1) {
    super(`Cannot decode frame: declared length ${declared} exceeds maximum ${max}`);
    this.name = "FrameTooLargeError";
    this.type = type;
    this.declared = declared;
  }

  /**
   * True when the "header" is really a TLS record header (content type 0x14-0x17,
   * version 3.0-3.4): the peer speaks TLS where plain frames were expected.
   */
  get looksLikeTls(): boolean {
    return this.type >= 0x14 && this.type <= 0x17 && this.declared >>> 24 === 0x03 &&
      ((this.declared >>> 16) & 0xff) <= 0x04;
  }
}

/** The stream ended in the middle of a frame. */
export class TruncatedFrameError extends SyntaxError {
  /** Wire code sent to the peer before the connection is closed. */
  readonly code = ErrorCode.BadFrame;
  /** Creates the error for `pending` unread bytes at end of stream. */
  constructor(pending: number) {
    super(`Cannot decode frame: stream ended with ${pending} bytes of an incomplete frame`);
    this.name = "TruncatedFrameError";
  }
}

/** A frame's payload does not match the layout of its type, or the type is unknown. */
export class MalformedMessageError extends SyntaxError {
  /** Wire code sent to the peer before the connection is closed. */
  readonly code: ErrorCode;
  /** Creates the error; `code` defaults to {@link ErrorCode.BadFrame}. */
  constructor(message: string, options?: { code?: ErrorCode; cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.name = "MalformedMessageError";
    this.code = options?.code ?? ErrorCode.BadFrame;
  }
}

/** The peer sent a message that is valid but not allowed in the connection's state. */
export class ProtocolError extends Error {
  /** Wire code sent to the peer before the connection is closed. */
  readonly code: ErrorCode;
  /** Creates the error with a wire code. */
  constructor(message: string, code: ErrorCode = ErrorCode.UnexpectedMessage) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** The relay answered with an error frame or a negative result. */
export class RelayError extends Error {
  /** Wire code the relay sent. */
  readonly code: ErrorCode;
  /** Creates the error from a relay's code and message. */
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "RelayError";
    this.code = code;
  }
}

/** Login was refused: unknown device, wrong password, or too many failures. */
export class LoginRefusedError extends RelayError {
  /** Milliseconds the relay asked us to wait before retrying (0 if none). */
  readonly retryAfterMs: number;
  /** Creates the error from the relay's answer. */
  constructor(code: ErrorCode, message: string, retryAfterMs = 0) {
    super(code, message);
    this.name = "LoginRefusedError";
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The relay's login challenge asked for a key derivation the device refuses (too cheap,
 * too costly, or unknown): the relay may be an impostor; the password was not used.
 */
export class UnsafeChallengeError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "UnsafeChallengeError";
  }
}

/** A connection request failed: the target is unknown, offline, busy, refused or silent. */
export class PeerUnavailableError extends RelayError {
  /** Creates the error from the relay's reject code and message. */
  constructor(code: ErrorCode, message: string) {
    super(code, message);
    this.name = "PeerUnavailableError";
  }
}

/** A file transfer stopped before the receiver confirmed every file. */
export class TransferAbortedError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TransferAbortedError";
  }
}

/** The connection closed (or failed) while an operation was waiting on it. */
export class ConnectionClosedError extends Error {
  /** Creates the error. */
  constructor(message = "Connection closed", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConnectionClosedError";
  }
}

/** The shared directory (Redis) cannot be reached or did not answer in time. */
export class DirectoryUnavailableError extends Error {
  /** Creates the error; `cause` is the client's own error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DirectoryUnavailableError";
  }
}

/** A user-facing configuration mistake: bad flag, missing file, unreadable config. */
export class UsageError extends Error {
  /** A one-line hint on how to fix it. */
  readonly hint: string;
  /** Creates the error with an optional hint. */
  constructor(message: string, hint = "") {
    super(message);
    this.name = "UsageError";
    this.hint = hint;
  }
}
