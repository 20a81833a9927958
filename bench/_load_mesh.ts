/**
 * Mesh observer role: one connection to every relay; logs a device in on the first
 * relay (or on each in turn) and times how long until each relay's directory shows it
 * online, then logs it out and times until each shows it offline. Polling is every
 * millisecond per relay.
 *
 * Mesh list role: how long until a relay that just joined lists every online device.
 *
 * @module
 */

import type { RelayConnection } from "../agent/relay_client.ts";
import { DeviceState } from "../shared/protocol/constants.ts";
import { type Commands, emit, login } from "./_load_device.ts";
import type { Link, MeshListOptions, MeshObserverOptions } from "./_load_types.ts";

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
    const origin = o.rotate ? r % links.length : 0;
    const watched = await login(links[origin], o.watchId);
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
    rounds.push({ origin, visibleMs: visible, offlineMs: gone });
  }
  emit("result", { rounds });
  for (const c of observers) c.close();
}

/** Lists a relay's online devices until `o.expect` of them match `o.prefix`; one "result". */
export async function meshList(o: MeshListOptions, commands: Commands): Promise<void> {
  emit("ready");
  const line = await commands.next();
  if (!line.startsWith("go ")) throw new Error(`Expected "go HOST:PORT", got "${line}"`);
  const link: Extract<Link, { mode: "relay" }> = { mode: "relay", relay: line.slice(3) };
  const deadline = Date.now() + o.timeoutMs;
  const conn = await login(link, o.id);
  const loggedInAt = Date.now();
  let polls = 0;
  let count = 0;
  try {
    for (;;) {
      const entries = await conn.list();
      polls++;
      count = entries.filter((e) => e.id.startsWith(o.prefix)).length;
      if (count >= o.expect || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, o.pollMs));
    }
  } finally {
    conn.close();
  }
  emit("result", { complete: count >= o.expect, at: Date.now(), loggedInAt, count, polls });
}
