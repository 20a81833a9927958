/**
 * Device registrations kept in Redis (patent [0058]: logins are authenticated against
 * registrations held by the database server), so every relay sharing the server, and
 * the admin CLI, see the same devices.
 *
 * Each registration is the hash `<p>reg:{<id>}` (type, attributes as JSON, passwordHash,
 * updatedAt, format) plus its ID in the index set `<p>regs`. The two live in different
 * hash slots (on a Redis Cluster, on different nodes), so they cannot change in one
 * transaction; instead the index is written first and cleaned last: it always lists at
 * least every registration, and readers skip IDs whose hash is gone. {@link list} walks
 * the index with `SSCAN`, a bounded page per command, so no command blocks Redis for the
 * whole fleet.
 *
 * Format versions: a hash written by this code carries `format` = `2` and a SCRAM
 * verifier in `passwordHash` (relay/registry/verifier.ts). A hash without `format` is
 * version 1 (a scrypt hash), converted by `deno task registry migrate --directory URL`.
 * `<p>login-secret` holds the 32-byte secret the relays derive fake salts from.
 *
 * `<p>regs-gen` counts changes: {@link RedisRegistry.put}, {@link RedisRegistry.remove} and
 * {@link RedisRegistry.applyMany} increment it after their changes, so a relay that polls it (relay/login/registry_watch.ts)
 * and sees it move reads the new registrations.
 *
 * @example
 * ```ts ignore
 * import { RedisRegistry } from "./redis_registry.ts";
 *
 * await using registry = await RedisRegistry.open("redis://127.0.0.1:6379");
 * console.log(await registry.list());
 * ```
 *
 * @module
 */

import { RedisConnection, type RedisConnectionOptions } from "./redis_conn.ts";
import { DEFAULT_KEY_PREFIX, RedisKeys } from "./redis_keys.ts";
import {
  type Registration,
  RegistryCorruptError,
  type RegistryStore,
  validateRegistration,
} from "../registry/registry.ts";

/** IDs asked for per `SSCAN` page (a hint to Redis; a page may hold a few more). */
export const SCAN_PAGE = 500;

/** Value of the `format` field this code writes in a registration hash. */
export const REDIS_REGISTRATION_FORMAT = "2";

/** Options for {@link RedisRegistry}. */
export interface RedisRegistryOptions {
  /** Key prefix (default `tsunagi:`). */
  keyPrefix?: string;
}

/** Turns a flat `[field, value, ...]` reply into a record. */
export function fieldsOf(reply: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
  return out;
}

/** The registration stored in hash `fields` for `id`; throws {@link RegistryCorruptError}. */
export function registrationOf(
  id: string,
  fields: Record<string, string>,
  where: string,
): Registration {
  let attributes: unknown;
  try {
    attributes = JSON.parse(fields.attributes ?? "[]");
  } catch (e) {
    throw new RegistryCorruptError(where, `${id}: attributes are not JSON`, { cause: e });
  }
  const reg = {
    id,
    type: fields.type,
    attributes,
    passwordHash: fields.passwordHash,
    updatedAt: Number(fields.updatedAt),
  } as Registration;
  const error = validateRegistration(reg);
  if (error) throw new RegistryCorruptError(where, error);
  return reg;
}

/** A {@link RegistryStore} in Redis. Returns copies; never caches. */
export class RedisRegistry implements RegistryStore, AsyncDisposable {
  /** The connection (shared with a directory, or owned, see {@link open}). */
  readonly conn: RedisConnection;
  /** Key layout. */
  readonly keys: RedisKeys;
  #owned: boolean;

  /** A registry over `conn`; closing the registry leaves `conn` open. */
  constructor(conn: RedisConnection, options: RedisRegistryOptions = {}) {
    this.conn = conn;
    this.keys = new RedisKeys(options.keyPrefix ?? DEFAULT_KEY_PREFIX);
    this.#owned = false;
  }

  /**
   * Connects to `url` without retrying (for the admin CLI): rejects with a
   * `DirectoryUnavailableError` when Redis cannot be reached.
   */
  static async open(
    url: string,
    options: RedisRegistryOptions & RedisConnectionOptions = {},
  ): Promise<RedisRegistry> {
    const conn = new RedisConnection(url, { reconnect: false, ...options });
    try {
      await conn.connect();
    } catch (e) {
      await conn.close();
      throw e;
    }
    const registry = new RedisRegistry(conn, options);
    registry.#owned = true;
    return registry;
  }

  /** Where registrations live, for messages: `redis://HOST:PORT/DB`. */
  get path(): string {
    return this.conn.address.display;
  }

  /** The registration for `id`, or undefined if none. */
  async get(id: string): Promise<Registration | undefined> {
    const fields = fieldsOf(await this.conn.command(["HGETALL", this.keys.reg(id)]));
    if (Object.keys(fields).length === 0) return undefined;
    return registrationOf(id, fields, `${this.path} key ${this.keys.reg(id)}`);
  }

  /** Every registration, sorted by id; read one {@link listPage} at a time. */
  async list(): Promise<Registration[]> {
    const byId = new Map<string, Registration>();
    let cursor = "0";
    do {
      const page = await this.listPage(cursor);
      // SSCAN may return an ID twice (the set was resized meanwhile).
      for (const reg of page.registrations) byId.set(reg.id, reg);
      cursor = page.cursor;
    } while (cursor !== "0");
    return [...byId.values()].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  /**
   * One page of registrations: an `SSCAN` of the index from `cursor` ("0" to start),
   * then the pages' hashes, pipelined. Resolves to the next cursor ("0" at the end).
   * Every registration that exists from the first to the last page is listed.
   */
  async listPage(
    cursor: string,
    count = SCAN_PAGE,
  ): Promise<{ cursor: string; registrations: Registration[] }> {
    const [next, ids] = await this.scanIds(cursor, count);
    const replies = await this.conn.commands(ids.map((id) => ["HGETALL", this.keys.reg(id)]));
    const registrations: Registration[] = [];
    ids.forEach((id, i) => {
      const fields = fieldsOf(replies[i]);
      // Indexed but without a hash: being added or removed; not a registration.
      if (Object.keys(fields).length === 0) return;
      registrations.push(registrationOf(id, fields, `${this.path} key ${this.keys.reg(id)}`));
    });
    return { cursor: next, registrations };
  }

  /** One `SSCAN` page of the ID index: [next cursor, IDs]. */
  async scanIds(cursor: string, count = SCAN_PAGE): Promise<[string, string[]]> {
    const reply = await this.conn.command([
      "SSCAN",
      this.keys.regs,
      cursor,
      "COUNT",
      String(count),
    ]);
    if (!Array.isArray(reply) || reply.length !== 2 || !Array.isArray(reply[1])) {
      throw new RegistryCorruptError(`${this.path} key ${this.keys.regs}`, "not a set");
    }
    return [String(reply[0]), reply[1].map(String)];
  }

  /** Adds `reg`, or replaces the registration with the same id; throws a `TypeError` if invalid. */
  async put(reg: Registration): Promise<void> {
    await this.applyMany([{ id: reg.id, reg }]);
  }

  /**
   * Applies several puts (`reg`) and removals (`null`), then counts them as one change in
   * `<p>regs-gen`: a relay that sees it move reads all of them (a restored backup is not
   * seen half restored). Every registration is checked before anything is written.
   */
  async applyMany(changes: { id: string; reg: Registration | null }[]): Promise<void> {
    for (const { reg } of changes) {
      const error = reg && validateRegistration(reg);
      if (error) throw new TypeError(`Cannot store registration: ${error}`);
    }
    let changed = false;
    for (const c of changes) {
      if (c.reg !== null) {
        await this.#write(c.reg);
        changed = true;
      } else if (await this.#delete(c.id)) {
        changed = true;
      }
    }
    if (changed) await this.conn.command(["INCR", this.keys.regsGeneration]);
  }

  async #write(reg: Registration): Promise<void> {
    const key = this.keys.reg(reg.id);
    // Index first: a registration is never missing from the index.
    await this.conn.command(["SADD", this.keys.regs, reg.id]);
    await this.conn.transaction([
      ["DEL", key],
      [
        "HSET",
        key,
        "type",
        reg.type,
        "attributes",
        JSON.stringify(reg.attributes),
        "passwordHash",
        reg.passwordHash,
        "updatedAt",
        String(reg.updatedAt),
        "format",
        REDIS_REGISTRATION_FORMAT,
      ],
    ]);
  }

  /** See {@link RegistryStore.generation}: the `<p>regs-gen` counter (0 when absent). */
  async generation(): Promise<number> {
    return Number(await this.conn.command(["GET", this.keys.regsGeneration]) ?? 0);
  }

  /**
   * The relays' shared login secret (`<p>login-secret`), created by the first caller
   * (SET NX): every relay on this Redis answers an unknown ID with the same fake salt.
   */
  async loginSecret(): Promise<Uint8Array> {
    const key = this.keys.loginSecret;
    const fresh = crypto.getRandomValues(new Uint8Array(32)).toBase64();
    await this.conn.command(["SET", key, fresh, "NX"]);
    const text = String(await this.conn.command(["GET", key]));
    const bytes = /^[A-Za-z0-9+/]{43}=$/.test(text) ? Uint8Array.fromBase64(text) : null;
    if (bytes === null) {
      throw new RegistryCorruptError(`${this.path} key ${key}`, "not a base64 32-byte secret");
    }
    return bytes;
  }

  /** Removes the registration for `id`; resolves to whether there was one. */
  async remove(id: string): Promise<boolean> {
    const deleted = await this.#delete(id);
    if (deleted) await this.conn.command(["INCR", this.keys.regsGeneration]);
    return deleted;
  }

  /** Deletes the registration and its index entry; resolves to whether there was one. */
  async #delete(id: string): Promise<boolean> {
    const deleted = await this.conn.command(["DEL", this.keys.reg(id)]);
    // Index last; a `put` of the same ID that raced in between keeps its index entry.
    await this.conn.command(["SREM", this.keys.regs, id]);
    if (Number(await this.conn.command(["EXISTS", this.keys.reg(id)])) > 0) {
      await this.conn.command(["SADD", this.keys.regs, id]);
    }
    return Number(deleted) > 0;
  }

  /** Closes the connection if {@link open} made it. */
  async close(): Promise<void> {
    if (this.#owned) await this.conn.close();
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
