/**
 * `tsunagi run` as a library call: a {@link superviseDevice} with the `file` service and
 * any `--expose` tunnels.
 *
 * @module
 */

import type { HostPort } from "../shared/address.ts";
import type { Logger } from "../shared/log.ts";
import { FILE_SERVICE } from "../shared/protocol/constants.ts";
import type { Clock } from "./clock.ts";
import { DEFAULT_MAX_FILE_SIZE, fileService } from "./file_service.ts";
import { type Services, superviseDevice } from "./supervisor.ts";
import { removeStalePartials, STALE_PARTIAL_MS } from "./transfer.ts";
import { exposeService } from "./tunnel.ts";

export { DEFAULT_MAX_FILE_SIZE };

/** One `--expose NAME=HOST:PORT`: sessions for `name` go to a fresh TCP connection to `to`. */
export interface Exposed {
  /** Service name. */
  name: string;
  /** Local TCP address. */
  to: HostPort;
  /** Only these requesters may use this service (default: all). */
  acceptFrom?: ReadonlySet<string>;
}

/** Options for {@link runAgent}. */
export interface AgentOptions {
  /** Relays to use, in order of preference; the agent fails over to the next. */
  relays: HostPort[];
  /** Device ID. */
  id: string;
  /** Device password. */
  password: string;
  /** Idle connections to keep (default 2). */
  idle?: number;
  /** Folder for received files (file service); null offers no `file` service. */
  inbox: string | null;
  /** Only these requesters are accepted (default: everyone the relay lets through). */
  acceptFrom?: ReadonlySet<string>;
  /** Per service (`file` or an exposed name): only these requesters, on top of `acceptFrom`. */
  acceptFromService?: ReadonlyMap<string, ReadonlySet<string>>;
  /** TCP services to expose. */
  expose?: Exposed[];
  /** PEM CA: connect with TLS. */
  tlsCa?: string;
  /** Fewest PBKDF2 iterations a login challenge may ask for (TSUNAGI_MIN_ITERATIONS). */
  minIterations?: number;
  /** Logger. */
  logger: Logger;
  /** Stops the agent. */
  signal: AbortSignal;
  /** Backoff base, ms (default 250). */
  backoffBaseMs?: number;
  /** Backoff ceiling, ms (default 15000). */
  backoffMaxMs?: number;
  /** Own keep-alive interval, ms. */
  keepaliveMs?: number;
  /** Largest file received, bytes (default {@link DEFAULT_MAX_FILE_SIZE}; 0 = no limit). */
  maxFileSize?: number;
  /** A session with no progress this long fails, ms (default 2 min). */
  sessionIdleMs?: number;
  /** Instance token sent in LOGIN (default: a random UUID per call). */
  instance?: string;
  /** Time source for keep-alives and session deadlines (default the system clock). */
  clock?: Clock;
}

/**
 * Runs until `signal` aborts. Resolves normally on abort; rejects with
 * `FatalLoginError` when the relay refuses the login (wrong ID or password), and with
 * `AgentReplacedError` when another instance took over the device ID.
 */
export async function runAgent(options: AgentOptions): Promise<void> {
  const { logger } = options;
  const services: Services = {};
  if (options.inbox !== null) {
    const stale = await removeStalePartials(options.inbox);
    if (stale > 0) logger.info("removed stale partial files", { count: stale });
    services[FILE_SERVICE] = {
      handler: fileService({ inbox: options.inbox, maxFileSize: options.maxFileSize, logger }),
      acceptFrom: options.acceptFromService?.get(FILE_SERVICE),
    };
  }
  for (const e of options.expose ?? []) {
    services[e.name] = {
      handler: exposeService({ to: e.to, logger }),
      acceptFrom: e.acceptFrom ?? options.acceptFromService?.get(e.name),
    };
  }
  const agent = superviseDevice({ ...options, services });
  // Partial files of a receiver killed while this one runs (another agent on the same
  // inbox, a crash) are swept now and then, not only at start.
  const inbox = options.inbox;
  const sweeper = inbox === null ? undefined : setInterval(() => {
    removeStalePartials(inbox).then((n) => {
      if (n > 0) logger.info("removed stale partial files", { count: n });
    }, () => {});
  }, STALE_PARTIAL_MS);
  try {
    await agent.finished;
  } finally {
    clearInterval(sweeper);
  }
}
