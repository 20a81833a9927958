/**
 * Dialing a relay: TCP with Nagle off and keep-alive on, optionally upgraded to TLS,
 * with one deadline over the whole of it.
 *
 * TLS goes through `Deno.startTls` on a TCP connection whose TCP_NODELAY was set first:
 * a `Deno.TlsConn` from `Deno.connectTls` cannot turn Nagle off, which costs ~40 ms on a
 * small write that follows another (measured in bench/).
 *
 * Deadlines: `Deno.connect` takes a `signal` (Deno 2.9) and drops the half-open socket
 * when it fires. `Deno.startTls` does not handshake at all; the handshake runs on the
 * first read or write, where a silent peer would hold us forever. So the handshake is
 * driven explicitly with `handshake()`, and an abort closes the connection under it.
 *
 * @module
 */

import { formatHostPort, type HostPort } from "./address.ts";
import { ConnectionClosedError } from "./errors.ts";

/** Options for {@link dial}. */
export interface DialOptions {
  /** PEM of the only CA trusted; given, the connection speaks TLS. */
  tlsCa?: string;
  /** Bounds the TCP connect and the TLS handshake together. */
  signal?: AbortSignal;
  /** A deadline in milliseconds, combined with `signal`. */
  timeoutMs?: number;
}

/** The socket options {@link tuneSocket} sets; `Deno.TcpConn` and `node:net` sockets have them. */
export interface TunableSocket {
  /** Turns Nagle's algorithm off (true) or on. */
  setNoDelay(noDelay?: boolean): unknown;
  /** Turns TCP keep-alive probes on (true) or off. */
  setKeepAlive(keepAlive?: boolean): unknown;
}

/**
 * Sets the socket options every tsunagi TCP connection wants, on both sides: no Nagle
 * delay (small frames follow each other) and TCP keep-alive, so a peer that vanished
 * without a FIN is eventually detected even where no keep-alive frames flow.
 */
export function tuneSocket(socket: TunableSocket): void {
  socket.setNoDelay(true);
  socket.setKeepAlive(true);
}

/**
 * Connects to `address`; with `tlsCa` (PEM), speaks TLS and trusts only that CA. The
 * returned connection has completed its TLS handshake. Throws
 * {@link ConnectionClosedError} when the relay cannot be reached, the handshake fails,
 * or the signal fires first (the message names the step that was cut short).
 *
 * @example
 * ```ts ignore
 * import { dial } from "./dial.ts";
 * const conn = await dial({ hostname: "relay.example", port: 7800 }, { timeoutMs: 10_000 });
 * ```
 */
export async function dial(address: HostPort, options: DialOptions = {}): Promise<Deno.Conn> {
  const where = formatHostPort(address);
  const started = performance.now();
  const timer = new AbortController();
  const timeoutMs = options.timeoutMs;
  const timeout = timeoutMs === undefined ? undefined : setTimeout(
    () => timer.abort(new DOMException("Signal timed out.", "TimeoutError")),
    timeoutMs,
  );
  const signals = [options.signal, timeoutMs === undefined ? undefined : timer.signal]
    .filter((s) => s !== undefined);
  const signal = signals.length === 0
    ? undefined
    : signals.length === 1
    ? signals[0]
    : AbortSignal.any(signals);

  /** The error for an abort during `step`. */
  const aborted = (step: string) => {
    const reason = signal?.reason;
    const isTimeout = reason instanceof DOMException && reason.name === "TimeoutError";
    const ms = timer.signal.aborted && timeoutMs !== undefined
      ? timeoutMs
      : Math.round(performance.now() - started);
    return new ConnectionClosedError(
      isTimeout
        ? `Cannot reach relay ${where}: timed out after ${ms} ms in the ${step}`
        : `Cannot reach relay ${where}: dial aborted in the ${step}`,
      { cause: reason },
    );
  };

  try {
    if (signal?.aborted) throw aborted("TCP connect");
    let tcp: Deno.TcpConn;
    try {
      tcp = await Deno.connect({ hostname: address.hostname, port: address.port, signal });
    } catch (e) {
      if (signal?.aborted) throw aborted("TCP connect");
      throw new ConnectionClosedError(`Cannot reach relay ${where}: ${messageOf(e)}`, {
        cause: e,
      });
    }
    tuneSocket(tcp);
    if (options.tlsCa === undefined) {
      if (signal?.aborted) {
        tcp.close();
        throw aborted("TCP connect");
      }
      return tcp;
    }
    return await handshake(tcp, address, options.tlsCa, signal, aborted);
  } finally {
    clearTimeout(timeout);
  }
}

/** Upgrades `tcp` to TLS and completes the handshake, or closes it. */
async function handshake(
  tcp: Deno.TcpConn,
  address: HostPort,
  tlsCa: string,
  signal: AbortSignal | undefined,
  aborted: (step: string) => ConnectionClosedError,
): Promise<Deno.TlsConn> {
  let tls: Deno.TlsConn;
  try {
    tls = await Deno.startTls(tcp, { hostname: address.hostname, caCerts: [tlsCa] });
  } catch (e) {
    tcp.close();
    throw tlsError(address, e);
  }
  // Closing the connection is the only way to cut a pending handshake short.
  const onAbort = () => tls.close();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (signal?.aborted) throw signal.reason;
    await tls.handshake();
    if (signal?.aborted) throw signal.reason;
    return tls;
  } catch (e) {
    try {
      tls.close();
    } catch {
      // Already closed by onAbort.
    }
    throw signal?.aborted ? aborted("TLS handshake") : tlsError(address, e);
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

function tlsError(address: HostPort, e: unknown): ConnectionClosedError {
  const message = messageOf(e);
  // rustls's words for a peer that answered a ClientHello with plain tsunagi frames.
  if (/InvalidContentType|corrupt message|wrong version number|unexpected eof/i.test(message)) {
    return new ConnectionClosedError(
      `Relay ${formatHostPort(address)} does not speak TLS on this port ` +
        `(it answered in plain): drop --tls-ca, or use the relay's TLS port`,
      { cause: e },
    );
  }
  return new ConnectionClosedError(
    `Cannot start TLS with relay ${formatHostPort(address)}: ${message}`,
    { cause: e },
  );
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
