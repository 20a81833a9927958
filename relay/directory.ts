/**
 * The directory boundary: where the relay finds a device and announces its own devices.
 *
 * The rest of the relay only talks to {@link Directory}. The embedded implementation
 * here combines the registry with this relay's local presence; the mesh and the Redis
 * mode plug in behind the same interface.
 *
 * @module
 */

import { DeviceState } from "../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../shared/protocol/messages.ts";
import type { Registration, RegistryStore } from "./registry.ts";

/** Where the relay looks devices up and announces changes of its own devices. */
export interface Directory {
  /** Registration data (for login); may be remote. */
  readonly registry: RegistryStore;
  /** The device's entry, or null when no such device is registered. */
  lookup(id: string): Promise<DirectoryEntry | null>;
  /** All devices, sorted by ID; offline ones only if asked. */
  list(includeOffline: boolean): Promise<DirectoryEntry[]>;
  /** Announces the current state of a device logged in (or just out) on this relay. */
  publish(entry: DirectoryEntry): void;
  /** Releases resources (timers, connections). */
  close(): Promise<void>;
}

/** Builds the entry of a registered device that is not logged in anywhere. */
export function offlineEntry(reg: Registration): DirectoryEntry {
  return {
    id: reg.id,
    type: reg.type,
    attributes: reg.attributes,
    state: DeviceState.Offline,
    relay: "",
    idle: 0,
    sessions: 0,
    peers: [],
    lastUpdate: reg.updatedAt,
  };
}

/** The single-relay directory: the registry plus the presence this relay publishes. */
export class EmbeddedDirectory implements Directory {
  /** Registration data. */
  readonly registry: RegistryStore;
  /** Latest entry per online device, as published. */
  readonly #online = new Map<string, DirectoryEntry>();

  /** Creates the directory over `registry`. */
  constructor(registry: RegistryStore) {
    this.registry = registry;
  }

  /** See {@link Directory.lookup}. */
  async lookup(id: string): Promise<DirectoryEntry | null> {
    const reg = await this.registry.get(id);
    if (reg === undefined) return null;
    return this.#online.get(id) ?? offlineEntry(reg);
  }

  /** See {@link Directory.list}. */
  async list(includeOffline: boolean): Promise<DirectoryEntry[]> {
    const regs = await this.registry.list();
    const out: DirectoryEntry[] = [];
    for (const reg of regs) {
      const entry = this.#online.get(reg.id);
      if (entry !== undefined) out.push(entry);
      else if (includeOffline) out.push(offlineEntry(reg));
    }
    return out;
  }

  /** See {@link Directory.publish}. */
  publish(entry: DirectoryEntry): void {
    if (entry.state === DeviceState.Offline) this.#online.delete(entry.id);
    else this.#online.set(entry.id, entry);
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
