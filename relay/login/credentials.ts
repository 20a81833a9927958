/**
 * The relay's side of a login: SCRAM-SHA-256 challenges and proof checks against the
 * stored verifiers (shared/scram.ts), fake challenges for IDs that are not registered,
 * and tickets for a logged-in device's further connections.
 *
 * Everything here is synchronous: the only awaits of a login (registry lookup, the
 * device's answer) are in relay/core/login.ts, around these calls.
 *
 * **Unknown IDs.** An unregistered ID gets a challenge like any other: a salt derived
 * from the relay's login secret (first 16 bytes of `HMAC(secret, "tsunagi-fake-salt" 0 id)`, stable across restarts and,
 * with a shared secret, across relays), the default iteration count, and a proof check
 * against a fake StoredKey that no password matches; it parses a stand-in stored verifier
 * where a registered ID parses its own. Same frames, same sizes, same work.
 *
 * **Tickets.** After a full login both sides derive a resumption key from ClientKey
 * (`resumeKey` in shared/scram.ts); the relay keeps it in memory under a random ticket
 * ID for `ticketTtlMs` and sends the ID in LOGIN_RESULT. A further connection sends the
 * ticket in LOGIN and proves the key over fresh nonces (no registry lookup, no PBKDF2 on
 * the device); an unknown or expired ticket silently gets a full challenge instead.
 * Tickets die with the relay process, so a restart costs one full login per device.
 * Each ticket remembers the stored verifier it was issued under: when the registration
 * changes (relay/login/registry_watch.ts), {@link LoginAuthority.reconcile} drops the
 * tickets of a removed device or of an old password, and keeps the rest.
 *
 * @module
 */

import type { Message } from "../../shared/protocol/messages.ts";
import {
  authMessage,
  bytesEqual,
  checkProof,
  hmac,
  resumeKey,
  resumeProof,
  resumeSignature,
  type ScramVerifier,
  serverSignature,
} from "../../shared/scram.ts";
import type { Registration } from "../registry/registry.ts";
import { DEFAULT_ITERATIONS, formatVerifier, parseVerifier } from "../registry/verifier.ts";

/** What a successful login established. */
export interface LoginGrant {
  /** Device ID. */
  id: string;
  /** Its type and attributes (from the registry, or from the ticket). */
  type: string;
  /** Attributes. */
  attributes: string[];
  /** The relay's signature for LOGIN_RESULT (the device checks it). */
  signature: Uint8Array;
  /** A ticket for further connections ("" after a ticket login). */
  ticket: string;
  /** The ticket's lifetime, ms. */
  ticketTtlMs: number;
  /**
   * The stored verifier (`Registration.passwordHash`) the login was checked against, or
   * the ticket was issued under: a change of it ends the login (relay/core/revoke.ts).
   */
  verifier: string;
}

/** Why a login's proof was refused, for the relay's log only (never for the device). */
export type LoginFailure = "unregistered" | "wrong password" | "not migrated" | "bad ticket";

/** A challenge sent, waiting for the device's proof. */
export interface PendingLogin {
  /** The LOGIN_CHALLENGE to send. */
  readonly challenge: Extract<Message, { kind: "loginChallenge" }>;
  /** Checks the proof (a few HMACs); a grant, or why not. */
  finish(proof: Uint8Array): LoginGrant | LoginFailure;
}

/** Options for {@link LoginAuthority}. */
export interface LoginAuthorityOptions {
  /** Secret the fake salts of unknown IDs derive from (32 bytes). */
  fakeKey: Uint8Array;
  /** Clock, ms (default `Date.now`). */
  now?: () => number;
  /** Ticket lifetime, ms (default 5 minutes). */
  ticketTtlMs?: number;
  /** Most tickets held; the oldest are dropped first (default 100,000). */
  maxTickets?: number;
}

interface Ticket {
  id: string;
  instance: string;
  key: Uint8Array;
  type: string;
  attributes: string[];
  expires: number;
  /** The stored verifier the full login that issued it was checked against. */
  verifier: string;
}

/**
 * Tickets kept per device ID, newest first: a device makes one per full login (its
 * agent's first connection; the pool then logs in with it), so 16 covers restarts and
 * several agents of one ID, and one account cannot fill the relay-wide cap.
 */
const MAX_TICKETS_PER_DEVICE = 16;

/** Issues challenges, checks proofs, keeps tickets. One per relay. */
export class LoginAuthority {
  readonly #fakeKey: Uint8Array;
  readonly #now: () => number;
  readonly #ticketTtlMs: number;
  readonly #maxTickets: number;
  /** A well-formed stored verifier that unknown IDs parse instead of a registration's. */
  readonly #standIn: string;
  /** Ticket ID to ticket, oldest first. */
  readonly #tickets = new Map<string, Ticket>();
  /** Device ID to its tickets' IDs, so a logout revokes them without a scan. */
  readonly #byDevice = new Map<string, Set<string>>();

  /** Creates the authority; see {@link LoginAuthorityOptions}. */
  constructor(options: LoginAuthorityOptions) {
    this.#fakeKey = options.fakeKey;
    this.#now = options.now ?? Date.now;
    this.#ticketTtlMs = options.ticketTtlMs ?? 5 * 60_000;
    this.#maxTickets = options.maxTickets ?? 100_000;
    const h = hmac(this.#fakeKey, "tsunagi-stand-in-verifier");
    this.#standIn = formatVerifier({
      salt: h.subarray(0, 16),
      iterations: DEFAULT_ITERATIONS,
      storedKey: h,
      serverKey: h,
    });
  }

  /** Tickets currently held. */
  get tickets(): number {
    return this.#tickets.size;
  }

  /**
   * A full SCRAM challenge for `id`. `reg` undefined (not registered) or holding no
   * usable verifier gets a fake one, indistinguishable on the wire.
   */
  challenge(
    id: string,
    clientNonce: string,
    instance: string,
    reg: Registration | undefined,
  ): PendingLogin {
    // An unknown ID parses a stand-in and derives a fake verifier, a registered one
    // parses its own and derives the fake one too: both paths do the same work.
    const stored = parseVerifier(reg === undefined ? this.#standIn : reg.passwordHash);
    const parsed = reg === undefined ? null : stored;
    const failure: LoginFailure = reg === undefined ? "unregistered" : "not migrated";
    const fake = this.#fakeVerifier(id);
    const v: ScramVerifier = parsed?.verifier ?? fake;
    const prehash = parsed?.prehash ?? "";
    const nonce = clientNonce + serverNonce();
    const auth = authMessage({ id, clientNonce, nonce, salt: v.salt, iterations: v.iterations });
    return {
      challenge: { kind: "loginChallenge", nonce, salt: v.salt, iterations: v.iterations, prehash },
      finish: (proof) => {
        const key = checkProof(v, auth, proof);
        if (parsed === null || reg === undefined) return failure;
        if (key === null) return "wrong password";
        const ticket = this.#issue(id, instance, reg, resumeKey(key, auth));
        return {
          id,
          type: reg.type,
          attributes: reg.attributes,
          signature: serverSignature(v.serverKey, auth),
          ticket,
          ticketTtlMs: this.#ticketTtlMs,
          verifier: reg.passwordHash,
        };
      },
    };
  }

  /**
   * A ticket challenge, or null when `ticket` is not a live ticket of `id` and
   * `instance` (the caller then sends a full challenge).
   */
  resume(id: string, clientNonce: string, instance: string, ticket: string): PendingLogin | null {
    if (ticket === "") return null;
    this.#expire();
    const t = this.#tickets.get(ticket);
    if (t === undefined || t.id !== id || t.instance !== instance) return null;
    const nonce = clientNonce + serverNonce();
    const salt = new Uint8Array(0);
    const auth = authMessage({ id, clientNonce, nonce, salt, iterations: 0 });
    return {
      challenge: { kind: "loginChallenge", nonce, salt, iterations: 0, prehash: "" },
      finish: (proof) => {
        // Revoked (logout) or expired while the device answered: refused too.
        if (this.#tickets.get(ticket) !== t || t.expires <= this.#now()) return "bad ticket";
        if (!bytesEqual(proof, resumeProof(t.key, auth))) return "bad ticket";
        return {
          id,
          type: t.type,
          attributes: t.attributes,
          signature: resumeSignature(t.key, auth),
          ticket: "",
          ticketTtlMs: 0,
          verifier: t.verifier,
        };
      },
    };
  }

  /** Forgets every ticket of `id` (logout). */
  revoke(id: string): void {
    for (const key of this.#byDevice.get(id) ?? []) this.#tickets.delete(key);
    this.#byDevice.delete(id);
  }

  /** IDs of the devices holding tickets (some maybe expired, not yet purged). */
  holders(): IterableIterator<string> {
    return this.#byDevice.keys();
  }

  /**
   * Brings the tickets of `id` in line with its current registration: forgets those
   * issued under another verifier (all of them when `reg` is undefined: removed), and
   * gives the others its type and attributes. Returns how many were forgotten.
   */
  reconcile(id: string, reg: Registration | undefined): number {
    let revoked = 0;
    for (const key of [...this.#byDevice.get(id) ?? []]) {
      const t = this.#tickets.get(key)!;
      if (reg === undefined || t.verifier !== reg.passwordHash) {
        this.#forget(key);
        revoked++;
      } else {
        t.type = reg.type;
        t.attributes = [...reg.attributes];
      }
    }
    return revoked;
  }

  #forget(key: string): void {
    const t = this.#tickets.get(key);
    if (t === undefined) return;
    this.#tickets.delete(key);
    const keys = this.#byDevice.get(t.id);
    keys?.delete(key);
    if (keys?.size === 0) this.#byDevice.delete(t.id);
  }

  #issue(id: string, instance: string, reg: Registration, key: Uint8Array): string {
    this.#expire();
    const ticket = crypto.getRandomValues(new Uint8Array(24)).toBase64();
    this.#tickets.set(ticket, {
      id,
      instance,
      key,
      type: reg.type,
      attributes: [...reg.attributes],
      expires: this.#now() + this.#ticketTtlMs,
      verifier: reg.passwordHash,
    });
    let keys = this.#byDevice.get(id);
    if (keys === undefined) this.#byDevice.set(id, keys = new Set());
    keys.add(ticket);
    // One device cannot push every other device's tickets out: it keeps its newest few.
    if (keys.size > MAX_TICKETS_PER_DEVICE) this.#forget(keys.values().next().value!);
    while (this.#tickets.size > this.#maxTickets) this.#forget(this.#tickets.keys().next().value!);
    return ticket;
  }

  #expire() {
    const now = this.#now();
    for (const [key, t] of this.#tickets) {
      if (t.expires > now) break;
      this.#forget(key);
    }
  }

  #fakeVerifier(id: string): ScramVerifier {
    const h = hmac(this.#fakeKey, `tsunagi-fake-salt\0${id}`);
    // No password's StoredKey matches a SHA-256 nobody knows the preimage of.
    return { salt: h.subarray(0, 16), iterations: DEFAULT_ITERATIONS, storedKey: h, serverKey: h };
  }
}

/** The relay's half of the nonce: 18 random bytes, base64. */
function serverNonce(): string {
  return crypto.getRandomValues(new Uint8Array(18)).toBase64();
}
