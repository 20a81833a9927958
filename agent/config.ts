/**
 * Agent settings from flags, environment variables and a config file, in that order
 * of precedence.
 *
 * Environment: TSUNAGI_RELAY (comma-separated), TSUNAGI_ID, TSUNAGI_PASSWORD_FILE,
 * TSUNAGI_TLS_CA, TSUNAGI_INBOX, TSUNAGI_CONFIG. The config file is a JSON object with
 * the keys in {@link CONFIG_KEYS} (documented in docs/operations.md, "Agent config
 * file"); any other key is an error, and paths are resolved from the file's folder.
 *
 * @module
 */

import { type HostPort, parseHostPort } from "../shared/address.ts";
import { readPasswordFile } from "../shared/cli.ts";
import { UsageError } from "../shared/errors.ts";
import { MAX_ID_BYTES } from "../shared/protocol/constants.ts";
import { MAX_ITERATIONS, MIN_ITERATIONS } from "../shared/scram.ts";
import { describeReadError, readJsonObject, rejectUnknownKeys } from "../shared/json_file.ts";
import { dirname, isAbsolute, join } from "node:path";

/** Settings common to every agent command. */
export interface CommonSettings {
  /** Relay addresses, preferred first. */
  relays: HostPort[];
  /** Device ID. */
  id: string;
  /** Device password. */
  password: string;
  /** PEM CA text when TLS is used. */
  tlsCa?: string;
  /** Fewest PBKDF2 iterations a login challenge may ask for (TSUNAGI_MIN_ITERATIONS). */
  minIterations?: number;
}

/** The raw values a command collected from its flags. */
export interface CommonFlags {
  relay?: string[];
  id?: string;
  "password-file"?: string;
  "tls-ca"?: string;
  config?: string;
}

/** A parsed config file. */
export type ConfigFile = Record<string, unknown>;

/** The keys an agent config file may hold, with what each stands for. */
export const CONFIG_KEYS: Readonly<Record<string, string>> = {
  relay: '["HOST:PORT", ...] or "HOST:PORT" (--relay)',
  id: "device ID (--id)",
  passwordFile: "password file, relative to the config file's folder (--password-file)",
  tlsCa: "PEM CA file, relative to the config file's folder (--tls-ca)",
  inbox: "folder for received files, relative to the config file's folder (--inbox)",
  idle: "idle connections to keep, a number (--idle)",
  acceptFrom:
    '["ID", ...] for every service, or {"SERVICE": ["ID", ...], "*": [...]} (--accept-from)',
  logFormat: '"text" or "json" (--log-format)',
  keepalive: 'ping interval, e.g. "10s" (--keepalive)',
  maxFileSize: 'largest file accepted, e.g. "2GiB"; 0 = no limit (--max-file-size)',
  expose: '["NAME=HOST:PORT", ...] (run --expose)',
  forward: '[{"listen": "HOST:PORT", "to": "ID", "service": "NAME"}, ...] (forward)',
  pool: "idle connections a forwarder keeps warm, a number (forward --pool)",
  minIterations:
    "fewest PBKDF2 iterations a login challenge may ask for (default 100000; TSUNAGI_MIN_ITERATIONS)",
};

/** Keys whose value is a path resolved from the config file's folder. */
const PATH_KEYS = ["passwordFile", "tlsCa", "inbox"];

/**
 * Loads the config file named by `--config` or TSUNAGI_CONFIG ({} if none). Throws
 * {@link UsageError} for an unreadable file, broken JSON (with line and column) or an
 * unknown key.
 */
export async function loadConfig(path: string | undefined): Promise<ConfigFile> {
  const file = path ?? Deno.env.get("TSUNAGI_CONFIG");
  if (!file) return {};
  const config = await readJsonObject(file, "--config or TSUNAGI_CONFIG");
  rejectUnknownKeys(config, Object.keys(CONFIG_KEYS), file);
  for (const key of PATH_KEYS) {
    const value = config[key];
    if (value === undefined) continue;
    if (typeof value !== "string" || value === "") {
      throw new UsageError(`${file}: key "${key}" must be a path`, CONFIG_KEYS[key]);
    }
    if (!isAbsolute(value)) config[key] = join(dirname(file), value);
  }
  return config;
}

/** Picks the first defined value: flag, environment variable, config key. */
export function pick(
  flag: string | undefined,
  env: string,
  config: ConfigFile,
  key: string,
): string | undefined {
  if (flag !== undefined) return flag;
  const fromEnv = Deno.env.get(env);
  if (fromEnv) return fromEnv;
  const v = config[key];
  if (v === undefined || v === null) return undefined;
  return Array.isArray(v) ? v.join(",") : String(v);
}

/** Resolves relay, ID, password and TLS settings; throws {@link UsageError} if missing. */
export async function resolveCommon(
  flags: CommonFlags,
  config: ConfigFile,
): Promise<CommonSettings> {
  const relayText = flags.relay && flags.relay.length > 0
    ? flags.relay.join(",")
    : pick(undefined, "TSUNAGI_RELAY", config, "relay") ?? "127.0.0.1:7800";
  const relays = relayText.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => {
    try {
      return parseHostPort(s);
    } catch (e) {
      throw new UsageError((e as Error).message, "use --relay HOST:PORT");
    }
  });
  const id = pick(flags.id, "TSUNAGI_ID", config, "id");
  if (!id) throw new UsageError("No device ID given", "use --id ID (or TSUNAGI_ID)");
  const passwordFile = pick(
    flags["password-file"],
    "TSUNAGI_PASSWORD_FILE",
    config,
    "passwordFile",
  );
  if (!passwordFile) {
    throw new UsageError(
      "No password given",
      "use --password-file FILE (or TSUNAGI_PASSWORD_FILE)",
    );
  }
  const password = await readPasswordFile(passwordFile);
  const caFile = pick(flags["tls-ca"], "TSUNAGI_TLS_CA", config, "tlsCa");
  let tlsCa: string | undefined;
  if (caFile) {
    try {
      tlsCa = await Deno.readTextFile(caFile);
    } catch (e) {
      throw new UsageError(
        `Cannot read --tls-ca file "${caFile}": ${describeReadError(e)}`,
        "give the PEM certificate of the CA that signed the relay's certificate",
      );
    }
  }
  return { relays, id, password, tlsCa, minIterations: resolveMinIterations(config) };
}

/** Service names: what `tsunagi run --expose` and `forward --service` accept. */
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks a service name; throws {@link UsageError}. */
export function checkServiceName(name: string, flag: string): string {
  if (!SERVICE_NAME.test(name)) {
    throw new UsageError(
      `Invalid service name "${name}" in ${flag}`,
      "use letters, digits, '.', '_' or '-' (at most 64), e.g. ipp or http",
    );
  }
  return name;
}

/** Parses `NAME=HOST:PORT` (`--expose`). */
export function parseExpose(text: string): { name: string; to: HostPort } {
  const eq = text.indexOf("=");
  if (eq <= 0) {
    throw new UsageError(
      `Invalid --expose "${text}"`,
      "use --expose NAME=HOST:PORT, e.g. ipp=127.0.0.1:631",
    );
  }
  const name = checkServiceName(text.slice(0, eq), "--expose");
  try {
    return { name, to: parseHostPort(text.slice(eq + 1)) };
  } catch (e) {
    throw new UsageError(
      `Invalid --expose "${text}": ${(e as Error).message}`,
      "use NAME=HOST:PORT",
    );
  }
}

/** Who may use this device's services: everyone `all` allows, and per service. */
export interface AcceptPolicy {
  /** For every service (undefined: everyone). */
  all?: Set<string>;
  /** Per service name, on top of `all`. */
  byService: Map<string, Set<string>>;
}

/**
 * Parses `--accept-from` values: `ID,ID` applies to every service, `NAME=ID,ID` to
 * service NAME only (repeatable; lists for the same scope are merged).
 */
export function parseAcceptFrom(items: readonly string[]): AcceptPolicy {
  const policy: AcceptPolicy = { byService: new Map() };
  for (const item of items) {
    const eq = item.indexOf("=");
    const ids = item.slice(eq + 1).split(",").map((s) => s.trim()).filter(Boolean);
    if (ids.length === 0) {
      throw new UsageError(
        `Invalid --accept-from "${item}": no device IDs`,
        "use --accept-from ID,ID or --accept-from SERVICE=ID,ID",
      );
    }
    if (eq < 0) {
      policy.all ??= new Set();
      for (const id of ids) policy.all.add(id);
      continue;
    }
    const name = checkServiceName(item.slice(0, eq).trim(), "--accept-from");
    const set = policy.byService.get(name) ?? new Set();
    for (const id of ids) set.add(id);
    policy.byService.set(name, set);
  }
  return policy;
}

/** `acceptFrom` of a config file as `--accept-from` values. */
export function acceptFromConfig(value: unknown, file = "config"): string[] {
  if (value === undefined || value === null) return [];
  const list = (v: unknown) => {
    if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
      throw new UsageError(`${file}: key "acceptFrom" is malformed`, CONFIG_KEYS.acceptFrom);
    }
    return v.join(",");
  };
  if (Array.isArray(value)) return [list(value)];
  if (typeof value !== "object") {
    throw new UsageError(`${file}: key "acceptFrom" is malformed`, CONFIG_KEYS.acceptFrom);
  }
  return Object.entries(value).map(([k, v]) => k === "*" ? list(v) : `${k}=${list(v)}`);
}

/** A forward rule as given: listen address, target ID, service. */
export interface ForwardSpec {
  /** Local address. */
  listen: HostPort;
  /** Target device. */
  to: string;
  /** Service. */
  service: string;
}

/**
 * Pairs repeated `--listen`/`--to`/`--service` flags by position (a `--to` or `--service`
 * given once applies to every `--listen`), or reads the config file's `forward` list.
 */
export function parseForwards(
  flags: { listen?: string[]; to?: string[]; service?: string[] },
  config: ConfigFile,
): ForwardSpec[] {
  const listen = flags.listen ?? [];
  if (listen.length === 0) {
    const list = config.forward;
    if (list === undefined) {
      throw new UsageError("No --listen given", "use --listen HOST:PORT --to ID --service NAME");
    }
    if (!Array.isArray(list) || list.length === 0) {
      throw new UsageError(
        'Config key "forward" must be a non-empty list',
        CONFIG_KEYS.forward,
      );
    }
    return list.map((r, i) => {
      const item = r as Record<string, unknown>;
      if (
        typeof item !== "object" || item === null || typeof item.listen !== "string" ||
        typeof item.to !== "string" || typeof item.service !== "string"
      ) {
        throw new UsageError(`Config "forward"[${i}] needs string keys listen, to and service`);
      }
      const unknown = Object.keys(item).find((k) => !["listen", "to", "service"].includes(k));
      if (unknown !== undefined) {
        throw new UsageError(
          `Config "forward"[${i}] has unknown key "${unknown}"`,
          "its keys are listen, to and service",
        );
      }
      return spec(item.listen, item.to, item.service);
    });
  }
  const per = (values: string[] | undefined, flag: string): string[] => {
    if (values === undefined || values.length === 0) {
      throw new UsageError(`No --${flag} given`, "use --listen HOST:PORT --to ID --service NAME");
    }
    if (values.length === 1) return listen.map(() => values[0]);
    if (values.length !== listen.length) {
      throw new UsageError(
        `${values.length} --${flag} for ${listen.length} --listen`,
        `give one --${flag} per --listen, or one for all`,
      );
    }
    return values;
  };
  const to = per(flags.to, "to");
  const service = per(flags.service, "service");
  return listen.map((l, i) => spec(l, to[i], service[i]));
}

function spec(listen: string, to: string, service: string): ForwardSpec {
  let address: HostPort;
  try {
    address = parseHostPort(listen);
  } catch (e) {
    throw new UsageError(`Invalid --listen "${listen}": ${(e as Error).message}`, "use HOST:PORT");
  }
  if (to === "") throw new UsageError("Empty --to", "use --to ID");
  if (new TextEncoder().encode(to).length > MAX_ID_BYTES) {
    throw new UsageError(`--to "${to}" is longer than ${MAX_ID_BYTES} bytes`, "use a device's ID");
  }
  return { listen: address, to, service: checkServiceName(service, "--service") };
}

/**
 * The challenge cost floor (shared/scram.ts `challengeCostError`): `TSUNAGI_MIN_ITERATIONS`
 * or the config's `minIterations`, a whole number from 4096; undefined keeps the default.
 */
function resolveMinIterations(config: ConfigFile): number | undefined {
  const text = pick(undefined, "TSUNAGI_MIN_ITERATIONS", config, "minIterations");
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n < MIN_ITERATIONS || n > MAX_ITERATIONS) {
    throw new UsageError(
      `Invalid minimum of PBKDF2 iterations "${text}"`,
      `set TSUNAGI_MIN_ITERATIONS (or "minIterations") to a whole number from ${MIN_ITERATIONS} to ${MAX_ITERATIONS}`,
    );
  }
  return n;
}
