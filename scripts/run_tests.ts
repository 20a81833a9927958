/**
 * `deno task test`: makes sure the servers and tools the tests run for real are
 * installed (redis-server, openssl, systemd-analyze, spin, gcc, prometheus, chromium;
 * from Debian with apt-get when missing and running as root), runs the whole suite, and prints a plain
 * `N passed, N failed` closing line.
 *
 * JSDoc `@example` blocks run too (`--doc`). Extra arguments go to `deno test` (e.g.
 * `deno task test --filter mesh`).
 *
 * @module
 */

const NEEDED: Record<string, string> = {
  "redis-server": "redis-server",
  openssl: "openssl",
  // deploy_test.ts verifies the service units with systemd-analyze.
  "systemd-analyze": "systemd",
  // mesh_model_test.ts model-checks docs/mesh_model.pml.
  spin: "spin",
  gcc: "gcc",
  // admin_test.ts checks /metrics with promtool, scrapes with prometheus and renders the
  // status page in headless chromium.
  promtool: "prometheus",
  chromium: "chromium",
};

async function has(command: string): Promise<boolean> {
  try {
    const { code } = await new Deno.Command("sh", {
      args: ["-c", `command -v ${command}`],
      stdout: "null",
    })
      .output();
    return code === 0;
  } catch {
    return false;
  }
}

async function ensureTools(): Promise<void> {
  const missing: string[] = [];
  for (const [command, pkg] of Object.entries(NEEDED)) if (!(await has(command))) missing.push(pkg);
  if (missing.length === 0) return;
  const isRoot = Deno.uid() === 0;
  if (!isRoot || !(await has("apt-get"))) {
    console.error(`test: missing ${missing.join(", ")}`);
    console.error(
      `hint: install them (Debian: sudo apt-get install -y ${missing.join(" ")}) and rerun`,
    );
    Deno.exit(2);
  }
  console.error(`test: installing ${missing.join(", ")} with apt-get`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  for (
    const args of [["update", "-qq"], [
      "install",
      "-y",
      "-qq",
      "--no-install-recommends",
      ...missing,
    ]]
  ) {
    const { code } = await new Deno.Command("apt-get", { args, env, stdout: "null" }).output();
    if (code !== 0) {
      console.error(`test: apt-get ${args[0]} failed (exit ${code})`);
      Deno.exit(2);
    }
  }
}

await ensureTools();
const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "--allow-all", "--parallel", "--doc", ...Deno.args],
  stdout: "piped",
  stderr: "inherit",
  env: { NO_COLOR: "1" },
}).spawn();
let tail = "";
const decoder = new TextDecoder();
for await (const chunk of child.stdout) {
  await Deno.stdout.write(chunk);
  tail = (tail + decoder.decode(chunk, { stream: true })).slice(-4096);
}
const { code } = await child.status;
const m = /(\d+) passed[^\d]*(?:\((\d+) steps?\)[^\d]*)?\|\s*(\d+) failed/.exec(tail) ??
  /(\d+) passed.*?(\d+) failed/.exec(tail);
const passed = m ? Number(m[1]) : 0;
const failed = m ? Number(m[m.length - 1]) : (code === 0 ? 0 : 1);
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(code === 0 && failed === 0 ? 0 : 1);
