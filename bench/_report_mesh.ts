/**
 * Targets and markdown of the mesh-at-scale scenario (`bench/_mesh_scale.ts`). Pure.
 *
 * @module
 */

import type { MeshScaleMesh, MeshScaleResult, MeshScaleUnavailable } from "./_mesh_scale.ts";
import { atMost, notAvailable, table, type TargetCheck } from "./_report_util.ts";
import { fmt } from "./_stats.ts";

type Result = MeshScaleResult | MeshScaleUnavailable | undefined;

/** The mesh-at-scale targets. */
export function meshScaleTargets(r: Result): TargetCheck[] {
  const names = [
    "mesh at scale: a new relay catches up within 10 s",
    "mesh at scale: login seen on all relays, p50 ≤ 50 ms",
    "mesh at scale: copies of a notice ≤ 2 × links",
  ];
  if (!r || !r.available) {
    return names.map((n) => notAvailable(n, r?.available === false ? r.reason : "did not run"));
  }
  return r.meshes.flatMap((m) => meshTargets(m, names));
}

function meshTargets(r: MeshScaleMesh, names: string[]): TargetCheck[] {
  const size = `${r.relays} relays, ${r.registered} registered, ${r.online} online`;
  const catchUp = r.join?.catchUpS;
  const out = [
    catchUp === null || catchUp === undefined
      ? { target: names[0], measured: "—", status: "missed" as const, detail: "not caught up" }
      : atMost(`${names[0]} (${size})`, catchUp, 10, "s"),
    atMost(`${names[1]} (${r.relays} relays)`, r.visibility.allVisibleMs.p50, 50, "ms"),
    atMost(`${names[2]} (${r.relays} relays, ${r.links} links)`, r.flooding.perLink, 2, "× links"),
  ];
  if (r.visibility.incomplete > 0) {
    out[1].status = "missed";
    out[1].detail = `${r.visibility.incomplete} rounds never converged; ${out[1].detail}`.trim();
  }
  return out;
}

/** The scenario's section of the report. */
export function meshScaleMarkdown(r: Result): string[] {
  if (!r) return [];
  const out = ["", "## 5b. The mesh at scale", ""];
  if (!r.available) return [...out, `${r.reason}.`];
  for (const m of r.meshes) out.push(...meshMarkdown(m), "");
  if (r.liveness.length) {
    out.push("");
    out.push(
      "Liveness (`bench/liveness.ts`, relays in the bench process, real TCP links, no devices, " +
        "default timers):",
    );
    out.push("");
    out.push(table(
      [
        "relays",
        "links",
        "window s",
        "notices / relay / min (mean, max)",
        "PING+PONG / relay / min",
      ],
      r.liveness.map((l) => [
        String(l.relays),
        String(l.links),
        String(l.windowS),
        `${l.noticesPerRelayMin.mean}, ${l.noticesPerRelayMin.max}`,
        String(l.keepAlivesPerRelayMin),
      ]),
    ));
  }
  return out;
}

function meshMarkdown(r: MeshScaleMesh): string[] {
  const out: string[] = [`### ${r.relays} relays, ${r.registered} registrations`, ""];
  out.push(
    `${r.relays} relay processes in a random connected graph (seed ${r.seed}, ${r.links} links, ` +
      `average degree ${fmt((2 * r.links) / r.relays, 2)}), ${r.registered} registrations, ` +
      `${r.online} devices online (one connection each, ${r.onlineFailed} failed logins; ` +
      `logged in in ${fmt(r.loginWallS, 1)} s; no notice for 2 s by ${fmt(r.settledS, 1)} s ` +
      `after the first login).`,
  );
  out.push("");
  const j = r.join;
  out.push(table(["figure", "measured"], [
    [
      `a new relay (dialing ${j?.neighbors ?? "—"}) catches up: registrations in its file`,
      j ? `${fmt(j.registryS, 2)} s from spawn (listening after ${fmt(j.listenS, 2)} s)` : "—",
    ],
    [
      "... and every online device in its LIST (caught up completely)",
      j ? `${fmt(j.onlineListedS, 2)} s from spawn` : "—",
    ],
    [
      "... notices it received (applied / dropped), peak RSS, link drops",
      j ? `${j.applied} / ${j.dropped}, ${fmt(j.peakRssMiB, 1)} MiB, ${j.linkDrops}` : "—",
    ],
    [
      "setup: each relay joining the growing mesh (no device online), s",
      `p50 ${fmt(r.setupCatchUpS.p50, 2)}, max ${fmt(r.setupCatchUpS.max, 2)} ` +
      `(${r.setupCatchUpS.count} joins; ${r.setupLinkDrops} control links went down meanwhile)`,
    ],
    [
      `login seen on all relays (${r.visibility.rounds} rounds, origin taking turns)`,
      `p50 ${fmt(r.visibility.allVisibleMs.p50, 2)} ms, p99 ${
        fmt(r.visibility.allVisibleMs.p99, 2)
      } ms, max ${fmt(r.visibility.allVisibleMs.max, 2)} ms; ${r.visibility.incomplete} incomplete`,
    ],
    [
      "logout seen on all relays",
      `p50 ${fmt(r.visibility.allOfflineMs.p50, 2)} ms, p99 ${
        fmt(r.visibility.allOfflineMs.p99, 2)
      } ms`,
    ],
    [
      "copies of one notice crossing links, per update",
      `${fmt(r.flooding.receivedPerUpdate, 2)} = ${fmt(r.flooding.perLink, 3)} × links ` +
      `(${fmt(r.flooding.droppedPerUpdate, 2)} dropped as not newer; ${
        fmt(r.flooding.updates, 1)
      } updates)`,
    ],
    [
      `steady state: notices received / relay / min (${r.steady.windowS} s window)`,
      `mean ${fmt(r.steady.mean, 1)}, max ${fmt(r.steady.max, 1)}`,
    ],
    [
      "steady state: CPU of each relay process, % of one core",
      r.steady.relayCpuPercent
        ? `mean ${fmt(r.steady.relayCpuPercent.mean, 1)}, max ${
          fmt(r.steady.relayCpuPercent.max, 1)
        }`
        : "—",
    ],
  ]));
  return out;
}
