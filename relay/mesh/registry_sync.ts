/**
 * Keeps this relay's registry in step with the mesh, in both directions, without ever
 * mistaking a failure for an administrator's deletion.
 *
 * - Mesh → registry: registrations learnt from peers wait in `#pending` (latest per ID)
 *   and are written in batches. A failed write keeps them pending; they are retried on
 *   the next poll and every failure is reported, with the count, until one succeeds.
 * - Registry → mesh: an administrator edits the registry (`deno task registry ...`) while
 *   the relay runs. Each poll compares the registry with `#known`, what it held after our
 *   last successful read or write. Only a difference from `#known` is an admin change:
 *   an ID that was there and is gone is an explicit removal (a tombstone is flooded); an
 *   ID that never reached the registry (its write failed) is not a removal, and a
 *   registration whose newer version failed to be written is not an edit to undo.
 * - Restarts: with {@link RegVersions}, what the mesh knew of each ID when it last matched
 *   the file (version and content digest, or a tombstone) is kept in the data folder. The
 *   first poll (at start, before links come up) loads the entries that still match with
 *   their old version, and originates the ones that differ (edited, added or removed
 *   while the relay was stopped) with a counter above the persisted one, so they beat
 *   the peers' older copies. Persisted tombstones are loaded, so a removal survives.
 *
 * Ownership: every method that touches `#known` or the registry runs under `#lock`
 * (one at a time); `learn` only adds to `#pending`.
 *
 * @module
 */

import type { Logger } from "../../shared/log.ts";
import type { Registration, RegistryStore } from "../registry/registry.ts";
import type { RegNotice } from "./notices.ts";
import { regDigest, type RegVersions } from "./reg_versions.ts";

/** Options for {@link RegistrySync}. */
export interface RegistrySyncOptions {
  /** The local registry. */
  registry: RegistryStore;
  /** Logger. */
  logger: Logger;
  /** The mesh's current notice for `id` (its `reg` null = tombstone), if any. */
  held: (id: string) => RegNotice | undefined;
  /**
   * Floods an admin change made here (`reg: null` = removal) with a Lamport counter above
   * both the mesh's and `after`; returns the notice made.
   */
  originate: (id: string, reg: Registration | null, after: number) => RegNotice;
  /** Applies a persisted version to the mesh without flooding (at start). */
  load?: (n: RegNotice) => void;
  /** The persisted versions of what the registry file holds (none: not persisted). */
  versions?: RegVersions;
  /** Delay that coalesces learnt registrations into one write, ms (default 20). */
  coalesceMs?: number;
}

/** True when two registrations hold the same data (the timestamp aside). */
export function sameRegistration(a: Registration, b: Registration): boolean {
  return a.type === b.type && a.passwordHash === b.passwordHash &&
    a.attributes.join("\0") === b.attributes.join("\0");
}

/** Two-way sync between the mesh's registrations and the local registry. */
export class RegistrySync {
  readonly #options: RegistrySyncOptions;
  readonly #registry: RegistryStore;
  readonly #logger: Logger;
  /** Registrations learnt from the mesh, not yet written (`reg` null = remove). */
  readonly #pending = new Map<string, RegNotice>();
  /** What the registry held after our last successful read or write; null before the first. */
  #known: Map<string, Registration> | null = null;
  #lock: Promise<void> = Promise.resolve();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;
  #closed = false;

  /** Creates the sync; nothing runs until {@link learn} or {@link poll}. */
  constructor(options: RegistrySyncOptions) {
    this.#options = options;
    this.#registry = options.registry;
    this.#logger = options.logger;
  }

  /** Writes failed in a row (0 when the last write succeeded). */
  get failures(): number {
    return this.#failures;
  }

  /** Registrations waiting to be written. */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * The registration learnt for `id` and not yet written (null: a removal), or undefined
   * when nothing is pending for it: logins read this before the registry, so a device
   * whose registration just arrived is not refused for the few ms the write takes.
   */
  pendingFor(id: string): Registration | null | undefined {
    return this.#pending.get(id)?.reg;
  }

  /** Queues a registration learnt from the mesh (`reg` null = removed) for writing. */
  learn(n: RegNotice): void {
    this.#pending.set(n.id, n);
    if (this.#closed || this.#failures > 0) return; // failing: the next poll retries
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      void this.#locked(() => this.#flush());
    }, this.#options.coalesceMs ?? 20);
  }

  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn);
    this.#lock = run.then(() => {}, () => {});
    return run;
  }

  /** Writes what is pending; keeps it pending (and reports) on failure. Under the lock. */
  async #flush(): Promise<void> {
    if (this.#pending.size === 0) return;
    const notices = [...this.#pending.values()];
    const changes = notices.map((n) => ({ id: n.id, reg: n.reg }));
    let written = 0;
    try {
      if (this.#registry.applyMany) {
        await this.#registry.applyMany(changes);
        written = changes.length;
      } else {
        for (const c of changes) {
          if (c.reg === null) await this.#registry.remove(c.id);
          else await this.#registry.put(c.reg);
          written++;
        }
      }
    } catch (e) {
      this.#failures++;
      this.#logger.error("registry write failed; will retry", {
        pending: this.#pending.size,
        failures: this.#failures,
        error: e instanceof Error ? e.message : String(e),
        hint: "check the data folder (disk space, permissions); nothing is lost meanwhile",
      });
    }
    for (const n of notices.slice(0, written)) {
      // A newer change learnt during the write stays pending.
      if (this.#pending.get(n.id) === n) this.#pending.delete(n.id);
      if (n.reg === null) this.#known?.delete(n.id);
      else this.#known?.set(n.id, n.reg);
      this.#record(n);
    }
    if (written === changes.length && this.#failures > 0) {
      this.#logger.info("registry writes recovered", {
        written,
        afterFailures: this.#failures,
      });
      this.#failures = 0;
    }
  }

  /** Records that the file now holds notice `n`'s content. */
  #record(n: RegNotice): void {
    this.#options.versions?.set(n.id, n.lamport, n.origin, n.reg);
  }

  /** The registry's generation when it was last compared; undefined when unknown. */
  #seenGeneration: number | undefined = undefined;

  /** Retries pending writes, then turns admin changes of the registry into notices. */
  poll(): Promise<void> {
    return this.#locked(async () => {
      // Mesh changes first: once written they are part of `#known`, not edits to undo.
      await this.#flush();
      let regs: Registration[];
      try {
        // Unchanged since the last look (the file's version is the same): nothing to do.
        const generation = await this.#registry.generation?.();
        if (generation !== undefined && generation === this.#seenGeneration && this.#known) return;
        regs = await this.#registry.list();
        this.#seenGeneration = generation;
      } catch (e) {
        this.#logger.warn("registry unreadable", { error: String(e) });
        return;
      }
      const known = this.#known;
      const versions = this.#options.versions;
      const now = new Map<string, Registration>();
      for (const reg of regs) {
        now.set(reg.id, reg);
        const before = known?.get(reg.id);
        if (before !== undefined && sameRegistration(before, reg)) continue;
        const held = this.#options.held(reg.id);
        if (held?.reg && sameRegistration(held.reg, reg)) {
          this.#record(held);
          continue;
        }
        const synced = versions?.get(reg.id);
        if (known === null) {
          if (this.#pending.has(reg.id)) continue; // the mesh's is newer
          if (synced !== undefined && synced.digest === regDigest(reg) && this.#options.load) {
            // Unchanged since the mesh last wrote or read it: the mesh has it at this version.
            this.#options.load({
              t: "reg",
              id: reg.id,
              lamport: synced.lamport,
              origin: synced.origin,
              reg,
            });
            continue;
          }
        }
        this.#pending.delete(reg.id); // the admin's edit is the newest
        this.#record(this.#options.originate(reg.id, reg, synced?.lamport ?? 0));
      }
      if (known !== null) {
        for (const id of known.keys()) {
          if (now.has(id)) continue;
          // It was in the registry and an administrator removed it.
          this.#pending.delete(id);
          if (this.#options.held(id)?.reg) this.#record(this.#options.originate(id, null, 0));
        }
      } else if (versions !== undefined) {
        // First look: what the mesh knew is persisted, the file may have changed since.
        for (const [id, synced] of versions.entries()) {
          if (now.has(id) || this.#pending.has(id)) continue;
          if (synced.digest === null) {
            // A removal: still known, so an older copy elsewhere cannot bring it back.
            this.#options.load?.({
              t: "reg",
              id,
              lamport: synced.lamport,
              origin: synced.origin,
              reg: null,
            });
          } else {
            // Removed from the file while the relay was stopped.
            this.#record(this.#options.originate(id, null, synced.lamport));
          }
        }
      }
      this.#known = now;
    });
  }

  /** Stops the coalescing timer and makes a last attempt to write what is pending. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#locked(() => this.#flush());
    await this.#options.versions?.close();
  }
}
