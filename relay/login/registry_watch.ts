/**
 * The one place a relay notices that the registration of a device holding a login here
 * changed, whoever changed it: `deno task registry` editing `registry.json` or Redis, or
 * the mesh writing a registration it learnt from a peer into this relay's file
 * (mesh/registry_sync.ts). What to do about a change is relay/core/revoke.ts's job.
 *
 * Every poll compares the store's {@link RegistryStore.generation} (a stat of the file,
 * a GET of a counter in Redis) with the one seen last. When it moved, every held ID (a
 * device logged in here, or holding a ticket) is read again and handed to `apply`: a
 * removed one as undefined. Only the devices held here are read, so a change costs one
 * read per local device, whatever the size of the fleet. A store without `generation()`
 * is re-read at every poll. A read that fails is never taken for a removal: the device
 * is left alone and the next poll reads everything again. Nor is a store that lost its
 * data: a generation that went *down* (Redis restarted empty, its counter gone) is
 * reported and taken as the new base, and nothing is revoked for it (logins fail until
 * the registrations are restored; a device they leave out goes at the next change).
 *
 * A login racing a change: it read the old registration, the check that follows the
 * change ran before the login was attached, so the check missed it. The login compares
 * {@link RegistryWatch.epoch} before its registry read and after its proof check; when
 * a check started in between, it asks for a {@link RegistryWatch.recheck} of its ID.
 *
 * Ownership: `#seen`, `#epoch` and `#checking` change only in {@link RegistryWatch.poll}
 * and its check; `apply` runs as each read resolves, never later with a stale value.
 *
 * @module
 */

import type { Logger } from "../../shared/log.ts";
import type { Registration, RegistryStore } from "../registry/registry.ts";

/** Options for {@link RegistryWatch}. */
export interface RegistryWatchOptions {
  /** The registry logins are checked against. */
  registry: RegistryStore;
  /** IDs whose registration matters here: devices logged in, devices holding tickets. */
  held: () => Iterable<string>;
  /** Receives the current registration of a held ID (undefined: removed). */
  apply: (id: string, reg: Registration | undefined) => void;
  /** Logger. */
  logger: Logger;
  /** Registrations read at once during a check (default 64). */
  concurrency?: number;
}

/** Watches the registry for changes that concern the devices logged in here. */
export class RegistryWatch {
  readonly #registry: RegistryStore;
  readonly #held: () => Iterable<string>;
  readonly #apply: (id: string, reg: Registration | undefined) => void;
  readonly #logger: Logger;
  readonly #concurrency: number;
  /** Generation at the last check; undefined before the first or after a failed read. */
  #seen: number | undefined = undefined;
  #epoch = 0;
  #checking: Promise<void> | null = null;
  /** Rechecks under way (awaited by {@link close}). */
  readonly #rechecks = new Set<Promise<void>>();
  #closed = false;

  /** Creates the watch; nothing is read until {@link poll}. */
  constructor(options: RegistryWatchOptions) {
    this.#registry = options.registry;
    this.#held = options.held;
    this.#apply = options.apply;
    this.#logger = options.logger;
    this.#concurrency = options.concurrency ?? 64;
  }

  /** Counts the checks started: a login that sees it move re-checks its own ID. */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Reads the registry's generation and, if it moved, every held ID's registration.
   * One check at a time: a call during a check returns that check.
   */
  poll(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#checking ??= this.#check().finally(() => this.#checking = null);
    return this.#checking;
  }

  /** Reads `id`'s registration again and applies it (a login that raced a check). */
  recheck(id: string): void {
    if (this.#closed) return;
    const run = this.#read([id]).finally(() => this.#rechecks.delete(run));
    this.#rechecks.add(run);
  }

  /** Stops polling; resolves once the reads under way are done. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([this.#checking, ...this.#rechecks]);
  }

  async #check(): Promise<void> {
    let generation: number | undefined;
    try {
      generation = await this.#registry.generation?.();
    } catch (e) {
      // The backend's own health reporting tells of an outage; nothing is revoked meanwhile.
      this.#logger.debug("registry generation unreadable", { error: String(e) });
      return;
    }
    if (generation !== undefined && generation === this.#seen) return;
    if (generation !== undefined && this.#seen !== undefined && generation < this.#seen) {
      this.#logger.warn("registry generation went back; no login revoked for it", {
        from: this.#seen,
        to: generation,
        hint: "the registry lost its data (Redis restarted empty?): restore the registrations",
      });
      this.#seen = generation;
      return;
    }
    this.#seen = generation;
    this.#epoch++;
    await this.#read([...new Set(this.#held())]);
  }

  async #read(ids: string[]): Promise<void> {
    let failed = 0;
    let error = "";
    for (let i = 0; i < ids.length && !this.#closed; i += this.#concurrency) {
      await Promise.all(
        ids.slice(i, i + this.#concurrency).map(async (id) => {
          let reg: Registration | undefined;
          try {
            reg = await this.#registry.get(id);
          } catch (e) {
            failed++;
            error = String(e);
            return;
          }
          this.#apply(id, reg);
        }),
      );
    }
    if (failed > 0) {
      this.#seen = undefined; // the next poll reads every held ID again
      this.#logger.warn("registry check failed; will retry", { devices: failed, error });
    }
  }
}
