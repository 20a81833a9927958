/**
 * One device, one place, across relays: when the directory (mesh or Redis) decides that
 * a newer login of a device won on another relay, its connections here are closed. The
 * agent is told why (`ERROR Replaced`), so it stops instead of logging back in and
 * fighting the other one; an agent instance that simply moved to the other relay is
 * closed quietly (it is already logged in there).
 *
 * @module
 */

import { ErrorCode } from "../../shared/protocol/constants.ts";
import type { RelayContext } from "./context.ts";

/** How long an evicted agent instance is refused here: its in-flight logins must not win back. */
const EVICTED_FOR_MS = 5 * 60_000;
/** Most evicted instances remembered per relay (oldest forgotten first). */
const MAX_EVICTED = 10_000;

/**
 * Agent instances evicted per relay, `device\0instance` → until (ms). An agent opens
 * several connections; one still logging in when another is told `Replaced` would
 * otherwise count as a newer login and evict the winner: a fight.
 */
const evicted = new WeakMap<RelayContext, Map<string, number>>();

/** True when agent `instance` of device `id` was evicted here recently (refuse its login). */
export function wasEvicted(ctx: RelayContext, id: string, instance: string): boolean {
  if (instance === "") return false;
  const key = `${id}\0${instance}`;
  const until = evicted.get(ctx)?.get(key);
  if (until === undefined) return false;
  if (until > Date.now()) return true;
  evicted.get(ctx)!.delete(key);
  return false;
}

/**
 * Remembers that agent `instance` of device `id` lost here (to a newer instance on this
 * relay or another): its logins still in flight are refused, so the two do not take
 * turns replacing each other.
 */
export function rememberReplaced(ctx: RelayContext, id: string, instance: string): void {
  if (instance === "") return;
  let map = evicted.get(ctx);
  if (map === undefined) evicted.set(ctx, map = new Map());
  if (map.size >= MAX_EVICTED) map.delete(map.keys().next().value!);
  map.set(`${id}\0${instance}`, Date.now() + EVICTED_FOR_MS);
}

/** Closes every connection of device `id` here after a newer login won on `by.relay`. */
export function evictDevice(
  ctx: RelayContext,
  id: string,
  by: { relay: string; sameInstance: boolean },
): void {
  const device = ctx.devices.get(id);
  if (device === undefined) return;
  ctx.logger.warn("device replaced", { device: id, by: by.relay, sameInstance: by.sameInstance });
  for (const c of [...device.conns]) {
    // One-shot clients (no instance: `send`, `list`, `forward`) are not the device's
    // presence: they are never replaced (docs/protocol.md 6.9).
    if (c.instance === "") continue;
    if (!by.sameInstance) rememberReplaced(ctx, id, c.instance);
    if (by.sameInstance) {
      c.framed.close();
      continue;
    }
    void c.framed.trySend({
      kind: "error",
      code: ErrorCode.Replaced,
      message: `Another agent logged in as "${id}" on relay ${by.relay}; this one stops`,
    }).finally(() => c.framed.close());
  }
}
