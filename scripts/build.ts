/**
 * `deno task build [--out-dir DIR]`: bundles the agent and the relay into one file each,
 * `dist/tsunagi.js` and `dist/tsunagi-relay.js`, runnable with `deno run -A FILE ...`.
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";

/** What `deno task build` bundles: entry point and output file name. */
export const BUNDLES: readonly { entry: string; file: string; what: string }[] = [
  { entry: "agent/main.ts", file: "tsunagi.js", what: "agent" },
  { entry: "relay/main.ts", file: "tsunagi-relay.js", what: "relay" },
];

/** Bundles `entry` (relative to the repository root) into `out`; throws with deno's output on failure. */
export async function bundle(entry: string, out: string): Promise<void> {
  const root = new URL("..", import.meta.url).pathname;
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform", "deno", "--output", out, entry],
    cwd: root,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    throw new Error(`deno bundle failed (exit ${code}):\n${new TextDecoder().decode(stderr)}`);
  }
}

/** Bundles the agent into `out` (kept for callers of the agent-only build). */
export async function buildAgent(out: string): Promise<void> {
  await bundle("agent/main.ts", out);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { "out-dir": { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(
      "Usage: deno task build [--out-dir DIR]   (default dist/)\n\n" +
        "Bundles the agent into DIR/tsunagi.js and the relay into DIR/tsunagi-relay.js;\n" +
        "run them with deno run -A DIR/tsunagi.js --help (needs only deno, no repository).",
    );
    Deno.exit(0);
  }
  const dir = values["out-dir"] ?? "dist";
  for (const { entry, file, what } of BUNDLES) {
    const out = join(dir, file);
    await bundle(entry, out);
    const size = (await Deno.stat(out)).size;
    console.log(
      `built ${what} ${out} (${(size / 1024).toFixed(0)} KiB): deno run -A ${out} --help`,
    );
  }
}
