/**
 * Update notices: the types, their keys and version tags, and the check every notice
 * from a peer passes before it is applied. Pure: no I/O.
 *
 * An UPDATE body is one notice (a flood), a JSON array of notices (a flood batch), or
 * `{"catchUp":[...]}` (notices streamed by a catch-up, logged in summary). Each element
 * is checked on its own: an invalid one is refused alone, the others still apply.
 *
 * @module
 */

import type { DirectoryEntry } from "../../shared/protocol/messages.ts";
import { type Registration, validateDeviceId, validateRegistration } from "../registry/registry.ts";

/** `[epoch, seq]` of an origin relay. */
export type Version = [number, number];

/** Compares two versions: negative, zero or positive. */
export function compareVersion(a: Version, b: Version): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1];
}

/** A relay's own record: where it listens and who its neighbours are. */
export interface RelayNotice {
  t: "relay";
  origin: string;
  v: Version;
  address: string;
  neighbors: string[];
  /** Origin's wall clock at the change (information only). */
  wall: number;
}

/** A device's presence on its relay (state offline = logged out there). */
export interface DeviceNotice {
  t: "dev";
  origin: string;
  v: Version;
  entry: DirectoryEntry;
  /**
   * Login claim: a Lamport counter over all logins of this device ID, mesh-wide
   * (`max seen + 1` at each new login). Decides which relay holds a device online on two.
   */
  claim?: number;
  /** Hash of the agent instance token, so an agent moving between relays is not told "replaced". */
  inst?: string;
}

/** A registration, or its explicit removal (`reg: null`, a tombstone with its own version). */
export interface RegNotice {
  t: "reg";
  id: string;
  /** Lamport counter. */
  lamport: number;
  /** Relay where the change was made (tie-break). */
  origin: string;
  reg: Registration | null;
}

/** Any update notice. */
export type Notice = RelayNotice | DeviceNotice | RegNotice;

/** The key a notice replaces the holder of: one per relay record, device presence, registration. */
export function keyOf(n: Notice): string {
  switch (n.t) {
    case "relay":
      return `r|${n.origin}`;
    case "dev":
      return `d|${n.origin}|${n.entry.id}`;
    case "reg":
      return `g|${n.id}`;
    default: {
      const never: never = n;
      throw new TypeError(`unknown notice ${JSON.stringify(never)}`);
    }
  }
}

/** The version part of a notice, as text (for digests and logs). */
export function versionTag(n: Notice): string {
  return n.t === "reg" ? `${n.lamport}@${n.origin}` : `${n.v[0]}.${n.v[1]}`;
}

/** True when registration notice `a` is newer than `b` (Lamport, then origin name). */
export function regNewer(a: RegNotice, b: RegNotice): boolean {
  return a.lamport !== b.lamport ? a.lamport > b.lamport : a.origin > b.origin;
}

const MAX_NAME = 128;

function isVersion(v: unknown): v is Version {
  return Array.isArray(v) && v.length === 2 && v.every((x) => Number.isSafeInteger(x) && x >= 0);
}

function isName(s: unknown): s is string {
  return typeof s === "string" && s.length > 0 && s.length <= MAX_NAME;
}

/** Why `n` (parsed JSON from a peer) is not a valid notice, or null when it is. */
export function noticeError(n: unknown): string | null {
  if (typeof n !== "object" || n === null || Array.isArray(n)) return "not an object";
  const o = n as Record<string, unknown>;
  switch (o.t) {
    case "relay":
      if (!isName(o.origin) || !isVersion(o.v)) return "relay: bad origin or version";
      if (typeof o.address !== "string" || !Array.isArray(o.neighbors)) {
        return "relay: bad address or neighbours";
      }
      if (!o.neighbors.every(isName)) return "relay: bad neighbour name";
      return null;
    case "dev": {
      if (!isName(o.origin) || !isVersion(o.v)) return "dev: bad origin or version";
      const entry = o.entry as Record<string, unknown> | undefined;
      if (typeof entry !== "object" || entry === null) return "dev: no entry";
      const idError = validateDeviceId(entry.id as string);
      if (idError) return `dev: ${idError}`;
      if (typeof entry.state !== "number" || typeof entry.relay !== "string") {
        return "dev: bad state or relay";
      }
      entry.services ??= []; // written before protocol 3
      if (!Array.isArray(entry.services) || !entry.services.every((s) => typeof s === "string")) {
        return "dev: bad services";
      }
      if (o.claim !== undefined && !(Number.isSafeInteger(o.claim) && (o.claim as number) >= 0)) {
        return "dev: bad claim";
      }
      return null;
    }
    case "reg": {
      const idError = validateDeviceId(o.id as string);
      if (idError) return `reg: ${idError}`;
      if (!Number.isSafeInteger(o.lamport) || (o.lamport as number) < 0) return "reg: bad lamport";
      if (!isName(o.origin)) return "reg: bad origin";
      if (o.reg === null) return null;
      const regError = validateRegistration(o.reg as Registration);
      if (regError) return `reg: ${regError}`;
      if ((o.reg as Registration).id !== o.id) return "reg: id does not match its registration";
      return null;
    }
    default:
      return "unknown type";
  }
}

/** Parses and validates one notice's JSON body; throws SyntaxError on a bad one. */
export function parseNotice(body: string): Notice {
  const n = JSON.parse(body);
  const error = noticeError(n);
  if (error !== null) throw new SyntaxError(`malformed notice (${error}): ${body.slice(0, 100)}`);
  return n as Notice;
}

/** What an UPDATE body held: the valid notices, and why each invalid one was refused. */
export interface ParsedUpdate {
  /** Valid notices, in order. */
  notices: Notice[];
  /** One reason per refused element. */
  refused: string[];
  /** True for a catch-up stream (logged in summary, not per notice). */
  catchUp: boolean;
}

/** Splits an UPDATE body into notices, checking each on its own. Throws SyntaxError on bad JSON. */
export function parseUpdate(body: string): ParsedUpdate {
  const raw = JSON.parse(body);
  let items: unknown[];
  let catchUp = false;
  if (Array.isArray(raw)) items = raw;
  else if (typeof raw === "object" && raw !== null && Array.isArray(raw.catchUp)) {
    items = raw.catchUp;
    catchUp = true;
  } else items = [raw];
  const notices: Notice[] = [];
  const refused: string[] = [];
  for (const item of items) {
    const error = noticeError(item);
    if (error === null) notices.push(item as Notice);
    else refused.push(error);
  }
  return { notices, refused, catchUp };
}
