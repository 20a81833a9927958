import assert from "node:assert/strict";
import { ErrorCode } from "../../shared/protocol/constants.ts";
import { escapeLabel, renderMetrics } from "./exposition.ts";
import { RelayMetrics } from "./metrics.ts";
import { takeSnapshot } from "./status.ts";

Deno.test({
  name: "escapeLabel() escapes backslash, quote and newline",
  permissions: "none",
  fn() {
    assert.equal(escapeLabel('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  },
});

Deno.test({
  name: "renderMetrics() shows devices, sessions, counters and mesh links",
  permissions: "none",
  fn() {
    const metrics = new RelayMetrics(1_000);
    metrics.loginResult("ok");
    metrics.loginResult(ErrorCode.AuthFailed);
    metrics.setup(ErrorCode.TargetBusy);
    metrics.refusal(ErrorCode.LoginTimeout);
    metrics.bytesRelayed(42);
    const session = {
      id: "s1",
      a: { endpointId: "pc1" },
      b: { endpointId: "fax1" },
      bytes: { ab: 40, ba: 2 },
    };
    const fax = {
      kind: "device",
      state: "session",
      deviceId: "fax1",
      linkPeer: "",
      session,
    } as const;
    const snapshot = takeSnapshot({
      name: 'r"1',
      address: "127.0.0.1:7800",
      shuttingDown: false,
      devices: [{
        id: "fax1",
        type: "FAX",
        attributes: ["FILE TX/RX"],
        conns: [fax],
        lastUpdate: 5,
      }],
      conns: [fax, { kind: "link", state: "idle", deviceId: "", linkPeer: "r2", session: null }],
      directory: { backend: "mesh", up: true },
      topology: {
        relays: [{ name: "r2", address: "h:1", alive: true, neighbors: [] }],
        links: [{ relay: "r2", address: "h:1", up: true }, {
          relay: "",
          address: "h:3",
          up: false,
        }],
        notices: { applied: 7, dropped: 2, refused: 0 },
      },
      metrics,
      now: 2_000,
    });
    assert.deepEqual(snapshot.sessions, [
      { id: "s1", from: "pc1", to: "fax1", bytesSent: 40, bytesReceived: 2, via: "" },
    ]);
    const text = renderMetrics(snapshot);
    for (
      const line of [
        'tsunagi_relay_info{name="r\\"1",address="127.0.0.1:7800"} 1',
        "tsunagi_start_time_seconds 1",
        "tsunagi_devices_online 1",
        'tsunagi_devices{activity="in session"} 1',
        "tsunagi_sessions 1",
        "tsunagi_link_connections 1",
        "tsunagi_relayed_bytes_total 42",
        'tsunagi_logins_total{result="AuthFailed"} 1',
        'tsunagi_logins_total{result="ok"} 1',
        'tsunagi_session_setups_total{result="TargetBusy"} 1',
        'tsunagi_refusals_total{reason="AuthFailed"} 1',
        'tsunagi_refusals_total{reason="LoginTimeout"} 1',
        'tsunagi_refusals_total{reason="TargetBusy"} 1',
        'tsunagi_refusals_total{reason="Throttled"} 0',
        'tsunagi_directory_up{backend="mesh"} 1',
        'tsunagi_mesh_link_up{relay="r2",address="h:1"} 1',
        'tsunagi_mesh_link_up{relay="",address="h:3"} 0',
        'tsunagi_mesh_relays{state="alive"} 1',
        'tsunagi_mesh_notices_total{action="dropped"} 2',
      ]
    ) assert.ok(text.includes(`\n${line}\n`), `missing: ${line}`);
    // Every family has HELP then TYPE before its samples.
    const families = text.split("\n").filter((l) => l.startsWith("# TYPE ")).length;
    assert.equal(text.split("\n").filter((l) => l.startsWith("# HELP ")).length, families);
    assert.ok(families >= 20);
  },
});
