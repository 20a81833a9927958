/**
 * Abort role: senders that die at a random byte offset of a file transfer, against a
 * real `tsunagi run` receiver.
 *
 * Each session is a raw client (tests/raw_device.ts): it logs in, sends CONNECT(target,
 * "file"), and after ACCEPT writes a prefix of exactly the bytes `tsunagi send` would
 * write — DATA(file header line), DATA(body, 64 KiB frames), DATA(SHA-256 trailer line)
 * — then closes its socket, as the kernel does for a killed process. The cut falls, in
 * equal shares, at or inside one of the 5-byte frame headers, inside the header or
 * trailer line's payload, or anywhere in the stream; always before the trailer is whole,
 * so no file may ever reach the inbox.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { parseHostPort } from "../shared/address.ts";
import { ErrorCode, FILE_SERVICE, HEADER_SIZE, MAX_PAYLOAD } from "../shared/protocol/constants.ts";
import { encodeData } from "../shared/protocol/messages.ts";
import { concat, RawClient } from "../tests/raw_device.ts";
import { type Commands, emit, login } from "./_load_device.ts";
import { type AbortSendOptions, BENCH_PASSWORD } from "./_load_types.ts";

/** Largest file body of an aborted session. */
const MAX_BODY = 256 * 1024;
/** How long one session may retry a busy target before it counts as failed. */
const SESSION_DEADLINE_MS = 30_000;

const encoder = new TextEncoder();

/** A small seeded generator (mulberry32): the same cuts on every run. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One DATA frame of the stream: where it starts, where its payload starts and ends. */
interface FrameSpan {
  start: number;
  payload: number;
  end: number;
  kind: "header line" | "body" | "trailer";
}

/** The bytes `tsunagi send` writes for one file of `size` bytes, frame by frame. */
function senderStream(body: Uint8Array): { bytes: Uint8Array; frames: FrameSpan[] } {
  const parts: Uint8Array[] = [];
  const frames: FrameSpan[] = [];
  let at = 0;
  const add = (payload: Uint8Array, kind: FrameSpan["kind"]) => {
    parts.push(encodeData(payload));
    frames.push({
      start: at,
      payload: at + HEADER_SIZE,
      end: at + HEADER_SIZE + payload.length,
      kind,
    });
    at += HEADER_SIZE + payload.length;
  };
  add(
    encoder.encode(JSON.stringify({ file: "abort.bin", size: body.length }) + "\n"),
    "header line",
  );
  for (let off = 0; off < body.length; off += MAX_PAYLOAD) {
    add(body.subarray(off, Math.min(body.length, off + MAX_PAYLOAD)), "body");
  }
  const sha256 = createHash("sha256").update(body).digest("hex");
  add(encoder.encode(JSON.stringify({ sha256 }) + "\n"), "trailer");
  return { bytes: concat(...parts), frames };
}

/** Where a cut falls: on a frame boundary, inside a frame header, or inside a payload. */
export type CutClass = "boundary" | "frame header" | FrameSpan["kind"];

/** Picks a cut offset in [0, total) (see the module doc) and classifies it. */
function pickCut(frames: FrameSpan[], rng: () => number): { cut: number; where: CutClass } {
  const total = frames[frames.length - 1].end;
  const r = rng();
  let cut: number;
  if (r < 1 / 3) {
    const f = frames[Math.floor(rng() * frames.length)];
    cut = f.start + Math.floor(rng() * HEADER_SIZE);
  } else if (r < 2 / 3) {
    const f = rng() < 0.5 ? frames[0] : frames[frames.length - 1];
    cut = f.payload + Math.floor(rng() * (f.end - f.payload));
  } else {
    cut = Math.floor(rng() * total);
  }
  const f = frames.find((s) => cut < s.end)!;
  const where: CutClass = cut === f.start ? "boundary" : cut < f.payload ? "frame header" : f.kind;
  return { cut, where };
}

/** Runs the aborted sessions on "go"; answers "status" with the target's directory entry. */
export async function abortSend(o: AbortSendOptions, commands: Commands): Promise<void> {
  const link = { mode: "relay" as const, relay: o.relay };
  const { port } = parseHostPort(o.relay);
  const random = new Uint8Array(MAX_BODY);
  for (let off = 0; off < random.length; off += 65536) {
    crypto.getRandomValues(random.subarray(off, off + 65536));
  }
  emit("ready");
  for (;;) {
    const line = await commands.next();
    if (line === "status") {
      const conn = await login(link, o.id);
      try {
        const target = await conn.status(o.target);
        const self = await conn.status(o.id);
        emit("status", {
          state: target?.state ?? null,
          idle: target?.idle ?? null,
          sessions: target?.sessions ?? null,
          senderSessions: self?.sessions ?? null,
        });
      } finally {
        conn.close();
      }
      continue;
    }
    if (line !== "go") throw new Error(`Unknown command "${line}"`);
    const rng = seeded(o.seed);
    const cuts: Record<string, number> = {};
    const errors: string[] = [];
    let aborted = 0;
    let failed = 0;
    const retries: Retries = { busy: 0, offline: 0 };
    let bytesSent = 0;
    let next = 0;
    const t0 = performance.now();
    const worker = async () => {
      while (next < o.count) {
        next++;
        // Drawn in order, before any await: the same seed gives the same cuts.
        const size = rng() < 0.2 ? Math.floor(rng() * 1024) : Math.floor(rng() * MAX_BODY);
        const { bytes, frames } = senderStream(random.subarray(0, size));
        const { cut, where } = pickCut(frames, rng);
        try {
          await abortOne(port, o, bytes.subarray(0, cut), retries);
          aborted++;
          bytesSent += cut;
          cuts[where] = (cuts[where] ?? 0) + 1;
        } catch (e) {
          failed++;
          if (errors.length < 10) errors.push(e instanceof Error ? e.message : String(e));
        }
      }
    };
    await Promise.all(Array.from({ length: o.concurrency }, worker));
    emit("done", {
      aborted,
      failed,
      errors,
      retries,
      cuts,
      bytesSent,
      wallMs: performance.now() - t0,
    });
  }
}

/** Refusals one session waited out, by kind. */
interface Retries {
  /** TargetBusy / TargetTimeout / SessionLimit: every idle connection of the target in use. */
  busy: number;
  /** TargetOffline: the target had no connection at all for a moment. */
  offline: number;
}

/**
 * One session: login, CONNECT, and after ACCEPT the prefix, then the socket closes.
 * Retries a target that is busy or, for a moment, offline (its connections all went
 * with failed sessions and the replacements are still logging in).
 */
async function abortOne(
  port: number,
  o: AbortSendOptions,
  prefix: Uint8Array,
  retries: Retries,
): Promise<void> {
  const deadline = Date.now() + SESSION_DEADLINE_MS;
  const busy: number[] = [ErrorCode.TargetBusy, ErrorCode.TargetTimeout, ErrorCode.SessionLimit];
  for (;;) {
    const signal = AbortSignal.timeout(Math.max(1, deadline - Date.now()));
    const { client, answer } = await RawClient.login(port, o.id, BENCH_PASSWORD, signal);
    try {
      if (answer?.kind !== "loginResult" || answer.code !== ErrorCode.Ok) {
        throw new Error(`Login refused: ${JSON.stringify(answer)}`);
      }
      await client.send({ kind: "connect", target: o.target, service: FILE_SERVICE });
      let m = await client.readMessage(signal);
      while (m?.kind === "pong") m = await client.readMessage(signal);
      if (m?.kind === "accept") {
        if (prefix.length && !(await client.write(prefix))) {
          throw new Error("The relay closed the session before the cut");
        }
        return;
      }
      const retry = m?.kind === "reject" && Date.now() < deadline &&
        (busy.includes(m.code) || m.code === ErrorCode.TargetOffline);
      if (!retry) throw new Error(`CONNECT answered ${JSON.stringify(m)}`);
      if (m?.kind === "reject" && m.code === ErrorCode.TargetOffline) retries.offline++;
      else retries.busy++;
    } finally {
      client.close();
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}
