/**
 * `deno task compile`: a native `dist/tsunagi` binary with `deno compile`.
 *
 * `deno compile` needs a `denort` runtime: it downloads one unless `DENORT_BIN` points
 * at a local copy. Without either, this explains why and exits 1 instead of hanging.
 *
 * @module
 */

const out = Deno.args[0] ?? "dist/tsunagi";
const denort = Deno.env.get("DENORT_BIN");
if (denort) {
  try {
    await Deno.stat(denort);
  } catch {
    console.error(`compile: DENORT_BIN=${denort} does not exist`);
    console.error("hint: point DENORT_BIN at a denort binary of the same version as deno");
    Deno.exit(1);
  }
}
const root = new URL("..", import.meta.url).pathname;
const child = new Deno.Command(Deno.execPath(), {
  args: [
    "compile",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--output",
    out,
    "agent/main.ts",
  ],
  cwd: root,
  stdout: "inherit",
  stderr: "piped",
}).spawn();
const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
const { code, stderr } = await child.output();
clearTimeout(timer);
if (code !== 0) {
  const text = new TextDecoder().decode(stderr);
  console.error(text.trim());
  console.error(
    denort
      ? "compile: deno compile failed with the given DENORT_BIN"
      : "compile: deno compile needs the denort runtime, which it downloads from dl.deno.land; " +
        "this machine cannot reach it.",
  );
  console.error(
    "hint: set DENORT_BIN to a local denort binary (same version as `deno --version`), " +
      "or use the single-file bundle: deno task build && deno run -A dist/tsunagi.js",
  );
  Deno.exit(1);
}
console.log(`compiled ${out}`);
