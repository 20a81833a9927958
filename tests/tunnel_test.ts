/**
 * Tunnels end to end: real relay, `tsunagi run --expose` and `tsunagi forward` processes,
 * unmodified TCP clients and servers (curl, Deno's HTTP server, plain sockets) on
 * loopback.
 */

import assert from "node:assert/strict";
import net from "node:net";
import { writeAll } from "../shared/framed_conn.ts";
import {
  event,
  Proc,
  register,
  sha256File,
  startRelay,
  tempDir,
  writeRandomFile,
} from "./helpers.ts";
import {
  answerThenSink,
  assertUploadFailsAfterKill,
  curl,
  deadPort,
  halfCloseExchange,
  halfCloseServer,
  httpServer,
  startForward,
  timeToClose,
  world,
} from "./tunnel_helpers.ts";

Deno.test("forward + expose: curl GET, keep-alive, 200 MiB up and down by SHA-256, 64 parallel", async () => {
  await using http = httpServer();
  await using w = await world([`http=127.0.0.1:${http.addr.port}`], [["dev1", "http"]]);
  const base = `http://127.0.0.1:${w.ports[0]}`;

  const get = await curl(["-sS", "--max-time", "20", `${base}/hi`]);
  assert.equal(get.code, 0, get.stderr);
  assert.equal(get.stdout, "hello /hi\n");

  // Keep-alive: 50 requests on one TCP connection (one session).
  const urls = Array.from({ length: 50 }, (_, i) => `${base}/k${i}`);
  const sessionsBefore = w.agent.count(event("session accepted"));
  const keep = await curl(["-sS", "--max-time", "30", ...urls]);
  assert.equal(keep.code, 0, keep.stderr);
  assert.equal(keep.stdout, urls.map((_, i) => `hello /k${i}\n`).join(""));
  assert.equal(w.agent.count(event("session accepted")) - sessionsBefore, 1, "one session");
  // By default the bytes stay in node:net sockets, which can reset a tunnel cut midway.
  const closed = await w.forward.waitFor(event("tunnel closed"), "a tunnel to close");
  assert.equal(closed.sockets, "node", JSON.stringify(closed));

  // Upload: the server hashes the body; compare with the file's hash.
  const file = `${w.dir}/up.bin`;
  await writeRandomFile(file, 200 * 1024 * 1024, 7);
  const up = await curl([
    "-sS",
    "--max-time",
    "120",
    "-H",
    "Expect:",
    "--data-binary",
    `@${file}`,
    `${base}/upload`,
  ]);
  assert.equal(up.code, 0, up.stderr);
  assert.equal(up.stdout, `${200 * 1024 * 1024} ${await sha256File(file)}\n`);

  // Download: 64 MiB through the tunnel and straight from the server, same hash.
  const size = 200 * 1024 * 1024;
  const via = `${w.dir}/via.bin`;
  const direct = `${w.dir}/direct.bin`;
  const down = await curl(["-sS", "--max-time", "120", "-o", via, `${base}/blob/${size}`]);
  assert.equal(down.code, 0, down.stderr);
  const ref = await curl(["-sS", "-o", direct, `http://127.0.0.1:${http.addr.port}/blob/${size}`]);
  assert.equal(ref.code, 0, ref.stderr);
  assert.equal(await sha256File(via), await sha256File(direct));
  assert.equal((await Deno.stat(via)).size, size);

  // 64 parallel connections against a device with the default 2 idle connections.
  const many = Array.from({ length: 64 }, (_, i) => `${base}/p${i}`);
  const par = await curl([
    "-sS",
    "--max-time",
    "60",
    "--parallel",
    "--parallel-immediate",
    "--parallel-max",
    "64",
    "-w",
    "%{http_code}\\n",
    ...many.flatMap((u) => ["-o", "/dev/null", u]),
  ]);
  assert.equal(par.code, 0, par.stderr);
  const codes = par.stdout.trim().split("\n");
  assert.equal(codes.length, 64);
  assert.ok(codes.every((c) => c === "200"), par.stdout);
  assert.equal(w.forward.count(event("tunnel refused")), 0);
});

Deno.test("tunnel: half-close (client sends, shuts its write side, reads the answer) and server-first", async () => {
  await using halfServer = halfCloseServer();
  // Server-first: a banner before the client says anything, then echo.
  using bannerServer = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const banner = (async () => {
    for await (const conn of bannerServer) {
      await writeAll(conn, new TextEncoder().encode("220 ready\r\n"));
      const buf = new Uint8Array(1024);
      for (let r = await conn.read(buf); r !== null; r = await conn.read(buf)) {
        await writeAll(conn, buf.subarray(0, r));
      }
      conn.close();
    }
  })().catch(() => {});
  {
    await using w = await world([
      `half=127.0.0.1:${halfServer.port}`,
      `banner=127.0.0.1:${bannerServer.addr.port}`,
    ], [["dev1", "half"], ["dev1", "banner"]]);

    const payload = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7) & 0xff);
    const { answer, expected } = await halfCloseExchange(w.ports[0], payload);
    assert.equal(answer, expected);

    const b = await Deno.connect({ hostname: "127.0.0.1", port: w.ports[1] });
    const buf = new Uint8Array(64);
    const n = await b.read(buf);
    assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "220 ready\r\n");
    await writeAll(b, new TextEncoder().encode("EHLO x\r\n"));
    let got = "";
    while (!got.endsWith("\r\n")) {
      const r = await b.read(buf);
      assert.notEqual(r, null);
      got += new TextDecoder().decode(buf.subarray(0, r!));
    }
    assert.equal(got, "EHLO x\r\n");
    b.close();
    await w.agent.waitForCount(event("tunnel closed"), 2, "both tunnels to close");
  }
  bannerServer.close();
  await banner;
});

Deno.test("tunnel refusals reset the local connection within 100 ms; a retry loop is backed off", async () => {
  await using w = await world([`dead=127.0.0.1:${deadPort()}`], [
    ["dev1", "dead"],
    ["dev1", "nope"],
    ["ghost", "http"],
  ]);
  for (
    const [i, what] of ["local connect refused", "service not offered", "unknown target"].entries()
  ) {
    const r = await timeToClose(w.ports[i]);
    assert.ok(RESET.has(r.how), `${what}: ${r.how}`);
    assert.ok(r.ms < 100, `${what}: closed after ${r.ms.toFixed(1)} ms`);
  }
  await w.forward.waitForCount(event("tunnel refused"), 3, "three refusals logged");
  const reasons = w.forward.lines.filter(event("tunnel refused")).map((l) => String(l.reason));
  assert.match(reasons[0], /cannot reach 127\.0\.0\.1:\d+: .*refused/i);
  assert.match(reasons[1], /does not offer service "nope"/);
  assert.match(reasons[2], /not registered/);

  // A client retrying in a tight loop: 40 attempts, all reset at once; the forwarder's
  // per-target backoff answers most of them without asking the relay.
  for (let i = 0; i < 40; i++) {
    const r = await timeToClose(w.ports[1]);
    assert.ok(RESET.has(r.how), r.how);
  }
  const handled = (l: Record<string, unknown>) =>
    (l.event === "tunnel refused" || (l.event === "connection reset" && l.backoff === true)) &&
    l.to === "dev1";
  await w.forward.waitForCount(handled, 42, "every attempt logged");
  const asked = w.forward.lines.filter(event("tunnel refused")).length - 3;
  assert.ok(asked <= 3, `${asked} of 40 tight retries reached the device`);
});

Deno.test("tunnel from config files: run's expose and logFormat; forward's documented example (forward list, pool)", async () => {
  await using http = httpServer();
  await using half = halfCloseServer();
  await using tmp = await tempDir();
  const data = `${tmp.path}/relay`;
  const pcPw = await register(data, "pc1", "USER");
  const printerPw = await register(data, "printer1", "PRINTER");
  await using relay = await startRelay(data);
  await Deno.mkdir(`${tmp.path}/etc`);
  await Deno.copyFile(pcPw, `${tmp.path}/etc/pc1.pw`);
  await Deno.copyFile(printerPw, `${tmp.path}/etc/printer1.pw`);

  const device = `${tmp.path}/etc/printer1.json`;
  await Deno.writeTextFile(
    device,
    JSON.stringify({
      relay: relay.address,
      id: "printer1",
      passwordFile: "printer1.pw",
      inbox: "inbox",
      logFormat: "json",
      expose: [`ipp=127.0.0.1:${half.port}`, `http=127.0.0.1:${http.addr.port}`],
    }),
  );
  await using agent = new Proc(["run", "-A", "agent/main.ts", "run", "--config", device]);
  await agent.waitFor(event("logged in"), "printer1 to log in from its config file");

  // The forwarder's example from docs/operations.md, on this relay and on free ports.
  const doc = await Deno.readTextFile(new URL("../docs/operations.md", import.meta.url));
  const example = /<!-- agent-forward-config-example -->\s*```json\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(example, "docs/operations.md lost its forward config example");
  const config = JSON.parse(example);
  assert.deepEqual(Object.keys(config).sort(), ["forward", "id", "passwordFile", "pool", "relay"]);
  config.relay = relay.address;
  for (const rule of config.forward) rule.listen = "127.0.0.1:0";
  config.pool = 6; // more than the default 4: the key is read
  const file = `${tmp.path}/etc/forward.json`;
  await Deno.writeTextFile(file, JSON.stringify(config));
  await using forward = new Proc([
    "run",
    "-A",
    "agent/main.ts",
    "forward",
    "--config",
    file,
    "--log-format",
    "json",
  ]);
  await forward.waitForCount(event("forwarding"), 2, "both listeners of the example");
  const port = (service: string) =>
    Number(String(forward.lines.find(event("forwarding", { service }))!.listen).split(":").pop());
  // A pool of 6: one login, then 5 more connections of pc1 at the relay.
  await relay.proc.waitForCount(event("connection added", { device: "pc1" }), 5, "pc1's pool");

  const get = await curl(["-sS", "--max-time", "20", `http://127.0.0.1:${port("http")}/cfg`]);
  assert.equal(get.code, 0, get.stderr);
  assert.equal(get.stdout, "hello /cfg\n");
  const { answer, expected } = await halfCloseExchange(port("ipp"), new Uint8Array(70_000).fill(9));
  assert.equal(answer, expected);
});

/**
 * How a reset shows to the client: on its read, or (when the RST arrives before the client
 * touches the socket) as the socket no longer being connected.
 */
const RESET = new Set(["ConnectionReset", "NotConnected"]);

/** Reads `conn` until it ends, then closes it: "eof" for a normal end, else the error's name. */
async function readToEnd(
  conn: Deno.Conn,
  deadlineMs: number,
): Promise<{ how: string; bytes: number }> {
  const buf = new Uint8Array(256 * 1024);
  let bytes = 0;
  const timer = setTimeout(() => conn.close(), deadlineMs);
  try {
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) bytes += n;
    return { how: "eof", bytes };
  } catch (e) {
    return { how: (e as Error).name, bytes };
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the deadline
    }
  }
}

Deno.test("tunnel broken midway: both local programs see a reset, not a normal end (device killed; client reset)", async () => {
  // A server that streams without end (no length: only the close tells the end) and
  // reports how each upload to it ended.
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const upload = Promise.withResolvers<{ how: string; bytes: number }>();
  const serving = (async () => {
    for await (const conn of server) {
      const first = new Uint8Array(1);
      if ((await conn.read(first)) !== 1) continue;
      if (first[0] === 0x44) { // "D": download forever
        const chunk = new Uint8Array(64 * 1024).fill(7);
        (async () => {
          for (;;) await conn.write(chunk);
        })().catch(() => conn.close());
      } else readToEnd(conn, 30_000).then(upload.resolve); // "U": upload
    }
  })();
  const port = server.addr.port;
  await using w = await world([`stream=127.0.0.1:${port}`], [["dev1", "stream"]]);

  // The client resets mid-upload: the server behind --expose sees the reset.
  const client = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port: w.ports[0] }, () => resolve(s));
    s.once("error", reject);
  });
  client.write(new Uint8Array([0x55]));
  client.write(new Uint8Array(4 * 1024 * 1024));
  await w.agent.waitFor(event("session accepted"), "the upload's session");
  client.resetAndDestroy();
  const uploaded = await upload.promise;
  assert.equal(uploaded.how, "ConnectionReset", `the server saw ${JSON.stringify(uploaded)}`);

  // The device dies mid-download: the client of forward sees the reset.
  const down = await Deno.connect({ hostname: "127.0.0.1", port: w.ports[0] });
  await down.write(new Uint8Array([0x44]));
  const some = new Uint8Array(1024 * 1024);
  for (let got = 0; got < some.length;) got += (await down.read(some.subarray(got))) ?? 0;
  Deno.kill(w.agent.pid, "SIGKILL");
  const download = await readToEnd(down, 30_000);
  assert.equal(download.how, "ConnectionReset", `the client saw ${JSON.stringify(download)}`);
  server.close();
  await serving.catch(() => {});
});

Deno.test("tunnel broken after one side's END: the side still sending is reset, its bytes are not swallowed", async () => {
  await using server = answerThenSink();
  await using w = await world([`sink=127.0.0.1:${server.port}`], [["dev1", "sink"]]);
  await assertUploadFailsAfterKill(w.ports[0], w.agent.pid);
});

Deno.test("tunnel to an offline target: the local connection is reset at once, after one request", async () => {
  await using w = await world([], [["dev1", "none"]]);
  await register(`${w.dir}/relay`, "dev2", "PRINTER"); // registered, never logged in
  const pw = `${w.dir}/relay/pc1.pw`;
  const offline = await startForward(w.relay, "pc1", pw, [["dev2", "ipp"]]);
  await using _ = offline.proc;
  const r = await timeToClose(offline.ports[0]);
  assert.equal(r.how, "ConnectionReset", `offline target: ${r.how}`);
  assert.ok(r.ms < 1000, `offline target: reset after ${r.ms.toFixed(0)} ms`);
  await offline.proc.waitFor(event("tunnel refused"), "the refusal logged");
  const asked = offline.proc.lines.filter(event("tunnel refused"));
  assert.equal(asked.length, 1, "one request to the relay, no retry loop");
  assert.match(String(asked[0].code), /TargetOffline/);
});
