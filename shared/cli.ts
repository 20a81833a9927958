/**
 * Helpers shared by the command lines: duration flags, exit codes, one-line errors.
 *
 * @module
 */

import { basename, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { UsageError } from "./errors.ts";
import { describeReadError } from "./json_file.ts";
import { escapeControl } from "./log.ts";

/** Documented exit codes of every tsunagi command. */
export const ExitCode = {
  /** Success. */
  Ok: 0,
  /** The operation failed (refused, unreachable, transfer aborted...). */
  Failure: 1,
  /** Bad command line or configuration. */
  Usage: 2,
  /** Login refused (unknown device, wrong password, throttled). */
  AuthFailed: 3,
  /** The relay could not be reached, or cannot serve now (its directory is down): retry later. */
  Unreachable: 4,
  /** The target device refused or could not take the session. */
  PeerUnavailable: 5,
} as const;

/** An exit code. */
export type ExitCode = typeof ExitCode[keyof typeof ExitCode];

/**
 * Parses a duration: a number of seconds (`30`, `0.5`) or with a unit (`250ms`, `2s`,
 * `5m`). Returns milliseconds; throws {@link UsageError} naming the flag.
 */
export function parseDuration(value: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m) {
    throw new UsageError(
      `Invalid duration for --${flag}: "${value}"`,
      `use seconds (30), or a unit: 250ms, 2s, 5m`,
    );
  }
  const n = Number(m[1]);
  const unit = m[2] ?? "s";
  return Math.round(unit === "ms" ? n : unit === "s" ? n * 1000 : n * 60_000);
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/**
 * Parses a byte size: plain bytes (`1048576`) or with a unit, decimal (`kB`, `MB`, `GB`,
 * `TB`) or binary (`KiB`, `MiB`, `GiB`, `TiB`), case-insensitive. Returns bytes; throws
 * {@link UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { parseSize } from "./cli.ts";
 * console.assert(parseSize("10MiB", "max-file-size") === 10 * 1024 * 1024);
 * console.assert(parseSize("2GB", "max-file-size") === 2e9);
 * ```
 */
export function parseSize(value: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes)) {
    throw new UsageError(
      `Invalid size for --${flag}: "${value}"`,
      "use bytes (1048576) or a unit: 500kB, 10MiB, 2GB, 4GiB",
    );
  }
  return bytes;
}

/**
 * Parses a positive integer flag; throws {@link UsageError} naming `--flag`, or `source`
 * when the value came from elsewhere (an environment variable, a config file).
 */
export function parseCount(
  value: string,
  flag: string,
  min = 1,
  max = 1000,
  source = `--${flag}`,
): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(
      `Invalid value for ${source}: "${value}"`,
      `use a whole number ${min}-${max}`,
    );
  }
  return n;
}

/** Reads a password file (`-` = stdin), strips one trailing newline. */
export async function readPasswordFile(path: string): Promise<string> {
  let text: string;
  try {
    text = path === "-"
      ? await new Response(Deno.stdin.readable).text()
      : await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(
      `Cannot read password file "${path}": ${describeReadError(e)}`,
      "check the path given to --password-file",
    );
  }
  const password = text.replace(/\r?\n$/, "");
  if (password === "") {
    throw new UsageError(`Password file "${path}" is empty`, "put the password on its first line");
  }
  return password;
}

/** Writes `<program>: <message>` and an optional `hint:` line to stderr. */
export function printError(program: string, message: string, hint = ""): void {
  // Messages may quote a peer (a REJECT's reason, a relay's ERROR): no raw control bytes.
  console.error(`${program}: ${escapeControl(message)}`);
  if (hint) console.error(`hint: ${escapeControl(hint)}`);
}

/**
 * How the user started this program, for usage lines and hints: the command a `deno
 * task` names in the environment variable `env` (e.g. `deno task agent`), a compiled
 * binary's file name, `deno run -A PATH` for a bundled `.js` file, else `fallback`.
 */
export function invokedAs(env: string, fallback: string): string {
  const fromTask = Deno.env.get(env);
  if (fromTask) return fromTask;
  const exe = basename(Deno.execPath());
  if (exe !== "deno" && exe !== "deno.exe") return exe;
  const main = Deno.mainModule;
  if (main.startsWith("file:") && main.endsWith(".js")) {
    return `deno run -A ${relative(Deno.cwd(), fileURLToPath(main))}`;
  }
  return fallback;
}
