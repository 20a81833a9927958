import assert from "node:assert/strict";
import { DeviceState, FILE_SERVICE } from "../shared/protocol/constants.ts";
import {
  agentCommand,
  deviceFlags,
  event,
  listFiles,
  type LogLine,
  pollUntil,
  register,
  type RelayProc,
  sha256File,
  startAgent,
  startMesh,
  startRelay,
  tempDir,
  waitPresence,
  waitRegistration,
  writeRandomFile,
} from "./helpers.ts";
import { nextNotice, rawLogin } from "./raw_device.ts";

const ONLINE = DeviceState.Online;
const OFFLINE = DeviceState.Offline;
/** `list --json` names states; the expectations here use their wire numbers. */
const STATE_NUMBERS: Record<string, number> = {
  online: ONLINE,
  offline: OFFLINE,
  unreachable: DeviceState.Unreachable,
};

/** The directory as relay `r` shows it, for devices `ids`, via a `list --all` as `viewer`. */
async function view(r: RelayProc, viewerPw: string, ids: string[]) {
  const out = await agentCommand([
    "list",
    "--all",
    "--json",
    ...deviceFlags(r.address, "viewer", viewerPw),
  ]);
  assert.equal(out.code, 0, out.stderr);
  const entries = JSON.parse(out.stdout) as { id: string; state: string; relay: string }[];
  return Object.fromEntries(
    entries.filter((e) => ids.includes(e.id)).map((e) => [
      e.id,
      `${STATE_NUMBERS[e.state] ?? e.state}@${e.relay}`,
    ]),
  );
}

/** Polls (bounded by a deadline) until every relay shows `expected` for `ids`. */
async function converge(relays: RelayProc[], viewerPw: string, expected: Record<string, string>) {
  const ids = Object.keys(expected);
  let last: Record<string, string>[] = [];
  try {
    await pollUntil(
      async () => {
        last = await Promise.all(relays.map((r) => view(r, viewerPw, ids)));
        return last.every((v) => JSON.stringify(v) === JSON.stringify(expected)) || undefined;
      },
      "the relays to converge",
      { timeoutMs: 30_000, intervalMs: 100 },
    );
  } catch {
    assert.deepEqual(last, relays.map(() => expected), "relays did not converge");
  }
}

function noticeLines(r: RelayProc, pred: (l: LogLine) => boolean) {
  return r.proc.lines.filter((l) => l.event === "notice" && pred(l));
}

Deno.test("mesh Fig. 5: notices flood once per relay, duplicates are dropped, a file crosses 2 hops", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const pcPw = await register(r0, "pc1", "USER");
  const faxPw = await register(r0, "fax1", "FAX", ["FILE TX/RX"]);
  const viewerPw = await register(r0, "viewer", "USER");
  // Fig. 5: 51-52, 52-53, 52-54, 53-54 (here r0-r1, r1-r2, r1-r3, r2-r3).
  await using relays = await startMesh(dir.path, 4, [[0, 1], [1, 2], [1, 3], [2, 3]]);
  const [r51, r52, r53, r54] = relays;
  for (const r of [r52, r53, r54]) {
    for (const id of ["pc1", "fax1", "viewer"]) await waitRegistration(r, id);
  }
  await using _fax = await startAgent(r54.address, "fax1", faxPw, ["--inbox", `${dir.path}/inbox`]);
  await using _pc = await startAgent(r51.address, "pc1", pcPw, ["--inbox", `${dir.path}/pc-inbox`]);
  for (const r of relays) {
    await waitPresence(r === r51 ? r52 : r, "pc1", "r0", ONLINE);
  }
  await converge(relays, viewerPw, { fax1: `${ONLINE}@r3`, pc1: `${ONLINE}@r0` });

  // Take pc1's first login notice at r52 and count it everywhere.
  const first =
    noticeLines(r52, (l) => l.key === "pc1" && l.origin === "r0" && l.action === "applied")[0];
  const v = first.v;
  const count = (r: RelayProc, action: string) =>
    noticeLines(r, (l) => l.key === "pc1" && l.origin === "r0" && l.v === v && l.action === action)
      .length;
  assert.deepEqual(
    [r52, r53, r54].map((r) => count(r, "applied")),
    [1, 1, 1],
    "each relay applies the notice exactly once",
  );
  assert.equal(count(r51, "applied"), 0, "the origin does not re-apply its own notice");
  // Loop freedom (Fig. 5): a relay forwards a notice only when it applied it, to every
  // neighbour but the sender, so no relay receives more flooded copies of one notice
  // than it has neighbours, and whatever arrives beyond the first is dropped. (The
  // exact number of duplicates depends on timing: a queued copy is superseded by the
  // device's next change, and a link that comes up late brings state by catch-up.)
  const degree = [1, 3, 2, 2];
  relays.forEach((r, i) => {
    const received = noticeLines(r, (l) =>
      l.key === "pc1" && l.origin === "r0" && l.v === v && l.via === "flood").length;
    assert.ok(received <= degree[i], `relay ${i} received ${received} flooded copies`);
  });

  await writeRandomFile(`${dir.path}/page.tif`, 3 << 20, 5);
  const sent = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...deviceFlags(r51.address, "pc1", pcPw),
    `${dir.path}/page.tif`,
  ]);
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(
    await sha256File(`${dir.path}/inbox/page.tif`),
    await sha256File(`${dir.path}/page.tif`),
  );
  await r51.proc.waitFor(event("session forwarded", { via: "r1" }), "51 to forward via 52");
  await r52.proc.waitFor(event("session forwarded", { via: "r3" }), "52 to forward to 54");
});

Deno.test("mesh: a request for a logged-out device fails at the first relay without crossing the mesh", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const pcPw = await register(r0, "pc1", "USER");
  await register(r0, "fax1", "FAX", ["FILE TX/RX"]);
  await using relays = await startMesh(dir.path, 2, [[0, 1]]);
  await waitRegistration(relays[1], "fax1");
  const r = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...deviceFlags(relays[0].address, "pc1", pcPw),
    pcPw,
  ]);
  assert.equal(r.code, 5);
  assert.match(r.stderr, /not logged in \(TargetOffline\)/);
  assert.equal(relays[0].proc.count(event("data link dialed")), 0);
  assert.equal(relays[1].proc.count(event("relay link accepted", { purpose: "data" })), 0);
});

Deno.test("mesh: a line of 5 relays (4 hops) carries a 100 MiB file intact", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const pcPw = await register(r0, "pc1", "USER");
  const faxPw = await register(r0, "fax1", "FAX", ["FILE TX/RX"]);
  await using relays = await startMesh(dir.path, 5, [[0, 1], [1, 2], [2, 3], [3, 4]]);
  await waitRegistration(relays[4], "fax1");
  await using _fax = await startAgent(relays[4].address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
  ]);
  await waitPresence(relays[1], "fax1", "r4", ONLINE);
  await waitPresence(relays[0], "fax1", "r4", ONLINE);
  await writeRandomFile(`${dir.path}/big.bin`, 100 << 20, 11);
  const r = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...deviceFlags(relays[0].address, "pc1", pcPw),
    `${dir.path}/big.bin`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    await sha256File(`${dir.path}/inbox/big.bin`),
    await sha256File(`${dir.path}/big.bin`),
  );
  for (let i = 0; i < 4; i++) {
    await relays[i].proc.waitFor(event("session forwarded", { via: `r${i + 1}` }), `hop ${i}`);
  }
});

Deno.test("mesh: relays 1 hour ahead and 1 hour behind lose and revert no update", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const pcPw = await register(r0, "pc1", "USER");
  const faxPw = await register(r0, "fax1", "FAX", ["FILE TX/RX"]);
  const viewerPw = await register(r0, "viewer", "USER");
  const hour = 3_600_000;
  const offsets = [hour, 0, -hour];
  await using relays = await startMesh(
    dir.path,
    3,
    [[0, 1], [1, 2]],
    (i) => [`--clock-offset-ms=${offsets[i]}`],
  );
  const [ahead, , behind] = relays;
  for (const r of relays.slice(1)) {
    for (const id of ["pc1", "fax1", "viewer"]) await waitRegistration(r, id);
  }

  // fax1 logs in on the relay that is ahead, then moves to the one behind.
  const first = await startAgent(ahead.address, "fax1", faxPw, ["--inbox", `${dir.path}/inbox`]);
  await waitPresence(behind, "fax1", "r0", ONLINE);
  await first[Symbol.asyncDispose]();
  await waitPresence(behind, "fax1", "r0", OFFLINE);
  await using _second = await startAgent(behind.address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
  ]);
  await waitPresence(ahead, "fax1", "r2", ONLINE);
  await converge(relays, viewerPw, { fax1: `${ONLINE}@r2` });

  // A password change made on the relay behind wins over the older one made ahead.
  await Deno.writeTextFile(`${dir.path}/new.pw`, "fresh-password\n");
  const { registryMain } = await import("../relay/registry/main.ts");
  const code = await registryMain(
    [
      "passwd",
      "pc1",
      "--password-file",
      `${dir.path}/new.pw`,
      "--data",
      `${dir.path}/r2`,
    ],
    { stdout: () => {}, stderr: () => {} },
  );
  assert.equal(code, 0);
  await ahead.proc.waitFor(
    (l) =>
      l.event === "notice" && l.t === "reg" && l.key === "pc1" && l.origin === "r2" &&
      l.action === "applied",
    "the password change to reach the relay ahead",
  );
  const old = await agentCommand(["list", ...deviceFlags(ahead.address, "pc1", pcPw)]);
  assert.equal(old.code, 3, "the old password is refused everywhere");
  const fresh = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...deviceFlags(ahead.address, "pc1", `${dir.path}/new.pw`),
    pcPw,
  ]);
  assert.equal(fresh.code, 0, fresh.stderr);
});

Deno.test("mesh: after a partition heals every relay holds the same, newest table", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const aPw = await register(r0, "dev-a", "FAX", ["FILE TX/RX"]);
  const cPw = await register(r0, "dev-c", "FAX", ["FILE TX/RX"]);
  const viewerPw = await register(r0, "viewer", "USER");
  await using relays = await startMesh(dir.path, 3, [[0, 1], [1, 2]]);
  const [a, b, c] = relays;
  for (const r of [b, c]) {
    for (const id of ["dev-a", "dev-c", "viewer"]) await waitRegistration(r, id);
  }
  // Partition: the middle relay goes away; a and c cannot see each other.
  b.proc.kill("SIGKILL");
  await b.proc.wait();
  await a.proc.waitFor(event("neighbour down", { relay: "r1" }), "a to lose b");
  await c.proc.waitFor(event("neighbour down", { relay: "r1" }), "c to lose b");
  // Changes on both sides: a device logs in on each; a new registration on a's side.
  await using _da = await startAgent(a.address, "dev-a", aPw, ["--inbox", `${dir.path}/ia`]);
  await using _dc = await startAgent(c.address, "dev-c", cPw, ["--inbox", `${dir.path}/ic`]);
  await register(r0, "late", "PRINTER");
  // Heal: b comes back on its old address (c redials it), same data folder, new epoch.
  const healed = await startRelay(`${dir.path}/r1`, [
    "--name",
    "r1",
    "--mesh-secret-file",
    `${dir.path}/mesh.secret`,
    "--mesh-heartbeat",
    "300ms",
    "--mesh-timeout",
    "2s",
    "--peer",
    a.address,
  ], b.address);
  relays[1] = healed;
  await waitPresence(healed, "dev-a", "r0", ONLINE);
  await waitRegistration(c, "late");
  await converge([a, healed, c], viewerPw, {
    "dev-a": `${ONLINE}@r0`,
    "dev-c": `${ONLINE}@r2`,
    late: `${OFFLINE}@`,
  });
});

Deno.test("mesh: a frozen relay is unreachable within --mesh-timeout; steady links flood no liveness notices", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const faxPw = await register(r0, "fax1", "FAX", ["FILE TX/RX"]);
  const viewerPw = await register(r0, "viewer", "USER");
  // A line r0 - r1 - r2; pings every 300 ms, --mesh-timeout 2s, records refreshed every 5 min.
  await using relays = await startMesh(dir.path, 3, [[0, 1], [1, 2]]);
  const [a, b, c] = relays;
  for (const id of ["fax1", "viewer"]) await waitRegistration(c, id);
  await using _fax = await startAgent(c.address, "fax1", faxPw, ["--inbox", `${dir.path}/in`]);
  await waitPresence(a, "fax1", "r2", ONLINE);
  await converge([a, b], viewerPw, { fax1: `${ONLINE}@r2` });
  // From here on, relay records reach r0 only when a link changes.
  const relayNotices = () => noticeLines(a, (l) => l.t === "relay").length;
  const before = relayNotices();

  // SIGSTOP keeps the TCP connections open: only the link pings can tell.
  const frozenAt = performance.now();
  c.proc.kill("SIGSTOP");
  try {
    await b.proc.waitFor(event("neighbour silent: link closed", { relay: "r2" }), "r1 to drop r2");
    const detectedMs = performance.now() - frozenAt;
    assert.ok(detectedMs <= 2000 + 500, `r1 noticed within --mesh-timeout: ${detectedMs} ms`);
    await converge([a, b], viewerPw, { fax1: `${DeviceState.Unreachable}@r2` });
    // One changed record (r1's, without r2) in a window of more than 6 pings; the old
    // heartbeat would have brought r0 at least 10 relay notices by now.
    const during = noticeLines(a, (l) => l.t === "relay").slice(before);
    assert.deepEqual(
      during.map((l) => `${l.origin}:${l.action}`),
      ["r1:applied"],
      "relay notices at r0 while r2 froze",
    );
  } finally {
    c.proc.kill("SIGCONT");
  }
  // Thawed, r2 redials r1 and shows online again everywhere.
  await converge([a, b], viewerPw, { fax1: `${ONLINE}@r2` });
  // r1 and r2 announce the link back (r2 perhaps also its own view of the cut first).
  assert.ok(
    relayNotices() - before <= 4,
    `relay notices after the thaw: ${relayNotices() - before}`,
  );
});

Deno.test("mesh: killing a relay mid-session fails it cleanly at both ends; devices fail over", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const pcPw = await register(r0, "pc1", "USER");
  const faxPw = await register(r0, "fax1", "FAX", ["FILE TX/RX"]);
  const viewerPw = await register(r0, "viewer", "USER");
  await using relays = await startMesh(dir.path, 3, [[0, 1], [1, 2], [0, 2]]);
  const [a, b, c] = relays;
  for (const r of [b, c]) for (const id of ["pc1", "fax1", "viewer"]) await waitRegistration(r, id);
  const inbox = `${dir.path}/inbox`;
  await using fax = await startAgent([b.address, c.address], "fax1", faxPw, ["--inbox", inbox]);
  await waitPresence(a, "fax1", "r1", ONLINE);

  const sender = await rawLogin(a.address, "pc1", pcPw);
  try {
    const session = await sender.connect("fax1", FILE_SERVICE);
    await session.write(
      new TextEncoder().encode(JSON.stringify({ file: "cut.bin", size: 8 << 20 }) + "\n"),
    );
    await session.write(new Uint8Array(1 << 20));
    await fax.waitFor(event("session accepted", { from: "pc1" }), "the session to reach the FAX");
    b.proc.kill("SIGKILL");
    // The sender's side ends with an aborted END (or the link error), never a hang.
    await assert.rejects(
      (async () => {
        for (let i = 0; i < 1000; i++) if ((await session.read()) === null) return;
      })(),
      /aborted|closed/i,
    );
  } finally {
    sender.close();
  }
  await fax.waitFor(event("session failed", { from: "pc1" }), "the FAX side to fail cleanly");
  assert.deepEqual(await listFiles(inbox), []);
  // The FAX fails over to the next relay and is reachable again; the directory agrees.
  await fax.waitForCount(event("logged in"), 2, "fail-over login", 30_000);
  await converge([a, c], viewerPw, { fax1: `${ONLINE}@r2` });
  const r = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...deviceFlags(a.address, "pc1", pcPw),
    pcPw,
  ]);
  assert.equal(r.code, 0, r.stderr);
});

Deno.test("mesh: a frozen receiver in one cross-relay session does not slow another between the same relays", async () => {
  await using dir = await tempDir();
  const r0 = `${dir.path}/r0`;
  const pcPw = await register(r0, "pc1", "USER");
  const pc2Pw = await register(r0, "pc2", "USER");
  const faxPw = await register(r0, "fax1", "FAX", ["FILE TX/RX"]);
  const frozenPw = await register(r0, "frozen", "FAX", ["FILE TX/RX"]);
  await using relays = await startMesh(dir.path, 2, [[0, 1]]);
  const [a, b] = relays;
  for (const id of ["pc1", "pc2", "fax1", "frozen"]) await waitRegistration(b, id);
  await using _fax = await startAgent(b.address, "fax1", faxPw, ["--inbox", `${dir.path}/inbox`]);
  const frozen = await rawLogin(b.address, "frozen", frozenPw);
  await waitPresence(a, "frozen", "r1", ONLINE);
  await waitPresence(a, "fax1", "r1", ONLINE);
  const stuckSender = await rawLogin(a.address, "pc2", pc2Pw);
  let written = 0;
  let pump: Promise<void> = Promise.resolve();
  try {
    const [session] = await Promise.all([
      stuckSender.connect("frozen", FILE_SERVICE),
      nextNotice(frozen).then((n) => frozen.accept(n)), // ...and never read
    ]);
    const chunk = new Uint8Array(1 << 20);
    pump = (async () => {
      for (let i = 0; i < 256; i++) {
        await session.write(chunk);
        written += chunk.length;
      }
    })().catch(() => {});
    await writeRandomFile(`${dir.path}/other.bin`, 32 << 20, 4);
    const r = await agentCommand([
      "send",
      "--to",
      "fax1",
      ...deviceFlags(a.address, "pc1", pcPw),
      `${dir.path}/other.bin`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      await sha256File(`${dir.path}/inbox/other.bin`),
      await sha256File(`${dir.path}/other.bin`),
    );
    assert.ok(written < 256 << 20, `the frozen session is still stalled (${written} bytes in)`);
  } finally {
    stuckSender.close();
    frozen.close();
    await pump;
  }
});

Deno.test("mesh: a relay without the mesh secret cannot link", async () => {
  await using dir = await tempDir();
  await using relays = await startMesh(dir.path, 1, []);
  await Deno.writeTextFile(`${dir.path}/wrong.secret`, "not-the-secret-not-the-secret!!\n");
  await using intruder = await startRelay(`${dir.path}/x`, [
    "--name",
    "intruder",
    "--mesh-secret-file",
    `${dir.path}/wrong.secret`,
    "--peer",
    relays[0].address,
  ]);
  await relays[0].proc.waitFor(event("relay link refused", { relay: "intruder" }), "refusal");
  assert.equal(relays[0].proc.count(event("neighbour up")), 0);
  assert.equal(intruder.proc.count(event("neighbour up")), 0);
});
