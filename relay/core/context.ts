/**
 * What every piece of the relay core needs from its relay: the shared types of the
 * core. The loops import this; it imports nothing of the loops.
 *
 * @module
 */

import type { ErrorCode } from "../../shared/protocol/constants.ts";
import type { Logger } from "../../shared/log.ts";
import type { LoginAuthority } from "../login/credentials.ts";
import type { LoginThrottle } from "../login/throttle.ts";
import type { RegistryWatch } from "../login/registry_watch.ts";
import type { LinkPool } from "../mesh/links.ts";
import type { Directory } from "../directory.ts";
import type { RelayMetrics } from "../admin/metrics.ts";
import type { LocalDevices } from "./local_devices.ts";
import type { RelayConn } from "./conn.ts";
import type { ConnectRate } from "./connect_rate.ts";
import type { TargetWaits } from "./waits.ts";

/** Limits on what peers can make the relay hold. Each has a flag (relay/main.ts). */
export interface RelayLimits {
  /** Connections not yet logged in, per remote address. */
  readonly maxUnauthPerAddress: number;
  /** Connections not yet logged in, in total. */
  readonly maxUnauth: number;
  /** Connections of one device. */
  readonly maxConnsPerDevice: number;
  /** Sessions one device takes part in at once. */
  readonly maxSessionsPerDevice: number;
  /** A session with no byte in either direction this long is closed, ms (0: never). */
  readonly sessionIdleTimeoutMs: number;
  /** How long a request waits for a busy target's connection to become idle, ms (0: no wait). */
  readonly targetWaitMs: number;
  /** Requests that may wait for one target at once; more are refused TargetBusy. */
  readonly maxWaitingPerTarget: number;
  /** Connection requests per second one device may send on average (0: no limit). */
  readonly connectRate: number;
  /** Connection requests one device may send at once before the rate applies. */
  readonly connectBurst: number;
}

/** Defaults of {@link RelayLimits}. */
export const DEFAULT_LIMITS: RelayLimits = {
  maxUnauthPerAddress: 64,
  maxUnauth: 4096,
  maxConnsPerDevice: 256,
  maxSessionsPerDevice: 128,
  sessionIdleTimeoutMs: 10 * 60_000,
  targetWaitMs: 2000,
  maxWaitingPerTarget: 128,
  connectRate: 100,
  connectBurst: 400,
};

/** Everything a connection needs from its relay. */
export interface RelayContext {
  /** This relay's name. */
  readonly name: string;
  /** Where devices are looked up. */
  readonly directory: Directory;
  /** Devices logged in here. */
  readonly devices: LocalDevices<RelayConn>;
  /** Login failure throttle. */
  readonly throttle: LoginThrottle;
  /** SCRAM challenges, proof checks and pool-connection tickets. */
  readonly logins: LoginAuthority;
  /** Notices registration changes of the devices logged in here (revoke.ts acts on them). */
  readonly registryWatch: Pick<RegistryWatch, "epoch" | "recheck">;
  /** Logger. */
  readonly logger: Logger;
  /** Counters for the admin listener's /metrics. */
  readonly metrics: RelayMetrics;
  /** Clock, ms. */
  readonly now: () => number;
  /** Runs `fn` after `ms` unless cancelled (injected so tests fire deadlines by hand). */
  readonly setTimer: (ms: number, fn: () => void) => () => void;
  /** Keep-alive interval the relay asks devices to use. */
  readonly keepaliveMs: number;
  /** How long a target may take to answer a connection-request notice. */
  readonly answerTimeoutMs: number;
  /** Resource limits. */
  readonly limits: RelayLimits;
  /** Requests waiting for a busy target (bounded by `limits.maxWaitingPerTarget`). */
  readonly waits: TargetWaits;
  /** Per-requester token buckets (`limits.connectRate`, `limits.connectBurst`). */
  readonly connectRate: ConnectRate;
  /** True once shutdown began: new logins are refused. */
  readonly shuttingDown: boolean;
  /** Mesh secret; null when this relay accepts no relay links. */
  readonly linkSecret: Uint8Array | null;
  /** This relay's advertised address, `HOST:PORT`. */
  readonly advertisedAddress: string;
  /** Data links to other relays; null when this relay forwards nowhere. */
  readonly links: LinkPool | null;
  /**
   * Takes over an authenticated control link (mesh); resolves when it closes. Null when
   * this relay runs no mesh.
   */
  readonly onControlLink:
    | ((conn: RelayConn, peer: { name: string; address: string }) => Promise<void>)
    | null;
}

/** A connection request, from a device's CONNECT or a relay's ROUTE. */
export interface ConnectRequest {
  /** Requesting device. */
  requester: string;
  /** Its type. */
  requesterType: string;
  /** Target device. */
  target: string;
  /** Service name ("file", or "" for a plain byte stream). */
  service: string;
  /** Relays crossed so far. */
  hops: number;
}

/** Most relays a request may cross (stops a routing loop from looping). */
export const MAX_HOPS = 16;

/**
 * Notices of one request that may time out before the target counts as not answering:
 * each closes a connection that is probably dead; the next idle one is tried.
 */
export const NOTICE_TIMEOUTS = 2;

/** Refuses a request: logs it, answers REJECT; resolves false (no session). */
export type Refuse = (code: ErrorCode, message: string) => Promise<false>;
