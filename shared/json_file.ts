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
    // V8 gives a position for some errors only; find it ourselves for all of them.
    const offset = jsonErrorOffset(text);
    const before = text.slice(0, offset).split("\n");
    const where = `${file}:${before.length}:${before[before.length - 1].length + 1}`;
    const what = (e instanceof Error ? e.message : String(e))
      .replace(/\s*\(line \d+ column \d+\)/, "")
      .replace(/ in JSON at position \d+/, "")
      .replace(/, "[\s\S]*$/, "");
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

/** The offset in `text` where JSON parsing fails (a small validating scanner). */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const ws = () => {
    while (i < text.length && " \t\r\n".includes(text[i])) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      ws();
      if (text[i] === "}") return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        string();
        ws();
        if (text[i] !== ":") fail();
        i++;
        value();
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "}") return void i++;
        else fail();
      }
    }
    if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "]") return void i++;
        else fail();
      }
    }
    if (c === '"') return string();
    const m = /^(?:true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(
      text.slice(i, i + 400),
    );
    if (!m) fail();
    i += m![0].length;
  };
  const string = () => {
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === "\\") i++;
      else if (text.charCodeAt(i) < 0x20) fail();
      i++;
    }
    if (i >= text.length) fail();
    i++;
  };
  try {
    value();
    ws();
    return i < text.length ? i : text.length;
  } catch (at) {
    if (typeof at === "number") return Math.min(at, text.length);
    throw at;
  }
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
