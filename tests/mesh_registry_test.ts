/**
 * An administrator's `registry passwd` / `registry remove` on one relay's data folder is
 * never reverted by a peer's older copy: not when it is made while that relay is stopped,
 * and not when the relays restart in turn after it (each relay persists what the mesh knew
 * of each registration in `<data>/mesh-registry.json`). Real relay and agent processes.
 */

import assert from "node:assert/strict";
import { registryMain } from "../relay/registry/main.ts";
import {
  agentCommand,
  deviceFlags,
  event,
  type LogLine,
  meshRelayFlags,
  pollUntil,
  register,
  type RelayProc,
  startMesh,
  startRelay,
  tempDir,
  waitRegistration,
} from "./helpers.ts";

/** Runs `deno task registry ARGS` in this process; asserts it succeeded. */
async function registry(...args: string[]): Promise<void> {
  const err: string[] = [];
  const code = await registryMain(args, { stdout: () => {}, stderr: (s) => err.push(s) });
  assert.equal(code, 0, `registry ${args.join(" ")}: ${err.join("")}`);
}

/** Stops a relay the way an operator does (SIGTERM) and waits for it to exit. */
async function stop(r: RelayProc): Promise<void> {
  r.proc.kill("SIGTERM");
  await r.proc.wait();
}

/** Starts relay `rN` of the mesh in `root` again, on `address`, dialing `peers`. */
function restart(root: string, name: string, address: string, peers: string[] = []) {
  return startRelay(`${root}/${name}`, meshRelayFlags(root, name, peers), address);
}

/** True when `id` logs in at `r` with the password in `pwFile` (a one-shot `list`). */
async function logsIn(r: RelayProc, id: string, pwFile: string): Promise<boolean> {
  const out = await agentCommand(["list", ...deviceFlags(r.address, id, pwFile)]);
  return out.code === 0;
}

/** A registration notice for `id` from `origin` that `r` applied. */
function regApplied(id: string, origin: string) {
  return (l: LogLine) =>
    l.event === "notice" && l.t === "reg" && l.key === id && l.origin === origin &&
    l.action === "applied";
}

/** The persisted mesh version of `id` in data folder `dir`, once `check` accepts it. */
function persisted(dir: string, id: string, check: (v: unknown[] | undefined) => boolean) {
  return pollUntil(async () => {
    try {
      const v = JSON.parse(await Deno.readTextFile(`${dir}/mesh-registry.json`)).regs[id];
      return check(v) ? v : undefined;
    } catch {
      return undefined;
    }
  }, `${dir}/mesh-registry.json to record ${id}`);
}

Deno.test("mesh registry: a password changed while the relay was stopped wins over the peer's copy", async () => {
  await using dir = await tempDir();
  const r0Dir = `${dir.path}/r0`;
  const oldPw = await register(r0Dir, "fax1", "FAX", ["FILE TX/RX"], "old-password");
  await using relays = await startMesh(dir.path, 2, [[0, 1]]);
  const [r0, r1] = relays;
  await waitRegistration(r1, "fax1");

  await stop(r0);
  await r1.proc.waitFor(event("neighbour down", { relay: "r0" }), "r1 to lose r0");
  const newPw = `${dir.path}/new.pw`;
  await Deno.writeTextFile(newPw, "new-password\n");
  await registry("passwd", "fax1", "--password-file", newPw, "--data", r0Dir);

  relays[0] = await restart(dir.path, "r0", r0.address);
  // r1 redials r0; the edit reaches it with a counter above the copy it holds.
  await r1.proc.waitFor(
    (l) => regApplied("fax1", "r0")(l) && Number(l.v) > 1,
    "r1 to learn the new password",
    30_000,
  );
  for (const r of [relays[0], r1]) {
    assert.equal(await logsIn(r, "fax1", newPw), true, `${r.name}: the new password logs in`);
    assert.equal(await logsIn(r, "fax1", oldPw), false, `${r.name}: the old one is refused`);
  }
  assert.equal(
    relays[0].proc.count(regApplied("fax1", "r1")),
    0,
    "r0 took no older copy from r1",
  );
});

Deno.test("mesh registry: a removal made while the peer is stopped survives restarts in turn", async () => {
  await using dir = await tempDir();
  const r0Dir = `${dir.path}/r0`;
  const pcPw = await register(r0Dir, "pc1", "USER");
  await using relays = await startMesh(dir.path, 2, [[0, 1]]);
  const [r0, r1] = relays;
  await waitRegistration(r1, "pc1");

  await stop(r1);
  await registry("remove", "pc1", "--data", r0Dir);
  // r0's poll floods (to nobody) and records the tombstone.
  await persisted(r0Dir, "pc1", (v) => v?.[2] === null);
  await stop(r0);
  relays[0] = await restart(dir.path, "r0", r0.address);
  relays[1] = await restart(dir.path, "r1", r1.address, [relays[0].address]);
  await relays[1].proc.waitFor(
    (l) => regApplied("pc1", "r0")(l) && Number(l.v) > 1,
    "r1 to learn the removal",
    30_000,
  );
  await persisted(`${dir.path}/r1`, "pc1", (v) => v?.[2] === null);
  for (const r of relays) {
    assert.equal(await logsIn(r, "pc1", pcPw), false, `${r.name}: pc1 stays removed`);
    const file = JSON.parse(await Deno.readTextFile(`${dir.path}/${r.name}/registry.json`));
    assert.ok(!file.devices.some((d: { id: string }) => d.id === "pc1"), `${r.name}'s file`);
  }
});

Deno.test("mesh registry: a password change and a concurrent attributes edit on another relay both survive", async () => {
  await using dir = await tempDir();
  const r0Dir = `${dir.path}/r0`, r1Dir = `${dir.path}/r1`;
  const oldPw = await register(r0Dir, "fax1", "FAX", ["FILE TX/RX"], "old-password");
  await using relays = await startMesh(dir.path, 2, [[0, 1]]);
  const [r0, r1] = relays;
  await waitRegistration(r1, "fax1");
  await stop(r1);
  // Both edits are made at counter 2, neither seeing the other: passwd on r0 (running),
  // set on r1 (stopped; it originates its edit when it starts). r1's name is greater: its
  // edit wins the tie, and r0, whose edit lost, merges the two.
  const newPw = `${dir.path}/new.pw`;
  await Deno.writeTextFile(newPw, "new-password\n");
  await registry("passwd", "fax1", "--password-file", newPw, "--data", r0Dir);
  await persisted(r0Dir, "fax1", (v) => v?.[0] === 2);
  await registry("set", "fax1", "--attr", "FILE TX/RX", "--attr", "PRINT", "--data", r1Dir);
  relays[1] = await restart(dir.path, "r1", r1.address, [r0.address]);
  for (const r of relays) {
    await pollUntil(
      async () => (await logsIn(r, "fax1", newPw)) || undefined,
      `the new password to log in at ${r.name}`,
      { intervalMs: 200 },
    );
    assert.equal(await logsIn(r, "fax1", oldPw), false, `${r.name}: the old one is refused`);
    await pollUntil(async () => {
      const file = JSON.parse(await Deno.readTextFile(`${dir.path}/${r.name}/registry.json`));
      const fax1 = file.devices.find((d: { id: string }) => d.id === "fax1");
      return fax1?.attributes.includes("PRINT") || undefined;
    }, `${r.name}'s file to hold the attributes edit`);
  }
  assert.equal(r0.proc.count(event("concurrent registry edits merged", { device: "fax1" })), 1);
});
