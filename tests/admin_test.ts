/**
 * The admin listener on a real relay (in process, so the test can hold its directory)
 * with real agent processes: /metrics checked by promtool and scraped by a real
 * Prometheus, health endpoints through shutdown, the token check, and the status page
 * rendered by headless Chromium.
 *
 * promtool, prometheus and chromium come from Debian (`.ci/run` installs them); a step
 * whose tool is missing is ignored, with the reason printed.
 */

import assert from "node:assert/strict";
import { UsageError } from "../shared/errors.ts";
import { Logger } from "../shared/log.ts";
import { EmbeddedDirectory } from "../relay/directory.ts";
import { FileRegistry } from "../relay/registry/registry.ts";
import { type RelayHandle, startRelay } from "../relay/server.ts";
import type { AdminOptions } from "../relay/admin/mod.ts";
import {
  agentCommand,
  deviceFlags,
  Proc,
  register,
  startAgent,
  tempDir,
  writeRandomFile,
} from "./helpers.ts";

async function which(command: string): Promise<boolean> {
  const { code } = await new Deno.Command("sh", {
    args: ["-c", `command -v ${command}`],
    stdout: "null",
  }).output();
  return code === 0;
}

const TOOLS = {
  promtool: await which("promtool"),
  prometheus: await which("prometheus"),
  chromium: await which("chromium"),
};
for (const [tool, present] of Object.entries(TOOLS)) {
  if (!present) {
    console.warn(
      `admin_test: ${tool} not installed: its step is ignored ` +
        `(apt-get install -y ${tool === "chromium" ? "chromium" : "prometheus"})`,
    );
  }
}

/** The relay's own log lines, collected in process, with waits on them (no sleeps). */
class LogTap {
  readonly lines: Record<string, unknown>[] = [];
  readonly #waiters = new Set<() => void>();
  readonly logger = new Logger({
    component: "relay",
    format: "json",
    level: "debug",
    write: (line) => {
      this.lines.push(JSON.parse(line));
      for (const w of this.#waiters) w();
    },
  });

  count(predicate: (l: Record<string, unknown>) => boolean): number {
    return this.lines.filter(predicate).length;
  }

  /** Waits until `n` lines match. */
  async waitFor(
    predicate: (l: Record<string, unknown>) => boolean,
    what: string,
    n = 1,
    timeoutMs = 30_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.count(predicate) < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = setTimeout(resolve, left);
      this.#waiters.add(resolve);
      await promise;
      clearTimeout(timer);
      this.#waiters.delete(resolve);
    }
  }
}

const isEvent = (name: string, fields: Record<string, unknown> = {}) =>
(
  l: Record<string, unknown>,
) => l.event === name && Object.entries(fields).every(([k, v]) => l[k] === v);

async function startAdminRelay(
  dataDir: string,
  tap: LogTap,
  admin: AdminOptions = { hostname: "127.0.0.1", port: 0 },
  directory?: EmbeddedDirectory,
): Promise<RelayHandle> {
  return await startRelay({
    port: 0,
    directory: directory ?? new EmbeddedDirectory(await FileRegistry.open(dataDir)),
    logger: tap.logger,
    admin,
  });
}

function adminUrl(relay: RelayHandle, path: string): string {
  return `http://127.0.0.1:${relay.admin!.addr.port}${path}`;
}

async function get(
  relay: RelayHandle,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; headers: Headers }> {
  const response = await fetch(adminUrl(relay, path), { headers });
  return { status: response.status, body: await response.text(), headers: response.headers };
}

/** Parses exposition text into `name{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

async function metrics(relay: RelayHandle): Promise<{ text: string; values: Map<string, number> }> {
  const r = await get(relay, "/metrics");
  assert.equal(r.status, 200, r.body);
  assert.match(r.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return { text: r.body, values: parseMetrics(r.body) };
}

async function run(
  command: string,
  args: string[],
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(90_000),
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  const d = new TextDecoder();
  return { code, stdout: d.decode(stdout), stderr: d.decode(stderr) };
}

/** Headless Chromium on `url`, the page's timers run for `budgetMs` of virtual time. */
function chromium(profile: string, url: string, mode: string[], budgetMs = 3000) {
  return run("chromium", [
    "--headless",
    "--no-sandbox", // we run as root in CI
    "--disable-gpu",
    "--no-first-run",
    "--disable-dev-shm-usage",
    `--user-data-dir=${profile}`,
    "--enable-logging=stderr",
    "--v=0",
    `--virtual-time-budget=${budgetMs}`,
    "--window-size=1280,1000",
    ...mode,
    url,
  ]);
}

/** Console messages (console.* calls, uncaught errors, CSP violations) in Chromium's log. */
function consoleLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => /:CONSOLE[:(]/.test(l));
}

/** Attribute `name` of the element with `id` in dumped HTML. */
function attributeOf(html: string, id: string, name: string): string | undefined {
  const tag = new RegExp(`<[^>]*\\bid="${id}"[^>]*>`).exec(html)?.[0];
  return tag === undefined ? undefined : new RegExp(`\\b${name}="([^"]*)"`).exec(tag)?.[1];
}

Deno.test("admin: metrics, Prometheus and the status page follow a device and a file transfer", async (t) => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  const tap = new LogTap();
  await using relay = await startAdminRelay(dir.path, tap);
  const address = `127.0.0.1:${relay.addr.port}`;
  const statusRequests = isEvent("admin request", { path: "/status.json" });

  let emptyPage = "";
  if (TOOLS.chromium) {
    // Before any device: the page renders its empty state (compared with the later dump).
    const empty = await chromium(`${dir.path}/chrome0`, adminUrl(relay, "/"), ["--dump-dom"]);
    assert.equal(empty.code, 0, empty.stderr);
    emptyPage = empty.stdout;
    assert.match(emptyPage, /data-loaded="true"/, "the page's script never rendered");
    assert.match(emptyPage, /No device is logged in here\./);
    assert.equal(attributeOf(emptyPage, "devices-online", "id"), "devices-online");
  }

  await t.step("/healthz and /readyz answer 200 on a running relay", async () => {
    assert.deepEqual(
      [(await get(relay, "/healthz")).status, (await get(relay, "/readyz")).status],
      [
        200,
        200,
      ],
    );
  });

  const before = (await metrics(relay)).values;
  assert.equal(before.get("tsunagi_devices_online"), 0);
  assert.equal(before.get("tsunagi_relayed_bytes_total"), 0);

  await using _fax = await startAgent(address, "fax1", faxPw, ["--inbox", `${dir.path}/inbox`]);
  // Both idle connections attached in the relay's table (first "login", then "added").
  await tap.waitFor(isEvent("login", { device: "fax1" }), "fax1 login");
  await tap.waitFor(isEvent("connection added", { device: "fax1" }), "fax1's 2nd connection");

  const size = 3 * 1024 * 1024 + 17;
  await t.step("counters move as a file is sent", async () => {
    const online = (await metrics(relay)).values;
    assert.equal(online.get("tsunagi_devices_online"), 1);
    assert.equal(online.get("tsunagi_idle_connections"), 2);
    assert.equal(online.get('tsunagi_logins_total{result="ok"}'), 2);
    assert.equal(online.get('tsunagi_devices{activity="idle"}'), 1);

    await writeRandomFile(`${dir.path}/doc.bin`, size, 5);
    const sent = await agentCommand([
      "send",
      "--to",
      "fax1",
      ...deviceFlags(address, "pc1", pcPw),
      `${dir.path}/doc.bin`,
    ]);
    assert.equal(sent.code, 0, sent.stderr);
    const attaches = () => tap.count((l) => l.event === "login" || l.event === "connection added");
    const attachedBefore = attaches();
    const after = (await metrics(relay)).values;
    // The file, framed, went one way; the confirmation came back.
    assert.ok(after.get("tsunagi_relayed_bytes_total")! > size, `bytes ${[...after]}`);
    assert.equal(after.get('tsunagi_session_setups_total{result="ok"}'), 1);
    // pc1's login, and fax1 replenishing its idle pool: one count per attached connection.
    const logins = after.get('tsunagi_logins_total{result="ok"}')!;
    assert.ok(logins >= 3 && logins >= attachedBefore && logins <= attaches(), `${logins}`);
    assert.equal(relay.metrics.logins.get("ok"), attaches()); // same tick: exact
    assert.ok(after.get("tsunagi_connections_accepted_total")! >= 3);
    assert.ok(after.get("tsunagi_process_resident_memory_bytes")! > 1 << 20);
    assert.equal(after.get('tsunagi_directory_up{backend="embedded"}'), 1);
    const snapshot = relay.snapshot();
    assert.deepEqual(snapshot.devices.map((d) => [d.id, d.services]), [["fax1", ["file"]]]);
  });

  await t.step({
    name: "promtool check metrics accepts /metrics",
    ignore: !TOOLS.promtool,
    fn: async () => {
      const { text } = await metrics(relay);
      const checked = await run("promtool", ["check", "metrics"], text);
      assert.equal(checked.code, 0, checked.stdout + checked.stderr);
      assert.equal((checked.stdout + checked.stderr).trim(), "", "promtool found problems");
      // The check can fail: a counter without _total is reported.
      const bad = await run(
        "promtool",
        ["check", "metrics"],
        "# HELP x_bytes x\n# TYPE x_bytes counter\nx_bytes 1\n",
      );
      assert.notEqual(bad.code, 0);
    },
  });

  await t.step({
    name: "a real Prometheus scrapes the relay",
    ignore: !TOOLS.prometheus,
    fn: async () => {
      const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const promPort = free.addr.port;
      free.close();
      await Deno.writeTextFile(
        `${dir.path}/prometheus.yml`,
        [
          "global: { scrape_interval: 1s, scrape_timeout: 1s }",
          "scrape_configs:",
          "  - job_name: tsunagi",
          `    static_configs: [{ targets: ["127.0.0.1:${relay.admin!.addr.port}"] }]`,
          "",
        ].join("\n"),
      );
      const prometheus = new Deno.Command("prometheus", {
        args: [
          `--config.file=${dir.path}/prometheus.yml`,
          `--storage.tsdb.path=${dir.path}/tsdb`,
          `--web.listen-address=127.0.0.1:${promPort}`,
        ],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const log = prometheus.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let logText = "";
      const draining = (async () => {
        for (;;) {
          const { value, done } = await log.read();
          if (done) return;
          logText = (logText + value).slice(-8000);
        }
      })();
      try {
        const scrapes = (l: Record<string, unknown>) =>
          l.event === "admin request" && l.path === "/metrics" &&
          String(l.agent).startsWith("Prometheus");
        // Two scrapes: the first one's samples are stored before the second starts.
        await tap.waitFor(scrapes, "two scrapes by Prometheus", 2, 30_000).catch((e) => {
          throw new Error(`${e.message}; prometheus log:\n${logText}`);
        });
        const query = async (q: string) => {
          const r = await fetch(
            `http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(q)}`,
          );
          const body = await r.json();
          assert.equal(body.status, "success", JSON.stringify(body));
          return body.data.result.map((s: { value: [number, string] }) => Number(s.value[1]));
        };
        assert.deepEqual(await query('up{job="tsunagi"}'), [1]);
        assert.deepEqual(await query("tsunagi_devices_online"), [1]);
        assert.ok((await query("tsunagi_relayed_bytes_total"))[0] > size);
      } finally {
        prometheus.kill("SIGTERM");
        await prometheus.status;
        await draining;
      }
    },
  });

  await t.step({
    name: "the status page in headless Chromium shows fax1 online and the bytes relayed",
    ignore: !TOOLS.chromium,
    fn: async () => {
      const polls = tap.count(statusRequests);
      const dumped = await chromium(`${dir.path}/chrome1`, adminUrl(relay, "/"), ["--dump-dom"]);
      assert.equal(dumped.code, 0, dumped.stderr);
      const html = dumped.stdout;
      assert.notEqual(html, emptyPage);
      assert.match(html, /data-loaded="true"/);
      assert.match(html, /<tr data-device="fax1" data-activity="idle">/);
      assert.match(html, /<td>FAX<\/td>/);
      assert.match(html, /<span class="chip">FILE TX\/RX<\/span>/);
      assert.equal(attributeOf(html, "devices-online", "id"), "devices-online");
      assert.match(html, /id="devices-online">1</);
      assert.ok(Number(attributeOf(html, "bytes-relayed", "data-bytes")) > size, "bytes counter");
      assert.match(html, /<span id="error"><\/span>/, "the page shows an error");
      // It polls: more than one status.json in one page life.
      assert.ok(tap.count(statusRequests) - polls >= 2, "the page polled status.json once only");
      assert.deepEqual(consoleLines(dumped.stderr), [], "console output");

      const png = `${dir.path}/status.png`;
      const shot = await chromium(`${dir.path}/chrome2`, adminUrl(relay, "/"), [
        `--screenshot=${png}`,
      ]);
      assert.equal(shot.code, 0, shot.stderr);
      assert.deepEqual(consoleLines(shot.stderr), [], "console output");
      const bytes = await Deno.readFile(png);
      assert.ok(bytes.length > 5000, `screenshot of ${bytes.length} bytes`);
      assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    },
  });
});

/** A directory whose health the test sets, and whose close waits for the test. */
class GatedDirectory extends EmbeddedDirectory {
  up = true;
  readonly closing = Promise.withResolvers<void>();
  readonly release = Promise.withResolvers<void>();
  override health() {
    return { backend: "gated", up: this.up };
  }
  override async close(): Promise<void> {
    this.closing.resolve();
    await this.release.promise;
  }
}

Deno.test("admin: /readyz is 503 while the directory is down and during shutdown; /healthz stays 200", async () => {
  await using dir = await tempDir();
  const tap = new LogTap();
  const directory = new GatedDirectory(await FileRegistry.open(dir.path));
  const relay = await startAdminRelay(dir.path, tap, undefined, directory);
  try {
    assert.equal((await get(relay, "/readyz")).status, 200);
    directory.up = false;
    const down = await get(relay, "/readyz");
    assert.deepEqual([down.status, down.body], [503, "not ready: directory (gated) unavailable\n"]);
    assert.equal((await get(relay, "/healthz")).status, 200);
    assert.equal((await metrics(relay)).values.get('tsunagi_directory_up{backend="gated"}'), 0);
    directory.up = true;
    assert.equal((await get(relay, "/readyz")).status, 200);

    const stopping = relay.shutdown();
    await directory.closing.promise; // the relay is mid-shutdown, held in directory.close()
    const draining = await get(relay, "/readyz");
    assert.deepEqual([draining.status, draining.body], [503, "not ready: shutting down\n"]);
    assert.equal((await get(relay, "/healthz")).status, 200);
    assert.equal((await metrics(relay)).values.get("tsunagi_shutting_down"), 1);
    directory.release.resolve();
    await stopping;
    await assert.rejects(fetch(adminUrl(relay, "/healthz")), TypeError);
  } finally {
    directory.release.resolve();
    await relay.shutdown();
  }
});

Deno.test("admin: a non-loopback listener needs a token, and requests need the right one", async () => {
  await using dir = await tempDir();
  const tap = new LogTap();
  await assert.rejects(
    startAdminRelay(dir.path, tap, { hostname: "0.0.0.0", port: 0 }),
    (e) => e instanceof UsageError && /--admin-token-file/.test(e.message),
  );
  await assert.rejects(
    startAdminRelay(dir.path, tap, { hostname: "127.0.0.1", port: 0, token: "short" }),
    (e) => e instanceof UsageError && /shorter than 16 bytes/.test(e.message),
  );
  const token = "0123456789abcdef0123456789abcdef";
  await using relay = await startAdminRelay(dir.path, tap, { hostname: "0.0.0.0", port: 0, token });
  const missing = await get(relay, "/metrics");
  assert.equal(missing.status, 401);
  assert.match(missing.headers.get("www-authenticate") ?? "", /^Bearer/);
  assert.equal((await get(relay, "/metrics", { authorization: `Bearer ${token}x` })).status, 401);
  assert.equal((await get(relay, "/metrics", { authorization: token })).status, 401);
  assert.equal((await get(relay, "/status.json")).status, 401);
  assert.equal((await get(relay, "/metrics", { authorization: `Bearer ${token}` })).status, 200);
  assert.equal(
    (await get(relay, "/status.json", { authorization: `Bearer ${token}` })).status,
    200,
  );
  // Health checks (load balancers) and the page's data-free shell need no token.
  assert.equal((await get(relay, "/healthz")).status, 200);
  assert.equal((await get(relay, "/readyz")).status, 200);
  assert.equal((await get(relay, "/")).status, 200);
});

Deno.test("admin: relay CLI refuses --admin on a public address without a token, in one line", async () => {
  await using dir = await tempDir();
  const help = new Proc(["run", "-A", "relay/main.ts", "--help"]);
  assert.equal((await help.wait()).code, 0);
  assert.match(help.stdout, /--admin HOST:PORT/);
  assert.match(help.stdout, /--admin-token-file FILE/);

  const refused = new Proc([
    "run",
    "-A",
    "relay/main.ts",
    "--admin",
    "0.0.0.0:0",
    "--data",
    dir.path,
  ]);
  assert.equal((await refused.wait()).code, 2);
  const errors = refused.rawStderr.filter((l) => l.startsWith("tsunagi-relay:"));
  assert.equal(errors.length, 1, refused.rawStderr.join("\n"));
  assert.match(errors[0], /non-loopback 0\.0\.0\.0:0 without a token: give --admin-token-file/);
  assert.doesNotMatch(refused.rawStderr.join("\n"), /listening/);
});
