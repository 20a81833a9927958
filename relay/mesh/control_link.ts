/**
 * The sending half of one control link: flooded notices and the catch-up stream, with
 * flow control.
 *
 * One writer loop ({@link ControlLink.run}) owns every write of UPDATE and DIGEST on the
 * link and waits for each write to reach the socket before the next, so a slow peer
 * slows its own link through TCP and nothing else. What it sends, in this order:
 * 1. this relay's digest (bucket hashes in chunks of {@link DIGEST_CHUNK}) when asked;
 * 2. flooded notices, FIFO, batched up to {@link MAX_BATCH_CHARS} characters per UPDATE;
 * 3. the catch-up: whole buckets the peer's digest showed to differ, one bucket at a
 *    time, read from the tables when sent (never copied up front), in batches.
 *
 * Memory per link is bounded: at most {@link MAX_PENDING} flooded notices wait; past
 * that the queue is dropped and the peer is asked for its digest instead, which repairs
 * exactly what the queue would have carried. The catch-up holds at most one bucket
 * index per bucket. A link that drops midway loses nothing: the next link exchanges
 * digests again and only buckets still differing are sent.
 *
 * @module
 */

import type { FramedConn } from "../../shared/framed_conn.ts";
import type { Logger } from "../../shared/log.ts";
import { BUCKETS, type MeshState } from "./mesh_state.ts";
import type { Notice } from "./notices.ts";

/** Most flooded notices queued on one link before it falls back to a digest exchange. */
export const MAX_PENDING = 10_000;
/** Bucket hashes per DIGEST message. */
export const DIGEST_CHUNK = 256;
/** Longest UPDATE body the writer builds, in UTF-16 units: at most 3 UTF-8 bytes each, under the 64 KiB frame limit. */
export const MAX_BATCH_CHARS = 20 * 1024;

/** A DIGEST body: a chunk of bucket hashes, or a request for the receiver's digest. */
export type DigestBody = { ask: true } | { from: number; n: number; h: number[] };

/** Parses a DIGEST body; throws SyntaxError when it is malformed or out of range. */
export function parseDigest(body: string): DigestBody {
  const d = JSON.parse(body);
  if (d?.ask === true) return { ask: true };
  if (
    !Number.isSafeInteger(d?.from) || d.n !== BUCKETS || !Array.isArray(d.h) ||
    d.from < 0 || d.h.length > DIGEST_CHUNK || d.from + d.h.length > BUCKETS ||
    !d.h.every((x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0)
  ) {
    throw new SyntaxError(`malformed digest: ${body.slice(0, 100)}`);
  }
  return { from: d.from, n: d.n, h: d.h };
}

/** One control link to a neighbour: its queue, its catch-up cursor and its writer. */
export class ControlLink {
  /** The framed connection (the link's reader loop in mesh.ts reads it). */
  readonly framed: FramedConn;
  /** Neighbour's relay name. */
  readonly name: string;
  /** Neighbour's advertised address. */
  readonly address: string;
  readonly #state: MeshState;
  readonly #logger: Logger;
  #queue: Notice[] = [];
  readonly #catchUp = new Set<number>();
  #sendDigest = true;
  #askDigest = false;
  #wake: (() => void) | null = null;
  #closed = false;
  /** Catch-up progress since the last digest answered (for logs and tests). */
  readonly #sent = { buckets: 0, notices: 0 };

  /** Wraps `framed`; the writer starts in {@link run}. */
  constructor(
    framed: FramedConn,
    peer: { name: string; address: string },
    state: MeshState,
    logger: Logger,
  ) {
    this.framed = framed;
    this.name = peer.name;
    this.address = peer.address;
    this.#state = state;
    this.#logger = logger;
  }

  /** Queues a flooded notice. */
  enqueue(n: Notice): void {
    if (this.#closed) return;
    if (this.#queue.length >= MAX_PENDING) {
      // Bounded memory: drop the queue and repair by digest instead of dropping the link.
      this.#logger.warn("neighbour slow: queue replaced by a digest exchange", {
        relay: this.name,
        dropped: this.#queue.length,
      });
      this.#queue = [];
      this.#askDigest = true;
    } else this.#queue.push(n);
    this.#poke();
  }

  /** The peer sent (a chunk of) its digest: schedule the buckets that differ. */
  answerDigest(from: number, hashes: number[]): void {
    for (const b of this.#state.differingBuckets(from, hashes)) this.#catchUp.add(b);
    if (from + hashes.length === BUCKETS) {
      this.#logger.debug("digest answered", { relay: this.name, buckets: this.#catchUp.size });
    }
    this.#poke();
  }

  /** The peer asked for this relay's digest. */
  sendDigest(): void {
    this.#sendDigest = true;
    this.#poke();
  }

  /** Stops the writer (the caller closes the connection). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#catchUp.size > 0) {
      this.#logger.info("catch-up cut short", {
        relay: this.name,
        bucketsLeft: this.#catchUp.size,
        notices: this.#sent.notices,
      });
    }
    this.#poke();
  }

  #poke(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** The writer loop; resolves when the link closes, rejects on a write error. */
  async run(): Promise<void> {
    while (!this.#closed) {
      if (this.#askDigest) {
        this.#askDigest = false;
        await this.framed.send({ kind: "digest", body: JSON.stringify({ ask: true }) });
      } else if (this.#sendDigest) {
        this.#sendDigest = false;
        for (let from = 0; from < BUCKETS; from += DIGEST_CHUNK) {
          const h = this.#state.digestChunk(from, DIGEST_CHUNK);
          await this.framed.send({
            kind: "digest",
            body: JSON.stringify({ from, n: BUCKETS, h }),
          });
        }
      } else if (this.#queue.length > 0) {
        await this.#sendBatch(this.#takeQueued(), false);
      } else if (this.#catchUp.size > 0) {
        const b = this.#catchUp.values().next().value!;
        const notices = this.#state.bucketNotices(b);
        for (let i = 0; i < notices.length && !this.#closed;) {
          const end = batchEnd(notices, i);
          await this.#sendBatch(notices.slice(i, end), true);
          this.#sent.notices += end - i;
          i = end;
        }
        // Counted done only once fully written: a cut link resends this bucket.
        this.#catchUp.delete(b);
        this.#sent.buckets++;
        if (this.#catchUp.size === 0) {
          this.#logger.info("catch-up sent", { relay: this.name, ...this.#sent });
          this.#sent.buckets = this.#sent.notices = 0;
        }
      } else {
        const { promise, resolve } = Promise.withResolvers<void>();
        this.#wake = resolve;
        await promise;
      }
    }
  }

  #takeQueued(): Notice[] {
    const end = batchEnd(this.#queue, 0);
    const batch = this.#queue.slice(0, end);
    this.#queue = this.#queue.slice(end);
    return batch;
  }

  async #sendBatch(batch: Notice[], catchUp: boolean): Promise<void> {
    if (batch.length === 0) return;
    const body = catchUp
      ? JSON.stringify({ catchUp: batch })
      : JSON.stringify(batch.length === 1 ? batch[0] : batch);
    await this.framed.send({ kind: "update", body });
  }
}

/** Index after the longest run from `start` that fits in one UPDATE (at least one notice). */
function batchEnd(notices: Notice[], start: number): number {
  let bytes = 32;
  let i = start;
  while (i < notices.length) {
    const size = JSON.stringify(notices[i]).length + 1;
    if (i > start && bytes + size > MAX_BATCH_CHARS) break;
    bytes += size;
    i++;
  }
  return i;
}
