/**
 * Pool of data links to other relays: authenticated connections that carry one
 * forwarded session at a time and go back to the pool when it is released, so a
 * session across relays usually costs no dial.
 *
 * Idle pooled links have no reader (nothing arrives on an idle data link); a link that
 * died while idle is found out on use and the caller retries once with a fresh dial.
 * Links idle longer than `maxIdleAgeMs` are closed instead of reused.
 *
 * @module
 */

import { formatHostPort } from "../../shared/address.ts";
import type { Logger } from "../../shared/log.ts";
import { LinkPurposes } from "../../shared/protocol/messages.ts";
import type { Hop } from "../directory.ts";
import { type DialedLink, dialLink, isLinkRefused, type LinkCredentials } from "./link_auth.ts";

/** Options for {@link LinkPool}. */
export interface LinkPoolOptions {
  /** Idle links kept per relay (default 16). */
  maxIdlePerPeer?: number;
  /** Idle links older than this are not reused, ms (default 30000). */
  maxIdleAgeMs?: number;
  /** Logger. */
  logger: Logger;
}

/** A link taken from the pool. */
export interface PooledLink extends DialedLink {
  /** True when dialed for this use; false when reused from the pool. */
  fresh: boolean;
}

/** Link handshakes in flight to one relay at once (its unauthenticated limit is 64). */
const MAX_DIALS_PER_HOP = 16;

/** Data links per relay. */
export class LinkPool {
  readonly #creds: LinkCredentials;
  readonly #idle = new Map<string, { link: DialedLink; since: number }[]>();
  readonly #maxIdle: number;
  readonly #maxAge: number;
  readonly #logger: Logger;
  /** Links handed out and not yet released: closed on shutdown. */
  readonly #inUse = new Set<DialedLink>();
  #closed = false;

  /** Creates an empty pool dialing with `creds`. */
  constructor(creds: LinkCredentials, options: LinkPoolOptions) {
    this.#creds = creds;
    this.#maxIdle = options.maxIdlePerPeer ?? 16;
    this.#maxAge = options.maxIdleAgeMs ?? 30_000;
    this.#logger = options.logger;
  }

  /** A link to `hop`: an idle pooled one if any (`fresh: false`), else a new one. */
  async acquire(hop: Hop, options: { forceFresh?: boolean } = {}): Promise<PooledLink> {
    const key = formatHostPort(hop.address);
    const list = this.#idle.get(key);
    const now = Date.now();
    while (!options.forceFresh && list && list.length > 0) {
      const { link, since } = list.pop()!;
      if (now - since <= this.#maxAge && !link.framed.closed) {
        this.#inUse.add(link);
        return { ...link, fresh: false };
      }
      link.framed.close();
    }
    let link: DialedLink;
    // A burst of forwarded sessions must not look like a flood of unauthenticated
    // connections to the next relay (it drops the oldest over 64 per address): at most
    // MAX_DIALS_PER_HOP handshakes to one relay at a time; the rest wait their turn.
    await this.#dialSlot(key);
    try {
      link = await dialLink(hop.address, LinkPurposes.Data, this.#creds);
    } catch (e) {
      if (isLinkRefused(e)) {
        this.#logger.warn("peer refused our mesh secret", {
          peer: key,
          error: e instanceof Error ? e.message : String(e),
        });
      }
      throw e;
    } finally {
      this.#releaseDialSlot(key);
    }
    this.#logger.debug("data link dialed", { relay: link.name, address: key });
    if (this.#closed) link.framed.close();
    this.#inUse.add(link);
    return { ...link, fresh: true };
  }

  readonly #dials = new Map<string, { active: number; waiting: (() => void)[] }>();

  async #dialSlot(key: string): Promise<void> {
    let d = this.#dials.get(key);
    if (d === undefined) this.#dials.set(key, d = { active: 0, waiting: [] });
    if (d.active >= MAX_DIALS_PER_HOP) {
      const turn = Promise.withResolvers<void>();
      d.waiting.push(turn.resolve);
      await turn.promise; // the slot is handed over by #releaseDialSlot
      return;
    }
    d.active++;
  }

  #releaseDialSlot(key: string): void {
    const d = this.#dials.get(key);
    if (d === undefined) return;
    const next = d.waiting.shift();
    if (next !== undefined) return next(); // the slot passes to the next dial
    d.active--;
    if (d.active === 0) this.#dials.delete(key);
  }

  /** Returns a link whose session was released; closes it if the pool is full. */
  release(hop: Hop, link: DialedLink): void {
    this.#forget(link);
    const key = formatHostPort(hop.address);
    let list = this.#idle.get(key);
    if (list === undefined) this.#idle.set(key, list = []);
    if (this.#closed || link.framed.closed || list.length >= this.#maxIdle) {
      link.framed.close();
      return;
    }
    list.push({ link, since: Date.now() });
  }

  /** Forgets a link that was closed instead of released. */
  discard(link: DialedLink): void {
    this.#forget(link);
    link.framed.close();
  }

  #forget(link: DialedLink) {
    for (const l of this.#inUse) if (l.framed === link.framed) this.#inUse.delete(l);
  }

  /** Closes every link, idle or in use; later releases close their link. */
  close(): void {
    this.#closed = true;
    for (const link of this.#inUse) link.framed.close();
    this.#inUse.clear();
    for (const list of this.#idle.values()) for (const { link } of list) link.framed.close();
    this.#idle.clear();
  }
}
