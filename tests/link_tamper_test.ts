/**
 * An on-path attacker on a plain-TCP relay link: a proxy between r1 (dialer) and r0
 * (acceptor) that alters, injects, replays, reorders or drops frames of the control link
 * after the handshake. Every case must be refused by r0 (link dropped, logged), leave
 * its directory unchanged, and the link must come back clean.
 *
 * @module
 */

import assert from "node:assert/strict";
import { FramedConn } from "../shared/framed_conn.ts";
import {
  ErrorCode,
  FrameType,
  HEADER_SIZE,
  LINK_PROTOCOL_VERSION,
  Role,
} from "../shared/protocol/constants.ts";
import { readU32, writeHeader } from "../shared/protocol/frame.ts";
import { encodeMessage } from "../shared/protocol/messages.ts";
import { event, pollUntil, register, startRelay, tempDir, writeMeshSecret } from "./helpers.ts";

/** Decides what reaches the acceptor instead of the n-th sealed frame from the dialer. */
type Tamper = (frame: Uint8Array, sealedIndex: number) => Uint8Array[];

/**
 * A TCP proxy to `target`. On its first connection, frames from the dialer go through
 * `tamper`; everything else (the other direction, later connections) passes untouched.
 */
function tamperingProxy(target: string, tamper: Tamper) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [hostname, port] = [target.split(":")[0], Number(target.split(":")[1])];
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let connections = 0;
  const track = (p: Promise<void>) => {
    const t = p.catch(() => {}).finally(() => tasks.delete(t));
    tasks.add(t);
  };
  const serve = (async () => {
    for await (const inbound of listener) {
      const outbound = await Deno.connect({ hostname, port });
      conns.add(inbound).add(outbound);
      const first = connections++ === 0;
      track(pipe(outbound, inbound, null));
      track(pipe(inbound, outbound, first ? tamper : null));
    }
  })().catch(() => {});
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await serve;
      await Promise.all([...tasks]);
    },
  };
}

/** Copies `from` to `to`, whole frames through `t` when given. */
async function pipe(from: Deno.Conn, to: Deno.Conn, t: Tamper | null) {
  let pending: Uint8Array = new Uint8Array(0);
  let sealed = 0;
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      if (t === null) {
        await writeAll(to, buf.slice(0, n));
        continue;
      }
      pending = concat(pending, buf.subarray(0, n));
      // Whole frames only: the tamperer sees each one.
      while (pending.length >= HEADER_SIZE) {
        const size = HEADER_SIZE + readU32(pending, 1);
        if (pending.length < size) break;
        const frame = pending.slice(0, size);
        pending = pending.slice(size);
        const out = frame[0] === FrameType.LinkSealed ? t(frame, sealed++) : [frame];
        for (const f of out) await writeAll(to, f);
      }
    }
  } finally {
    for (const c of [from, to]) {
      try {
        c.close();
      } catch { /* the other direction closed it */ }
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array) {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** An UPDATE carrying mallory's registration of fax1 with mallory's own verifier. */
const FORGED_UPDATE = encodeMessage({
  kind: "update",
  body: JSON.stringify({
    t: "reg",
    id: "fax1",
    lamport: 1_000_000,
    origin: "mallory",
    reg: {
      id: "fax1",
      type: "FAX",
      attributes: ["FILE TX/RX"],
      passwordHash: `scram-sha-256$4096$${"M".repeat(22)}==$${"A".repeat(43)}=$${"g".repeat(43)}=`,
      updatedAt: 1,
    },
  }),
});

/** FORGED_UPDATE wrapped as a sealed frame with a made-up tag. */
function forgedSealed(): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + FORGED_UPDATE.length + 16);
  writeHeader(out, 0, FrameType.LinkSealed, FORGED_UPDATE.length + 16);
  out.set(FORGED_UPDATE, HEADER_SIZE);
  crypto.getRandomValues(out.subarray(HEADER_SIZE + FORGED_UPDATE.length));
  return out;
}

/** fax1's verifier in relay data folder `dir`. */
async function hashOf(dir: string): Promise<string> {
  const file = JSON.parse(await Deno.readTextFile(`${dir}/registry.json`));
  return (file.devices as { id: string; passwordHash: string }[])
    .find((d) => d.id === "fax1")!.passwordHash;
}

const AT = 2; // tamper with the third sealed frame (after the first digest chunks)
let held: Uint8Array | null = null;
const cases: [string, Tamper, RegExp][] = [
  ["altered on the way", (f, i) => {
    if (i === AT) f[HEADER_SIZE + HEADER_SIZE + 3] ^= 0x20;
    return [f];
  }, /sealed frame 2 with a wrong MAC/],
  ["injected with a made-up MAC", (f, i) => i === AT ? [forgedSealed(), f] : [f], /wrong MAC/],
  ["injected unsealed", (f, i) => i === AT ? [FORGED_UPDATE, f] : [f], /an unsealed frame/],
  ["replayed", (f, i) => i === AT ? [f, f] : [f], /sealed frame 3 with a wrong MAC/],
  ["reordered", (f, i) => {
    if (i === AT) {
      held = f;
      return [];
    }
    if (i === AT + 1) return [f, held!];
    return [f];
  }, /sealed frame 2 with a wrong MAC/],
  ["dropped", (f, i) => i === AT ? [] : [f], /sealed frame 2 with a wrong MAC/],
];

for (const [what, tamper, reason] of cases) {
  Deno.test(`link tamper: a control-link frame ${what} is refused, the link dropped, the directory unchanged`, async () => {
    await using dir = await tempDir();
    const secret = await writeMeshSecret(dir.path);
    await register(`${dir.path}/r0`, "fax1", "FAX", ["FILE TX/RX"]);
    const before = await hashOf(`${dir.path}/r0`);
    const mesh = (name: string, peers: string[]) => [
      "--name",
      name,
      "--mesh-secret-file",
      secret,
      "--mesh-heartbeat",
      "300ms",
      "--mesh-timeout",
      "2s",
      ...peers.flatMap((p) => ["--peer", p]),
    ];
    await using r0 = await startRelay(`${dir.path}/r0`, mesh("r0", []));
    await using proxy = tamperingProxy(r0.address, tamper);
    await using r1 = await startRelay(`${dir.path}/r1`, mesh("r1", [proxy.address]));
    const failed = await r0.proc.waitFor(
      event("control link failed", { relay: "r1" }),
      "r0 to drop the tampered link",
    );
    assert.match(String(failed.error), reason);
    // The link comes back through the proxy, untouched this time; r1 learns fax1 over it.
    await r0.proc.waitForCount(event("neighbour up", { relay: "r1" }), 2, "the link back");
    await r1.proc.waitFor(
      (l) => l.event === "notice" && l.key === "fax1" && l.action === "applied",
      "r1 to learn fax1",
    );
    assert.equal(await hashOf(`${dir.path}/r0`), before, "fax1's verifier unchanged on r0");
    const learnt = await pollUntil(
      () => hashOf(`${dir.path}/r1`).catch(() => undefined),
      "r1 to write fax1",
    );
    assert.equal(learnt, before, "r1 holds r0's verifier");
    assert.equal(r0.proc.count((l) => l.event === "notice" && l.origin === "mallory"), 0);
    assert.equal(r0.proc.count(event("control link failed")), 1);
  });
}

Deno.test("link version: a relay dialing with link protocol 2 (unsealed links) is refused in words", async () => {
  await using dir = await tempDir();
  const secret = await writeMeshSecret(dir.path);
  await using r0 = await startRelay(`${dir.path}/r0`, [
    "--name",
    "r0",
    "--mesh-secret-file",
    secret,
  ]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: r0.port });
  const framed = new FramedConn(conn);
  try {
    await framed.send({
      kind: "hello",
      version: 2,
      role: Role.Relay,
      software: "tsunagi-relay/old",
    });
    const answer = await framed.readMessage();
    assert.equal(answer?.kind, "error");
    assert.equal(answer.kind === "error" && answer.code, ErrorCode.UnsupportedVersion);
    assert.match(
      answer.kind === "error" ? answer.message : "",
      /Relay link refused.*version 4.*upgrade/,
    );
    assert.equal(LINK_PROTOCOL_VERSION, 4);
  } finally {
    framed.close();
  }
});
