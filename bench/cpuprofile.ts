/**
 * Summarises a V8 `.cpuprofile` (as written by `deno run --cpu-prof`, e.g. by relays
 * under `deno task bench --cpu-prof DIR`): the functions with the most self time and the
 * most total (inclusive) time.
 *
 * @example
 * ```sh
 * deno task bench --only setup --cpu-prof /tmp/prof
 * deno run -A bench/cpuprofile.ts /tmp/prof/CPU.*.cpuprofile
 * # only the last 30 s of each profile (e.g. the idle hold, not the login storm):
 * deno run -A bench/cpuprofile.ts --last 30000 /tmp/prof/CPU.*.cpuprofile
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";

/** The parts of a `.cpuprofile` this reads. */
interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  samples: number[];
  timeDeltas: number[];
}

/** One function's share of a profile. */
export interface HotFunction {
  /** `name (file:line)`. */
  name: string;
  /** Self time, ms. */
  selfMs: number;
  /** Time with everything it called, ms. */
  totalMs: number;
}

function label(frame: CpuProfile["nodes"][number]["callFrame"]): string {
  const file = frame.url.replace(/^file:\/\/.*?\/(relay|shared|agent|ext|bench)\//, "$1/");
  const name = frame.functionName || "(anonymous)";
  return file ? `${name} (${file}:${frame.lineNumber + 1})` : name;
}

/**
 * Self and total time per function, most self time first; only samples taken in the last
 * `lastMs` of the profile when given.
 */
export function hotFunctions(
  profile: CpuProfile,
  lastMs = Infinity,
): { totalMs: number; functions: HotFunction[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const at: number[] = [];
  let t = 0;
  for (const d of profile.timeDeltas) at.push(t += d / 1000);
  const from = t - lastMs;
  let all = 0;
  profile.samples.forEach((id, i) => {
    if (at[i] < from) return;
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    all += dt;
    const node = byId.get(id);
    if (!node) return;
    const name = label(node.callFrame);
    self.set(name, (self.get(name) ?? 0) + dt);
    // Each function on the stack once, however deep it recurses.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      const key = label(n.callFrame);
      if (seen.has(key)) continue;
      seen.add(key);
      total.set(key, (total.get(key) ?? 0) + dt);
    }
  });
  const functions = [...total.keys()].map((name) => ({
    name,
    selfMs: self.get(name) ?? 0,
    totalMs: total.get(name) ?? 0,
  }));
  functions.sort((a, b) => b.selfMs - a.selfMs);
  return { totalMs: all, functions };
}

function pct(ms: number, all: number): string {
  return `${((ms / all) * 100).toFixed(1).padStart(5)}%`;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { last: { type: "string" }, top: { type: "string" } },
    allowPositionals: true,
  });
  const lastMs = values.last ? Number(values.last) : Infinity;
  const top = values.top ? Number(values.top) : 25;
  for (const path of positionals) {
    const profile = JSON.parse(await Deno.readTextFile(path)) as CpuProfile;
    const { totalMs, functions } = hotFunctions(profile, lastMs);
    console.log(`${path}: ${totalMs.toFixed(0)} ms sampled`);
    console.log("  self time:");
    for (const f of functions.slice(0, top)) {
      console.log(`    ${pct(f.selfMs, totalMs)}  ${f.name}`);
    }
    console.log("  total time (JS functions):");
    const inclusive = functions
      .filter((f) => !f.name.startsWith("(") && f.name !== "(anonymous)")
      .sort((a, b) => b.totalMs - a.totalMs);
    for (const f of inclusive.slice(0, top)) {
      console.log(`    ${pct(f.totalMs, totalMs)}  ${f.name}`);
    }
  }
}
