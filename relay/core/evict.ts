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
