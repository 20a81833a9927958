/**
 * The mesh's shared knowledge, as pure data: one table per relay (patent Fig. 2B), the
 * registrations, and the rules for applying update notices. No I/O, no timers: the
 * clock is injected, so tests drive it.
 *
 * Ordering never compares wall clocks of different machines:
 * - a relay's own entries (its relay record and its devices' presence) carry
 *   `[epoch, seq]` from that relay: epoch grows at every start (persisted), seq at every
 *   change; only the origin relay writes them, so they are totally ordered;
 * - a registration carries a Lamport counter (`max seen + 1` at the relay where it was
 *   changed) with the origin relay's name as tie-break.
 * A notice is applied only if it is strictly newer than what is held for its key;
 * otherwise it is dropped (and not forwarded): that is what ends a flood.
 *
 * @module
 */

import { DeviceState } from "../../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../../shared/protocol/messages.ts";
import type { Registration } from "../registry/registry.ts";

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
}

/** A registration or its removal (`reg: null`). */
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

/** Per-origin summary exchanged when a link comes up. */
export interface Digest {
  origins: Record<string, { v: Version; hash: number }>;
  regs: number;
}

/** One origin relay's table. */
interface OriginTable {
  relay: RelayNotice | null;
  /** Highest version seen from this origin (relay record or device). */
  top: Version;
  devices: Map<string, DeviceNotice>;
  /** Local clock when a newer notice from this origin was last applied. */
  heardAt: number;
}

function hashString(s: string, h = 0x811c9dc5): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Parses and validates a notice's JSON body; throws SyntaxError on a bad one. */
export function parseNotice(body: string): Notice {
  const n = JSON.parse(body);
  const isVersion = (v: unknown) =>
    Array.isArray(v) && v.length === 2 && v.every((x) => Number.isSafeInteger(x) && x >= 0);
  if (typeof n !== "object" || n === null) throw new SyntaxError("notice is not an object");
  if (
    n.t === "relay" && typeof n.origin === "string" && isVersion(n.v) &&
    typeof n.address === "string" && Array.isArray(n.neighbors)
  ) return n;
  if (
    n.t === "dev" && typeof n.origin === "string" && isVersion(n.v) &&
    typeof n.entry?.id === "string"
  ) return n;
  if (
    n.t === "reg" && typeof n.id === "string" && Number.isSafeInteger(n.lamport) &&
    typeof n.origin === "string"
  ) return n;
  throw new SyntaxError(`malformed notice: ${body.slice(0, 100)}`);
}

/** The mesh tables of one relay. */
export class MeshState {
  /** This relay's name. */
  readonly self: string;
  readonly #now: () => number;
  readonly #origins = new Map<string, OriginTable>();
  readonly #regs = new Map<string, RegNotice>();
  /** Counters for logs and benchmarks. */
  readonly stats = { applied: 0, dropped: 0 };

  /** Creates empty tables for relay `self`. */
  constructor(self: string, now: () => number) {
    this.self = self;
    this.#now = now;
  }

  #table(origin: string): OriginTable {
    let t = this.#origins.get(origin);
    if (t === undefined) {
      t = { relay: null, top: [0, 0], devices: new Map(), heardAt: this.#now() };
      this.#origins.set(origin, t);
    }
    return t;
  }

  /** Applies a notice if it is newer than what is held; true when applied. */
  apply(n: Notice): boolean {
    const applied = this.#apply(n);
    if (applied) this.stats.applied++;
    else this.stats.dropped++;
    return applied;
  }

  #apply(n: Notice): boolean {
    switch (n.t) {
      case "relay": {
        const t = this.#table(n.origin);
        if (t.relay !== null && compareVersion(n.v, t.relay.v) <= 0) return false;
        if (n.v[0] > t.top[0]) {
          // A new incarnation: presence from the previous one is void.
          for (const [id, d] of t.devices) if (d.v[0] < n.v[0]) t.devices.delete(id);
        }
        t.relay = n;
        this.#bump(t, n.v);
        return true;
      }
      case "dev": {
        const t = this.#table(n.origin);
        if (t.relay !== null && n.v[0] < t.relay.v[0]) return false; // older incarnation
        const held = t.devices.get(n.entry.id);
        if (held !== undefined && compareVersion(n.v, held.v) <= 0) return false;
        t.devices.set(n.entry.id, n);
        this.#bump(t, n.v);
        return true;
      }
      case "reg": {
        const held = this.#regs.get(n.id);
        if (held !== undefined && !regNewer(n, held)) return false;
        this.#regs.set(n.id, n);
        return true;
      }
      default: {
        const never: never = n;
        throw new TypeError(`unknown notice ${JSON.stringify(never)}`);
      }
    }
  }

  #bump(t: OriginTable, v: Version) {
    if (compareVersion(v, t.top) > 0) t.top = v;
    t.heardAt = this.#now();
  }

  /** The registration notice held for `id` (present or tombstone). */
  registration(id: string): RegNotice | undefined {
    return this.#regs.get(id);
  }

  /** IDs of the registrations held that are present (not removed). */
  registeredIds(): string[] {
    return [...this.#regs.values()].filter((n) => n.reg !== null).map((n) => n.id);
  }

  /** Highest Lamport counter held for `id` (0 if none). */
  lamportOf(id: string): number {
    return this.#regs.get(id)?.lamport ?? 0;
  }

  /** The relay record of `name`, if known. */
  relay(name: string): RelayNotice | undefined {
    return this.#origins.get(name)?.relay ?? undefined;
  }

  /** Names of all relays with a record. */
  relayNames(): string[] {
    return [...this.#origins.entries()].filter(([, t]) => t.relay !== null).map(([n]) => n);
  }

  /** True when `relay` was heard from within `timeoutMs` (always true for self). */
  isAlive(relay: string, timeoutMs: number): boolean {
    if (relay === this.self) return true;
    const t = this.#origins.get(relay);
    return t !== undefined && this.#now() - t.heardAt <= timeoutMs;
  }

  /**
   * Where `id` is: an online entry on a live relay (local first, then the most recently
   * updated), else an online entry on a dead relay shown as unreachable, else null.
   */
  presence(id: string, timeoutMs: number): DirectoryEntry | null {
    let best: DirectoryEntry | null = null;
    let dead: DirectoryEntry | null = null;
    for (const [origin, t] of this.#origins) {
      const d = t.devices.get(id);
      if (d === undefined || d.entry.state !== DeviceState.Online) continue;
      if (!this.isAlive(origin, timeoutMs)) {
        dead ??= { ...d.entry, state: DeviceState.Unreachable };
        continue;
      }
      if (origin === this.self) return d.entry;
      if (best === null || d.entry.lastUpdate > best.lastUpdate) best = d.entry;
    }
    return best ?? dead;
  }

  /**
   * First relay on a shortest path from this relay to `target`, walking the neighbour
   * lists of live relays' records; `direct` are this relay's live neighbours.
   */
  nextHop(target: string, direct: ReadonlySet<string>, timeoutMs: number): string | null {
    if (direct.has(target)) return target;
    const first = new Map<string, string>();
    const queue: string[] = [];
    for (const n of direct) {
      first.set(n, n);
      queue.push(n);
    }
    while (queue.length > 0) {
      const at = queue.shift()!;
      const record = this.relay(at);
      if (record === undefined || !this.isAlive(at, timeoutMs)) continue;
      for (const next of record.neighbors) {
        if (next === this.self || first.has(next)) continue;
        first.set(next, first.get(at)!);
        if (next === target) return first.get(next)!;
        queue.push(next);
      }
    }
    return null;
  }

  /** Summary of what this relay holds. */
  digest(): Digest {
    const origins: Digest["origins"] = {};
    for (const [origin, t] of this.#origins) {
      let hash = 0;
      if (t.relay) hash ^= hashString(`r@${t.relay.v}`);
      for (const [id, d] of t.devices) hash ^= hashString(`${id}@${d.v}`);
      origins[origin] = { v: t.top, hash };
    }
    let regs = 0;
    for (const [id, r] of this.#regs) regs ^= hashString(`${id}@${r.lamport}@${r.origin}`);
    return { origins, regs };
  }

  /** The notices a peer with digest `theirs` may be missing (whole tables that differ). */
  missingFor(theirs: Digest): Notice[] {
    const out: Notice[] = [];
    const mine = this.digest();
    for (const [origin, t] of this.#origins) {
      const other = theirs.origins[origin];
      if (other !== undefined) {
        if (compareVersion(t.top, other.v) < 0) continue; // theirs is newer
        if (
          compareVersion(t.top, other.v) === 0 && other.hash === this.digest().origins[origin].hash
        ) {
          continue;
        }
      }
      if (t.relay) out.push(t.relay);
      out.push(...t.devices.values());
    }
    if (theirs.regs !== mine.regs) out.push(...this.#regs.values());
    return out;
  }

  /** Every device notice held, for listing. */
  *deviceNotices(): IterableIterator<DeviceNotice> {
    for (const t of this.#origins.values()) yield* t.devices.values();
  }
}

function regNewer(a: RegNotice, b: RegNotice): boolean {
  return a.lamport !== b.lamport ? a.lamport > b.lamport : a.origin > b.origin;
}
