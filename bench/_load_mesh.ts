/**
 * Mesh observer role: one connection to every relay; logs a device in on the first
 * relay and times how long until each relay's directory shows it online, then logs it
 * out and times until each shows it offline. Polling is every millisecond per relay.
 *
 * @module
 */

import type { RelayConnection } from "../agent/relay_client.ts";
import { DeviceState } from "../shared/protocol/constants.ts";
import { type Commands, emit, login } from "./_load_device.ts";
import type { Link, MeshObserverOptions } from "./_load_types.ts";

const POLL_MS = 1;

async function until(
  conn: RelayConnection,
  id: string,
  online: boolean,
  deadline: number,
): Promise<number | null> {
  for (;;) {
    const entry = await conn.status(id);
    const isOnline = entry !== null && entry.state === DeviceState.Online;
    if (isOnline === online) return performance.now();
    if (performance.now() > deadline) return null;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Runs `o.rounds` login/logout rounds on "go"; reports per-relay times (null: never). */
export async function meshObserver(o: MeshObserverOptions, commands: Commands): Promise<void> {
  const links: Extract<Link, { mode: "relay" }>[] = o.relays.map((relay) => ({
    mode: "relay",
    relay,
    tlsCaFile: o.tlsCaFile,
  }));
  const observers = await Promise.all(links.map((l) => login(l, o.observerId)));
  emit("ready");
  await commands.expect("go");
  const rounds = [];
  for (let r = 0; r < o.rounds; r++) {
    const watched = await login(links[0], o.watchId);
    const loggedIn = performance.now();
    let deadline = loggedIn + o.timeoutMs;
    const visible = await Promise.all(
      observers.map(async (c) => {
        const t = await until(c, o.watchId, true, deadline);
        return t === null ? null : t - loggedIn;
      }),
    );
    await watched.logout();
    const loggedOut = performance.now();
    deadline = loggedOut + o.timeoutMs;
    const gone = await Promise.all(
      observers.map(async (c) => {
        const t = await until(c, o.watchId, false, deadline);
        return t === null ? null : t - loggedOut;
      }),
    );
    rounds.push({ visibleMs: visible, offlineMs: gone });
  }
  emit("result", { rounds });
  for (const c of observers) c.close();
}
