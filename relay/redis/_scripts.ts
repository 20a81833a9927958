/**
 * The Lua scripts of the Redis directory. Each touches only the keys it is given in
 * `KEYS`, all in one hash slot (a device's `{<id>}` or a relay's `{<name>}`), so each
 * runs on one node of a Redis Cluster. What a script cannot see from its slot (is the
 * relay holding a device alive?) the caller reads first and passes in; the script
 * re-checks what it was told against the key (compare-and-set) and asks again if the
 * key changed meanwhile.
 *
 * Internal to relay/redis/.
 *
 * @module
 */

import { LuaScript } from "./redis_conn.ts";

/**
 * Writes one change of a device. KEYS: dev:{<id>}. ARGV: me, epoch, seq, age of this
 * relay's login of the device in µs, entry JSON ("" = the device logged out), agent
 * instance hash, then what the caller knows about the other relay process holding the
 * entry: its relay, epoch, and "1" if that process is alive ("" when nothing is known).
 *
 * Returns written, took-over:<relay> (a live relay held an older login), cleared,
 * stale, replaced (a live relay holds a newer login: this relay must let the device
 * go), not-owner, or {check, relay, epoch}: another relay process holds the entry and
 * the caller has not said whether it is alive; read `relay:{<relay>}` and call again.
 *
 * One device, one place: `at` is the time of the holder's *login* on Redis's clock (the
 * relay sends the login's age on its own monotonic clock), so a later state change of an
 * older login never takes the device back from a newer login elsewhere; and a login
 * without an agent instance (a one-shot client) never takes it from a live agent.
 */
export const WRITE = new LuaScript(`
local me, epoch, seq, entry = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5]
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000000 + tonumber(t[2]) - tonumber(ARGV[4])
local cur = redis.call('HMGET', KEYS[1], 'relay', 'epoch', 'seq', 'at', 'inst')
if entry == '' then
  if cur[1] ~= me then return 'not-owner' end
  if cur[2] == epoch and tonumber(cur[3]) >= seq then return 'stale' end
  redis.call('DEL', KEYS[1])
  return 'cleared'
end
local result = 'written'
if cur[1] then
  if cur[1] == me and cur[2] == epoch then
    if tonumber(cur[3]) >= seq then return 'stale' end
  elseif cur[1] ~= ARGV[7] or cur[2] ~= ARGV[8] then
    return {'check', cur[1], cur[2]}
  elseif ARGV[9] == '1' then
    -- A one-shot client (no instance) never takes the device from a live agent instance.
    if ARGV[6] == '' and cur[5] and cur[5] ~= '' then return 'replaced' end
    if tonumber(cur[4]) > at then return 'replaced' end
    if cur[1] ~= me then result = 'took-over:' .. cur[1] end
  end
end
redis.call('HSET', KEYS[1], 'relay', me, 'epoch', epoch, 'seq', ARGV[3],
  'at', string.format('%.0f', at), 'entry', entry, 'inst', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return result
`);

/**
 * Refreshes this relay's key. KEYS: relay:{<me>}. ARGV: epoch, address, startedAt,
 * ttlMs. Returns alive (refreshed), missing (re-created) or taken (another process of
 * the same name had it).
 */
export const HEARTBEAT = new LuaScript(`
local e = redis.call('HGET', KEYS[1], 'epoch')
if e == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 'alive'
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'address', ARGV[2], 'startedAt', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if e then return 'taken' end
return 'missing'
`);

/**
 * One device: its registration and who holds it. KEYS: reg:{<id>}, dev:{<id>}.
 * Returns nil, or {reg fields, relay or '', epoch or '', entry or ''}.
 */
export const LOOKUP = new LuaScript(`
local reg = redis.call('HGETALL', KEYS[1])
if #reg == 0 then return false end
local dev = redis.call('HMGET', KEYS[2], 'relay', 'epoch', 'entry')
return {reg, dev[1] or '', dev[2] or '', dev[3] or ''}
`);

/**
 * Deletes a device's entry if a given relay process still holds it (compare-and-delete).
 * KEYS: dev:{<id>}. ARGV: relay, epoch, seq ('' = any). Returns 1 deleted, 0 held by
 * that relay in another state, 2 not held by that relay at all (its index entry is stale).
 */
export const PURGE = new LuaScript(`
local cur = redis.call('HMGET', KEYS[1], 'relay', 'epoch', 'seq')
if cur[1] ~= ARGV[1] then return 2 end
if cur[2] ~= ARGV[2] or (ARGV[3] ~= '' and cur[3] ~= ARGV[3]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
`);

/**
 * Drops IDs from a relay's device index, only while that relay is dead (its key is
 * missing): a live relay keeps its own index. KEYS: relay:{<name>}, relaydevs:{<name>}.
 * ARGV: IDs. Returns the members left, or -1 when the relay is alive.
 */
export const UNINDEX_DEAD = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if #ARGV > 0 then redis.call('SREM', KEYS[2], unpack(ARGV)) end
return redis.call('SCARD', KEYS[2])
`);

/**
 * A clean stop: removes this relay process's key and device index, unless another
 * process of the same name took the key. KEYS: relay:{<me>}, relaydevs:{<me>}.
 * ARGV: epoch. Returns 1 removed, 0 not ours.
 */
export const LEAVE = new LuaScript(`
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
`);
