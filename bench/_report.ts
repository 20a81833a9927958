/**
 * The bench's results: the JSON document, the issue's targets checked against it (met,
 * missed by how much, or not available), and the markdown table. Pure.
 *
 * @module
 */

import type { BulkResult, ConcurrencyResult, DataVariant } from "./_bulk.ts";
import type { AbortsResult } from "./_aborts.ts";
import type { SessionsResult, UnauthResult } from "./_hold.ts";
import type { IdleResult } from "./_idle.ts";
import type { MeshResult } from "./_mesh.ts";
import type { MeshScaleResult, MeshScaleUnavailable } from "./_mesh_scale.ts";
import type { NatResult } from "./_nat.ts";
import type { SetupResult } from "./_setup.ts";
import type { TunnelResults } from "./tunnel.ts";
import { fmt, GiB, MiB, ratio } from "./_stats.ts";
import { atLeast, atMost, notAvailable, table, type TargetCheck } from "./_report_util.ts";
import { robustMarkdown, robustTargets } from "./_report_robust.ts";
import { meshScaleMarkdown, meshScaleTargets } from "./_report_mesh.ts";

export type { TargetCheck };

/** Where and on what the run happened. */
export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  deno: string;
  v8: string;
  fdLimit: string;
  loadAvgStart: number[];
  loadAvgEnd?: number[];
}

/** TLS vs plain, derived from the setup and bulk scenarios. */
export interface TlsSummary {
  setupP50PlainMs: number;
  setupP50TlsMs: number;
  setupP50TlsVsPlain: number;
  /** The same with the target speaking first (the relay writes ACCEPT + data back to back). */
  targetFirstP50PlainMs: number;
  targetFirstP50TlsMs: number;
  targetFirstP50TlsVsPlain: number;
  bulkPlainMibPerS: number;
  bulkTlsMibPerS: number;
  bulkTlsVsPlain: number;
  /** TLS setup p50 is ≥ 10 ms above plain: the Nagle pitfall (TlsConn without TCP_NODELAY). */
  nagleSuspected: boolean;
  note: string;
}

/** Everything a run produced. */
export interface BenchResults {
  format: 1;
  date: string;
  startedAt: string;
  durationS: number;
  mode: "full" | "quick";
  commit: string;
  dirty: boolean;
  /** `forward` + `run --expose` against two plain sockets (bench/tunnel.ts). */
  tunnel?: TunnelResults;
  machine: MachineInfo;
  relay: { mesh: boolean };
  bulk?: BulkResult;
  setup?: SetupResult;
  concurrency?: ConcurrencyResult;
  idle?: IdleResult;
  mesh?: MeshResult;
  /** The mesh at scale (bench/_mesh_scale.ts). */
  meshScale?: MeshScaleResult | MeshScaleUnavailable;
  /** Login costs (bench/_login.ts). */
  login?: import("./_login.ts").LoginResult;
  tls?: TlsSummary;
  unauth?: UnauthResult;
  sessions?: SessionsResult;
  aborts?: AbortsResult;
  nat?: NatResult;
  errors: { scenario: string; error: string }[];
  targets: TargetCheck[];
}

function variant(vs: DataVariant[] | undefined, relays: number, tls = false) {
  return vs?.find((v) => v.relays === relays && v.tls === tls);
}

/** TLS vs plain figures, when both setup and bulk ran. */
export function tlsSummary(r: BenchResults): TlsSummary | undefined {
  const find = (tls: boolean, greetFirst: boolean) =>
    r.setup?.variants.find((v) => v.relays === 1 && v.tls === tls && v.greetFirst === greetFirst)
      ?.latencyMs.p50 ?? NaN;
  const plainBulk = variant(r.bulk?.variants, 1);
  const tlsBulk = variant(r.bulk?.variants, 1, true);
  const p = find(false, false);
  const t = find(true, false);
  const pf = find(false, true);
  const tf = find(true, true);
  if (Number.isNaN(p) || Number.isNaN(t) || !plainBulk || !tlsBulk) return undefined;
  // The pitfall adds ~40 ms (a delayed ACK); 10 ms over plain cannot be noise.
  const nagle = t - p >= 10 || tf - pf >= 10;
  const worst = Math.max(t - p, Number.isNaN(tf - pf) ? -Infinity : tf - pf);
  return {
    setupP50PlainMs: p,
    setupP50TlsMs: t,
    setupP50TlsVsPlain: ratio(t, p),
    targetFirstP50PlainMs: pf,
    targetFirstP50TlsMs: tf,
    targetFirstP50TlsVsPlain: ratio(tf, pf),
    bulkPlainMibPerS: plainBulk.mibPerS,
    bulkTlsMibPerS: tlsBulk.mibPerS,
    bulkTlsVsPlain: ratio(tlsBulk.mibPerS, plainBulk.mibPerS),
    nagleSuspected: nagle,
    note: nagle
      ? `TLS setup p50 is up to ${fmt(worst, 1)} ms above plain: the Nagle/delayed-ACK ` +
        `pitfall (a TLS socket without TCP_NODELAY) is present`
      : `TLS setup p50 is within ${fmt(Math.max(0, worst), 2)} ms of plain, whoever speaks ` +
        `first: no sign of the Nagle pitfall (~40 ms)`,
  };
}

/** Checks the issue's targets against a run. */
export function checkTargets(r: BenchResults): TargetCheck[] {
  const out: TargetCheck[] = [];
  const setup1 = r.setup?.variants.find((v) => v.relays === 1 && !v.tls && !v.greetFirst);
  out.push(atMost("setup p50 ≤ 1 ms (1 relay)", setup1?.latencyMs.p50, 1, "ms"));
  out.push(atMost("setup p99 ≤ 3 ms (1 relay)", setup1?.latencyMs.p99, 3, "ms"));
  if (r.setup && setup1) {
    const seq = setup1.failed;
    const sim = r.setup.simultaneous.failed;
    const total = seq + sim;
    const setups = r.setup.count + r.setup.simultaneous.setups;
    out.push({
      target: "0 failed setups (1 relay, sequential + simultaneous)",
      measured: `${total} of ${setups} (sequential ${seq}, simultaneous ${sim})`,
      status: total === 0 ? "met" : "missed",
      detail: total === 0 ? "" : `${total} failed (${fmt((total / setups) * 100, 1)}%)`,
    });
  } else out.push(notAvailable("0 failed setups", "did not run"));
  out.push(atLeast("1-relay bulk ≥ 0.5 × direct", variant(r.bulk?.variants, 1)?.vsDirect, 0.5));
  const chain4 = variant(r.bulk?.variants, 4)?.vsDirect;
  out.push(
    r.bulk && !r.bulk.chains.available
      ? notAvailable("4-relay chain ≥ 0.35 × direct", r.bulk.chains.reason ?? "")
      : atLeast("4-relay chain ≥ 0.35 × direct", chain4, 0.35),
  );
  const conc = variant(r.concurrency?.variants, 1);
  const sessions = r.concurrency?.sessions ?? 64;
  out.push(atLeast(`${sessions}-session aggregate ≥ 0.7 × direct`, conc?.vsDirect, 0.7));
  out.push(atLeast("slowest session ≥ 0.5 × fastest", conc?.slowestVsFastest, 0.5));
  const idlePlain = r.idle?.variants.find((v) => !v.tls);
  out.push(atMost("≤ 8 KiB RSS per idle plain-TCP connection", idlePlain?.rssPerConnKiB, 8, "KiB"));
  if (!r.mesh || !r.mesh.available) {
    out.push(
      notAvailable("mesh: login visible on all 8 relays within 50 ms", r.mesh?.reason ?? ""),
    );
    out.push(notAvailable("mesh: each notice applied once per relay", r.mesh?.reason ?? ""));
  } else {
    const worst = Math.max(...r.mesh.topologies.map((t) => t.allVisibleMs.p50));
    const incomplete = r.mesh.topologies.reduce((a, t) => a + t.incomplete, 0);
    const check = atMost("mesh: login visible on all 8 relays within 50 ms (p50)", worst, 50, "ms");
    if (incomplete > 0) {
      check.status = "missed";
      check.detail = `${incomplete} rounds never converged; ${check.detail}`.trim();
    }
    out.push(check);
    const counts = r.mesh.topologies.map((t) => t.notices);
    if (counts.some((c) => c === null)) {
      out.push(notAvailable(
        "mesh: each notice applied once per relay",
        "the relays logged no notice events for the watched device",
      ));
    } else {
      const bad = counts.reduce((a, c) => a + c!.notAppliedOnce, 0);
      const updates = counts.reduce((a, c) => a + c!.updates, 0);
      out.push({
        target: "mesh: each notice applied once per relay",
        measured: `${updates} updates; ${bad} (update, relay) pairs not applied exactly once`,
        status: bad === 0 ? "met" : "missed",
        detail: bad === 0 ? "" : `${bad} pairs applied 0 or several times`,
      });
    }
  }
  out.push(...meshScaleTargets(r.meshScale));
  out.push(...robustTargets(r));
  return out;
}

// ---- markdown ---------------------------------------------------------------------------

function sizeLabel(bytes: number): string {
  return bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`;
}

/** The run as markdown: targets first, then one table per scenario. */
export function renderMarkdown(r: BenchResults): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# tsunagi bench, ${r.date} (${r.mode} run)`);
  out.push("");
  out.push(
    `Commit \`${r.commit.slice(0, 12)}\`${r.dirty ? " (with local changes to the code)" : ""}; ` +
      `Deno ${m.deno} (V8 ${m.v8}); ${m.cpus} × ${m.cpuModel}; ${m.memoryGiB} GiB; ` +
      `Linux ${m.kernel}; fd limit ${m.fdLimit}; load average ${m.loadAvgStart.join(" ")} at ` +
      `start, ${m.loadAvgEnd?.join(" ") ?? "?"} at the end; ${fmt(r.durationS, 0)} s in all. ` +
      `Relays, agents and load generators are separate processes on 127.0.0.1. The machine ` +
      `is shared: compare ratios (each against a baseline from the same run), not absolute ` +
      `figures.`,
  );
  if (r.mode === "quick") {
    out.push("");
    out.push("Quick run: small sizes for CI; the figures only show that every scenario works.");
  }
  out.push("");
  out.push("## Targets");
  out.push("");
  out.push(table(
    ["target", "measured", "status"],
    r.targets.map((t) => [t.target, t.measured, t.detail ? `${t.status}: ${t.detail}` : t.status]),
  ));
  if (r.errors.length) {
    out.push("");
    out.push("## Errors");
    out.push("");
    for (const e of r.errors) out.push(`- ${e.scenario}: ${e.error.split("\n")[0]}`);
  }
  if (r.bulk) {
    out.push("");
    out.push(
      `## 1. Bulk throughput: 1 session × ${sizeLabel(r.bulk.bytesPerTrial)}, median of ` +
        `${r.bulk.trials}`,
    );
    out.push("");
    out.push(table(
      ["route", "MiB/s", "× direct", "relay CPU s/GiB", "trials (MiB/s)"],
      r.bulk.variants.map((v) => [
        v.label,
        fmt(v.mibPerS, 1),
        fmt(v.vsDirect, 3),
        v.relays ? fmt(v.relayCpuSPerGiB, 2) : "—",
        v.trials.map((t) => fmt(t.mibPerS, 0)).join(", "),
      ]),
    ));
    if (!r.bulk.chains.available) {
      out.push("");
      out.push(`2- and 4-relay chains: ${r.bulk.chains.reason}.`);
    }
  }
  if (r.setup) {
    const s = r.setup;
    out.push("");
    out.push(
      `## 2. Session setup: ${s.count} sequential sessions per route in ${s.blocks} ` +
        `interleaved blocks (after ${s.warmup} untimed), ms`,
    );
    out.push("");
    out.push(table(
      [
        "route",
        "p50",
        "p90",
        "p99",
        "max",
        "failed",
        "p50 × baseline",
        "setups/s",
        "relay CPU µs / setup",
      ],
      [
        ...s.variants.map((v) => [
          v.label,
          fmt(v.latencyMs.p50, 3),
          fmt(v.latencyMs.p90, 3),
          fmt(v.latencyMs.p99, 3),
          fmt(v.latencyMs.max, 2),
          String(v.failed),
          v.relays ? fmt(v.p50VsBaseline, 2) : "—",
          String(v.setupsPerS),
          v.relays ? fmt(v.relayCpuUsPerSetup, 0) : "—",
        ]),
        [
          `simultaneous, 1 relay (${s.simultaneous.rounds} rounds × 2)`,
          fmt(s.simultaneous.latencyMs.p50, 3),
          fmt(s.simultaneous.latencyMs.p90, 3),
          fmt(s.simultaneous.latencyMs.p99, 3),
          fmt(s.simultaneous.latencyMs.max, 2),
          String(s.simultaneous.failed),
          "—",
          "—",
          "—",
        ],
      ],
    ));
    const failures = [
      ...s.variants.flatMap((v) => v.failures.map((f) => `${v.label}: ${f}`)),
      ...s.simultaneous.failures.map((f) => `simultaneous: ${f}`),
    ];
    if (failures.length) {
      out.push("");
      out.push("Failed setups (first messages):");
      out.push("");
      for (const f of failures) out.push(`- ${f}`);
    }
    if (!s.chains.available) {
      out.push("");
      out.push(`2-relay chain: ${s.chains.reason}.`);
    }
    if (s.blocks > 1) {
      out.push("");
      out.push("p50 / p99 per block (ms), in the order they ran:");
      out.push("");
      for (const v of s.variants) {
        out.push(
          `- ${v.label}: ${
            v.perBlockMs.map((b) => `${fmt(b.p50, 2)} / ${fmt(b.p99, 2)}`).join(", ")
          }`,
        );
      }
    }
  }
  if (r.concurrency) {
    const c = r.concurrency;
    out.push("");
    out.push(
      `## 3. Concurrency: ${c.sessions} sessions × ${sizeLabel(c.bytesPerSession)} at once, ` +
        `median of ${c.trials}`,
    );
    out.push("");
    out.push(table(
      ["route", "aggregate MiB/s", "× direct", "slowest / fastest", "relay CPU s/GiB"],
      c.variants.map((v) => [
        v.label,
        fmt(v.mibPerS, 1),
        fmt(v.vsDirect, 3),
        fmt(v.slowestVsFastest, 3),
        v.relays ? fmt(v.relayCpuSPerGiB, 2) : "—",
      ]),
    ));
  }
  if (r.idle) {
    out.push("");
    out.push(
      `## 4. Idle capacity: keep-alive every ${r.idle.keepaliveS} s, ` +
        `${r.idle.loadGenerators} load-generator processes`,
    );
    out.push("");
    out.push(table(
      [
        "transport",
        "connections",
        "RSS empty MiB",
        "RSS held MiB",
        "KiB / connection",
        "login wall s",
        "relay CPU for logins s",
        "relay CPU idle %",
        "failed / lost",
      ],
      r.idle.variants.map((v) => [
        v.label,
        `${v.connections} (${v.devices} devices)`,
        fmt(v.rssEmptyKiB / 1024, 1),
        fmt(v.rssHeldKiB / 1024, 1),
        fmt(v.rssPerConnKiB, 2),
        fmt(v.loginWallS, 1),
        fmt(v.loginCpuS, 2),
        fmt(v.holdCpuPercent, 2),
        `${v.failedLogins} / ${v.lost}`,
      ]),
    ));
  }
  if (r.mesh) {
    out.push("");
    out.push("## 5. Mesh convergence");
    out.push("");
    if (!r.mesh.available) out.push(`${r.mesh.reason}.`);
    else {
      out.push(table(
        [
          "topology",
          "login on all, p50 ms",
          "p99 ms",
          "logout on all, p50 ms",
          "incomplete",
          "per relay p50 ms",
        ],
        r.mesh.topologies.map((t) => [
          `${t.relays} relays, ${t.label} (${t.rounds} rounds)`,
          fmt(t.allVisibleMs.p50, 2),
          fmt(t.allVisibleMs.p99, 2),
          fmt(t.allOfflineMs.p50, 2),
          String(t.incomplete),
          t.perRelayVisibleP50Ms.map((x) => fmt(x, 1)).join(", "),
        ]),
      ));
      out.push("");
      out.push(table(
        [
          "topology",
          "updates",
          "notices sent per update",
          "dropped per update",
          "not applied once",
        ],
        r.mesh.topologies.map((t) =>
          t.notices
            ? [
              t.label,
              String(t.notices.updates),
              fmt(t.notices.sentPerUpdate, 2),
              fmt(t.notices.droppedPerUpdate, 2),
              String(t.notices.notAppliedOnce),
            ]
            : [t.label, "none logged", "—", "—", "—"]
        ),
      ));
    }
  }
  out.push(...meshScaleMarkdown(r.meshScale));
  if (r.tls) {
    const t = r.tls;
    out.push("");
    out.push("## 6. TLS on the relay links vs plain TCP");
    out.push("");
    out.push(table(
      ["figure", "plain", "TLS", "TLS / plain"],
      [
        [
          "setup p50, ms",
          fmt(t.setupP50PlainMs, 3),
          fmt(t.setupP50TlsMs, 3),
          fmt(t.setupP50TlsVsPlain, 2),
        ],
        [
          "setup p50, target speaks first, ms",
          fmt(t.targetFirstP50PlainMs, 3),
          fmt(t.targetFirstP50TlsMs, 3),
          fmt(t.targetFirstP50TlsVsPlain, 2),
        ],
        [
          "bulk, MiB/s",
          fmt(t.bulkPlainMibPerS, 1),
          fmt(t.bulkTlsMibPerS, 1),
          fmt(t.bulkTlsVsPlain, 2),
        ],
      ],
    ));
    const idleTls = r.idle?.variants.find((v) => v.tls);
    if (idleTls) {
      out.push("", `Idle TLS connection: ${fmt(idleTls.rssPerConnKiB, 2)} KiB RSS each.`);
    }
    out.push("");
    out.push(`${t.nagleSuspected ? "**Warning:** " : ""}${t.note}.`);
  }
  out.push(...robustMarkdown(r));
  out.push("");
  return out.join("\n");
}
