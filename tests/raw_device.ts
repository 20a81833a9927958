/**
 * In-test device built on the agent's library: lets a test play a target that answers
 * notices exactly as the test wants (accept, ignore, hold a session open).
 *
 * @module
 */

import { parseHostPort } from "../shared/address.ts";
import { connectRelay, type Notice, type RelayConnection } from "../agent/relay_client.ts";

/** Logs in one connection for `id`. */
export async function rawLogin(
  relay: string,
  id: string,
  passwordFile: string,
): Promise<RelayConnection> {
  const password = (await Deno.readTextFile(passwordFile)).trim();
  return await connectRelay({ address: parseHostPort(relay), id, password });
}

/** Reads the next NOTICE on an idle connection. */
export async function nextNotice(conn: RelayConnection): Promise<Notice> {
  const m = await conn.nextControl();
  if (m.kind !== "notice") throw new Error(`expected NOTICE, got ${m.kind}`);
  return m;
}
