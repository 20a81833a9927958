import assert from "node:assert/strict";
import { Proc, register, startRelay, tempDir } from "./helpers.ts";

async function run(args: string[], env: Record<string, string> = {}) {
  const proc = new Proc(["run", "-A", "agent/main.ts", ...args], { env });
  const status = await proc.wait();
  return { code: status.code, stdout: proc.stdout, stderr: proc.rawStderr.join("\n") };
}

Deno.test("cli: settings come from flags, then environment, then a config file", async () => {
  await using dir = await tempDir();
  const pw = await register(dir.path, "pc1", "USER");
  await using relay = await startRelay(dir.path);
  const env = { TSUNAGI_RELAY: relay.address, TSUNAGI_ID: "pc1", TSUNAGI_PASSWORD_FILE: pw };
  const fromEnv = await run(["list", "--json"], env);
  assert.equal(fromEnv.code, 0, fromEnv.stderr);
  assert.deepEqual(JSON.parse(fromEnv.stdout).map((e: { id: string }) => e.id), ["pc1"]);

  await Deno.writeTextFile(
    `${dir.path}/agent.json`,
    JSON.stringify({ relay: [relay.address], id: "pc1", passwordFile: pw }),
  );
  const fromFile = await run(["list", "--config", `${dir.path}/agent.json`]);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.match(fromFile.stdout, /^ID\s+TYPE/);

  // A flag beats the environment: a wrong --id on the command line is what is used.
  const flagWins = await run(["list", "--id", "ghost"], env);
  assert.equal(flagWins.code, 3);
});

Deno.test("cli: usage mistakes get one line, a hint and exit code 2; --help works everywhere", async () => {
  for (
    const args of [
      ["frobnicate"],
      ["send", "--id", "x", "--password-file", "/nonexistent"],
      ["list", "--bogus"],
      ["forward", "--pool", "-1"], // parseArgs explains over three lines
    ]
  ) {
    const r = await run(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /^tsunagi: .+\nhint: .+\n?$/);
    assert.doesNotMatch(r.stderr, /\\x0a/, "no escaped newline");
    assert.doesNotMatch(r.stderr, /\bat .+\.ts:\d+/, "no stack trace");
  }
  // Limits the relay would refuse at login are usage errors at once, not endless retries.
  const pw = await Deno.makeTempFile();
  await Deno.writeTextFile(pw, "pw\n");
  const base = ["run", "--relay", "127.0.0.1:1", "--id", "x", "--password-file", pw];
  for (
    const [extra, message] of [
      [Array.from({ length: 32 }, (_, i) => `--expose=s${i}=127.0.0.1:${20000 + i}`), /at most 32/],
      [["--expose", "file=127.0.0.1:1"], /"file" is taken/],
    ] as const
  ) {
    const r = await run([...base, ...extra]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
  }
  await Deno.remove(pw);
  for (const command of ["run", "send", "list", "status"]) {
    const r = await run([command, "--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, new RegExp(`Usage: tsunagi ${command}`));
  }
  const relayHelp = new Proc(["run", "-A", "relay/main.ts", "--help"]);
  assert.equal((await relayHelp.wait()).code, 0);
  assert.match(relayHelp.stdout, /--mesh-secret-file/);
});

Deno.test("cli: an unreachable relay exits 4 with a hint", async () => {
  await using dir = await tempDir();
  const pw = await register(dir.path, "pc1", "USER");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close(); // nothing listens there now
  const r = await run([
    "list",
    "--relay",
    `127.0.0.1:${port}`,
    "--id",
    "pc1",
    "--password-file",
    pw,
  ]);
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /Cannot reach relay 127\.0\.0\.1:\d+/);
  assert.match(r.stderr, /hint: is the relay running\?/);
});

Deno.test("cli: `run` with a wrong password gives up at once with exit code 3", async () => {
  await using dir = await tempDir();
  await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await Deno.writeTextFile(`${dir.path}/wrong.pw`, "wrong\n");
  await using relay = await startRelay(dir.path);
  const r = await run([
    "run",
    "--relay",
    relay.address,
    "--id",
    "fax1",
    "--password-file",
    `${dir.path}/wrong.pw`,
    "--inbox",
    `${dir.path}/inbox`,
  ]);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /Login refused/);
});

Deno.test("cli: forward's listen address in use, an empty or misspelt forward config, and a too-long --to are usage errors", async () => {
  const pw = await Deno.makeTempFile();
  await Deno.writeTextFile(pw, "pw\n");
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const free = (() => {
    using l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return l.addr.port;
  })();
  const base = ["forward", "--relay", "127.0.0.1:1", "--id", "pc1", "--password-file", pw];
  const files = [pw];
  const config = async (forward: unknown) => {
    const file = await Deno.makeTempFile({ suffix: ".json" });
    files.push(file);
    await Deno.writeTextFile(file, JSON.stringify({ forward }));
    return file;
  };
  const cases: [string[], RegExp][] = [
    [["--to", "dev1", "--service", "ipp", "--listen", `127.0.0.1:${busy.addr.port}`], /in use/],
    [["--to", "d".repeat(65), "--service", "ipp", "--listen", "127.0.0.1:0"], /longer than 64/],
    [["--to", "dev1", "--service", "ipp", "--listen", "10.9.9.9:5"], /no such local address/],
    [["--to", "dev1", "--service", "ipp", "--listen", "nosuchhost.invalid:5000"], /no such host/],
    [
      [
        ...["--listen", `127.0.0.1:${free}`, "--to", "dev1", "--service", "ipp"],
        ...["--listen", `127.0.0.1:${free}`, "--to", "dev2", "--service", "ipp"],
      ],
      /in use/,
    ],
    [["--config", await config([])], /non-empty list/],
    [
      ["--config", await config([{ listen: "127.0.0.1:0", to: "dev1", servce: "ipp" }])],
      /needs string keys|unknown key/,
    ],
    [
      [
        "--config",
        await config([{ listen: "127.0.0.1:0", to: "dev1", service: "ipp", pool: 3 }]),
      ],
      /unknown key "pool"/,
    ],
  ];
  for (const [extra, message] of cases) {
    const r = await run([...base, ...extra]);
    assert.equal(r.code, 2, `${extra.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /\nhint: /);
    assert.doesNotMatch(
      r.stderr,
      /forwarding/,
      "nothing is announced before every listener is bound",
    );
  }
  // A bad value from the environment is named as the environment variable.
  const fromEnv = await run([...base, "--to", "d", "--service", "s", "--listen", "127.0.0.1:0"], {
    TSUNAGI_POOL: "0",
  });
  assert.equal(fromEnv.code, 2, fromEnv.stderr);
  assert.match(fromEnv.stderr, /Invalid value for TSUNAGI_POOL: "0"/);
  busy.close();
  for (const f of files) await Deno.remove(f);
});
