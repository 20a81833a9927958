/**
 * `/metrics`: a {@link RelaySnapshot} in the Prometheus text exposition format (0.0.4).
 * Every metric has HELP and TYPE lines, the `tsunagi_` prefix and a base unit (bytes,
 * seconds); counters end in `_total`. Label values are escaped as the format requires.
 *
 * @module
 */

import type { RelaySnapshot } from "./status.ts";

/** Content type of the text exposition format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Record<string, string>;

/** Builds exposition text one metric family at a time. */
class Exposition {
  readonly #lines: string[] = [];

  family(name: string, type: "counter" | "gauge", help: string, samples: [Labels, number][]) {
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
      const suffix = pairs.length > 0 ? `{${pairs.join(",")}}` : "";
      this.#lines.push(`${name}${suffix} ${formatValue(value)}`);
    }
  }

  text(): string {
    return this.#lines.join("\n") + "\n";
  }
}

/** Escapes a label value: backslash, double quote and newline. */
export function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function byKey(record: Record<string, number>, label: string): [Labels, number][] {
  return Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => [{ [label]: k }, v]);
}

/**
 * Renders the snapshot as exposition text.
 *
 * @example
 * ```ts
 * import { RelayMetrics } from "./metrics.ts";
 * import { takeSnapshot } from "./status.ts";
 * import { renderMetrics } from "./exposition.ts";
 * const snapshot = takeSnapshot({
 *   name: "r1", address: "127.0.0.1:7800", shuttingDown: false, devices: [], conns: [],
 *   directory: { backend: "embedded", up: true }, topology: null,
 *   metrics: new RelayMetrics(), now: Date.now(),
 * });
 * console.assert(renderMetrics(snapshot).includes("tsunagi_devices_online 0\n"));
 * ```
 */
export function renderMetrics(s: RelaySnapshot): string {
  const out = new Exposition();
  const t = s.totals;
  out.family("tsunagi_relay_info", "gauge", "Relay name and listener address (always 1).", [
    [{ name: s.name, address: s.address }, 1],
  ]);
  out.family(
    "tsunagi_start_time_seconds",
    "gauge",
    "Start time of the relay process since the Unix epoch.",
    [[{}, s.startedAt / 1000]],
  );
  out.family("tsunagi_shutting_down", "gauge", "1 while the relay shuts down.", [
    [{}, s.state === "running" ? 0 : 1],
  ]);
  out.family("tsunagi_devices_online", "gauge", "Devices logged in on this relay.", [
    [{}, s.devices.length],
  ]);
  out.family(
    "tsunagi_devices",
    "gauge",
    "Devices logged in on this relay by activity (in session, idle, busy = no idle connection).",
    (["in session", "idle", "busy"] as const).map((a) => [
      { activity: a },
      s.devices.filter((d) => d.activity === a).length,
    ]),
  );
  out.family(
    "tsunagi_idle_connections",
    "gauge",
    "Device connections waiting for a connection-request notice.",
    [[{}, s.connections.idle]],
  );
  out.family(
    "tsunagi_active_connections",
    "gauge",
    "Device connections connecting, noticed, in a session or ending.",
    [[{}, s.connections.active]],
  );
  out.family(
    "tsunagi_unauthenticated_connections",
    "gauge",
    "Accepted connections that have not logged in yet.",
    [[{}, s.connections.unauthenticated]],
  );
  out.family("tsunagi_link_connections", "gauge", "Connections from other relays (links).", [
    [{}, s.connections.links],
  ]);
  out.family("tsunagi_sessions", "gauge", "Sessions running through this relay.", [
    [{}, s.sessions.length],
  ]);
  out.family(
    "tsunagi_connections_accepted_total",
    "counter",
    "Connections accepted by the listener.",
    [[{}, t.connectionsAccepted]],
  );
  out.family(
    "tsunagi_relayed_bytes_total",
    "counter",
    "Session bytes forwarded by this relay, both directions.",
    [[{}, t.relayedBytes]],
  );
  out.family(
    "tsunagi_session_setups_total",
    "counter",
    "Connection requests answered by this relay, by result (ok or the REJECT code).",
    byKey(t.setups, "result"),
  );
  out.family(
    "tsunagi_refusals_total",
    "counter",
    "Error codes sent to peers (login refusals, rejects, errors), by code name.",
    byKey(t.refusals, "reason"),
  );
  out.family(
    "tsunagi_logins_total",
    "counter",
    "Device logins (one per connection), by result (ok or the refusal code).",
    byKey(t.logins, "result"),
  );
  out.family(
    "tsunagi_directory_up",
    "gauge",
    "1 when the directory backend can answer lookups and logins.",
    [[{ backend: s.directory.backend }, s.directory.up ? 1 : 0]],
  );
  if (s.mesh !== null) {
    out.family(
      "tsunagi_mesh_link_up",
      "gauge",
      "This relay's mesh control links: 1 up, 0 a configured peer it cannot reach.",
      s.mesh.links.map((l) => [{ relay: l.relay, address: l.address }, l.up ? 1 : 0]),
    );
    out.family(
      "tsunagi_mesh_relays",
      "gauge",
      "Relays with a record in the mesh, by whether they were heard from in time.",
      [
        [{ state: "alive" }, s.mesh.relays.filter((r) => r.alive).length],
        [{ state: "unreachable" }, s.mesh.relays.filter((r) => !r.alive).length],
      ],
    );
    const notices = s.mesh.notices;
    if (notices !== undefined) {
      out.family(
        "tsunagi_mesh_notices_total",
        "counter",
        "Update notices received from neighbours: applied (newer), dropped (not newer), refused.",
        [
          [{ action: "applied" }, notices.applied],
          [{ action: "dropped" }, notices.dropped],
          [{ action: "refused" }, notices.refused],
        ],
      );
    }
  }
  out.family(
    "tsunagi_process_resident_memory_bytes",
    "gauge",
    "Resident set size of the relay process.",
    [[{}, s.memory.rss]],
  );
  out.family("tsunagi_process_heap_used_bytes", "gauge", "V8 heap in use.", [
    [{}, s.memory.heapUsed],
  ]);
  out.family("tsunagi_process_heap_total_bytes", "gauge", "V8 heap reserved.", [
    [{}, s.memory.heapTotal],
  ]);
  out.family(
    "tsunagi_process_external_memory_bytes",
    "gauge",
    "Memory of JavaScript objects' native buffers outside the V8 heap.",
    [[{}, s.memory.external]],
  );
  return out.text();
}
