/**
 * A device's registration changed (relay/login/registry_watch.ts noticed): the logins it
 * no longer backs end here, as a changed password ends the sessions of any production
 * service. A removed device, or one whose stored verifier changed (`registry passwd`),
 * loses its tickets and its connections; each connection is told why first
 * (`ERROR AuthFailed`, on a frame boundary or not at all, see session.ts), and the agent,
 * whose password no longer fits, stops with the reason. A change of type or attributes
 * only (`registry set`) ends nothing: the device's entry and tickets take the new values.
 *
 * Each connection and ticket remembers the verifier it was granted under, so a login
 * with the new password made before the check is left alone.
 *
 * @module
 */

import { ErrorCode } from "../../shared/protocol/constants.ts";
import type { Registration } from "../registry/registry.ts";
import type { RelayContext } from "./context.ts";

/** Ends the logins of device `id` that `reg` (undefined: removed) no longer backs. */
export function applyRegistration(
  ctx: RelayContext,
  id: string,
  reg: Registration | undefined,
): void {
  const tickets = ctx.logins.reconcile(id, reg);
  const device = ctx.devices.get(id);
  const reason = reg === undefined ? "registration removed" : "password changed";
  const message = reg === undefined
    ? `Registration removed: device "${id}" is no longer registered on this relay`
    : `Password changed: device "${id}" must log in again with its new password`;
  let closed = 0;
  for (const c of [...device?.conns ?? []]) {
    if (reg !== undefined && c.verifier === reg.passwordHash) continue;
    closed++;
    void c.framed.trySend({ kind: "error", code: ErrorCode.AuthFailed, message })
      .finally(() => c.framed.close());
  }
  if (closed > 0 || tickets > 0) {
    ctx.logger.warn("logins revoked", { device: id, reason, connections: closed, tickets });
  }
  if (reg === undefined || device === undefined || closed === device.conns.size) return;
  if (device.type === reg.type && sameList(device.attributes, reg.attributes)) return;
  device.type = reg.type;
  device.attributes = [...reg.attributes];
  ctx.devices.changed(id);
  ctx.logger.info("registration changed", {
    device: id,
    type: reg.type,
    attributes: reg.attributes.join(", "),
  });
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
