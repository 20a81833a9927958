/**
 * `deno task relay`: the relay server's command line.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseHostPort } from "../shared/address.ts";
import { parseDuration, printError } from "../shared/cli.ts";
import { UsageError } from "../shared/errors.ts";
import { Logger, parseLogFormat, parseLogLevel } from "../shared/log.ts";
import { EmbeddedDirectory } from "./directory.ts";
import { MeshDirectory } from "./mesh/mesh.ts";
import { RedisDirectory } from "./redis/redis_directory.ts";
import { FileRegistry } from "./registry/registry.ts";
import { DEFAULT_PORT, type RelayHandle, startRelay } from "./server.ts";
import { checkAdminOptions } from "./admin/mod.ts";

const HELP = `tsunagi relay: lets devices behind NAT reach each other by ID.

Usage: deno task relay [options]

Options:
  --listen HOST:PORT        address to listen on (default 127.0.0.1:${DEFAULT_PORT})
  --name NAME               relay name shown in the directory (default relay-<port>)
  --data DIR                folder for the device registry (default $TSUNAGI_DATA
                            or ./tsunagi-data)
  --tls-cert FILE           serve TLS with this PEM certificate chain (needs --tls-key)
  --tls-key FILE            PEM private key for --tls-cert
  --tls-ca FILE             dial other relays with TLS, trusting this PEM CA

Relay mesh (share connection information, route sessions across relays):
  --mesh-secret-file FILE   shared secret that authenticates relay links (>= 16 bytes);
                            enables the mesh
  --peer HOST:PORT          relay to link with (repeatable; need not be a full mesh)
  --advertise HOST:PORT     address other relays dial to reach this one
                            (default: the --listen address)
  --mesh-heartbeat DURATION relay record re-announced this often (default 2s)
  --mesh-timeout DURATION   a relay not heard from this long is unreachable (default 10s)

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

  --keepalive DURATION      keep-alive interval asked of devices (default 15s);
                            idle connections silent for 3 intervals are closed
  --login-timeout DURATION  a new connection must log in within this (default 10s)
  --answer-timeout DURATION a target must accept or reject within this (default 10s)
  --log-format text|json    log format on stderr (default text)
  --log-level LEVEL         debug, info, warn or error (default info)
  -h, --help                show this help

Register devices first: deno task registry add ID --type FAX --password-file F
Exit codes: 0 stopped cleanly, 1 failed at run time, 2 bad options.`;

/** Parses relay options and runs until SIGINT/SIGTERM. Returns the exit code. */
export async function relayMain(args: string[]): Promise<number> {
  let relay: RelayHandle;
  try {
    const { values } = parseArgs({
      args,
      options: {
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
        directory: { type: "string" },
        // Hidden, for tests: lifetime of this relay's key in Redis (default 10s).
        "directory-ttl": { type: "string" },
        "clock-offset-ms": { type: "string" },
        keepalive: { type: "string" },
        "login-timeout": { type: "string" },
        "answer-timeout": { type: "string" },
        admin: { type: "string" },
        "admin-token-file": { type: "string" },
        "log-format": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const { hostname, port } = parseHostPort(values.listen ?? `127.0.0.1:${DEFAULT_PORT}`);
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
    if (admin) checkAdminOptions(admin);
    const dataDir = values.data ?? Deno.env.get("TSUNAGI_DATA") ?? "./tsunagi-data";
    // Hidden, for tests of clock skew: this relay's wall clock runs this far off.
    const offset = Number(values["clock-offset-ms"] ?? 0);
    const now = offset === 0 ? Date.now : () => Date.now() + offset;
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
        logger,
        now,
      })
      : new EmbeddedDirectory(await FileRegistry.open(dataDir));
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
      logger,
      admin,
    });
  } catch (e) {
    if (e instanceof UsageError) {
      printError("tsunagi-relay", e.message, e.hint);
      return 2;
    }
    if (e instanceof TypeError && /parseArgs|option|argument/i.test(e.message)) {
      printError("tsunagi-relay", e.message, "see deno task relay --help");
      return 2;
    }
    if (e instanceof RangeError) {
      printError("tsunagi-relay", e.message, "see deno task relay --help");
      return 2;
    }
    if (e instanceof Deno.errors.AddrInUse) {
      printError("tsunagi-relay", `Cannot listen: ${e.message}`, "pick another --listen port");
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
      `Cannot read ${flag} file "${path}": ${e instanceof Error ? e.message : e}`,
      `check the path given to ${flag}`,
    );
  }
}

if (import.meta.main) Deno.exit(await relayMain(Deno.args));
