/**
 * What the mesh knew of each registration ID when it last agreed with this relay's
 * registry file: its version (Lamport counter, origin relay) and a digest of its content
 * (type, attributes, verifier), or "removed" for a tombstone. Kept in
 * `<data>/mesh-registry.json`, so that a restart can tell the file's entries the mesh
 * already has (loaded with their old version, no notice) from an administrator's edit
 * made while the relay was stopped (originated with a higher version, so it beats the
 * peers' older copies), and so that a removal survives restarts.
 *
 * Only what reached the registry file is recorded (see {@link RegistrySync}): a version
 * learnt but not yet written is not claimed for the file's older content. Writes are
 * coalesced ({@link RegVersions.set} marks the table changed; one write follows within
 * `coalesceMs`), and each replaces the file atomically (temporary file, sync, rename).
 *
 * Ownership: the table is changed only by {@link RegistrySync} (under its lock); the
 * write timer only reads it.
 *
 * @module
 */

import type { Logger } from "../../shared/log.ts";
import { sha256 } from "../../shared/sha256.ts";
import type { Registration } from "../registry/registry.ts";

/** Name of the file in the data folder. */
export const REG_VERSIONS_FILE = "mesh-registry.json";
/** Format version of the file. */
const FORMAT = 1;

/** The version of one registration ID the mesh held when it last matched the file. */
export interface SyncedVersion {
  /** Lamport counter of the notice. */
  lamport: number;
  /** Relay that made the change. */
  origin: string;
  /** {@link regDigest} of the registration, or null for a removal (tombstone). */
  digest: string | null;
}

const encoder = new TextEncoder();

/** A digest of a registration's content (type, attributes, verifier; not its timestamp). */
export function regDigest(reg: Registration): string {
  const bytes = sha256(
    encoder.encode(JSON.stringify([reg.type, reg.attributes, reg.passwordHash])),
  );
  let hex = "";
  for (const b of bytes.subarray(0, 16)) hex += b.toString(16).padStart(2, "0");
  return hex;
}

/** Options for {@link RegVersions}. */
export interface RegVersionsOptions {
  /** File to keep the table in; none = in memory only (tests). */
  path?: string;
  /** Logger (write failures). */
  logger?: Logger;
  /** Delay that coalesces changes into one write, ms (default 1000). */
  coalesceMs?: number;
}

/** The persisted table of synced registration versions. */
export class RegVersions {
  readonly #versions = new Map<string, SyncedVersion>();
  readonly #options: RegVersionsOptions;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #dirty = false;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;

  /** An empty table; {@link RegVersions.load} reads the file. */
  constructor(options: RegVersionsOptions = {}) {
    this.#options = options;
  }

  /**
   * Reads the table from the file (a missing file is an empty table). A file that cannot
   * be parsed is reported and treated as empty: the relay then starts as before this file
   * existed (every registration originated anew).
   */
  async load(): Promise<void> {
    const path = this.#options.path;
    if (path === undefined) return;
    try {
      const read = parseVersions(await Deno.readTextFile(path));
      this.#versions.clear();
      for (const [id, v] of read) this.#versions.set(id, v);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      this.#options.logger?.error("mesh registry versions unreadable; starting without them", {
        file: path,
        error: e instanceof Error ? e.message : String(e),
        hint: "registrations edited while this relay was stopped may lose to older copies",
      });
    }
  }

  /** Number of IDs held. */
  get size(): number {
    return this.#versions.size;
  }

  /** The synced version of `id`, if any. */
  get(id: string): SyncedVersion | undefined {
    return this.#versions.get(id);
  }

  /** Every ID with its synced version. */
  entries(): IterableIterator<[string, SyncedVersion]> {
    return this.#versions.entries();
  }

  /** Records the version of `id` now in the file (`reg` null: removed); schedules a write. */
  set(id: string, lamport: number, origin: string, reg: Registration | null): void {
    const digest = reg === null ? null : regDigest(reg);
    const held = this.#versions.get(id);
    if (
      held !== undefined && held.lamport === lamport && held.origin === origin &&
      held.digest === digest
    ) return;
    this.#versions.set(id, { lamport, origin, digest });
    this.#dirty = true;
    if (this.#options.path === undefined || this.#closed) return;
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      void this.#save();
    }, this.#options.coalesceMs ?? 1000);
  }

  /** Writes the table if it changed; a failure is reported and retried at the next change. */
  #save(): Promise<void> {
    const run = async () => {
      const path = this.#options.path;
      if (!this.#dirty || path === undefined) return;
      this.#dirty = false;
      const regs: Record<string, [number, string, string | null]> = {};
      for (const [id, v] of this.#versions) regs[id] = [v.lamport, v.origin, v.digest];
      try {
        await writeAtomic(path, JSON.stringify({ version: FORMAT, regs }) + "\n");
      } catch (e) {
        this.#dirty = true;
        this.#options.logger?.error("mesh registry versions write failed; will retry", {
          file: path,
          error: e instanceof Error ? e.message : String(e),
          hint: "check the data folder (disk space, permissions)",
        });
      }
    };
    this.#writing = this.#writing.then(run);
    return this.#writing;
  }

  /** Stops the timer and writes what changed. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#save();
  }
}

function parseVersions(text: string): Map<string, SyncedVersion> {
  const data = JSON.parse(text);
  if (typeof data !== "object" || data === null || data.version !== FORMAT) {
    throw new SyntaxError(`expected {"version":${FORMAT},"regs":{...}}`);
  }
  const out = new Map<string, SyncedVersion>();
  for (const [id, v] of Object.entries(data.regs ?? {})) {
    if (
      !Array.isArray(v) || !Number.isSafeInteger(v[0]) || typeof v[1] !== "string" ||
      !(v[2] === null || typeof v[2] === "string")
    ) throw new SyntaxError(`bad entry for ${JSON.stringify(id).slice(0, 80)}`);
    out.set(id, { lamport: v[0], origin: v[1], digest: v[2] });
  }
  return out;
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    {
      using file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
      const bytes = encoder.encode(text);
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await file.syncData();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
