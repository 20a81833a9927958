/**
 * `deno task relay`: the relay server's command line.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseHostPort } from "../shared/address.ts";
import { invokedAs, parseDuration, printError } from "../shared/cli.ts";
import { UsageError } from "../shared/errors.ts";
import { describeReadError } from "../shared/json_file.ts";
import { Logger, parseLogFormat, parseLogLevel } from "../shared/log.ts";
import { applyConfigFile } from "./config_file.ts";
import { EmbeddedDirectory } from "./directory.ts";
import { MeshDirectory } from "./mesh/mesh.ts";
import { RedisDirectory } from "./redis/redis_directory.ts";
import { FileRegistry, type RegistryStore } from "./registry/registry.ts";
import { isScryptHash } from "./registry/verifier.ts";
import { DEFAULT_PORT, type RelayHandle, startRelay } from "./server.ts";
import { checkAdminOptions } from "./admin/mod.ts";

/** The command that started this relay, for help and hints. */
const RELAY_CMD = invokedAs("TSUNAGI_RELAY_CMD", "deno task relay");

const HELP = `tsunagi relay: lets devices behind NAT reach each other by ID.

Usage: ${RELAY_CMD} [options]

Options:
  --config FILE             JSON config file: every option below has a key, named
                            like the flag without "--" (see docs/operations.md);
                            flags given on the command line override it
  --listen HOST:PORT        address to listen on (default 127.0.0.1:${DEFAULT_PORT})
  --name NAME               relay name shown in the directory (default relay-<port>)
  --data DIR                folder for the device registry (default $TSUNAGI_DATA
                            or ./tsunagi-data)
  --tls-cert FILE           serve TLS with this PEM certificate chain (needs --tls-key)
  --tls-key FILE            PEM private key for --tls-cert
  --tls-ca FILE             dial other relays with TLS, trusting this PEM CA

Devices:
  --keepalive DURATION      keep-alive interval asked of devices (default 15s);
                            idle connections silent for 3 intervals are closed
  --login-timeout DURATION  a new connection must log in within this (default 10s)
  --answer-timeout DURATION a target must accept or reject within this (default 10s)

Relay mesh (share connection information, route sessions across relays):
  --mesh-secret-file FILE   shared secret that authenticates relay links (>= 16 bytes);
                            enables the mesh
  --peer HOST:PORT          relay to link with (repeatable; need not be a full mesh)
  --advertise HOST:PORT     address other relays dial to reach this one
                            (default: the --listen address)
  --mesh-heartbeat DURATION each relay link is pinged this often (default 2s)
  --mesh-timeout DURATION   a silent link is dropped, and a relay no live path reaches
                            is unreachable, within this (default 10s)
  --mesh-refresh DURATION   this relay's record is re-announced this often even
                            unchanged (default 5m; it floods at once on a change)

Shared database (instead of the mesh: every relay reads and writes one Redis):
  --directory redis://HOST:PORT[/DB]
                            keep registrations and connection information in Redis;
                            manage devices with deno task registry ... --directory URL.
                            --mesh-secret-file then only authenticates relay links

Admin HTTP listener (off by default):
  --admin HOST:PORT         serve /metrics (Prometheus), /healthz, /readyz and a live
                            status page at http://HOST:PORT/ (e.g. 127.0.0.1:9780)
  --admin-token-file FILE   require "Authorization: Bearer <token in FILE>" (>= 16 bytes);
                            needed to bind anything but a loopback address

Limits (what one peer can make the relay hold; refused with a clear error code):
  --max-unauth-per-address N  connections not yet logged in, per address or IPv6 /64 (default 64)
  --max-unauth N              connections not yet logged in, in total (default 4096)
  --max-conns-per-device N    connections of one device (default 256)
  --max-sessions-per-device N sessions one device takes part in at once (default 128)
  --session-idle-timeout DURATION
                              a session silent both ways this long is closed
                              (default 10m; 0 = never)
  --target-wait DURATION      a request for a target whose connections are all busy
                              waits this long for one to become idle (default 2s;
                              0 = refuse TargetBusy at once)
  --max-waiting-per-target N  requests waiting for one target at once (default 128)
  --connect-rate N            connection requests per second one device may send on
                              average; more are refused RateLimited (default 100;
                              0 = no limit)
  --connect-burst N           connection requests one device may send at once
                              (default 400)

Logging:
  --log-format text|json    log format on stderr (default text)
  --log-level LEVEL         debug, info, warn or error (default info)
  -h, --help                show this help

Register devices first: deno task registry add ID --type FAX --password-file F
Exit codes: 0 stopped cleanly, 1 failed at run time, 2 bad options.`;

/** The relay's flags; the config file has one key per flag (see config_file.ts). */
const OPTIONS = {
  config: { type: "string" },
  listen: { type: "string" },
  name: { type: "string" },
  data: { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-ca": { type: "string" },
  "mesh-secret-file": { type: "string" },
  peer: { type: "string", multiple: true },
  advertise: { type: "string" },
  "mesh-heartbeat": { type: "string" },
  "mesh-timeout": { type: "string" },
  "mesh-refresh": { type: "string" },
  directory: { type: "string" },
  // Hidden, for tests: lifetime of this relay's key in Redis (default 10s).
  "directory-ttl": { type: "string" },
  "clock-offset-ms": { type: "string" },
  keepalive: { type: "string" },
  "login-timeout": { type: "string" },
  "answer-timeout": { type: "string" },
  admin: { type: "string" },
  "admin-token-file": { type: "string" },
  "max-unauth-per-address": { type: "string" },
  "max-unauth": { type: "string" },
  "max-conns-per-device": { type: "string" },
  "max-sessions-per-device": { type: "string" },
  "target-wait": { type: "string" },
  "max-waiting-per-target": { type: "string" },
  "connect-rate": { type: "string" },
  "connect-burst": { type: "string" },
  "session-idle-timeout": { type: "string" },
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Relay flag values after the config file is applied. */
type RelayValues = {
  [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[]
    : (typeof OPTIONS)[K]["type"] extends "boolean" ? boolean
    : string;
};

/** Parses relay options and runs until SIGINT/SIGTERM. Returns the exit code. */
export async function relayMain(args: string[]): Promise<number> {
  let relay: RelayHandle;
  let listen = `127.0.0.1:${DEFAULT_PORT}`;
  try {
    const { values: flags } = parseArgs({
      args,
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
    });
    if (flags.help) {
      console.log(HELP);
      return 0;
    }
    const values = (flags.config !== undefined
      ? await applyConfigFile(flags.config, OPTIONS, flags)
      : flags) as RelayValues;
    listen = values.listen ?? listen;
    const { hostname, port } = parseHostPort(listen);
    const logger = new Logger({
      component: "relay",
      format: parseLogFormat(values["log-format"] ?? "text"),
      level: parseLogLevel(values["log-level"] ?? "info"),
    });
    if (!!values["tls-cert"] !== !!values["tls-key"]) {
      throw new UsageError("--tls-cert and --tls-key go together", "give both, or neither");
    }
    const tls = values["tls-cert"]
      ? {
        cert: await readText(values["tls-cert"], "--tls-cert"),
        key: await readText(values["tls-key"]!, "--tls-key"),
      }
      : undefined;
    if (values["admin-token-file"] !== undefined && values.admin === undefined) {
      throw new UsageError("--admin-token-file needs --admin", "e.g. --admin 127.0.0.1:9780");
    }
    const admin = values.admin === undefined ? undefined : {
      ...parseHostPort(values.admin),
      token: values["admin-token-file"] === undefined
        ? undefined
        : (await readText(values["admin-token-file"], "--admin-token-file")).trim(),
    };
    if (admin) {
      checkAdminOptions(admin);
    }
    const dataDir = values.data ?? Deno.env.get("TSUNAGI_DATA") ?? "./tsunagi-data";
    // Hidden, for tests of clock skew: this relay's wall clock runs this far off.
    const offset = Number(values["clock-offset-ms"] ?? 0);
    const now = offset === 0 ? Date.now : () =>
      Date.now() + offset;
    const peers = (values.peer ?? []).map((p) => parseHostPort(p));
    const meshSecret = values["mesh-secret-file"]
      ? await readSecret(values["mesh-secret-file"])
      : undefined;
    if (peers.length > 0 && !meshSecret) {
      throw new UsageError(
        "--peer needs --mesh-secret-file",
        "give every relay the same secret file",
      );
    }
    const tlsCa = values["tls-ca"] ? await readText(values["tls-ca"], "--tls-ca") : undefined;
    const advertise = values.advertise ? parseHostPort(values.advertise) : undefined;
    if (values.directory !== undefined && peers.length > 0) {
      throw new UsageError(
        "--directory and --peer are alternatives",
        "share connection information either through Redis or through the mesh",
      );
    }
    if (values.directory !== undefined && !meshSecret) {
      logger.warn("no --mesh-secret-file: relay links are off", {
        effect: "devices on other relays answer TargetUnreachable; give every relay the same " +
          "--mesh-secret-file to forward sessions between them",
      });
    }
    const directory = values.directory !== undefined
      ? await RedisDirectory.open(values.directory, {
        logger,
        ttlMs: optionalDuration(values, "directory-ttl"),
      })
      : meshSecret
      ? new MeshDirectory({
        registry: await FileRegistry.open(dataDir),
        dataDir,
        peers,
        secret: meshSecret,
        tlsCa,
        heartbeatMs: optionalDuration(values, "mesh-heartbeat"),
        timeoutMs: optionalDuration(values, "mesh-timeout"),
        refreshMs: optionalDuration(values, "mesh-refresh"),
        logger,
        now,
      })
      : new EmbeddedDirectory(await FileRegistry.open(dataDir));
    await warnUnmigrated(directory.registry, logger);
    relay = await startRelay({
      hostname,
      port,
      name: values.name,
      directory,
      tls,
      now,
      advertise,
      meshSecret,
      linkTlsCa: tlsCa,
      keepaliveMs: optionalDuration(values, "keepalive"),
      loginTimeoutMs: optionalDuration(values, "login-timeout"),
      answerTimeoutMs: optionalDuration(values, "answer-timeout"),
      limits: {
        maxUnauthPerAddress: optionalCount(values, "max-unauth-per-address"),
        maxUnauth: optionalCount(values, "max-unauth"),
        maxConnsPerDevice: optionalCount(values, "max-conns-per-device"),
        maxSessionsPerDevice: optionalCount(values, "max-sessions-per-device"),
        sessionIdleTimeoutMs: optionalDuration(values, "session-idle-timeout"),
        targetWaitMs: optionalDuration(values, "target-wait"),
        maxWaitingPerTarget: optionalCount(values, "max-waiting-per-target"),
        connectRate: values["connect-rate"] === "0" ? 0 : optionalCount(values, "connect-rate"),
        connectBurst: optionalCount(values, "connect-burst"),
      },
      logger,
      admin,
    });
  } catch (e) {
    if (e instanceof UsageError) {
      printError("tsunagi-relay", e.message, e.hint);
      return 2;
    }
    if (e instanceof TypeError && /parseArgs|option|argument/i.test(e.message)) {
      printError("tsunagi-relay", e.message, `see ${RELAY_CMD} --help`);
      return 2;
    }
    if (e instanceof RangeError) {
      printError("tsunagi-relay", e.message, `see ${RELAY_CMD} --help`);
      return 2;
    }
    if (e instanceof Deno.errors.AddrInUse && e.message.includes("(--admin)")) {
      printError(
        "tsunagi-relay",
        `${e.message}: address already in use`,
        "another process holds that port; stop it or pick another --admin port",
      );
      return 1;
    }
    if (e instanceof Deno.errors.AddrInUse) {
      printError(
        "tsunagi-relay",
        `Cannot listen on ${listen}: address already in use`,
        "another process (another relay?) holds that port; stop it or pick another --listen",
      );
      return 1;
    }
    printError("tsunagi-relay", e instanceof Error ? e.message : String(e));
    return 1;
  }
  const stop = () => void relay.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await relay.finished;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}

/** The duration given for `--flag` in ms, or undefined when the flag is absent. */
function optionalDuration(values: Record<string, unknown>, flag: string): number | undefined {
  const value = values[flag];
  return typeof value === "string" ? parseDuration(value, flag) : undefined;
}

/** The positive count given for `--flag`, or undefined when the flag is absent. */
function optionalCount(values: Record<string, unknown>, flag: string): number | undefined {
  const value = values[flag];
  if (typeof value !== "string") return undefined;
  if (!/^[1-9][0-9]{0,8}$/.test(value)) {
    throw new UsageError(
      `--${flag} must be a whole number from 1, got "${value}"`,
      `e.g. --${flag} 64`,
    );
  }
  return Number(value);
}

async function readSecret(path: string): Promise<Uint8Array> {
  const text = (await readText(path, "--mesh-secret-file")).trim();
  if (new TextEncoder().encode(text).length < 16) {
    throw new UsageError(
      `Mesh secret in "${path}" is shorter than 16 bytes`,
      "e.g. openssl rand -hex 32 > mesh.secret, and give every relay the same file",
    );
  }
  return new TextEncoder().encode(text);
}

async function readText(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(
      `Cannot read ${flag} file "${path}": ${describeReadError(e)}`,
      `check the path given to ${flag}`,
    );
  }
}

/**
 * Logs once at start how many registrations still hold a version-1 scrypt hash: their
 * devices cannot log in (each refusal is logged only when one tries) until the registry
 * is migrated.
 */
async function warnUnmigrated(registry: RegistryStore, logger: Logger): Promise<void> {
  let count = 0;
  try {
    for (const reg of await registry.list()) if (isScryptHash(reg.passwordHash)) count++;
  } catch {
    return; // an unreadable registry is reported where it is used
  }
  if (count === 0) return;
  logger.warn("registry not migrated", {
    devices: count,
    effect: "these devices cannot log in",
    hint: "stop the relay, run 'deno task registry migrate' with the same --data or --directory",
  });
}

if (import.meta.main) Deno.exit(await relayMain(Deno.args));
