/**
 * The agent library as a third party uses it: `superviseDevice` with a custom service,
 * `connect()` over warm connections, and liveness through `status()`/`onStatus`.
 */

import assert from "node:assert/strict";
import { parseHostPort } from "../shared/address.ts";
import { Logger } from "../shared/log.ts";
import { PeerUnavailableError } from "../shared/errors.ts";
import { ErrorCode } from "../shared/protocol/constants.ts";
import { type AgentStatus, superviseDevice } from "../agent/supervisor.ts";
import { register, startRelay, tempDir } from "./helpers.ts";

const quiet = new Logger({ level: "error", write: () => {} });

Deno.test("superviseDevice(): a custom service, pooled connect(), visible liveness", async () => {
  await using dir = await tempDir();
  const pcPw = await register(dir.path, "pc1", "USER");
  const devPw = await register(dir.path, "dev1", "PRINTER");
  await using relay = await startRelay(dir.path);
  const relays = [parseHostPort(relay.address)];
  const password = async (f: string) => (await Deno.readTextFile(f)).trim();

  // The whole service: upper-cases what it reads, until the peer's END.
  await using _device = superviseDevice({
    relays,
    id: "dev1",
    password: await password(devPw),
    logger: quiet,
    services: {
      upper: async (request) => {
        const session = await request.accept();
        await session.readable
          .pipeThrough(new TextDecoderStream())
          .pipeThrough(
            new TransformStream<string, string>({
              transform: (s, c) => c.enqueue(s.toUpperCase()),
            }),
          )
          .pipeThrough(new TextEncoderStream())
          .pipeTo(session.writable);
      },
    },
  });
  const seen: AgentStatus[] = [];
  await using pc = superviseDevice({
    relays,
    id: "pc1",
    password: await password(pcPw),
    logger: quiet,
    instance: null,
    onStatus: (s) => seen.push(s),
  });
  const loggedIn = (l: Record<string, unknown>) =>
    l.event === "login" || l.event === "connection added";
  await relay.proc.waitForCount(loggedIn, 4, "both pools to fill");

  for (let i = 0; i < 5; i++) {
    const session = await pc.connect("dev1", "upper");
    const writer = session.writable.getWriter();
    await writer.write(new TextEncoder().encode(`hello ${i}`));
    await writer.close(); // END: a half-close
    const answer = await new Response(session.readable).text();
    assert.equal(answer, `HELLO ${i}`);
    await session.release();
    assert.equal(await session.done, "released");
  }
  // The requester's five sessions rode on its warm connections.
  const pcLogins = relay.proc.lines.filter((l) => loggedIn(l) && l.device === "pc1");
  assert.ok(pcLogins.length <= 4, `${pcLogins.length} logins for 5 requests`);

  const status = pc.status();
  assert.equal(status.online, true);
  assert.ok(status.idle >= 2, JSON.stringify(status));
  assert.ok(status.lastHeardAt > 0);
  assert.ok(seen.length > 0 && seen.some((s) => s.busy > 0), "onStatus saw a busy connection");

  await assert.rejects(pc.connect("dev1", "nope"), (e) => {
    assert.ok(e instanceof PeerUnavailableError);
    // Refused by the relay from the directory: dev1 never saw the request.
    assert.equal(e.code, ErrorCode.ServiceUnsupported);
    assert.match(e.message, /does not offer service "nope" \(it offers: upper\)/);
    return true;
  });
  assert.equal(pc.status().online, true, "a refusal leaves the pool intact");
});
