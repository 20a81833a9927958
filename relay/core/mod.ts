/**
 * The relay core: one owner per connection (conn.ts), login (login.ts), the control and
 * link loops (control_loop.ts), connection requests (connect.ts, forward.ts), sessions
 * (session.ts), the table of local devices (local_devices.ts), eviction of a device
 * that a newer login took elsewhere (evict.ts), and the end of logins that a changed or
 * removed registration no longer backs (revoke.ts).
 *
 * @module
 */

export { type ConnState, RelayConn } from "./conn.ts";
export {
  type ConnectRequest,
  DEFAULT_LIMITS,
  MAX_HOPS,
  type RelayContext,
  type RelayLimits,
} from "./context.ts";
export { ConnectRate } from "./connect_rate.ts";
export { evictDevice } from "./evict.ts";
export { LocalDevices } from "./local_devices.ts";
export { logout } from "./control_loop.ts";
export { applyRegistration } from "./revoke.ts";
export { serveConnection } from "./serve.ts";
export { UnauthLimiter } from "./unauth.ts";
export { TargetWaits } from "./waits.ts";
