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
 *   changed) with the origin relay's name as tie-break; a removal is a tombstone with
 *   its own counter, kept so that an older copy can never bring the device back.
 * A notice is applied only if it is strictly newer than what is held for its key;
 * otherwise it is dropped (and not forwarded): that is what ends a flood.
 *
 * Liveness is per link, not per heartbeat: a relay is alive when a path of live links
 * leads to it from this relay. This relay's own live links are set by the link owner
 * ({@link MeshState.setDirect}); farther links come from the relays' records, whose
 * neighbour lists are flooded only when they change (and refreshed rarely). A link
 * counts only when both ends list each other, and a record not refreshed within the
 * record TTL no longer counts at all.
 *
 * For catch-up every entry also sits in one of {@link BUCKETS} buckets (by a hash of its
 * key), each with an XOR of its entries' `key#version` hashes, updated on every change:
 * a digest is the bucket hashes (no scan), and two relays exchange only the buckets
 * whose hashes differ.
 *
 * @module
 */

import { DeviceState } from "../../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../../shared/protocol/messages.ts";
import {
  compareVersion,
  type DeviceNotice,
  keyOf,
  type Notice,
  regNewer,
  type RegNotice,
  type RelayNotice,
  versionTag,
} from "./notices.ts";

export {
  compareVersion,
  type DeviceNotice,
  type Notice,
  parseNotice,
  type RegNotice,
  type RelayNotice,
  type Version,
} from "./notices.ts";

/** Number of digest buckets: a catch-up resends at most one bucket's worth per bucket cut short. */
export const BUCKETS = 1024;

/** One origin relay's table. */
interface OriginTable {
  relay: RelayNotice | null;
  /** Highest version seen from this origin (relay record or device). */
  top: [number, number];
  devices: Map<string, DeviceNotice>;
  /** Local clock when a newer notice from this origin was last applied. */
  heardAt: number;
}

/** FNV-1a, 32 bits. */
export function hashString(s: string, h = 0x811c9dc5): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** The bucket a key sits in. */
export function bucketOf(key: string): number {
  return hashString(key) % BUCKETS;
}

function entryHash(key: string, n: Notice): number {
  return hashString(`${key}#${versionTag(n)}`);
}

/** Claim order of two online entries for one device: higher claim, then greater origin. */
function claimBeats(a: DeviceNotice, b: DeviceNotice): boolean {
  const ca = a.claim ?? 0, cb = b.claim ?? 0;
  return ca !== cb ? ca > cb : a.origin > b.origin;
}

/** Options for {@link MeshState}. */
export interface MeshStateOptions {
  /**
   * A relay whose record (or any newer notice of its own) has not arrived for this long
   * does not count as alive even when a path leads to it, ms (default: no limit). A
   * safety net behind link-state flooding: set it to a few record refreshes.
   */
  recordTtlMs?: number;
}

/** How long a computed reachability set is reused, ms, when nothing changed. */
const REACH_REUSE_MS = 250;

/** The mesh tables of one relay. */
export class MeshState {
  /** This relay's name. */
  readonly self: string;
  readonly #now: () => number;
  readonly #origins = new Map<string, OriginTable>();
  readonly #regs = new Map<string, RegNotice>();
  readonly #buckets: Map<string, Notice>[] = Array.from({ length: BUCKETS }, () => new Map());
  readonly #bucketHash = new Uint32Array(BUCKETS);
  readonly #recordTtlMs: number;
  /** Relays this one has a live control link with (set by the link owner). */
  #direct: ReadonlySet<string> = new Set();
  /** Relays reachable over live links, cached; null when a record or link changed. */
  #reach: Map<string, string> | null = null;
  #reachAt = 0;
  /** Counters for logs and benchmarks. */
  readonly stats = { applied: 0, dropped: 0, refused: 0 };

  /** Creates empty tables for relay `self`. */
  constructor(self: string, now: () => number, options: MeshStateOptions = {}) {
    this.self = self;
    this.#now = now;
    this.#recordTtlMs = options.recordTtlMs ?? Infinity;
  }

  /** Sets the relays this one has a live control link with. */
  setDirect(names: Iterable<string>): void {
    this.#direct = new Set(names);
    this.#reach = null;
  }

  #table(origin: string): OriginTable {
    let t = this.#origins.get(origin);
    if (t === undefined) {
      t = { relay: null, top: [0, 0], devices: new Map(), heardAt: this.#now() };
      this.#origins.set(origin, t);
    }
    return t;
  }

  #index(n: Notice): void {
    const key = keyOf(n);
    const b = bucketOf(key);
    const old = this.#buckets[b].get(key);
    if (old !== undefined) this.#bucketHash[b] ^= entryHash(key, old);
    this.#buckets[b].set(key, n);
    this.#bucketHash[b] ^= entryHash(key, n);
  }

  #unindex(n: Notice): void {
    const key = keyOf(n);
    const b = bucketOf(key);
    if (this.#buckets[b].get(key) !== n) return;
    this.#buckets[b].delete(key);
    this.#bucketHash[b] ^= entryHash(key, n);
  }

  /** Applies a notice if it is newer than what is held; true when applied. */
  apply(n: Notice): boolean {
    const applied = this.#apply(n);
    if (applied) {
      this.stats.applied++;
      this.#index(n);
    } else this.stats.dropped++;
    return applied;
  }

  #apply(n: Notice): boolean {
    switch (n.t) {
      case "relay": {
        const t = this.#table(n.origin);
        if (t.relay !== null && compareVersion(n.v, t.relay.v) <= 0) return false;
        if (n.v[0] > t.top[0]) {
          // A new incarnation: presence from the previous one is void.
          for (const [id, d] of t.devices) {
            if (d.v[0] < n.v[0]) {
              t.devices.delete(id);
              this.#unindex(d);
            }
          }
        }
        t.relay = n;
        this.#bump(t, n.v);
        this.#reach = null;
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

  #bump(t: OriginTable, v: [number, number]) {
    if (compareVersion(v, t.top) > 0) t.top = v;
    t.heardAt = this.#now();
  }

  /** The registration notice held for `id` (present or tombstone). */
  registration(id: string): RegNotice | undefined {
    return this.#regs.get(id);
  }

  /** Number of registration notices held (tombstones included). */
  get registrationCount(): number {
    return this.#regs.size;
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

  /**
   * True when a path of live links leads from this relay to `relay` (always true for
   * self and for relays with a live control link here).
   */
  isAlive(relay: string): boolean {
    return relay === this.self || this.#reachable().has(relay);
  }

  /**
   * Breadth-first search from this relay's live links over the neighbour lists of fresh
   * records, counting a link only when both ends list each other: name -> first hop.
   */
  #reachable(): Map<string, string> {
    const now = this.#now();
    if (this.#reach !== null && now - this.#reachAt < REACH_REUSE_MS) return this.#reach;
    const first = new Map<string, string>();
    const queue: string[] = [];
    for (const n of [...this.#direct].sort()) {
      if (n === this.self) continue;
      first.set(n, n);
      queue.push(n);
    }
    const fresh = (t: OriginTable | undefined) =>
      t !== undefined && t.relay !== null && now - t.heardAt <= this.#recordTtlMs;
    for (let i = 0; i < queue.length; i++) {
      const at = queue[i];
      const atTable = this.#origins.get(at);
      if (!fresh(atTable)) continue;
      for (const next of atTable!.relay!.neighbors) {
        if (next === this.self || first.has(next)) continue;
        const nextTable = this.#origins.get(next);
        if (!fresh(nextTable) || !nextTable!.relay!.neighbors.includes(at)) continue;
        first.set(next, first.get(at)!);
        queue.push(next);
      }
    }
    this.#reach = first;
    this.#reachAt = now;
    return first;
  }

  /** Highest login claim held for device `id` on any relay (0 if none). */
  claimOf(id: string): number {
    let max = 0;
    for (const t of this.#origins.values()) max = Math.max(max, t.devices.get(id)?.claim ?? 0);
    return max;
  }

  /** The presence notice relay `origin` holds for `id`, if any. */
  deviceAt(origin: string, id: string): DeviceNotice | undefined {
    return this.#origins.get(origin)?.devices.get(id);
  }

  /**
   * The one place device `id` is online, by the mesh-wide rule: among online entries on
   * live relays, the highest login claim, ties to the greater relay name. Every relay
   * holding the same tables picks the same one.
   */
  winner(id: string): DeviceNotice | null {
    let best: DeviceNotice | null = null;
    for (const [origin, t] of this.#origins) {
      const d = t.devices.get(id);
      if (d === undefined || d.entry.state !== DeviceState.Online) continue;
      if (!this.isAlive(origin)) continue;
      if (best === null || claimBeats(d, best)) best = d;
    }
    return best;
  }

  /**
   * Where `id` is: the {@link winner}'s entry, else an online entry on a dead relay shown
   * as unreachable, else null.
   */
  presence(id: string): DirectoryEntry | null {
    const best = this.winner(id);
    if (best !== null) return best.entry;
    for (const t of this.#origins.values()) {
      const d = t.devices.get(id);
      if (d !== undefined && d.entry.state === DeviceState.Online) {
        return { ...d.entry, state: DeviceState.Unreachable };
      }
    }
    return null;
  }

  /** First relay on a shortest path of live links from this relay to `target`. */
  nextHop(target: string): string | null {
    return this.#reachable().get(target) ?? null;
  }

  /** Bucket hashes `[from, from + count)`: one chunk of this relay's digest. */
  digestChunk(from: number, count: number): number[] {
    return [...this.#bucketHash.subarray(from, from + count)];
  }

  /** The whole digest (every bucket hash). */
  digest(): number[] {
    return this.digestChunk(0, BUCKETS);
  }

  /** Buckets among `[from, from + theirs.length)` whose hash differs from the peer's. */
  differingBuckets(from: number, theirs: readonly number[]): number[] {
    const out: number[] = [];
    for (let i = 0; i < theirs.length; i++) {
      if (this.#bucketHash[from + i] !== theirs[i]) out.push(from + i);
    }
    return out;
  }

  /** The notices held in bucket `b` (a snapshot). */
  bucketNotices(b: number): Notice[] {
    return [...this.#buckets[b].values()];
  }

  /** The notices a peer with digest `theirs` may be missing (the buckets that differ). */
  missingFor(theirs: readonly number[]): Notice[] {
    return this.differingBuckets(0, theirs).flatMap((b) => this.bucketNotices(b));
  }

  /** Every device notice held, for listing. */
  *deviceNotices(): IterableIterator<DeviceNotice> {
    for (const t of this.#origins.values()) yield* t.devices.values();
  }
}
