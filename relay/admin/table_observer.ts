/**
 * Interim: derives some {@link RelayMetrics} counters from the relay's tables, for as
 * long as the relay core does not call them itself. It counts successful logins (a
 * connection seen in a device's table for the first time), successful session setups
 * (a session seen for the first time) and bytes relayed (sessions' byte counts,
 * including the final count of a session once it is gone).
 *
 * The relay calls {@link TableObserver.deviceChanged} whenever a device's entry changes
 * (every login, session start and release does that), {@link TableObserver.connClosed}
 * when a connection's loop ends, and {@link TableObserver.sync} before reading the
 * counters. Memory: one map entry per device connection that carries a session.
 *
 * Once the core calls `loginResult("ok")`, `setup("ok")` and `bytesRelayed(n)`, delete
 * this file and its three call sites in `relay/server.ts`.
 *
 * @module
 */

import type { RelayMetrics } from "./metrics.ts";
import type { ConnView, SessionView } from "./status.ts";

/** Watches device connections and their sessions; feeds `metrics`. */
export class TableObserver<C extends ConnView> {
  readonly #metrics: RelayMetrics;
  /** Connections counted as logged in. */
  readonly #seen = new WeakSet<C>();
  /** The session each device connection was last seen carrying. */
  readonly #carrying = new Map<C, SessionView>();
  /** Sessions seen: how many connections carry each, and bytes already counted. */
  readonly #sessions = new Map<SessionView, { refs: number; counted: number }>();

  /** Creates an observer feeding `metrics`. */
  constructor(metrics: RelayMetrics) {
    this.#metrics = metrics;
  }

  /** A device's entry changed: look at its connections. */
  deviceChanged(conns: Iterable<C>): void {
    for (const conn of conns) {
      if (!this.#seen.has(conn) && conn.state !== "hello") {
        this.#seen.add(conn);
        this.#metrics.loginResult("ok");
      }
      const before = this.#carrying.get(conn);
      if (before === conn.session) continue;
      if (before !== undefined) this.#drop(conn, before);
      if (conn.session !== null) this.#carry(conn, conn.session);
    }
  }

  /** A connection's loop ended. */
  connClosed(conn: C): void {
    const before = this.#carrying.get(conn);
    if (before !== undefined) this.#drop(conn, before);
  }

  /** Counts the bytes of running sessions forwarded since the last call. */
  sync(): void {
    for (const [session, seen] of this.#sessions) this.#count(session, seen);
  }

  #carry(conn: C, session: SessionView) {
    this.#carrying.set(conn, session);
    const seen = this.#sessions.get(session);
    if (seen !== undefined) {
      seen.refs++;
      return;
    }
    this.#sessions.set(session, { refs: 1, counted: 0 });
    this.#metrics.setup("ok");
  }

  #drop(conn: C, session: SessionView) {
    this.#carrying.delete(conn);
    const seen = this.#sessions.get(session);
    if (seen === undefined) return;
    this.#count(session, seen);
    if (--seen.refs === 0) this.#sessions.delete(session);
  }

  #count(session: SessionView, seen: { counted: number }) {
    const total = session.bytes.ab + session.bytes.ba;
    if (total > seen.counted) {
      this.#metrics.bytesRelayed(total - seen.counted);
      seen.counted = total;
    }
  }
}
