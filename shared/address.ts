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

/**
 * The key under which per-address limits count a peer: an IPv4 address as is (also when
 * written IPv4-mapped, `::ffff:192.0.2.1`), an IPv6 address by its /64 prefix
 * (`2001:db8:1:2::/64`), which one host or one customer usually holds whole: one per
 * address would let it spread over 2^64 keys. Anything else (a name) as is.
 *
 * @example
 * ```ts
 * import { addressGroup } from "./address.ts";
 * console.assert(addressGroup("2001:db8:1:2:a::1") === "2001:db8:1:2::/64");
 * console.assert(addressGroup("::ffff:192.0.2.1") === "192.0.2.1");
 * ```
 */
export function addressGroup(host: string): string {
  const bare = host.replace(/^\[|\]$/g, "").replace(/%.*$/, "").toLowerCase();
  if (!bare.includes(":")) return bare;
  const hextets = expandIpv6(bare);
  if (hextets === null) return bare;
  if (hextets.slice(0, 5).every((h) => h === 0) && hextets[5] === 0xffff) {
    return [hextets[6] >> 8, hextets[6] & 255, hextets[7] >> 8, hextets[7] & 255].join(".");
  }
  return `${hextets.slice(0, 4).map((h) => h.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address (an embedded IPv4 tail counts as two). */
function expandIpv6(text: string): number[] | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const parse = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    for (const piece of part.split(":")) {
      if (/^\d{1,3}(?:\.\d{1,3}){3}$/.test(piece)) {
        const [a, b, c, d] = piece.split(".").map(Number);
        out.push((a << 8) | b, (c << 8) | d);
      } else if (/^[0-9a-f]{1,4}$/.test(piece)) out.push(parseInt(piece, 16));
      else return null;
    }
    return out;
  };
  const head = parse(halves[0]);
  const tail = halves.length === 2 ? parse(halves[1]) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  return [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
}
