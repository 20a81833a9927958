/**
 * File transfer over a session: tsunagi's own application protocol, carried as opaque
 * bytes by the relays.
 *
 * Sender → receiver, per file:
 *
 *     {"file":"<name>","size":<bytes>}\n   <size raw bytes>   {"sha256":"<hex>"}\n
 *
 * Receiver → sender, per file: `{"ok":true,"name":"<saved as>","sha256":"<hex>"}\n` or
 * `{"ok":false,"error":"<why>"}\n`. When the sender has no more files it sends END; the
 * receiver answers END; both RELEASE.
 *
 * A refusal may come early: a receiver refuses a file announced over its size limit right
 * after the header line, then fails the session. The sender therefore reads the answer
 * while it sends the body, and stops as soon as a refusal arrives.
 *
 * The receiver writes into `<inbox>/.tsunagi-partial/` and hard-links the file into the
 * inbox only once length and SHA-256 match, so a half-received file never appears there.
 * Whatever ends a transfer early (END(aborted), the relay closing the connection inside a
 * frame, a deadline, a refusal) removes the partial file; `tsunagi run` also clears the
 * folder of partial files left by a killed process when it starts.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { basename, join } from "node:path";
import { TransferAbortedError } from "../shared/errors.ts";
import { HEADER_SIZE, MAX_PAYLOAD } from "../shared/protocol/constants.ts";
import type { Session } from "./session.ts";

/** Folder inside the inbox that holds files still being received. */
export const PARTIAL_DIR = ".tsunagi-partial";

/** Longest header or trailer line accepted. */
const MAX_LINE = 4096;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Reads lines and exact byte counts from a session's byte stream. */
export class SessionReader {
  readonly #session: Session;
  #buf: Uint8Array = new Uint8Array(0);

  /** Reads from `session`. */
  constructor(session: Session) {
    this.#session = session;
  }

  /**
   * Reads the next piece without a copy (`readView`). A leftover is a view into the
   * session's read buffer, which the next read overwrites: it is copied first (only a
   * partial line ever is).
   */
  async #fill(): Promise<boolean> {
    const rest = this.#buf.length > 0 ? this.#buf.slice() : null;
    const chunk = await this.#session.readView();
    if (chunk === null) {
      if (rest !== null) this.#buf = rest;
      return false;
    }
    if (rest === null) this.#buf = chunk;
    else {
      const joined = new Uint8Array(rest.length + chunk.length);
      joined.set(rest);
      joined.set(chunk, rest.length);
      this.#buf = joined;
    }
    return true;
  }

  /** One `\n`-terminated line without the newline; null at a clean END. */
  async readLine(): Promise<string | null> {
    let scanned = 0;
    for (;;) {
      const nl = this.#buf.indexOf(0x0a, scanned);
      if (nl >= 0) {
        const line = decoder.decode(this.#buf.subarray(0, nl));
        this.#buf = this.#buf.subarray(nl + 1);
        return line;
      }
      scanned = this.#buf.length;
      if (scanned > MAX_LINE) throw new TransferAbortedError("Peer sent an over-long line");
      if (!(await this.#fill())) {
        if (this.#buf.length === 0) return null;
        throw new TransferAbortedError("Peer ended the session in the middle of a line");
      }
    }
  }

  /** Passes exactly `n` bytes to `sink`, chunk by chunk. */
  async readExact(n: number, sink: (chunk: Uint8Array) => Promise<void>): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.#buf.length === 0 && !(await this.#fill())) {
        throw new TransferAbortedError(`Peer ended the session with ${left} bytes missing`);
      }
      const take = Math.min(left, this.#buf.length);
      const piece = this.#buf.subarray(0, take);
      this.#buf = this.#buf.subarray(take);
      left -= take;
      await sink(piece);
    }
  }
}

/** A file to send. */
export interface OutgoingFile {
  /** Path on disk. */
  path: string;
  /** Name announced to the receiver (default: the path's base name). */
  name?: string;
}

/** The receiver's confirmation of one file. */
export interface Receipt {
  /** Name the receiver saved the file as. */
  name: string;
  /** Bytes sent. */
  size: number;
  /** SHA-256 both sides computed, hex. */
  sha256: string;
}

/** Progress callback: bytes of the current file done, its size, its name. */
export type ProgressFn = (done: number, total: number, name: string) => void;

/**
 * Sends files over `session` and returns the receiver's receipts (one per file, in
 * order). Throws {@link TransferAbortedError} if the receiver refuses a file or the
 * session breaks. Does not release the session.
 */
export async function sendFiles(
  session: Session,
  files: OutgoingFile[],
  options: { onProgress?: ProgressFn } = {},
): Promise<Receipt[]> {
  const reader = new SessionReader(session);
  const receipts: Receipt[] = [];
  const buf = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD);
  for (const file of files) {
    using handle = await Deno.open(file.path, { read: true });
    const size = (await handle.stat()).size;
    const name = file.name ?? basename(file.path);
    await session.write(encoder.encode(JSON.stringify({ file: name, size }) + "\n"));
    // The receiver may refuse before the body is through (e.g. over its size limit): read
    // its answer while sending, and stop on an early one.
    const answer = settle(reader.readLine());
    const hash = createHash("sha256");
    let done = 0;
    let sha256 = "";
    options.onProgress?.(0, size, name);
    try {
      while (done < size && !answer.settled) {
        const n = await handle.read(
          buf.subarray(HEADER_SIZE, HEADER_SIZE + Math.min(MAX_PAYLOAD, size - done)),
        );
        if (n === null) break;
        hash.update(buf.subarray(HEADER_SIZE, HEADER_SIZE + n));
        await session.writeInPlace(buf, n);
        done += n;
        options.onProgress?.(done, size, name);
      }
      if (!answer.settled) {
        if (done !== size) {
          throw new TransferAbortedError(`File "${file.path}" changed size while being sent`);
        }
        sha256 = hash.digest("hex");
        await session.write(encoder.encode(JSON.stringify({ sha256 }) + "\n"));
      }
    } catch (e) {
      // A write that failed because the receiver refused and left: report the refusal.
      session.connection.close();
      const early = await answer.promise.catch(() => null);
      if (early !== null) refusal(early, name);
      throw e;
    }
    const line = await answer.promise;
    if (line === null) {
      throw new TransferAbortedError(`Receiver ended the session before confirming "${name}"`);
    }
    const receipt = refusal(line, name);
    if (sha256 === "") {
      throw new TransferAbortedError(`Receiver answered before the end of "${name}"`);
    }
    if (receipt.sha256 !== sha256) {
      throw new TransferAbortedError(`Receiver confirmed "${name}" with a different SHA-256`);
    }
    receipts.push({ name: String(receipt.name ?? name), size, sha256 });
  }
  return receipts;
}

/** The receiver's answer line parsed; throws {@link TransferAbortedError} on a refusal. */
function refusal(line: string, name: string): { name?: string; sha256?: string } {
  const receipt = parseJson(line, "receipt") as {
    ok?: boolean;
    name?: string;
    sha256?: string;
    error?: string;
  };
  if (receipt.ok !== true) {
    throw new TransferAbortedError(
      `Receiver refused "${name}": ${receipt.error ?? "no reason given"}`,
    );
  }
  return receipt;
}

/** A promise with a synchronous view of whether it settled (and no unhandled rejection). */
function settle<T>(promise: Promise<T>): { promise: Promise<T>; readonly settled: boolean } {
  const state = { promise, settled: false };
  promise.then(() => (state.settled = true), () => (state.settled = true));
  return state;
}

/** A file that arrived intact. */
export interface ReceivedFile {
  /** Full path in the inbox. */
  path: string;
  /** Name the sender announced. */
  announced: string;
  /** Bytes. */
  size: number;
  /** SHA-256, hex. */
  sha256: string;
}

/** Options for {@link receiveFiles}. */
export interface ReceiveOptions {
  /** Called for each file that arrived intact. */
  onFile?: (file: ReceivedFile) => void;
  /** Called when a file starts arriving (its partial file exists from then on). */
  onFileStart?: (name: string, size: number) => void;
  /** Largest file accepted, bytes (default: no limit). */
  maxFileSize?: number;
}

/** A file was refused for its size: the sender was told why. */
export class FileTooLargeError extends TransferAbortedError {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "FileTooLargeError";
  }
}

/**
 * Receives files from `session` into `inbox` until the sender ends the session, calling
 * `onFile` for each file that arrived intact. A file over `maxFileSize` is refused (the
 * sender gets the reason) and the call fails with {@link FileTooLargeError}. Partial
 * files are removed on any failure. Does not release the session.
 */
export async function receiveFiles(
  session: Session,
  inbox: string,
  options: ReceiveOptions = {},
): Promise<ReceivedFile[]> {
  const reader = new SessionReader(session);
  const partialDir = join(inbox, PARTIAL_DIR);
  await Deno.mkdir(partialDir, { recursive: true });
  const received: ReceivedFile[] = [];
  const reply = (value: unknown) => session.write(encoder.encode(JSON.stringify(value) + "\n"));
  for (;;) {
    const line = await reader.readLine();
    if (line === null) return received;
    const header = parseJson(line, "file header") as { file?: unknown; size?: unknown };
    const size = header.size;
    if (
      typeof header.file !== "string" || typeof size !== "number" || !Number.isSafeInteger(size) ||
      size < 0
    ) {
      throw new TransferAbortedError(`Malformed file header: ${line.slice(0, 200)}`);
    }
    const name = safeFileName(header.file);
    const limit = options.maxFileSize;
    if (limit !== undefined && size > limit) {
      const why = `"${name}" is ${size} bytes, over this device's limit of ${limit} bytes`;
      await reply({ ok: false, error: why });
      throw new FileTooLargeError(`Refused ${why}`);
    }
    const tmp = join(partialDir, `${crypto.randomUUID()}.part`);
    const file = await Deno.open(tmp, { write: true, createNew: true });
    let closed = false;
    try {
      options.onFileStart?.(name, size);
      const hash = createHash("sha256");
      let written = 0;
      await reader.readExact(size, async (chunk) => {
        // The announced size binds the sender, so this cannot trip today; it guards the
        // limit should the format ever allow a file of unknown length.
        written += chunk.length;
        if (limit !== undefined && written > limit) {
          throw new FileTooLargeError(`"${name}" grew past this device's limit of ${limit} bytes`);
        }
        hash.update(chunk);
        let off = 0;
        while (off < chunk.length) off += await file.write(chunk.subarray(off));
      });
      const trailerLine = await reader.readLine();
      if (trailerLine === null) {
        throw new TransferAbortedError(`Sender ended before the checksum of "${name}"`);
      }
      const trailer = parseJson(trailerLine, "file trailer") as { sha256?: unknown };
      const sha256 = hash.digest("hex");
      if (trailer.sha256 !== sha256) {
        await reply({ ok: false, error: `SHA-256 mismatch for "${name}"` });
        throw new TransferAbortedError(`SHA-256 mismatch for "${name}": file discarded`);
      }
      await file.syncData();
      file.close();
      closed = true;
      const path = await linkUnique(tmp, inbox, name);
      await Deno.remove(tmp);
      const got = { path, announced: header.file, size, sha256 };
      received.push(got);
      options.onFile?.(got);
      await reply({ ok: true, name: basename(path), sha256 });
    } catch (e) {
      if (!closed) file.close();
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
  }
}

/**
 * A partial file not written for this long belongs to no live transfer: a receiving
 * session that makes no progress for 2 minutes fails (and removes its own file).
 */
export const STALE_PARTIAL_MS = 3 * 60_000;

/**
 * Removes the partial files (`*.part`) that a killed receiver left in `inbox`'s partial
 * folder; returns how many. Only files not written for `olderThanMs` go, so another
 * agent receiving into the same inbox keeps its file in progress.
 */
export async function removeStalePartials(
  inbox: string,
  options: { olderThanMs?: number; now?: number } = {},
): Promise<number> {
  const dir = join(inbox, PARTIAL_DIR);
  const olderThan = options.olderThanMs ?? STALE_PARTIAL_MS;
  const now = options.now ?? Date.now();
  let removed = 0;
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile || !entry.name.endsWith(".part")) continue;
      const path = join(dir, entry.name);
      const mtime = (await Deno.stat(path).catch(() => null))?.mtime?.getTime();
      if (mtime === undefined || now - mtime < olderThan) continue;
      await Deno.remove(path).catch(() => {});
      removed++;
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return removed;
}

/** Reduces an announced name to a safe base name inside the inbox. */
export function safeFileName(announced: string): string {
  // deno-lint-ignore no-control-regex -- stripping control characters is the point
  let name = announced.replace(/[\u0000-\u001f\u007f]/g, "").split(/[\\/]/).pop() ?? "";
  name = name.trim();
  if (name === "" || name === "." || name === "..") name = "file";
  if (name.startsWith(".")) name = "_" + name.slice(1);
  while (encoder.encode(name).length > 200) name = name.slice(0, -1);
  return name;
}

/**
 * Hard-links `tmp` into `dir` as `name`, or `name (1)`... `name (9)` if taken, then a
 * random suffix: a sender of thousands of same-named files costs a few tries each, not a
 * scan of all earlier ones.
 */
async function linkUnique(tmp: string, dir: string, name: string): Promise<string> {
  const dot = name.lastIndexOf(".");
  const stem = dot > 0 ? name.slice(0, dot) : name;
  const ext = dot > 0 ? name.slice(dot) : "";
  for (let i = 0; i < 20; i++) {
    const suffix = i === 0 ? "" : i < 10 ? ` (${i})` : ` (${crypto.randomUUID().slice(0, 8)})`;
    const candidate = join(dir, `${stem}${suffix}${ext}`);
    try {
      await Deno.link(tmp, candidate);
      return candidate;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
  }
  throw new TransferAbortedError(`Too many files named "${name}" in the inbox`);
}

function parseJson(line: string, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(line);
    if (typeof v === "object" && v !== null) return v;
  } catch {
    // fall through
  }
  throw new TransferAbortedError(`Malformed ${what}: ${line.slice(0, 200)}`);
}
