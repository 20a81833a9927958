/**
 * `deno task build [--out FILE]`: bundles the agent into one file, `dist/tsunagi.js`,
 * runnable with `deno run -A dist/tsunagi.js ...`.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Bundles `agent/main.ts` into `out`; throws with deno's output on failure. */
export async function buildAgent(out: string): Promise<void> {
  const root = new URL("..", import.meta.url).pathname;
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform", "deno", "--output", out, "agent/main.ts"],
    cwd: root,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    throw new Error(`deno bundle failed (exit ${code}):\n${new TextDecoder().decode(stderr)}`);
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { out: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log("Usage: deno task build [--out FILE]   (default dist/tsunagi.js)");
    Deno.exit(0);
  }
  const out = values.out ?? "dist/tsunagi.js";
  await buildAgent(out);
  const size = (await Deno.stat(out)).size;
  console.log(
    `built ${out} (${(size / 1024).toFixed(0)} KiB): run it with deno run -A ${out} --help`,
  );
}
