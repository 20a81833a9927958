/**
 * What a new user reads from the agent: hints in the form they typed, a relay whose
 * Redis is down, config file mistakes, state names, a stop line, unreadable files.
 *
 * @module
 */

import assert from "node:assert/strict";
import { event, Proc, register, startAgent, startRelay, tempDir } from "./helpers.ts";
import { RedisServer, registerInRedis } from "./redis_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function agent(args: string[], options: { cwd?: string } = {}) {
  const proc = new Proc(["run", "-A", `${ROOT}agent/main.ts`, ...args], options);
  const status = await proc.wait();
  return { code: status.code, stdout: proc.stdout, stderr: proc.rawStderr.join("\n") };
}

Deno.test("agent: usage and hints name the command the user ran", async () => {
  const task = new Proc(["task", "--quiet", "agent", "frobnicate"]);
  assert.equal((await task.wait()).code, 2);
  assert.match(task.rawStderr.join("\n"), /^hint: run deno task agent --help$/m);
  const help = new Proc(["task", "--quiet", "agent", "send", "--help"]);
  assert.equal((await help.wait()).code, 0);
  assert.match(help.stdout, /^Usage: deno task agent send --to ID/m);

  const direct = await agent(["status", "--relay", "127.0.0.1:1", "--id", "x"]);
  assert.match(direct.stderr, /hint: use --password-file FILE/);
  const unknown = await agent(["frobnicate"]);
  assert.match(unknown.stderr, /^hint: run tsunagi --help$/m);
});

Deno.test("agent: a relay whose Redis is down is 'temporarily unavailable', exit 4, not a login problem", async () => {
  await using dir = await tempDir();
  await using redis = await RedisServer.start();
  const pw = await registerInRedis(redis.url(), dir.path, "pc1", "USER");
  await using relay = await startRelay(dir.path, ["--directory", redis.url()]);
  const ok = await agent(["list", "--relay", relay.address, "--id", "pc1", "--password-file", pw]);
  assert.equal(ok.code, 0, ok.stderr);
  await redis.stop();
  const r = await agent(["list", "--relay", relay.address, "--id", "pc1", "--password-file", pw]);
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /^tsunagi: Relay temporarily unavailable: /m);
  assert.match(r.stderr, /^hint: the relay's directory \(Redis\) is down; .*Retry later/m);
  assert.doesNotMatch(r.stderr, /Login refused|check --id/);
});

Deno.test("agent --config: unknown keys, broken JSON and relative paths", async () => {
  await using dir = await tempDir();
  const pw = await register(`${dir.path}/data`, "pc1", "USER");
  await using relay = await startRelay(`${dir.path}/data`);
  await Deno.mkdir(`${dir.path}/etc`);
  await Deno.copyFile(pw, `${dir.path}/etc/pc1.pw`);
  const file = `${dir.path}/etc/agent.json`;

  await Deno.writeTextFile(file, JSON.stringify({ relay: relay.address, id: "pc1", pasword: "x" }));
  const unknown = await agent(["list", "--config", file]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /agent\.json: unknown key "pasword"/);
  assert.match(unknown.stderr, /hint: known keys: relay, id, passwordFile/);

  await Deno.writeTextFile(file, '{\n  "id": "pc1",\n  "relay": [1,]\n}');
  const broken = await agent(["list", "--config", file]);
  assert.equal(broken.code, 2);
  assert.match(broken.stderr, /agent\.json:3:\d+: JSON syntax error/);

  // "pc1.pw" is next to the config file, not in the folder the agent runs in.
  await Deno.writeTextFile(
    file,
    JSON.stringify({ relay: [relay.address], id: "pc1", passwordFile: "pc1.pw" }),
  );
  const ok = await agent(["list", "--config", "etc/agent.json"], { cwd: dir.path });
  assert.equal(ok.code, 0, ok.stderr);
});

Deno.test("agent: --json prints state names; run prints a line when it stops", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path);
  await using fax = await startAgent(relay.address, "fax1", faxPw, ["--inbox", `${dir.path}/in`]);
  const common = ["--relay", relay.address, "--id", "pc1", "--password-file", pcPw];
  const status = await agent(["status", "fax1", "--json", ...common]);
  assert.equal(status.code, 0, status.stderr);
  assert.equal(JSON.parse(status.stdout).state, "online");
  const list = await agent(["list", "--all", "--json", ...common]);
  assert.deepEqual(
    JSON.parse(list.stdout).map((e: { state: string }) => e.state),
    ["online", "online"],
  );

  fax.kill("SIGTERM");
  assert.equal((await fax.wait()).code, 0);
  const stopped = await fax.waitFor(event("stopped"), "the stop line");
  assert.equal(stopped.reason, "SIGTERM");
  assert.equal(stopped.id, "fax1");
});

Deno.test("agent send: says why a file cannot be read", async () => {
  await using dir = await tempDir();
  const common = ["--relay", "127.0.0.1:1", "--id", "pc1", "--password-file", "-"];
  const cases: [string, RegExp][] = [
    ["/nope/missing.txt", /Cannot read \/nope\/missing\.txt: no such file/],
    [dir.path, /Cannot send .*: is a directory/],
  ];
  await Deno.writeTextFile(`${dir.path}/pw`, "x\n");
  common[5] = `${dir.path}/pw`;
  for (const [path, message] of cases) {
    const r = await agent(["send", "--to", "fax1", ...common, path]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
  }
});
