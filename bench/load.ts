/**
 * The bench's load generator: one program, started as a separate process per role by
 * `bench/main.ts`, with its options as one JSON argument. It prints JSON event lines on
 * stdout ("ready", "result", ...), takes commands on stdin ("go", ...), and exits when
 * its stdin closes.
 *
 * @example
 * ```sh
 * deno run -A bench/load.ts '{"role":"echo","link":{"mode":"direct"},"id":"echo","pool":1}'
 * ```
 *
 * @module
 */

import { abortSend } from "./_load_abort.ts";
import { bulkRecv, bulkSend } from "./_load_data.ts";
import { Commands, emit } from "./_load_device.ts";
import { sessions, unauth } from "./_load_hold.ts";
import { idle } from "./_load_idle.ts";
import { meshList, meshObserver } from "./_load_mesh.ts";
import { echo, peer, requester } from "./_load_setup.ts";
import type { LoadOptions } from "./_load_types.ts";

/** Runs one role. Resolves when the role is finished ("done") or serving until stdin closes. */
export async function runLoad(o: LoadOptions, commands: Commands): Promise<"done" | "serving"> {
  switch (o.role) {
    // The bulk roles stay up after reporting so the bench can still read their CPU time.
    case "bulk-recv":
      await bulkRecv(o);
      return "serving";
    case "bulk-send":
      await bulkSend(o, commands);
      return "serving";
    case "echo":
      await echo(o);
      return "serving";
    case "requester":
      await requester(o, commands);
      return "serving";
    case "peer":
      await peer(o, commands);
      return "serving";
    case "idle":
      await idle(o, commands);
      return "serving";
    case "unauth":
      await unauth(o, commands);
      return "serving";
    case "sessions":
      await sessions(o, commands);
      return "serving";
    case "abort-send":
      await abortSend(o, commands);
      return "serving";
    case "mesh-observer":
      await meshObserver(o, commands);
      return "done";
    case "mesh-list":
      await meshList(o, commands);
      return "done";
    default: {
      const never: never = o;
      throw new TypeError(`Unknown role in ${JSON.stringify(never)}`);
    }
  }
}

if (import.meta.main) {
  const commands = new Commands();
  try {
    const options = JSON.parse(Deno.args[0] ?? "null") as LoadOptions;
    if (typeof options !== "object" || options === null) {
      throw new TypeError("Usage: deno run -A bench/load.ts '<options as JSON>'");
    }
    if ((await runLoad(options, commands)) === "done") Deno.exit(0);
  } catch (e) {
    emit("error", { error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
    console.error(e);
    Deno.exit(1);
  }
}
