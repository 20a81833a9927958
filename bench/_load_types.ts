/**
 * What the bench tells a load generator (`bench/load.ts`), as one JSON argument, and the
 * events it prints back. Shared by both sides so they cannot drift apart.
 *
 * @module
 */

/** The password every bench device is registered with. */
export const BENCH_PASSWORD = "bench-password";

/** The service name bench sessions ask for (no file attribute needed). */
export const BENCH_SERVICE = "bench";

/**
 * How a load generator reaches its peer: through a relay (agent library: connectRelay,
 * connect/accept, Session) or directly over loopback TCP with the same DATA framing.
 */
export type Link =
  | { mode: "relay"; relay: string; tlsCaFile?: string }
  | { mode: "direct"; port?: number };

/** Receives `sessions` bulk sessions and counts their bytes. */
export interface BulkRecvOptions {
  role: "bulk-recv";
  link: Link;
  id: string;
  sessions: number;
}

/** Opens `sessions` sessions to `target` and, on "go", sends `bytes` on each at once. */
export interface BulkSendOptions {
  role: "bulk-send";
  link: Link;
  id: string;
  target: string;
  sessions: number;
  bytes: number;
  /** Wait until the relay's directory shows the target online (relay chains). */
  waitForTarget?: boolean;
}

/** Keeps `pool` idle connections; accepts every session and echoes its first byte. */
export interface EchoOptions {
  role: "echo";
  link: Link;
  id: string;
  pool: number;
  /** Speak first: write 1 byte right after ACCEPT, then read the requester's byte. */
  greetFirst?: boolean;
}

/**
 * Sequential setups to `target`: each "go" runs `count` of them (the first "go" runs
 * `warmup` untimed ones before) and reports each one's time.
 */
export interface RequesterOptions {
  role: "requester";
  link: Link;
  id: string;
  target: string;
  count: number;
  warmup: number;
  /** Wait until the relay's directory shows the target online (relay chains). */
  waitForTarget?: boolean;
  /** The target speaks first: time until its byte arrives, then answer with one. */
  greetFirst?: boolean;
}

/** An echo pool plus a requester connection; each "go N" runs one setup toward `peer`. */
export interface PeerOptions {
  role: "peer";
  link: Extract<Link, { mode: "relay" }>;
  id: string;
  peer: string;
  pool: number;
}

/** Logs in devices `idle-<first>` .. and holds `perDevice` idle connections each. */
export interface IdleOptions {
  role: "idle";
  link: Extract<Link, { mode: "relay" }>;
  first: number;
  count: number;
  perDevice: number;
  /** Logins in flight at once. */
  concurrency: number;
  /** PING period per connection, spread evenly over the period. */
  keepaliveMs: number;
}

/** Watches a login on `relays[0]` spread to every relay, `rounds` times. */
export interface MeshObserverOptions {
  role: "mesh-observer";
  relays: string[];
  tlsCaFile?: string;
  watchId: string;
  observerId: string;
  rounds: number;
  timeoutMs: number;
  /** Log the watched device in on `relays[round % relays.length]` (default: always the first). */
  rotate?: boolean;
}

/**
 * Waits for "go HOST:PORT", logs in there as `id`, then lists the relay's online devices
 * every `pollMs` until `expect` of them have IDs starting with `prefix` ("result", with
 * wall-clock times, since the bench compares them with its own).
 */
export interface MeshListOptions {
  role: "mesh-list";
  id: string;
  prefix: string;
  expect: number;
  pollMs: number;
  timeoutMs: number;
}

/**
 * Opens `count` connections that never log in. Each writes the first `send` bytes of a
 * HELLO frame that declares `declared` payload bytes (`send` 0: silent), then holds.
 * "stats" reports connections the relay closed; "close" closes them all ("closed").
 */
export interface UnauthOptions {
  role: "unauth";
  relay: string;
  count: number;
  declared: number;
  send: number;
  /** Connects in flight at once. */
  concurrency: number;
}

/**
 * Logs in `pairs` connections as `requester` and as many as `target` ("idle"); on "go"
 * sets up one session per pair and passes 1 byte each way ("sessions"); then holds.
 * "stats" reports connections lost; "close" closes them all ("closed").
 */
export interface SessionsOptions {
  role: "sessions";
  link: Extract<Link, { mode: "relay" }>;
  requester: string;
  target: string;
  pairs: number;
  /** Logins and setups in flight at once. */
  concurrency: number;
}

/**
 * On "go", runs `count` sessions to `target` (a `tsunagi run` agent), `concurrency` at
 * once. Each sends the bytes `tsunagi send` would (file header line, body, trailer as
 * DATA frames) and closes its socket at a random byte offset of that stream (seeded),
 * before its END: a sender that died. Reports "done" with where the cuts fell.
 */
export interface AbortSendOptions {
  role: "abort-send";
  relay: string;
  id: string;
  target: string;
  count: number;
  concurrency: number;
  seed: number;
}

/** Every load generator role. */
export type LoadOptions =
  | BulkRecvOptions
  | BulkSendOptions
  | EchoOptions
  | RequesterOptions
  | PeerOptions
  | IdleOptions
  | MeshObserverOptions
  | MeshListOptions
  | UnauthOptions
  | SessionsOptions
  | AbortSendOptions;

/** One bulk session as the sender saw it, ms from "go". */
export interface SessionTiming {
  bytes: number;
  startMs: number;
  endMs: number;
}

/** Names of the idle-capacity devices: `idle-00000` ... */
export function idleDeviceId(index: number): string {
  return `idle-${String(index).padStart(5, "0")}`;
}
