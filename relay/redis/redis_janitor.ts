/**
 * Cleans up after relays that died without a goodbye, and after this relay on a clean
 * stop, a bounded amount of work at a time: no command walks the whole fleet.
 *
 * The janitor walks the `relays` index with an `SSCAN` cursor, one page per
 * {@link Janitor.step}; for each relay whose key is gone it walks that relay's
 * `relaydevs:{<name>}` index, again a page at a time, and deletes each device entry the
 * dead relay still holds. The steps span hash slots, so each deletion is a
 * compare-and-delete ({@link PURGE}): the entry's relay, epoch and sequence number are
 * read first, the relay's liveness after that, and the entry is deleted only if it
 * still holds what was read. A relay that came back meanwhile has rewritten its entries
 * with new sequence numbers (its write-back), so the janitor never deletes a live entry.
 *
 * Every relay runs a step at each heartbeat; they may overlap, which only repeats work.
 * The cursors are owned by the heartbeat (one step at a time).
 *
 * @module
 */

import type { RedisConnection } from "./redis_conn.ts";
import type { RedisKeys } from "./redis_keys.ts";
import { LEAVE, PURGE, UNINDEX_DEAD } from "./_scripts.ts";

/** Relay names and device IDs asked for per `SSCAN` page. */
const PAGE = 256;

/** One `SSCAN` page: [next cursor, members]. */
export async function sscan(
  conn: RedisConnection,
  key: string,
  cursor: string,
  count = PAGE,
): Promise<[string, string[]]> {
  const reply = await conn.command(["SSCAN", key, cursor, "COUNT", String(count)]);
  if (!Array.isArray(reply) || !Array.isArray(reply[1])) return ["0", []];
  return [String(reply[0]), reply[1].map(String)];
}

/** The paged janitor of one relay (see the module comment). */
export class Janitor {
  readonly #conn: RedisConnection;
  readonly #keys: RedisKeys;
  readonly #me: string;
  #relaysCursor = "0";
  /** Dead relays found and not yet cleaned, with the cursor into each one's index. */
  readonly #dead = new Map<string, string>();

  /** A janitor run by relay `me`. */
  constructor(conn: RedisConnection, keys: RedisKeys, me: string) {
    this.#conn = conn;
    this.#keys = keys;
    this.#me = me;
  }

  /**
   * One bounded step: a page of the `relays` index when no dead relay is pending, then
   * up to `pages` pages of dead relays' device indexes. Resolves to the entries deleted.
   */
  async step(pages = 4): Promise<number> {
    if (this.#dead.size === 0) await this.#findDead();
    let purged = 0;
    for (const [name, cursor] of this.#dead) {
      if (pages-- <= 0) break;
      const [next, ids] = await sscan(this.#conn, this.#keys.relayDevices(name), cursor);
      const result = await this.purgePage(name, ids, null);
      purged += result.deleted;
      if (result.alive) {
        this.#dead.delete(name);
        continue;
      }
      await this.#conn.eval(
        UNINDEX_DEAD,
        [this.#keys.relay(name), this.#keys.relayDevices(name)],
        result.unindex,
      );
      if (next !== "0") {
        this.#dead.set(name, next);
        continue;
      }
      this.#dead.delete(name);
      const left = Number(
        await this.#conn.eval(
          UNINDEX_DEAD,
          [this.#keys.relay(name), this.#keys.relayDevices(name)],
          [],
        ),
      );
      // Its index is empty and it is still dead: forget the name (a relay that comes
      // back adds it again at its next heartbeat).
      if (left === 0) await this.#conn.command(["SREM", this.#keys.relays, name]);
    }
    return purged;
  }

  /** A page of the `relays` index: which of them have no key (dead)? */
  async #findDead(): Promise<void> {
    const [next, names] = await sscan(this.#conn, this.#keys.relays, this.#relaysCursor);
    this.#relaysCursor = next;
    const others = names.filter((name) => name !== this.#me);
    const exists = await this.#conn.commands(
      others.map((name) => ["EXISTS", this.#keys.relay(name)]),
    );
    others.forEach((name, i) => {
      if (Number(exists[i]) === 0) this.#dead.set(name, "0");
    });
  }

  /**
   * Deletes the entries among `ids` that relay `name` holds, if it is dead (or, with
   * `epoch`, those of exactly that process: a clean stop). Resolves to the
   * number deleted, the IDs the relay no longer holds (to drop from its index), and
   * whether the relay turned out alive (then nothing was deleted).
   */
  async purgePage(
    name: string,
    ids: string[],
    epoch: string | null,
  ): Promise<{ deleted: number; unindex: string[]; alive: boolean }> {
    if (ids.length === 0) return { deleted: 0, unindex: [], alive: false };
    const held = await this.#conn.commands(
      ids.map((id) => ["HMGET", this.#keys.dev(id), "relay", "epoch", "seq"]),
    );
    // Liveness read *after* the entries: an entry read before its relay came back is
    // rewritten with a new sequence number, and the compare-and-delete below misses it.
    const live = epoch === null
      ? await this.#conn.command(["HGET", this.#keys.relay(name), "epoch"])
      : null;
    // It came back: its own write-back clears what it no longer holds.
    if (typeof live === "string") return { deleted: 0, unindex: [], alive: true };
    const unindex: string[] = [];
    const deletes: { id: string; epoch: string; seq: string }[] = [];
    ids.forEach((id, i) => {
      const [relay, entryEpoch, seq] = Array.isArray(held[i]) ? held[i].map(String) : [];
      if (relay !== name) unindex.push(id);
      else if (epoch === null || entryEpoch === epoch) {
        deletes.push({ id, epoch: entryEpoch, seq: epoch !== null ? "" : seq });
      }
    });
    const results = await Promise.all(
      deletes.map((d) => this.#conn.eval(PURGE, [this.#keys.dev(d.id)], [name, d.epoch, d.seq])),
    );
    let deleted = 0;
    results.forEach((r, i) => {
      if (Number(r) === 1) deleted++;
      if (Number(r) !== 0) unindex.push(deletes[i].id);
    });
    return { deleted, unindex, alive: false };
  }

  /**
   * A clean stop of relay process `epoch`: deletes its entries page by page, then its
   * key and index (unless another process of the same name holds the key), then its
   * name from the `relays` index. Stops early when `signal` aborts.
   */
  async leave(epoch: string, signal: AbortSignal): Promise<void> {
    const index = this.#keys.relayDevices(this.#me);
    let cursor = "0";
    do {
      signal.throwIfAborted();
      const [next, ids] = await sscan(this.#conn, index, cursor);
      await this.purgePage(this.#me, ids, epoch);
      cursor = next;
    } while (cursor !== "0");
    const left = await this.#conn.eval(
      LEAVE,
      [this.#keys.relay(this.#me), index],
      [epoch],
    );
    if (Number(left) === 1) await this.#conn.command(["SREM", this.#keys.relays, this.#me]);
  }
}
