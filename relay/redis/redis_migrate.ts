/**
 * The key layout marker and the move from layout 1 (untagged keys, single server only)
 * to layout 2 (hash-tagged keys, fit for Redis Cluster; see `redis_keys.ts`).
 *
 * What moves: each registration hash `<p>reg:<id>` becomes `<p>reg:{<id>}` (fields
 * unchanged); the `regs` and `relays` indexes keep their names. What is dropped:
 * layout-1 presence (`dev:`, `relay:`, `relaydevs:`, `evict:` keys). Presence is
 * rewritten by the relays themselves within a heartbeat of starting, so nothing is lost
 * but a few seconds of "offline" while the relays restart. Every step is idempotent and
 * uses single-key commands or one-slot transactions, so the move can be re-run after an
 * interruption, and works on a cluster the data was copied to.
 *
 * @module
 */

import type { RedisConnection } from "./redis_conn.ts";
import { KEY_LAYOUT, LegacyKeys, type RedisKeys } from "./redis_keys.ts";
import { sscan } from "./redis_janitor.ts";

/** What {@link checkLayout} found. */
export type LayoutState = "current" | "legacy";

/**
 * Reads the layout marker. Without one, looks at a few registered IDs: if their
 * registrations sit under layout-1 names, the database needs {@link migrateLayout}
 * ("legacy"); otherwise it is new and the marker is written ("current"). Throws a
 * `RangeError` for a layout this code does not know (written by a newer version).
 */
export async function checkLayout(conn: RedisConnection, keys: RedisKeys): Promise<LayoutState> {
  const marker = await conn.command(["GET", keys.layout]);
  if (marker === KEY_LAYOUT) return "current";
  if (marker !== null && marker !== undefined) {
    throw new RangeError(
      `Redis key layout "${
        String(marker)
      }" at ${keys.layout} is unknown to this version (${KEY_LAYOUT})`,
    );
  }
  const legacy = new LegacyKeys(keys.prefix);
  const sample = await conn.command(["SRANDMEMBER", keys.regs, "8"]);
  const ids = Array.isArray(sample) ? sample.map(String) : [];
  const old = await conn.commands(ids.map((id) => ["EXISTS", legacy.reg(id)]));
  if (old.some((n) => Number(n) > 0)) return "legacy";
  await conn.command(["SET", keys.layout, KEY_LAYOUT, "NX"]);
  return "current";
}

/** What {@link migrateLayout} did. */
export interface LayoutMigration {
  /** Registrations moved to their layout-2 key. */
  moved: number;
  /** Layout-1 registrations left as they were because a layout-2 one existed. */
  kept: number;
  /** Layout-1 presence keys deleted. */
  dropped: number;
}

/**
 * Moves a layout-1 database to layout 2 (see the module comment) and writes the
 * marker. Run it with the relays stopped: layout-1 relays would write old keys again.
 */
export async function migrateLayout(
  conn: RedisConnection,
  keys: RedisKeys,
): Promise<LayoutMigration> {
  const legacy = new LegacyKeys(keys.prefix);
  const result: LayoutMigration = { moved: 0, kept: 0, dropped: 0 };
  const drop = async (names: string[]) => {
    const deleted = await conn.commands(names.map((key) => ["DEL", key]));
    result.dropped += deleted.reduce<number>((n, d) => n + Number(d), 0);
  };
  let cursor = "0";
  do {
    const [next, ids] = await sscan(conn, keys.regs, cursor);
    for (const id of ids) {
      const fields = await conn.command(["HGETALL", legacy.reg(id)]);
      if (Array.isArray(fields) && fields.length > 0) {
        const exists = Number(await conn.command(["EXISTS", keys.reg(id)])) > 0;
        if (exists) result.kept++;
        else {
          await conn.transaction([["HSET", keys.reg(id), ...fields.map(String)]]);
          result.moved++;
        }
        await conn.command(["DEL", legacy.reg(id)]);
      }
    }
    await drop(ids.map((id) => legacy.dev(id)));
    cursor = next;
  } while (cursor !== "0");
  cursor = "0";
  do {
    const [next, names] = await sscan(conn, keys.relays, cursor);
    for (const name of names) {
      let devCursor = "0";
      do {
        const [nextDev, ids] = await sscan(conn, legacy.relayDevices(name), devCursor);
        await drop(ids.map((id) => legacy.dev(id)));
        devCursor = nextDev;
      } while (devCursor !== "0");
      await drop([legacy.relay(name), legacy.relayDevices(name), legacy.evictions(name)]);
    }
    cursor = next;
  } while (cursor !== "0");
  await conn.command(["SET", keys.layout, KEY_LAYOUT]);
  return result;
}
