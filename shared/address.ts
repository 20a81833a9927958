/**
 * `HOST:PORT` parsing shared by the relay and agent command lines.
 *
 * @module
 */

/** A host and port. */
export interface HostPort {
  /** Host name or IP address (IPv6 without brackets). */
  hostname: string;
  /** TCP port. */
  port: number;
}

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (host defaults to `defaultHost`).
 * Throws a RangeError naming the bad value.
 *
 * @example
 * ```ts
 * import { parseHostPort } from "./address.ts";
 * console.assert(parseHostPort("127.0.0.1:7800").port === 7800);
 * ```
 */
export function parseHostPort(value: string, defaultHost = "127.0.0.1"): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new RangeError(`Invalid address "${value}": expected HOST:PORT, e.g. 127.0.0.1:7800`);
  }
  return { hostname: m[1] ?? (m[2] || defaultHost), port };
}

/** Formats a host and port back to `HOST:PORT`. */
export function formatHostPort({ hostname, port }: HostPort): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}
