/**
 * The relay's config file (`--config relay.json`): a JSON object whose keys are the
 * relay's flag names without the dashes (`"listen"`, `"mesh-secret-file"`, `"peer"`).
 * Flags on the command line override the file. Unknown keys are errors, and paths
 * (`data`, `tls-cert`, `tls-key`, `tls-ca`, `mesh-secret-file`) are resolved from the
 * folder that holds the file. The schema is documented in docs/operations.md.
 *
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { UsageError } from "../shared/errors.ts";
import { readJsonObject, rejectUnknownKeys } from "../shared/json_file.ts";

/** How `parseArgs` describes one option. */
export interface OptionSpec {
  /** Value type. */
  type: "string" | "boolean";
  /** Repeatable: the value is an array. */
  multiple?: boolean;
  /** Short alias. */
  short?: string;
}

/** Keys holding a file or folder path, resolved from the config file's folder. */
export const PATH_KEYS: readonly string[] = [
  "data",
  "tls-cert",
  "tls-key",
  "tls-ca",
  "mesh-secret-file",
];

/** Flags that have no key in the file. */
const NOT_IN_FILE = new Set(["config", "help"]);

/** Parsed flag values, as `parseArgs` returns them. */
export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/**
 * Reads the config file `file` for a command whose flags are `options` and returns
 * flag values: the file's, overridden by those in `flags`.
 */
export async function applyConfigFile(
  file: string,
  options: Record<string, OptionSpec>,
  flags: FlagValues,
): Promise<FlagValues> {
  const raw = await readJsonObject(file, "--config");
  const known = Object.keys(options).filter((k) => !NOT_IN_FILE.has(k));
  rejectUnknownKeys(raw, known, file);
  const base = dirname(file);
  const merged: FlagValues = {};
  for (const [key, value] of Object.entries(raw)) {
    const spec = options[key];
    const bad = (want: string) =>
      new UsageError(
        `${file}: key "${key}" must be ${want}, not ${JSON.stringify(value)}`,
        `it takes what --${key} takes; see docs/operations.md "Config file"`,
      );
    if (spec.type === "boolean") {
      if (typeof value !== "boolean") throw bad("true or false");
      merged[key] = value;
    } else if (spec.multiple) {
      const list = typeof value === "string" ? [value] : value;
      if (!Array.isArray(list) || !list.every((v) => typeof v === "string")) {
        throw bad("a string or an array of strings");
      }
      merged[key] = list;
    } else {
      if (typeof value !== "string") throw bad("a string");
      merged[key] = PATH_KEYS.includes(key) && !isAbsolute(value) ? join(base, value) : value;
    }
  }
  for (const [key, value] of Object.entries(flags)) {
    if (value !== undefined) merged[key] = value;
  }
  return merged;
}
