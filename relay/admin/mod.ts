/**
 * The relay's admin side: counters the core feeds ({@link RelayMetrics}), snapshots of
 * its tables ({@link RelaySnapshot}), and the HTTP listener serving `/metrics`,
 * `/healthz`, `/readyz` and the status page ({@link startAdmin}).
 *
 * @module
 */

export {
  codeName,
  ERROR_CODE_NAME_LIST,
  type ErrorCodeName,
  type Outcome,
  RelayMetrics,
} from "./metrics.ts";
export {
  type ConnView,
  type DeviceStatus,
  type DeviceView,
  type RelaySnapshot,
  type SessionStatus,
  type SessionView,
  type SnapshotSource,
  takeSnapshot,
} from "./status.ts";
export { METRICS_CONTENT_TYPE, renderMetrics } from "./exposition.ts";
export {
  type AdminHandle,
  type AdminOptions,
  type AdminSource,
  checkAdminOptions,
  isLoopback,
  startAdmin,
} from "./server.ts";
