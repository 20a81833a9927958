import assert from "node:assert/strict";
import { TransferAbortedError } from "../shared/errors.ts";
import { EndReason, FrameType } from "../shared/protocol/constants.ts";
import { encodeFrame } from "../shared/protocol/frame.ts";
import { encodeMessage } from "../shared/protocol/messages.ts";
import { sessionPair } from "./_testing.ts";
import { ManualClock } from "./clock.ts";
import { SessionTimeoutError } from "./session.ts";

const bytes = (...v: number[]) => new Uint8Array(v);

Deno.test("Session.read() times out when the peer is silent; progress restarts the deadline", async () => {
  const clock = new ManualClock();
  const { sender, receiver } = sessionPair(clock, 1000);
  const first = receiver.read();
  clock.advance(999);
  await sender.write(bytes(1, 2, 3));
  assert.deepEqual(await first, bytes(1, 2, 3));
  // The deadline counts from the last progress (t = 999), not from the first read.
  const second = receiver.read();
  clock.advance(999);
  await sender.write(bytes(4));
  assert.deepEqual(await second, bytes(4));
  const third = receiver.read();
  clock.advance(1000);
  await assert.rejects(third, (e) => {
    assert.ok(e instanceof SessionTimeoutError, String(e));
    assert.match(e.message, /Session with pc1 made no progress for 1 s/);
    return true;
  });
  assert.ok(receiver.connection.framed.closed, "the timed-out connection is closed");
  assert.equal(clock.pending, 0, "no timer left behind");
  sender.connection.close();
});

Deno.test("Session: a pending read survives while writes make progress; quiet after them expires", async () => {
  const clock = new ManualClock();
  const { sender, receiver } = sessionPair(clock, 1000);
  const pending = receiver.read(); // the peer says nothing for a while
  let settled = false;
  pending.then(() => settled = true, () => settled = true);
  for (let i = 0; i < 3; i++) {
    clock.advance(600);
    await receiver.write(bytes(i)); // progress: the deadline moves to now + 1 s
    assert.deepEqual(await sender.read(), bytes(i));
  }
  clock.advance(999); // 999 ms after the last progress
  await Promise.resolve();
  assert.equal(settled, false, "expired before 1 s without progress");
  clock.advance(1);
  await assert.rejects(pending, SessionTimeoutError);
  assert.equal(clock.pending, 0, "no timer left behind");
  sender.connection.close();
});

Deno.test("Session: no deadline runs while nothing is pending", async () => {
  const clock = new ManualClock();
  const { sender, receiver } = sessionPair(clock, 1000);
  clock.advance(60_000); // the application took its time; the peer is not to blame
  await sender.write(bytes(9));
  assert.deepEqual(await receiver.read(), bytes(9));
  assert.equal(clock.pending, 0);
  sender.connection.close();
  receiver.connection.close();
});

Deno.test("Session.read() reports a close inside a frame as an aborted transfer", async () => {
  for (const cut of [1, 4, 5, 6, 5 + 99]) {
    const clock = new ManualClock();
    const { senderRaw, receiver } = sessionPair(clock);
    const frame = encodeFrame(FrameType.Data, new Uint8Array(100).fill(7));
    await senderRaw.write(frame.subarray(0, cut));
    senderRaw.close();
    // Payload bytes before the cut are passed on as they come (no whole-frame buffering);
    // the read after them fails.
    let got = 0;
    const drain = async () => {
      for (let b = await receiver.read(); b !== null; b = await receiver.read()) {
        assert.ok(b.every((v) => v === 7));
        got += b.length;
      }
    };
    await assert.rejects(drain(), (e) => {
      assert.ok(e instanceof TransferAbortedError, `cut ${cut}: ${e}`);
      assert.match(e.message, /in the middle of a frame/);
      return true;
    });
    assert.equal(got, Math.max(0, cut - 5), `cut ${cut}: bytes passed before the failure`);
    receiver.connection.close();
    assert.equal(clock.pending, 0);
  }
});

Deno.test("Session.release() sends END, drains to the peer's END, then RELEASE", async () => {
  const clock = new ManualClock();
  const { senderRaw, receiver, receiverRaw } = sessionPair(clock);
  const released = receiver.release();
  await senderRaw.write(encodeFrame(FrameType.Data, bytes(1, 2)));
  await senderRaw.write(encodeMessage({ kind: "end", reason: EndReason.Normal }));
  await released;
  assert.deepEqual(
    receiverRaw.written.map((w) => w[0]),
    [FrameType.End, FrameType.Release],
  );
  assert.equal(clock.pending, 0);
  senderRaw.close();
  receiver.connection.close();
});

Deno.test("Session.release() gives up at its deadline when the peer never ends", async () => {
  const clock = new ManualClock();
  const { senderRaw, receiver } = sessionPair(clock, 0); // no idle deadline: only release's
  const released = receiver.release({ timeoutMs: 5000 });
  // The peer keeps talking but never sends END.
  await senderRaw.write(encodeFrame(FrameType.Data, bytes(1)));
  clock.advance(4999);
  await senderRaw.write(encodeFrame(FrameType.Data, bytes(2)));
  clock.advance(1);
  await assert.rejects(released, (e) => {
    assert.ok(e instanceof SessionTimeoutError, String(e));
    assert.match(e.message, /did not end within 5 s/);
    return true;
  });
  assert.ok(receiver.connection.framed.closed);
  assert.equal(clock.pending, 0);
  senderRaw.close();
});
