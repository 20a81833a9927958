import assert from "node:assert/strict";
import { ProtocolError } from "../../shared/errors.ts";
import { FramedConn, writeAll } from "../../shared/framed_conn.ts";
import { FrameType, HEADER_SIZE, MAX_PAYLOAD } from "../../shared/protocol/constants.ts";
import { type Frame, FrameDecoder } from "../../shared/protocol/frame.ts";
import {
  decodeMessage,
  encodeMessage,
  LinkPurposes,
  type Message,
} from "../../shared/protocol/messages.ts";
import { memoryPair } from "../../shared/testing/memory_conn.ts";
import { deriveLinkKeys, linkSeal, type LinkTranscript, SEAL_OVERHEAD } from "./link_seal.ts";

const secret = new TextEncoder().encode("0123456789abcdef0123456789abcdef");
const control: LinkTranscript = {
  acceptorNonce: "aa".repeat(16),
  dialerNonce: "dd".repeat(16),
  dialer: "r1",
  acceptor: "r0",
  purpose: LinkPurposes.Control,
};
const update = (body: string): Message => ({ kind: "update", body });

/** Seals `messages` at the dialer and returns the wire frames as the acceptor's decoder sees them. */
function wire(messages: Message[], t = control): Frame[] {
  const seal = linkSeal(secret, t, "dialer");
  const decoder = new FrameDecoder({ maxPayload: MAX_PAYLOAD + SEAL_OVERHEAD });
  for (const m of messages) decoder.append(seal.seal(encodeMessage(m)).slice());
  const frames: Frame[] = [];
  for (let f = decoder.next(); f !== null; f = decoder.next()) frames.push(f);
  return frames;
}

/** Opens `frames` at the acceptor, in order; returns the messages or the first error. */
function open(frames: Frame[], t = control): Message[] | ProtocolError {
  const seal = linkSeal(secret, t, "acceptor");
  const out: Message[] = [];
  for (const f of frames) {
    try {
      out.push(decodeMessage(seal.open(f)));
    } catch (e) {
      if (e instanceof ProtocolError) return e;
      throw e;
    }
  }
  return out;
}

const three = [update('{"a":1}'), update('{"b":2}'), { kind: "ping", nonce: 3 } as Message];

Deno.test({
  name: "linkSeal() round-trips every frame in order, each wrapped in LINK_SEALED",
  permissions: "none",
  fn() {
    const frames = wire(three);
    assert.ok(frames.every((f) => f.type === FrameType.LinkSealed));
    assert.deepStrictEqual(open(frames), three);
  },
});

Deno.test({
  name: "linkSeal() refuses an altered, replayed, reordered, dropped or injected frame",
  permissions: "none",
  fn() {
    const frames = wire(three);
    const altered = frames.map((f) => ({ ...f, payload: f.payload.slice() }));
    altered[1].payload[HEADER_SIZE + 2] ^= 1;
    const forged = wire([update('{"evil":1}')], { ...control, dialerNonce: "ee".repeat(16) });
    const cases: [string, Frame[]][] = [
      ["altered", altered],
      ["replayed", [frames[0], frames[0], frames[1]]],
      ["reordered", [frames[1], frames[0]]],
      ["dropped", [frames[0], frames[2]]],
      ["injected (sealed with another link's key)", [frames[0], forged[0]]],
      ["injected (plain)", [{ type: FrameType.Update, payload: new Uint8Array(2) }]],
      ["truncated tag", [{ ...frames[0], payload: frames[0].payload.subarray(0, 10) }]],
    ];
    for (const [what, input] of cases) {
      const result = open(input);
      assert.ok(result instanceof ProtocolError, `${what} frame refused`);
      assert.match(result.message, /refused, link dropped/);
    }
  },
});

Deno.test({
  name: "deriveLinkKeys() gives each direction, link and purpose its own key",
  permissions: "none",
  fn() {
    const k = deriveLinkKeys(secret, control);
    assert.equal(k.dialerToAcceptor.length, 32);
    assert.notDeepEqual(k.dialerToAcceptor, k.acceptorToDialer);
    for (
      const other of [
        { ...control, acceptorNonce: "ab".repeat(16) },
        { ...control, dialer: "r2" },
        { ...control, purpose: LinkPurposes.Data },
      ]
    ) assert.notDeepEqual(deriveLinkKeys(secret, other).dialerToAcceptor, k.dialerToAcceptor);
    // A frame sealed by the acceptor does not open as one from the dialer (reflection).
    const reflected = linkSeal(secret, control, "acceptor").seal(encodeMessage(three[0]));
    const decoder = new FrameDecoder({ maxPayload: MAX_PAYLOAD + SEAL_OVERHEAD });
    decoder.append(reflected);
    assert.throws(() => linkSeal(secret, control, "acceptor").open(decoder.next()!), ProtocolError);
  },
});

Deno.test({
  name: "linkSeal() on a data link passes a session's DATA and END plain, seals the rest",
  permissions: "none",
  fn() {
    const data = { ...control, purpose: LinkPurposes.Data };
    const messages: Message[] = [
      { kind: "accept", session: "s1", peer: "fax1" },
      { kind: "data", bytes: new Uint8Array([1, 2, 3]) },
      { kind: "end", reason: 0 },
      { kind: "release" },
    ];
    const frames = wire(messages, data);
    assert.deepStrictEqual(frames.map((f) => f.type), [
      FrameType.LinkSealed,
      FrameType.Data,
      FrameType.End,
      FrameType.LinkSealed,
    ]);
    assert.deepStrictEqual(open(frames, data), messages);
    // A plain RELEASE (or ROUTE, ACCEPT, ...) on a data link is refused.
    assert.ok(
      open([{ type: FrameType.Release, payload: new Uint8Array(0) }], data) instanceof
        ProtocolError,
    );
  },
});

Deno.test({
  name: "linkSeal() seals the largest legal frame; a LINK_SEALED declaring more is refused",
  permissions: "none",
  fn() {
    const big: Message = { kind: "data", bytes: new Uint8Array(MAX_PAYLOAD - 4) };
    const bytes = encodeMessage(big);
    const seal = linkSeal(secret, control, "dialer");
    const sealed = seal.seal(bytes);
    assert.equal(sealed.length, bytes.length + SEAL_OVERHEAD);
    const decoder = new FrameDecoder({ maxPayload: seal.maxPayload });
    decoder.append(sealed);
    assert.deepStrictEqual(
      decodeMessage(linkSeal(secret, control, "acceptor").open(decoder.next()!)),
      big,
    );
    assert.throws(() => seal.seal(bytes.subarray(0, 10)), RangeError, "not exactly one frame");
  },
});

Deno.test("FramedConn.setSeal() seals both ways; a tampered frame kills the connection", async () => {
  const [a, b] = memoryPair();
  const dialer = new FramedConn(a);
  const acceptor = new FramedConn(b);
  dialer.setSeal(linkSeal(secret, control, "dialer"));
  acceptor.setSeal(linkSeal(secret, control, "acceptor"));
  await dialer.send(three[0]);
  assert.deepStrictEqual(await acceptor.readMessage(), three[0]);
  await acceptor.send(three[2]);
  assert.deepStrictEqual(await dialer.readMessage(), three[2]);
  // An attacker writes a plain UPDATE straight onto the dialer's side of the wire.
  await writeAll(b, encodeMessage(update('{"t":"reg"}')));
  await assert.rejects(dialer.readMessage(), ProtocolError);
  assert.ok(dialer.closed, "the connection is dead after a refused frame");
  acceptor.close();
});

Deno.test({
  name: "linkSeal() produces the worked example of docs/protocol.md §10.1",
  permissions: "none",
  fn() {
    const seal = linkSeal(secret, control, "dialer");
    const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    const ping = encodeMessage({ kind: "ping", nonce: 3 });
    assert.equal(hex(ping), "040000000400000003");
    assert.equal(
      hex(seal.seal(ping)),
      "1b00000019040000000400000003d952ae8ff0dcb1dd0ae079a0368cf2bf",
    );
    assert.equal(
      hex(seal.seal(ping)),
      "1b0000001904000000040000000305951f119f96e1a06e3078c5b5c58b9a",
    );
  },
});
