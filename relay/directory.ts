/**
 * The directory boundary: where the relay finds a device and announces its own devices.
 *
 * The rest of the relay only talks to {@link Directory}. The embedded implementation
 * here combines the registry with this relay's local presence; the mesh and the Redis
 * mode plug in behind the same interface.
 *
 * @module
 */

import type { HostPort } from "../shared/address.ts";
import type { FramedConn } from "../shared/framed_conn.ts";
import { DeviceState } from "../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../shared/protocol/messages.ts";
import type { Registration, RegistryStore } from "./registry/registry.ts";

/** A relay to hand a session to: its name and the address to dial. */
export interface Hop {
  /** Relay name. */
  name: string;
  /** Address its listener is reachable at. */
  address: HostPort;
}

/** What a directory learns about its own relay when the relay starts. */
export interface SelfInfo {
  /** This relay's name. */
  name: string;
  /** The address other relays dial to reach it. */
  address: HostPort;
  /** Current entries of the devices logged in here (to write back after an outage). */
  snapshot: () => DirectoryEntry[];
  /** The current entry of one device logged in here, if it is. */
  local: (id: string) => DirectoryEntry | undefined;
  /** The agent instance token holding device `id` here ("" if none or a one-shot client). */
  instance?: (id: string) => string;
  /**
   * A newer login of device `id` won on relay `by.relay`: close its connections here,
   * telling the agent `Replaced` unless it is the same agent instance that moved.
   */
  evict?: (id: string, by: { relay: string; sameInstance: boolean }) => void;
}

/** A directory's backend and whether it can answer now (for `/readyz` and metrics). */
export interface DirectoryHealth {
  /** `embedded`, `mesh` or `redis`. */
  backend: string;
  /** False while lookups and logins would fail (e.g. Redis unreachable). */
  up: boolean;
}

/** The relays a mesh directory knows and this relay's own control links. */
export interface MeshTopology {
  /** Every relay with a record, this one included. */
  relays: { name: string; address: string; alive: boolean; neighbors: string[] }[];
  /** This relay's links: live ones, and configured peers it cannot reach (name "" if unknown). */
  links: { relay: string; address: string; up: boolean }[];
  /** Update notices received from neighbours since start, by what became of them. */
  notices?: { applied: number; dropped: number; refused: number };
}

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
  /**
   * The next relay on the way to relay `relay` (`relay` itself when it can be dialed
   * directly), or null when there is no route.
   */
  nextHop(relay: string): Promise<Hop | null>;
  /** Starts background work (heartbeats, links) once the relay listens. */
  start(self: SelfInfo): Promise<void>;
  /**
   * Takes over an authenticated control link from another relay (mesh only); resolves
   * when the link closes.
   */
  acceptControlLink?(framed: FramedConn, peer: { name: string; address: string }): Promise<void>;
  /** Backend and availability; absent means always available. */
  health?(): DirectoryHealth;
  /** Mesh directories: relays and links, for the admin status page and metrics. */
  topology?(): MeshTopology;
  /** Releases resources (timers, connections). */
  close(): Promise<void>;
}

/** Builds the entry of a registered device that is not logged in anywhere. */
export function offlineEntry(reg: Registration): DirectoryEntry {
  return {
    id: reg.id,
    type: reg.type,
    attributes: reg.attributes,
    services: [],
    state: DeviceState.Offline,
    relay: "",
    idle: 0,
    sessions: 0,
    peers: [],
    lastUpdate: reg.updatedAt,
  };
}

/**
 * The single-relay directory: the registry plus this relay's own table, read directly
 * (nothing is copied on publish, so there is no second state to keep in step).
 */
export class EmbeddedDirectory implements Directory {
  /** Registration data. */
  readonly registry: RegistryStore;
  #local: (id: string) => DirectoryEntry | undefined = () => undefined;

  /** Creates the directory over `registry`. */
  constructor(registry: RegistryStore) {
    this.registry = registry;
  }

  /** See {@link Directory.lookup}. */
  async lookup(id: string): Promise<DirectoryEntry | null> {
    const reg = await this.registry.get(id);
    if (reg === undefined) return null;
    return this.#local(id) ?? offlineEntry(reg);
  }

  /** See {@link Directory.list}. */
  async list(includeOffline: boolean): Promise<DirectoryEntry[]> {
    const out: DirectoryEntry[] = [];
    for (const reg of await this.registry.list()) {
      const entry = this.#local(reg.id);
      if (entry !== undefined) out.push(entry);
      else if (includeOffline) out.push(offlineEntry(reg));
    }
    return out;
  }

  /** Nothing to announce: lookups read the relay's table directly. */
  publish(_entry: DirectoryEntry): void {}

  /** A single relay has no route to others. */
  nextHop(_relay: string): Promise<Hop | null> {
    return Promise.resolve(null);
  }

  /** Keeps the accessor to the relay's own table. */
  start(self: SelfInfo): Promise<void> {
    this.#local = self.local;
    return Promise.resolve();
  }

  /** See {@link Directory.health}: the registry file is read on demand. */
  health(): DirectoryHealth {
    return { backend: "embedded", up: true };
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
