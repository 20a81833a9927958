/**
 * `tsunagi-registry`: the admin CLI that registers devices before they can log in
 * (patent [0023]: unregistered IDs are refused).
 *
 * Run as `deno task registry <command> ...`. It edits the same `registry.json` a
 * running relay reads; the relay notices the change at the next login. With
 * `--directory redis://HOST:PORT[/DB]` it edits the registrations in Redis that relays
 * in the shared-database mode read instead. Passwords are
 * read from a file or stdin, never from the command line, so they do not end up in
 * shell history or the process list, and are stored only as SCRAM-SHA-256 verifiers
 * (verifier.ts). `migrate` converts a version-1 registry's scrypt hashes.
 *
 * Exit codes: 0 success, 1 operational error (ID exists, ID not found, unreadable
 * registry), 2 usage error (bad flag or value). Errors are one line on stderr,
 * `tsunagi-registry: <message>`, followed by a `hint:` line.
 *
 * @example
 * ```sh
 * printf 's3cret' | deno task registry add fax-01 --type FAX --attr "FILE TX/RX" --password-file -
 * deno task registry list
 * ```
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "../../shared/errors.ts";
import {
  DEFAULT_ITERATIONS,
  isScryptHash,
  makeVerifier,
  migrateScryptHash,
  MIN_VERIFIER_ITERATIONS,
  parseVerifier,
} from "./verifier.ts";
import { challengeCostError, DEFAULT_MIN_ITERATIONS } from "../../shared/scram.ts";
import { DirectoryUnavailableError, parseRedisUrl } from "../redis/redis_conn.ts";
import { RedisRegistry } from "../redis/redis_registry.ts";
import { checkLayout, migrateLayout } from "../redis/redis_migrate.ts";
import {
  DEVICE_ATTRIBUTES,
  DEVICE_TYPES,
  FileRegistry,
  normalizeAttribute,
  normalizeDeviceType,
  type Registration,
  RegistryCorruptError,
  type RegistryStore,
  validateDeviceId,
} from "./registry.ts";

/** Exit code: success. */
export const EXIT_OK = 0;
/** Exit code: the command was valid but failed (ID exists, not found, I/O error). */
export const EXIT_FAILURE = 1;
/** Exit code: the command line was wrong. */
export const EXIT_USAGE = 2;

/** Where {@link registryMain} reads and writes; defaults to the process's own. */
export interface RegistryMainOptions {
  /** Receives standard output text (default: `Deno.stdout`). */
  stdout?: (text: string) => void;
  /** Receives standard error text (default: `Deno.stderr`). */
  stderr?: (text: string) => void;
  /** Read for `--password-file -` (default: `Deno.stdin.readable`). */
  stdin?: ReadableStream<Uint8Array>;
  /** Environment lookup, for `TSUNAGI_DATA` (default: `Deno.env.get`). */
  env?: (name: string) => string | undefined;
  /** Clock for `updatedAt`, in ms (default: `Date.now`). */
  now?: () => number;
}

const PROGRAM = "tsunagi-registry";
const DEFAULT_DATA_DIR = "./tsunagi-data";

const MAIN_HELP = `Usage: deno task registry <command> [options]

Manage the devices allowed to log in to a tsunagi relay.

Commands:
  add ID       register a device
  set ID       change a device's type or attributes
  remove ID    unregister a device
  list         show registered devices
  passwd ID    change a device's password
  migrate      convert version-1 password hashes to SCRAM verifiers

Options for every command:
  --data DIR   data directory holding registry.json
               (default: $TSUNAGI_DATA or ${DEFAULT_DATA_DIR})
  --directory redis://HOST:PORT[/DB]
               act on the registrations in this Redis database instead
               (the relays' shared directory; see docs/operations.md)
  -h, --help   show help for the command

Exit codes: 0 success, 1 operation failed, 2 usage error.
Run 'deno task registry <command> --help' for a command's options.
`;

const COMMAND_HELP: Record<string, string> = {
  add:
    `Usage: deno task registry add ID --type TYPE [--attr ATTR]... --password-file FILE [--data DIR]

Register device ID. Fails if ID is already registered (use passwd to change a password).

  ID                    1-64 characters of A-Z a-z 0-9 . _ @ -
  --type TYPE           device type: ${DEVICE_TYPES.join(", ")} (any case)
  --attr ATTR           attribute tied to the type, repeatable, any case:
                        ${DEVICE_ATTRIBUTES.map((a) => JSON.stringify(a)).join(", ")};
                        a FAX needs "FILE TX/RX" to receive files
  --password-file FILE  file holding the password; '-' reads stdin.
                        One trailing newline is removed; empty passwords are refused.
  --data DIR            data directory (default: $TSUNAGI_DATA or ${DEFAULT_DATA_DIR})
  --directory URL       use the registrations in Redis (redis://HOST:PORT[/DB])
  -h, --help            show this help
`,
  set: `Usage: deno task registry set ID [--type TYPE] [--attr ATTR]... [--no-attr] [--data DIR]

Change the type or attributes of registered device ID; the password stays.
--attr replaces all attributes; --no-attr removes them. A device logged in stays logged
in; relays show the new type and attributes within about a second.

  --type TYPE      device type: ${DEVICE_TYPES.join(", ")} (any case)
  --attr ATTR      attribute, repeatable: ${
    DEVICE_ATTRIBUTES.map((a) => JSON.stringify(a)).join(", ")
  }
  --no-attr        no attributes
  --data DIR       data directory (default: $TSUNAGI_DATA or ${DEFAULT_DATA_DIR})
  --directory URL  use the registrations in Redis (redis://HOST:PORT[/DB])
  -h, --help       show this help
`,
  remove: `Usage: deno task registry remove ID [--data DIR]

Unregister device ID. Every relay reading this registry (or in its mesh) closes the
device's connections and forgets its login tickets within about a second.

  --data DIR   data directory (default: $TSUNAGI_DATA or ${DEFAULT_DATA_DIR})
  --directory URL  use the registrations in Redis (redis://HOST:PORT[/DB])
  -h, --help   show this help
`,
  migrate: `Usage: deno task registry migrate [--data DIR]

Convert the scrypt password hashes of a version-1 registry (tsunagi 0.1) into SCRAM-SHA-256
verifiers, without the passwords: devices keep their passwords. With --directory, first move
Redis keys of key layout 1 to layout 2 (hash-tagged, fit for Redis Cluster); stop the relays
before. Safe to run twice; run it before upgrading the relays (docs/operations.md,
"Upgrading the registry").

  --data DIR       data directory (default: $TSUNAGI_DATA or ${DEFAULT_DATA_DIR})
  --directory URL  use the registrations in Redis (redis://HOST:PORT[/DB])
  -h, --help       show this help
`,
  list: `Usage: deno task registry list [--data DIR] [--json]

Show registered devices as a table (ID, TYPE, ATTRIBUTES, UPDATED), sorted by ID.

  --json       print a JSON array instead (without password hashes)
  --data DIR   data directory (default: $TSUNAGI_DATA or ${DEFAULT_DATA_DIR})
  --directory URL  use the registrations in Redis (redis://HOST:PORT[/DB])
  -h, --help   show this help
`,
  passwd: `Usage: deno task registry passwd ID --password-file FILE [--data DIR]

Change the password of registered device ID. Every relay reading this registry (or in
its mesh) closes the device's connections and forgets its login tickets within about a
second: the device must log in with the new password.

  --password-file FILE  file holding the password; '-' reads stdin.
                        One trailing newline is removed; empty passwords are refused.
  --data DIR            data directory (default: $TSUNAGI_DATA or ${DEFAULT_DATA_DIR})
  --directory URL       use the registrations in Redis (redis://HOST:PORT[/DB])
  -h, --help            show this help
`,
};

type Options = NonNullable<ParseArgsConfig["options"]>;

const COMMON_OPTIONS: Options = {
  data: { type: "string" },
  directory: { type: "string" },
  help: { type: "boolean", short: "h" },
};

const PASSWORD_OPTIONS: Options = {
  "password-file": { type: "string" },
  // Hidden: PBKDF2 iterations, lets tests and benchmarks derive fast.
  "hash-cost": { type: "string" },
};

const COMMAND_OPTIONS: Record<string, Options> = {
  add: {
    ...COMMON_OPTIONS,
    ...PASSWORD_OPTIONS,
    type: { type: "string" },
    attr: { type: "string", multiple: true },
  },
  set: {
    ...COMMON_OPTIONS,
    type: { type: "string" },
    attr: { type: "string", multiple: true },
    "no-attr": { type: "boolean" },
  },
  remove: { ...COMMON_OPTIONS },
  migrate: { ...COMMON_OPTIONS },
  list: { ...COMMON_OPTIONS, json: { type: "boolean" } },
  passwd: { ...COMMON_OPTIONS, ...PASSWORD_OPTIONS },
};

/** Parsed option values: strings, booleans, or string arrays for repeatable options. */
type Values = Record<string, string | boolean | string[] | undefined>;

/** A command failed for a reason other than its command line (exit code 1). */
class CommandError extends Error {
  readonly hint: string;
  constructor(message: string, hint: string) {
    super(message);
    this.name = "CommandError";
    this.hint = hint;
  }
}

/** Everything a command needs, resolved from the command line and the environment. */
interface Context {
  values: Values;
  positionals: string[];
  out: (text: string) => void;
  err: (text: string) => void;
  stdin: () => ReadableStream<Uint8Array>;
  dataDir: string;
  /** Redis URL when registrations live in Redis. */
  directory: string | undefined;
  now: () => number;
}

/**
 * Runs the registry CLI with `args` (without the program name) and resolves to the
 * exit code: 0 success, 1 operational error, 2 usage error. Never throws for a user
 * mistake; it prints one error line and a hint instead.
 */
export async function registryMain(
  args: string[],
  options: RegistryMainOptions = {},
): Promise<number> {
  const out = options.stdout ?? writer(Deno.stdout);
  const err = options.stderr ?? writer(Deno.stderr);
  try {
    const [command, ...rest] = args;
    if (command === undefined) {
      err(MAIN_HELP);
      return EXIT_USAGE;
    }
    if (command === "--help" || command === "-h") {
      out(MAIN_HELP);
      return EXIT_OK;
    }
    if (command === "help") {
      const topic = rest[0];
      if (topic === undefined) out(MAIN_HELP);
      else if (Object.hasOwn(COMMAND_HELP, topic)) out(COMMAND_HELP[topic]);
      else throw unknownCommand(topic);
      return EXIT_OK;
    }
    if (!Object.hasOwn(COMMAND_OPTIONS, command)) throw unknownCommand(command);

    const { values, positionals } = parse(command, rest);
    if (values.help) {
      out(COMMAND_HELP[command]);
      return EXIT_OK;
    }
    const directory = values.directory as string | undefined;
    if (directory !== undefined) {
      try {
        parseRedisUrl(directory);
      } catch (e) {
        throw new UsageError((e as Error).message, "e.g. --directory redis://127.0.0.1:6379");
      }
      if (values.data !== undefined) {
        throw new UsageError(
          "--data and --directory are alternatives",
          "registrations live either in a data directory or in Redis",
        );
      }
    }
    const env = options.env ?? ((name: string) => Deno.env.get(name));
    const context: Context = {
      values,
      positionals,
      out,
      err,
      stdin: () => options.stdin ?? Deno.stdin.readable,
      dataDir: (values.data as string | undefined) ?? (env("TSUNAGI_DATA") || DEFAULT_DATA_DIR),
      directory,
      now: options.now ?? Date.now,
    };
    if (context.dataDir === "") {
      throw new UsageError(
        "--data must not be empty",
        "give a directory, e.g. --data ./tsunagi-data",
      );
    }
    switch (command) {
      case "add":
        return await add(context);
      case "set":
        return await set(context);
      case "remove":
        return await remove(context);
      case "list":
        return await list(context);
      case "passwd":
        return await passwd(context);
      case "migrate":
        return await migrate(context);
      default:
        throw unknownCommand(command);
    }
  } catch (e) {
    return report(e, err);
  }
}

function parse(command: string, args: string[]): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: COMMAND_OPTIONS[command],
      strict: true,
      allowPositionals: true,
    });
    return { values: values as Values, positionals };
  } catch (e) {
    if ((e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      throw new UsageError(firstSentence((e as Error).message), helpHint(command));
    }
    throw e;
  }
}

async function add(ctx: Context): Promise<number> {
  const id = deviceIdArgument(ctx, "add");
  const typeValue = ctx.values.type as string | undefined;
  if (typeValue === undefined) {
    throw new UsageError("add needs --type", "e.g. --type USER, --type FAX or --type PRINTER");
  }
  const type = deviceType(typeValue);
  const attributes = deviceAttributes(ctx);
  const cost = hashCost(ctx);
  const password = await readPassword(ctx, "add");

  await using store = await openStore(ctx, { create: true });
  const registry = store.registry;
  if (await registry.get(id)) {
    throw new CommandError(
      `Device ${id} is already registered`,
      `use 'deno task registry passwd ${id}' to change its password, or remove it first`,
    );
  }
  const reg: Registration = {
    id,
    type,
    attributes,
    passwordHash: await makeVerifier(password, { iterations: cost }),
    updatedAt: ctx.now(),
  };
  await registry.put(reg);
  ctx.out(`Added device ${id} (${type}) to ${store.where}\n`);
  return EXIT_OK;
}

/** `set ID [--type T] [--attr A]...`: changes a device's type and attributes. */
async function set(ctx: Context): Promise<number> {
  const id = deviceIdArgument(ctx, "set");
  const typeValue = ctx.values.type as string | undefined;
  const type = typeValue === undefined ? undefined : deviceType(typeValue);
  if (ctx.values.attr !== undefined && ctx.values["no-attr"] === true) {
    throw new UsageError("--attr and --no-attr are alternatives", helpHint("set"));
  }
  const attrGiven = ctx.values.attr !== undefined || ctx.values["no-attr"] === true;
  const attributes = deviceAttributes(ctx);
  if (type === undefined && !attrGiven) {
    throw new UsageError("set needs --type, --attr or --no-attr", helpHint("set"));
  }
  await using store = await openStore(ctx, { create: false });
  const current = await store.registry.get(id);
  if (!current) throw notFound(id);
  const next: Registration = {
    ...current,
    type: type ?? current.type,
    attributes: attrGiven ? attributes : current.attributes,
    updatedAt: ctx.now(),
  };
  await store.registry.put(next);
  ctx.out(
    `Set device ${id}: ${next.type}${
      next.attributes.length > 0 ? `, ${next.attributes.join(", ")}` : ", no attributes"
    }\n`,
  );
  return EXIT_OK;
}

/** A known device type from `--type`, normalised; a usage error listing them otherwise. */
function deviceType(text: string): string {
  const type = normalizeDeviceType(text);
  if (type.error !== undefined) throw new UsageError(type.error, "e.g. --type FAX");
  return type.value;
}

/** Known attributes from `--attr`, normalised and without duplicates. */
function deviceAttributes(ctx: Context): string[] {
  const attributes: string[] = [];
  for (const text of (ctx.values.attr as string[] | undefined) ?? []) {
    const attribute = normalizeAttribute(text);
    if (attribute.error !== undefined) {
      throw new UsageError(attribute.error, 'quote attributes with spaces: --attr "FILE TX/RX"');
    }
    if (!attributes.includes(attribute.value)) attributes.push(attribute.value);
  }
  return attributes;
}

async function remove(ctx: Context): Promise<number> {
  const id = deviceIdArgument(ctx, "remove");
  await using store = await openStore(ctx, { create: false });
  if (!(await store.registry.remove(id))) throw notFound(id);
  ctx.out(`Removed device ${id} from ${store.where}\n`);
  return EXIT_OK;
}

async function passwd(ctx: Context): Promise<number> {
  const id = deviceIdArgument(ctx, "passwd");
  const cost = hashCost(ctx);
  passwordFile(ctx, "passwd");
  await using store = await openStore(ctx, { create: false });
  const registry = store.registry;
  // Check before reading the password, so a typo in ID fails before stdin is consumed.
  if (!(await registry.get(id))) throw notFound(id);
  const password = await readPassword(ctx, "passwd");
  const passwordHash = await makeVerifier(password, { iterations: cost });
  // Re-read after the (slow) hash so a concurrent change of type or attributes is kept.
  const current = await registry.get(id);
  if (!current) throw notFound(id);
  await registry.put({ ...current, passwordHash, updatedAt: ctx.now() });
  ctx.out(`Changed the password of device ${id}\n`);
  return EXIT_OK;
}

/** `migrate`: converts every scrypt hash into a SCRAM verifier (passwords unchanged). */
async function migrate(ctx: Context): Promise<number> {
  if (ctx.positionals.length > 0) {
    throw new UsageError(`Unexpected argument '${ctx.positionals[0]}'`, helpHint("migrate"));
  }
  await using store = await openStore(ctx, { create: false, migrating: true });
  if (store.registry instanceof RedisRegistry) {
    const { conn, keys } = store.registry;
    const moved = await migrateLayout(conn, keys);
    ctx.out(
      `Key layout 2 in ${store.where}: moved ${moved.moved} registration${
        moved.moved === 1 ? "" : "s"
      }, kept ${moved.kept} already moved, dropped ${moved.dropped} old presence keys\n`,
    );
  }
  const changes: { id: string; reg: Registration }[] = [];
  let kept = 0;
  for (const reg of await store.registry.list()) {
    if (!isScryptHash(reg.passwordHash)) {
      kept++;
      continue;
    }
    const passwordHash = await migrateScryptHash(reg.passwordHash);
    if (passwordHash === null) {
      throw new CommandError(
        `Device ${reg.id} has a malformed password hash`,
        `set a new password with 'deno task registry passwd ${reg.id}', then run migrate again`,
      );
    }
    changes.push({ id: reg.id, reg: { ...reg, passwordHash, updatedAt: ctx.now() } });
  }
  if (store.registry.applyMany) await store.registry.applyMany(changes);
  else for (const c of changes) await store.registry.put(c.reg);
  ctx.out(
    `Migrated ${changes.length} device${changes.length === 1 ? "" : "s"} in ${store.where}` +
      ` (${kept} already had SCRAM verifiers)\n`,
  );
  warnHashes(ctx, changes.map((c) => ({ id: c.id, passwordHash: c.reg.passwordHash })));
  return EXIT_OK;
}

async function list(ctx: Context): Promise<number> {
  if (ctx.positionals.length > 0) {
    throw new UsageError(`Unexpected argument '${ctx.positionals[0]}'`, helpHint("list"));
  }
  await using store = await openStore(ctx, { create: false });
  const devices = await store.registry.list();
  if (ctx.values.json) {
    const rows = devices.map(({ id, type, attributes, updatedAt, passwordHash }) => ({
      id,
      type,
      attributes,
      updatedAt,
      migrated: hashState(passwordHash) !== null,
    }));
    ctx.out(JSON.stringify(rows, null, 2) + "\n");
    return EXIT_OK;
  }
  ctx.out(
    formatTable([
      ["ID", "TYPE", "ATTRIBUTES", "UPDATED"],
      ...devices.map((d) => [
        d.id,
        d.type,
        d.attributes.length > 0 ? d.attributes.join(", ") : "-",
        formatTime(d.updatedAt),
      ]),
    ]),
  );
  if (devices.length === 0) ctx.err(`No devices registered in ${store.where}\n`);
  warnHashes(ctx, devices);
  return EXIT_OK;
}

/** What a stored password hash means for logins, when it is not a plain verifier. */
type HashState = "v1" | "migrated" | "weak" | null;

function hashState(passwordHash: string): HashState {
  if (isScryptHash(passwordHash)) return "v1";
  const prehash = parseVerifier(passwordHash)?.prehash ?? "";
  if (prehash === "") return null;
  const iterations = parseVerifier(passwordHash)!.verifier.iterations;
  return challengeCostError(iterations, prehash, DEFAULT_MIN_ITERATIONS) === null
    ? "migrated"
    : "weak";
}

/**
 * Says which devices hold a version-1 hash (no login until `migrate`), log in over one
 * (that old hash now works as their password wherever a copy survives), or over one an
 * agent refuses by default (too cheap or too costly a scrypt).
 */
function warnHashes(ctx: Context, regs: { id: string; passwordHash: string }[]) {
  const by = (state: HashState) => regs.filter((r) => hashState(r.passwordHash) === state);
  const list = (ids: { id: string }[]) =>
    `${ids.length} device${ids.length === 1 ? "" : "s"}: ` +
    ids.slice(0, 5).map((r) => r.id).join(", ") + (ids.length > 5 ? ", ..." : "");
  const v1 = by("v1");
  if (v1.length > 0) {
    ctx.err(
      `warning: version-1 scrypt hashes, no login until 'deno task registry migrate': ` +
        `${list(v1)}\n`,
    );
  }
  const migrated = [...by("migrated"), ...by("weak")];
  if (migrated.length > 0) {
    ctx.err(
      "warning: logging in over a version-1 password hash, so anyone holding an old copy of " +
        "the registry (backup, Redis dump) can log in as them; delete those copies, or set " +
        `new passwords with 'deno task registry passwd ID': ${list(migrated)}\n`,
    );
  }
  const weak = by("weak");
  if (weak.length > 0) {
    ctx.err(
      "warning: a version-1 scrypt cost that agents refuse by default (below N=2^14, above " +
        "2^17, or not r=8, p=1); set new passwords with 'deno task registry passwd ID': " +
        `${list(weak)}\n`,
    );
  }
}

function deviceIdArgument(ctx: Context, command: string): string {
  if (ctx.positionals.length === 0) {
    throw new UsageError(`${command} needs a device ID`, helpHint(command));
  }
  if (ctx.positionals.length > 1) {
    throw new UsageError(`Unexpected argument '${ctx.positionals[1]}'`, helpHint(command));
  }
  const id = ctx.positionals[0];
  const error = validateDeviceId(id);
  if (error) throw new UsageError(error, "e.g. fax-01 or alice@example.com");
  return id;
}

function hashCost(ctx: Context): number | undefined {
  const text = ctx.values["hash-cost"] as string | undefined;
  if (text === undefined) return undefined;
  const cost = /^[0-9]{1,8}$/.test(text) ? Number(text) : NaN;
  if (!(cost >= MIN_VERIFIER_ITERATIONS && cost <= 10_000_000)) {
    throw new UsageError(
      `--hash-cost ${text} is not a PBKDF2 iteration count from ${MIN_VERIFIER_ITERATIONS} to 10000000`,
      `omit --hash-cost to use the default (${DEFAULT_ITERATIONS})`,
    );
  }
  return cost;
}

/** The `--password-file` value; a usage error if it is missing. */
function passwordFile(ctx: Context, command: string): string {
  const file = ctx.values["password-file"] as string | undefined;
  if (file === undefined) {
    throw new UsageError(
      `${command} needs --password-file`,
      "pass a file holding the password, or '-' to read it from stdin",
    );
  }
  return file;
}

async function readPassword(ctx: Context, command: string): Promise<string> {
  const file = passwordFile(ctx, command);
  let text: string;
  try {
    text = file === "-" ? await new Response(ctx.stdin()).text() : await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UsageError(`Cannot read password file ${file}: not found`, "check the path");
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new UsageError(
        `Cannot read password file ${file}: permission denied`,
        "check the file's permissions (and that deno runs with --allow-read)",
      );
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new UsageError(
        `Cannot read password file ${file}: it is a directory`,
        "check the path",
      );
    }
    throw e;
  }
  const password = text.replace(/\r?\n$/, "");
  if (password === "") {
    throw new UsageError(
      `The password ${file === "-" ? "from stdin" : `in ${file}`} is empty`,
      "put the password in the file (one trailing newline is ignored)",
    );
  }
  return password;
}

/** An open registry: file or Redis, with where it is for messages. */
interface Store extends AsyncDisposable {
  registry: RegistryStore;
  where: string;
}

/**
 * Opens the registry: in Redis with --directory, else in the data directory (which
 * must exist unless `create`).
 */
async function openStore(
  ctx: Context,
  options: { create: boolean; migrating?: boolean },
): Promise<Store> {
  if (ctx.directory !== undefined) {
    const registry = await RedisRegistry.open(ctx.directory);
    try {
      if (!options.migrating && await checkLayout(registry.conn, registry.keys) === "legacy") {
        throw new CommandError(
          `Redis at ${registry.path} holds registrations in key layout 1`,
          `stop the relays and run 'deno task registry migrate --directory ${registry.path}'`,
        );
      }
    } catch (e) {
      await registry.close();
      throw e;
    }
    return { registry, where: registry.path, [Symbol.asyncDispose]: () => registry.close() };
  }
  const registry = options.create ? await FileRegistry.open(ctx.dataDir) : await openExisting(ctx);
  return { registry, where: registry.path, [Symbol.asyncDispose]: () => Promise.resolve() };
}

/** Opens the registry of a data directory that must already exist. */
async function openExisting(ctx: Context): Promise<FileRegistry> {
  try {
    const info = await Deno.stat(ctx.dataDir);
    if (!info.isDirectory) {
      throw new CommandError(`Data directory ${ctx.dataDir} is not a directory`, dataHint());
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CommandError(`Data directory ${ctx.dataDir} does not exist`, dataHint());
    }
    throw e;
  }
  return await FileRegistry.open(ctx.dataDir);
}

function notFound(id: string): CommandError {
  return new CommandError(
    `Device ${id} is not registered`,
    "run 'deno task registry list' to see registered devices",
  );
}

function unknownCommand(command: string): UsageError {
  return new UsageError(
    `Unknown command '${command}'`,
    "commands are add, set, remove, list, passwd, migrate; run 'deno task registry --help'",
  );
}

function helpHint(command: string): string {
  return `run 'deno task registry ${command} --help' for usage`;
}

function dataHint(): string {
  return "check --data or TSUNAGI_DATA ('add' creates the directory)";
}

/** Prints `e` as one error line plus a hint and picks the exit code. */
function report(e: unknown, err: (text: string) => void): number {
  let code = EXIT_FAILURE;
  let message: string;
  let hint: string;
  if (e instanceof UsageError) {
    code = EXIT_USAGE;
    message = e.message;
    hint = e.hint || "run 'deno task registry --help' for usage";
  } else if (e instanceof CommandError) {
    message = e.message;
    hint = e.hint;
  } else if (e instanceof DirectoryUnavailableError) {
    message = e.message;
    hint = "check --directory, and that redis-server is running and reachable";
  } else if (e instanceof RegistryCorruptError) {
    message = e.message;
    hint = `repair ${e.path} or restore it from a backup`;
  } else if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    message = (e as Error).message;
    hint =
      "check file permissions, and run through 'deno task registry' for the needed --allow flags";
  } else {
    message = e instanceof Error ? e.message : String(e);
    hint = "this is unexpected; please report it with the command you ran";
  }
  err(`${PROGRAM}: ${message}\nhint: ${hint}\n`);
  return code;
}

/** parseArgs messages run to several sentences and lines; the first one says it all. */
function firstSentence(message: string): string {
  return message.split(/\.(?:\s|$)|\n/, 1)[0];
}

function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, col) => Math.max(...rows.map((row) => row[col].length)));
  return rows.map((row) =>
    row.map((cell, col) => col === row.length - 1 ? cell : cell.padEnd(widths[col])).join("  ") +
    "\n"
  ).join("");
}

/** ISO 8601 in UTC, to the second: `2026-11-03T10:00:00Z`. */
function formatTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function writer(stream: { writeSync(p: Uint8Array): number }): (text: string) => void {
  const encoder = new TextEncoder();
  return (text) => {
    const bytes = encoder.encode(text);
    let written = 0;
    while (written < bytes.length) written += stream.writeSync(bytes.subarray(written));
  };
}

if (import.meta.main) Deno.exit(await registryMain(Deno.args));
