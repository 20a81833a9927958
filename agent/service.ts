/**
 * Services as the supervisor runs them: what a handler sees of a request, and how one
 * notice is answered (policy checks, the handler, then release or close).
 *
 * @module
 */

import { RelayError } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { ErrorCode } from "../shared/protocol/constants.ts";
import type { Notice, RelayConnection } from "./relay_client.ts";
import type { Session } from "./session.ts";

/** A connection request for one of this device's services, as its handler sees it. */
export interface ServiceRequest {
  /** Requesting device. */
  readonly from: string;
  /** Its type (`USER`, `FAX`, ...). */
  readonly fromType: string;
  /** Service asked for. */
  readonly service: string;
  /** Session ID. */
  readonly id: string;
  /** Aborts when the agent stops. */
  readonly signal: AbortSignal;
  /** Accepts: the connection now carries the session. */
  accept(): Promise<Session>;
  /** Refuses; the requester gets TargetRejected with `message`. */
  reject(message: string): Promise<void>;
}

/**
 * Serves one request: accept (and use the session) or reject. When it returns, an
 * unanswered request is rejected and an accepted session still open is released; when
 * it throws, an accepted session's connection is closed (the peer sees END(aborted)).
 */
export type ServiceHandler = (request: ServiceRequest) => Promise<void>;

/** A service: its handler, and optionally who may use it. */
export interface ServiceSpec {
  /** The handler. */
  handler: ServiceHandler;
  /** Only these requesters (default: everyone the supervisor-wide `acceptFrom` allows). */
  acceptFrom?: ReadonlySet<string>;
}

/** What a supervisor exposes, by service name. */
export type Services = Record<string, ServiceHandler | ServiceSpec>;

/** Liveness and load as callers see them. */
export interface AgentStatus {
  /** At least one connection is logged in. */
  online: boolean;
  /** The relay's name ("" until the first login). */
  relay: string;
  /** Idle connections. */
  idle: number;
  /** Connections carrying a session (or a request in flight). */
  busy: number;
  /** When a message last arrived from the relay (supervisor clock, ms; 0 = never). */
  lastHeardAt: number;
}

/** Thrown when the relay refuses our credentials: retrying cannot help. */
export class FatalLoginError extends Error {
  /**
   * The relay's reason when it had ended this device's logins first (its password was
   * changed or its registration removed), else "".
   */
  readonly revoked: string;
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown; revoked?: string }) {
    super(message, options);
    this.name = "FatalLoginError";
    this.revoked = options?.revoked ?? "";
  }
}

/** Another agent logged in with this device ID and took over: this one must stop. */
export class AgentReplacedError extends Error {
  /** Creates the error with the relay's message. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AgentReplacedError";
  }
}

/** What {@link answerNotice} needs from its supervisor. */
export interface NoticeContext {
  /** This device's ID and the supervisor-wide policy. */
  options: { id: string; acceptFrom?: ReadonlySet<string> };
  /** Services by name. */
  services: ReadonlyMap<string, ServiceSpec>;
  /** Logger. */
  logger: Logger;
  /** Aborts when the supervisor stops. */
  signal: AbortSignal;
  /** Called when the relay said another instance replaced this one. */
  replaced: (message: string, cause: unknown) => void;
}

/** Hands a notice to its service (or refuses it by policy); true when the connection is idle again afterwards. */
export async function answerNotice(
  conn: RelayConnection,
  notice: Notice,
  ctx: NoticeContext,
): Promise<boolean> {
  const { logger, signal, services, options } = ctx;
  const from = notice.requester;
  const spec = services.get(notice.service);
  // A service's own list replaces the device-wide one for that service.
  let refusal = "";
  if (spec?.acceptFrom !== undefined) {
    if (!spec.acceptFrom.has(from)) {
      refusal = `${options.id} does not accept "${notice.service}" connections from ${from}`;
    }
  } else if (options.acceptFrom && !options.acceptFrom.has(from)) {
    refusal = `${options.id} does not accept connections from ${from}`;
  } else if (spec === undefined) {
    refusal = `${options.id} offers no service "${notice.service}"`;
  }
  if (spec === undefined || refusal !== "") {
    logger.info("session rejected", { from, service: notice.service, reason: refusal });
    await conn.reject(notice, refusal);
    return true;
  }
  let session: Session | null = null;
  let answered = false;
  const request: ServiceRequest = {
    from,
    fromType: notice.requesterType,
    service: notice.service,
    id: notice.session,
    signal,
    accept: async () => {
      if (answered) throw new TypeError("Request already answered");
      answered = true;
      session = await conn.accept(notice);
      logger.info("session accepted", { from, service: notice.service, session: notice.session });
      return session;
    },
    reject: async (message) => {
      if (answered) throw new TypeError("Request already answered");
      answered = true;
      logger.info("session rejected", { from, service: notice.service, reason: message });
      await conn.reject(notice, message);
    },
  };
  try {
    await spec.handler(request);
    if (!answered) {
      await request.reject(`${options.id}: service "${notice.service}" did not answer`);
    }
    if (session === null) return true;
    const s = session as Session;
    await s.release({ signal });
    logger.info("session ended", { from, service: notice.service, session: notice.session });
    return true;
  } catch (e) {
    if (e instanceof RelayError && e.code === ErrorCode.Replaced) {
      ctx.replaced(e.message, e);
      return false;
    }
    if (!answered) {
      // The handler failed before answering: the requester hears why.
      await request.reject(e instanceof Error ? e.message : String(e)).catch(() => {});
      return !conn.framed.closed;
    }
    logger.warn("session failed", {
      from,
      service: notice.service,
      session: notice.session,
      error: String(e),
    });
    return false; // the loop closes the connection; the relay aborts the peer's side
  }
}
