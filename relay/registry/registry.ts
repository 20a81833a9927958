/**
 * The device registry: which device IDs may log in, with their type, attributes and
 * password hash (patent [0023], [0028]: devices are registered in advance).
 *
 * {@link FileRegistry} keeps `<dir>/registry.json`. The admin CLI (`registry/main.ts`)
 * writes it while a relay is running, so the relay's instance checks the file's
 * metadata before every read and reloads it when another process replaced it. Writes
 * go to a temporary file that is renamed over the old one, so a reader never sees half
 * a file; a lock file serialises read-modify-write between processes.
 *
 * @example
 * ```ts
 * import { MemoryRegistry } from "./registry.ts";
 *
 * const registry = new MemoryRegistry();
 * await registry.put({
 *   id: "fax-01",
 *   type: "FAX",
 *   attributes: ["FILE TX/RX"],
 *   passwordHash: "scrypt$...",
 *   updatedAt: Date.now(),
 * });
 * console.assert((await registry.get("fax-01"))?.type === "FAX");
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { FILE_ATTRIBUTE } from "../../shared/protocol/constants.ts";

/** One registered device. */
export interface Registration {
  /** Device (user) ID, see {@link validateDeviceId}. */
  id: string;
  /** Device type such as `USER`, `FAX` or `PRINTER`, see {@link validateDeviceType}. */
  type: string;
  /** Attributes tied to the type, e.g. `FILE TX/RX`. */
  attributes: string[];
  /**
   * Password verifier from `makeVerifier()` in `verifier.ts` (`scram-sha-256$...`); a
   * registration from registry version 1 may still hold a scrypt hash until
   * `registry migrate` converts it.
   */
  passwordHash: string;
  /** Last change of this registration, in ms since the epoch. */
  updatedAt: number;
}

/** Where registrations are kept. Every method returns copies; mutate through `put`. */
export interface RegistryStore {
  /** The registration for `id`, or undefined if none. */
  get(id: string): Promise<Registration | undefined>;
  /** Every registration, sorted by id. */
  list(): Promise<Registration[]>;
  /** Adds `reg`, or replaces the registration with the same id. */
  put(reg: Registration): Promise<void>;
  /** Removes the registration for `id`; resolves to whether there was one. */
  remove(id: string): Promise<boolean>;
  /** Optional batch form of put/remove (`reg: null` removes), for bulk updates. */
  applyMany?(changes: { id: string; reg: Registration | null }[]): Promise<void>;
  /**
   * Optional: a number that stays the same while the registrations do (a poller skips
   * listing 100,000 registrations every second when nothing changed, and the relay's
   * login/registry_watch.ts re-reads its devices' registrations only when it moved).
   */
  generation?(): Promise<number>;
  /**
   * Optional: a 32-byte secret shared by every relay reading this store, created on
   * first use. Relays derive the fake salts of unregistered IDs from it, so that every
   * relay answers an unknown ID with the same challenge.
   */
  loginSecret?(): Promise<Uint8Array>;
}

/** Name of the registry file inside the data directory. */
export const REGISTRY_FILE = "registry.json";
/**
 * Version number written in the registry file. 2: passwords are SCRAM verifiers
 * (`verifier.ts`). Version 1 files (scrypt hashes) are still read, and rewritten as
 * version 2 at the next change; `registry migrate` converts their hashes.
 */
export const REGISTRY_VERSION = 2;
/** Versions of the registry file this code reads. */
export const READABLE_REGISTRY_VERSIONS: readonly number[] = [1, 2];
/** File next to the registry holding the login secret (see {@link RegistryStore.loginSecret}). */
export const LOGIN_SECRET_FILE = "login-secret";

const DEVICE_ID_RE = /^[A-Za-z0-9._@-]{1,64}$/;
const DEVICE_TYPE_RE = /^[A-Z0-9_-]{1,32}$/;
const MAX_ATTRIBUTE_LENGTH = 64;
const MAX_ATTRIBUTES = 32;

/** Checks a device ID: 1-64 characters of `A-Z a-z 0-9 . _ @ -`. Returns an error message or null. */
export function validateDeviceId(id: string): string | null {
  if (typeof id !== "string") return "Device ID must be a string";
  if (id.length === 0) return "Device ID must not be empty";
  if (id.length > 64) return `Device ID is ${id.length} characters long; the maximum is 64`;
  if (!DEVICE_ID_RE.test(id)) {
    return `Device ID "${id}" may only contain letters, digits and . _ @ -`;
  }
  return null;
}

/** Checks a device type: 1-32 characters of `A-Z 0-9 _ -` (e.g. `USER`, `FAX`). Returns an error message or null. */
export function validateDeviceType(type: string): string | null {
  if (typeof type !== "string") return "Device type must be a string";
  if (type.length === 0) return "Device type must not be empty";
  if (type.length > 32) return `Device type is ${type.length} characters long; the maximum is 32`;
  if (!DEVICE_TYPE_RE.test(type)) {
    return `Device type "${type}" may only contain upper-case letters, digits, _ and -`;
  }
  return null;
}

/**
 * Checks a device attribute such as `FILE TX/RX`: 1-64 printable characters without
 * leading or trailing spaces. Returns an error message or null.
 */
export function validateAttribute(attribute: string): string | null {
  if (typeof attribute !== "string") return "Attribute must be a string";
  if (attribute.length === 0) return "Attribute must not be empty";
  if (attribute.length > MAX_ATTRIBUTE_LENGTH) {
    return `Attribute is ${attribute.length} characters long; the maximum is ${MAX_ATTRIBUTE_LENGTH}`;
  }
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(attribute)) {
    return `Attribute ${JSON.stringify(attribute)} contains a control character`;
  }
  if (attribute.trim() !== attribute) {
    return `Attribute ${JSON.stringify(attribute)} has leading or trailing spaces`;
  }
  return null;
}

/** A value mapped onto a known vocabulary word, or why it could not be. */
export type Normalized = { value: string; error?: undefined } | {
  value?: undefined;
  error: string;
};

/** Device types `registry add/set` accept (compared case-insensitively). */
export const DEVICE_TYPES: readonly string[] = ["USER", "FAX", "PRINTER", "SCANNER"];

/**
 * Attributes `registry add/set` accept (compared case-insensitively, spaces collapsed).
 * `FILE TX/RX` is the one the agent acts on: it receives files.
 */
export const DEVICE_ATTRIBUTES: readonly string[] = [FILE_ATTRIBUTE, "PRINT", "SCAN", "COLOR"];

/**
 * The known device type `text` names (`fax` → `FAX`), or an error message listing the
 * known ones.
 *
 * @example
 * ```ts
 * import { normalizeDeviceType } from "./registry.ts";
 * if (normalizeDeviceType(" fax ").value !== "FAX") throw new Error("unexpected");
 * ```
 */
export function normalizeDeviceType(text: string): Normalized {
  const value = text.trim().toUpperCase();
  if (DEVICE_TYPES.includes(value)) return { value };
  return {
    error: `Unknown device type ${JSON.stringify(text)}: use one of ${DEVICE_TYPES.join(", ")}`,
  };
}

/**
 * The known attribute `text` names (`file tx/rx` → `FILE TX/RX`), or an error message
 * listing the known ones.
 *
 * @example
 * ```ts
 * import { normalizeAttribute } from "./registry.ts";
 * if (normalizeAttribute("file  tx/rx").value !== "FILE TX/RX") throw new Error("unexpected");
 * ```
 */
export function normalizeAttribute(text: string): Normalized {
  const value = text.trim().replace(/\s+/g, " ").toUpperCase();
  if (DEVICE_ATTRIBUTES.includes(value)) return { value };
  return {
    error: `Unknown attribute ${JSON.stringify(text)}: use one of ${
      DEVICE_ATTRIBUTES.map((a) => JSON.stringify(a)).join(", ")
    }`,
  };
}

/** Checks a whole registration; returns an error message or null. */
export function validateRegistration(reg: Registration): string | null {
  if (typeof reg !== "object" || reg === null) return "Registration must be an object";
  const idError = validateDeviceId(reg.id);
  if (idError) return idError;
  const typeError = validateDeviceType(reg.type);
  if (typeError) return `${reg.id}: ${typeError}`;
  if (!Array.isArray(reg.attributes)) return `${reg.id}: attributes must be an array`;
  if (reg.attributes.length > MAX_ATTRIBUTES) {
    return `${reg.id}: ${reg.attributes.length} attributes; the maximum is ${MAX_ATTRIBUTES}`;
  }
  for (const attribute of reg.attributes) {
    const error = validateAttribute(attribute);
    if (error) return `${reg.id}: ${error}`;
  }
  if (typeof reg.passwordHash !== "string" || reg.passwordHash.length === 0) {
    return `${reg.id}: passwordHash must be a non-empty string`;
  }
  if (!Number.isSafeInteger(reg.updatedAt) || reg.updatedAt < 0) {
    return `${reg.id}: updatedAt must be a non-negative integer (ms since the epoch)`;
  }
  return null;
}

/** The registry file exists but cannot be used: not JSON, wrong version, or bad entries. */
export class RegistryCorruptError extends SyntaxError {
  /** Path of the offending file. */
  readonly path: string;
  /** Creates the error for `path`; `reason` says what is wrong with it. */
  constructor(path: string, reason: string, options?: { cause?: unknown }) {
    super(`Cannot read device registry ${path}: ${reason}`, options);
    this.name = "RegistryCorruptError";
    this.path = path;
  }
}

function copy(reg: Registration): Registration {
  return {
    id: reg.id,
    type: reg.type,
    attributes: [...reg.attributes],
    passwordHash: reg.passwordHash,
    updatedAt: reg.updatedAt,
  };
}

function checked(reg: Registration): Registration {
  const error = validateRegistration(reg);
  if (error) throw new TypeError(`Cannot store registration: ${error}`);
  return copy(reg);
}

function compareIds(a: Registration, b: Registration): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** A registry held in memory only, for tests and throwaway relays. */
export class MemoryRegistry implements RegistryStore {
  readonly #devices = new Map<string, Registration>();
  #generation = 0;

  /** Creates a registry holding copies of `initial`. */
  constructor(initial: Iterable<Registration> = []) {
    for (const reg of initial) this.#devices.set(reg.id, checked(reg));
  }

  /** The registration for `id`, or undefined if none. */
  get(id: string): Promise<Registration | undefined> {
    const reg = this.#devices.get(id);
    return Promise.resolve(reg && copy(reg));
  }

  /** Every registration, sorted by id. */
  list(): Promise<Registration[]> {
    return Promise.resolve([...this.#devices.values()].map(copy).sort(compareIds));
  }

  /** See {@link RegistryStore.generation}: counts the changes. */
  generation(): Promise<number> {
    return Promise.resolve(this.#generation);
  }

  /** Adds `reg`, or replaces the registration with the same id; throws a `TypeError` if invalid. */
  put(reg: Registration): Promise<void> {
    try {
      this.#devices.set(reg.id, checked(reg));
      this.#generation++;
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Removes the registration for `id`; resolves to whether there was one. */
  remove(id: string): Promise<boolean> {
    const removed = this.#devices.delete(id);
    if (removed) this.#generation++;
    return Promise.resolve(removed);
  }
}

/** What identifies one version of the file on disk; null when the file does not exist. */
type FileVersion = { mtime: number | null; size: number; ino: number | null } | null;

function sameVersion(a: FileVersion, b: FileVersion): boolean {
  if (a === null || b === null) return a === b;
  return a.mtime === b.mtime && a.size === b.size && a.ino === b.ino;
}

/**
 * A registry kept in `<dir>/registry.json` as `{ "version": 1, "devices": [...] }`.
 *
 * Safe to share between processes: each write replaces the file atomically, and each
 * read first stats the file and reloads it if its mtime, size or inode changed. Within
 * one process, writes are queued on `#writeTail`; the cache fields are only replaced
 * whole, by `#refresh` and `#write`.
 */
export class FileRegistry implements RegistryStore {
  /** Path of the registry file. */
  readonly path: string;
  readonly #lockPath: string;
  #devices = new Map<string, Registration>();
  /** Version of the file `#devices` was read from; undefined before the first read. */
  #version: FileVersion | undefined = undefined;
  /** Counts replacements of `#devices`: equal numbers mean the same registrations. */
  #generation = 0;
  /** Tail of the queue of writes from this instance. */
  #writeTail: Promise<unknown> = Promise.resolve();

  private constructor(dir: string) {
    this.path = join(dir, REGISTRY_FILE);
    this.#lockPath = join(dir, `${REGISTRY_FILE}.lock`);
  }

  /**
   * Opens the registry in `dir`, creating the directory if missing, and reads the file
   * if it exists; throws {@link RegistryCorruptError} if it cannot be parsed.
   */
  static async open(dir: string): Promise<FileRegistry> {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const registry = new FileRegistry(dir);
    await registry.#refresh();
    return registry;
  }

  /** The registration for `id`, or undefined if none. */
  async get(id: string): Promise<Registration | undefined> {
    await this.#refresh();
    const reg = this.#devices.get(id);
    return reg && copy(reg);
  }

  /** See {@link RegistryStore.generation}: changes whenever the file's content may have. */
  async generation(): Promise<number> {
    await this.#refresh();
    return this.#generation;
  }

  /** Every registration, sorted by id. */
  async list(): Promise<Registration[]> {
    await this.#refresh();
    return [...this.#devices.values()].map(copy);
  }

  /** Adds `reg`, or replaces the registration with the same id; throws a `TypeError` if invalid. */
  async put(reg: Registration): Promise<void> {
    const entry = checked(reg);
    await this.#update((devices) => {
      devices.set(entry.id, entry);
      return true;
    });
  }

  /** Removes the registration for `id`; resolves to whether there was one. */
  remove(id: string): Promise<boolean> {
    return this.#update((devices) => devices.delete(id));
  }

  /**
   * The login secret in `<dir>/login-secret` (32 bytes, owner-only), created on first
   * use; two processes creating it at once agree on the first one written.
   */
  async loginSecret(): Promise<Uint8Array> {
    const path = join(this.path, "..", LOGIN_SECRET_FILE);
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const bytes = await Deno.readFile(path);
        if (bytes.length === 32) return bytes;
        throw new RegistryCorruptError(path, `expected 32 bytes, found ${bytes.length}`);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      const tmp = `${path}.tmp-${crypto.randomUUID()}`;
      await Deno.writeFile(tmp, crypto.getRandomValues(new Uint8Array(32)), { mode: 0o600 });
      try {
        // link() fails if another process created the file first: then read theirs.
        await Deno.link(tmp, path);
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      } finally {
        await Deno.remove(tmp).catch(() => {});
      }
    }
    throw new Error(`Cannot create ${path}`);
  }

  /** Applies several puts (`reg`) and removals (`null`) with one write of the file. */
  async applyMany(changes: { id: string; reg: Registration | null }[]): Promise<void> {
    const entries = changes.map((c) => ({ id: c.id, reg: c.reg && checked(c.reg) }));
    await this.#update((devices) => {
      for (const c of entries) {
        if (c.reg) devices.set(c.id, c.reg);
        else devices.delete(c.id);
      }
      return entries.length > 0;
    });
  }

  /** Reloads the file if it changed since the last read. */
  async #refresh(): Promise<void> {
    const before = this.#stat();
    if (this.#version !== undefined && sameVersion(before, this.#version)) return;
    if (before === null) {
      this.#devices = new Map();
      this.#generation++;
      this.#version = null;
      return;
    }
    let text: string;
    try {
      text = await Deno.readTextFile(this.path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      // Removed between stat and read: treat as empty.
      this.#devices = new Map();
      this.#generation++;
      this.#version = null;
      return;
    }
    const devices = parseRegistry(this.path, text);
    // The file is replaced by rename, never rewritten in place, so `before` may only be
    // stale (then the next call reloads again), never describe a mix of two versions.
    this.#devices = devices;
    this.#generation++;
    this.#version = before;
  }

  /**
   * Applies `change` to the current contents under the cross-process lock and writes
   * the result if `change` returns true.
   */
  #update(change: (devices: Map<string, Registration>) => boolean): Promise<boolean> {
    const run = async () => {
      using lock = await Deno.open(this.#lockPath, { create: true, write: true, mode: 0o600 });
      await lock.lock(true);
      try {
        await this.#refresh();
        const devices = new Map(this.#devices);
        if (!change(devices)) return false;
        await this.#write(devices);
        return true;
      } finally {
        await lock.unlock();
      }
    };
    const result = this.#writeTail.then(run, run);
    this.#writeTail = result.catch(() => {});
    return result;
  }

  async #write(devices: Map<string, Registration>): Promise<void> {
    const sorted = [...devices.values()].sort(compareIds);
    const text = JSON.stringify({ version: REGISTRY_VERSION, devices: sorted }, null, 2) + "\n";
    const tmp = `${this.path}.tmp-${crypto.randomUUID()}`;
    try {
      // The file holds password hashes: owner-only.
      using file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
      const bytes = new TextEncoder().encode(text);
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await file.syncData();
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    try {
      await Deno.rename(tmp, this.path);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    this.#devices = new Map(sorted.map((reg) => [reg.id, reg]));
    this.#generation++;
    this.#version = this.#stat();
  }

  /**
   * The file's version. Synchronous on purpose: it runs before every read, i.e. on every
   * login, and a stat of a local file answers from the kernel's inode cache in a few
   * microseconds, while `Deno.stat` hands the call to a thread pool and back: 60-170 µs of
   * relay CPU per login more (bench/login_cpu.ts), where the whole login should cost 300.
   */
  #stat(): FileVersion {
    try {
      const info = Deno.statSync(this.path);
      return { mtime: info.mtime?.getTime() ?? null, size: info.size, ino: info.ino };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }
}

/** Parses and validates the registry file's text; keyed by id, in id order. */
function parseRegistry(path: string, text: string): Map<string, Registration> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new RegistryCorruptError(path, `not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new RegistryCorruptError(path, "expected an object with version and devices");
  }
  const { version, devices } = data as { version?: unknown; devices?: unknown };
  if (!READABLE_REGISTRY_VERSIONS.includes(version as number)) {
    throw new RegistryCorruptError(
      path,
      `unsupported version ${JSON.stringify(version)} (this relay reads versions ${
        READABLE_REGISTRY_VERSIONS.join(" and ")
      }; a newer tsunagi wrote it?)`,
    );
  }
  if (!Array.isArray(devices)) throw new RegistryCorruptError(path, "devices is not an array");
  const entries: Registration[] = [];
  for (const [index, raw] of devices.entries()) {
    const error = validateRegistration(raw as Registration);
    if (error) throw new RegistryCorruptError(path, `device #${index}: ${error}`);
    entries.push(copy(raw as Registration));
  }
  entries.sort(compareIds);
  const map = new Map<string, Registration>();
  for (const reg of entries) {
    if (map.has(reg.id)) throw new RegistryCorruptError(path, `device ${reg.id} is listed twice`);
    map.set(reg.id, reg);
  }
  return map;
}
