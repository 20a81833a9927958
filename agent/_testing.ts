/**
 * Test helpers for the agent's unit tests: two sessions joined by an in-memory pair,
 * standing for the two devices with a transparent relay between them.
 *
 * @module
 */

import { FramedConn } from "../shared/framed_conn.ts";
import { type MemoryConn, memoryPair } from "../shared/testing/memory_conn.ts";
import type { Clock } from "./clock.ts";
import { RelayConnection } from "./relay_client.ts";
import { Session } from "./session.ts";

/** Two ends of one session, plus the raw byte ends beneath them. */
export interface SessionPair {
  /** The side that sends files. */
  sender: Session;
  /** The side that receives files. */
  receiver: Session;
  /** Raw end under `sender`, to write arbitrary bytes towards the receiver. */
  senderRaw: MemoryConn;
  /** Raw end under `receiver`. */
  receiverRaw: MemoryConn;
}

/** Makes a session pair whose deadlines run on `clock`. */
export function sessionPair(clock: Clock, idleTimeoutMs = 1000): SessionPair {
  const [a, b] = memoryPair();
  const login = { address: { hostname: "relay.test", port: 7800 }, id: "t", password: "p" };
  const options = { clock, idleTimeoutMs };
  const sender = new Session(
    new RelayConnection(new FramedConn(a), login, "r", 15_000, options),
    "s1",
    "fax1",
    options,
  );
  const receiver = new Session(
    new RelayConnection(new FramedConn(b), login, "r", 15_000, options),
    "s1",
    "pc1",
    options,
  );
  return { sender, receiver, senderRaw: a, receiverRaw: b };
}
