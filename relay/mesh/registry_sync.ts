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
 *
 * Ownership: every method that touches `#known` or the registry runs under `#lock`
 * (one at a time); `learn` only adds to `#pending`.
 *
 * @module
 */

import type { Logger } from "../../shared/log.ts";
import type { Registration, RegistryStore } from "../registry/registry.ts";

/** Options for {@link RegistrySync}. */
export interface RegistrySyncOptions {
  /** The local registry. */
  registry: RegistryStore;
  /** Logger. */
  logger: Logger;
  /** The mesh's current registration for `id` (null = tombstone, undefined = none). */
  held: (id: string) => Registration | null | undefined;
  /** Floods an admin change made here (`reg: null` = removal). */
  originate: (id: string, reg: Registration | null) => void;
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
  /** Registrations learnt from the mesh, not yet written (null = remove). */
  readonly #pending = new Map<string, Registration | null>();
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
    return this.#pending.get(id);
  }

  /** Queues a registration learnt from the mesh (`null` = removed) for writing. */
  learn(id: string, reg: Registration | null): void {
    this.#pending.set(id, reg);
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
    const changes = [...this.#pending].map(([id, reg]) => ({ id, reg }));
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
    for (const c of changes.slice(0, written)) {
      // A newer change learnt during the write stays pending.
      if (this.#pending.get(c.id) === c.reg) this.#pending.delete(c.id);
      if (c.reg === null) this.#known?.delete(c.id);
      else this.#known?.set(c.id, c.reg);
    }
    if (written === changes.length && this.#failures > 0) {
      this.#logger.info("registry writes recovered", {
        written,
        afterFailures: this.#failures,
      });
      this.#failures = 0;
    }
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
      const now = new Map<string, Registration>();
      for (const reg of regs) {
        now.set(reg.id, reg);
        const before = known?.get(reg.id);
        if (before !== undefined && sameRegistration(before, reg)) continue;
        const held = this.#options.held(reg.id);
        if (held && sameRegistration(held, reg)) continue;
        if (known === null && this.#pending.has(reg.id)) continue; // the mesh's is newer
        this.#pending.delete(reg.id); // the admin's edit is the newest
        this.#options.originate(reg.id, reg);
      }
      if (known !== null) {
        for (const id of known.keys()) {
          if (now.has(id)) continue;
          // It was in the registry and an administrator removed it.
          this.#pending.delete(id);
          if (this.#options.held(id)) this.#options.originate(id, null);
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
  }
}
