import assert from "node:assert/strict";
import { delay } from "../shared/backoff.ts";
import { FILE_SERVICE, FrameType } from "../shared/protocol/constants.ts";
import { encodeFrame } from "../shared/protocol/frame.ts";
import { encodeMessage } from "../shared/protocol/messages.ts";
import type { RelayConnection } from "../agent/relay_client.ts";
import { PARTIAL_DIR, receiveFiles } from "../agent/transfer.ts";
import { nextNotice, rawLogin } from "./raw_device.ts";
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
  // A busy moment refuses a CONNECT (TargetBusy): `send` itself retries within --timeout.
  const sendOne = async (i: number) => {
    const r = await agentCommand(["send", "--to", "fax1", ...flags, `${dir.path}/c${i}.bin`]);
    assert.equal(r.code, 0, r.stderr);
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

/** A seeded xorshift PRNG: the seed is in every failure message, to replay a run. */
function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

const TEST_SEED = Number(Deno.env.get("TSUNAGI_TEST_SEED") ?? Date.now() % 2 ** 31);

Deno.test("a sender killed mid-transfer (inside a frame) leaves no file in the inbox", async () => {
  await using dir = await tempDir();
  const { relay, fax, inbox, pcPw } = await setup(dir.path);
  await using _r = relay;
  await using _f = fax;
  const cut = 1 + prng(TEST_SEED)(65_540); // 1-4: inside the header; more: in the payload
  await using sender = new Proc([
    "run",
    "-A",
    "tests/fixtures/half_sender.ts",
    relay.address,
    "pc1",
    pcPw,
    "fax1",
    String(8 << 20),
    String(cut),
  ]);
  await sender.waitUntil(() => sender.stdout.includes("HALF"), "half the file sent");
  sender.kill("SIGKILL");
  const what = `cut ${cut} bytes into a DATA frame (TSUNAGI_TEST_SEED=${TEST_SEED})`;
  await fax.waitFor(
    event("session failed", { from: "pc1" }),
    `receiver to drop the session, ${what}`,
  );
  assert.deepEqual(await listFiles(inbox), [], what);
  assert.deepEqual(await listFiles(`${inbox}/${PARTIAL_DIR}`), [], what);
});

/** The bytes a sender would put into a session for one file, frame after frame. */
function sessionStream(size: number): { bytes: Uint8Array; frameStarts: number[] } {
  const encoder = new TextEncoder();
  const frames = [
    encodeFrame(FrameType.Data, encoder.encode(JSON.stringify({ file: "cut.bin", size }) + "\n")),
  ];
  for (let off = 0; off < size; off += 65_536) {
    frames.push(encodeFrame(FrameType.Data, new Uint8Array(Math.min(65_536, size - off)).fill(5)));
  }
  frames.push(encodeFrame(FrameType.Data, encoder.encode(JSON.stringify({ sha256: "0" }) + "\n")));
  frames.push(encodeMessage({ kind: "end", reason: 0 }));
  const frameStarts: number[] = [];
  let total = 0;
  for (const f of frames) {
    frameStarts.push(total);
    total += f.length;
  }
  const bytes = new Uint8Array(total);
  frames.forEach((f, i) => bytes.set(f, frameStarts[i]));
  return { bytes, frameStarts };
}

/** Polls `status` until the device shows no session; bounded by a deadline. */
async function waitNoSession(conn: RelayConnection, id: string, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const entry = await conn.status(id);
    if (entry !== null && entry.sessions === 0) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${id} still shows ${entry?.sessions} sessions after ${timeoutMs} ms: ${what}`,
      );
    }
    await delay(50); // poll pacing; the condition above is what the test waits on
  }
}

Deno.test("a sender cut off at random byte offsets: the receiver ends the session promptly and keeps nothing", async () => {
  await using dir = await tempDir();
  const { relay, fax, inbox, pcPw, flags } = await setup(dir.path);
  await using _r = relay;
  await using _f = fax;
  const { bytes, frameStarts } = sessionStream(200_000);
  const random = prng(TEST_SEED);
  const [header, body1, body2] = [frameStarts[0], frameStarts[1], frameStarts[2]];
  const cuts = [
    header + 1 + random(4), // inside the first frame's header
    header + 5 + random(body1 - header - 5), // inside the file header line
    body1 + 1 + random(4), // inside a DATA frame's header
    body1 + 5 + random(65_536), // inside a DATA frame's payload
    body2 + 5 + random(65_536), // deeper inside the body
    frameStarts[frameStarts.length - 2] + 1 + random(10), // inside the trailer frame
    body2, // on a frame boundary: the relay sends END(aborted)
  ];
  const observer = await rawLogin(relay.address, "pc1", pcPw);
  try {
    for (const [i, cut] of cuts.entries()) {
      const what = `cut at byte ${cut} of ${bytes.length} (TSUNAGI_TEST_SEED=${TEST_SEED})`;
      const conn = await rawLogin(relay.address, "pc1", pcPw);
      await conn.connect("fax1", FILE_SERVICE);
      await conn.framed.write(bytes.subarray(0, cut));
      conn.close();
      await fax.waitForCount(
        event("session failed", { from: "pc1" }),
        i + 1,
        `receiver to end the session, ${what}`,
        10_000,
      );
      await waitNoSession(observer, "fax1", what);
      assert.deepEqual(await listFiles(inbox), [], what);
      assert.deepEqual(await listFiles(`${inbox}/${PARTIAL_DIR}`), [], what);
    }
  } finally {
    observer.close();
  }
  // The agent is still fine: a normal send goes through.
  await writeRandomFile(`${dir.path}/after.bin`, 100_000, 3);
  const r = await agentCommand(["send", "--to", "fax1", ...flags, `${dir.path}/after.bin`]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await listFiles(inbox), ["after.bin"]);
});

Deno.test("run: stale partial files go at start; a file over --max-file-size is refused with the reason", async () => {
  await using dir = await tempDir();
  const inbox = `${dir.path}/inbox`;
  await Deno.mkdir(`${inbox}/${PARTIAL_DIR}`, { recursive: true });
  await Deno.writeTextFile(`${inbox}/${PARTIAL_DIR}/left-by-a-crash.part`, "half");
  const longAgo = new Date(Date.now() - 60 * 60_000);
  await Deno.utime(`${inbox}/${PARTIAL_DIR}/left-by-a-crash.part`, longAgo, longAgo);
  const { relay, fax, flags } = await setup(dir.path, [], ["--max-file-size", "1KiB"]);
  await using _r = relay;
  await using _f = fax;
  await fax.waitFor(event("removed stale partial files", { count: 1 }), "stale cleanup log");
  assert.deepEqual(await listFiles(`${inbox}/${PARTIAL_DIR}`), []);

  await writeRandomFile(`${dir.path}/big.bin`, 2000, 1);
  const refused = await agentCommand(["send", "--to", "fax1", ...flags, `${dir.path}/big.bin`]);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /"big\.bin" is 2000 bytes, over this device's limit of 1024 bytes/);
  await fax.waitFor(event("file refused", { from: "pc1" }), "refusal log");
  assert.deepEqual(await listFiles(inbox), []);
  assert.deepEqual(await listFiles(`${inbox}/${PARTIAL_DIR}`), []);

  await writeRandomFile(`${dir.path}/small.bin`, 1024, 2);
  const ok = await agentCommand(["send", "--to", "fax1", ...flags, `${dir.path}/small.bin`]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(await listFiles(inbox), ["small.bin"]);
});

Deno.test("send: a busy target is retried until it frees up; --timeout bounds the wait", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const holderPw = await register(dir.path, "pc2", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  // No wait at the relay: the refusal this test is about comes at once (the relay's
  // wait for a busy target has its own tests in supervisor_test.ts and core_test.ts).
  await using relay = await startRelay(dir.path, ["--target-wait", "0"]);
  const flags = deviceFlags(relay.address, "pc1", pcPw);
  // fax1 is a raw device with one connection, taken by pc2's session: fax1 is busy.
  const target = await rawLogin(relay.address, "fax1", faxPw);
  const holder = await rawLogin(relay.address, "pc2", holderPw);
  try {
    const held = holder.connect("fax1", FILE_SERVICE);
    const heldHere = await target.accept(await nextNotice(target));
    const heldThere = await held;
    await writeRandomFile(`${dir.path}/x.bin`, 5000, 1);

    const short = await agentCommand([
      "send",
      "--to",
      "fax1",
      "--timeout",
      "1s",
      ...flags,
      `${dir.path}/x.bin`,
    ]);
    assert.equal(short.code, 5, short.stderr);
    assert.match(short.stderr, /fax1 is busy \(TargetBusy\); retrying in/);
    assert.match(short.stderr, /gave up after 1 s \(--timeout\)/);

    await using sender = new Proc([
      "run",
      "-A",
      "agent/main.ts",
      "send",
      "--to",
      "fax1",
      "--timeout",
      "30s",
      ...flags,
      `${dir.path}/x.bin`,
    ]);
    await sender.waitUntil(
      () => sender.rawStderr.some((l) => /fax1 is busy \(TargetBusy\); retrying/.test(l)),
      "the sender to say what it waits for",
    );
    // pc2's session ends; fax1's connection is idle again and takes the retried request.
    await Promise.all([heldHere.release(), heldThere.release()]);
    const session = await target.accept(await nextNotice(target));
    const received = await receiveFiles(session, `${dir.path}/inbox`);
    await session.release();
    assert.equal((await sender.wait()).code, 0, sender.rawStderr.join("\n"));
    assert.equal(received.length, 1);
    assert.equal(await sha256File(received[0].path), await sha256File(`${dir.path}/x.bin`));
  } finally {
    target.close();
    holder.close();
  }
});
