import assert from "node:assert/strict";
import { join } from "node:path";
import { verifierMatches as verifyPassword } from "./verifier.ts";
import { FileRegistry } from "./registry.ts";
import { hashPassword } from "./password.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, registryMain } from "./main.ts";

const FAST = ["--hash-cost", "4096"];
const T0 = Date.UTC(2026, 10, 3, 10, 0, 0);

/** A temp data dir and password file, plus a runner capturing stdout and stderr. */
async function setup() {
  const root = await Deno.makeTempDir({ prefix: "tsunagi-registry-main-test-" });
  const data = join(root, "data");
  const passwordFile = join(root, "password.txt");
  await Deno.writeTextFile(passwordFile, "s3cret\n");
  let clock = T0;
  return {
    data,
    root,
    passwordFile,
    tick(ms: number) {
      clock += ms;
    },
    /** Runs the CLI with `--data` pointing at the temp dir (unless `withData` is false). */
    async run(
      args: string[],
      options: { stdin?: string; env?: Record<string, string>; withData?: boolean } = {},
    ) {
      let stdout = "";
      let stderr = "";
      const code = await registryMain(
        options.withData === false ? args : [...args, "--data", data],
        {
          stdout: (text) => stdout += text,
          stderr: (text) => stderr += text,
          stdin: ReadableStream.from([new TextEncoder().encode(options.stdin ?? "")]),
          env: (name) => options.env?.[name],
          now: () => clock,
        },
      );
      return { code, stdout, stderr };
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Asserts a one-line error in the house format and returns it. */
function assertError(stderr: string, pattern: RegExp): void {
  const lines = stderr.trimEnd().split("\n");
  assert.equal(lines.length, 2, stderr);
  assert.match(lines[0], /^tsunagi-registry: /);
  assert.match(lines[0], pattern);
  assert.match(lines[1], /^hint: \S/);
}

Deno.test("registry add, list, passwd and remove a device", async () => {
  await using t = await setup();
  const add = await t.run([
    "add",
    "fax-01",
    "--type",
    "fax",
    "--attr",
    "FILE TX/RX",
    "--attr",
    "COLOR",
    "--password-file",
    t.passwordFile,
    ...FAST,
  ]);
  assert.equal(add.code, EXIT_OK, add.stderr);
  assert.match(add.stdout, /Added device fax-01 \(FAX\)/);

  const registry = await FileRegistry.open(t.data);
  const reg = await registry.get("fax-01");
  assert.equal(reg?.type, "FAX");
  assert.deepEqual(reg?.attributes, ["FILE TX/RX", "COLOR"]);
  assert.equal(reg?.updatedAt, T0);
  assert.match(reg!.passwordHash, /^scram-sha-256\$4096\$/);
  // The trailing newline of the password file is not part of the password.
  assert.equal(await verifyPassword("s3cret", reg!.passwordHash), true);
  assert.equal(await verifyPassword("s3cret\n", reg!.passwordHash), false);

  t.tick(90_000);
  const addUser = await t.run(
    ["add", "alice@example.com", "--type", "USER", "--password-file", "-", ...FAST],
    { stdin: "from stdin\r\n" },
  );
  assert.equal(addUser.code, EXIT_OK, addUser.stderr);
  const alice = await registry.get("alice@example.com");
  assert.deepEqual(alice?.attributes, []);
  assert.equal(await verifyPassword("from stdin", alice!.passwordHash), true);

  const list = await t.run(["list"]);
  assert.equal(list.code, EXIT_OK, list.stderr);
  assert.equal(list.stderr, "");
  assert.equal(
    list.stdout,
    [
      "ID                 TYPE  ATTRIBUTES         UPDATED",
      "alice@example.com  USER  -                  2026-11-03T10:01:30Z",
      "fax-01             FAX   FILE TX/RX, COLOR  2026-11-03T10:00:00Z",
      "",
    ].join("\n"),
  );

  const json = await t.run(["list", "--json"]);
  assert.equal(json.code, EXIT_OK);
  assert.deepEqual(JSON.parse(json.stdout), [
    {
      id: "alice@example.com",
      type: "USER",
      attributes: [],
      updatedAt: T0 + 90_000,
      migrated: false,
    },
    {
      id: "fax-01",
      type: "FAX",
      attributes: ["FILE TX/RX", "COLOR"],
      updatedAt: T0,
      migrated: false,
    },
  ]);
  assert.ok(!json.stdout.includes("scram"), "list --json must not leak password verifiers");

  t.tick(60_000);
  const newPassword = join(t.root, "new.txt");
  await Deno.writeTextFile(newPassword, "n3w");
  const passwd = await t.run(["passwd", "fax-01", "--password-file", newPassword, ...FAST]);
  assert.equal(passwd.code, EXIT_OK, passwd.stderr);
  const changed = await registry.get("fax-01");
  assert.equal(await verifyPassword("n3w", changed!.passwordHash), true);
  assert.equal(await verifyPassword("s3cret", changed!.passwordHash), false);
  assert.equal(changed?.updatedAt, T0 + 150_000);
  assert.deepEqual(changed?.attributes, ["FILE TX/RX", "COLOR"]);

  const remove = await t.run(["remove", "fax-01"]);
  assert.equal(remove.code, EXIT_OK, remove.stderr);
  assert.match(remove.stdout, /Removed device fax-01/);
  assert.equal(await registry.get("fax-01"), undefined);
  assert.deepEqual((await registry.list()).map((r) => r.id), ["alice@example.com"]);
});

Deno.test("registry list of an empty registry prints the header and a note", async () => {
  await using t = await setup();
  await Deno.mkdir(t.data);
  const list = await t.run(["list"]);
  assert.equal(list.code, EXIT_OK);
  assert.equal(list.stdout, "ID  TYPE  ATTRIBUTES  UPDATED\n");
  assert.match(list.stderr, /No devices registered/);
  assert.equal((await t.run(["list", "--json"])).stdout, "[]\n");
});

Deno.test("registry add fails with exit 1 when the ID exists, hinting at passwd", async () => {
  await using t = await setup();
  const args = ["add", "fax-01", "--type", "FAX", "--password-file", t.passwordFile, ...FAST];
  assert.equal((await t.run(args)).code, EXIT_OK);
  const again = await t.run(args);
  assert.equal(again.code, EXIT_FAILURE);
  assertError(again.stderr, /Device fax-01 is already registered/);
  assert.match(again.stderr, /passwd/);
});

Deno.test("registry remove and passwd fail with exit 1 for an unknown ID", async () => {
  await using t = await setup();
  await Deno.mkdir(t.data);
  const remove = await t.run(["remove", "ghost"]);
  assert.equal(remove.code, EXIT_FAILURE);
  assertError(remove.stderr, /Device ghost is not registered/);

  const passwd = await t.run(["passwd", "ghost", "--password-file", t.passwordFile, ...FAST]);
  assert.equal(passwd.code, EXIT_FAILURE);
  assertError(passwd.stderr, /Device ghost is not registered/);
});

Deno.test("registry list, remove and passwd fail with exit 1 when the data directory is missing", async () => {
  await using t = await setup();
  for (
    const args of [["list"], ["remove", "x"], ["passwd", "x", "--password-file", t.passwordFile]]
  ) {
    const result = await t.run(args);
    assert.equal(result.code, EXIT_FAILURE, args.join(" "));
    assertError(result.stderr, /does not exist/);
  }
  await assert.rejects(Deno.stat(t.data), Deno.errors.NotFound);
});

Deno.test("registry reports a corrupt registry file with exit 1 and its path", async () => {
  await using t = await setup();
  await Deno.mkdir(t.data);
  await Deno.writeTextFile(join(t.data, "registry.json"), "{ oops");
  const list = await t.run(["list"]);
  assert.equal(list.code, EXIT_FAILURE);
  assertError(list.stderr, /registry\.json: not valid JSON/);
});

Deno.test("registry usage errors exit 2 with one line and a hint", async () => {
  await using t = await setup();
  const pw = ["--password-file", t.passwordFile];
  const empty = join(t.root, "empty.txt");
  await Deno.writeTextFile(empty, "\n");
  const cases: [string[], RegExp][] = [
    [["frobnicate"], /Unknown command 'frobnicate'/],
    [["add", "--type", "FAX", ...pw], /add needs a device ID/],
    [["add", "a", "b", "--type", "FAX", ...pw], /Unexpected argument 'b'/],
    [["add", "bad id", "--type", "FAX", ...pw], /may only contain/],
    [["add", "x".repeat(65), "--type", "FAX", ...pw], /maximum is 64/],
    [["add", "fax", ...pw], /add needs --type/],
    [
      ["add", "fax", "--type", "FAX MACHINE", ...pw],
      /Unknown device type "FAX MACHINE": use one of USER, FAX/,
    ],
    [
      ["add", "fax", "--type", "FAX", "--attr", "", ...pw],
      /Unknown attribute "": use one of "FILE TX\/RX"/,
    ],
    [["add", "fax", "--type", "FAX", "--attr", "FILE RX", ...pw], /Unknown attribute "FILE RX"/],
    [["add", "fax", "--type", "FAX"], /add needs --password-file/],
    [["add", "fax", "--type", "FAX", "--password-file", empty], /password .* is empty/],
    [["add", "fax", "--type", "FAX", "--password-file", "-"], /password from stdin is empty/],
    [["add", "fax", "--type", "FAX", "--password-file", join(t.root, "nope")], /not found/],
    [["add", "fax", "--type", "FAX", ...pw, "--hash-cost", "1000"], /--hash-cost 1000/],
    [["add", "fax", "--type", "FAX", ...pw, "--bogus"], /Unknown option '--bogus'/],
    [["add", "fax", "--type"], /Option '--type' argument/], // swallows --data: ambiguous
    [["list", "--type", "FAX"], /Unknown option '--type'/],
    [["list", "extra"], /Unexpected argument 'extra'/],
    [["remove"], /remove needs a device ID/],
    [["passwd", "fax"], /passwd needs --password-file/],
    [["list", "--directory", "http://localhost:6379"], /Invalid directory .* unsupported scheme/],
    [["list", "--directory", "redis://localhost:6379", "--data", "x"], /are alternatives/],
  ];
  for (const [args, pattern] of cases) {
    const result = await t.run(args);
    assert.equal(result.code, EXIT_USAGE, `${args.join(" ")}: ${result.stderr}`);
    assertError(result.stderr, pattern);
    assert.equal(result.stdout, "");
  }
  // None of them created a registry.
  await assert.rejects(Deno.stat(join(t.data, "registry.json")), Deno.errors.NotFound);
});

Deno.test("registry with no arguments prints usage on stderr and exits 2", async () => {
  await using t = await setup();
  const result = await t.run([], { withData: false });
  assert.equal(result.code, EXIT_USAGE);
  assert.match(result.stderr, /^Usage: deno task registry <command>/);
});

Deno.test("registry --help works on the command and each subcommand", async () => {
  await using t = await setup();
  for (const args of [["--help"], ["-h"], ["help"]]) {
    const result = await t.run(args, { withData: false });
    assert.equal(result.code, EXIT_OK);
    assert.match(result.stdout, /Commands:\n {2}add ID/);
  }
  for (const command of ["add", "remove", "list", "passwd"]) {
    for (const args of [[command, "--help"], [command, "-h"], ["help", command]]) {
      const result = await t.run(args, { withData: false });
      assert.equal(result.code, EXIT_OK, args.join(" "));
      assert.match(result.stdout, new RegExp(`^Usage: deno task registry ${command}`));
      assert.equal(result.stderr, "");
      // --hash-cost is a hidden option.
      assert.ok(!result.stdout.includes("hash-cost"));
    }
  }
  await assert.rejects(Deno.stat(t.data), Deno.errors.NotFound);
});

Deno.test("registry --data defaults to TSUNAGI_DATA", async () => {
  await using t = await setup();
  const dir = join(t.root, "from-env");
  const env = { TSUNAGI_DATA: dir };
  const add = await t.run(
    ["add", "printer-7", "--type", "printer", "--password-file", t.passwordFile, ...FAST],
    { env, withData: false },
  );
  assert.equal(add.code, EXIT_OK, add.stderr);
  const registry = await FileRegistry.open(dir);
  assert.equal((await registry.get("printer-7"))?.type, "PRINTER");
  const list = await t.run(["list"], { env, withData: false });
  assert.match(list.stdout, /printer-7 +PRINTER/);
});

Deno.test("registry add normalises type and attributes; set changes them and keeps the password", async () => {
  await using t = await setup();
  const pw = ["--password-file", t.passwordFile, ...FAST];
  const add = await t.run(["add", "fax1", "--type", "fax", "--attr", "file  tx/rx", ...pw]);
  assert.equal(add.code, EXIT_OK, add.stderr);
  const registry = await FileRegistry.open(t.data);
  const before = await registry.get("fax1");
  assert.equal(before?.type, "FAX");
  assert.deepEqual(before?.attributes, ["FILE TX/RX"]);

  const set = await t.run([
    "set",
    "fax1",
    "--type",
    "Printer",
    "--attr",
    "print",
    "--attr",
    "color",
  ]);
  assert.equal(set.code, EXIT_OK, set.stderr);
  assert.equal(set.stdout, "Set device fax1: PRINTER, PRINT, COLOR\n");
  const after = await (await FileRegistry.open(t.data)).get("fax1");
  assert.equal(after?.passwordHash, before?.passwordHash);
  assert.deepEqual(after?.attributes, ["PRINT", "COLOR"]);

  const none = await t.run(["set", "fax1", "--no-attr"]);
  assert.equal(none.code, EXIT_OK, none.stderr);
  assert.deepEqual((await (await FileRegistry.open(t.data)).get("fax1"))?.attributes, []);

  const bad = await t.run(["set", "fax1", "--attr", "FILE TX"]);
  assert.equal(bad.code, EXIT_USAGE);
  assertError(bad.stderr, /Unknown attribute "FILE TX": use one of "FILE TX\/RX", "PRINT"/);
  const nothing = await t.run(["set", "fax1"]);
  assert.equal(nothing.code, EXIT_USAGE);
  assertError(nothing.stderr, /set needs --type, --attr or --no-attr/);
  const ghost = await t.run(["set", "ghost", "--type", "FAX"]);
  assert.equal(ghost.code, EXIT_FAILURE);
});

Deno.test("registry migrate converts version-1 scrypt hashes; the passwords still match", async () => {
  await using t = await setup();
  await Deno.mkdir(t.data, { recursive: true });
  const scrypt = await hashPassword("s3cret", { cost: 1024 });
  const old = { id: "fax-01", type: "FAX", attributes: [], passwordHash: scrypt, updatedAt: 1 };
  const path = join(t.data, "registry.json");
  await Deno.writeTextFile(path, JSON.stringify({ version: 1, devices: [old] }));

  const unmigrated = await t.run(["list"]);
  assert.match(
    unmigrated.stderr,
    /version-1 scrypt hashes, no login until 'deno task registry migrate': 1 device: fax-01/,
  );
  const first = await t.run(["migrate"]);
  assert.equal(first.code, EXIT_OK, first.stderr);
  assert.match(first.stdout, /Migrated 1 device in .* \(0 already had SCRAM verifiers\)/);
  const file = JSON.parse(await Deno.readTextFile(path));
  assert.equal(file.version, 2);
  const stored: string = file.devices[0].passwordHash;
  assert.match(stored, /^scram-sha-256\$4096\$[^$]+\$[^$]+\$[^$]+\$scrypt\$1024\$8\$1\$[^$]+\$32$/);
  assert.ok(!stored.includes(scrypt.split("$")[5]), "the scrypt hash itself is not kept");
  assert.equal(await verifyPassword("s3cret", stored), true);
  assert.equal(await verifyPassword("s3cret!", stored), false);

  // The old hash now works as a password: said at migration and in every list.
  const warning =
    /warning: logging in over a version-1 password hash, .*'deno task registry passwd ID': 1 device: fax-01/;
  assert.match(first.stderr, warning);
  // Its scrypt cost (2^10) is below what agents derive by default: said too.
  assert.match(
    first.stderr,
    /a version-1 scrypt cost that agents refuse by default .*: 1 device: fax-01/,
  );
  const listed = await t.run(["list"]);
  assert.match(listed.stderr, warning);
  const json = await t.run(["list", "--json"]);
  assert.equal(JSON.parse(json.stdout)[0].migrated, true);

  const again = await t.run(["migrate"]);
  assert.equal(again.code, EXIT_OK, again.stderr);
  assert.match(again.stdout, /Migrated 0 devices .* \(1 already had SCRAM verifiers\)/);
  await Deno.writeTextFile(join(t.root, "new.pw"), "fresh\n");
  const passwd = await t.run(["passwd", "fax-01", "--password-file", join(t.root, "new.pw")]);
  assert.equal(passwd.code, EXIT_OK, passwd.stderr);
  const rotated = await t.run(["list"]);
  assert.doesNotMatch(rotated.stderr, /warning/);
});
