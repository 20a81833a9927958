import assert from "node:assert/strict";
import { RelayError } from "../shared/errors.ts";
import { ErrorCode } from "../shared/protocol/constants.ts";
import {
  agentCommand,
  deviceFlags,
  event,
  register,
  startAgent,
  startRelay,
  tempDir,
} from "./helpers.ts";
import { rawLogin } from "./raw_device.ts";
import { FrameDecoder } from "../shared/protocol/frame.ts";
import { decodeMessage } from "../shared/protocol/messages.ts";

Deno.test("login: a registered device is accepted, unregistered and wrong-password logins are refused", async () => {
  await using dir = await tempDir();
  const pw = await register(dir.path, "pc1", "USER");
  await Deno.writeTextFile(`${dir.path}/wrong.pw`, "not-the-password\n");
  await using relay = await startRelay(dir.path);

  const ok = await agentCommand(["list", ...deviceFlags(relay.address, "pc1", pw)]);
  assert.equal(ok.code, 0, ok.stderr);

  const unregistered = await agentCommand(["list", ...deviceFlags(relay.address, "ghost", pw)]);
  assert.equal(unregistered.code, 3, unregistered.stderr);
  assert.match(unregistered.stderr, /Login refused: Unknown device or wrong password/);

  const wrong = await agentCommand([
    "list",
    ...deviceFlags(relay.address, "pc1", `${dir.path}/wrong.pw`),
  ]);
  assert.equal(wrong.code, 3, wrong.stderr);
  await relay.proc.waitFor(
    event("login refused", { device: "ghost", reason: "unregistered" }),
    "refusal log",
  );
  await relay.proc.waitFor(
    event("login refused", { device: "pc1", reason: "wrong password" }),
    "refusal log",
  );
});

Deno.test("login: repeated failures for one ID are throttled, even with the right password", async () => {
  await using dir = await tempDir();
  const pw = await register(dir.path, "pc1", "USER");
  await Deno.writeTextFile(`${dir.path}/wrong.pw`, "nope\n");
  await using relay = await startRelay(dir.path);
  for (let i = 0; i < 5; i++) {
    await assert.rejects(
      rawLogin(relay.address, "pc1", `${dir.path}/wrong.pw`),
      (e: unknown) => e instanceof RelayError && e.code === ErrorCode.AuthFailed,
    );
  }
  await assert.rejects(
    rawLogin(relay.address, "pc1", pw),
    (e: unknown) => e instanceof RelayError && e.code === ErrorCode.Throttled,
  );
});

Deno.test("keep-alive: a silent device is logged out and its connection closed", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const mutePw = await register(dir.path, "mute", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path, ["--keepalive", "200ms"]);
  const mute = await rawLogin(relay.address, "mute", mutePw);
  try {
    // Never ping: the relay must close us with KeepaliveTimeout, then EOF.
    await assert.rejects(
      mute.nextControl(),
      (e: unknown) => e instanceof RelayError && e.code === ErrorCode.KeepaliveTimeout,
    );
  } finally {
    mute.close();
  }
  await relay.proc.waitFor(event("keep-alive missed", { device: "mute" }), "keep-alive timeout");
  const status = await agentCommand([
    "status",
    "mute",
    "--json",
    ...deviceFlags(relay.address, "pc1", pcPw),
  ]);
  assert.equal(status.code, 0, status.stderr);
  assert.equal(JSON.parse(status.stdout).state, "offline");
});

Deno.test("keep-alive: a pinging agent stays logged in across many timeout periods", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path, ["--keepalive", "100ms"]);
  await using fax = await startAgent(relay.address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
  ]);
  const deadline = Date.now() + 1500;
  const status = async () =>
    JSON.parse(
      (await agentCommand(["status", "fax1", "--json", ...deviceFlags(relay.address, "pc1", pcPw)]))
        .stdout,
    );
  // Poll the directory a bounded number of times across ~1.5 s (15 keep-alive periods).
  for (let i = 0; i < 100 && Date.now() < deadline; i++) {
    assert.equal((await status()).state, "online");
  }
  assert.equal(relay.proc.count(event("keep-alive missed", { device: "fax1" })), 0);
  assert.equal(fax.count(event("logged in")), 1);
});

Deno.test("login timeout: a connection that never logs in is closed", async () => {
  await using dir = await tempDir();
  await using relay = await startRelay(dir.path, ["--login-timeout", "300ms"]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.port });
  const decoder = new FrameDecoder();
  const frames = [];
  const buf = new Uint8Array(1024);
  for (let i = 0; i < 100; i++) {
    const n = await conn.read(buf);
    if (n === null) break;
    frames.push(...decoder.push(buf.slice(0, n)));
  }
  assert.equal(frames.length, 1, "one ERROR frame precedes the close");
  const m = decodeMessage(frames[0]);
  assert.equal(m.kind === "error" && m.code, ErrorCode.LoginTimeout, JSON.stringify(m));
  await relay.proc.waitFor(event("login timeout"), "login timeout log");
});

Deno.test("directory: list and status show type, attributes, state and connections", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await register(dir.path, "printer1", "PRINTER");
  await using relay = await startRelay(dir.path);
  await using _fax = await startAgent(relay.address, "fax1", faxPw, [
    "--idle",
    "3",
    "--inbox",
    `${dir.path}/inbox`,
  ]);
  // Wait until all three idle connections are in.
  const flags = deviceFlags(relay.address, "pc1", pcPw);
  let entry;
  for (let i = 0; i < 50; i++) {
    entry = JSON.parse((await agentCommand(["status", "fax1", "--json", ...flags])).stdout);
    if (entry.idle === 3) break;
  }
  assert.equal(entry.idle, 3);
  assert.equal(entry.type, "FAX");
  assert.deepEqual(entry.attributes, ["FILE TX/RX"]);
  assert.deepEqual(entry.services, ["file"], "what `tsunagi run` declared");
  assert.equal(entry.state, "online");
  assert.equal(entry.relay, relay.name);

  const online = JSON.parse((await agentCommand(["list", "--json", ...flags])).stdout);
  assert.deepEqual(online.map((e: { id: string }) => e.id), ["fax1", "pc1"]);
  const all = JSON.parse((await agentCommand(["list", "--all", "--json", ...flags])).stdout);
  assert.deepEqual(all.map((e: { id: string; state: string }) => [e.id, e.state]), [
    ["fax1", "online"],
    ["pc1", "online"],
    ["printer1", "offline"],
  ]);
  const table = await agentCommand(["list", "--all", ...flags]);
  assert.match(table.stdout, /^ID\s+TYPE\s+ATTRIBUTES\s+SERVICES\s+STATE/m);
  assert.match(table.stdout, /fax1\s+FAX\s+FILE TX\/RX\s+file\s+online/);
  assert.match(table.stdout, /printer1\s+PRINTER\s+-\s+-\s+offline/);

  const unknown = await agentCommand(["status", "nobody", ...flags]);
  assert.equal(unknown.code, 5);
  assert.match(unknown.stdout, /nobody: not registered/);
});

Deno.test("directory: a listing larger than one frame arrives whole (3,000 devices)", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  // Bulk-register by writing the registry file directly, reusing pc1's hash.
  const file = JSON.parse(await Deno.readTextFile(`${dir.path}/registry.json`));
  const hash = file.devices[0].passwordHash;
  for (let i = 0; i < 3000; i++) {
    file.devices.push({
      id: `printer-${String(i).padStart(4, "0")}`,
      type: "PRINTER",
      attributes: ["PRINT", "SCAN"],
      passwordHash: hash,
      updatedAt: 0,
    });
  }
  await Deno.writeTextFile(`${dir.path}/registry.json`, JSON.stringify(file));
  await using relay = await startRelay(dir.path);
  const all = await agentCommand([
    "list",
    "--all",
    "--json",
    ...deviceFlags(relay.address, "pc1", pcPw),
  ]);
  assert.equal(all.code, 0, all.stderr);
  const entries = JSON.parse(all.stdout);
  assert.equal(entries.length, 3001);
  assert.equal(entries.at(-1).id, "printer-2999");
});
