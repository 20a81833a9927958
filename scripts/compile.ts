/**
 * `deno task compile [--target TRIPLE] [--out-dir DIR]`: native binaries with `deno
 * compile`, `dist/tsunagi` (the agent) and `dist/tsunagi-relay`, for this machine or
 * for `--target` (e.g. `aarch64-unknown-linux-gnu`).
 *
 * `deno compile` needs a `denort` runtime for the target: it downloads one unless
 * `DENORT_BIN` points at a local copy. Without either, this explains why and exits 1
 * instead of hanging.
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";

/** Targets `deno compile` knows. */
export const TARGETS: readonly string[] = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
];

const HELP = `Usage: deno task compile [--target TRIPLE] [--out-dir DIR]

Builds native binaries with deno compile: DIR/tsunagi (agent) and DIR/tsunagi-relay
(default DIR: dist). Binaries for another machine: --target, one of
  ${TARGETS.join("\n  ")}
(the file names then end in -TRIPLE).

deno compile needs the denort runtime of the same deno version for the target: it
downloads it from dl.deno.land, or uses DENORT_BIN=/path/to/denort. Without
internet, use the bundles instead: deno task build.`;

const BINARIES = [
  { entry: "agent/main.ts", name: "tsunagi" },
  { entry: "relay/main.ts", name: "tsunagi-relay" },
];

if (import.meta.main) Deno.exit(await main(Deno.args));

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        target: { type: "string" },
        "out-dir": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`compile: ${e instanceof Error ? e.message : e}`);
    console.error("hint: deno task compile --help");
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const target = values.target;
  if (target !== undefined && !TARGETS.includes(target)) {
    console.error(`compile: unknown --target "${target}"`);
    console.error(`hint: use one of ${TARGETS.join(", ")}`);
    return 2;
  }
  const denort = Deno.env.get("DENORT_BIN");
  if (denort) {
    try {
      await Deno.stat(denort);
    } catch {
      console.error(`compile: DENORT_BIN=${denort} does not exist`);
      console.error("hint: point DENORT_BIN at a denort binary of the same version as deno");
      return 1;
    }
  }
  const dir = values["out-dir"] ?? "dist";
  for (const { entry, name } of BINARIES) {
    const out = join(dir, target ? `${name}-${target}` : name);
    const code = await compile(entry, out, target, denort);
    if (code !== 0) return code;
    console.log(`compiled ${out}`);
  }
  return 0;
}

async function compile(
  entry: string,
  out: string,
  target: string | undefined,
  denort: string | undefined,
): Promise<number> {
  const root = new URL("..", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "compile",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      ...(target ? ["--target", target] : []),
      "--output",
      out,
      entry,
    ],
    cwd: root,
    stdout: "inherit",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const { code, stderr } = await child.output();
  clearTimeout(timer);
  if (code === 0) return 0;
  console.error(new TextDecoder().decode(stderr).trim());
  console.error(
    denort
      ? "compile: deno compile failed with the given DENORT_BIN"
      : `compile: deno compile needs the denort runtime${
        target ? ` for ${target}` : ""
      }, which it downloads from dl.deno.land; this machine cannot reach it.`,
  );
  console.error(
    "hint: set DENORT_BIN to a local denort binary (same version as `deno --version`" +
      `${target ? `, built for ${target}` : ""}), or use the single-file bundles: ` +
      "deno task build && deno run -A dist/tsunagi.js",
  );
  return 1;
}
