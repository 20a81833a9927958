/**
 * Dialing a relay: TCP with Nagle off, optionally upgraded to TLS.
 *
 * TLS goes through `Deno.startTls` on a TCP connection whose TCP_NODELAY was set first:
 * a `Deno.TlsConn` from `Deno.connectTls` cannot turn Nagle off, which costs ~40 ms on a
 * small write that follows another (measured in bench/).
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { ConnectionClosedError } from "./errors.ts";

/** Connects to `address`; with `tlsCa` (PEM), speaks TLS and trusts only that CA. */
export async function dial(
  address: HostPort,
  options: { tlsCa?: string } = {},
): Promise<Deno.Conn> {
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({ hostname: address.hostname, port: address.port });
  } catch (e) {
    throw new ConnectionClosedError(
      `Cannot reach relay ${formatHostPort(address)}: ${e instanceof Error ? e.message : e}`,
      { cause: e },
    );
  }
  tcp.setNoDelay(true);
  if (options.tlsCa === undefined) return tcp;
  try {
    return await Deno.startTls(tcp, { hostname: address.hostname, caCerts: [options.tlsCa] });
  } catch (e) {
    tcp.close();
    throw new ConnectionClosedError(
      `Cannot start TLS with relay ${formatHostPort(address)}: ${
        e instanceof Error ? e.message : e
      }`,
      { cause: e },
    );
  }
}
