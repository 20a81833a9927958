/**
 * One logged-in connection from a device to its relay.
 *
 * The owner of a {@link RelayConnection} is the only reader of it: it calls either the
 * request methods (`list`, `status`, `connect`) or `nextMessage` (an owner loop of an
 * idle connection: notices, PONGs and answers to its own `request`), never both at once.
 * Every message read counts as a sign of life: {@link RelayConnection.lastHeardAt}.
 *
 * Every wait here has a deadline: dial and login share `timeoutMs`, and the request
 * methods take a `signal` that closes the connection when it aborts (the pending read
 * then fails).
 *
 * @module
 */

import { formatHostPort, type HostPort } from "../shared/address.ts";
import {
  ConnectionClosedError,
  FrameTooLargeError,
  LoginRefusedError,
  PeerUnavailableError,
  ProtocolError,
  RelayError,
  UnsafeChallengeError,
} from "../shared/errors.ts";
import { FramedConn } from "../shared/framed_conn.ts";
import { dial } from "../shared/dial.ts";
import { type DirectoryEntry, encodeMessage, type Message } from "../shared/protocol/messages.ts";
import { ErrorCode, PROTOCOL_VERSION, Role } from "../shared/protocol/constants.ts";
import {
  authMessage,
  bytesEqual,
  challengeCostError,
  clientKey,
  clientProof,
  DEFAULT_MIN_ITERATIONS,
  newScramNonce,
  resumeKey,
  resumeProof,
  resumeSignature,
  serverKey,
  serverSignature,
} from "../shared/scram.ts";
import { defaultLoginCache, type LoginCache } from "./login_cache.ts";
import { systemClock } from "./clock.ts";
import { Session, type SessionOptions } from "./session.ts";

/** Software name announced in HELLO. */
export const SOFTWARE = "tsunagi-agent/0.2";

/** How to reach and log in to a relay. */
export interface RelayLogin {
  /** Relay address. */
  address: HostPort;
  /** Device ID. */
  id: string;
  /** Device password. */
  password: string;
  /**
   * Agent instance token (random per `tsunagi run` process) sent in LOGIN; a later login
   * with another token replaces this instance. Omitted by one-shot commands.
   */
  instance?: string;
  /**
   * Services this connection answers notices for, declared in LOGIN (default none: the
   * relay then sends it no notices; it only makes requests).
   */
  services?: readonly string[];
  /** PEM CA certificate: connect with TLS and trust this CA. */
  tlsCa?: string;
  /** Read size per socket read (default 64 KiB + header). */
  readSize?: number;
  /**
   * Fewest PBKDF2 iterations accepted in a challenge without a strong scrypt prehash
   * (default {@link DEFAULT_MIN_ITERATIONS}, what `registry add` writes).
   */
  minIterations?: number;
  /** Salted passwords and tickets (default: the process-wide {@link defaultLoginCache}). */
  cache?: LoginCache;
}

/** Options for {@link connectRelay}. */
export interface ConnectRelayOptions {
  /** Aborts dialing and login. */
  signal?: AbortSignal;
  /** Gives up on dial + login after this, ms (default 10000). */
  timeoutMs?: number;
  /** Deadlines of the sessions this connection will carry. */
  session?: SessionOptions;
}

/** Options of a request on a logged-in connection. */
export interface RequestOptions {
  /** Aborting it closes the connection and fails the request. */
  signal?: AbortSignal;
}

/** A NOTICE received on an idle connection. */
export type Notice = Extract<Message, { kind: "notice" }>;

/**
 * Dials the relay and logs in with SCRAM-SHA-256 (docs/protocol.md 6.1): HELLO + LOGIN
 * in one write, LOGIN_CHALLENGE, LOGIN_PROOF, LOGIN_RESULT, whose signature proves the
 * relay knows this device's verifier. The password never leaves the process. With a
 * ticket from an earlier login to the same relay, the proof uses the ticket's key.
 */
export async function connectRelay(
  login: RelayLogin,
  options: ConnectRelayOptions = {},
): Promise<RelayConnection> {
  const signal = AbortSignal.any([
    ...(options.signal ? [options.signal] : []),
    AbortSignal.timeout(options.timeoutMs ?? 10_000),
  ]);
  signal.throwIfAborted();
  // `signal` lets dial give up on a silent TCP or TLS handshake; until shared/dial.ts
  // takes it, the race below stops waiting and closes a late socket.
  const dialOptions = { tlsCa: login.tlsCa, signal };
  const socket = await untilAborted(dial(login.address, dialOptions), signal, (c) => c.close())
    .catch((e) => {
      if (!signal.aborted) throw e;
      throw new ConnectionClosedError(
        `Cannot reach relay ${formatHostPort(login.address)}: ${reasonText(signal)}`,
        { cause: e },
      );
    });
  const framed = new FramedConn(socket, { readSize: login.readSize ?? 64 * 1024 + 5 });
  const onAbort = () => framed.close();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const hello: Message = {
      kind: "hello",
      version: PROTOCOL_VERSION,
      role: Role.Device,
      software: SOFTWARE,
    };
    const answer = await scramLogin(framed, login, encodeMessage(hello));
    return new RelayConnection(framed, login, answer.relay, answer.keepaliveMs, options.session);
  } catch (e) {
    framed.close();
    if (signal.aborted && !(e instanceof RelayError)) {
      throw new ConnectionClosedError(
        `Cannot log in to relay ${formatHostPort(login.address)}: ${reasonText(signal)}`,
        { cause: signal.reason },
      );
    }
    throw e;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

type LoginResult = Extract<Message, { kind: "loginResult" }>;

/** Runs the login exchange after `hello`; the relay's Ok answer, or throws. */
async function scramLogin(
  framed: FramedConn,
  login: RelayLogin,
  hello: Uint8Array,
): Promise<LoginResult> {
  const where = formatHostPort(login.address);
  const cache = login.cache ?? defaultLoginCache;
  const ticketKey = `${where}\0${login.id}\0${login.instance ?? ""}`;
  const ticket = cache.ticket(ticketKey);
  const clientNonce = newScramNonce();
  const request = encodeMessage({
    kind: "login",
    id: login.id,
    nonce: clientNonce,
    instance: login.instance ?? "",
    ticket: ticket?.ticket ?? "",
    services: [...(login.services ?? [])],
  });
  const both = new Uint8Array(hello.length + request.length);
  both.set(hello);
  both.set(request, hello.length);
  await framed.write(both);
  const challenge = await readLoginAnswer(framed, where);
  if (challenge.kind === "loginResult") {
    // Refused before any challenge (throttled, shutting down...); Ok here is a violation.
    throw challenge.code === ErrorCode.Ok
      ? new ProtocolError("Relay accepted a login without a challenge")
      : new LoginRefusedError(challenge.code, challenge.message, challenge.retryAfterMs);
  }
  if (challenge.kind !== "loginChallenge") {
    throw new ProtocolError(`Expected LOGIN_CHALLENGE, got ${challenge.kind}`);
  }
  if (!challenge.nonce.startsWith(clientNonce) || challenge.nonce.length <= clientNonce.length) {
    throw new ProtocolError("Relay's LOGIN_CHALLENGE does not extend this login's nonce");
  }
  const x = { id: login.id, clientNonce, nonce: challenge.nonce, salt: challenge.salt };
  let proof: Uint8Array;
  let expected: Uint8Array;
  let newTicketKey: (() => Uint8Array) | null = null;
  if (challenge.iterations === 0) {
    if (ticket === undefined) throw new ProtocolError("Relay offered a ticket login unasked");
    const auth = authMessage({ ...x, iterations: 0 });
    proof = resumeProof(ticket.key, auth);
    expected = resumeSignature(ticket.key, auth);
  } else {
    const unsafe = challengeCostError(
      challenge.iterations,
      challenge.prehash,
      login.minIterations ?? DEFAULT_MIN_ITERATIONS,
    );
    if (unsafe !== null) throw new UnsafeChallengeError(unsafe);
    if (ticket !== undefined) cache.dropTicket(ticketKey);
    const auth = authMessage({ ...x, iterations: challenge.iterations });
    const salted = await cache.salted(
      login.password,
      challenge.salt,
      challenge.iterations,
      challenge.prehash,
    );
    proof = clientProof(salted, auth);
    expected = serverSignature(serverKey(salted), auth);
    newTicketKey = () => resumeKey(clientKey(salted), auth);
  }
  await framed.send({ kind: "loginProof", proof });
  const result = await readLoginAnswer(framed, where);
  if (result.kind !== "loginResult") {
    throw new ProtocolError(`Expected LOGIN_RESULT, got ${result.kind}`);
  }
  if (result.code !== ErrorCode.Ok) {
    if (ticket !== undefined) cache.dropTicket(ticketKey);
    throw new LoginRefusedError(result.code, result.message, result.retryAfterMs);
  }
  if (!bytesEqual(result.signature, expected)) {
    throw new ProtocolError(
      `Relay ${where} could not prove it knows this device's password verifier: ` +
        "it may be an impostor; not logging in",
    );
  }
  if (newTicketKey !== null && result.ticket !== "") {
    cache.storeTicket(ticketKey, result.ticket, newTicketKey(), result.ticketTtlMs);
  }
  return result;
}

/** Reads the relay's next login message; an ERROR, a close or a TLS record throw. */
async function readLoginAnswer(framed: FramedConn, where: string): Promise<Message> {
  let m: Message | null;
  try {
    m = await framed.readMessage();
  } catch (e) {
    if (e instanceof FrameTooLargeError && e.looksLikeTls) {
      throw new ConnectionClosedError(
        `Relay ${where} speaks TLS (it answered with a TLS record): give the agent --tls-ca`,
        { cause: e },
      );
    }
    throw e;
  }
  if (m === null) {
    throw new ConnectionClosedError(`Relay ${where} closed the connection during login`);
  }
  if (m.kind === "error") {
    if (m.code === ErrorCode.TlsRequired) {
      throw new ConnectionClosedError(`Relay ${where}: ${m.message}`);
    }
    throw new RelayError(m.code, m.message);
  }
  return m;
}

/** A logged-in connection. See the module doc for who may read it. */
export class RelayConnection {
  /** Framed socket. */
  readonly framed: FramedConn;
  /** How this connection was made (to open siblings). */
  readonly login: RelayLogin;
  /** The relay's name, from LOGIN_RESULT. */
  readonly relayName: string;
  /** Keep-alive interval the relay asked for, ms. */
  readonly keepaliveMs: number;
  readonly #sessionOptions: SessionOptions;
  #nonce = 0;
  #lastHeardAt: number;

  /** Wraps a logged-in socket; use {@link connectRelay}. */
  constructor(
    framed: FramedConn,
    login: RelayLogin,
    relayName: string,
    keepaliveMs: number,
    sessionOptions: SessionOptions = {},
  ) {
    this.framed = framed;
    this.login = login;
    this.relayName = relayName;
    this.keepaliveMs = keepaliveMs;
    this.#sessionOptions = sessionOptions;
    this.#lastHeardAt = this.#now();
  }

  #now(): number {
    return (this.#sessionOptions.clock ?? systemClock).now();
  }

  /** When a message last arrived from the relay (session clock, ms): liveness for callers. */
  get lastHeardAt(): number {
    return this.#lastHeardAt;
  }

  /** Sends a PING (the PONG is read by whoever reads the connection). */
  ping(): Promise<void> {
    this.#nonce = (this.#nonce + 1) >>> 0;
    return this.framed.send({ kind: "ping", nonce: this.#nonce });
  }

  /** The devices the relay knows (online only unless `includeOffline`). */
  list(includeOffline = false, options: RequestOptions = {}): Promise<DirectoryEntry[]> {
    return this.#closeOnAbort(options.signal, async () => {
      await this.framed.send({ kind: "list", includeOffline });
      const entries: DirectoryEntry[] = [];
      for (let frames = 0; frames < 100_000; frames++) {
        const m = await this.#answer("listResult");
        entries.push(...m.entries);
        if (!m.more) break;
      }
      return entries;
    });
  }

  /** One device's entry, or null if it is not registered. */
  status(id: string, options: RequestOptions = {}): Promise<DirectoryEntry | null> {
    return this.#closeOnAbort(options.signal, async () => {
      await this.framed.send({ kind: "status", id });
      const m = await this.#answer("statusResult");
      return m.entry;
    });
  }

  /**
   * Asks for a session with `target`. Resolves with the session once the target
   * accepted; throws {@link PeerUnavailableError} with the relay's reason otherwise.
   */
  connect(target: string, service: string, options: RequestOptions = {}): Promise<Session> {
    return this.#closeOnAbort(options.signal, async () => {
      await this.framed.send({ kind: "connect", target, service });
      for (;;) {
        const m = await this.#next();
        // A NOTICE that crossed our CONNECT on this connection is void (docs/protocol.md 6.4).
        if (m.kind === "pong" || m.kind === "notice") continue;
        if (m.kind === "accept") return new Session(this, m.session, m.peer, this.#sessionOptions);
        if (m.kind === "reject") throw new PeerUnavailableError(m.code, m.message);
        throw new ProtocolError(`Expected ACCEPT or REJECT, got ${m.kind}`);
      }
    });
  }

  /**
   * The next message, PONGs included (an owner loop feeds them to its keep-alive). An
   * ERROR is thrown as {@link RelayError}; a close as {@link ConnectionClosedError}.
   */
  nextMessage(): Promise<Message> {
    return this.#next();
  }

  /** Waits for the next message that is not a PONG (PONGs still count in `lastHeardAt`). */
  async nextControl(): Promise<Message> {
    for (;;) {
      const m = await this.#next();
      if (m.kind !== "pong") return m;
    }
  }

  /**
   * Sends CONNECT without reading the answer: for an owner loop that reads it with
   * {@link nextMessage} and then calls {@link sessionFor} on ACCEPT.
   */
  request(target: string, service: string): Promise<void> {
    return this.framed.send({ kind: "connect", target, service });
  }

  /** The session an ACCEPT (the answer to {@link request}) starts on this connection. */
  sessionFor(accept: Extract<Message, { kind: "accept" }>): Session {
    return new Session(this, accept.session, accept.peer, this.#sessionOptions);
  }

  /** Answers a notice with ACCEPT; the connection now carries the session. */
  async accept(notice: Notice): Promise<Session> {
    await this.framed.send({ kind: "accept", session: notice.session, peer: "" });
    return new Session(this, notice.session, notice.requester, this.#sessionOptions);
  }

  /** Answers a notice with REJECT; the connection stays idle. */
  reject(notice: Notice, message: string): Promise<void> {
    return this.framed.send({
      kind: "reject",
      session: notice.session,
      code: ErrorCode.TargetRejected,
      message: truncate(message, 1024),
    });
  }

  /** Closes the connection (not a logout: the device's other connections stay). */
  close(): void {
    this.framed.close();
  }

  /** Sends LOGOUT: the relay logs the device out and closes all its connections. */
  async logout(): Promise<void> {
    await this.framed.trySend({ kind: "logout" });
    this.close();
  }

  /** Runs a request; if `signal` aborts first, closes the connection and fails it. */
  async #closeOnAbort<T>(signal: AbortSignal | undefined, request: () => Promise<T>): Promise<T> {
    if (signal === undefined) return await request();
    signal.throwIfAborted();
    const onAbort = () => this.close();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await request();
    } catch (e) {
      if (!signal.aborted) throw e;
      throw new ConnectionClosedError(`Relay did not answer in time: ${reasonText(signal)}`, {
        cause: e,
      });
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  async #next(): Promise<Message> {
    const m = await this.framed.readMessage();
    if (m === null) throw new ConnectionClosedError("Relay closed the connection");
    this.#lastHeardAt = this.#now();
    if (m.kind === "error") throw new RelayError(m.code, m.message);
    return m;
  }

  async #answer<K extends Message["kind"]>(kind: K): Promise<Extract<Message, { kind: K }>> {
    for (;;) {
      const m = await this.#next();
      if (m.kind === "pong") continue;
      if (m.kind === kind) return m as Extract<Message, { kind: K }>;
      throw new ProtocolError(`Expected ${kind}, got ${m.kind}`);
    }
  }
}

/**
 * Resolves like `promise`, or rejects with the signal's reason once it aborts; a value
 * that arrives after that is handed to `discard` (e.g. a socket to close).
 */
function untilAborted<T>(
  promise: Promise<T>,
  signal: AbortSignal,
  discard: (late: T) => void,
): Promise<T> {
  if (signal.aborted) {
    promise.then(discard, () => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.then(discard, () => {});
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Cuts `text` to at most `max` UTF-16 units (a REJECT message is a u16-length string). */
function truncate(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max - 1) + "…";
}

function reasonText(signal: AbortSignal): string {
  const reason = signal.reason;
  if (reason instanceof DOMException && reason.name === "TimeoutError") return "timed out";
  return reason instanceof Error ? reason.message : "aborted";
}
