import assert from "node:assert/strict";
import { PARTIAL_DIR } from "../agent/transfer.ts";
import {
  agentCommand,
  deviceFlags,
  event,
  listFiles,
  Proc,
  register,
  sha256File,
  startAgent,
  startRelay,
  tempDir,
  writeRandomFile,
} from "./helpers.ts";

async function setup(dir: string, relayArgs: string[] = [], agentArgs: string[] = []) {
  const pcPw = await register(dir, "pc1", "USER");
  const faxPw = await register(dir, "fax1", "FAX", ["FILE TX/RX"]);
  const relay = await startRelay(dir, relayArgs);
  const inbox = `${dir}/inbox`;
  const fax = await startAgent(relay.address, "fax1", faxPw, ["--inbox", inbox, ...agentArgs]);
  return { pcPw, faxPw, relay, fax, inbox, flags: deviceFlags(relay.address, "pc1", pcPw) };
}

Deno.test("send: 0 B, 1 B, 10 MiB and 200 MiB files arrive with the same SHA-256", async () => {
  await using dir = await tempDir();
  const { relay, fax, inbox, flags } = await setup(dir.path);
  await using _r = relay;
  await using _f = fax;
  const sizes = { "empty.bin": 0, "one.bin": 1, "ten.bin": 10 << 20, "big.bin": 200 << 20 };
  for (const [name, size] of Object.entries(sizes)) {
    await writeRandomFile(`${dir.path}/${name}`, size, size + 7);
  }
  // Several files per session: the first three together, then the big one alone.
  const first = await agentCommand([
    "send",
    "--to",
    "fax1",
    "--json",
    ...flags,
    `${dir.path}/empty.bin`,
    `${dir.path}/one.bin`,
    `${dir.path}/ten.bin`,
  ]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(JSON.parse(first.stdout).length, 3);
  // A later session reuses the released connections.
  const second = await agentCommand(["send", "--to", "fax1", ...flags, `${dir.path}/big.bin`]);
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /sent big\.bin \(200\.0 MiB\) to fax1/);
  assert.deepEqual(await listFiles(inbox), Object.keys(sizes).sort());
  for (const name of Object.keys(sizes)) {
    assert.equal(
      await sha256File(`${inbox}/${name}`),
      await sha256File(`${dir.path}/${name}`),
      name,
    );
  }
  assert.deepEqual(await listFiles(`${inbox}/${PARTIAL_DIR}`), []);
  assert.equal(relay.proc.count(event("session ended")), 2);
});

Deno.test("send: a name already in the inbox gets a numbered name, never overwritten", async () => {
  await using dir = await tempDir();
  const { relay, fax, inbox, flags } = await setup(dir.path);
  await using _r = relay;
  await using _f = fax;
  await writeRandomFile(`${dir.path}/doc.txt`, 1000, 1);
  for (let i = 0; i < 2; i++) {
    const r = await agentCommand(["send", "--to", "fax1", ...flags, `${dir.path}/doc.txt`]);
    assert.equal(r.code, 0, r.stderr);
  }
  assert.deepEqual(await listFiles(inbox), ["doc (1).txt", "doc.txt"]);
});

Deno.test("send: 50 concurrent sends to one FAX agent all arrive intact", async () => {
  await using dir = await tempDir();
  const { relay, fax, inbox, flags } = await setup(dir.path, [], ["--idle", "4"]);
  await using _r = relay;
  await using _f = fax;
  const expected = new Map<string, string>();
  for (let i = 0; i < 50; i++) {
    const path = `${dir.path}/c${i}.bin`;
    await writeRandomFile(path, 100_000 + i * 1000, i + 1);
    expected.set(`c${i}.bin`, await sha256File(path));
  }
  // One process sending all 50 at once would not be "concurrent sessions", so run 50
  // processes; the FAX agent keeps spare idle connections and dials more as they go busy.
  // A busy moment may refuse a send (TargetBusy, exit 5): the sender retries, bounded.
  const sendOne = async (i: number) => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const r = await agentCommand(["send", "--to", "fax1", ...flags, `${dir.path}/c${i}.bin`]);
      if (r.code === 0) return attempt;
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /TargetBusy/);
      // Wait for the agent to log something (a session ending frees a connection).
      const seen = fax.lines.length;
      await fax.waitUntil(() => fax.lines.length > seen, "agent activity", 5000).catch(() => {});
    }
    throw new Error(`send ${i} kept failing`);
  };
  await Promise.all(Array.from({ length: 50 }, (_, i) => sendOne(i)));
  const got = await listFiles(inbox);
  assert.equal(got.length, 50);
  for (const [name, sha] of expected) assert.equal(await sha256File(`${inbox}/${name}`), sha, name);
});

Deno.test("policy: a FAX agent with --accept-from refuses other senders", async () => {
  await using dir = await tempDir();
  const { relay, fax, inbox, flags } = await setup(dir.path, [], ["--accept-from", "someone-else"]);
  await using _r = relay;
  await using _f = fax;
  await writeRandomFile(`${dir.path}/x.bin`, 10, 1);
  const r = await agentCommand(["send", "--to", "fax1", ...flags, `${dir.path}/x.bin`]);
  assert.equal(r.code, 5, r.stderr);
  assert.match(
    r.stderr,
    /refused the connection: fax1 does not accept connections from pc1 \(TargetRejected\)/,
  );
  await fax.waitFor(event("session rejected", { from: "pc1" }), "rejection log");
  assert.deepEqual(await listFiles(inbox), []);
});

Deno.test("send: a device without FILE TX/RX, an unknown ID and an offline device are refused clearly", async () => {
  await using dir = await tempDir();
  const { relay, fax, flags } = await setup(dir.path);
  await using _r = relay;
  await using _f = fax;
  const userPw = await register(dir.path, "pc2", "USER");
  await register(dir.path, "fax2", "FAX", ["FILE TX/RX"]);
  await using _pc2 = await startAgent(relay.address, "pc2", userPw, ["--inbox", `${dir.path}/pc2`]);
  await writeRandomFile(`${dir.path}/x.bin`, 10, 1);
  const cases: [string, RegExp][] = [
    ["pc2", /does not receive files: it lacks the FILE TX\/RX attribute \(ServiceUnsupported\)/],
    ["nobody", /Device "nobody" is not registered \(UnknownTarget\)/],
    ["fax2", /Device "fax2" is not logged in \(TargetOffline\)/],
  ];
  for (const [to, message] of cases) {
    const r = await agentCommand(["send", "--to", to, ...flags, `${dir.path}/x.bin`]);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, message);
  }
});

Deno.test("a sender killed mid-transfer leaves no file in the inbox", async () => {
  await using dir = await tempDir();
  const { relay, fax, inbox, pcPw } = await setup(dir.path);
  await using _r = relay;
  await using _f = fax;
  await using sender = new Proc([
    "run",
    "-A",
    "tests/fixtures/half_sender.ts",
    relay.address,
    "pc1",
    pcPw,
    "fax1",
    String(8 << 20),
  ]);
  await sender.waitUntil(() => sender.stdout.includes("HALF"), "half the file sent");
  sender.kill("SIGKILL");
  await fax.waitFor(event("session failed", { from: "pc1" }), "receiver to drop the session");
  assert.deepEqual(await listFiles(inbox), []);
  assert.deepEqual(await listFiles(`${inbox}/${PARTIAL_DIR}`), []);
  await relay.proc.waitFor(event("session aborted", { device: "pc1" }), "relay abort log");
});
