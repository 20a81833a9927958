/**
 * What the admin listener shows: a {@link RelaySnapshot} of the relay's tables, taken
 * on demand from read-only views of them. The views are structural, so the relay core
 * can change its classes freely as long as it can still hand these shapes over.
 *
 * @module
 */

import type { DirectoryHealth, MeshTopology } from "../directory.ts";
import type { RelayMetrics } from "./metrics.ts";

/** One side of a session, as the snapshot needs it. */
export interface SessionSideView {
  /** The device at the far end of this side. */
  readonly endpointId: string;
}

/** A running session, as the snapshot needs it. */
export interface SessionView {
  /** Session ID. */
  readonly id: string;
  /** Requester side. */
  readonly a: SessionSideView;
  /** Target side. */
  readonly b: SessionSideView;
  /** Bytes forwarded a→b and b→a so far. */
  readonly bytes: { readonly ab: number; readonly ba: number };
}

/** A connection to this relay, as the snapshot needs it. */
export interface ConnView {
  /** A device's connection or a link from another relay. */
  readonly kind: "device" | "link";
  /** Life-cycle state (`hello` = not logged in yet, `idle`, `session`...). */
  readonly state: string;
  /** Device ID once logged in. */
  readonly deviceId: string;
  /** For links: the other relay's name. */
  readonly linkPeer: string;
  /** The session this connection carries, if any. */
  readonly session: SessionView | null;
  /** Services it answers notices for (declared in LOGIN; none if absent). */
  readonly services?: readonly string[];
}

/** A device logged in here, as the snapshot needs it. */
export interface DeviceView {
  /** Device ID. */
  readonly id: string;
  /** Device type. */
  readonly type: string;
  /** Attributes. */
  readonly attributes: readonly string[];
  /** Its connections. */
  readonly conns: Iterable<ConnView>;
  /** Wall-clock time of the last change, ms. */
  readonly lastUpdate: number;
}

/** What {@link takeSnapshot} reads. */
export interface SnapshotSource {
  /** Relay name. */
  name: string;
  /** Address devices connect to, `HOST:PORT`. */
  address: string;
  /** True once shutdown began. */
  shuttingDown: boolean;
  /** Devices logged in here. */
  devices: Iterable<DeviceView>;
  /** Every open connection (devices, links, not yet logged in). */
  conns: Iterable<ConnView>;
  /** Directory backend and health. */
  directory: DirectoryHealth;
  /** Mesh relays and links, when the directory is a mesh. */
  topology: MeshTopology | null;
  /** Counters. */
  metrics: RelayMetrics;
  /** Wall clock, ms. */
  now: number;
}

/** How a device logged in here stands. */
export type DeviceActivity = "in session" | "idle" | "busy";

/** One device in the snapshot. */
export interface DeviceStatus {
  /** Device ID. */
  id: string;
  /** Device type. */
  type: string;
  /** Attributes. */
  attributes: string[];
  /** Services its connections declared (what it can be asked for). */
  services: string[];
  /** `in session` (at least one), `idle` (none, can take one), `busy` (no idle connection). */
  activity: DeviceActivity;
  /** Connections that can take a notice. */
  idle: number;
  /** Connections in a session. */
  sessions: number;
  /** All its connections here. */
  connections: number;
  /** Devices it is in sessions with. */
  peers: string[];
  /** Last change, ms since the epoch. */
  lastUpdate: number;
}

/** One session in the snapshot. */
export interface SessionStatus {
  /** Session ID. */
  id: string;
  /** Requesting device. */
  from: string;
  /** Target device. */
  to: string;
  /** Bytes forwarded from the requester to the target. */
  bytesSent: number;
  /** Bytes forwarded from the target to the requester. */
  bytesReceived: number;
  /** Relay the session crosses a link to (for sessions between relays), else "". */
  via: string;
}

/** Everything the status page and `/metrics` show, at one instant. */
export interface RelaySnapshot {
  /** Relay name. */
  name: string;
  /** Listener address. */
  address: string;
  /** `running`, or `shutting down`. */
  state: "running" | "shutting down";
  /** When taken, ms since the epoch. */
  time: number;
  /** Process start, ms since the epoch. */
  startedAt: number;
  /** Directory backend and health. */
  directory: DirectoryHealth;
  /** Devices logged in here, sorted by ID. */
  devices: DeviceStatus[];
  /** Sessions through this relay. */
  sessions: SessionStatus[];
  /** Connections by what they are doing. */
  connections: {
    /** Accepted, not logged in yet. */
    unauthenticated: number;
    /** Device connections waiting for a notice. */
    idle: number;
    /** Device connections in any other state (connecting, session, ending...). */
    active: number;
    /** Links from other relays. */
    links: number;
  };
  /** Counters since the process started. */
  totals: {
    relayedBytes: number;
    logins: Record<string, number>;
    setups: Record<string, number>;
    refusals: Record<string, number>;
    connectionsAccepted: number;
  };
  /** Mesh relays and links, or null without a mesh. */
  mesh: MeshTopology | null;
  /** `Deno.memoryUsage()`, bytes. */
  memory: { rss: number; heapTotal: number; heapUsed: number; external: number };
}

/** Takes a snapshot of the relay's tables. Cost: one pass over connections and devices. */
export function takeSnapshot(source: SnapshotSource): RelaySnapshot {
  const devices: DeviceStatus[] = [];
  for (const d of source.devices) {
    let idle = 0;
    let sessions = 0;
    let connections = 0;
    const peers = new Set<string>();
    for (const c of d.conns) {
      connections++;
      if (c.state === "idle") idle++;
      if (c.session !== null) {
        sessions++;
        const s = c.session;
        peers.add(s.a.endpointId === d.id ? s.b.endpointId : s.a.endpointId);
      }
    }
    devices.push({
      id: d.id,
      type: d.type,
      attributes: [...d.attributes],
      services: [...new Set([...d.conns].flatMap((c) => c.services ?? []))].sort(),
      activity: sessions > 0 ? "in session" : idle > 0 ? "idle" : "busy",
      idle,
      sessions,
      connections,
      peers: [...peers].sort(),
      lastUpdate: d.lastUpdate,
    });
  }
  devices.sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));

  const connections = { unauthenticated: 0, idle: 0, active: 0, links: 0 };
  const sessions = new Map<SessionView, SessionStatus>();
  for (const c of source.conns) {
    if (c.state === "hello") connections.unauthenticated++;
    else if (c.kind === "link") connections.links++;
    else if (c.state === "idle") connections.idle++;
    else if (c.state !== "closed") connections.active++;
    const s = c.session;
    if (s === null) continue;
    let status = sessions.get(s);
    if (status === undefined) {
      status = {
        id: s.id,
        from: s.a.endpointId,
        to: s.b.endpointId,
        bytesSent: s.bytes.ab,
        bytesReceived: s.bytes.ba,
        via: "",
      };
      sessions.set(s, status);
    }
    if (c.kind === "link") status.via = c.linkPeer;
  }

  const m = source.metrics;
  const memory = Deno.memoryUsage();
  return {
    name: source.name,
    address: source.address,
    state: source.shuttingDown ? "shutting down" : "running",
    time: source.now,
    startedAt: m.startedAt,
    directory: source.directory,
    devices,
    sessions: [...sessions.values()],
    connections,
    totals: {
      relayedBytes: m.relayedBytes,
      logins: Object.fromEntries(m.logins),
      setups: Object.fromEntries(m.setups),
      refusals: Object.fromEntries(m.refusals),
      connectionsAccepted: m.connectionsAccepted,
    },
    mesh: source.topology,
    memory: {
      rss: memory.rss,
      heapTotal: memory.heapTotal,
      heapUsed: memory.heapUsed,
      external: memory.external,
    },
  };
}
