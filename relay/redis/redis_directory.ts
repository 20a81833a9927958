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
 * heartbeat also purges the entries of relays whose key expired.
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
  LuaScript,
  RedisConnection,
  type RedisConnectionOptions,
} from "./redis_conn.ts";
import { DEFAULT_KEY_PREFIX, RedisKeys } from "./redis_keys.ts";
import { fieldsOf, RedisRegistry, registrationOf } from "./redis_registry.ts";

export { DirectoryUnavailableError };

/**
 * Writes one change of a device. KEYS: dev:<id>, relaydevs:<me>. ARGV: prefix, id, me,
 * epoch, seq, age of this relay's login of the device in µs, entry JSON ("" = the device
 * logged out), agent instance hash. Returns what happened: written, took-over:<relay>
 * (a live relay held an older login), cleared, stale, replaced (a live relay holds a
 * newer login: this relay must let the device go) or not-owner.
 *
 * One device, one place: `at` is the time of the holder's *login* on Redis's clock (the
 * relay sends the login's age on its own monotonic clock), so a later state change of an
 * older login never takes the device back from a newer login elsewhere.
 */
const WRITE = new LuaScript(`
local prefix, id, me, epoch = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local seq, entry = tonumber(ARGV[5]), ARGV[7]
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000000 + tonumber(t[2]) - tonumber(ARGV[6])
local cur = redis.call('HMGET', KEYS[1], 'relay', 'epoch', 'seq', 'at')
if entry == '' then
  if cur[1] ~= me then return 'not-owner' end
  if cur[2] == epoch and tonumber(cur[3]) >= seq then return 'stale' end
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], id)
  return 'cleared'
end
local result = 'written'
if cur[1] then
  if cur[1] == me and cur[2] == epoch then
    if tonumber(cur[3]) >= seq then return 'stale' end
  elseif redis.call('HGET', prefix .. 'relay:' .. cur[1], 'epoch') == cur[2] then
    if tonumber(cur[4]) > at then return 'replaced' end
    if cur[1] ~= me then result = 'took-over:' .. cur[1] end
  end
  if cur[1] ~= me then redis.call('SREM', prefix .. 'relaydevs:' .. cur[1], id) end
end
redis.call('HSET', KEYS[1], 'relay', me, 'epoch', epoch, 'seq', ARGV[5],
  'at', string.format('%.0f', at), 'entry', entry, 'inst', ARGV[8])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('SADD', KEYS[2], id)
redis.call('SADD', prefix .. 'relays', me)
return result
`);

/**
 * Refreshes this relay's key. KEYS: relay:<me>, relays. ARGV: epoch, address,
 * startedAt, ttlMs, me. Returns alive (refreshed), missing (re-created) or taken
 * (another process of the same name had it).
 */
const HEARTBEAT = new LuaScript(`
local e = redis.call('HGET', KEYS[1], 'epoch')
if e == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 'alive'
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'address', ARGV[2], 'startedAt', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
if e then return 'taken' end
return 'missing'
`);

/**
 * Purges the entries of relays whose key expired. KEYS: relays. ARGV: prefix.
 * Returns the number of device entries removed.
 */
const JANITOR = new LuaScript(`
local prefix, purged = ARGV[1], 0
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', prefix .. 'relay:' .. name) == 0 then
    local set = prefix .. 'relaydevs:' .. name
    for _, id in ipairs(redis.call('SMEMBERS', set)) do
      local dev = prefix .. 'dev:' .. id
      if redis.call('HGET', dev, 'relay') == name then
        redis.call('DEL', dev)
        purged = purged + 1
      end
    end
    redis.call('DEL', set)
    redis.call('SREM', KEYS[1], name)
  end
end
return purged
`);

/**
 * Removes this relay process's key and entries on a clean stop. KEYS: relay:<me>,
 * relaydevs:<me>, relays. ARGV: prefix, me, epoch.
 */
const LEAVE = new LuaScript(`
local prefix, me, epoch = ARGV[1], ARGV[2], ARGV[3]
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local dev = prefix .. 'dev:' .. id
  local cur = redis.call('HMGET', dev, 'relay', 'epoch')
  if cur[1] == me and cur[2] == epoch then
    redis.call('DEL', dev)
    redis.call('SREM', KEYS[2], id)
  end
end
if redis.call('HGET', KEYS[1], 'epoch') == epoch then
  redis.call('DEL', KEYS[1])
  if redis.call('SCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], me) end
end
return 1
`);

/**
 * One device: its registration and, if its relay is alive, its entry JSON.
 * KEYS: reg:<id>, dev:<id>. ARGV: prefix. Returns nil, or {reg fields, entry or ''}.
 */
const LOOKUP = new LuaScript(`
local reg = redis.call('HGETALL', KEYS[1])
if #reg == 0 then return false end
local dev = redis.call('HMGET', KEYS[2], 'relay', 'epoch', 'entry')
local entry = ''
if dev[1] and redis.call('HGET', ARGV[1] .. 'relay:' .. dev[1], 'epoch') == dev[2] then
  entry = dev[3]
end
return {reg, entry}
`);

/**
 * Every registered device: {id, reg fields, entry or '', ...}. KEYS: regs. ARGV: prefix.
 */
const LIST = new LuaScript(`
local prefix, out, live = ARGV[1], {}, {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local reg = redis.call('HGETALL', prefix .. 'reg:' .. id)
  if #reg > 0 then
    local dev = redis.call('HMGET', prefix .. 'dev:' .. id, 'relay', 'epoch', 'entry')
    local entry = ''
    if dev[1] then
      if live[dev[1]] == nil then
        live[dev[1]] = redis.call('HGET', prefix .. 'relay:' .. dev[1], 'epoch') or ''
      end
      if live[dev[1]] == dev[2] then entry = dev[3] end
    end
    out[#out + 1] = id
    out[#out + 1] = reg
    out[#out + 1] = entry
  end
end
return out
`);

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
    const reply = await this.conn.eval(
      LOOKUP,
      [this.keys.reg(id), this.keys.dev(id)],
      [this.keys.prefix],
    );
    if (!Array.isArray(reply)) return null;
    const reg = registrationOf(id, fieldsOf(reply[0]), this.#where(id));
    // A device online here is reachable here, even before its write has landed.
    return this.#local.get(id)?.entry ?? parseEntry(id, String(reply[1])) ?? offlineEntry(reg);
  }

  /** See {@link Directory.list}. Throws {@link DirectoryUnavailableError}. */
  async list(includeOffline: boolean): Promise<DirectoryEntry[]> {
    const reply = await this.conn.eval(LIST, [this.keys.regs], [this.keys.prefix]);
    const items = Array.isArray(reply) ? reply : [];
    const out: DirectoryEntry[] = [];
    for (let i = 0; i + 2 < items.length; i += 3) {
      const id = String(items[i]);
      const entry = this.#local.get(id)?.entry ?? parseEntry(id, String(items[i + 2]));
      if (entry !== null) out.push(entry);
      else if (includeOffline) {
        out.push(offlineEntry(registrationOf(id, fieldsOf(items[i + 1]), this.#where(id))));
      }
    }
    return out.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
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
    if (this.#self !== null && this.conn.isReady) {
      const me = this.#self.name;
      try {
        await this.conn.eval(
          LEAVE,
          [this.keys.relay(me), this.keys.relayDevices(me), this.keys.relays],
          [this.keys.prefix, me, this.#epoch],
        );
      } catch (e) {
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

  async #write(self: SelfInfo, write: PendingWrite): Promise<void> {
    const ageUs = Math.max(0, Math.round((performance.now() - write.at) * 1000));
    const result = await this.conn.eval(
      WRITE,
      [this.keys.dev(write.id), this.keys.relayDevices(self.name)],
      [
        this.keys.prefix,
        write.id,
        self.name,
        this.#epoch,
        write.seq,
        ageUs,
        write.entry === null ? "" : JSON.stringify(write.entry),
        write.inst,
      ],
    );
    const outcome = String(result);
    this.#logger.debug("redis write", { device: write.id, result: outcome });
    if (outcome === "replaced") await this.#checkPlace([write.id]);
    else if (outcome.startsWith("took-over:")) {
      // Tell the relay that held the older login; it checks at its next heartbeat.
      const key = this.keys.evictions(outcome.slice("took-over:".length));
      await this.conn.command(["RPUSH", key, write.id]);
      await this.conn.command(["PEXPIRE", key, String(this.#ttlMs * 6)]);
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
      const purged = await this.conn.eval(JANITOR, [this.keys.relays], [this.keys.prefix]);
      if (Number(purged) > 0) this.#logger.info("redis purged dead relays' devices", { purged });
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

  async #refreshKey(): Promise<string> {
    const self = this.#self!;
    return String(
      await this.conn.eval(HEARTBEAT, [this.keys.relay(self.name), this.keys.relays], [
        this.#epoch,
        formatHostPort(self.address),
        this.#startedAt,
        this.#ttlMs,
        self.name,
      ]),
    );
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
      const owned = await this.conn.command(["SMEMBERS", this.keys.relayDevices(self.name)]);
      let stale = 0;
      for (const id of Array.isArray(owned) ? owned.map(String) : []) {
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
