/**
 * One relay-side connection and its life-cycle state: the single owner of that state.
 *
 * Every transition is a method here, runs to completion synchronously (no `await`
 * between the check of a state and its change) and checks the state it starts from.
 * The connection's own loop makes all transitions but one: another connection's loop
 * may {@link RelayConn.offer} it a notice, which succeeds only on an idle connection.
 * A notice's outcome is decided once (see notice.ts), so the target's ACCEPT, the
 * answer timeout and a crossing CONNECT cannot both win.
 *
 * Every transition into "idle" calls {@link RelayConn.onIdle} synchronously: requests
 * waiting for one of this device's connections (waits.ts) are woken that way. The hook
 * only wakes them; each waiter then offers its notice from its own loop.
 *
 * ```
 *  hello ─login─▶ idle ─beginConnect─▶ connecting ─accepted─▶ session ─END─▶ ending
 *                  ▲ ▲                    │ refused                            │
 *                  │ └────────────────────┘                                    │
 *                  │ idle ─offer─▶ noticed ─ACCEPT─▶ session                   │
 *                  │                 │ REJECT / crossing CONNECT ─▶ idle        │
 *                  │                 │ timeout ─▶ closed                        │
 *                  └───────────────────────────── RELEASE (both ended) ◀───────┘
 * ```
 *
 * @module
 */

import type { FramedConn } from "../../shared/framed_conn.ts";
import { ProtocolError } from "../../shared/errors.ts";
import type { Notice } from "./notice.ts";
import type { RelaySession, SessionSide } from "./session.ts";

/** Connection life cycle on the relay. */
export type ConnState =
  | "hello" // waiting for HELLO + LOGIN
  | "idle" // logged in, available for notices
  | "connecting" // sent CONNECT (or ROUTE), waiting for the target's answer
  | "noticed" // received a NOTICE, the relay waits for ACCEPT/REJECT
  | "session" // dedicated to a session, passing data
  | "ending" // this side sent END; waits for RELEASE
  | "closed";

/** A relay-side connection: a device's, or a link from another relay. */
export class RelayConn implements SessionSide {
  /** Framed socket. */
  readonly framed: FramedConn;
  /** Remote address `HOST:PORT`, for logs. */
  readonly remote: string;
  /** Remote host without port: the key of per-address limits and the login throttle. */
  readonly remoteHost: string;
  /** When the TCP connection was accepted (relay clock). */
  readonly openedAt: number;
  /** Last time a frame or chunk arrived (relay clock). */
  lastSeen: number;
  /** A device's connection, or a link from another relay (set at login). */
  #kind: "device" | "link" = "device";
  #deviceId = "";
  #endpointId = "";
  #instance = "";
  #services: readonly string[] = [];
  #verifier = "";
  #linkPeer = "";
  #linkAddress = "";
  #linkPurpose: "data" | "control" = "data";
  #state: ConnState = "hello";
  #session: RelaySession<SessionSide> | null = null;
  #notice: Notice<RelayConn> | null = null;
  /** Session ID of the last notice voided by a crossing CONNECT (its late answer is ignored). */
  #voidedNotice = "";
  readonly #now: () => number;
  /**
   * Called (synchronously, by whichever loop made the transition) each time a device
   * connection becomes idle. Set once by the relay before the connection is served.
   */
  onIdle: ((conn: RelayConn) => void) | null = null;

  /** Wraps an accepted socket. */
  constructor(framed: FramedConn, remote: string, remoteHost: string, now: () => number) {
    this.framed = framed;
    this.remote = remote;
    this.remoteHost = remoteHost;
    this.#now = now;
    this.openedAt = now();
    this.lastSeen = this.openedAt;
  }

  /** Current state. */
  get state(): ConnState {
    return this.#state;
  }
  /** Device connection or relay link. */
  get kind(): "device" | "link" {
    return this.#kind;
  }
  /** Device ID once logged in ("" for links). */
  get deviceId(): string {
    return this.#deviceId;
  }
  /** The device at the far end: this device, or for a link the requester it carries. */
  get endpointId(): string {
    return this.#endpointId;
  }
  /** Agent instance token from LOGIN ("" for one-shot clients). */
  get instance(): string {
    return this.#instance;
  }
  /** Services this connection answers notices for (declared in LOGIN). */
  get services(): readonly string[] {
    return this.#services;
  }
  /** The stored verifier this device connection logged in under (see login.ts). */
  get verifier(): string {
    return this.#verifier;
  }
  /** True when this connection answers notices for `service`. */
  offers(service: string): boolean {
    return this.#services.includes(service);
  }
  /** For links: the other relay's name. */
  get linkPeer(): string {
    return this.#linkPeer;
  }
  /** For links: a data link (carries forwarded sessions) or the mesh's control link. */
  get linkPurpose(): "data" | "control" {
    return this.#linkPurpose;
  }
  /** For links: the address the other relay advertises. */
  get linkAddress(): string {
    return this.#linkAddress;
  }
  /** The session while in "session"/"ending". */
  get session(): RelaySession<SessionSide> | null {
    return this.#session;
  }
  /** The notice this connection carries while "noticed". */
  get notice(): Notice<RelayConn> | null {
    return this.#notice;
  }
  /** True while the connection can take a notice. */
  get isIdle(): boolean {
    return this.#state === "idle";
  }
  /** True while the connection is part of a session (until RELEASE). */
  get inSession(): boolean {
    return this.#session !== null;
  }
  /** The session peer's device ID, or null. */
  get peerId(): string | null {
    return this.#session === null ? null : this.#session.peerOf(this).endpointId;
  }

  /** Records activity. */
  touch(): void {
    this.lastSeen = this.#now();
  }

  #expect(from: ConnState, what: string): void {
    if (this.#state !== from) {
      throw new ProtocolError(`Unexpected ${what} in state ${this.#state}`);
    }
  }

  #becameIdle(): void {
    if (this.#kind === "device") this.onIdle?.(this);
  }

  /** hello → idle: a device logged in, declaring the services this connection answers. */
  loggedIn(
    deviceId: string,
    instance: string,
    services: readonly string[] = [],
    verifier = "",
  ): void {
    this.#expect("hello", "LOGIN");
    this.#deviceId = deviceId;
    this.#endpointId = deviceId;
    this.#instance = instance;
    this.#services = [...new Set(services)].sort();
    this.#verifier = verifier;
    this.#state = "idle";
  }

  /**
   * Wakes requests waiting for this device once the connection is in the device table
   * (login attaches it after {@link loggedIn}).
   */
  announceIdle(): void {
    if (this.#state === "idle") this.#becameIdle();
  }

  /** hello → idle: another relay's link authenticated. */
  linked(peer: string, address: string, purpose: "data" | "control"): void {
    this.#expect("hello", "LINK_AUTH");
    this.#kind = "link";
    this.#linkPurpose = purpose;
    this.#linkPeer = peer;
    this.#linkAddress = address;
    this.#state = "idle";
  }

  /** idle → connecting (own loop): CONNECT or ROUTE from `endpoint`. */
  beginConnect(what: string, endpoint: string): void {
    this.#expect("idle", what);
    if (this.#kind === "link") this.#endpointId = endpoint;
    this.#state = "connecting";
  }

  /** connecting → idle (own loop): the request was refused. */
  connectFailed(): void {
    if (this.#state !== "connecting") return;
    this.#state = "idle";
    this.#becameIdle();
  }

  /**
   * idle → noticed (called by the requester's loop): takes `notice` if idle. False when
   * the connection is not idle; nothing changed then.
   */
  offer(notice: Notice<RelayConn>): boolean {
    if (this.#state !== "idle" || this.framed.closed) return false;
    this.#state = "noticed";
    this.#notice = notice;
    return true;
  }

  /** noticed → idle: the notice could not be sent (or was refused before sending). */
  withdrawNotice(notice: Notice<RelayConn>): void {
    if (this.#notice !== notice) return;
    this.#notice = null;
    if (this.#state !== "noticed") return;
    this.#state = "idle";
    this.#becameIdle();
  }

  /**
   * noticed → idle (own loop): the device sent CONNECT on the connection just picked for
   * a notice: the requests crossed and the notice is void (docs/protocol.md 6.4).
   */
  crossNotice(): void {
    const notice = this.#notice;
    if (this.#state !== "noticed" || notice === null) return;
    this.#notice = null;
    this.#voidedNotice = notice.id;
    this.#state = "idle";
    notice.settle({ kind: "crossed" });
    // No wake-up: the device's own CONNECT takes this connection at once.
  }

  /** True for an answer to a notice this connection voided (it is ignored). */
  isVoidedAnswer(session: string): boolean {
    return session !== "" && session === this.#voidedNotice;
  }

  /**
   * noticed → idle (own loop): the device answered REJECT. Returns the notice, or throws
   * if no such notice is pending.
   */
  answered(session: string, what: string): Notice<RelayConn> {
    const notice = this.#notice;
    if (this.#state !== "noticed" || notice === null || notice.id !== session) {
      throw new ProtocolError(`Unexpected ${what}: no such notice pending`);
    }
    this.#notice = null;
    this.#state = "idle";
    // No wake-up here: after ACCEPT the session starts in the same turn; after REJECT
    // the loop calls announceIdle().
    return notice;
  }

  /** connecting|idle → session (own loop): the session starts on this connection. */
  enterSession(session: RelaySession<SessionSide>): void {
    if (this.#state !== "connecting" && this.#state !== "idle") {
      throw new ProtocolError(`Cannot start a session in state ${this.#state}`);
    }
    this.#session = session;
    this.#state = "session";
  }

  /** session → ending (own loop): this side sent END. */
  ended(): void {
    this.#expect("session", "END");
    this.#state = "ending";
  }

  /** ending → idle (own loop): RELEASE after both sides ended. Returns the session. */
  released(): RelaySession<SessionSide> {
    const session = this.#session;
    if (this.#state !== "ending" || session === null || !session.bothEnded) {
      throw new ProtocolError("RELEASE before both sides sent END");
    }
    this.#session = null;
    this.#state = "idle";
    this.#becameIdle();
    return session;
  }

  /**
   * Any → closed: the connection is finished. Returns what was pending on it (a notice
   * to settle as gone, a session to abort) for the caller to clean up.
   */
  closed(): { previous: ConnState; notice: Notice<RelayConn> | null } {
    const previous = this.#state;
    const notice = this.#notice;
    this.#state = "closed";
    this.#notice = null;
    return { previous, notice };
  }
}
