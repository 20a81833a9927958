/**
 * What a new operator reads from the relay: the config file, help, warnings for a
 * missing or refused mesh secret, a port in use, and the bundled relay.
 *
 * @module
 */

import assert from "node:assert/strict";
import { event, Proc, register, startRelay, tempDir, writeMeshSecret } from "./helpers.ts";
import { RedisServer } from "./redis_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function relayExit(args: string[], cwd = ROOT) {
  const proc = new Proc(["run", "-A", `${ROOT}relay/main.ts`, ...args], { cwd });
  const status = await proc.wait();
  return { code: status.code, stdout: proc.stdout, stderr: proc.rawStderr.join("\n") };
}

Deno.test("relay --config: the documented example runs, flags override it, paths resolve from its folder", async () => {
  await using dir = await tempDir();
  const doc = await Deno.readTextFile(`${ROOT}docs/operations.md`);
  const example = /<!-- relay-config-example -->\s*```json\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(example, "docs/operations.md lost its relay config example");
  await Deno.mkdir(`${dir.path}/etc`);
  await Deno.writeTextFile(`${dir.path}/etc/relay.json`, example);
  await register(`${dir.path}/etc/data`, "pc1", "USER");
  // Started from another folder: "data": "data" must mean etc/data.
  const proc = new Proc([
    "run",
    "-A",
    `${ROOT}relay/main.ts`,
    "--config",
    "etc/relay.json",
    "--listen",
    "127.0.0.1:0",
  ], { cwd: dir.path });
  await using _ = proc;
  const line = await proc.waitFor(event("listening"), "relay from the example config");
  assert.equal(line.name, JSON.parse(example).name);
  assert.match(String(line.address), /^127\.0\.0\.1:\d+$/, "--listen beats the file");
  const list = new Proc([
    "run",
    "-A",
    `${ROOT}agent/main.ts`,
    "list",
    "--relay",
    String(line.address),
    "--id",
    "pc1",
    "--password-file",
    `${dir.path}/etc/data/pc1.pw`,
  ]);
  assert.equal((await list.wait()).code, 0, list.rawStderr.join("\n"));
});

Deno.test("relay --config: an unknown key, a wrong type and broken JSON are named", async () => {
  await using dir = await tempDir();
  const cases: [string, RegExp][] = [
    ['{"listen": "127.0.0.1:0", "mesh-secret": "x"}', /relay\.json: unknown key "mesh-secret"/],
    ['{"peer": 7801}', /key "peer" must be a string or an array of strings/],
    ['{\n  "listen": "127.0.0.1:0"\n  "name": "r1"\n}', /relay\.json:3:3: JSON syntax error/],
  ];
  for (const [text, message] of cases) {
    await Deno.writeTextFile(`${dir.path}/relay.json`, text);
    const r = await relayExit(["--config", `${dir.path}/relay.json`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /^hint: /m);
  }
  const missing = await relayExit(["--config", `${dir.path}/nope.json`]);
  assert.match(missing.stderr, /Cannot read config file ".*nope\.json": no such file/);
});

Deno.test("relay --help groups device, mesh, Redis and logging options under their own headings", async () => {
  const r = await relayExit(["--help"]);
  assert.equal(r.code, 0);
  const at = (s: string) => r.stdout.indexOf(s);
  assert.ok(at("Devices:") < at("--keepalive") && at("--keepalive") < at("Relay mesh"));
  assert.ok(at("Shared database") < at("Logging:") && at("Logging:") < at("--log-format"));
  assert.ok(at("--config FILE") > 0);
});

Deno.test("relay: a port in use is named in the error", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const address = `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  await using dir = await tempDir();
  const r = await relayExit(["--listen", address, "--data", dir.path]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`Cannot listen on ${address}: address already in use`));
});

Deno.test("relay: --directory without --mesh-secret-file warns that relay links are off", async () => {
  await using redis = await RedisServer.start();
  await using dir = await tempDir();
  await using relay = await startRelay(dir.path, ["--directory", redis.url()]);
  const warning = await relay.proc.waitFor(
    event("no --mesh-secret-file: relay links are off"),
    "the warning",
  );
  assert.equal(warning.level, "warn");
});

Deno.test("relay: the dialling relay logs a warning naming the peer when its mesh secret is refused", async () => {
  await using dir = await tempDir();
  const secret = await writeMeshSecret(dir.path);
  await Deno.writeTextFile(`${dir.path}/other.secret`, "ffffffffffffffffffffffffffffffff\n");
  await using r1 = await startRelay(`${dir.path}/r1`, [
    "--name",
    "r1",
    "--mesh-secret-file",
    secret,
  ]);
  await using r2 = await startRelay(`${dir.path}/r2`, [
    "--name",
    "r2",
    "--mesh-secret-file",
    `${dir.path}/other.secret`,
    "--peer",
    r1.address,
  ]);
  const line = await r2.proc.waitFor(event("peer refused our mesh secret"), "r2's warning");
  assert.equal(line.level, "warn");
  assert.equal(line.peer, r1.address);
  await r1.proc.waitFor(event("relay link refused"), "r1's warning");
  // Retries keep failing, but the warning is not repeated for each.
  assert.equal(r2.proc.count(event("peer refused our mesh secret")), 1);
});

Deno.test("deno task build: the bundled relay starts and serves", async () => {
  await using dir = await tempDir();
  const build = new Proc(["run", "-A", `${ROOT}scripts/build.ts`, "--out-dir", dir.path]);
  assert.equal((await build.wait(120_000)).code, 0, build.rawStderr.join("\n"));
  assert.match(build.stdout, /built relay .*tsunagi-relay\.js/);
  await register(`${dir.path}/data`, "pc1", "USER");
  await using relay = new Proc([
    "run",
    "-A",
    `${dir.path}/tsunagi-relay.js`,
    "--listen",
    "127.0.0.1:0",
    "--data",
    `${dir.path}/data`,
    "--log-format",
    "json",
  ], { cwd: dir.path });
  const line = await relay.waitFor(event("listening"), "the bundled relay");
  const list = new Proc([
    "run",
    "-A",
    `${dir.path}/tsunagi.js`,
    "list",
    "--json",
    "--relay",
    String(line.address),
    "--id",
    "pc1",
    "--password-file",
    `${dir.path}/data/pc1.pw`,
  ]);
  assert.equal((await list.wait()).code, 0, list.rawStderr.join("\n"));
  assert.equal(JSON.parse(list.stdout)[0].state, "online");
});

Deno.test("deno task certs --help explains the files and options", async () => {
  const p = new Proc(["run", "-A", `${ROOT}scripts/certs.ts`, "--help"]);
  assert.equal((await p.wait()).code, 0);
  assert.match(p.stdout, /--host IP_OR_NAME/);
  assert.match(p.stdout, /ca\.pem, ca\.key/);
  assert.ok(p.stdout.split("\n").length > 10);
});

Deno.test("relay: a registry still holding version-1 hashes is named at start, with the fix", async () => {
  await using dir = await tempDir();
  const { hashPassword } = await import("../relay/registry/password.ts");
  const old = {
    id: "old",
    type: "FAX",
    attributes: [],
    passwordHash: await hashPassword("pw", { cost: 1024 }),
    updatedAt: 1,
  };
  await Deno.writeTextFile(
    `${dir.path}/registry.json`,
    JSON.stringify({ version: 1, devices: [old] }),
  );
  await using relay = await startRelay(dir.path);
  await relay.proc.waitFor(
    event("registry not migrated", { devices: 1 }),
    "the start-up warning",
  );
});
