/**
 * The shared-database directory (patent [0054]-[0060], Fig. 6): every relay writes the
 * connection information of its devices to one Redis server and reads other relays'
 * devices from it, instead of each relay keeping a copy fed by notices.
 *
 * Writes. {@link RedisDirectory.publish} is called synchronously on every change of a
 * local device; it only records the change. Changes are coalesced per device (only the
 * latest state of a device waits; memory is bounded by the number of devices) and a
 * single background writer sends them, each as one Lua script, so a device's state and
 * its relay are always written together. Per device the writes are in order: a
 * device's next write starts only after its previous one finished.
 *
 * Ownership and "newest": one device, one place. `dev:<id>` names the relay (and the
 * relay process, `epoch`) that wrote it. An offline write only clears an entry its own
 * relay wrote: a device that moved to another relay is never cleared by the relay it
 * left. When two live relays hold one device, the newer *login* wins, timed on Redis's
 * clock: the relay sends the age of its login of the device on its own monotonic clock
 * and the script subtracts it from Redis `TIME`, so relays' wall clocks never need to
 * agree, a write that waited in a queue cannot take the device from a later login, and
 * later state changes of the older login cannot take it back. The loser lets the device
 * go (its agent is told `Replaced`): at once if its own write is refused (`replaced`),
 * else at its next heartbeat, from the `evict:<name>` list the winner appends to.
 * Between writes of the same relay process the relay's own sequence number decides. An
 * entry whose relay process is not alive (its `relay:<name>` key expired or holds another
 * epoch) is overwritten unconditionally.
 *
 * Liveness. {@link RedisDirectory.start} writes `relay:<name>` with a TTL that a
 * heartbeat refreshes; readers only trust `dev:` entries whose relay key is alive with
 * the same epoch, so a killed relay's devices read as offline within the TTL. The
 * heartbeat also runs a bounded step of the {@link Janitor}, which purges the entries of
 * relays whose key expired.
 *
 * Redis Cluster. Each script touches only its declared keys, in one slot: a device's
 * `dev:{<id>}` (and `reg:{<id>}`), or a relay's `relay:{<name>}`. What lies in another
 * slot is read by the caller and checked by the script (compare-and-set, see
 * {@link WRITE}); the indexes (`regs`, `relaydevs:`, `relays`) are written before and
 * cleaned after the keys they list; listings walk them with `SSCAN`, a page at a time.
 *
 * Outages. Reads fail fast with {@link DirectoryUnavailableError}; publishes keep
 * coalescing. After every (re)connection, and whenever the heartbeat finds the relay's
 * key gone (expired or Redis restarted empty), the relay writes its key and its current
 * devices (`SelfInfo.snapshot()`) back, and clears the entries it owns of devices no
 * longer logged in.
 *
 * Fields of {@link RedisDirectory} are owned by the event loop as a whole (publish is
 * synchronous); `#pending` is drained only by the writer loop, `#beatTimer` only by
 * the heartbeat.
 *
 * @module
 */

import { formatHostPort, parseHostPort } from "../../shared/address.ts";
import { Logger } from "../../shared/log.ts";
import { DeviceState } from "../../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../../shared/protocol/messages.ts";
import {
  type Directory,
  type DirectoryHealth,
  type Hop,
  offlineEntry,
  type SelfInfo,
} from "../directory.ts";
import {
  DirectoryUnavailableError,
  RedisConnection,
  type RedisConnectionOptions,
} from "./redis_conn.ts";
import { DEFAULT_KEY_PREFIX, RedisKeys } from "./redis_keys.ts";
import { fieldsOf, RedisRegistry, registrationOf, SCAN_PAGE } from "./redis_registry.ts";
import { HEARTBEAT, LOOKUP, WRITE } from "./_scripts.ts";
import { Janitor, sscan } from "./redis_janitor.ts";
import { checkLayout } from "./redis_migrate.ts";

export { DirectoryUnavailableError };

/** Options for {@link RedisDirectory}. */
export interface RedisDirectoryOptions extends RedisConnectionOptions {
  /** Key prefix (default `tsunagi:`), to share one Redis database between systems. */
  keyPrefix?: string;
  /** Lifetime of this relay's key without a heartbeat, ms (default 10000). */
  ttlMs?: number;
  /** Heartbeat interval, ms (default a third of the TTL). */
  heartbeatMs?: number;
  /** Pause before retrying writes that failed while connected, ms (default 500). */
  retryDelayMs?: number;
  /** How long {@link RedisDirectory.open} waits for the first connection, ms (default 2000). */
  connectWaitMs?: number;
  /** Most writes sent at once (pipelined), default 256. */
  batchSize?: number;
}

/** One device's latest change waiting to be written. */
interface PendingWrite {
  /** Device ID. */
  id: string;
  /** The entry; null when the device logged out. */
  entry: DirectoryEntry | null;
  /** This process's sequence number of the change. */
  seq: number;
  /** `performance.now()` when the device logged in here (the change time when offline). */
  at: number;
  /** Hash of the agent instance token ("" for none). */
  inst: string;
}

/** Hash of an agent instance token, as stored in `dev:` entries. */
function instanceHash(token: string): string {
  if (token === "") return "";
  let h = 0x811c9dc5;
  for (const c of `tsunagi-instance:${token}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h.toString(16);
}

/** What {@link RedisDirectory.lookup} and friends parse an entry JSON into. */
function parseEntry(id: string, json: string): DirectoryEntry | null {
  if (json === "") return null;
  try {
    const entry = JSON.parse(json) as DirectoryEntry;
    if (typeof entry !== "object" || entry === null || typeof entry.relay !== "string") {
      return null;
    }
    const services = Array.isArray(entry.services) ? entry.services : []; // before protocol 3
    return { ...entry, id, services, state: DeviceState.Online };
  } catch {
    return null;
  }
}

/** The shared-database {@link Directory}: presence and registrations in Redis. */
export class RedisDirectory implements Directory, AsyncDisposable {
  /** Registrations in the same Redis database. */
  readonly registry: RedisRegistry;
  /** The connection (owned: {@link close} closes it). */
  readonly conn: RedisConnection;
  /** Key layout. */
  readonly keys: RedisKeys;
  readonly #logger: Logger;
  readonly #ttlMs: number;
  readonly #heartbeatMs: number;
  readonly #retryDelayMs: number;
  readonly #batchSize: number;
  /** Identifies this relay process: entries of an earlier process of the same name are stale. */
  readonly #epoch = crypto.randomUUID();
  #self: SelfInfo | null = null;
  #startedAt = 0;
  #seq = 0;
  /** Latest unwritten change per device, in first-change order. */
  readonly #pending = new Map<string, PendingWrite>();
  /** Devices online here: latest entry, when it logged in here (monotonic ms), agent instance. */
  readonly #local = new Map<string, { entry: DirectoryEntry; at: number; inst: string }>();
  #inFlight = 0;
  #wake: (() => void) | null = null;
  readonly #idleWaiters = new Set<() => void>();
  #writer: Promise<void> | null = null;
  #writerStop = false;
  #writeFailures = 0;
  #beatTimer: ReturnType<typeof setTimeout> | null = null;
  #beating: Promise<void> | null = null;
  #resyncing: Promise<void> | null = null;
  #resyncAgain = false;
  #closing: Promise<void> | null = null;
  /** Owned by the heartbeat (and the close, after the heartbeat stopped). */
  #janitor: Janitor | null = null;
  #layoutChecked = false;

  private constructor(url: string, options: RedisDirectoryOptions) {
    this.#logger = options.logger ?? Logger.silent();
    this.conn = new RedisConnection(url, options);
    this.keys = new RedisKeys(options.keyPrefix ?? DEFAULT_KEY_PREFIX);
    this.registry = new RedisRegistry(this.conn, { keyPrefix: this.keys.prefix });
    this.#ttlMs = options.ttlMs ?? 10_000;
    this.#heartbeatMs = options.heartbeatMs ?? Math.max(10, Math.floor(this.#ttlMs / 3));
    this.#retryDelayMs = options.retryDelayMs ?? 500;
    this.#batchSize = options.batchSize ?? 256;
    if (!(this.#ttlMs >= 100)) throw new RangeError(`ttlMs ${this.#ttlMs} is below 100 ms`);
    if (!(this.#heartbeatMs < this.#ttlMs)) {
      throw new RangeError(`heartbeatMs ${this.#heartbeatMs} must be below ttlMs ${this.#ttlMs}`);
    }
    this.conn.onReady(() => {
      if (this.#self !== null && this.#closing === null) {
        this.#wakeWriter();
        void this.#resync("reconnected");
      }
    });
  }

  /**
   * Creates the directory for `url` (`redis://HOST:PORT[/DB]`) and waits up to
   * `connectWaitMs` for Redis. It never fails because Redis is down: the connection
   * keeps retrying, and reads fail fast until it succeeds.
   */
  static async open(url: string, options: RedisDirectoryOptions = {}): Promise<RedisDirectory> {
    const directory = new RedisDirectory(url, options);
    await directory.conn.connect({ waitMs: options.connectWaitMs ?? 2000 });
    if (!directory.conn.isReady) {
      directory.#logger.warn("redis not reachable yet; retrying in the background", {
        redis: directory.conn.address.display,
      });
    }
    return directory;
  }

  /** See {@link Directory.health}: up while the Redis connection is ready. */
  health(): DirectoryHealth {
    return { backend: "redis", up: this.conn.isReady };
  }

  /** Changes not yet written (for tests and metrics). */
  get pendingWrites(): number {
    return this.#pending.size + this.#inFlight;
  }

  /** See {@link Directory.lookup}. Throws {@link DirectoryUnavailableError}. */
  async lookup(id: string): Promise<DirectoryEntry | null> {
    const reply = await this.conn.eval(LOOKUP, [this.keys.reg(id), this.keys.dev(id)], []);
    if (!Array.isArray(reply)) return null;
    const reg = registrationOf(id, fieldsOf(reply[0]), this.#where(id));
    // A device online here is reachable here, even before its write has landed.
    const local = this.#local.get(id)?.entry;
    if (local !== undefined) return local;
    const [relay, epoch, json] = [String(reply[1]), String(reply[2]), String(reply[3])];
    const alive = relay !== "" && (await this.#liveEpochs([relay])).get(relay) === epoch;
    return (alive ? parseEntry(id, json) : null) ?? offlineEntry(reg);
  }

  /** See {@link Directory.list}: every {@link listPage} in turn. */
  async list(includeOffline: boolean): Promise<DirectoryEntry[]> {
    const byId = new Map<string, DirectoryEntry>();
    let cursor = "0";
    do {
      const page = await this.listPage(cursor, includeOffline);
      // SSCAN may return an ID twice (the set was resized meanwhile).
      for (const entry of page.entries) byId.set(entry.id, entry);
      cursor = page.cursor;
    } while (cursor !== "0");
    return [...byId.values()].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  /**
   * One page of the device listing: an `SSCAN` page of the registration index from
   * `cursor` ("0" to start), then the page's registrations, entries and their relays'
   * liveness, pipelined (on a cluster, to every node in parallel). Each command touches
   * one key: none blocks Redis for the whole fleet. Resolves to the next cursor ("0" at
   * the end). Throws {@link DirectoryUnavailableError}.
   */
  async listPage(
    cursor: string,
    includeOffline: boolean,
    count = SCAN_PAGE,
  ): Promise<{ cursor: string; entries: DirectoryEntry[] }> {
    const [next, ids] = await this.registry.scanIds(cursor, count);
    const replies = await this.conn.commands(ids.flatMap((id) => [
      ["HGETALL", this.keys.reg(id)],
      ["HMGET", this.keys.dev(id), "relay", "epoch", "entry"],
    ]));
    const rows = ids.map((id, i) => {
      const dev = replies[2 * i + 1];
      const [relay, epoch, json] = Array.isArray(dev) ? dev.map((v) => v ?? "") : [];
      return { id, fields: fieldsOf(replies[2 * i]), relay, epoch, json };
    });
    const live = await this.#liveEpochs(rows.map((r) => String(r.relay ?? "")));
    const entries: DirectoryEntry[] = [];
    for (const row of rows) {
      // Indexed but without a hash: being added or removed; not a registration.
      if (Object.keys(row.fields).length === 0) continue;
      const alive = row.relay && live.get(String(row.relay)) === String(row.epoch);
      const entry = this.#local.get(row.id)?.entry ??
        (alive ? parseEntry(row.id, String(row.json)) : null);
      if (entry !== null) entries.push(entry);
      else if (includeOffline) {
        entries.push(offlineEntry(registrationOf(row.id, row.fields, this.#where(row.id))));
      }
    }
    return { cursor: next, entries };
  }

  /** The epoch of each live relay among `relays` (a relay without a key is absent). */
  async #liveEpochs(relays: string[]): Promise<Map<string, string>> {
    const names = [...new Set(relays.filter((r) => r !== ""))];
    const epochs = await this.conn.commands(
      names.map((name) => ["HGET", this.keys.relay(name), "epoch"]),
    );
    const out = new Map<string, string>();
    names.forEach((name, i) => {
      if (typeof epochs[i] === "string") out.set(name, epochs[i]);
    });
    return out;
  }

  /** See {@link Directory.publish}. Never blocks or throws: the write happens in the background. */
  publish(entry: DirectoryEntry): void {
    if (this.#closing !== null) return;
    const now = performance.now();
    const online = entry.state !== DeviceState.Offline;
    const inst = instanceHash(this.#self?.instance?.(entry.id) ?? "");
    const held = this.#local.get(entry.id);
    // A new login here (or another agent instance taking over) is timed now; a change of
    // the same login keeps its login time: the newer *login* holds the device.
    const at = online && held !== undefined && held.inst === inst ? held.at : now;
    if (online) this.#local.set(entry.id, { entry: { ...entry }, at, inst });
    else this.#local.delete(entry.id);
    this.#pending.set(entry.id, {
      id: entry.id,
      entry: online ? { ...entry } : null,
      seq: ++this.#seq,
      at,
      inst,
    });
    this.#wakeWriter();
  }

  /** The relay's name and advertised address from Redis; null when unknown or expired. */
  async nextHop(relay: string): Promise<Hop | null> {
    const address = await this.conn.command(["HGET", this.keys.relay(relay), "address"]);
    if (typeof address !== "string" || address === "") return null;
    try {
      return { name: relay, address: parseHostPort(address) };
    } catch {
      this.#logger.warn("bad relay address in redis", { relay, address });
      return null;
    }
  }

  /** Writes this relay's key and state, then starts the writer and the heartbeat. */
  async start(self: SelfInfo): Promise<void> {
    if (this.#self !== null) throw new Error("RedisDirectory.start() called twice");
    this.#self = self;
    this.#janitor = new Janitor(this.conn, this.keys, self.name);
    this.#startedAt = Date.now();
    this.#writer = this.#runWriter();
    this.#scheduleBeat();
    if (this.conn.isReady) await this.#resync("start");
  }

  /**
   * Resolves once every change published so far is written (or dropped as stale).
   * Waits while Redis is down; bound it with `signal`.
   */
  async flush(options: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = options.signal;
    while (this.#pending.size > 0 || this.#inFlight > 0) {
      signal?.throwIfAborted();
      const { promise, resolve } = Promise.withResolvers<void>();
      const onAbort = () => resolve();
      this.#idleWaiters.add(resolve);
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        await promise;
      } finally {
        this.#idleWaiters.delete(resolve);
        signal?.removeEventListener("abort", onAbort);
      }
    }
  }

  /**
   * Writes what is pending (bounded by the command timeout), removes this relay's key
   * and entries, and closes the connection.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    if (this.#beatTimer !== null) clearTimeout(this.#beatTimer);
    this.#beatTimer = null;
    await this.#beating;
    await this.#resyncing;
    if (this.#self !== null && this.conn.isReady) {
      const deadline = new AbortController();
      const timer = setTimeout(() => deadline.abort(), 2000);
      try {
        await this.flush({ signal: deadline.signal });
      } catch {
        // Gave up: the relay key's TTL makes the rest expire.
      } finally {
        clearTimeout(timer);
      }
    }
    this.#writerStop = true;
    this.#wakeWriter();
    await this.#writer;
    if (this.#janitor !== null && this.conn.isReady) {
      try {
        await this.#janitor.leave(this.#epoch, AbortSignal.timeout(2000));
      } catch (e) {
        // The relay key's TTL makes the rest expire.
        this.#logger.warn("redis leave failed", { error: String(e) });
      }
    }
    await this.conn.close();
  }

  #where(id: string): string {
    return `${this.conn.address.display} key ${this.keys.reg(id)}`;
  }

  #wakeWriter(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Waits for a wake-up, or `ms` if given. */
  async #sleep(ms: number | null): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#wake = resolve;
    const timer = ms === null ? null : setTimeout(resolve, ms);
    try {
      await promise;
    } finally {
      if (timer !== null) clearTimeout(timer);
      if (this.#wake === resolve) this.#wake = null;
    }
  }

  /** The writer loop: the only code that takes from `#pending`. */
  async #runWriter(): Promise<void> {
    const self = this.#self!;
    while (!this.#writerStop) {
      if (this.#pending.size === 0 || !this.conn.isReady) {
        for (const waiter of this.#idleWaiters) waiter();
        await this.#sleep(null);
        continue;
      }
      const batch: PendingWrite[] = [];
      for (const write of this.#pending.values()) {
        batch.push(write);
        if (batch.length >= this.#batchSize) break;
      }
      for (const write of batch) this.#pending.delete(write.id);
      this.#inFlight = batch.length;
      // Sent together, the scripts are pipelined on the one connection and run in order.
      const results = await Promise.allSettled(batch.map((write) => this.#write(self, write)));
      let failed: unknown = null;
      results.forEach((result, i) => {
        if (result.status === "fulfilled") return;
        failed ??= result.reason;
        const write = batch[i];
        // A newer change of the same device replaces the one that failed.
        if (!this.#pending.has(write.id)) this.#pending.set(write.id, write);
      });
      this.#inFlight = 0;
      if (failed === null) {
        this.#writeFailures = 0;
        continue;
      }
      if (this.#writeFailures++ === 0) {
        this.#logger.warn("redis write failed; will retry", {
          pending: this.#pending.size,
          error: failed instanceof Error ? failed.message : String(failed),
        });
      }
      if (this.conn.isReady) await this.#sleep(this.#retryDelayMs);
    }
    for (const waiter of this.#idleWaiters) waiter();
  }

  /**
   * Writes one change: the relay's device index first (so it always lists every entry
   * the relay may hold), then the entry (compare-and-set on the device's slot: when
   * another relay process holds it, its liveness is read and the write sent again),
   * then the index of whoever lost or let go of the device.
   */
  async #write(self: SelfInfo, write: PendingWrite): Promise<void> {
    const online = write.entry !== null;
    if (online) await this.conn.command(["SADD", this.keys.relayDevices(self.name), write.id]);
    let holder = ["", "", ""];
    let outcome = "";
    for (let attempt = 0;; attempt++) {
      const ageUs = Math.max(0, Math.round((performance.now() - write.at) * 1000));
      const result = await this.conn.eval(WRITE, [this.keys.dev(write.id)], [
        self.name,
        this.#epoch,
        write.seq,
        ageUs,
        online ? JSON.stringify(write.entry) : "",
        write.inst,
        ...holder,
      ]);
      if (!Array.isArray(result)) {
        outcome = String(result);
        break;
      }
      // Another relay process holds the entry: is it alive? (Its key is in another slot.)
      if (attempt >= 8) throw new Error(`entry of ${write.id} keeps changing hands`);
      const [relay, epoch] = [String(result[1]), String(result[2])];
      const live = await this.conn.command(["HGET", this.keys.relay(relay), "epoch"]);
      holder = [relay, epoch, live === epoch ? "1" : ""];
    }
    this.#logger.debug("redis write", { device: write.id, result: outcome });
    if (outcome === "replaced") await this.#checkPlace([write.id]);
    else if (outcome === "cleared" || outcome === "not-owner") {
      await this.conn.command(["SREM", this.keys.relayDevices(self.name), write.id]);
    }
    if (online && outcome !== "replaced" && holder[0] !== "" && holder[0] !== self.name) {
      // The device left relay holder[0] (dead, or an older login): drop it from that index.
      await this.conn.command(["SREM", this.keys.relayDevices(holder[0]), write.id]);
    }
    if (outcome.startsWith("took-over:")) {
      // Tell the relay that held the older login; it checks at its next heartbeat.
      const key = this.keys.evictions(outcome.slice("took-over:".length));
      await this.conn.transaction([
        ["RPUSH", key, write.id],
        ["PEXPIRE", key, String(this.#ttlMs * 6)],
      ]);
    }
  }

  /**
   * One device, one place: for each of `ids` still online here, reads who holds it in
   * Redis; if it is another relay process (a newer login won), lets the device go here.
   */
  async #checkPlace(ids: string[]): Promise<void> {
    const self = this.#self!;
    for (const id of ids) {
      const local = this.#local.get(id);
      if (local === undefined) continue;
      const cur = await this.conn.command(["HMGET", this.keys.dev(id), "relay", "epoch", "inst"]);
      const [relay, epoch, inst] = Array.isArray(cur) ? cur.map((v) => v ?? "") : [];
      if (!relay || (relay === self.name && epoch === this.#epoch)) continue;
      const sameInstance = local.inst !== "" && local.inst === String(inst);
      this.#logger.warn("device taken over by a newer login on another relay", {
        device: id,
        relay: String(relay),
        sameInstance,
      });
      self.evict?.(id, { relay: String(relay), sameInstance });
    }
  }

  #scheduleBeat(): void {
    if (this.#closing !== null) return;
    this.#beatTimer = setTimeout(() => {
      this.#beatTimer = null;
      this.#beating = this.#beat().finally(() => {
        this.#beating = null;
        this.#scheduleBeat();
      });
    }, this.#heartbeatMs);
  }

  /** Refreshes the relay key; re-creates the state if it was gone; purges dead relays. */
  async #beat(): Promise<void> {
    if (!this.conn.isReady || this.#self === null) return;
    try {
      const state = await this.#refreshKey();
      if (state !== "alive") {
        if (state === "taken") {
          this.#logger.error("relay name in use by another relay process", {
            name: this.#self.name,
            hint: "give every relay its own --name",
          });
        }
        await this.#resync(state === "taken" ? "name taken over" : "relay key expired");
      }
      await this.#popEvictions();
      const purged = await this.#janitor!.step();
      if (purged > 0) this.#logger.info("redis purged dead relays' devices", { purged });
    } catch (e) {
      this.#logger.debug("heartbeat failed", { error: String(e) });
    }
  }

  /** Devices other relays took over from this one (a newer login): check and let them go. */
  async #popEvictions(): Promise<void> {
    const key = this.keys.evictions(this.#self!.name);
    for (;;) {
      const ids = await this.conn.command(["LPOP", key, "256"]);
      if (!Array.isArray(ids) || ids.length === 0) return;
      await this.#checkPlace(ids.map(String));
      if (ids.length < 256) return;
    }
  }

  /**
   * Refreshes this relay's key, and its name in the `relays` index (other slot; every
   * beat, so a janitor that dropped the name while this relay was away is undone).
   */
  async #refreshKey(): Promise<string> {
    const self = this.#self!;
    await this.#checkLayout();
    const [state] = await Promise.all([
      this.conn.eval(HEARTBEAT, [this.keys.relay(self.name)], [
        this.#epoch,
        formatHostPort(self.address),
        this.#startedAt,
        this.#ttlMs,
      ]),
      this.conn.command(["SADD", this.keys.relays, self.name]),
    ]);
    return String(state);
  }

  /** Once per process: an unmigrated layout-1 database is an operator's error, said loudly. */
  async #checkLayout(): Promise<void> {
    if (this.#layoutChecked) return;
    const layout = await checkLayout(this.conn, this.keys);
    this.#layoutChecked = true;
    if (layout === "legacy") {
      this.#logger.error("redis holds registrations in the old key layout", {
        redis: this.conn.address.display,
        hint: `stop the relays, run 'deno task registry migrate --directory URL', start them again`,
      });
    }
  }

  /** Writes back the relay key and current state; one at a time, repeated if asked again. */
  #resync(reason: string): Promise<void> {
    if (this.#resyncing !== null) {
      this.#resyncAgain = true;
      return this.#resyncing;
    }
    this.#resyncing = (async () => {
      try {
        do {
          this.#resyncAgain = false;
          await this.#resyncOnce(reason);
        } while (this.#resyncAgain && this.#closing === null);
      } finally {
        this.#resyncing = null;
      }
    })();
    return this.#resyncing;
  }

  async #resyncOnce(reason: string): Promise<void> {
    const self = this.#self!;
    try {
      const keyState = await this.#refreshKey();
      if (keyState === "taken" && reason === "start") {
        this.#logger.warn("relay name was held by another process; taking it over", {
          name: self.name,
          hint: "normal after a restart within the TTL; otherwise give every relay its own --name",
        });
      }
      const snapshot = self.snapshot();
      const current = new Set<string>();
      for (const entry of snapshot) {
        current.add(entry.id);
        if (this.#pending.has(entry.id)) continue;
        this.#pending.set(entry.id, {
          id: entry.id,
          entry: { ...entry },
          seq: ++this.#seq,
          at: this.#local.get(entry.id)?.at ?? performance.now(),
          inst: this.#local.get(entry.id)?.inst ?? "",
        });
      }
      this.#wakeWriter();
      const owned: string[] = [];
      let cursor = "0";
      do {
        const [next, ids] = await sscan(this.conn, this.keys.relayDevices(self.name), cursor);
        owned.push(...ids);
        cursor = next;
      } while (cursor !== "0");
      let stale = 0;
      for (const id of owned) {
        if (current.has(id) || this.#local.has(id) || this.#pending.has(id)) continue;
        this.#pending.set(id, {
          id,
          entry: null,
          seq: ++this.#seq,
          at: performance.now(),
          inst: "",
        });
        stale++;
      }
      this.#wakeWriter();
      this.#logger.info("redis state written back", {
        reason,
        relay: self.name,
        devices: snapshot.length,
        stale,
      });
    } catch (e) {
      // The next reconnection or heartbeat tries again.
      this.#logger.warn("redis write-back failed", { reason, error: String(e) });
    }
  }
}
