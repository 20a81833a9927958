/**
 * The admin HTTP listener: `/metrics` (Prometheus), `/healthz`, `/readyz`, the status
 * page `/` and its data `/status.json`. Served with `Deno.serve`; it reads the relay
 * only through the callbacks it is given.
 *
 * Bound to a non-loopback address it requires a bearer token: every request but the
 * health checks (load balancers often cannot send headers; they reveal nothing) and the
 * page's static shell (it holds no data; its script sends the token) must carry
 * `Authorization: Bearer TOKEN`.
 *
 * @module
 */

import { timingSafeEqual } from "node:crypto";
import { formatHostPort } from "../../shared/address.ts";
import { UsageError } from "../../shared/errors.ts";
import { Logger } from "../../shared/log.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./exposition.ts";
import { STATUS_PAGE } from "./page.ts";
import type { RelaySnapshot } from "./status.ts";

/** Where and how the admin listener serves. */
export interface AdminOptions {
  /** Address to bind (e.g. 127.0.0.1). */
  hostname: string;
  /** Port; 0 picks a free one (see {@link AdminHandle.addr}). */
  port: number;
  /** Bearer token; required when `hostname` is not a loopback address. */
  token?: string;
}

/** What the admin listener reads from the relay. */
export interface AdminSource {
  /** A fresh snapshot (counters synced). */
  snapshot(): RelaySnapshot;
  /** Null when ready; otherwise why not (`shutting down`, `directory (redis) down`). */
  notReady(): string | null;
}

/** A running admin listener. */
export interface AdminHandle {
  /** The address actually bound. */
  readonly addr: Deno.NetAddr;
  /** Resolves when the listener has stopped. */
  readonly finished: Promise<void>;
  /** Stops the listener (requests in flight finish). */
  shutdown(): Promise<void>;
}

/** Shortest accepted token, in bytes. */
export const MIN_TOKEN_BYTES = 16;

/** True for addresses only this machine can reach. */
export function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * Refuses an exposed listener without a token, and a token too short to be one.
 * Throws {@link UsageError} naming the fix.
 */
export function checkAdminOptions(options: AdminOptions): void {
  const where = formatHostPort(options);
  if (options.token === undefined && !isLoopback(options.hostname)) {
    throw new UsageError(
      `Refusing to serve --admin on non-loopback ${where} without a token: ` +
        `give --admin-token-file FILE, or bind 127.0.0.1`,
      "e.g. openssl rand -hex 32 > admin.token",
    );
  }
  if (
    options.token !== undefined && new TextEncoder().encode(options.token).length < MIN_TOKEN_BYTES
  ) {
    throw new UsageError(
      `Admin token is shorter than ${MIN_TOKEN_BYTES} bytes`,
      "e.g. openssl rand -hex 32 > admin.token",
    );
  }
}

/** Starts the admin listener; returns once it listens. */
export function startAdmin(
  options: AdminOptions,
  source: AdminSource,
  logger: Logger = Logger.silent(),
): Promise<AdminHandle> {
  checkAdminOptions(options);
  const expected = options.token === undefined
    ? null
    : new TextEncoder().encode(`Bearer ${options.token}`);
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: options.hostname,
    port: options.port,
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
    onError: (e) => {
      logger.error("admin request failed", { error: String(e) });
      return text(500, "internal error\n");
    },
  }, (request) => handle(request, source, expected, logger));
  // A bind failure rejects `finished` instead of calling onListen.
  server.finished.catch((e) => listening.reject(e));
  return listening.promise.then((addr) => ({
    addr,
    finished: server.finished,
    shutdown: () => server.shutdown(),
  }));
}

/** True for a Host header naming an IP address or localhost (with or without a port). */
export function hostAllowed(host: string): boolean {
  const name = host.startsWith("[") ? host.slice(1, host.indexOf("]")) : host.replace(/:\d+$/, "");
  return name === "localhost" || /^[0-9.]+$/.test(name) || name.includes(":");
}

function authorized(request: Request, expected: Uint8Array | null): boolean {
  if (expected === null) return true;
  const given = new TextEncoder().encode(request.headers.get("authorization") ?? "");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function handle(
  request: Request,
  source: AdminSource,
  expected: Uint8Array | null,
  logger: Logger,
): Response {
  const path = new URL(request.url).pathname;
  logger.debug("admin request", {
    method: request.method,
    path: path.slice(0, 100),
    agent: (request.headers.get("user-agent") ?? "").slice(0, 60),
  });
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("only GET\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  switch (path) {
    case "/healthz":
      return text(200, "ok\n");
    case "/readyz": {
      const why = source.notReady();
      return why === null ? text(200, "ready\n") : text(503, `not ready: ${why}\n`);
    }
    case "/":
      return new Response(STATUS_PAGE, {
        headers: {
          "content-type": "text/html; charset=utf-8",
          "cache-control": "no-store",
          // Everything is inline; nothing may be loaded from elsewhere.
          "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; " +
            "style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        },
      });
  }
  // Without a token the listener is on loopback: refuse names other than an IP address or
  // localhost, so a web page cannot reach it through DNS rebinding.
  if (expected === null && !hostAllowed(request.headers.get("host") ?? "")) {
    return text(421, "wrong Host: use the address the relay listens on\n");
  }
  if (!authorized(request, expected)) {
    return new Response("missing or wrong bearer token\n", {
      status: 401,
      headers: { "www-authenticate": 'Bearer realm="tsunagi-admin"' },
    });
  }
  switch (path) {
    case "/metrics":
      return new Response(renderMetrics(source.snapshot()), {
        headers: { "content-type": METRICS_CONTENT_TYPE, "cache-control": "no-store" },
      });
    case "/status.json":
      return new Response(JSON.stringify(source.snapshot()), {
        headers: { "content-type": "application/json", "cache-control": "no-store" },
      });
    default:
      return text(404, "not found: try /, /metrics, /healthz, /readyz, /status.json\n");
  }
}

function text(status: number, body: string): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}
