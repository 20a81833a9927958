/**
 * Reading JSON config files for the command lines: a syntax error is reported with the
 * file, line and column; a file that is not an object, or that holds a key nobody
 * reads, is an error naming it.
 *
 * @module
 */

import { UsageError } from "./errors.ts";

/** Why a file could not be read, in words: `no such file`, `permission denied`, ... */
export function describeReadError(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file";
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return "permission denied";
  }
  if (e instanceof Deno.errors.IsADirectory) return "is a directory";
  return e instanceof Error ? e.message : String(e);
}

/**
 * Parses `text` (the contents of `file`) as a JSON object. Throws {@link UsageError}
 * `FILE:LINE:COLUMN: JSON syntax error: ...` for broken JSON.
 *
 * @example
 * ```ts
 * import { parseJsonObject } from "./json_file.ts";
 * const v = parseJsonObject('{"id": "fax1"}', "agent.json");
 * if (v.id !== "fax1") throw new Error("unexpected");
 * ```
 */
export function parseJsonObject(text: string, file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    const at = /\(line (\d+) column (\d+)\)/.exec(message);
    const where = at ? `${file}:${at[1]}:${at[2]}` : file;
    const what = message.replace(/\s*\(line \d+ column \d+\)/, "").replace(
      / in JSON at position \d+/,
      "",
    );
    throw new UsageError(
      `${where}: JSON syntax error: ${what}`,
      "fix the JSON (keys and strings in double quotes, no trailing commas)",
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(
      `${file}: not a JSON object`,
      'the file holds one object, e.g. {"id": "fax1"}',
    );
  }
  return value as Record<string, unknown>;
}

/** Reads `file` and parses it with {@link parseJsonObject}; unreadable files are a {@link UsageError}. */
export async function readJsonObject(
  file: string,
  flag: string,
): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new UsageError(
      `Cannot read config file "${file}": ${describeReadError(e)}`,
      `check the path given to ${flag}`,
    );
  }
  return parseJsonObject(text, file);
}

/** Throws a {@link UsageError} naming the first key of `object` not in `known`. */
export function rejectUnknownKeys(
  object: Record<string, unknown>,
  known: readonly string[],
  file: string,
): void {
  for (const key of Object.keys(object)) {
    if (!known.includes(key)) {
      throw new UsageError(
        `${file}: unknown key "${key}"`,
        `known keys: ${known.join(", ")}`,
      );
    }
  }
}
