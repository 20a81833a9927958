import assert from "node:assert/strict";
import { RelayMetrics } from "./metrics.ts";
import type { ConnView, SessionView } from "./status.ts";
import { TableObserver } from "./table_observer.ts";

type Conn = { -readonly [K in keyof ConnView]: ConnView[K] };

function conn(deviceId: string): Conn {
  return { kind: "device", state: "idle", deviceId, linkPeer: "", session: null };
}

function session(a: string, b: string): SessionView & { bytes: { ab: number; ba: number } } {
  return { id: `${a}-${b}`, a: { endpointId: a }, b: { endpointId: b }, bytes: { ab: 0, ba: 0 } };
}

Deno.test({
  name: "TableObserver counts each login and session once and every byte, the last ones included",
  permissions: "none",
  fn() {
    const metrics = new RelayMetrics(0);
    const observer = new TableObserver<Conn>(metrics);
    const pc = conn("pc1");
    const fax = conn("fax1");
    const hello = { ...conn("x"), state: "hello" };
    observer.deviceChanged([pc]);
    observer.deviceChanged([pc, hello]);
    observer.deviceChanged([fax]);
    assert.equal(metrics.logins.get("ok"), 2);

    const s = session("pc1", "fax1");
    pc.session = s;
    fax.session = s;
    pc.state = fax.state = "session";
    observer.deviceChanged([pc]);
    observer.deviceChanged([fax]);
    assert.equal(metrics.setups.get("ok"), 1);
    s.bytes.ab = 1000;
    observer.sync();
    assert.equal(metrics.relayedBytes, 1000);
    observer.sync();
    assert.equal(metrics.relayedBytes, 1000);

    // Released by pc1 first; bytes forwarded after that still count.
    pc.session = null;
    observer.deviceChanged([pc]);
    s.bytes.ba = 50;
    fax.session = null;
    s.bytes.ab = 1500; // the last chunk, counted when the session is let go
    observer.deviceChanged([fax]);
    assert.equal(metrics.relayedBytes, 1550);
    s.bytes.ab = 9999; // gone: no longer read
    observer.sync();
    assert.equal(metrics.relayedBytes, 1550);

    // A connection that closes mid-session has its bytes counted too.
    const t = session("pc1", "fax1");
    pc.session = t;
    observer.deviceChanged([pc]);
    t.bytes.ab = 10;
    observer.connClosed(pc);
    assert.equal(metrics.relayedBytes, 1560);
    assert.equal(metrics.setups.get("ok"), 2);
    assert.equal(metrics.logins.get("ok"), 2);
  },
});
