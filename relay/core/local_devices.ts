/**
 * The devices logged in on this relay and their connections (patent Fig. 2A: the
 * relay's own table). Pure bookkeeping: no I/O; each change is reported through
 * `onChange` so the directory (and later the mesh) can announce it.
 *
 * @module
 */

import { DeviceState, FILE_ATTRIBUTE, FILE_SERVICE } from "../../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../../shared/protocol/messages.ts";

/** What the table needs to know of one connection. */
export interface TrackedConn {
  /** Device this connection belongs to. */
  readonly deviceId: string;
  /** True while the connection is idle (can take a connection-request notice). */
  readonly isIdle: boolean;
  /** The peer device ID while in a session, else null. */
  readonly peerId: string | null;
  /** Agent instance token from LOGIN ("" for one-shot clients). */
  readonly instance: string;
  /** Services the connection answers notices for. */
  readonly services: readonly string[];
}

/** One logged-in device. */
export interface LocalDevice<C extends TrackedConn> {
  /** User ID. */
  id: string;
  /** Device type. */
  type: string;
  /** Device attributes. */
  attributes: string[];
  /** Its connections to this relay (insertion order = oldest first). */
  conns: Set<C>;
  /** Wall-clock time of the last change, ms. */
  lastUpdate: number;
  /** The agent instance that holds this device here ("" until one logs in). */
  instance: string;
}

/** The local table. `C` is the relay's connection class. */
export class LocalDevices<C extends TrackedConn> {
  readonly #devices = new Map<string, LocalDevice<C>>();
  readonly #relayName: string;
  readonly #onChange: (entry: DirectoryEntry) => void;
  readonly #now: () => number;

  /** Creates the table for relay `relayName`. */
  constructor(
    relayName: string,
    onChange: (entry: DirectoryEntry) => void,
    now: () => number = Date.now,
  ) {
    this.#relayName = relayName;
    this.#onChange = onChange;
    this.#now = now;
  }

  /** Number of devices logged in here. */
  get size(): number {
    return this.#devices.size;
  }

  /** The device, if logged in here. */
  get(id: string): LocalDevice<C> | undefined {
    return this.#devices.get(id);
  }

  /** All logged-in devices. */
  devices(): IterableIterator<LocalDevice<C>> {
    return this.#devices.values();
  }

  /** Adds a freshly logged-in connection (logging the device in if it is new). */
  attach(conn: C, type: string, attributes: string[]): void {
    let device = this.#devices.get(conn.deviceId);
    if (device === undefined) {
      device = {
        id: conn.deviceId,
        type,
        attributes,
        conns: new Set(),
        lastUpdate: 0,
        instance: "",
      };
      this.#devices.set(conn.deviceId, device);
    }
    if (device.instance === "") device.instance = conn.instance;
    device.conns.add(conn);
    this.changed(conn.deviceId);
  }

  /** Removes a connection; the device is logged out when it has none left. */
  detach(conn: C): void {
    const device = this.#devices.get(conn.deviceId);
    if (device === undefined || !device.conns.delete(conn)) return;
    if (device.conns.size === 0) {
      this.#devices.delete(conn.deviceId);
      this.#onChange({ ...this.#entryOf(device), state: DeviceState.Offline, relay: "" });
      return;
    }
    this.changed(conn.deviceId);
  }

  /** Recomputes and announces a device's entry after a connection changed state. */
  changed(id: string): void {
    const device = this.#devices.get(id);
    if (device === undefined) return;
    device.lastUpdate = Math.max(this.#now(), device.lastUpdate + 1);
    this.#onChange(this.#entryOf(device));
  }

  /**
   * An idle connection of `id` other than `exclude` that answers `service` (any, if not
   * given), or undefined (the target is busy).
   */
  pickIdle(id: string, exclude?: C, service?: string): C | undefined {
    const device = this.#devices.get(id);
    if (device === undefined) return undefined;
    // Newest idle first: the oldest connections are the likeliest to have gone stale.
    let found: C | undefined;
    for (const conn of device.conns) {
      if (!conn.isIdle || conn === exclude) continue;
      if (service === undefined || conn.services.includes(service)) found = conn;
    }
    return found;
  }

  /** Session slots reserved by requests under way, by target and by `target\0requester`. */
  readonly #reserved = new Map<string, number>();

  /**
   * Reserves a session slot of `target` (and of its pair with `requester`) for a request
   * under way; returns the release, to call once when the request ends either way.
   */
  reserveSession(target: string, requester: string): () => void {
    const keys = [target, `${target}\0${requester}`];
    for (const k of keys) this.#reserved.set(k, (this.#reserved.get(k) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const k of keys) {
        const n = (this.#reserved.get(k) ?? 1) - 1;
        if (n <= 0) this.#reserved.delete(k);
        else this.#reserved.set(k, n);
      }
    };
  }

  /**
   * Number of sessions the device takes part in here (connections in a session, plus
   * slots reserved by requests under way), or only those with peer `with` when given.
   */
  sessionCount(id: string, withPeer?: string): number {
    const device = this.#devices.get(id);
    let n = this.#reserved.get(withPeer === undefined ? id : `${id}\0${withPeer}`) ?? 0;
    if (device === undefined) return n;
    for (const conn of device.conns) {
      const peer = conn.peerId;
      if (peer !== null && (withPeer === undefined || peer === withPeer)) n++;
    }
    return n;
  }

  /** The directory entry of a logged-in device. */
  entry(id: string): DirectoryEntry | undefined {
    const device = this.#devices.get(id);
    return device === undefined ? undefined : this.#entryOf(device);
  }

  #entryOf(device: LocalDevice<C>): DirectoryEntry {
    let idle = 0;
    let sessions = 0;
    const peers = new Set<string>();
    const services = new Set<string>();
    // `file` is offered only by a device with the FILE TX/RX attribute, declared or not.
    const files = device.attributes.includes(FILE_ATTRIBUTE);
    for (const conn of device.conns) {
      for (const s of conn.services) if (files || s !== FILE_SERVICE) services.add(s);
      if (conn.isIdle) idle++;
      if (conn.peerId !== null) {
        sessions++;
        peers.add(conn.peerId);
      }
    }
    return {
      id: device.id,
      type: device.type,
      attributes: device.attributes,
      services: [...services].sort().slice(0, 255),
      state: DeviceState.Online,
      relay: this.#relayName,
      idle: Math.min(idle, 0xffff),
      sessions: Math.min(sessions, 0xffff),
      peers: [...peers].slice(0, 255),
      lastUpdate: device.lastUpdate,
    };
  }
}
