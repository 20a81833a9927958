import assert from "node:assert/strict";
import { join } from "node:path";
import { ConnectionClosedError, TransferAbortedError } from "../shared/errors.ts";
import { EndReason, FrameType } from "../shared/protocol/constants.ts";
import { encodeFrame } from "../shared/protocol/frame.ts";
import { encodeMessage } from "../shared/protocol/messages.ts";
import { sessionPair } from "./_testing.ts";
import { ManualClock } from "./clock.ts";
import { SessionAbortedError, SessionTimeoutError } from "./session.ts";
import {
  FileTooLargeError,
  PARTIAL_DIR,
  receiveFiles,
  removeStalePartials,
  sendFiles,
} from "./transfer.ts";

const encoder = new TextEncoder();

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isFile) out.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

async function withInbox(fn: (inbox: string, dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "tsunagi-transfer-" });
  try {
    await fn(join(dir, "inbox"), dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Raw bytes of a file header line in a DATA frame. */
function headerFrame(name: string, size: number): Uint8Array {
  return encodeFrame(FrameType.Data, encoder.encode(JSON.stringify({ file: name, size }) + "\n"));
}

/** Starts receiving; resolves `started` once the partial file exists. */
function receive(
  session: Parameters<typeof receiveFiles>[0],
  inbox: string,
  maxFileSize?: number,
) {
  const started = Promise.withResolvers<void>();
  const done = receiveFiles(session, inbox, { maxFileSize, onFileStart: () => started.resolve() });
  done.catch(() => {});
  return { started: started.promise, done };
}

Deno.test("receiveFiles() stores an intact file and sendFiles() gets its receipt", async () => {
  await withInbox(async (inbox, dir) => {
    const clock = new ManualClock();
    const { sender, receiver } = sessionPair(clock);
    await Deno.writeFile(join(dir, "a.bin"), new Uint8Array(70_000).fill(3));
    const received = receiveFiles(receiver, inbox);
    const receipts = await sendFiles(sender, [{ path: join(dir, "a.bin") }]);
    await sender.end();
    assert.equal((await received).length, 1);
    assert.equal(receipts[0].size, 70_000);
    assert.deepEqual(await names(inbox), ["a.bin"]);
    assert.deepEqual(await names(join(inbox, PARTIAL_DIR)), []);
    sender.connection.close();
    receiver.connection.close();
  });
});

Deno.test("a file announced over the limit is refused early, with the reason, and nothing is kept", async () => {
  await withInbox(async (inbox, dir) => {
    const clock = new ManualClock();
    const { sender, receiver } = sessionPair(clock);
    // Bigger than the pair can buffer in one go would be no better a test: the refusal
    // must stop the sender whatever it has written so far.
    await Deno.writeFile(join(dir, "big.bin"), new Uint8Array(300_000).fill(1));
    const received = receiveFiles(receiver, inbox, { maxFileSize: 1000 });
    const sent = sendFiles(sender, [{ path: join(dir, "big.bin") }]);
    await assert.rejects(received, FileTooLargeError);
    receiver.connection.close(); // what `run` does after a refusal
    await assert.rejects(sent, (e) => {
      assert.ok(e instanceof TransferAbortedError, String(e));
      assert.match(
        e.message,
        /Receiver refused "big\.bin": "big\.bin" is 300000 bytes, over this device's limit of 1000 bytes/,
      );
      return true;
    });
    assert.deepEqual(await names(inbox), []);
    assert.deepEqual(await names(join(inbox, PARTIAL_DIR)), []);
    sender.connection.close();
  });
});

Deno.test("END(aborted) in the middle of a file removes the partial file", async () => {
  await withInbox(async (inbox) => {
    const { senderRaw, receiver } = sessionPair(new ManualClock());
    const { started, done } = receive(receiver, inbox);
    await senderRaw.write(headerFrame("x.bin", 1000));
    await senderRaw.write(encodeFrame(FrameType.Data, new Uint8Array(400)));
    await started;
    await senderRaw.write(encodeMessage({ kind: "end", reason: EndReason.Aborted }));
    await assert.rejects(done, SessionAbortedError);
    assert.deepEqual(await names(inbox), []);
    assert.deepEqual(await names(join(inbox, PARTIAL_DIR)), []);
    senderRaw.close();
    receiver.connection.close();
  });
});

Deno.test("the relay closing inside a frame removes the partial file, at any cut", async () => {
  for (const cut of [0, 1, 4, 5, 200]) {
    await withInbox(async (inbox) => {
      const { senderRaw, receiver } = sessionPair(new ManualClock());
      const { started, done } = receive(receiver, inbox);
      await senderRaw.write(headerFrame("x.bin", 1000));
      await senderRaw.write(encodeFrame(FrameType.Data, new Uint8Array(400)));
      await started;
      // A second DATA frame announcing 600 bytes, cut `cut` bytes in.
      await senderRaw.write(encodeFrame(FrameType.Data, new Uint8Array(600)).subarray(0, cut));
      senderRaw.close();
      // On a frame boundary (cut 0) it is a plain close; inside a frame, a cut-off frame.
      await assert.rejects(done, cut === 0 ? ConnectionClosedError : TransferAbortedError);
      assert.deepEqual(await names(inbox), [], `cut ${cut}`);
      assert.deepEqual(await names(join(inbox, PARTIAL_DIR)), [], `cut ${cut}`);
      receiver.connection.close();
    });
  }
});

Deno.test("a sender that goes silent mid-file hits the idle deadline; the partial file goes", async () => {
  await withInbox(async (inbox) => {
    const clock = new ManualClock();
    const { senderRaw, receiver } = sessionPair(clock, 120_000);
    const { started, done } = receive(receiver, inbox);
    await senderRaw.write(headerFrame("x.bin", 1000));
    await senderRaw.write(encodeFrame(FrameType.Data, new Uint8Array(10)));
    await started;
    clock.advance(120_000);
    await assert.rejects(done, SessionTimeoutError);
    assert.deepEqual(await names(join(inbox, PARTIAL_DIR)), []);
    assert.deepEqual(await names(inbox), []);
    senderRaw.close();
  });
});

Deno.test("removeStalePartials() clears what a killed receiver left, and only that", async () => {
  await withInbox(async (inbox) => {
    assert.equal(await removeStalePartials(inbox), 0, "no partial folder yet");
    const partial = join(inbox, PARTIAL_DIR);
    await Deno.mkdir(partial, { recursive: true });
    await Deno.writeTextFile(join(partial, "a.part"), "x");
    await Deno.writeTextFile(join(partial, "b.part"), "y");
    await Deno.writeTextFile(join(partial, "notes.txt"), "kept");
    await Deno.writeTextFile(join(inbox, "done.bin"), "kept");
    assert.equal(await removeStalePartials(inbox), 0, "fresh files may be a live transfer");
    assert.equal(await removeStalePartials(inbox, { now: Date.now() + 3 * 60_000 }), 2);
    assert.deepEqual(await names(partial), ["notes.txt"]);
    assert.deepEqual(await names(inbox), ["done.bin"]);
  });
});
