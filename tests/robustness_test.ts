import assert from "node:assert/strict";
import { FILE_SERVICE } from "../shared/protocol/constants.ts";
import { SessionReader } from "../agent/transfer.ts";
import {
  agentCommand,
  deviceFlags,
  event,
  listFiles,
  register,
  sha256File,
  startAgent,
  startRelay,
  tempDir,
} from "./helpers.ts";
import { nextNotice, rawLogin } from "./raw_device.ts";
import type { Notice } from "../agent/relay_client.ts";
import { createHash } from "node:crypto";

Deno.test("busy: a target whose only connection is in a session is refused with TargetBusy", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const pc2Pw = await register(dir.path, "pc2", "USER");
  const faxPw = await register(dir.path, "fax9", "FAX", ["FILE TX/RX"]);
  // The refusal without the relay's wait for a busy target (tested in supervisor_test.ts).
  await using relay = await startRelay(dir.path, ["--target-wait", "0"]);
  const target = await rawLogin(relay.address, "fax9", faxPw);
  const requester = await rawLogin(relay.address, "pc2", pc2Pw);
  try {
    let notice: Notice | undefined;
    const [sessionA, sessionB] = await Promise.all([
      requester.connect("fax9", FILE_SERVICE),
      nextNotice(target).then((n) => target.accept(notice = n)),
    ]);
    assert.equal(notice?.requester, "pc2");
    assert.equal(notice?.requesterType, "USER");
    assert.equal(sessionA.peer, "fax9");
    assert.equal(sessionB.peer, "pc2");
    // send retries a busy target within its --timeout, then gives up with the reason.
    const r = await agentCommand([
      "send",
      "--to",
      "fax9",
      "--timeout",
      "1s",
      ...deviceFlags(relay.address, "pc1", pcPw),
      pcPw,
    ]);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /has no idle connection.*\(TargetBusy\)/);
    // Finish the held session cleanly: both sides END, then RELEASE.
    await Promise.all([sessionA.release(), sessionB.release()]);
    // Released: the connection is idle again and takes the next request.
    const [again, back] = await Promise.all([
      requester.connect("fax9", FILE_SERVICE),
      nextNotice(target).then((n) => target.accept(n)),
    ]);
    await Promise.all([again.release(), back.release()]);
  } finally {
    target.close();
    requester.close();
  }
});

Deno.test("timeout: a target that never answers the notice gives TargetTimeout", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax9", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path, ["--answer-timeout", "300ms"]);
  const target = await rawLogin(relay.address, "fax9", faxPw);
  try {
    const send = agentCommand([
      "send",
      "--to",
      "fax9",
      ...deviceFlags(relay.address, "pc1", pcPw),
      pcPw,
    ]);
    await nextNotice(target); // ...and say nothing
    const r = await send;
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /fax9 did not answer in time \(TargetTimeout\)/);
    // The relay drops the silent connection: its answer could no longer be trusted.
    assert.equal(await target.framed.readFrame(), null);
  } finally {
    target.close();
  }
});

/** Reads a socket until EOF; returns everything it sent. */
async function drain(conn: Deno.Conn): Promise<Uint8Array> {
  const parts: number[] = [];
  const buf = new Uint8Array(4096);
  for (let i = 0; i < 10_000; i++) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) break;
    parts.push(...buf.subarray(0, n));
  }
  return new Uint8Array(parts);
}

Deno.test("garbage clients are closed without disturbing a transfer in progress", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path, ["--login-timeout", "500ms"]);
  const inbox = `${dir.path}/inbox`;
  await using _fax = await startAgent(relay.address, "fax1", faxPw, ["--inbox", inbox]);
  const sender = await rawLogin(relay.address, "pc1", pcPw);
  let sent = "";
  try {
    const session = await sender.connect("fax1", FILE_SERVICE);
    const size = 4 << 20;
    const chunk = new Uint8Array(1 << 20);
    crypto.getRandomValues(chunk.subarray(0, 65536));
    const hash = createHash("sha256");
    await session.write(
      new TextEncoder().encode(JSON.stringify({ file: "steady.bin", size }) + "\n"),
    );
    for (let i = 0; i < 2; i++) {
      hash.update(chunk);
      await session.write(chunk);
    }

    // Now the garbage, while the session is half way.
    const hostname = "127.0.0.1";
    const port = relay.port;
    {
      using random = await Deno.connect({ hostname, port });
      const junk = new Uint8Array(4096);
      crypto.getRandomValues(junk);
      junk[0] = 0x01; // looks like HELLO...
      await random.write(junk); // ...but is not
      await drain(random);
    }
    {
      using oversized = await Deno.connect({ hostname, port });
      await oversized.write(new Uint8Array([0x01, 0xff, 0xff, 0xff, 0xff]));
      const answer = await drain(oversized);
      assert.equal(answer[0], 0x12, "an ERROR frame");
      assert.equal((answer[5] << 8) | answer[6], 1, "code BadFrame");
      assert.match(new TextDecoder().decode(answer.subarray(9)), /exceeds maximum 4096/);
    }
    {
      using half = await Deno.connect({ hostname, port });
      await half.write(new Uint8Array([0x01, 0x00, 0x00, 0x00, 0x20, 0x54, 0x53]));
      await drain(half); // closed by the login timeout
    }
    await relay.proc.waitForCount(event("protocol error"), 2, "protocol errors logged");
    await relay.proc.waitFor(event("login timeout"), "login timeout for the half frame");

    for (let i = 0; i < 2; i++) {
      hash.update(chunk);
      await session.write(chunk);
    }
    const sha256 = sent = hash.digest("hex");
    await session.write(new TextEncoder().encode(JSON.stringify({ sha256 }) + "\n"));
    const receipt = JSON.parse((await new SessionReader(session).readLine())!);
    assert.equal(receipt.ok, true);
    assert.equal(receipt.sha256, sha256);
    await session.release();
  } finally {
    sender.close();
  }
  assert.deepEqual(await listFiles(inbox), ["steady.bin"]);
  assert.equal(await sha256File(`${inbox}/steady.bin`), sent, "the file on disk is the one sent");
});

Deno.test("a malformed frame from a logged-in device closes only that connection", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path);
  await using fax = await startAgent(relay.address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
  ]);
  const bad = await rawLogin(relay.address, "pc1", pcPw);
  try {
    await bad.framed.write(new Uint8Array([0x7e, 0, 0, 0, 0])); // unknown type
    await assert.rejects(bad.nextControl(), /unknown type 0x7e/);
  } finally {
    bad.close();
  }
  await writeAndSend(dir.path, relay.address, pcPw);
  assert.equal(fax.count(event("relay lost")), 0);
});

async function writeAndSend(dir: string, relay: string, pcPw: string) {
  await Deno.writeTextFile(`${dir}/note.txt`, "hello fax\n");
  const r = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...deviceFlags(relay, "pc1", pcPw),
    `${dir}/note.txt`,
  ]);
  assert.equal(r.code, 0, r.stderr);
}

Deno.test("relay restart: agents reconnect by themselves and are reachable again", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  const first = await startRelay(dir.path);
  await using fax = await startAgent(first.address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
  ]);
  first.proc.kill("SIGTERM");
  assert.equal((await first.proc.wait()).code, 0, "relay stops cleanly on SIGTERM");
  await fax.waitFor(event("relay lost"), "agent to notice");
  await using second = await startRelay(dir.path, [], first.address);
  await fax.waitForCount(event("logged in"), 2, "agent to log in again", 20_000);
  await writeAndSend(dir.path, second.address, pcPw);
  assert.deepEqual(await listFiles(`${dir.path}/inbox`), ["note.txt"]);
});

Deno.test("a client speaking another protocol version gets UnsupportedVersion and is closed", async () => {
  await using dir = await tempDir();
  await using relay = await startRelay(dir.path);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.port });
  const { encodeMessage, decodeMessage } = await import("../shared/protocol/messages.ts");
  const { FrameDecoder } = await import("../shared/protocol/frame.ts");
  await conn.write(encodeMessage({ kind: "hello", version: 99, role: 1, software: "future" }));
  const answer = new FrameDecoder().push(await drain(conn));
  assert.equal(answer.length, 1);
  const m = decodeMessage(answer[0]);
  assert.equal(m.kind, "error");
  assert.equal(m.kind === "error" && m.code, 2);
  assert.match(m.kind === "error" ? m.message : "", /version 99/);
});

Deno.test("crossing: a CONNECT on a connection the relay just noticed voids the notice; both sessions start", async () => {
  await using dir = await tempDir();
  const aPw = await register(dir.path, "dev-a", "FAX", ["FILE TX/RX"]);
  const bPw = await register(dir.path, "dev-b", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path);
  const a1 = await rawLogin(relay.address, "dev-a", aPw);
  const a2 = await rawLogin(relay.address, "dev-a", aPw);
  const b1 = await rawLogin(relay.address, "dev-b", bPw);
  const b2 = await rawLogin(relay.address, "dev-b", bPw); // newest idle: gets the first notice
  try {
    const fromA = a1.connect("dev-b", FILE_SERVICE);
    const voided = await nextNotice(b2);
    assert.equal(voided.requester, "dev-a");
    // b2 now asks for dev-a on that same connection, as if it had not seen the notice yet.
    const fromB = b2.connect("dev-a", FILE_SERVICE);
    const [sessionA, acceptedOnB1] = await Promise.all([
      fromA,
      nextNotice(b1).then((n) => b1.accept(n)), // the relay re-offered A's request to b1
    ]);
    const [sessionB, acceptedOnA2] = await Promise.all([
      fromB,
      nextNotice(a2).then((n) => a2.accept(n)),
    ]);
    assert.equal(sessionA.peer, "dev-b");
    assert.equal(sessionB.peer, "dev-a");
    await Promise.all([sessionA, acceptedOnB1, sessionB, acceptedOnA2].map((s) => s.release()));
    assert.equal(relay.proc.count(event("protocol error")), 0);
  } finally {
    for (const c of [a1, a2, b1, b2]) c.close();
  }
});
