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

import { parseHostPort } from "../../shared/address.ts";
import { DeviceState } from "../../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../../shared/protocol/messages.ts";
import {
  type Registration,
  validateAttribute,
  validateDeviceId,
  validateDeviceType,
  validateRegistration,
} from "../registry/registry.ts";
import { isScryptHash, parseVerifier } from "../registry/verifier.ts";

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
/** Most neighbours a relay record may list, attributes or session peers an entry may list. */
const MAX_LIST = 1024;
/** Longest stored password verifier accepted from a peer (a v2 verifier is ~200 chars). */
const MAX_HASH_CHARS = 512;
/**
 * Largest registration Lamport counter and login claim accepted (2^40: a million edits or
 * logins of one ID a second for 35 years). Each new edit or login takes the highest seen
 * + 1, so one notice carrying 2^53 - 1 would otherwise leave that ID's next counter past
 * the safe integers, and every later edit of it refused mesh-wide.
 */
export const MAX_COUNTER = 2 ** 40;
const DEVICE_STATES: readonly number[] = Object.values(DeviceState);

function isVersion(v: unknown): v is Version {
  return Array.isArray(v) && v.length === 2 && v.every((x) => Number.isSafeInteger(x) && x >= 0);
}

function isName(s: unknown): s is string {
  return typeof s === "string" && s.length > 0 && s.length <= MAX_NAME;
}

function isCount(x: unknown): x is number {
  return Number.isSafeInteger(x) && (x as number) >= 0;
}

function isCounter(x: unknown): x is number {
  return isCount(x) && x <= MAX_COUNTER;
}

function isList(x: unknown): x is unknown[] {
  return Array.isArray(x) && x.length <= MAX_LIST;
}

/** Why a relay's advertised `HOST:PORT` is unusable, or null. */
function addressError(address: unknown): string | null {
  if (typeof address !== "string" || address.length > 300) return "bad address";
  try {
    parseHostPort(address);
    return null;
  } catch {
    return "bad address";
  }
}

/** Why a dev notice's entry is not one its origin may publish, or null. */
function entryError(entry: Record<string, unknown>, origin: string): string | null {
  const idError = validateDeviceId(entry.id as string);
  if (idError) return idError;
  if (typeof entry.type !== "string" || validateDeviceType(entry.type)) return "bad type";
  if (!isList(entry.attributes)) return "bad attributes";
  for (const a of entry.attributes) {
    if (typeof a !== "string" || validateAttribute(a)) return "bad attribute";
  }
  if (!DEVICE_STATES.includes(entry.state as number)) return "bad state";
  // A relay speaks only for devices on itself: online means online at the origin.
  if (
    entry.state === DeviceState.Online
      ? entry.relay !== origin
      : entry.relay !== "" && entry.relay !== origin
  ) {
    return "relay is not the origin";
  }
  if (!isCount(entry.idle) || !isCount(entry.sessions)) return "bad idle or sessions count";
  if (!isList(entry.peers) || !entry.peers.every((p) => validateDeviceId(p as string) === null)) {
    return "bad peers";
  }
  if (!isCount(entry.lastUpdate)) return "bad lastUpdate";
  return null;
}

/** Why a registration from a peer is not acceptable, or null. */
function registrationError(reg: unknown): string | null {
  if (typeof reg !== "object" || reg === null || Array.isArray(reg)) return "not an object";
  const r = reg as Registration;
  const error = validateRegistration(r);
  if (error) return error;
  if (!isList(r.attributes)) return `${r.id}: bad attributes`;
  const hash = r.passwordHash;
  if (hash.length > MAX_HASH_CHARS) return `${r.id}: password verifier too long`;
  // A v2 SCRAM verifier, or a v1 scrypt hash (`scrypt$N$r$p$salt$hash`) not migrated yet.
  if (parseVerifier(hash) === null && !(isScryptHash(hash) && hash.split("$").length === 6)) {
    return `${r.id}: password verifier malformed`;
  }
  return null;
}

/** Why `n` (parsed JSON from a peer) is not a valid notice, or null when it is. */
export function noticeError(n: unknown): string | null {
  if (typeof n !== "object" || n === null || Array.isArray(n)) return "not an object";
  const o = n as Record<string, unknown>;
  switch (o.t) {
    case "relay":
      if (!isName(o.origin) || !isVersion(o.v)) return "relay: bad origin or version";
      if (addressError(o.address) !== null || !isList(o.neighbors)) {
        return "relay: bad address or neighbours";
      }
      if (!o.neighbors.every(isName)) return "relay: bad neighbour name";
      if (!isCount(o.wall)) return "relay: bad wall clock";
      return null;
    case "dev": {
      if (!isName(o.origin) || !isVersion(o.v)) return "dev: bad origin or version";
      const entry = o.entry as Record<string, unknown> | undefined;
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
        return "dev: no entry";
      }
      entry.services ??= []; // written before protocol 3
      if (!Array.isArray(entry.services) || !entry.services.every((s) => typeof s === "string")) {
        return "dev: bad services";
      }
      const error = entryError(entry, o.origin);
      if (error) return `dev: ${error}`;
      if (o.claim !== undefined && !isCounter(o.claim)) return "dev: bad claim";
      if (
        o.inst !== undefined && !(typeof o.inst === "string" && /^[0-9a-f]{1,64}$/.test(o.inst))
      ) {
        return "dev: bad instance hash";
      }
      return null;
    }
    case "reg": {
      const idError = validateDeviceId(o.id as string);
      if (idError) return `reg: ${idError}`;
      if (!isCounter(o.lamport)) return "reg: bad lamport";
      if (!isName(o.origin)) return "reg: bad origin";
      if (o.reg === null) return null;
      const regError = registrationError(o.reg);
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
