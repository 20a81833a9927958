/**
 * The systemd units in deploy/ pass `systemd-analyze verify` (any warning fails the
 * test) and keep the hardening the operations guide promises.
 *
 * @module
 */

import assert from "node:assert/strict";
import { tempDir } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const UNITS = ["tsunagi-relay.service", "tsunagi-agent.service"];

function hasSystemdAnalyze(): boolean {
  try {
    return new Deno.Command("systemd-analyze", { args: ["--version"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const available = hasSystemdAnalyze();
if (!available) {
  console.error("deploy_test: systemd-analyze not found (Debian: apt-get install systemd)");
}

Deno.test({
  name: "deploy/*.service pass systemd-analyze verify without a warning",
  ignore: !available,
  async fn() {
    await using dir = await tempDir();
    const paths: string[] = [];
    for (const unit of UNITS) {
      // verify checks that ExecStart's program exists: point it at this machine's deno.
      const text = (await Deno.readTextFile(`${ROOT}deploy/${unit}`))
        .replaceAll("/usr/bin/deno", Deno.execPath());
      await Deno.writeTextFile(`${dir.path}/${unit}`, text);
      paths.push(`${dir.path}/${unit}`);
    }
    const { code, stdout, stderr } = await new Deno.Command("systemd-analyze", {
      args: ["verify", "--man=no", ...paths],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    const out = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    assert.equal(code, 0, out);
    assert.equal(out.trim(), "", "systemd-analyze verify printed warnings");
  },
});

Deno.test("deploy/*.service run as a dedicated user with hardening and a restart policy", async () => {
  for (const unit of UNITS) {
    const text = await Deno.readTextFile(`${ROOT}deploy/${unit}`);
    for (
      const line of [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "KillSignal=SIGTERM",
      ]
    ) {
      assert.match(text, new RegExp(`^${line}`, "m"), `${unit} lacks ${line}`);
    }
    assert.match(text, /^StateDirectory=tsunagi-(relay|agent)$/m, unit);
    assert.match(
      text,
      /^ExecStart=\/usr\/bin\/deno run [\s\S]*?\/opt\/tsunagi\/tsunagi(-relay)?\.js/m,
    );
  }
});
